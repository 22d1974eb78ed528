"""The streaming loop: read tiles ahead, predict and blend on the device, write finished chunks behind.

A reader thread cuts the scene into batches of tiles (uint8 stays uint8 until the device), skipping tiles
without a single valid input pixel (wide no-data collars cost no network time), the main thread
runs the network and blends softmax probabilities into the current chunk's accumulator on the device, and a
writer thread writes each finished chunk (uint8 only) into a tiled GeoTIFF. Memory depends on the tile, batch
and chunk sizes, never on the scene: tile contributions that reach the next chunk row are parked in an
anonymous temporary file (the "frontier"), those that reach the next chunk of the row stay on the device.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window

from geoseg.atomic import atomic_output, check_output_path, remove_quietly, temporary_sibling
from geoseg.device import autocast_dtype, resolve_device
from geoseg.errors import CheckpointError, ConfigurationError, GeosegWarning
from geoseg.inference.blending import WindowWeights
from geoseg.inference.grid import DEFAULT_CHUNK, Chunk, Tile, TileGrid, check_tiling, tile_starts
from geoseg.inference.reader import POLL_S, Reader, gdal_env
from geoseg.model.card import ModelCard
from geoseg.model.normalize import normalize
from geoseg.raster.classes import NODATA_CLASS, write_class_metadata
from geoseg.raster.reading import (
    Scale,
    open_raster,
    resolve_value_range,
    select_bands,
)
from geoseg.raster.writing import (
    georeferencing,
    open_tiled,
    tiled_profile,
    to_cog,
    write_category_names,
    write_valid_mask,
)

Progress = Callable[[int, int], None]
TTA_MODES = ("none", "flip", "d4")


@dataclass
class ScenePlan:
    """Everything decided about a scene before any work: bands, value range, georeferencing, grid."""

    path: str
    width: int
    height: int
    bands: list[int]
    value_range: tuple[float, float]
    grid: TileGrid
    georef: dict[str, Any]


@dataclass
class OutputPaths:
    """Where one scene's results go; optional outputs are None when not asked for."""

    classes: Path
    confidence: Path | None = None
    probabilities: Path | None = None
    polygons: Path | None = None

    def rasters(self) -> list[tuple[str, Path]]:
        kinds = (
            ("classes", self.classes),
            ("confidence", self.confidence),
            ("probabilities", self.probabilities),
        )
        return [(kind, path) for kind, path in kinds if path is not None]

    def items(self) -> list[tuple[str, Path]]:
        return self.rasters() + ([("polygons", self.polygons)] if self.polygons is not None else [])


@dataclass
class PredictResult:
    """What ``predict`` reports per scene (``--json`` prints :meth:`to_dict`).

    ``tiles`` counts the tiles the network computed: tiles whose input pixels are all invalid are skipped.
    """

    input: str
    outputs: dict[str, str]
    width: int
    height: int
    tiles: int
    seconds: float
    device: str
    class_fractions: dict[str, float] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        record = {
            "input": self.input,
            "outputs": self.outputs,
            "width": self.width,
            "height": self.height,
            "tiles": self.tiles,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "class_fractions": self.class_fractions,
        }
        if self.error is not None:
            record["error"] = self.error
        return record


