"""Regions as tasks on a Dask cluster (``--workers N``, ``--scheduler``): the one module that imports Dask.

Dask distributed does the scheduling: a :class:`~distributed.LocalCluster` of worker processes on this
machine (``--workers N``; with CUDA, ``auto`` gives one worker per GPU, each pinned to its device), or an
existing cluster (``--scheduler ADDRESS``). A region whose worker dies is rerun elsewhere by Dask, and since
a region's pixels depend only on the region, the result is the same. Each worker process loads the model
once: networks are cached in the worker by model digest and device.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import CancelledError
from dataclasses import replace
from pathlib import Path

import torch

from geoseg.device import resolve_device
from geoseg.errors import ConfigurationError, GeosegError, one_line
from geoseg.inference.plan import ScenePlan
from geoseg.inference.stream import prepare_network, run_task
from geoseg.inference.tasks import ModelSource, Network, Progress, RegionResult, RegionTask
from geoseg.model.card import ModelCard
from geoseg.raster.reading import absolute_path

CONNECT_TIMEOUT_S = 5  # a scheduler answers at once; this is for the address being wrong
WORKERS_TIMEOUT_S = 30  # workers of a cluster started just now may still be importing torch


class DaskExecutor:
    """Regions as Dask tasks, in the order they finish; cancelled if the caller stops early. Several
    threads may each run the regions of one scene at once (one client: Dask schedules them all together)."""

    def __init__(self, client, cluster, source: ModelSource, resources: dict[str, int] | None):
        self.client, self.cluster, self.resources = client, cluster, resources
        self.source = _source_for_workers(source)
        self._live: set = set()  # futures of every run in progress (several scenes run at once)
        self._stopped = False
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Cancel the regions of every run in progress (from any thread) and refuse new ones: each
        :meth:`run` then raises ``CancelledError`` in its caller, which cleans up its scene."""
        with self._lock:
            self._stopped, live = True, list(self._live)
        if live:
            with contextlib.suppress(Exception):
                self.client.cancel(live)

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info()["workers"])

    def check(self, plan: ScenePlan, folder: Path) -> None:
        """Fail in one line, before any long work, when a worker cannot read the input or the model, or
        cannot write the work folder: on the very paths its tasks get (:func:`_task_for_workers`)."""
        card = self.source.card if not isinstance(self.source.card, ModelCard) else None
        problems = self.client.run(
            _check_access, _plan_for_workers(plan).path, absolute_path(folder), self.source.path, card
        )
        for worker, problem in sorted(problems.items()):
            if problem:
                raise ConfigurationError(f"Dask worker {worker}: {problem}")

    def run(self, tasks: list[RegionTask], progress: Progress | None) -> Iterator[RegionResult]:
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        tasks = [_task_for_workers(task) for task in tasks]
        total = sum(t.tiles for t in tasks)
        run_id = uuid.uuid4().hex[:8]
        topic = f"geoseg-progress-{run_id}" if progress is not None else None
        done: dict[int, int] = {}
        lock = threading.Lock()

        def tell(region: int, tiles: int) -> None:
            """Tiles done per region, from workers' events (another thread) and from finished regions."""
            with lock:
                done[region] = max(done.get(region, 0), tiles)
                count = sum(done.values())
            progress(count, total)

        with self._lock:
            if self._stopped:
                raise CancelledError("the run was stopped")
        if topic is not None:
            self.client.subscribe_topic(topic, lambda event: tell(*event[1]))
        futures = [
            self.client.submit(
                _run_on_worker,
                task,
                self.source,
                self.resources is not None,
                topic,
                key=f"geoseg-region-{run_id}-{task.region.index}",
                resources=self.resources,
                pure=False,
            )
            for task in tasks
        ]
        with self._lock:
            self._live.update(futures)
            stopped = self._stopped
        try:
            if stopped:  # stop() came between the check above and the submission
                raise CancelledError("the run was stopped")
            task_of = {future.key: task for future, task in zip(futures, tasks, strict=True)}
            for future in as_completed(futures):
                task = task_of[future.key]
                try:
                    result = future.result()
                except KilledWorker as error:
                    raise GeosegError(
                        f"{task.plan.path}: region {task.region.index} killed its worker several times "
                        "(out of memory?); lower batch_size=N or give the workers more memory"
                    ) from error
                if progress is not None:
                    tell(task.region.index, task.tiles)
                yield result
        finally:
            with self._lock:
                self._live.difference_update(futures)
            self.client.cancel(futures)
            if topic is not None:
                self.client.unsubscribe_topic(topic)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def _plan_for_workers(plan: ScenePlan) -> ScenePlan:
    """``plan`` as a worker reads it: a worker resolves a relative path in its own current folder, where
    another file of the same name (or none) may be."""
    return replace(plan, path=absolute_path(plan.path))


