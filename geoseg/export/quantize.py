"""int8 for the CPU: static QDQ quantization, per channel, of a float32 ONNX export, calibrated on real tiles,
with the layer groups whose quantization changes classes kept in float32, found by measurement.

Calibration (onnxruntime's MinMax ranges) runs once; then, as for bf16 (README, ``encode_resnet``), one
group at a time is quantized and the share of calibration pixels whose class changes against float32 is
measured. The groups are the quantized operators (convolutions) in graph order, cut into
:data:`GROUPS` runs of equal count, named by the network modules they belong to: input side first, head
last, for any network. Groups are then kept in float32, the worst first, until the int8 model agrees with
float32 on :data:`TARGET` of the calibration pixels, and each kept group is halved while a half suffices
(:func:`float32_runs`); a model that needs more than half of its groups in float32 for
:data:`MIN_AGREEMENT` gains nothing from int8 and is refused.
"""

from __future__ import annotations

import ast
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geoseg.errors import AgreementError
from geoseg.export.metadata import CALIBRATION_AGREEMENT_KEY, FLOAT32_LAYERS_KEY, require

GROUPS = 8
TARGET = 0.998  # agreement aimed at on the calibration tiles, a margin above the refusal
MIN_AGREEMENT = 0.995
QUANTIZED_OPS = ("Conv", "ConvTranspose")  # attention's products stay float32, as under autocast


@dataclass
class Quantized:
    """What quantization kept in float32 and the agreement it measured on the calibration tiles."""

    float32_layers: list[str]
    agreement: float


def _quantizable_nodes(model_path: Path) -> list:
    onnx = require("onnx")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [node for node in graph.node if node.op_type in QUANTIZED_OPS]


def _named_run(nodes: list, run: list[int]) -> tuple[str, list[str]]:
    modules = dict.fromkeys(m for i in run if (m := _module(nodes[i])) is not None)
    first, last = run[0] + 1, run[-1] + 1
    place = (
        f"convolution {first} of {len(nodes)}"
        if first == last
        else f"convolutions {first}-{last} of {len(nodes)}"
    )
    return (f"{place} ({', '.join(modules)})" if modules else place), [nodes[i].name for i in run]


