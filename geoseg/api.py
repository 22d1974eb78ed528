"""The public Python API. The command line calls these functions, never the other way round."""

from __future__ import annotations

from geoseg.describe import describe
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import (
    convert_checkpoint,
    default_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from geoseg.model.manet import build_manet
from geoseg.model.presets import PRESET_NAMES, preset_card

__all__ = [
    "PRESET_NAMES",
    "ClassInfo",
    "ModelCard",
    "build_manet",
    "convert_checkpoint",
    "default_checkpoint_path",
    "describe",
    "load_checkpoint",
    "preset_card",
    "save_checkpoint",
]
