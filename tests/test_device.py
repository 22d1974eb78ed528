"""Device and precision choice: what ``auto`` picks on each kind of device, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch

from geoseg import device as device_module
from geoseg.device import CpuFeatures, autocast_dtype, resolve_device, resolve_precision
from geoseg.errors import ConfigurationError

CPU = torch.device("cpu")
CUDA = torch.device("cuda")


@pytest.fixture
def cpu_bf16(pretend_cpu):
    """Pretend the CPU has (True) or lacks (False) native bf16, whatever this machine has."""

    def set_native(native: bool) -> None:
        pretend_cpu(avx512=native, native_bf16=native)

    return set_native


@pytest.fixture
def cuda_bf16(monkeypatch):
    """Pretend a GPU with (True) or without (False) bf16 support is present."""

    def set_support(supported: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")

    return set_support


def test_auto_on_a_cpu_with_native_bf16_is_bf16(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("auto", CPU) == "bf16"
    assert autocast_dtype("auto", CPU) is torch.bfloat16


def test_auto_on_a_cpu_without_native_bf16_is_fp32(cpu_bf16):
    cpu_bf16(False)
    assert resolve_precision("auto", CPU) == "fp32"
    assert autocast_dtype("auto", CPU) is None


def test_explicit_bf16_on_a_cpu_without_it_fails_naming_fp32(cpu_bf16):
    cpu_bf16(False)
    with pytest.raises(
        ConfigurationError, match=r"no native bf16 .*use precision='fp32' or precision='auto'"
    ):
        resolve_precision("bf16", CPU)


def test_explicit_bf16_on_a_cpu_with_it_is_kept(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("BF16", CPU) == "bf16"


def test_fp32_is_fp32_everywhere(cpu_bf16):
    cpu_bf16(True)
    assert resolve_precision("fp32", CPU) == "fp32"
    assert autocast_dtype("fp32", CPU) is None


def test_fp16_on_a_cpu_without_amx_fp16_fails(pretend_cpu):
    pretend_cpu(avx512=True, native_bf16=True, native_fp16=False)
    with pytest.raises(
        ConfigurationError, match=r"fp16 on this CPU .*use precision='fp32' or precision='auto'"
    ):
        resolve_precision("fp16", CPU)


def test_fp16_on_a_cpu_with_amx_fp16_is_kept_and_auto_stays_bf16(pretend_cpu):
    pretend_cpu(avx512=True, native_bf16=True, native_fp16=True)
    assert resolve_precision("fp16", CPU) == "fp16"
    assert resolve_precision("auto", CPU) == "bf16"


def test_the_tests_pretend_one_cpu_whatever_the_host_has():
    """conftest's default: CI's hosts differ (AVX2-only, native bf16), the verdicts must not."""
    assert device_module.cpu_features() == CpuFeatures(avx512=False, native_bf16=False, native_fp16=False)
    assert resolve_precision("auto", CPU) == "fp32"


def test_auto_on_a_gpu_is_bf16_where_supported_else_fp16(cuda_bf16):
    cuda_bf16(True)
    assert resolve_precision("auto", CUDA) == "bf16"
    cuda_bf16(False)
    assert resolve_precision("auto", CUDA) == "fp16"
    assert autocast_dtype("auto", CUDA) is torch.float16


def test_explicit_bf16_on_a_gpu_without_it_fails_naming_fp16(cuda_bf16):
    cuda_bf16(False)
    with pytest.raises(
        ConfigurationError,
        match=r"^Tesla T4 does not support bf16; use precision='fp16' or precision='auto'$",
    ):
        resolve_precision("bf16", CUDA)


def test_unknown_precision_lists_the_choices():
    with pytest.raises(ConfigurationError, match=r"unknown precision 'fp8'; use auto, fp32, bf16, fp16"):
        resolve_precision("fp8", CPU)


@pytest.mark.real_cpu
@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, False), (True, False, True), (False, True, True)]
)
def test_native_bf16_follows_what_torch_reports_on_x86(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert device_module.cpu_features().native_bf16 is expected


@pytest.mark.real_cpu
def test_native_bf16_ignores_a_probe_this_torch_lacks(monkeypatch):
    monkeypatch.setattr(device_module.platform, "machine", lambda: "x86_64")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert device_module.cpu_features().native_bf16 is False


@pytest.mark.real_cpu
@pytest.mark.parametrize(
    ("capability", "expected"), [("AVX512", True), ("AVX512_BF16", True), ("AVX2", False), ("DEFAULT", False)]
)
def test_avx512_follows_the_instruction_set_torch_dispatches_to(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert device_module.cpu_features().avx512 is expected


@pytest.mark.real_cpu
@pytest.mark.parametrize("amx_fp16", [False, True])
def test_native_fp16_follows_what_torch_reports(monkeypatch, amx_fp16):
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: amx_fp16)
    assert device_module.cpu_features().native_fp16 is amx_fp16


def test_resolve_device_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigurationError, match="CUDA is not available; use device='cpu'"):
        resolve_device("cuda")
