"""The readers: each chunk's input window read once, ahead of the network, into reused batch buffers.

A pool of reader threads, each with its own rasterio dataset handle (GDAL decodes without the GIL), reads
chunks in parallel; one thread puts them back in chunk order and cuts them into batches. Batches are filled
into a small ring of preallocated buffers (page-locked on CUDA) that come back once the network has taken
them, so memory and pinning cost do not grow with the scene; on CUDA the upload runs on its own stream and
overlaps the network's work on the previous batch.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg.inference.channel import Channel, Stop
from geoseg.inference.grid import Chunk, Tile, TileGrid
from geoseg.raster.reading import open_raster, read_failures, read_mirrored, read_valid_mask

if TYPE_CHECKING:
    from geoseg.inference.plan import ScenePlan

_QUEUE_BATCHES = 3
# Buffers: the queued batches, the one the network holds and the one being filled.
_BUFFERS = _QUEUE_BATCHES + 2
# Compressions whose decoding costs more than a forward pass's share of a core: worth a second CPU reader.
_COSTLY = {"jpeg", "webp", "jxl", "lerc", "lerc_deflate", "lerc_zstd"}


def thread_gdal_env() -> Callable[[], contextlib.AbstractContextManager]:
    """The caller's GDAL options, captured now, as a context to enter in another thread (rasterio keeps
    them per thread): the reader's, its pool's and the writer's threads all read and write under them."""
    options = rasterio.env.getenv() if rasterio.env.hasenv() else None

    def enter() -> contextlib.AbstractContextManager:
        return rasterio.Env(**options) if options is not None else contextlib.nullcontext()

    return enter


class ChunkMask(NamedTuple):
    """A chunk's own valid mask (None: all valid), sent before the chunk's batches."""

    index: int
    valid: np.ndarray | None


class Batch(NamedTuple):
    """Tiles in a ring buffer ``slot``, and how many tiles were skipped since the previous batch."""

    tensor: torch.Tensor
    tiles: list[Tile]
    skipped: int
    slot: int


class End(NamedTuple):
    """Every chunk was read; ``skipped`` tiles came after the last batch."""

    skipped: int


class Failed(NamedTuple):
    """The reader failed: the taker re-raises ``error``."""

    error: BaseException


Message = ChunkMask | Batch | End | Failed


def default_readers(source, device: torch.device) -> int:
    """Reader threads for ``device``: on CUDA up to 4 (one decoding thread cannot feed a fast GPU), on the
    CPU one, or two when the scene's compression (JPEG, WebP...) makes decoding costly; never more than
    the cores."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(4, cores))
    compression = getattr(source.compression, "value", source.compression) if source is not None else None
    return 2 if cores > 1 and str(compression or "").lower() in _COSTLY else 1


@dataclass
class _ChunkRead:
    """One chunk's reading: its own valid mask, the tiles with a valid pixel and their pixels."""

    chunk: Chunk
    own: np.ndarray | None
    tiles: list[Tile]
    parts: list[np.ndarray]
    skipped: int


class BatchBuffers:
    """A ring of preallocated batch buffers (page-locked for CUDA uploads), handed out and given back.

    A buffer given back with a CUDA event is reused only once the event has passed (its upload finished).
    """

    def __init__(self, count: int, pin: bool, stop: Stop):
        self.count, self.pin = count, pin
        self.buffers: list[torch.Tensor] = []
        self.free = Channel(stop)

    def acquire(self, shape: tuple[int, ...], dtype: torch.dtype) -> int | None:
        """A free buffer's slot (None when stopped); buffers are made on first use, up to ``count``."""
        if len(self.buffers) < self.count and self.free.empty():
            self.buffers.append(torch.empty(shape, dtype=dtype, pin_memory=self.pin))
            return len(self.buffers) - 1
        given = self.free.get()
        if given is None:
            return None
        slot, event = given
        if event is not None:
            event.synchronize()
        return slot

    def release(self, slot: int, event: Any = None) -> None:
        self.free.put((slot, event))


