"""How the network runs fastest on a device: memory layout and (opt-in) ``torch.compile``.

Precision is chosen in :mod:`geoseg.device`; layout and compilation only change speed, never the classes
beyond float rounding, so they are decided here from what torch reports about the device.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from collections.abc import Callable

import torch

from geoseg.errors import ConfigurationError, GeosegError, GeosegWarning

CPU_BATCH = 4
MAX_AUTO_BATCH = 64
# Device memory one tile pixel needs during MANet-R50's forward pass (bf16 convolutions, float32 attention,
# softmax and blending), with room to spare: a first guess that OutOfMemoryError halving corrects.
_BYTES_PER_PIXEL = 2048


def channels_last_pays(device: torch.device) -> bool:
    """Whether convolutions run faster in channels_last (NHWC) than in the contiguous layout on ``device``.

    CUDA: cuDNN's tensor-core kernels are NHWC. CPU: oneDNN's NHWC kernels win with AVX512 (MANet-R50, 512²:
    1.30 → 1.01 s/tile in float32 on an AVX512 EPYC) but lose with AVX2 only (see README, benchmarks/
    cpu_speed.py), so it follows the instruction set torch dispatches to.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    return False


def check_compile(device: torch.device) -> None:
    """Fail before any work where ``torch.compile`` cannot run on ``device``, naming what to do instead."""
    if not torch._dynamo.is_dynamo_supported():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise ConfigurationError(
            f"torch.compile is not available with Python {version} and torch {torch.__version__}; "
            "run without --compile"
        )
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            raise ConfigurationError(
                "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on the PATH; install one "
                "or run without --compile"
            )
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigurationError(
                "torch.compile on CUDA needs triton (pip install triton); run without --compile"
            )
    else:
        raise ConfigurationError(f"torch.compile does not support {device.type}; run without --compile")


class AcceleratedNetwork(torch.nn.Module):
    """The network in its fastest layout, optionally compiled; takes and returns the plain network's tensors.

    A compiled network is specialised to one input shape: tiles are always T×T, and a short last batch is
    padded to the largest batch seen so far, so a scene costs one compilation, not one per batch size.
    """

    def __init__(self, model: torch.nn.Module, *, channels_last: bool, compile: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        self.compiled = torch.compile(model, dynamic=False) if compile else None
        self.batch = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.compiled is None:
            return self.model(x)
        count = x.shape[0]
        self.batch = max(self.batch, count)
        if count < self.batch:
            x = torch.cat([x, x.new_zeros((self.batch - count, *x.shape[1:]))])
        return self.compiled(x)[:count]


def accelerate(model: torch.nn.Module, device: torch.device, *, compile: bool = False) -> torch.nn.Module:
    """``model`` (already on ``device``, in eval mode) in channels_last where that pays, compiled if asked.

    Compilation is opt-in: it costs minutes once per process and pays only on big scenes (README: break-even).
    A network without torch parameters (an ONNX runtime session) runs as it is: there is nothing to lay out
    or compile, and the engine must still see its ``prepare_input``.
    """
    channels_last = channels_last_pays(device)
    if not (channels_last or compile) or next(model.parameters(), None) is None:
        return model
    if compile:
        check_compile(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return AcceleratedNetwork(model, channels_last=channels_last, compile=compile)


def resolve_batch_size(batch_size: int | str, device: torch.device, tile: int) -> int:
    """``auto``: on CUDA the largest power of two (up to 64) whose tiles fit in the device's free memory
    by a generous per-pixel estimate (halved at run time if it does not fit after all, see
    :class:`HalvingBatches`); elsewhere 4, where larger batches do not run faster."""
    if batch_size != "auto":
        size = int(batch_size)
        if size < 1:
            raise ConfigurationError(f"batch size {size} must be at least 1 (or auto)")
        return size
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    fits = max(1, int(0.8 * free) // (tile * tile * _BYTES_PER_PIXEL))
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))


class HalvingBatches:
    """Runs batches in slices of at most ``limit`` tiles; on ``torch.cuda.OutOfMemoryError`` the limit is
    halved (one warning each time) and the batch run again, so a batch size that does not fit slows the
    run instead of ending it. One tile that does not fit is an error naming what to change."""

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __call__(self, run: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        while True:
            try:
                if len(batch) <= self.limit:
                    return run(batch)
                return torch.cat([run(batch[i : i + self.limit]) for i in range(0, len(batch), self.limit)])
            except torch.cuda.OutOfMemoryError:
                if self.limit == 1:
                    raise GeosegError(
                        "out of GPU memory with one tile per batch; use a smaller --tile or --device cpu"
                    ) from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.limit = max(1, min(self.limit, len(batch)) // 2)
                warnings.warn(
                    f"out of GPU memory: running {self.limit} tile(s) at a time (set --batch-size "
                    f"{self.limit} to start there)",
                    GeosegWarning,
                    stacklevel=2,
                )
