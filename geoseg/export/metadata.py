"""What a geoseg export carries, read without torch: ``geoseg info MODEL.onnx`` describes an export on its
own (its card, what it outputs, its input shape and opset), and optional dependencies fail in one line."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from geoseg.errors import CheckpointError, ConfigurationError
from geoseg.model.card import CARD_METADATA_KEY, ModelCard

OUTPUT_KIND_KEY = "geoseg.output"  # "probabilities" or "logits"
FLOAT32_LAYERS_KEY = "geoseg.float32_layers"  # an int8 model's layer groups kept in float32 (JSON list)
CALIBRATION_AGREEMENT_KEY = "geoseg.calibration_agreement"  # its class agreement with float32 there


def require(module: str) -> ModuleType:
    """Import an optional dependency of the ``onnx`` extra, or say in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigurationError(
            f"{module} is not installed; ONNX support is an extra: pip install 'geoseg[onnx]'"
        ) from error


def describe_onnx(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON-ready description of an ONNX model: its geoseg card (None for a foreign model) and graph."""
    path = Path(path)
    onnx = require("onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError and others for a file that is not a model
        raise CheckpointError(f"{path}: not a readable ONNX model ({str(error).splitlines()[0]})") from error
    metadata = {p.key: p.value for p in model.metadata_props}
    card = metadata.get(CARD_METADATA_KEY)

    def shape(value) -> list[int | str]:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    return {
        "path": str(path),
        "format": "onnx" if card else "onnx (no geoseg card: predict needs --card or --preset)",
        "opset": {o.domain or "ai.onnx": o.version for o in model.opset_import},
        "inputs": {i.name: shape(i) for i in model.graph.input},
        "outputs": {o.name: shape(o) for o in model.graph.output},
        "returns": metadata.get(OUTPUT_KIND_KEY),
        "size_bytes": path.stat().st_size,
        "card": ModelCard.from_json(card).to_dict() if card else None,
    }