def float32_runs(
    runs: list[list[int]], agreement: Callable[[list[int]], float], *, target: float = TARGET
) -> tuple[list[list[int]], float]:
    """The runs of operators (index lists, in graph order) to keep in float32, and the agreement then.

    ``agreement(indices)`` measures the int8 model with ``indices`` kept in float32. First each run is
    quantized alone and the runs are kept, those flipping most classes first, until ``target`` is reached
    or half of them are kept. Then each kept run is halved while one half alone still reaches ``target``:
    the first convolutions of a network work at full resolution and cost the most, so keeping one of them
    instead of ten is much of int8's speed (MANet-R50 on the Brazil scene: the stem alone in float32 ran
    ~12 % faster than convolutions 1-11, docs/performance.md). Measurements: ``len(runs) + 1``, then about
    log2(run length) per kept run, two where the first half does not suffice."""
    everything = [i for run in runs for i in run]
    agreed = agreement([])
    if agreed >= target:
        return [], agreed
    flips = [1.0 - agreement([i for i in everything if i not in alone]) for alone in map(set, runs)]
    kept: list[list[int]] = []
    for index in np.argsort(flips)[::-1]:
        if agreed >= target or len(kept) >= len(runs) // 2 or flips[index] <= 0:
            break
        kept.append(runs[index])
        agreed = agreement([i for run in kept for i in run])
    if agreed < target:
        return kept, agreed
    for position in range(len(kept)):
        while len(kept[position]) > 1:
            run = kept[position]
            others = [i for k, other in enumerate(kept) if k != position for i in other]
            for half in (run[: len(run) // 2], run[len(run) // 2 :]):
                measured = agreement(others + half)
                if measured >= target:
                    kept[position], agreed = half, measured
                    break
            else:
                break
    return kept, agreed


def _module(node) -> str | None:
    """The network module a node was exported from (``encoder3``), when the exporter recorded one."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            scopes = [s for s in ast.literal_eval(prop.value) if s.startswith("network.")]
            return scopes[0].split(".")[1] if scopes else None
    return None


def quantize_int8(
    float_path: Path,
    output: Path,
    tiles: Sequence[np.ndarray],
    *,
    min_agreement: float | None = None,
    status: Callable[[str], None] | None = None,
) -> Quantized:
    """Write the int8 version of the float32 model ``float_path`` to ``output``, calibrated on ``tiles``
    (each 1×C×H×W, as the graph takes them); refuses where it cannot keep
    ``min_agreement`` (default :data:`MIN_AGREEMENT`) of the calibration pixels' classes (an
    :class:`~geoseg.errors.AgreementError`)."""
    min_agreement = MIN_AGREEMENT if min_agreement is None else min_agreement
    ort = require("onnxruntime")
    quantization = require("onnxruntime.quantization")
    tell = status or (lambda _text: None)
    reference = _classes(ort, float_path, tiles)
    nodes = _quantizable_nodes(float_path)
    count = min(GROUPS, len(nodes))  # a network without convolutions has nothing to quantize: no runs
    runs = [[int(i) for i in run] for run in np.array_split(np.arange(len(nodes)), count)] if count else []
    with tempfile.TemporaryDirectory(prefix="geoseg-int8-") as scratch:
        ranges = Path(scratch) / "ranges.json"
        trial = Path(scratch) / "trial.onnx"
        measured = 0

        def agreement(float32: list[int]) -> float:
            nonlocal measured
            measured += 1
            tell(f"int8: measuring layer groups ({measured})" if measured > 1 else "int8: calibrating")
            _quantize(quantization, float_path, trial, tiles, ranges, [nodes[i].name for i in float32])
            return float(np.mean(_classes(ort, trial, tiles) == reference))

        kept, agreed = float32_runs(runs, agreement)
        if agreed < min_agreement:
            raise AgreementError(
                f"precision='int8': the int8 network keeps the classes of {agreed:.2%} of the calibration "
                f"pixels only (at least {min_agreement:.1%} needed, {len(kept)} of {len(runs)} layer "
                "groups in float32); use precision='fp32' or precision='auto', "
                "or other tiles (calibration=RASTERS)"
            )
        named = [_named_run(nodes, run) for run in sorted(kept)]
        float32_layers = [name for name, _ in named]
        excluded = [node for _, names in named for node in names]
        _quantize(quantization, float_path, output, tiles, ranges, excluded)
    onnx = require("onnx")
    model = onnx.load(str(output))
    metadata = {p.key: p.value for p in model.metadata_props}
    metadata.update(
        {FLOAT32_LAYERS_KEY: json.dumps(float32_layers), CALIBRATION_AGREEMENT_KEY: f"{agreed:.6f}"}
    )
    del model.metadata_props[:]
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(output))
    return Quantized(float32_layers, agreed)


def _quantize(quantization, source: Path, output: Path, tiles, ranges: Path, excluded: list[str]) -> None:
    """Static QDQ int8 (uint8 activations, int8 weights per channel) of ``source`` without ``excluded``;
    the calibration ranges are computed once into ``ranges`` and reused."""

    name = _input_name(source)
    logging.disable(logging.WARNING)  # onnxruntime's advice to pre-process, on the root logger each time
    try:
        _quantize_static(quantization, source, output, name, tiles, ranges, excluded)
    finally:
        logging.disable(logging.NOTSET)


def _quantize_static(quantization, source, output, name, tiles, ranges, excluded) -> None:
    quantization.quantize_static(
        str(source),
        str(output),
        None if ranges.is_file() else _Feeds(quantization, name, tiles),
        quant_format=quantization.QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        activation_type=quantization.QuantType.QUInt8,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibration_cache_path=str(ranges),
    )


def _Feeds(quantization, name: str, tiles):  # noqa: N802 - builds the reader class onnxruntime wants
    class Feeds(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{name: tile} for tile in tiles])

        def get_next(self):
            return next(self.feeds, None)

    return Feeds()


def _input_name(path: Path) -> str:
    onnx = require("onnx")
    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _classes(ort, path: Path, tiles: Sequence[np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: tile})[0].argmax(1).ravel() for tile in tiles])
