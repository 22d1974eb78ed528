"""Precision, layout and compilation: refusals before any work, the layout choice, one compilation per
scene, and bf16 classes that agree with float32 on real crops with the bundled model."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from geoseg import device as device_module
from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.inference import acceleration
from geoseg.inference.acceleration import AcceleratedNetwork, accelerate, channels_last_pays, check_compile

CPU = torch.device("cpu")


def _loaded_nothing(monkeypatch):
    """Fail the test if predict gets as far as loading a checkpoint."""

    def refuse(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the option was checked")

    monkeypatch.setattr("geoseg.inference.predict.load_model", refuse)


def test_cli_bf16_on_a_cpu_without_native_bf16_fails_before_any_work(monkeypatch, shared_data, tmp_path):
    monkeypatch.setattr(device_module, "cpu_has_native_bf16", lambda: False)
    _loaded_nothing(monkeypatch)
    scene = shared_data / "variants" / "colorado_hro_0p15m.tif"
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(tmp_path / "c.tif"), "--device", "cpu", "--precision", "bf16"]
    )
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), where bf16 is emulated and "
        "slower than float32; use --precision fp32 or auto"
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
    with pytest.raises(ConfigurationError, match=r"needs a C\+\+ compiler .* or run without --compile$"):
        check_compile(CPU)


def test_compile_on_mps_is_refused():
    with pytest.raises(ConfigurationError, match="torch.compile does not support mps; run without --compile"):
        check_compile(torch.device("mps"))


@pytest.mark.parametrize(
    ("capability", "expected"), [("AVX512", True), ("AVX512_BF16", True), ("AVX2", False), ("DEFAULT", False)]
)
def test_channels_last_follows_the_cpu_instruction_set(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert channels_last_pays(CPU) is expected


def test_channels_last_on_cuda_and_not_on_mps():
    assert channels_last_pays(torch.device("cuda")) is True
    assert channels_last_pays(torch.device("mps")) is False


def test_accelerated_network_runs_channels_last_with_the_plain_networks_values(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
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


def test_plain_network_is_left_alone_where_nothing_pays(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    plain = torch.nn.Conv2d(3, 2, 1)
    assert accelerate(plain, CPU) is plain


def test_compiled_network_sees_one_batch_size_per_scene(monkeypatch):
    """A short last batch is padded to the scene's batch size: one compilation, not one per batch size."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
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
