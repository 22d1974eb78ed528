"""A scene's regions computed on demand into a ``--resume`` work folder, one at a time, newest request first.

:class:`RegionCache` is one scene: its plan, its work folder (the manifest ``predict --resume`` checks, so a
later ``geoseg predict SCENE -o OUT --resume`` computes only the regions not yet seen) and the mosaic of its
finished regions. :class:`RegionQueue` is the one thread that runs the network (loaded once) for every
scene: it takes the region wanted by the newest live request, drops requests that went stale (the client
left, or the page moved on to another view) and stops the region being computed when the server stops
(its part is then not written; the finished ones stay).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import GeosegError
from geoseg.inference.executors import LocalExecutor
from geoseg.inference.grid import Region
from geoseg.inference.options import PredictOptions
from geoseg.inference.plan import ScenePlan, plan_regions
from geoseg.inference.scene import region_task, work_manifest
from geoseg.inference.tasks import RegionTask
from geoseg.inference.work import WorkFolder
from geoseg.model.card import ModelCard
from geoseg.raster.classes import NODATA_CLASS

CONFIDENCE = "confidence"  # written beside each class part for the page's click; predict ignores it


@dataclass(frozen=True)
class ComputeOptions:
    """What a region's pixels depend on besides the plan: the model's digest and the resolved options
    (:func:`~geoseg.inference.scene.resolve_options`), which ``predict`` records alike."""

    digest: str
    predict: PredictOptions


class RegionCache:
    """One scene's regions: which are finished (in the work folder), computing them, reading their pixels."""

    def __init__(self, name: str, card: ModelCard, plan: ScenePlan, output: Path, options: ComputeOptions):
        self.name, self.card, self.plan, self.options = name, card, plan, options
        self.work = WorkFolder(output)
        manifest = work_manifest(plan, options.digest, ["classes"], options.predict)
        self._session = contextlib.ExitStack()
        # resume=True and keep_when_done: the folder is reused if it matches (else a one-line error) and
        # is kept whatever happens, for predict --resume to finish
        self.regions, finished = self._session.enter_context(
            self.work.session(manifest, plan_regions(plan.grid, 1, resume=True), True, keep_when_done=True)
        )
        self.done: set[int] = set(finished)
        self.computed = 0  # regions computed by this server (a cached tile adds none)

    def close(self) -> None:
        self._session.close()

    def covering(self, window: Window) -> list[Region]:
        """The regions that hold a pixel of ``window`` (scene pixels, clipped to the scene)."""
        y0, x0 = window.row_off, window.col_off
        y1, x1 = y0 + window.height, x0 + window.width
        return [r for r in self.regions if r.y0 < y1 and y0 < r.y1 and r.x0 < x1 and x0 < r.x1]

    def task(self, region: Region) -> RegionTask:
        parts = {kind: self.work.part(region, kind) for kind in ("classes", CONFIDENCE)}
        return region_task(self.plan, region, parts, self.card, self.options.predict)

    def mosaic(self, row: int, col: int, rows: int, cols: int, step: int = 1) -> np.ndarray:
        """Classes of scene pixels ``row + i * step, col + j * step`` from the finished regions; 255 where
        no finished region (or the scene) has the pixel. ``step`` > 1 takes every step-th pixel (coarse
        zooms: a preview, not the batch raster's mode overviews); ``row``/``col`` are then multiples of it."""
        out = np.full((rows, cols), NODATA_CLASS, dtype=np.uint8)
        for region in self.regions:
            if region.index not in self.done:
                continue
            # output cells whose sampled pixel lies in the region
            i0, i1 = _cells(region.y0, region.y1, row, rows, step)
            j0, j1 = _cells(region.x0, region.x1, col, cols, step)
            if i0 >= i1 or j0 >= j1:
                continue
            y0, x0 = row + i0 * step - region.y0, col + j0 * step - region.x0
            with rasterio.open(self.work.part(region, "classes")) as part:
                if step == 1:
                    values = part.read(1, window=Window(x0, y0, j1 - j0, i1 - i0))
                else:
                    block = part.read(
                        1, window=Window(x0, y0, (j1 - j0 - 1) * step + 1, (i1 - i0 - 1) * step + 1)
                    )
                    values = block[::step, ::step]
            out[i0:i1, j0:j1] = values
        return out

    def pixel(self, row: int, col: int) -> tuple[int, int | None] | None:
        """(class, confidence 0-255 or None) at a scene pixel, or None while its region is not finished."""
        for region in self.regions:
            if region.y0 <= row < region.y1 and region.x0 <= col < region.x1:
                if region.index not in self.done:
                    return None
                window = Window(col - region.x0, row - region.y0, 1, 1)
                with rasterio.open(self.work.part(region, "classes")) as part:
                    value = int(part.read(1, window=window)[0, 0])
                confidence = self.work.part(region, CONFIDENCE)
                score = None
                if confidence.is_file():  # absent for regions an interrupted predict --resume computed
                    with rasterio.open(confidence) as part:
                        score = int(part.read(1, window=window)[0, 0])
                return value, score
        return None


