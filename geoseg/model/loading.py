"""A network from a file, and the digest that names it: what ``predict``, ``serve`` and Dask workers load by.

A checkpoint (``.safetensors``, or a foreign one described by a preset or card) or an ONNX export, which
runs in onnxruntime behind the same call; the digest keys resume manifests and worker caches.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from geoseg.model.card import ModelCard


def load_model(
    model: str | os.PathLike | None, preset: str | None, card: ModelCard | str | os.PathLike | None
) -> tuple[torch.nn.Module, ModelCard]:
    """The checkpoint ``model`` (the bundled one when None) with its card, or one from ``preset``/``card``."""
    from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint

    path = default_checkpoint_path() if model is None else Path(model)
    if path.suffix.lower() == ".onnx":  # an export run by onnxruntime (geoseg export)
        from geoseg.export.runtime import load_onnx

        return load_onnx(path, preset=preset, card=card)
    return load_checkpoint(path, preset=preset, card=card)


def model_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the network's class and tensors: what the resume manifest and worker caches key on."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