def _task_for_workers(task: RegionTask) -> RegionTask:
    """``task`` with its input and its parts in the work folder as absolute paths (see
    :func:`_plan_for_workers`)."""
    parts = {kind: Path(absolute_path(part)) for kind, part in task.parts.items()}
    return replace(task, plan=_plan_for_workers(task.plan), parts=parts)


def _source_for_workers(source: ModelSource) -> ModelSource:
    """``source`` with its checkpoint and card files as absolute paths (see :func:`_plan_for_workers`)."""
    path = absolute_path(source.path) if source.path is not None else None
    card = (
        source.card
        if source.card is None or isinstance(source.card, ModelCard)
        else absolute_path(source.card)
    )
    return replace(source, path=path, card=card)


def open_dask(workers: int, scheduler: str | None, source: ModelSource, device: torch.device) -> DaskExecutor:
    """A client of the cluster at ``scheduler``, or of a local cluster of ``workers`` processes."""
    if scheduler is not None:
        return _remote(scheduler, source, device)
    return _local_cluster(workers, source, device)


def _local_cluster(workers: int, source: ModelSource, device: torch.device) -> DaskExecutor:
    """N worker processes on 127.0.0.1 splitting the cores, or one per GPU pinned by CUDA_VISIBLE_DEVICES;
    each runs one region at a time (a resource of 1 per worker)."""
    executor = None
    try:
        with _stop_signals_blocked():  # inherited by the cluster's threads and worker processes
            executor = _start_local_cluster(workers, source, device)
    except BaseException:  # a stop signal that came while starting is raised as the block ends
        if executor is not None:
            executor.close()
        raise
    return executor


def _start_local_cluster(workers: int, source: ModelSource, device: torch.device) -> DaskExecutor:
    from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

    # Workers' own logs stay off the user's terminal: what matters reaches the client as a task's exception
    # or a lost worker; at a stop, a heartbeat to the just-closed scheduler is logged as an ERROR traceback.
    quiet = {"silence_logs": logging.CRITICAL}
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if workers > gpus:
            raise ConfigurationError(f"workers={workers}: this machine has {gpus} CUDA device(s)")
        spec = {
            i: {
                "cls": Nanny,
                "options": {
                    "nthreads": 1,
                    "host": "127.0.0.1",
                    "resources": {"GPU": 1},
                    "env": {"CUDA_VISIBLE_DEVICES": str(i)},
                },
            }
            for i in range(workers)
        }
        scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
        cluster = SpecCluster(workers=spec, scheduler=scheduler, **quiet)
        resources = {"GPU": 1}
    else:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=max(1, (os.cpu_count() or 1) // workers),
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",  # any free port: None still takes 8787, warning when it is in use
            resources={"region": 1},
            **quiet,
        )
        resources = {"region": 1}
    try:
        client = Client(cluster)
    except BaseException:
        cluster.close()
        raise
    return DaskExecutor(client, cluster, source, resources)


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """Block Ctrl-C, SIGTERM and a hang-up while the local cluster starts. A terminal (Ctrl-C, hang-up),
    ``timeout`` or SLURM send them to the whole process group: each worker process printed a
    KeyboardInterrupt (or KeyError) traceback, or died at once and the scheduler logged failed broadcasts,
    while this process was stopping the cluster cleanly. Threads and child processes inherit the blocked
    set: the workers never hear them (their nanny stops them by message, then SIGKILL); here they wait and
    are delivered when the block ends."""
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    from multiprocessing import resource_tracker

    stops = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        # multiprocessing's tracker process, started here (not by the cluster's thread, where CPython
        # unblocks SIGINT and SIGTERM after starting it): it ignores those but a hang-up killed it, and it was
        # relaunched with a warning and KeyError tracebacks
        resource_tracker.ensure_running()
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # delivers what came meanwhile


