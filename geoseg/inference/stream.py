"""One region as a stream: the loop that reads tiles ahead, predicts and blends them, and writes a part.

A reader thread (:mod:`geoseg.inference.reader`) cuts the region's tiles into batches (uint8 stays uint8
until the device), skipping tiles without a single valid input pixel (wide no-data collars cost no network
time); this thread runs the network and blends softmax probabilities into the current chunk's accumulator
on the device; a writer thread writes each finished chunk (uint8 only) into the region's part GeoTIFFs.
Memory depends on the tile, batch and chunk sizes, never on the scene or the region: tile contributions that
reach the next chunk row are parked in an anonymous temporary file (the "frontier"), those that reach the
next chunk of the row stay on the device.

The region's tiles are those of the scene's global grid that touch it, blended with the same weights, so its
pixels equal those of a single stream over the whole scene.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from affine import Affine
from rasterio.windows import Window

from geoseg.atomic import atomic_output
from geoseg.device import autocast_dtype
from geoseg.errors import CheckpointError
from geoseg.inference.acceleration import HalvingBatches, accelerate
from geoseg.inference.blending import WindowWeights
from geoseg.inference.channel import Channel, Stop
from geoseg.inference.grid import Chunk, Region, Tile, TileGrid
from geoseg.inference.plan import ScenePlan
from geoseg.inference.reader import ChunkMask, End, Failed, Message, Reader, thread_gdal_env
from geoseg.inference.tasks import Network, Progress, RegionResult, RegionTask
from geoseg.model.card import ModelCard
from geoseg.model.normalize import normalize
from geoseg.raster.classes import NODATA_CLASS
from geoseg.raster.reading import open_raster
from geoseg.raster.writing import open_tiled, tiled_profile, write_valid_mask


def prepare_network(model: torch.nn.Module, device: torch.device, *, compile: bool = False) -> Network:
    """The model in evaluation mode on ``device``, folded, in its fastest layout and compiled if asked
    (:func:`~geoseg.inference.acceleration.accelerate`), as the callable the loop runs. The folded copy is
    made where the model is, then moved: a model on the host costs the device one set of weights."""
    return accelerate(model.eval(), device, compile=compile)


def part_profile(plan: ScenePlan, region: Region, kind: str, num_classes: int) -> dict[str, Any]:
    """The tiled GeoTIFF profile of one part: the region's size, its corner's place in the scene's grid."""
    georef = dict(plan.georef)
    if georef.get("transform") is not None:
        georef["transform"] = georef["transform"] * Affine.translation(region.x0, region.y0)
    count = num_classes if kind == "probabilities" else 1
    nodata = NODATA_CLASS if kind == "classes" else None  # others: internal mask
    return tiled_profile(region.width, region.height, count, nodata, georef, categorical=kind == "classes")


def run_region(
    network: Network,
    card: ModelCard,
    plan: ScenePlan,
    region: Region,
    parts: dict[str, Path],
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    tta: str,
    progress: Progress | None = None,
) -> RegionResult:
    """Compute ``region`` of a planned scene and write each of ``parts`` (kind -> path) atomically.

    ``progress(done, total)`` counts the region's tiles, skipped ones too.
    """
    grid = plan.grid.for_region(region)
    with contextlib.ExitStack() as finals:
        targets = {kind: finals.enter_context(atomic_output(path, True)) for kind, path in parts.items()}
        with open_raster(plan.path) as source, contextlib.ExitStack() as opened:
            sinks = {
                kind: opened.enter_context(
                    open_tiled(path, part_profile(plan, region, kind, card.num_classes))
                )
                for kind, path in targets.items()
            }
            counts, computed = _stream(
                network,
                card,
                plan,
                grid,
                source,
                sinks,
                batch_size=batch_size,
                device=device,
                amp_dtype=amp_dtype,
                tta=tta,
                progress=progress,
                scratch_dir=next(iter(parts.values())).parent,
            )
    return RegionResult(region, counts, computed)


def run_task(
    task: RegionTask, network: Network, device: torch.device, progress: Progress | None
) -> RegionResult:
    """:func:`run_region` for a task, wherever it runs (this process or a Dask worker)."""
    return run_region(
        network,
        task.card,
        task.plan,
        task.region,
        task.parts,
        batch_size=task.batch_size,
        device=device,
        amp_dtype=autocast_dtype(task.precision, device),
        tta=task.tta,
        progress=progress,
    )