def plan_scene(
    card: ModelCard,
    input_path: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    bands: list[int] | None = None,
    scale: Scale = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> ScenePlan:
    """Open the scene once to check it against the card and decide bands, scaling and the tile grid.

    Fails (before any network work) on a missing or unreadable file, bands that do not fit the model or
    16-bit data without a scale; warns about a raster without CRS and about a stride under a quarter of
    the tile (see :func:`_warn_small_stride`).
    """
    tile = card.tile_size if tile is None else int(tile)
    overlap = card.overlap if overlap is None else int(overlap)
    check_tiling(tile, overlap)
    path = str(input_path)
    with open_raster(path) as dataset:
        indexes = select_bands(dataset, card.bands, bands, path)
        value_range = resolve_value_range(dataset, indexes, scale, card.value_range, path)
        georef = georeferencing(dataset, path)
        grid = TileGrid(dataset.height, dataset.width, tile, overlap, chunk_size)
        _warn_small_stride(grid, card, path)
        return ScenePlan(path, dataset.width, dataset.height, indexes, value_range, grid, georef)


def _warn_small_stride(grid: TileGrid, card: ModelCard, path: str) -> None:
    """Warn when tiles start less than a quarter tile apart: the tile count grows with 1/stride², so e.g.
    ``--tile 32 --overlap 30`` takes minutes on a tiny scene; the warning says what it costs here."""
    if grid.stride * 4 >= grid.tile or (grid.tile, grid.overlap) == (card.tile_size, card.overlap):
        return
    stride = card.tile_size - card.overlap
    default = len(tile_starts(grid.height, card.tile_size, stride)) * len(
        tile_starts(grid.width, card.tile_size, stride)
    )
    warnings.warn(
        f"{path}: tile {grid.tile} with overlap {grid.overlap} leaves a stride of {grid.stride} px "
        f"(under a quarter of the tile): {grid.num_tiles} tiles where the model's default (tile "
        f"{card.tile_size}, overlap {card.overlap}) needs {default} ({grid.num_tiles / default:.3g}x); "
        "lower the overlap",
        GeosegWarning,
        stacklevel=3,
    )


def predict_scene(
    model: torch.nn.Module,
    card: ModelCard,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tta: str = "none",
    bands: list[int] | None = None,
    scale: Scale = None,
    confidence_path: str | os.PathLike | None = None,
    probabilities_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Progress | None = None,
) -> PredictResult:
    """Segment one scene with an in-memory ``model`` (moved to ``device``) described by ``card``."""
    outputs = OutputPaths(
        Path(output_path),
        Path(confidence_path) if confidence_path is not None else None,
        Path(probabilities_path) if probabilities_path is not None else None,
    )
    for _, path in outputs.rasters():
        check_output_path(path, overwrite)
    plan = plan_scene(
        card, input_path, tile=tile, overlap=overlap, bands=bands, scale=scale, chunk_size=chunk_size
    )
    return run_scene(
        model,
        card,
        plan,
        outputs,
        batch_size=batch_size,
        device=device,
        precision=precision,
        tta=tta,
        overwrite=overwrite,
        progress=progress,
    )


def run_scene(
    model: torch.nn.Module,
    card: ModelCard,
    plan: ScenePlan,
    outputs: OutputPaths,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    precision: str = "auto",
    tta: str = "none",
    overwrite: bool = False,
    progress: Progress | None = None,
) -> PredictResult:
    """Run a planned scene and write its outputs atomically (nothing is left behind on failure or Ctrl-C)."""
    if tta not in TTA_MODES:
        raise ConfigurationError(f"unknown test-time augmentation {tta!r}; use none, flip or d4")
    if batch_size < 1:
        raise ConfigurationError(f"batch size {batch_size} must be at least 1")
    device = device if isinstance(device, torch.device) else resolve_device(device)
    amp_dtype = autocast_dtype(precision, device)
    started = time.perf_counter()
    model = model.to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    georef = plan.georef
    names, colors = card.class_names, [c.color for c in card.classes]
    with contextlib.ExitStack() as finals:
        targets = {
            kind: finals.enter_context(atomic_output(path, overwrite)) for kind, path in outputs.rasters()
        }
        scratch = {kind: finals.enter_context(_scratch_file(path)) for kind, path in outputs.rasters()}
        with open_raster(plan.path) as source, contextlib.ExitStack() as opened:
            sinks = {}
            for kind, path in scratch.items():
                count = card.num_classes if kind == "probabilities" else 1
                nodata = NODATA_CLASS if kind == "classes" else None  # others: internal mask
                profile = tiled_profile(plan.width, plan.height, count, nodata, georef)
                sinks[kind] = opened.enter_context(open_tiled(path, profile, georef.get("gcps")))
            write_class_metadata(sinks["classes"], names, colors)
            sinks["classes"].set_band_description(1, "class")
            if "confidence" in sinks:
                sinks["confidence"].set_band_description(1, "confidence (top class probability x 255)")
            if "probabilities" in sinks:
                for band, name in enumerate(names, start=1):
                    sinks["probabilities"].set_band_description(band, name)
            counts, computed = _stream(
                model,
                card,
                plan,
                source,
                sinks,
                batch_size=batch_size,
                device=device,
                amp_dtype=amp_dtype,
                tta=tta,
                progress=progress,
                scratch_dir=outputs.classes.parent,
            )
        for kind, path in scratch.items():
            to_cog(path, targets[kind], "MODE" if kind == "classes" else "AVERAGE")
    write_category_names(outputs.classes, names)
    for kind, path in outputs.rasters():
        if kind != "classes":  # statistics GIS software stored for a replaced file no longer apply
            Path(f"{path}.aux.xml").unlink(missing_ok=True)

    valid = int(counts.sum())
    fractions = {name: (float(counts[i]) / valid if valid else 0.0) for i, name in enumerate(names)}
    return PredictResult(
        input=plan.path,
        outputs={kind: str(path) for kind, path in outputs.rasters()},
        width=plan.width,
        height=plan.height,
        tiles=computed,
        seconds=time.perf_counter() - started,
        device=str(device),
        class_fractions=fractions,
    )


@contextlib.contextmanager
def _scratch_file(final: Path) -> Iterator[Path]:
    """A hidden intermediate file next to ``final``, removed whatever happens."""
    path = temporary_sibling(Path(final))
    try:
        yield path
    finally:
        remove_quietly(path)


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
    model: torch.nn.Module,
    batch: torch.Tensor,
    card: ModelCard,
    value_range: tuple[float, float],
    amp_dtype: torch.dtype | None,
    views: list[tuple[Callable, Callable]],
) -> torch.Tensor:
    """Softmax probabilities (B, K, T, T) in float32, averaged over the test-time views."""
    x = normalize(batch, value_range, card.mean, card.std)
    if x.device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    total = None
    for forward, inverse in views:
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(forward(x))
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

    Anonymous temporary files (no name on disk) in the output's folder: nothing can be left behind.
    """

    def __init__(self, folder: Path):
        self._folder = str(folder) if str(folder) else "."
        # Both live as long as the scene runs and are closed by close().
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
    """Weighted probability sums of the current chunk on the device, handed on to its neighbours."""

    def __init__(self, grid: TileGrid, num_classes: int, device: torch.device, frontier: _Frontier):
        self.grid, self.k, self.device, self.frontier = grid, num_classes, device, frontier
        self.weights = WindowWeights(grid.height, grid.width, grid.overlap, device)
        self.chunk: Chunk | None = None
        self.acc: torch.Tensor | None = None
        self.carry: torch.Tensor | None = None

    def open(self, chunk: Chunk) -> None:
        if chunk.row > 0 and chunk.col == 0:
            self.frontier.next_row()
        self.chunk = chunk
        self.acc = torch.zeros(
            (self.k + 1, chunk.ext_y1 - chunk.y0, chunk.ext_x1 - chunk.x0),
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
        y, x = tile.y - self.chunk.y0, tile.x - self.chunk.x0
        weight = self.weights(tile.y, tile.x, h, w)
        self.acc[: self.k, y : y + h, x : x + w].addcmul_(probs[:, :h, :w], weight)
        self.acc[self.k, y : y + h, x : x + w].add_(weight)

    def close(self, confidence: bool, probabilities: bool) -> dict[str, np.ndarray]:
        """Finish the chunk: argmax (and optional uint8 probabilities) of its own pixels; hand on the rest."""
        chunk, acc, k = self.chunk, self.acc, self.k
        rh, rw = chunk.y1 - chunk.y0, chunk.x1 - chunk.x0
        region, weight = acc[:k, :rh, :rw], acc[k, :rh, :rw]
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


# --- threads -------------------------------------------------------------------------------------------


class _Writer(threading.Thread):
    """Masks invalid pixels, counts classes and writes finished chunks, while the network works on.

    Invalid pixels are nodata 255 in the class raster; in the confidence and probability rasters they are 0
    and masked by the internal mask, so that a valid probability 0 stays valid.
    """

    def __init__(self, sinks: dict[str, Any], num_classes: int, stop: threading.Event):
        super().__init__(name="geoseg-writer", daemon=True)
        self.sinks, self.k, self.stop = sinks, num_classes, stop
        self.inbox: queue.Queue = queue.Queue(maxsize=2)
        self.counts = np.zeros(num_classes, dtype=np.int64)
        self.error: BaseException | None = None
        self.env = gdal_env()

    def run(self) -> None:
        try:
            with self.env:
                while not self.stop.is_set():
                    try:
                        item = self.inbox.get(timeout=POLL_S)
                    except queue.Empty:
                        continue
                    if item is None:
                        return
                    self._write(*item)
        except BaseException as error:
            self.error = error

    def _write(self, chunk: Chunk, valid: np.ndarray | None, result: dict[str, np.ndarray]) -> None:
        classes = result["classes"]
        if valid is not None:
            invalid = ~valid
            classes[invalid] = NODATA_CLASS
            for kind in ("confidence", "probabilities"):
                if kind in result:
                    result[kind][..., invalid] = 0
        self.counts += np.bincount(classes.ravel(), minlength=256)[: self.k]
        window = Window(chunk.x0, chunk.y0, chunk.x1 - chunk.x0, chunk.y1 - chunk.y0)
        for kind, sink in self.sinks.items():
            values = result[kind]
            sink.write(values if values.ndim == 3 else values[np.newaxis], window=window)
            if kind != "classes":
                write_valid_mask(sink, valid, window)

    def send(self, item: Any) -> None:
        """Queue a finished chunk (None: no more); re-raise the writer's failure rather than wait on it."""
        while True:
            if self.error is not None:
                raise self.error
            if not self.is_alive():
                raise RuntimeError("the writer thread stopped")
            try:
                self.inbox.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue


