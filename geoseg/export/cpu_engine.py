"""Which runtime computes the network (``--engine``), and a checkpoint's network as an onnxruntime session.

``auto`` takes the fastest path that keeps float32's classes exactly. Measured on a 2-core AVX512-BF16 host
with the bundled MANet-R50 on a 2,048² scene (docs/performance.md, ``benchmarks/cpu_speed.py --engines``):
onnxruntime's float32 runs 1.19× faster end to end than geoseg's torch float32 (BN folded, channels-last)
and 1.60× PyTorch's naive float32 eager network, with identical classes; torch's bf16 is ~7 % faster still
but changes 0.02-0.14 % of the classes, and CPUs without native bf16 have no fast bf16 at all. So ``auto`` is
onnxruntime on the CPU for geoseg's own networks (MANet, MACU-Net, MAResU-Net, which the exporter handles)
where onnxruntime and onnxscript are installed and neither ``compile`` nor an explicit bf16/fp16 precision
asks for PyTorch; PyTorch everywhere else (GPUs, networks of the Python API that are not geoseg's, a missing
extra).

The export is made once per model and export option into the cache (:mod:`geoseg.export.cache`), its
first-run cost reported to the caller; ``int8`` quantizes it (:mod:`geoseg.export.quantize`), calibrated on
tiles of the scene or of a calibration set.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from geoseg.errors import AgreementError, ConfigurationError
from geoseg.export.cache import CachedFile, cached_file
from geoseg.export.metadata import require
from geoseg.export.runtime import OnnxNetwork, load_onnx
from geoseg.model.card import ModelCard

ENGINES = ("auto", "torch", "onnxruntime")
CALIBRATION_TILES = 8
_GEOSEG_NETWORKS = ("MANet", "MACUNet", "MAResUNet")


@dataclass
class EngineNetwork:
    """The network the chosen engine runs, and the seconds spent making it (export, int8 calibration)."""

    network: torch.nn.Module
    engine: str
    seconds: float


def resolve_engine(
    engine: str,
    precision: str,
    device: torch.device,
    network: torch.nn.Module,
    *,
    compile: bool = False,
    int8: bool = True,
) -> str:
    """``torch`` or ``onnxruntime`` for ``engine`` (see the module's rule for ``auto``); a combination that
    cannot run fails here in one line, before any work. ``precision`` is what the user asked for, already
    checked against the device (:func:`geoseg.device.resolve_precision`: int8 on the CPU only); ``int8``:
    whether the caller runs int8 at all (``serve`` does not), so that a message suggests only what it
    can use."""
    engine = (engine or "auto").lower()
    precision = (precision or "auto").lower()
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    if isinstance(network, OnnxNetwork):
        if engine == "torch":
            raise ConfigurationError("an .onnx model runs in onnxruntime; drop engine='torch'")
        if precision == "int8" and network.precision != "int8":
            raise ConfigurationError(
                "precision='int8' quantizes a checkpoint; give the .safetensors/.pth model, not an export"
            )
        return "onnxruntime"
    if precision == "int8" and engine == "torch":
        raise ConfigurationError(
            "precision='int8' runs in onnxruntime; "
            "use engine='onnxruntime' or engine='auto' (or another precision)"
        )
    if engine == "onnxruntime" or precision == "int8":
        if precision in ("bf16", "fp16"):
            usable = ("fp32", "int8", "auto") if int8 else ("fp32", "auto")
            listed = [f"precision={p!r}" for p in usable]
            raise ConfigurationError(
                f"engine='onnxruntime' runs float32{' or int8' if int8 else ''}, not {precision}; "
                f"use {', '.join(listed[:-1])} or {listed[-1]}"
            )
        if compile:
            raise ConfigurationError("compile=True is for engine='torch'; drop one of them")
        for module in ("onnxruntime", "onnxscript"):
            require(module)
        return "onnxruntime"
    if engine == "torch":
        return "torch"
    runs_fast = device.type == "cpu" and precision in ("auto", "fp32") and not compile
    installed = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))
    ours = type(network).__name__ in _GEOSEG_NETWORKS
    return "onnxruntime" if runs_fast and installed and ours else "torch"


def onnx_network(
    network: torch.nn.Module,
    card: ModelCard,
    digest: str,
    *,
    int8: bool = False,
    calibration: Callable[[OnnxNetwork], Sequence[np.ndarray]] | None = None,
    status: Callable[[str], None] | None = None,
) -> EngineNetwork:
    """``network`` as an onnxruntime session: its float32 export from the cache (made now if missing), or
    with ``int8`` the quantized one, calibrated on ``calibration(float_network)`` (1×C×T×T arrays as the
    graph takes them), cached per calibration set, as is a refusal for agreement."""
    from geoseg.export.exporter import ONNX_OPSET, export_program, write_onnx
    from geoseg.export.metadata import OUTPUT_KIND_KEY
    from geoseg.model.checkpoint import CARD_METADATA_KEY

    ort = require("onnxruntime")
    require("onnxscript")
    tell = status or (lambda _text: None)
    label = f"{card.architecture}-{card.backbone or 'net'}"
    parts = {
        "model": digest,
        "opset": ONNX_OPSET,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__.split("+")[0],
        "graph": {"outputs": "logits", "input": "raw pixels", "tile": "dynamic"},
        "normalisation": [list(card.value_range), list(card.mean), list(card.std)],
    }

    def export(path: Path) -> None:
        tell("exporting the network to ONNX (once per model)")
        program = export_program(network, card, logits=True)
        write_onnx(program, card, {CARD_METADATA_KEY: card.to_json(), OUTPUT_KIND_KEY: "logits"}, path)

    made = cached_file(f"{label}-fp32", parts, export)
    seconds = made.seconds
    float_network = _load(made, card)
    if not int8:
        return EngineNetwork(float_network, "onnxruntime", seconds)
    from geoseg.export.quantize import quantize_int8

    tiles = list(calibration(float_network)) if calibration is not None else []
    if not tiles:
        raise ConfigurationError(
            "precision='int8': no calibration tile holds valid pixels; give calibration=RASTERS"
        )
    calibrated = hashlib.sha256()
    for tile in tiles:
        calibrated.update(np.ascontiguousarray(tile, dtype=np.float32).tobytes())

    def quantize(path: Path) -> None:
        quantize_int8(made.path, path, tiles, status=tell)

    quantized = cached_file(
        f"{label}-int8",
        {**parts, "float32": made.path.name, "calibration": calibrated.hexdigest()},
        quantize,
        remember=AgreementError,  # a refusal holds for these tiles: the rerun refuses at once
    )
    return EngineNetwork(_load(quantized, card), "onnxruntime", seconds + quantized.seconds)


def _load(made: CachedFile, card: ModelCard) -> OnnxNetwork:
    network, _ = load_onnx(made.path, card=card)
    return network


def calibration_tiles(
    plans: Sequence, network: OnnxNetwork, count: int = CALIBRATION_TILES
) -> list[np.ndarray]:
    """Up to ``count`` tiles spread evenly over the grids of ``plans`` (the scenes of the run, or a
    ``--calibration`` set), skipping tiles of one value (no-data collars), prepared as the graph takes
    them, in grid order. Each is read as the engine reads it: a whole tile, mirrored where it reaches past
    the scene's edge (grids start at ``-margin``; a window cut at the edge is a size the network cannot
    take).

    ``4 × count`` candidates are spread over the grids; every fourth is read first, the others only to
    stand in for skipped ones, so the tiles cover every scene and the whole of each, not its first rows."""
    from geoseg.raster.reading import open_raster, read_mirrored

    places = [(plan, y, x) for plan in plans for y in plan.grid.ys for x in plan.grid.xs]
    if not places:
        return []
    picks = np.unique(np.linspace(0, len(places) - 1, min(len(places), 4 * count)).round().astype(int))
    stride = max(1, len(picks) // count)
    order = sorted(range(len(picks)), key=lambda i: (i % stride, i))
    tiles: dict[int, np.ndarray] = {}
    for index in order:
        plan, y, x = places[picks[index]]
        with open_raster(plan.path) as dataset:
            values = read_mirrored(dataset, y, x, plan.grid.tile, plan.grid.tile, plan.bands)
        if values.min() == values.max():
            continue
        batch = torch.from_numpy(np.ascontiguousarray(values)[None])
        tiles[index] = network.prepare_input(batch, plan.value_range).numpy()
        if len(tiles) == count:
            break
    return [tiles[index] for index in sorted(tiles)]


def calibration_set(paths: Sequence[str | os.PathLike]) -> list[str]:
    """The rasters of ``--calibration``: files, or the ``.tif`` files in a folder."""
    found: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        else:
            found.append(str(path))
    if not found:
        raise ConfigurationError(f"calibration={[str(p) for p in paths]!r}: no raster found")
    return found
