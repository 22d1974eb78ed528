"""The public Python API. The command line calls these functions, never the other way round."""

from __future__ import annotations

from geoseg.describe import describe
from geoseg.evaluation import EvaluationResult, evaluate, write_confusion_csv
from geoseg.inference.engine import PredictResult, predict_scene
from geoseg.inference.predict import iter_predict, predict
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import (
    convert_checkpoint,
    default_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from geoseg.model.manet import build_manet
from geoseg.model.presets import PRESET_NAMES, preset_card
from geoseg.training.loop import TrainingConfig, TrainingResult, train
from geoseg.vector.vectorize import VectorizeResult, vectorize

__all__ = [
    "PRESET_NAMES",
    "ClassInfo",
    "EvaluationResult",
    "ModelCard",
    "PredictResult",
    "TrainingConfig",
    "TrainingResult",
    "VectorizeResult",
    "build_manet",
    "convert_checkpoint",
    "default_checkpoint_path",
    "describe",
    "evaluate",
    "iter_predict",
    "load_checkpoint",
    "predict",
    "predict_scene",
    "preset_card",
    "save_checkpoint",
    "train",
    "vectorize",
    "write_confusion_csv",
]