def _stream(
    model: torch.nn.Module,
    card: ModelCard,
    plan: ScenePlan,
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
    """Predict every tile with a valid pixel once, in chunk order.

    Returns the per-class pixel counts of valid pixels and the number of tiles computed.
    """
    grid = plan.grid
    stop = threading.Event()
    reader = Reader(source, plan, batch_size, device.type == "cuda", stop)
    writer = _Writer(sinks, card.num_classes, stop)
    frontier = _Frontier(scratch_dir)
    blender = _Blender(grid, card.num_classes, device, frontier)
    views = _tta_views(tta)
    masks: dict[int, np.ndarray | None] = {}
    chunks = grid.chunks()
    done = computed = 0
    want_confidence, want_probabilities = "confidence" in sinks, "probabilities" in sinks

    def finish_until(index: int) -> None:
        """Finish every chunk before ``index`` (chunks without tiles too) and open chunk ``index``."""
        while blender.chunk is None or blender.chunk.index < index:
            if blender.chunk is not None:
                finished = blender.chunk
                result = blender.close(want_confidence, want_probabilities)
                writer.send((finished, masks.pop(finished.index), result))
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
                if item[0] == "end":
                    if item[1] and progress is not None:
                        progress(grid.num_tiles, grid.num_tiles)  # the trailing tiles were all skipped
                    break
                if item[0] == "error":
                    raise item[1]
                if item[0] == "chunk":
                    masks[item[1]] = item[2]
                    continue
                batch, tiles = item[1].to(device, non_blocking=True), item[2]
                probs = _probabilities(model, batch, card, plan.value_range, amp_dtype, views)
                for b, tile in enumerate(tiles):
                    finish_until(tile.chunk)
                    blender.add(tile, probs[b])
                computed += len(tiles)
                done += len(tiles) + item[3]
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


def _take(reader: Reader) -> tuple:
    while True:
        try:
            return reader.out.get(timeout=POLL_S)
        except queue.Empty:
            if not reader.is_alive() and reader.out.empty():
                raise RuntimeError("the reader thread stopped without a result") from None
