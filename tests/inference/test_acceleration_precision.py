"""Precision, layout and compilation: refusals before any work, the layout choice, one compilation per
scene, and bf16 classes that agree with float32 on real crops with the bundled model."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from helpers import write_geotiff
from rasterio.windows import Window

from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.inference import acceleration
from geoseg.inference.acceleration import AcceleratedNetwork, accelerate, channels_last_pays, check_compile
from geoseg.inference.batch import predict
from geoseg.inference.scene import predict_scene
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.model.checkpoint import default_checkpoint_path, load_checkpoint

CPU = torch.device("cpu")


def _loaded_nothing(monkeypatch):
    """Fail the test if predict gets as far as loading a checkpoint."""

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the option was checked")

    monkeypatch.setattr("geoseg.inference.batch.load_model", refuse)


def test_cli_bf16_on_a_cpu_without_native_bf16_fails_before_any_work(
    monkeypatch, pretend_cpu, shared_data, tmp_path
):
    pretend_cpu(avx512=True, native_bf16=False)
    _loaded_nothing(monkeypatch)
    scene = shared_data / "variants" / "colorado_hro_0p15m.tif"
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(tmp_path / "c.tif"), "--device", "cpu", "--precision", "bf16"]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), where bf16 is emulated and "
        "slower than float32; use --precision fp32 or --precision auto"
    ]
    assert list(tmp_path.iterdir()) == []


def test_cli_compile_where_torch_compile_is_unavailable_fails_before_any_work(
    monkeypatch, shared_data, tmp_path
):
    monkeypatch.setattr(torch._dynamo, "is_dynamo_supported", lambda: False)
    _loaded_nothing(monkeypatch)
    scene = shared_data / "variants" / "colorado_hro_0p15m.tif"
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(tmp_path / "c.tif"), "--device", "cpu", "--compile"]
    )
    assert result.exit_code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("Error: torch.compile is not available with Python ")
    assert line.endswith("; run without --compile")
    assert list(tmp_path.iterdir()) == []


def test_compile_on_a_cpu_without_a_cxx_compiler_names_the_fix(monkeypatch):
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError, match=r"needs a C\+\+ compiler .* or run without compile=True$"):
        check_compile(CPU)


def test_compile_on_mps_is_refused():
    refused = "torch.compile does not support mps; run without compile=True"
    with pytest.raises(ConfigurationError, match=refused):
        check_compile(torch.device("mps"))


@pytest.mark.parametrize("avx512", [True, False])
def test_channels_last_follows_the_cpu_instruction_set(pretend_cpu, avx512):
    pretend_cpu(avx512=avx512)
    assert channels_last_pays(CPU) is avx512


def test_channels_last_on_cuda_and_not_on_mps():
    assert channels_last_pays(torch.device("cuda")) is True
    assert channels_last_pays(torch.device("mps")) is False


def test_accelerated_network_runs_channels_last_with_the_plain_networks_values(pretend_cpu):
    pretend_cpu(avx512=True)
    torch.manual_seed(0)
    plain = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1)
    )
    x = torch.rand(2, 3, 16, 16)
    expected = plain(x)
    seen = []
    plain.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    network = accelerate(plain, CPU)
    assert isinstance(network, AcceleratedNetwork)
    torch.testing.assert_close(network(x), expected, rtol=1e-5, atol=1e-6)
    assert seen == [True]


def test_plain_network_is_left_alone_where_nothing_pays(pretend_cpu):
    pretend_cpu(avx512=False)
    plain = torch.nn.Conv2d(3, 2, 1)
    assert accelerate(plain, CPU) is plain


@pytest.mark.parametrize("avx512", [True, False])
def test_a_network_without_parameters_runs_as_it_is(pretend_cpu, avx512):
    """An ONNX runtime network: no layout to change, nothing to compile, its prepare_input still seen."""
    pretend_cpu(avx512=avx512)

    class Session(torch.nn.Module):
        def prepare_input(self, batch, value_range):
            return batch.float()

        def forward(self, x):
            return x

    network = Session()
    assert accelerate(network, CPU) is network
    assert accelerate(network, CPU, compile=True) is network


@pytest.mark.parametrize("avx512", [True, False])
def test_compiled_network_sees_one_batch_size_per_scene(monkeypatch, pretend_cpu, avx512):
    """A short last batch is padded to the scene's batch size: one compilation, not one per batch size."""
    pretend_cpu(avx512=avx512)
    shapes = []

    def fake_compile(model, dynamic):
        assert dynamic is False

        def run(x):
            shapes.append(tuple(x.shape))
            return model(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    torch.manual_seed(0)
    plain = torch.nn.Conv2d(3, 2, 1)
    network = accelerate(plain, CPU, compile=True)
    full, short = torch.rand(4, 3, 8, 8), torch.rand(3, 3, 8, 8)
    torch.testing.assert_close(network(full), plain(full))
    out = network(short)
    assert out.shape == (3, 2, 8, 8)
    torch.testing.assert_close(out, plain(short))
    assert shapes == [(4, 3, 8, 8), (4, 3, 8, 8)]


# --- classes stay right -------------------------------------------------------------------------------

# Real 256² crops (file under shared/data or the repository, row, column) where bf16 disagreed with float32
# most before the stem and first stage were kept in float32 (98.5 % of pixels; 99.66 % with them, 99.81 %
# with the stem and stages 1-2). tests/test_precision_agreement.py checks a converted checkpoint too.
CROPS = [
    ("aerial/netherlands_0p25m_epsg28992.tif", 600, 600),
    ("labeled/vaihingen/image_area1_0_0_512_512_irrg.png", 0, 0),
    ("labeled/loveda/image_0.png", 512, 0),
]


@pytest.mark.slow  # the bundled ResNet-50 in emulated bf16 (no native bf16 here): a minute or two
def test_bf16_classes_agree_with_float32_on_real_crops(shared_data, tmp_path, pretend_cpu):
    """The default on a CPU with native bf16 (bf16, channels_last) against --precision fp32: one 256² tile per
    crop, side by side in one mosaic, so no blending hides a difference."""
    pretend_cpu(avx512=True, native_bf16=True)
    parts = []
    for name, row, col in CROPS:
        with rasterio.open(shared_data / name) as src:
            parts.append(src.read([1, 2, 3], window=Window(col, row, 256, 256)))
    mosaic = np.concatenate(parts, axis=2)
    write_geotiff(tmp_path / "mosaic.tif", mosaic, crs="EPSG:3857", transform=Affine(0.25, 0, 0, 0, -0.25, 0))
    model, card = load_checkpoint(default_checkpoint_path())
    classes = {}
    for precision in ("auto", "fp32"):
        out = tmp_path / f"{precision}.tif"
        result = predict_scene(
            model, card, tmp_path / "mosaic.tif", out, tile=256, overlap=0, batch_size=3, precision=precision
        )
        assert result.precision == ("bf16" if precision == "auto" else "fp32")
        with rasterio.open(out) as src:
            classes[precision] = src.read(1)
    assert len(np.unique(classes["fp32"])) >= 4  # the crops hold several classes
    agreement = float((classes["auto"] == classes["fp32"]).mean())
    assert agreement >= 0.995, f"bf16 agrees with float32 on {agreement:.2%} of pixels"


def test_compile_of_a_network_without_torch_parameters_fails_before_any_work(shared_data, tmp_path):
    """An ONNX export runs in onnxruntime: --compile would silently do nothing, so it is refused."""

    class Session(torch.nn.Module):
        def forward(self, x):
            raise AssertionError("the network ran")

    card = ModelCard(classes=[ClassInfo("a", (0, 0, 0)), ClassInfo("b", (9, 9, 9))], tile_size=64, overlap=16)
    scene = shared_data / "variants" / "colorado_hro_0p15m.tif"
    refused = r"no torch parameters to compile .* run without compile=True$"
    with pytest.raises(ConfigurationError, match=refused):
        predict([scene], tmp_path / "c.tif", model=Session(), card=card, device="cpu", compile=True)
    assert list(tmp_path.iterdir()) == []