# --- the network ---------------------------------------------------------------------------------------


def _tta_views(mode: str) -> list[tuple[Callable, Callable]]:
    """(transform, inverse) pairs over the spatial dims; d4 rotations need square tiles, which they are."""
    views = [(lambda t: t, lambda t: t)]
    if mode == "flip":  # the authors' flip TTA: none, horizontal, vertical, both (flips are self-inverse)
        for dims in ((-1,), (-2,), (-2, -1)):
            views.append((lambda t, d=dims: t.flip(d), lambda t, d=dims: t.flip(d)))
    elif mode == "d4":
        views = []
        for k in range(4):
            views.append((lambda t, k=k: t.rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1))))
            views.append(
                (lambda t, k=k: t.flip(-1).rot90(k, (-2, -1)), lambda t, k=k: t.rot90(-k, (-2, -1)).flip(-1))
            )
    return views


def _probabilities(
    network: Network,
    batch: torch.Tensor,
    card: ModelCard,
    value_range: tuple[float, float],
    amp_dtype: torch.dtype | None,
    views: list[tuple[Callable, Callable]],
) -> torch.Tensor:
    """Softmax probabilities (B, K, T, T) in float32, averaged over the test-time views."""
    prepare = getattr(network, "prepare_input", None)  # an ONNX export scales and normalises inside
    x = prepare(batch, value_range) if prepare else normalize(batch, value_range, card.mean, card.std)
    total = None
    for forward, inverse in views:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = network(forward(x))
        if logits.ndim != 4 or logits.shape[1] != card.num_classes or logits.shape[-2:] != x.shape[-2:]:
            raise CheckpointError(
                f"the network returned shape {tuple(logits.shape)} for input {tuple(x.shape)}; "
                f"the card lists {card.num_classes} classes"
            )
        probs = inverse(torch.softmax(logits.float(), dim=1))
        total = probs if total is None else total.add_(probs)
    if len(views) > 1:
        total.div_(len(views))
    return total


# --- accumulation across chunks ------------------------------------------------------------------------


class _Frontier:
    """Partial sums reaching into the next chunk row, parked on disk so memory does not grow with width.

    Anonymous temporary files (no name on disk) in the work folder: nothing can be left behind.
    """

    def __init__(self, folder: Path):
        self._folder = str(folder) if str(folder) else "."
        # Both live as long as the region runs and are closed by close().
        self._writing = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115
        self._reading = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115
        self._written: dict[int, tuple[int, tuple[int, ...]]] = {}
        self._readable: dict[int, tuple[int, tuple[int, ...]]] = {}

    def put(self, col: int, values: torch.Tensor) -> None:
        array = np.ascontiguousarray(values.cpu().numpy(), dtype=np.float32)
        offset = self._writing.seek(0, os.SEEK_END)
        self._writing.write(memoryview(array).cast("B"))
        self._written[col] = (offset, array.shape)

    def take(self, col: int) -> np.ndarray | None:
        entry = self._readable.pop(col, None)
        if entry is None:
            return None
        offset, shape = entry
        array = np.empty(shape, dtype=np.float32)
        self._reading.seek(offset)
        self._reading.readinto(memoryview(array).cast("B"))
        return array

    def next_row(self) -> None:
        """What was written for the coming row becomes readable; the old file is emptied for reuse."""
        self._writing, self._reading = self._reading, self._writing
        self._writing.seek(0)
        self._writing.truncate()
        self._readable, self._written = self._written, {}

    def close(self) -> None:
        self._writing.close()
        self._reading.close()


