"""The two ONNX exporters side by side on the same MANet: export time, onnxruntime time, parity, file size.

geoseg exports through ``torch.export`` and the TorchDynamo ONNX exporter (torch's default since 2.9); the
TorchScript exporter is the deprecated alternative. Both run here on one network, in one process, and the
ratios say what the choice costs. Parity is the largest |Δlogit| against PyTorch on real tiles of the sample
orthophoto (a square batch and a non-square tile).

    .venv/bin/python benchmarks/export.py                          # ResNet-18, random weights
    .venv/bin/python benchmarks/export.py --backbone resnet50
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rasterio
import torch

from geoseg.export.exporter import INPUT_NAME, ONNX_OPSET, RawPixelNetwork, export_program
from geoseg.model.manet import build_manet
from geoseg.model.presets import preset_card

SCENE = Path(__file__).resolve().parents[1] / "sample_data" / "netherlands_0p25m_epsg28992.tif"


def tiles() -> list[torch.Tensor]:
    with rasterio.open(SCENE) as src:
        square = np.stack([src.read(window=((0, 256), (0, 256))), src.read(window=((256, 512), (0, 256)))])
        wide = src.read(window=((512, 704), (0, 448)))[None]
    return [torch.from_numpy(square).float(), torch.from_numpy(wide).float()]


def dynamo(network, card, path: Path) -> None:
    program = export_program(network, card, logits=True)
    onnx_program = torch.onnx.export(
        program, dynamo=True, opset_version=ONNX_OPSET, input_names=[INPUT_NAME], optimize=True, verbose=False
    )
    onnx_program.save(str(path))


def torchscript(network, card, path: Path) -> None:
    wrapped = RawPixelNetwork(network, card, logits=True).eval()
    example = torch.zeros(2, card.num_bands, 64, 96)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=["logits"],
            dynamic_axes={INPUT_NAME: axes, "logits": axes},
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    card = preset_card("loveda", args.backbone)
    torch.manual_seed(0)
    network = build_manet(card.num_classes, args.backbone).eval()
    for module in network.modules():
        if hasattr(module, "gamma"):
            torch.nn.init.constant_(module.gamma, 0.7)
    batches = tiles()
    with torch.inference_mode():
        references = [network(RawPixelNetwork(torch.nn.Identity(), card, logits=True)(x)) for x in batches]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, exporter in (("dynamo (geoseg)", dynamo), ("torchscript", torchscript)):
            path = Path(folder) / f"{name.split()[0]}.onnx"
            start = time.perf_counter()
            exporter(network, card, path)
            export_s = time.perf_counter() - start
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            error, run_s = 0.0, float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                outputs = [session.run(None, {INPUT_NAME: x.numpy()})[0] for x in batches]
                run_s = min(run_s, time.perf_counter() - start)
            for out, ref in zip(outputs, references, strict=True):
                error = max(error, float(np.abs(out - ref.numpy()).max()))
            rows[name] = (export_s, run_s, error, path.stat().st_size / 2**20)
    base = rows["dynamo (geoseg)"]
    print(f"MANet {args.backbone}, opset {ONNX_OPSET}, tiles 2x256² + 192x448, onnxruntime CPU")
    print(
        f"{'exporter':18} {'export s':>9} {'÷':>6} {'ort run s':>10} {'÷':>6} {'max|Δlogit|':>12} {'MiB':>7}"
    )
    for name, (export_s, run_s, error, size) in rows.items():
        print(
            f"{name:18} {export_s:9.1f} {export_s / base[0]:6.2f} {run_s:10.3f} {run_s / base[1]:6.2f} "
            f"{error:12.2e} {size:7.1f}"
        )


if __name__ == "__main__":
    main()