class Reader(threading.Thread):
    r"""Reads each chunk's input window once and cuts it into batches of tiles (a bounded queue ahead).

    Tiles without a valid pixel are not sent; each batch (and the end) says how many were skipped since the
    previous one, so that progress still counts every tile of the grid. ``grid`` is the scene's grid or that
    of one region of it. ``readers`` threads read chunks in parallel (default: :func:`default_readers`).
    ``out`` carries :data:`Message`\ s; a :class:`Batch`'s taker moves its tensor with
    :meth:`upload` and gives the buffer back with :meth:`release` once the network has run on it.
    """

    def __init__(
        self,
        source,
        plan: ScenePlan,
        grid: TileGrid,
        batch_size: int,
        device: torch.device,
        stop: Stop,
        *,
        readers: int | None = None,
    ):
        super().__init__(name="geoseg-reader", daemon=True)
        self.source, self.plan, self.grid = source, plan, grid
        self.batch_size, self.device, self.stop = batch_size, device, stop
        self.readers = readers or default_readers(source, device)
        self.out = Channel(stop, _QUEUE_BATCHES)  # closed when this thread ends
        self.buffers = BatchBuffers(_BUFFERS, device.type == "cuda", stop)
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.copied: dict[int, torch.cuda.Event] = {}  # slot -> its upload's end, on CUDA
        self._env = thread_gdal_env()

    def run(self) -> None:
        try:
            with self._env(), read_failures(self.plan.path):
                skipped = self._read()
            if skipped is not None:
                self.out.put(End(skipped))
        except BaseException as error:  # handed to the main thread, which re-raises it
            self.out.put(Failed(error))
        finally:
            self.out.close()

    def upload(self, batch: torch.Tensor, slot: int) -> torch.Tensor:
        """``batch`` on the device: on CUDA copied on the reader's own stream (overlapping the network's
        work), which the compute stream then waits for; the buffer is reusable once the copy is done."""
        if self.copy_stream is None:
            return batch.to(self.device)
        with torch.cuda.stream(self.copy_stream):
            moved = batch.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.copy_stream)
        compute = torch.cuda.current_stream(self.device)
        compute.wait_stream(self.copy_stream)
        moved.record_stream(compute)
        self.copied[slot] = done
        return moved

    def release(self, slot: int) -> None:
        """Give a batch's buffer back (after :meth:`upload` and the network's use of the tensor)."""
        self.buffers.release(slot, self.copied.pop(slot, None))

    def _read(self) -> int | None:
        """Queue masks and batches; return the tiles skipped after the last batch (None: stopped)."""
        pending: list[np.ndarray] = []
        tiles: list[Tile] = []
        skipped = 0
        with contextlib.ExitStack() as cleanup:
            reads = self._chunk_reads(cleanup)
            for read in reads:
                if read is None or not self.out.put(ChunkMask(read.chunk.index, read.own)):
                    return None
                skipped += read.skipped
                for tile, part in zip(read.tiles, read.parts, strict=True):
                    pending.append(part)
                    tiles.append(tile)
                    if len(pending) == self.batch_size:
                        if not self._send(pending, tiles, skipped):
                            return None
                        pending, tiles, skipped = [], [], 0
            if pending:
                if not self._send(pending, tiles, skipped):
                    return None
                skipped = 0
        return skipped

    def _chunk_reads(self, cleanup: contextlib.ExitStack):
        """Each chunk's reading in chunk order (None once stopped): read here with one reader, else by a
        pool whose threads each open their own dataset handle, at most two chunks per reader ahead."""
        chunks = self.grid.chunks()
        if self.readers == 1:
            for chunk in chunks:
                yield None if self.stop.is_set() else _read_chunk(self.source, self.plan, self.grid, chunk)
            return
        local, handles, lock = threading.local(), [], threading.Lock()
        cleanup.callback(lambda: [handle.close() for handle in handles])
        pool = cleanup.enter_context(ThreadPoolExecutor(self.readers, thread_name_prefix="geoseg-read"))
        cleanup.callback(pool.shutdown, cancel_futures=True)  # runs first: no read outlives the handles

        def job(chunk: Chunk) -> _ChunkRead | None:
            if self.stop.is_set():
                return None
            with self._env():
                dataset = getattr(local, "dataset", None)
                if dataset is None:
                    dataset = local.dataset = open_raster(self.plan.path)
                    with lock:
                        handles.append(dataset)
                return _read_chunk(dataset, self.plan, self.grid, chunk)

        ahead: collections.deque[Future] = collections.deque()
        for chunk in chunks:
            ahead.append(pool.submit(job, chunk))
            if len(ahead) >= 2 * self.readers:
                yield ahead.popleft().result()
        while ahead:
            yield ahead.popleft().result()

    def _send(self, parts: list[np.ndarray], tiles: list[Tile], skipped: int) -> bool:
        """Fill a free buffer with ``parts`` and queue it (False: stopped)."""
        dtype = torch.uint8 if parts[0].dtype == np.uint8 else torch.float32  # uint8: 4x less transfer
        slot = self.buffers.acquire((self.batch_size, *parts[0].shape), dtype)
        if slot is None:
            return False
        buffer = self.buffers.buffers[slot]
        array = buffer.numpy()
        for i, part in enumerate(parts):
            array[i] = part
        return self.out.put(Batch(buffer[: len(parts)], tiles, skipped, slot))


