"""How the network runs fastest on a device: BatchNorm folded into convolutions, memory layout, (opt-in)
``torch.compile``, and the batch size that fits.

Precision is chosen in :mod:`geoseg.device`; folding, layout and compilation only change speed, never the
classes beyond float rounding, so they are decided here from what torch reports about the device.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
import threading
import warnings
import weakref
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from geoseg import device as devices
from geoseg.errors import ConfigurationError, GeosegError, GeosegWarning

CPU_BATCH = 4
MAX_AUTO_BATCH = 64
# Device memory one tile pixel needs during MANet-R50's forward pass (bf16 convolutions, float32 attention,
# softmax and blending), with room to spare: a first guess that OutOfMemoryError halving corrects.
_BYTES_PER_PIXEL = 2048
# Side of the input that shows fold_batchnorm the network's data flow: a multiple of every network's input
# multiple (32), small enough to cost milliseconds.
_PROBE_SIZE = 32


def channels_last_pays(device: torch.device) -> bool:
    """Whether convolutions run faster in channels_last (NHWC) than in the contiguous layout on ``device``.

    CUDA: cuDNN's tensor-core kernels are NHWC. CPU: oneDNN's NHWC kernels win with AVX512 (MANet-R50, 512²:
    1.30 → 1.01 s/tile in float32 on an AVX512 EPYC) but lose with AVX2 only (see README, benchmarks/
    cpu_speed.py), so it follows the instruction set torch dispatches to.
    """
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        return devices.cpu_features().avx512
    return False


def check_compile(device: torch.device) -> None:
    """Fail before any work where ``torch.compile`` cannot run on ``device``, naming what to do instead."""
    if not torch._dynamo.is_dynamo_supported():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise ConfigurationError(
            f"torch.compile is not available with Python {version} and torch {torch.__version__}; "
            "run without compile=True"
        )
    if device.type == "cpu":
        compilers = [os.environ.get("CXX", ""), "g++", "c++", "clang++"]
        if not any(name and shutil.which(name) for name in compilers):
            raise ConfigurationError(
                "torch.compile on the CPU needs a C++ compiler (g++ or clang++) on the PATH; install one "
                "or run without compile=True"
            )
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigurationError(
                "torch.compile on CUDA needs triton (pip install triton); run without compile=True"
            )
    else:
        raise ConfigurationError(f"torch.compile does not support {device.type}; run without compile=True")


class AcceleratedNetwork(torch.nn.Module):
    """The network in its fastest layout, optionally compiled; takes and returns the plain network's tensors.

    A compiled network is specialised to one input shape: tiles are always T×T, and a short last batch is
    padded to the largest batch that ran, so a scene costs one compilation, not one per batch size. After an
    out-of-memory error that size is forgotten: padding back up to it would fail forever.
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
        if count < self.batch:
            x = torch.cat([x, x.new_zeros((self.batch - count, *x.shape[1:]))])
        try:
            out = self.compiled(x)
        except torch.cuda.OutOfMemoryError:
            self.batch = 0
            raise
        self.batch = max(self.batch, count)
        return out[:count]


