"""``geoseg export``: a checkpoint as a self-contained ONNX model or ``torch.export`` program.

An export is meant to be used without geoseg (onnxruntime in a QGIS plugin or a service, a ``.pt2`` loaded
with ``torch.export.load``), so it takes what such a user has, raw pixel values (float32, N×C×H×W in the
card's band order), and applies the card's value range and normalisation inside; it returns class
probabilities (softmax inside) or, on request, raw logits. Batch, height and width are dynamic, height and
width as multiples of 32 (the network's requirement, stated in the graph's shape constraints), unless a
fixed ``tile`` is asked for: then height and width are that number, as clients that read their tile size
from the graph need (``--for deepness`` also writes that plugin's metadata, see
:mod:`geoseg.export.deepness`). The card travels inside: ONNX ``metadata_props`` and the ``.pt2``'s
extra files, under the same key as in a geoseg checkpoint.

Both formats come from one ``torch.export`` program: the ONNX file is that program translated by the
TorchDynamo exporter (torch's default since 2.9; the TorchScript exporter is deprecated), so the two formats
cannot drift apart. ``benchmarks/export.py`` compares the two ONNX exporters.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.atomic import atomic_output, check_output_path
from geoseg.errors import ConfigurationError
from geoseg.export.deepness import DEEPNESS, deepness_card, deepness_metadata
from geoseg.export.metadata import OUTPUT_KIND_KEY, require
from geoseg.model.architectures import ARCHITECTURES
from geoseg.model.card import ModelCard
from geoseg.model.checkpoint import CARD_METADATA_KEY, load_checkpoint
from geoseg.model.normalize import normalize

INPUT_NAME = "pixels"
ONNX_OPSET = 18
SUFFIXES = (".onnx", ".pt2")
TARGETS = (DEEPNESS,)


class RawPixelNetwork(nn.Module):
    """The network with the card's scaling and normalisation in front and, unless ``logits``, a softmax
    behind: raw pixel values in, probabilities out, as a user of the export holds and wants them."""

    def __init__(self, network: nn.Module, card: ModelCard, *, logits: bool = False) -> None:
        super().__init__()
        self.network = network
        self.value_range = tuple(card.value_range)
        self.mean = list(card.mean)
        self.std = list(card.std)
        self.logits = logits

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scores = self.network(normalize(pixels, self.value_range, self.mean, self.std))
        return scores if self.logits else torch.softmax(scores, dim=1)


def export_program(
    network: nn.Module, card: ModelCard, *, logits: bool = False, tile: int | None = None
) -> torch.export.ExportedProgram:
    """The float32 network as a ``torch.export`` program with dynamic batch and 32-multiple height/width,
    or height and width fixed to ``tile``.

    The example batch has two tiles: a batch of one would be specialised to a constant.
    """
    wrapped = RawPixelNetwork(network.float().eval(), card, logits=logits).eval()
    height, width = (64, 96) if tile is None else (tile, tile)
    example = torch.zeros((2, card.num_bands, height, width), dtype=torch.float32)
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1)}
    if tile is None:
        dims[2] = 32 * torch.export.Dim("height_32", min=1)
        dims[3] = 32 * torch.export.Dim("width_32", min=1)
    with torch.no_grad():
        return torch.export.export(wrapped, (example,), dynamic_shapes={INPUT_NAME: dims})


def export_model(
    model: str | os.PathLike,
    output: str | os.PathLike,
    *,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
    logits: bool = False,
    tile: int | None = None,
    target: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export the checkpoint ``model`` to ``output`` (``.onnx`` or ``.pt2``, by its suffix), atomically.

    A foreign checkpoint needs ``preset`` or ``card`` like everywhere else: an export without class names,
    bands and normalisation could not be used correctly. ``tile`` fixes the input's height and width (the
    card inside then names it as its tile size); ``target="deepness"`` makes an ONNX model the QGIS Deepness
    plugin loads (fixed tile, the card's by default, and the plugin's metadata), refused in one line for a
    model the plugin cannot represent.
    """
    output = Path(output)
    kind = output.suffix.lower()
    if kind not in SUFFIXES:
        raise ConfigurationError(
            f"{output}: unknown export format {output.suffix or '(no suffix)'!r}; "
            "name the output .onnx (onnxruntime) or .pt2 (torch.export)"
        )
    if target is not None and target not in TARGETS:
        raise ConfigurationError(f"unknown export target {target!r}; known: {', '.join(TARGETS)}")
    if target == DEEPNESS and (kind != ".onnx" or logits):
        raise ConfigurationError(
            "target='deepness': Deepness runs ONNX models that output class probabilities; "
            "name the output .onnx and drop logits=True"
        )
    check_output_path(output, overwrite)
    if kind == ".onnx":
        require("onnxscript")  # the TorchDynamo exporter's translator: before any work
    network, model_card = load_checkpoint(model, preset=preset, card=card)
    extra: dict[str, str] = {}
    if target == DEEPNESS:
        model_card = deepness_card(model_card, tile)
        tile, extra = model_card.tile_size, deepness_metadata(model_card)
    elif tile is not None:
        ARCHITECTURES[model_card.architecture].check_tile(int(tile))
        model_card = ModelCard.from_dict({**model_card.to_dict(), "tile_size": int(tile)})
    start = time.perf_counter()
    program = export_program(network, model_card, logits=logits, tile=tile)
    metadata = {
        CARD_METADATA_KEY: model_card.to_json(),
        OUTPUT_KIND_KEY: "logits" if logits else "probabilities",
        **extra,
    }
    with atomic_output(output, overwrite) as tmp:
        if kind == ".onnx":
            write_onnx(program, model_card, metadata, tmp)
        else:
            torch.export.save(program, str(tmp), extra_files=metadata)
    return {
        "input": str(model),
        "output": str(output),
        "format": "onnx" if kind == ".onnx" else "pt2",
        "opset": ONNX_OPSET if kind == ".onnx" else None,
        "outputs": metadata[OUTPUT_KIND_KEY],
        "tile": tile,
        "for": target,
        "bands": model_card.bands,
        "classes": model_card.class_names,
        "seconds": round(time.perf_counter() - start, 1),
    }


def write_onnx(
    program: torch.export.ExportedProgram, card: ModelCard, metadata: dict[str, str], path: Path
) -> None:
    """``program`` as an ONNX file at ``path`` with ``metadata`` (the card, the output kind) inside."""
    output_name = metadata[OUTPUT_KIND_KEY]
    onnx_program = torch.onnx.export(
        program,
        dynamo=True,
        opset_version=ONNX_OPSET,
        input_names=[INPUT_NAME],
        output_names=[output_name],
        optimize=True,
        verbose=False,
    )
    onnx_program.model.metadata_props.update(metadata)
    onnx_program.model.doc_string = card.name or card.description or f"geoseg {card.architecture}"
    onnx_program.save(str(path))
