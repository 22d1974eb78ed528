"""bf16 keeps the classes of float32 on real crops, for the bundled model and for a trained foreign checkpoint
(the bundled network written as the MANet authors' GeoSeg training saves it, ÷255 input only, converted back
with ``geoseg convert``): its first convolution carries the input's mean, which makes bf16 rounding there
worse.

bf16 convolutions are computed as a CPU with native bf16 computes them (``helpers.NativeBf16Convolutions``):
this CPU's own emulated bf16 kernels round the same way but would take ten minutes here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from helpers import NativeBf16Convolutions, write_authors_checkpoint
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint
from geoseg.model.macunet import build_macunet
from geoseg.model.manet import build_manet
from geoseg.model.maresunet import build_maresunet
from geoseg.model.normalize import normalize
from geoseg.model.presets import preset_card

REPO = Path(__file__).resolve().parents[1]

# Real 512² crops (file under shared/data or the repository, row, column) where bf16 moved the most classes
# with only the stem and stage 1 in float32: agreement 99.44, 99.52, 99.49, 99.73 % (bundled) and 99.35,
# 99.46, 99.56, 99.59 % (converted); with stages 1-2 in float32 every crop >= 99.7 %.
CROPS = [
    ("labeled/loveda/image_0.png", 512, 0),
    ("labeled/loveda/image_2.png", 512, 512),
    ("sample_data/netherlands_0p25m_epsg28992.tif", 488, 488),
    ("labeled/potsdam/image_2_10_0_0_512_512.png", 0, 0),
]


def _read(shared_data, name: str, row: int, col: int, size: int = 512) -> torch.Tensor:
    root = REPO if name.startswith("sample_data/") else shared_data
    with rasterio.open(root / name) as src:
        return torch.from_numpy(src.read([1, 2, 3], window=Window(col, row, size, size))[None])


def _logits(model, card, tile: torch.Tensor, bf16: bool) -> torch.Tensor:
    x = normalize(tile, card.value_range, card.mean, card.std)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if bf16:
            with NativeBf16Convolutions():
                return model(x).float()
        return model(x)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The bundled model and its GeoSeg-format copy after ``geoseg convert`` (÷255-only card)."""
    bundled, card = load_checkpoint(default_checkpoint_path())
    folder = tmp_path_factory.mktemp("authors")
    source = write_authors_checkpoint(bundled, card, folder / "manet_loveda_epoch104.ckpt")
    card_file = folder / "loveda_div255.json"
    card_file.write_text(json.dumps({**preset_card("loveda").to_dict(), "mean": [0.0] * 3, "std": [1.0] * 3}))
    output = folder / "converted.safetensors"
    result = CliRunner().invoke(cli, ["convert", str(source), "-o", str(output), "--card", str(card_file)])
    assert result.exit_code == 0, result.output
    source.unlink()  # 140 MB
    return {"bundled": (bundled, card), "converted": load_checkpoint(output)}


@pytest.mark.slow
def test_converted_authors_checkpoint_is_the_bundled_network(models, shared_data, monkeypatch):
    """Same logits in float32 once the bundled stem pads with the normalised value of a raw 0 (what the
    converted network's zero padding of raw ÷255 input is): the key mapping and the ÷255 card are right."""
    (bundled, card), (converted, converted_card) = models["bundled"], models["converted"]
    assert converted_card.mean == [0.0] * 3 and converted_card.std == [1.0] * 3
    tile = _read(shared_data, "labeled/vaihingen/image_area1_0_0_512_512_irrg.png", 0, 0, 256)
    raw_zero = -(torch.tensor(card.mean) / torch.tensor(card.std)).view(1, 3, 1, 1)
    weight = bundled.firstconv.weight
    monkeypatch.setattr(
        bundled.firstconv,
        "forward",
        lambda x: F.conv2d(F.pad(x - raw_zero, (3,) * 4) + raw_zero, weight, stride=2),
    )
    expected = _logits(bundled, card, tile, bf16=False)
    monkeypatch.undo()
    got = _logits(converted, converted_card, tile, bf16=False)
    assert (got - expected).abs().max() < 1e-3
    assert len(torch.unique(got.argmax(1))) >= 3


@pytest.mark.parametrize("which", ["bundled", "converted"])
@pytest.mark.slow
def test_bf16_classes_agree_with_float32_on_every_real_crop(models, shared_data, which):
    model, card = models[which]
    shares = []
    for name, row, col in CROPS:
        tile = _read(shared_data, name, row, col)
        expected = _logits(model, card, tile, bf16=False).argmax(1)
        got = _logits(model, card, tile, bf16=True).argmax(1)
        assert len(torch.unique(expected)) >= 2, name
        shares.append(float((got == expected).float().mean()))
    assert min(shares) >= 0.995, f"bf16 agrees with float32 on {np.round(np.array(shares) * 100, 2)} %"


@pytest.mark.parametrize(
    ("build", "float32_parts", "bf16_parts"),
    [
        (lambda: build_manet(3, "resnet18"), ["firstconv", "encoder1", "encoder2"], ["encoder3", "decoder1"]),
        (lambda: build_maresunet(3), ["firstconv", "encoder1", "encoder2"], ["encoder3", "decoder1"]),
        (lambda: build_macunet(3), ["conv1"], ["conv2", "conv9"]),
    ],
    ids=["manet", "maresunet", "macunet"],
)
def test_autocast_keeps_the_input_side_in_float32_and_the_rest_in_bf16(build, float32_parts, bf16_parts):
    """The parts that carry the finest detail compute in float32 under autocast (the classes stay right);
    the rest in bf16 (the speed)."""
    torch.manual_seed(0)
    model = build().eval()
    seen = {}

    def record(module, args, output):
        seen[names[module]] = output.dtype

    names = {model.get_submodule(name): name for name in float32_parts + bf16_parts}
    for module in names:
        module.register_forward_hook(record)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.rand(1, 3, 64, 64))
    assert seen == {
        **dict.fromkeys(float32_parts, torch.float32),
        **dict.fromkeys(bf16_parts, torch.bfloat16),
    }
