"""The public Python API. The command line calls these functions, never the other way round."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoseg.describe import describe
    from geoseg.evaluation import EvaluationResult, evaluate, write_confusion_csv
    from geoseg.export.exporter import export_model
    from geoseg.inference.batch import iter_predict, predict
    from geoseg.inference.options import PredictOptions
    from geoseg.inference.scene import predict_scene
    from geoseg.inference.tasks import PredictResult
    from geoseg.model.build import build_model
    from geoseg.model.card import ClassInfo, ModelCard
    from geoseg.model.checkpoint import (
        convert_checkpoint,
        default_checkpoint_path,
        load_checkpoint,
        save_checkpoint,
    )
    from geoseg.model.manet import build_manet
    from geoseg.model.presets import PRESET_NAMES, preset_card
    from geoseg.plots.curves import plot_training_curves
    from geoseg.plots.evaluation import plot_evaluation
    from geoseg.plots.quicklook import QuicklookResult, quicklook
    from geoseg.sampling import SampleResult, draw_sample
    from geoseg.stac.mlm import checkpoint_stac_item, write_stac_item
    from geoseg.training.loop import TrainingConfig, TrainingResult, train
    from geoseg.vector.vectorize import VectorizeResult, vectorize

# Every name is imported on first use: torch alone takes seconds, scipy and friends a good part of one, and
# a command (``info`` on a raster, ``vectorize``, ``evaluate``, ``quicklook``) should pay only for what it
# calls, so that a shell loop over thousands of scenes is not spent importing.
_EXPORTS = {
    "describe": "geoseg.describe",
    "checkpoint_stac_item": "geoseg.stac.mlm",
    "write_stac_item": "geoseg.stac.mlm",
    "EvaluationResult": "geoseg.evaluation",
    "export_model": "geoseg.export.exporter",
    "evaluate": "geoseg.evaluation",
    "write_confusion_csv": "geoseg.evaluation",
    "PredictResult": "geoseg.inference.tasks",
    "predict_scene": "geoseg.inference.scene",
    "iter_predict": "geoseg.inference.batch",
    "PredictOptions": "geoseg.inference.options",
    "predict": "geoseg.inference.batch",
    "ClassInfo": "geoseg.model.card",
    "ModelCard": "geoseg.model.card",
    "convert_checkpoint": "geoseg.model.checkpoint",
    "default_checkpoint_path": "geoseg.model.checkpoint",
    "load_checkpoint": "geoseg.model.checkpoint",
    "save_checkpoint": "geoseg.model.checkpoint",
    "build_manet": "geoseg.model.manet",
    "build_model": "geoseg.model.build",
    "PRESET_NAMES": "geoseg.model.presets",
    "preset_card": "geoseg.model.presets",
    "plot_training_curves": "geoseg.plots.curves",
    "SampleResult": "geoseg.sampling",
    "draw_sample": "geoseg.sampling",
    "plot_evaluation": "geoseg.plots.evaluation",
    "QuicklookResult": "geoseg.plots.quicklook",
    "quicklook": "geoseg.plots.quicklook",
    "TrainingConfig": "geoseg.training.loop",
    "TrainingResult": "geoseg.training.loop",
    "train": "geoseg.training.loop",
    "VectorizeResult": "geoseg.vector.vectorize",
    "vectorize": "geoseg.vector.vectorize",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'geoseg.api' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "PRESET_NAMES",
    "ClassInfo",
    "EvaluationResult",
    "ModelCard",
    "PredictOptions",
    "PredictResult",
    "QuicklookResult",
    "SampleResult",
    "TrainingConfig",
    "TrainingResult",
    "VectorizeResult",
    "build_manet",
    "checkpoint_stac_item",
    "build_model",
    "convert_checkpoint",
    "default_checkpoint_path",
    "describe",
    "draw_sample",
    "evaluate",
    "export_model",
    "iter_predict",
    "load_checkpoint",
    "plot_evaluation",
    "plot_training_curves",
    "predict",
    "predict_scene",
    "preset_card",
    "quicklook",
    "save_checkpoint",
    "write_stac_item",
    "train",
    "vectorize",
    "write_confusion_csv",
]