class _Blender:
    """Weighted probability sums of the current chunk on the device, handed on to its neighbours.

    The accumulator's corner is the chunk's ``acc_y0, acc_x0``: in a region's first row or column it starts
    where the first tile does, before the region; those extra pixels are summed and dropped.
    """

    def __init__(self, grid: TileGrid, num_classes: int, device: torch.device, frontier: _Frontier):
        self.grid, self.k, self.device, self.frontier = grid, num_classes, device, frontier
        self.weights = WindowWeights(
            grid.height, grid.width, grid.overlap, device, (grid.margin_y, grid.margin_x)
        )
        self.chunk: Chunk | None = None
        self.acc: torch.Tensor | None = None
        self.carry: torch.Tensor | None = None

    def open(self, chunk: Chunk) -> None:
        if chunk.row > 0 and chunk.col == 0:
            self.frontier.next_row()
        self.chunk = chunk
        self.acc = torch.zeros(
            (self.k + 1, chunk.ext_y1 - chunk.acc_y0, chunk.ext_x1 - chunk.acc_x0),
            dtype=torch.float32,
            device=self.device,
        )
        if self.carry is not None and chunk.col > 0:
            self.acc[:, :, : self.carry.shape[2]] += self.carry
        self.carry = None
        parked = self.frontier.take(chunk.col) if chunk.row > 0 else None
        if parked is not None:
            self.acc[:, : parked.shape[1], : parked.shape[2]] += torch.from_numpy(parked).to(self.device)

    def add(self, tile: Tile, probs: torch.Tensor) -> None:
        h, w = tile.height, tile.width
        y, x = tile.y - self.chunk.acc_y0, tile.x - self.chunk.acc_x0
        weight = self.weights(tile.y, tile.x, h, w)
        self.acc[: self.k, y : y + h, x : x + w].addcmul_(probs[:, :h, :w], weight)
        self.acc[self.k, y : y + h, x : x + w].add_(weight)

    def close(self, confidence: bool, probabilities: bool) -> dict[str, np.ndarray]:
        """Finish the chunk: argmax (and optional uint8 probabilities) of its own pixels; hand on the rest."""
        chunk, acc, k = self.chunk, self.acc, self.k
        rh, rw = chunk.y1 - chunk.acc_y0, chunk.x1 - chunk.acc_x0
        oy, ox = chunk.y0 - chunk.acc_y0, chunk.x0 - chunk.acc_x0
        region, weight = acc[:k, oy:rh, ox:rw], acc[k, oy:rh, ox:rw]
        # Weight 0: only skipped (all-invalid) tiles cover the pixel, so it is invalid and masked by the
        # writer; dividing by 1 there gives 0 instead of NaN and changes no valid pixel.
        weight = weight.masked_fill(weight == 0, 1.0)
        # argmax of the weighted sums: dividing by the (positive) weight first cannot change the winner.
        classes, best = _argmax_classes(region)
        result = {"classes": classes.cpu().numpy()}
        if confidence:
            result["confidence"] = _to_uint8(best / weight).cpu().numpy()
        if probabilities:
            result["probabilities"] = _to_uint8(region / weight).cpu().numpy()
        if chunk.row + 1 < self.grid.chunk_rows and acc.shape[1] > rh:
            self.frontier.put(chunk.col, acc[:, rh:, :rw])
        if chunk.col + 1 < self.grid.chunk_cols and acc.shape[2] > rw:
            self.carry = acc[:, :, rw:].clone()
        self.chunk, self.acc = None, None
        return result