def _read_chunk(dataset, plan: ScenePlan, grid: TileGrid, chunk: Chunk) -> _ChunkRead:
    """One mask read covers the chunk's own pixels and the real pixels of its tiles (which may start below or
    right of the chunk's corner and reach beyond it, or, at a region's first row or column, before it); one
    data read covers its tiles with a valid pixel, each a whole tile of the virtual scene: where it reaches
    into the border margin (or past a scene smaller than a tile) the scene mirrored about its own edges.

    A tile is skipped when none of its real pixels is valid: it would change no valid pixel."""
    size = grid.tile
    top, left, bottom, right = chunk.y0, chunk.x0, chunk.y1, chunk.x1
    if chunk.tiles:
        t_top, t_left, t_height, t_width = chunk.read_window
        top, left = max(0, min(top, t_top)), max(0, min(left, t_left))
        bottom = min(grid.height, max(bottom, t_top + t_height))
        right = min(grid.width, max(right, t_left + t_width))
    valid = read_valid_mask(dataset, Window(left, top, right - left, bottom - top), plan.bands)
    own = (
        None
        if valid is None
        else _own_mask(valid[chunk.y0 - top : chunk.y1 - top, chunk.x0 - left : chunk.x1 - left])
    )
    live = [t for t in chunk.tiles if valid is None or _any_valid(valid, t, top, left)]
    parts = []
    if live:
        # every tile's extent is (tile_height, tile_width); the network takes it as a whole tile
        height, width = t_height + size - grid.tile_height, t_width + size - grid.tile_width
        data = read_mirrored(dataset, t_top, t_left, height, width, plan.bands)
        for tile in live:
            y, x = tile.y - t_top, tile.x - t_left
            parts.append(data[:, y : y + size, x : x + size])
    return _ChunkRead(chunk, own, live, parts, len(chunk.tiles) - len(live))


def _own_mask(valid: np.ndarray) -> np.ndarray:
    """A chunk's own mask as it waits for its chunk to finish, never holding the larger mask it was cut from.

    Masks wait in memory while a partial batch fills, one per chunk read meanwhile, which on a scene that is
    mostly no-data is every chunk: an all-invalid mask is therefore a zero-stride view of one value (a few
    bytes), any other a compact copy.
    """
    if not valid.any():
        return np.broadcast_to(np.False_, valid.shape)
    return valid.copy()


def _any_valid(valid: np.ndarray, tile: Tile, top: int, left: int) -> bool:
    """Whether ``tile`` has a valid real pixel, from a mask of real pixels whose corner is at (``top``,
    ``left``) and which covers the tile's real pixels."""
    y, x = max(tile.y, top) - top, max(tile.x, left) - left
    return bool(valid[y : tile.y + tile.height - top, x : tile.x + tile.width - left].any())
