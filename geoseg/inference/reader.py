"""The reader thread: reads each chunk's input window once, ahead of the network, in a bounded queue.

Kept apart from the streaming loop so that the way input is read (one thread today) can change without
touching the blending.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import torch
from rasterio.errors import RasterioError
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.inference.grid import Tile, TileGrid
from geoseg.raster.reading import gdal_message, read_bands, read_valid_mask

if TYPE_CHECKING:
    from geoseg.inference.engine import ScenePlan

POLL_S = 0.1
_QUEUE_BATCHES = 3


def gdal_env() -> contextlib.AbstractContextManager:
    """The caller's GDAL options for a worker thread (rasterio keeps them per thread)."""
    if rasterio.env.hasenv():
        return rasterio.Env(**rasterio.env.getenv())
    return contextlib.nullcontext()


def put(target: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` on ``target`` unless ``stop`` is set first (False then): a full queue never hangs."""
    while not stop.is_set():
        try:
            target.put(item, timeout=POLL_S)
            return True
        except queue.Full:
            continue
    return False


class Reader(threading.Thread):
    """Reads each chunk's input window once and cuts it into batches of tiles (a bounded queue ahead).

    Tiles without a valid pixel are not sent; each batch (and the end) says how many were skipped since the
    previous one, so that progress still counts every tile of the grid. ``grid`` is the scene's grid or that
    of one region of it.
    """

    def __init__(
        self, source, plan: ScenePlan, grid: TileGrid, batch_size: int, pin: bool, stop: threading.Event
    ):
        super().__init__(name="geoseg-reader", daemon=True)
        self.source, self.plan, self.grid = source, plan, grid
        self.batch_size, self.pin, self.stop = batch_size, pin, stop
        self.out: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        self.env = gdal_env()

    def run(self) -> None:
        try:
            with self.env:
                skipped = self._read()
            if skipped is not None:
                put(self.out, ("end", skipped), self.stop)
        except RasterioError as error:
            message = gdal_message(error)
            put(self.out, ("error", InputError(f"{self.plan.path}: read failed ({message})")), self.stop)
        except BaseException as error:  # handed to the main thread, which re-raises it
            put(self.out, ("error", error), self.stop)

    def _read(self) -> int | None:
        """Queue masks and batches; return the tiles skipped after the last batch (None: stopped)."""
        plan, grid = self.plan, self.grid
        size = grid.tile
        pending: list[np.ndarray] = []
        tiles: list[Tile] = []
        skipped = 0
        for chunk in grid.chunks():
            if self.stop.is_set():
                return None
            # One mask read covers the chunk's own pixels and its tiles (which may start below or right of
            # the chunk's corner and reach beyond it, or, at a region's first row or column, before it).
            top, left, bottom, right = chunk.y0, chunk.x0, chunk.y1, chunk.x1
            if chunk.tiles:
                t_top, t_left, t_height, t_width = chunk.read_window
                top, left = min(top, t_top), min(left, t_left)
                bottom, right = max(bottom, t_top + t_height), max(right, t_left + t_width)
            valid = read_valid_mask(self.source, Window(left, top, right - left, bottom - top), plan.bands)
            own = (
                None
                if valid is None
                else _own_mask(valid[chunk.y0 - top : chunk.y1 - top, chunk.x0 - left : chunk.x1 - left])
            )
            if not put(self.out, ("chunk", chunk.index, own), self.stop):
                return None
            if not chunk.tiles:
                continue
            live = [t for t in chunk.tiles if valid is None or _any_valid(valid, t, top, left)]
            skipped += len(chunk.tiles) - len(live)
            if not live:
                continue
            data = read_bands(self.source, Window(t_left, t_top, t_width, t_height), plan.bands)
            for tile in live:
                y, x = tile.y - t_top, tile.x - t_left
                part = data[:, y : y + tile.height, x : x + tile.width]
                if tile.height < size or tile.width < size:
                    part = np.pad(
                        part, ((0, 0), (0, size - tile.height), (0, size - tile.width)), mode="reflect"
                    )
                pending.append(part)
                tiles.append(tile)
                if len(pending) == self.batch_size:
                    if not put(self.out, ("batch", self._tensor(pending), tiles, skipped), self.stop):
                        return None
                    pending, tiles, skipped = [], [], 0
        if pending:
            if not put(self.out, ("batch", self._tensor(pending), tiles, skipped), self.stop):
                return None
            skipped = 0
        return skipped

    def _tensor(self, parts: list[np.ndarray]) -> torch.Tensor:
        array = np.stack(parts)
        if array.dtype != np.uint8:  # uint8 travels as is (4x less transfer); other types as float32
            array = array.astype(np.float32)
        tensor = torch.from_numpy(array)
        return tensor.pin_memory() if self.pin else tensor


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
    """Whether ``tile`` has a valid input pixel, from a mask whose corner is at (``top``, ``left``)."""
    y, x = tile.y - top, tile.x - left
    return bool(valid[y : y + tile.height, x : x + tile.width].any())