def _argmax_classes(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 index of the largest of K score planes (the first on ties, like argmax) and that largest score.

    One pass per class with element-wise operations: several times faster than ``argmax(0)``, which reduces
    over the slowest-varying dimension.
    """
    best = scores[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    for k in range(1, scores.shape[0]):
        index.masked_fill_(scores[k] > best, k)
        torch.maximum(best, scores[k], out=best)
    return index, best


def _to_uint8(share: torch.Tensor) -> torch.Tensor:
    return share.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


class FinishedChunk(NamedTuple):
    """A chunk for the writer: its pixels' valid mask (None: all valid) and its uint8 results by kind."""

    chunk: Chunk
    valid: np.ndarray | None
    result: dict[str, np.ndarray]


# --- threads -------------------------------------------------------------------------------------------


class _Writer(threading.Thread):
    """Masks invalid pixels, counts classes and writes finished chunks, while the network works on.

    Invalid pixels are nodata 255 in the class raster; in the confidence and probability rasters they are 0
    and masked by the internal mask, so that a valid probability 0 stays valid. Windows are relative to the
    part's corner ``origin`` (row, column in the scene).
    """

    def __init__(self, sinks: dict[str, Any], num_classes: int, origin: tuple[int, int], stop: Stop):
        super().__init__(name="geoseg-writer", daemon=True)
        self.sinks, self.k, self.origin = sinks, num_classes, origin
        self.inbox = Channel(stop, 2)  # closed by send(None), and when this thread ends
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.error: BaseException | None = None
        self.env = thread_gdal_env()

    def run(self) -> None:
        try:
            with self.env():
                while (item := self.inbox.get()) is not None:  # None: no more, or stopped
                    self._write(*item)
        except BaseException as error:
            self.error = error
        finally:
            self.inbox.close()  # a send() waiting for room hears of the failure

    def _write(self, chunk: Chunk, valid: np.ndarray | None, result: dict[str, np.ndarray]) -> None:
        classes = result["classes"]
        if valid is not None:
            invalid = ~valid
            classes[invalid] = NODATA_CLASS
            for kind in ("confidence", "probabilities"):
                if kind in result:
                    result[kind][..., invalid] = 0
        self.counts += np.bincount(classes.ravel(), minlength=256)[: self.k]
        top, left = self.origin
        window = Window(chunk.x0 - left, chunk.y0 - top, chunk.x1 - chunk.x0, chunk.y1 - chunk.y0)
        for kind, sink in self.sinks.items():
            values = result[kind]
            sink.write(values if values.ndim == 3 else values[np.newaxis], window=window)
            if kind != "classes":
                write_valid_mask(sink, valid, window)

    def send(self, item: FinishedChunk | None) -> None:
        """Queue a finished chunk (None: no more); re-raise the writer's failure rather than wait on it."""
        if item is None:
            self.inbox.close()
        elif not self.inbox.put(item):
            if self.error is not None:
                raise self.error
            raise RuntimeError("the writer thread stopped")


def _stream(
    network: Network,
    card: ModelCard,
    plan: ScenePlan,
    grid: TileGrid,
    source,
    sinks: dict[str, Any],
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    tta: str,
    progress: Progress | None,
    scratch_dir: Path,
) -> tuple[np.ndarray, int]:
    """Predict every tile of ``grid`` with a valid pixel once, in chunk order.

    Returns the per-class pixel counts of valid pixels and the number of tiles computed.
    """
    stop = Stop()
    reader = Reader(source, plan, grid, batch_size, device, stop)
    writer = _Writer(sinks, card.num_classes, (grid.region.y0, grid.region.x0), stop)
    frontier = _Frontier(scratch_dir)
    blender = _Blender(grid, card.num_classes, device, frontier)
    views = _tta_views(tta)
    slices = HalvingBatches(batch_size, network, amp_dtype)  # learnt once per process and network
    masks: dict[int, np.ndarray | None] = {}

    def probabilities(part: torch.Tensor) -> torch.Tensor:
        return _probabilities(network, part, card, plan.value_range, amp_dtype, views)

    chunks = grid.chunks()
    done = computed = 0
    want_confidence, want_probabilities = "confidence" in sinks, "probabilities" in sinks

    def finish_until(index: int) -> None:
        """Finish every chunk before ``index`` (chunks without tiles too) and open chunk ``index``."""
        while blender.chunk is None or blender.chunk.index < index:
            if blender.chunk is not None:
                finished = blender.chunk
                result = blender.close(want_confidence, want_probabilities)
                writer.send(FinishedChunk(finished, masks.pop(finished.index), result))
            nxt = next(chunks, None)
            if nxt is None:
                return
            blender.open(nxt)

    try:
        reader.start()
        writer.start()
        with torch.inference_mode():
            while True:
                item = _take(reader)
                if isinstance(item, End):
                    if item.skipped and progress is not None:
                        progress(grid.num_tiles, grid.num_tiles)  # the trailing tiles were all skipped
                    break
                if isinstance(item, Failed):
                    raise item.error
                if isinstance(item, ChunkMask):
                    masks[item.index] = item.valid
                    continue
                probs = slices(probabilities, reader.upload(item.tensor, item.slot))
                reader.release(item.slot)
                for b, tile in enumerate(item.tiles):
                    finish_until(tile.chunk)
                    blender.add(tile, probs[b])
                computed += len(item.tiles)
                done += len(item.tiles) + item.skipped
                if progress is not None:
                    progress(done, grid.num_tiles)
            finish_until(grid.num_chunks)
        writer.send(None)
        writer.join()
        if writer.error is not None:
            raise writer.error
        return writer.counts, computed
    finally:
        stop.set()
        reader.join()
        writer.join()
        frontier.close()


def _take(reader: Reader) -> Message:
    item = reader.out.get()
    if item is None:  # closed and empty: the thread ended without End or Failed
        raise RuntimeError("the reader thread stopped without a result")
    return item
