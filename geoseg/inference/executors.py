"""Who computes a scene's regions: this process, one after another (``--workers 1``), or a Dask cluster.

Every executor has the shape of :class:`Executor`; :func:`open_executor` picks one from ``workers`` and
``scheduler``. Dask lives in :mod:`geoseg.inference.dask`, imported only when a cluster is asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import torch

from geoseg.errors import ConfigurationError
from geoseg.inference.plan import ScenePlan
from geoseg.inference.stream import prepare_network, run_task
from geoseg.inference.tasks import ModelSource, Progress, RegionResult, RegionTask


class Executor(Protocol):
    """Runs region tasks and yields their results (in any order), until closed."""

    workers: int

    def check(self, plan: ScenePlan, folder: Path) -> None:
        """Fail before any long work when the executor cannot read ``plan``'s input or write ``folder``."""

    def run(self, tasks: list[RegionTask], progress: Progress | None) -> Iterator[RegionResult]:
        """Compute ``tasks``; ``progress(done, total)`` counts their tiles."""

    def stop(self) -> None:
        """Cancel every run in progress (from any thread): each :meth:`run` then raises in its caller."""

    def close(self) -> None:
        """Release the executor's workers."""


class LocalExecutor:
    """Regions one after another in the calling process, with the network prepared once; no Dask."""

    workers = 1

    def __init__(self, model: torch.nn.Module, device: torch.device, *, compile: bool = False):
        self.device = device
        self.network = prepare_network(model, device, compile=compile)

    def check(self, plan: ScenePlan, folder: Path) -> None:
        """Nothing to check: this process planned the scene and created the work folder."""

    def run(self, tasks: list[RegionTask], progress: Progress | None) -> Iterator[RegionResult]:
        """Compute ``tasks`` in order; ``progress(done, total)`` counts their tiles as they are computed."""
        total, before = sum(t.tiles for t in tasks), 0
        for task in tasks:
            callback = None
            if progress is not None:

                def callback(done: int, _total: int, base: int = before) -> None:
                    progress(base + done, total)

            yield run_task(task, self.network, self.device, callback)
            before += task.tiles

    def stop(self) -> None:
        """Nothing runs behind the caller's back: an interruption reaches the region being computed."""

    def close(self) -> None:
        pass


def open_executor(
    model: torch.nn.Module,
    source: ModelSource,
    device: torch.device,
    workers: int | str = 1,
    scheduler: str | None = None,
) -> Executor:
    """The executor for ``--workers``/``--scheduler``; the caller closes it (clusters are shut down then).

    ``workers="auto"`` is one worker per GPU with CUDA, else one (in this process).
    """
    if scheduler is None:
        if workers == "auto":
            workers = torch.cuda.device_count() if device.type == "cuda" else 1
        workers = int(workers)
        if workers < 1:
            raise ConfigurationError(f"workers={workers}: give at least 1 (or auto)")
        if workers == 1:
            return LocalExecutor(model, device, compile=source.compile)
    from geoseg.inference.dask import open_dask

    return open_dask(workers, scheduler, source, device)
