"""int8 for the CPU: static QDQ quantization, per channel, of a float32 ONNX export, calibrated on real tiles,
with the layer groups whose quantization changes classes kept in float32, found by measurement.

Calibration (onnxruntime's MinMax ranges) runs once; then, as for bf16 (README, ``encode_resnet``), one
group at a time is quantized and the share of calibration pixels whose class changes against float32 is
measured. The groups are the quantized operators (convolutions) in graph order, cut into
:data:`GROUPS` runs of equal count, named by the network modules they belong to: input side first, head
last, for any network. Groups are then kept in float32, the worst first, until the int8 model agrees with
float32 on :data:`TARGET` of the calibration pixels; a model that needs more than half of its groups in
float32 for :data:`MIN_AGREEMENT` gains nothing from int8 and is refused.
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


def layer_groups(model_path: Path, groups: int = GROUPS) -> list[tuple[str, list[str]]]:
    """(name, node names) of the quantizable operators in graph order, in ``groups`` runs of equal count.
    A run is named after the network modules its nodes come from (the exporter's name scopes), or by its
    place (``convolutions 1-13 of 104``) where the graph does not say."""
    onnx = require("onnx")
    graph = onnx.load(str(model_path), load_external_data=False).graph
    nodes = [node for node in graph.node if node.op_type in QUANTIZED_OPS]
    count = min(groups, len(nodes))
    runs = np.array_split(np.arange(len(nodes)), count) if count else []
    named = []
    for run in runs:
        modules = dict.fromkeys(m for i in run if (m := _module(nodes[i])) is not None)
        place = f"convolutions {run[0] + 1}-{run[-1] + 1} of {len(nodes)}"
        name = f"{place} ({', '.join(modules)})" if modules else place
        named.append((name, [nodes[i].name for i in run]))
    return named


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
    groups = layer_groups(float_path)
    all_nodes = [name for _, names in groups for name in names]
    with tempfile.TemporaryDirectory(prefix="geoseg-int8-") as scratch:
        ranges = Path(scratch) / "ranges.json"
        trial = Path(scratch) / "trial.onnx"

        def agreement(excluded: list[str]) -> float:
            _quantize(quantization, float_path, trial, tiles, ranges, excluded)
            return float(np.mean(_classes(ort, trial, tiles) == reference))

        tell(f"int8: calibrating on {len(tiles)} tiles")
        agreed = agreement([])
        kept: list[int] = []
        if agreed < TARGET:
            flips = []
            for index, (_, names) in enumerate(groups):
                tell(f"int8: measuring layer group {index + 1}/{len(groups)}")
                others = [n for n in all_nodes if n not in set(names)]
                flips.append(1.0 - agreement(others))
            for index in np.argsort(flips)[::-1]:
                if agreed >= TARGET or len(kept) >= len(groups) // 2 or flips[index] <= 0:
                    break
                kept.append(int(index))
                tell(f"int8: keeping {len(kept)} layer group(s) in float32")
                agreed = agreement([n for i in kept for n in groups[i][1]])
        if agreed < min_agreement:
            raise AgreementError(
                f"precision='int8': the int8 network keeps the classes of {agreed:.2%} of the calibration "
                f"pixels only (at least {min_agreement:.1%} needed, {len(kept)} of {len(groups)} layer "
                "groups in float32); use precision='fp32' or precision='auto', "
                "or other tiles (calibration=RASTERS)"
            )
        float32_layers = [groups[i][0] for i in sorted(kept)]
        excluded = [n for i in kept for n in groups[i][1]]
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