def _remote(address: str, source: ModelSource, device: torch.device) -> DaskExecutor:
    """A client of an existing cluster, reachable and with workers, checked within a few seconds."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError, TypeError) as error:
        detail = one_line(error) or type(error).__name__
        raise ConfigurationError(
            f"scheduler={address!r}: cannot reach a Dask scheduler there ({detail[:160]}); start one with "
            "'dask scheduler' and check the address (tcp://HOST:8786)"
        ) from error
    try:
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
    except (TimeoutError, OSError) as error:
        client.close()
        raise ConfigurationError(
            f"scheduler={address!r}: no worker joined within {WORKERS_TIMEOUT_S} s; start some with "
            f"'dask worker {address}'"
        ) from error
    gpu = any(w.get("resources", {}).get("GPU") for w in client.scheduler_info()["workers"].values())
    return DaskExecutor(client, None, source, {"GPU": 1} if device.type == "cuda" and gpu else None)


# --- on the workers ------------------------------------------------------------------------------------

_NETWORKS: dict[tuple[str, str, bool], Network] = {}
_NETWORKS_LOCK = threading.Lock()
_EVENT_INTERVAL_S = 0.5


def _run_on_worker(task: RegionTask, source: ModelSource, exclusive: bool, topic: str | None) -> RegionResult:
    """A region on a Dask worker: the network from this process's cache, and torch threads as Dask means
    them: all of the worker's threads when it runs one region at a time (a resource of 1), else one per
    region, the worker running as many regions at once as it has threads (more would oversubscribe).
    Tiles done go to the client as events on ``topic``, a few per second."""
    from distributed import get_worker

    worker = get_worker()
    torch.set_num_threads(worker.state.nthreads if exclusive else 1)
    device = resolve_device(task.device)
    key = (source.digest, str(device), source.compile)
    with _NETWORKS_LOCK:
        network = _NETWORKS.get(key)
        if network is None:
            network = _NETWORKS[key] = prepare_network(source.load(), device, compile=source.compile)
    report = None
    if topic is not None:
        last = [0.0]

        def report(done: int, _total: int) -> None:
            now = time.monotonic()
            if now - last[0] >= _EVENT_INTERVAL_S:
                last[0] = now
                worker.log_event(topic, (task.region.index, done))

    return run_task(task, network, device, report)


def _check_access(input_path: str, folder: str, model_path: str | None, card_path: str | None) -> str | None:
    """On a worker: why it cannot do the work (None: it can)."""
    from geoseg.raster.reading import open_raster

    try:
        with open_raster(input_path):
            pass
    except GeosegError as error:
        return str(error)
    if model_path is not None and not os.access(model_path, os.R_OK):
        return f"cannot read the model {model_path} (workers need it on a shared file system)"
    if card_path is not None and not os.access(card_path, os.R_OK):
        return f"cannot read the model card {card_path} (workers need it on a shared file system)"
    if not os.access(folder, os.W_OK):
        return f"cannot write the output folder {folder} (workers need it on a shared file system)"
    return None