def _cells(start: int, stop: int, origin: int, count: int, step: int) -> tuple[int, int]:
    """Output cells ``k < count`` whose sampled pixel ``origin + k * step`` lies in ``start..stop``."""
    first = max(0, -(-(start - origin) // step))
    last = min(count, -(-(stop - origin) // step))
    return first, max(first, last)


_SEQUENCE = itertools.count()


@dataclass
class Ticket:
    """One request for regions: newer tickets go first; ``view`` is the page's view number (None: a plain
    XYZ/WMTS client), ``left`` is set when the client went away."""

    view: int | None = None
    seq: int = field(default_factory=lambda: next(_SEQUENCE))
    left: bool = False


class Stopped(GeosegError):
    """The server stopped while a region was being computed (its part was not written)."""


class RegionQueue:
    """The thread that computes regions for every scene with one network, newest live request first."""

    def __init__(self, executor: LocalExecutor):
        self.executor = executor
        self._cond = threading.Condition()
        self._pending: dict[tuple[int, int], tuple[Future, list[Ticket], RegionCache, Region]] = {}
        self._view = -1
        self._closing = False
        self.running: dict | None = None  # what the page shows: scene, region, tiles done and total
        self._current: tuple[tuple[int, int], Future] | None = None  # the region being computed
        self._thread = threading.Thread(target=self._loop, name="geoseg-serve-regions", daemon=True)
        self._thread.start()

    def want(self, cache: RegionCache, regions: list[Region], ticket: Ticket) -> list[Future]:
        """Futures of the ``regions`` of ``cache`` not yet finished, queued for ``ticket``."""
        futures = []
        with self._cond:
            if ticket.view is not None:
                self._view = max(self._view, ticket.view)
            for region in regions:
                if region.index in cache.done:
                    continue
                key = (id(cache), region.index)
                if self._current is not None and self._current[0] == key:
                    futures.append(self._current[1])  # being computed: wait for it, never queue it again
                    continue
                entry = self._pending.get(key)
                if entry is None:
                    entry = self._pending[key] = (Future(), [], cache, region)
                entry[1].append(ticket)
                futures.append(entry[0])
            self._cond.notify()
        return futures

    def status(self) -> dict:
        with self._cond:
            return {"running": self.running, "queued": len(self._pending)}

    def close(self) -> None:
        """Stop: the region being computed is abandoned (no part written), queued requests fail."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _stale(self, ticket: Ticket) -> bool:
        return ticket.left or (ticket.view is not None and ticket.view < self._view)

    def _next(self) -> tuple[Future, RegionCache, Region] | None:
        """The region of the newest live ticket; regions whose tickets all went stale are dropped."""
        with self._cond:
            while True:
                if self._closing:
                    for future, *_ in self._pending.values():
                        future.set_exception(Stopped("the server stopped"))
                    self._pending.clear()
                    return None
                best = None
                for key, (future, tickets, _, _) in list(self._pending.items()):
                    tickets[:] = [t for t in tickets if not self._stale(t)]
                    if not tickets:
                        del self._pending[key]
                        future.cancel()
                        continue
                    newest = max(t.seq for t in tickets)
                    if best is None or newest > best[0]:
                        best = (newest, key)
                if best is not None:
                    future, _, cache, region = self._pending.pop(best[1])
                    self._current = (best[1], future)
                    self.running = {"layer": cache.name, "region": region.index, "done": 0, "tiles": 0}
                    return future, cache, region
                self._cond.wait(timeout=0.5)  # also re-checks staleness of waiting requests

    def _loop(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            future, cache, region = item
            try:
                result = self._compute(cache, region)
            except BaseException as error:  # reported to every request waiting for the region
                future.set_exception(error)
            else:
                future.set_result(result)
            finally:
                with self._cond:
                    self.running = self._current = None

    def _compute(self, cache: RegionCache, region: Region) -> int:
        def progress(done: int, total: int) -> None:
            with self._cond:
                if self._closing:
                    raise Stopped("the server stopped")
                self.running.update(done=done, tiles=total)

        (result,) = self.executor.run([cache.task(region)], progress)
        cache.work.record(result)
        cache.done.add(region.index)
        cache.computed += 1
        return region.index