def accelerate(model: torch.nn.Module, device: torch.device, *, compile: bool = False) -> torch.nn.Module:
    """``model`` (in eval mode) on ``device`` with its BatchNorms folded (:func:`fold_batchnorm`), in
    channels_last where that pays, compiled if asked.

    Compilation is opt-in: it costs minutes once per process and pays only on big scenes (README: break-even).
    A network without torch parameters (an ONNX runtime session) runs as it is: there is nothing to fold, lay
    out or compile, and the engine must still see its ``prepare_input``.
    """
    if next(model.parameters(), None) is None:
        return model.to(device)
    if compile:
        check_compile(device)
    channels_last = channels_last_pays(device)
    network = fold_batchnorm(model).to(device)
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    if channels_last or compile:
        network = AcceleratedNetwork(network, channels_last=channels_last, compile=compile)
    _share_fitting_sizes(network, model)
    return network


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) in which every ``BatchNorm2d`` fed by convolutions alone is folded
    into their weights and biases: one pass over the features less per BatchNorm, the same classes up to
    float rounding. Inference only: the statistics become constants.

    A BatchNorm folds when its input is the very output of a ``Conv2d``/``ConvTranspose2d`` (ResNet stages,
    MANet's decoder) or a sum of such outputs (MACU-Net's asymmetric blocks: BN(a + b + c) = s·a + s·b +
    s·c + t), which nothing else reads, every convolution running once. The pairs are found by running the
    copy once on a small input and watching the data flow, not by module names or a symbolic trace (which
    MANet's shape check and float32 regions defeat), so a layer that another change runs in float32, or a
    cast between a convolution and its BatchNorm, keeps working (that pair is left alone). The caller's
    model is never changed (it may be trained further). A network the probe input does not fit (another
    band count or size rule than geoseg's) is returned as it is: folding only changes speed.
    """
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convolutions or not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    folded = copy.deepcopy(model).eval()
    try:
        groups = _foldable_batchnorms(folded, convolutions[0].in_channels)
    except Exception:  # noqa: BLE001 - an unknown network that cannot run the probe runs unfolded
        return model
    for conv_names, norm_name in groups:
        norm = folded.get_submodule(norm_name)
        for i, conv_name in enumerate(conv_names):
            conv = folded.get_submodule(conv_name)
            # the shift (mean, bias) once, into the first convolution; the scale into each of them
            mean = norm.running_mean if i == 0 else torch.zeros_like(norm.running_mean)
            shift = norm.bias if i == 0 or norm.bias is None else torch.zeros_like(norm.bias)
            conv.weight, conv.bias = fuse_conv_bn_weights(
                conv.weight,
                conv.bias,
                mean,
                norm.running_var,
                norm.eps,
                norm.weight,
                shift,
                transpose=isinstance(conv, nn.ConvTranspose2d),
            )
        parent, _, child = norm_name.rpartition(".")
        setattr(folded.get_submodule(parent), child, nn.Identity())
    return folded


class _DataFlow(TorchFunctionMode):
    """Records, on a probe batch, which torch operations read each tensor (outside BatchNorms) and which
    tensors are sums of two others. Every tensor seen stays alive until the probe ends, so ids stay unique."""

    _ADDS = (torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__)

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[int] = Counter()
        self.sums: dict[int, tuple[int, int]] = {}  # id of a + b -> ids of a and b
        self.alive: list[torch.Tensor] = []
        self.inside_norm = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if self.inside_norm:
            return result
        tensors = [leaf for leaf in pytree.tree_leaves((args, kwargs)) if isinstance(leaf, torch.Tensor)]
        for tensor in tensors:
            self.reads[id(tensor)] += 1
        self.alive.extend(tensors)
        same_shapes = isinstance(result, torch.Tensor) and all(t.shape == result.shape for t in tensors)
        if func in self._ADDS and not kwargs and len(args) == len(tensors) == 2 and same_shapes:
            self.sums[id(result)] = (id(args[0]), id(args[1]))
            self.alive.append(result)
        return result


def _foldable_batchnorms(model: nn.Module, channels: int) -> list[tuple[list[str], str]]:
    """(convolution names, BatchNorm name) of ``model`` that can be folded, seen on one probe batch."""
    aliases = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    names = {id(m): name for name, m in model.named_modules() if aliases[id(m)] == 1}
    flow, calls = _DataFlow(), Counter()
    produced: dict[int, str] = {}  # id of a convolution's output -> the convolution's name
    consumed: dict[str, list[int]] = {}  # BatchNorm name -> ids of its inputs

    def after_conv(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        calls[names[id(module)]] += 1
        produced[id(output)] = names[id(module)]
        flow.alive.append(output)
        flow.reads[id(output)] = 0  # an earlier tensor with this id is gone

    def before_norm(module: nn.Module, args: tuple) -> None:
        consumed.setdefault(names[id(module)], []).append(id(args[0]))
        flow.alive.append(args[0])
        flow.inside_norm += 1

    def after_norm(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        flow.inside_norm -= 1

    def sources(tensor: int) -> list[str] | None:
        """The convolutions whose outputs, read by nothing else, sum up to ``tensor`` (None: not so)."""
        if tensor in produced:
            return [produced[tensor]]
        if tensor not in flow.sums:
            return None
        found = []
        for part in flow.sums[tensor]:
            names_below = sources(part) if flow.reads[part] == 1 else None
            if names_below is None:
                return None
            found += names_below
        return found

    handles = []
    for module in model.modules():
        if id(module) not in names:
            continue
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
            handles.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            handles.append(module.register_forward_pre_hook(before_norm))
            handles.append(module.register_forward_hook(after_norm))
    parameter = next(model.parameters())
    probe = torch.zeros(
        (1, channels, _PROBE_SIZE, _PROBE_SIZE), dtype=parameter.dtype, device=parameter.device
    )
    try:
        with torch.no_grad(), flow:
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    groups = []
    for norm_name, inputs in consumed.items():
        convs = sources(inputs[0]) if len(inputs) == 1 and not flow.reads[inputs[0]] else None
        if not convs or len(set(convs)) != len(convs) or any(calls[name] != 1 for name in convs):
            continue
        if model.get_submodule(norm_name).running_mean is None:
            continue
        modules = [model.get_submodule(name) for name in convs]
        if any(isinstance(m, nn.ConvTranspose2d) and m.groups != 1 for m in modules):
            continue  # its weight holds the output channels per group: one scale per column does not fit
        groups.append((convs, norm_name))
    return groups


def check_batch_size(batch_size: int | str) -> int | str:
    """A batch size of at least 1, or ``auto``."""
    if batch_size == "auto":
        return batch_size
    size = int(batch_size)
    if size < 1:
        raise ConfigurationError(f"batch_size={size}: give at least 1 (or auto)")
    return size


def resolve_batch_size(batch_size: int | str, device: torch.device, tile: int) -> int:
    """``auto``: on CUDA the largest power of two (up to 64) whose tiles fit in the device's free memory
    by a generous per-pixel estimate (halved at run time if it does not fit after all, see
    :class:`HalvingBatches`); elsewhere 4, where larger batches do not run faster."""
    if batch_size != "auto":
        return check_batch_size(batch_size)
    if device.type != "cuda":
        return CPU_BATCH
    free, _ = torch.cuda.mem_get_info(device)
    fits = max(1, int(0.8 * free) // (tile * tile * _BYTES_PER_PIXEL))
    return min(MAX_AUTO_BATCH, 1 << (fits.bit_length() - 1))


# network (weakly: a freed network takes its sizes along) -> {(device, tile shape, autocast dtype): the
# largest batch that fitted after an out-of-memory error}, for every region and scene of the process
_FITTING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FITTING_LOCK = threading.Lock()


def _fitting_sizes(network: object) -> dict[tuple, int]:
    with _FITTING_LOCK:
        return _FITTING.setdefault(network, {})


def _share_fitting_sizes(network: torch.nn.Module, model: torch.nn.Module) -> None:
    """``network``, prepared from the caller's ``model``, learns into the model's sizes: a second scene of the
    same model (prepared, folded again) starts at the size that fitted. Both keys hold the sizes, so they
    live on with the network when the model is gone (a Dask worker keeps the network, not a task's model)."""
    with _FITTING_LOCK:
        _FITTING[network] = _FITTING.setdefault(model, {})


class HalvingBatches:
    """Runs batches in slices of at most ``limit`` tiles; on ``torch.cuda.OutOfMemoryError`` the slice is
    halved and the batch run again, so a batch size that does not fit slows the run instead of ending it.
    One tile that does not fit is an error naming what to change.

    The size that fitted is learnt for the process, per ``network`` (the caller's model, however often it is
    prepared), device, tile shape and ``amp_dtype``: later regions and scenes, Dask tasks on the same worker
    too, start there, without another failed attempt, and the one-line warning comes once.
    """

    def __init__(self, limit: int, network: object, amp_dtype: torch.dtype | None) -> None:
        self.requested, self.amp_dtype = limit, amp_dtype
        self.sizes = _fitting_sizes(network)

    def __call__(self, run: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor) -> torch.Tensor:
        key = (str(batch.device), tuple(batch.shape[1:]), self.amp_dtype)
        limit = min(self.requested, self.sizes.get(key, self.requested))
        failed_at = None
        while True:
            try:
                if len(batch) <= limit:
                    result = run(batch)
                else:
                    result = torch.cat([run(batch[i : i + limit]) for i in range(0, len(batch), limit)])
                break
            except torch.cuda.OutOfMemoryError:
                if limit == 1:
                    raise GeosegError(
                        "out of GPU memory with one tile per batch; use a smaller tile=N or device='cpu'"
                    ) from None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                failed_at = failed_at or min(limit, len(batch))
                limit = max(1, min(limit, len(batch)) // 2)
        if failed_at is not None:
            with _FITTING_LOCK:  # Dask threads may learn at once: one of them tells
                learnt = limit < self.sizes.get(key, failed_at)
                if learnt:
                    self.sizes[key] = limit
            if learnt:
                warnings.warn(
                    f"out of GPU memory with {failed_at} tiles per batch: running {limit} tile(s) at a time "
                    f"from now on (set batch_size={limit} to start there)",
                    GeosegWarning,
                    stacklevel=2,
                )
        return result
