"""Choosing the compute device and the mixed-precision type, shared by predict and train."""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch

from geoseg.errors import ConfigurationError


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU; explicit names are checked so typos fail early."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as error:
        raise ConfigurationError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {spec!r} requested but CUDA is not available; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"device {spec!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigurationError(f"device {spec!r} requested but MPS is not available; use device='cpu'")
    elif device.type != "cpu":
        raise ConfigurationError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
# int8 runs in onnxruntime (geoseg.export.quantize): nothing for torch to autocast
_AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": None}


@dataclass(frozen=True)
class CpuFeatures:
    """What this CPU computes fast, as torch reports it: the precision ``auto`` picks and the memory layout
    follow it."""

    avx512: bool  # torch dispatches AVX512 kernels, where oneDNN's channels_last convolutions win
    native_bf16: bool  # AVX512-BF16 or AMX on x86, BF16 on Arm: elsewhere bf16 is emulated, slower than fp32
    native_fp16: bool  # AMX-FP16: elsewhere fp16 is emulated


def cpu_features() -> CpuFeatures:
    """This CPU's :class:`CpuFeatures`: the one place geoseg asks torch about the CPU, so that a test (or a
    benchmark) pretends another CPU by replacing this function alone."""
    return CpuFeatures(
        avx512=torch.backends.cpu.get_cpu_capability().startswith("AVX512"),
        native_bf16=_native_bf16(),
        native_fp16=_cpu_probe("_is_amx_fp16_supported"),
    )


def _native_bf16() -> bool:
    x86 = any(_cpu_probe(name) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
    if x86 or platform.machine().lower() not in ("arm64", "aarch64"):
        return x86
    # On Arm oneDNN's own check is the hardware BF16 extension (on x86 it would accept bare AVX512).
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _cpu_probe(name: str) -> bool:
    """A ``torch.cpu`` capability probe; False where this torch build lacks it."""
    probe = getattr(torch.cpu, name, None)
    return bool(probe()) if probe is not None else False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision that runs on ``device``: ``fp32``, ``bf16`` or ``fp16``.

    ``auto`` is the fastest mode that keeps the classes: bf16 on GPUs that support it, else fp16; bf16 on
    CPUs with native bf16, else fp32 (MPS: fp16). An explicit mode the device cannot run fast fails here,
    before any work, naming what to use instead.
    """
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ConfigurationError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "int8" and device.type != "cpu":
        raise ConfigurationError(
            f"precision='int8' runs on the CPU (onnxruntime), not on {device.type}; use device='cpu'"
        )
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if precision == "auto":
            return "bf16" if bf16 else "fp16"
        if precision == "bf16" and not bf16:
            raise ConfigurationError(
                f"{torch.cuda.get_device_name(device)} does not support bf16; "
                "use precision='fp16' or precision='auto'"
            )
        return precision
    if device.type == "mps":
        return "fp16" if precision == "auto" else precision
    cpu = cpu_features()
    if precision == "auto":
        return "bf16" if cpu.native_bf16 else "fp32"
    if precision == "bf16" and not cpu.native_bf16:
        raise ConfigurationError(
            "this CPU has no native bf16 (AVX512-BF16, AMX or Arm BF16), where bf16 is emulated and slower "
            "than float32; use precision='fp32' or precision='auto'"
        )
    if precision == "fp16" and not cpu.native_fp16:
        raise ConfigurationError(
            "fp16 on this CPU (no AMX-FP16) is emulated and slower than float32; "
            "use precision='fp32' or precision='auto'"
        )
    return precision


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of :func:`resolve_precision`'s choice, or None for plain float32."""
    return _AUTOCAST[resolve_precision(precision, device)]
