"""Choosing the compute device and the mixed-precision type, shared by predict and train."""

from __future__ import annotations

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
            raise ConfigurationError(f"device {spec!r} requested but CUDA is not available; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigurationError(
                f"device {spec!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif device.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigurationError(f"device {spec!r} requested but MPS is not available; use --device cpu")
    elif device.type != "cpu":
        raise ConfigurationError(f"unknown device {spec!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain float32.

    ``auto`` means bf16 on GPUs that support it, fp16 on other GPUs, fp32 on the CPU (where CPU autocast is
    rarely faster and changes results).
    """
    precision = (precision or "auto").lower()
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigurationError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16")
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return None
    return torch.bfloat16 if precision == "bf16" else torch.float16
