"""``predict``: many scenes, one checkpoint, predictable output names; what ``geoseg predict`` calls.

Every output is checked before any work starts (:mod:`geoseg.inference.outputs`), and every scene is planned
(bands, scaling) before the first one runs; then the scenes run one after another, or several at once when
their regions go to a Dask cluster.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from geoseg.atomic import OutputSet
from geoseg.device import resolve_device, resolve_precision
from geoseg.errors import ConfigurationError, GeosegError, one_line
from geoseg.export.cpu_engine import resolve_engine
from geoseg.inference.acceleration import check_compile, resolve_batch_size
from geoseg.inference.executors import LocalExecutor, open_executor
from geoseg.inference.options import PredictOptions, path_list
from geoseg.inference.outputs import OutputPaths, outputs_exist, prepare_outputs, shapefile_sidecars
from geoseg.inference.plan import ScenePlan, plan_scene
from geoseg.inference.scene import run_scene
from geoseg.inference.tasks import ModelSource, PredictResult, Progress
from geoseg.model.card import ModelCard
from geoseg.model.loading import load_model, model_digest
from geoseg.stac.items import is_stac_item, item_scene


def engine_network(
    network: torch.nn.Module,
    card: ModelCard,
    source: ModelSource,
    runtime: str,
    options: PredictOptions,
    plans: list[ScenePlan],
    status: Callable[[str], None] | None,
) -> tuple[torch.nn.Module, ModelSource, float]:
    """The network ``runtime`` runs, how workers get it, and the seconds it took to make: a torch network
    for onnxruntime becomes its cached ONNX export (int8: quantized, calibrated on ``calibration`` or on
    tiles spread over all the scenes of ``plans``, so that one int8 network, calibrated once, serves the
    whole run), sent to Dask workers as the export's path."""
    from geoseg.export.runtime import OnnxNetwork

    if runtime != "onnxruntime" or isinstance(network, OnnxNetwork):
        return network, source, 0.0
    from geoseg.export.cpu_engine import calibration_set, calibration_tiles, onnx_network

    def calibrating(float_network: OnnxNetwork) -> list:
        chosen = plans
        if options.calibration:
            chosen = [
                plan_scene(card, path, **options.planning()) for path in calibration_set(options.calibration)
            ]
        return calibration_tiles(chosen, float_network)

    made = onnx_network(
        network, card, source.digest, int8=options.precision == "int8", calibration=calibrating, status=status
    )
    # Workers load the cached export (its card inside) once each, checked readable before any work, and
    # never export it again.
    export = ModelSource(model_digest(made.network), str(made.network.path))
    return made.network, export, made.seconds


def iter_predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    model: str | os.PathLike | torch.nn.Module | None = None,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
    progress: Progress | None = None,
    status: Callable[[str], None] | None = None,
    **keywords: Any,
) -> Iterator[PredictResult]:
    """Like :func:`predict`, yielding each scene's result as soon as it is written (for ``--json`` pipelines).

    ``model`` may also be an in-memory network, then ``card`` must be a :class:`ModelCard`. With
    ``keep_going`` a failing scene yields a result whose ``error`` holds the one-line message. With
    ``skip_existing`` a scene whose outputs all exist yields a result with ``status`` "skipped", unopened
    (a re-run over thousands of scenes carries on where the last one stopped). An input that is a STAC
    Item (``.json`` path or URL, or an API ``.../items/ID`` URL) is stacked from its assets whose bands'
    common names match the card's bands, or from ``assets`` in order (see :mod:`geoseg.stac.items`).
    ``workers`` > 1 (or ``auto``: one per GPU) runs regions on a Dask LocalCluster, ``scheduler`` on an
    existing Dask cluster; ``resume`` keeps finished regions of an interrupted run (see
    :func:`geoseg.inference.scene.run_scene`); on Dask, up to two scenes per worker run at once (their
    regions share the cluster) and results still come in input order. ``status(text)`` hears of regions,
    workers and the step. A scene's files are one unit (:class:`~geoseg.atomic.OutputSet`): they appear
    together once all are complete, and a failure or stop leaves none of them; an output folder this run
    created is removed again if it is still empty at the end. ``compress``: the rasters' codec (see
    :data:`~geoseg.raster.writing.CODECS`); ``styles``: QGIS styles beside them and the polygons (or inside
    a GeoPackage), see :mod:`geoseg.styles`. Options: ``options``, or its fields as ``keywords`` (see
    :class:`~geoseg.inference.options.PredictOptions`).
    """
    inputs = path_list(inputs)
    if not inputs:
        raise ConfigurationError("no input rasters given")
    options = replace(options, **keywords) if options is not None else PredictOptions(**keywords)
    o = options
    if o.assets is not None:  # asset keys name bands of an Item; a raster's bands are chosen by bands=
        raster = next((source for source in inputs if not is_stac_item(source)), None)
        if raster is not None:
            raise ConfigurationError(f"assets={o.assets!r} is for STAC Item inputs; {raster} is a raster")
    plans = prepare_outputs(
        inputs,
        output,
        confidence=o.confidence,
        probabilities=o.probabilities,
        vectorize=o.vectorize,
        quicklook=o.quicklook,
        styles=o.styles,
        overwrite=o.overwrite,
        skip_existing=o.skip_existing,
    )
    if o.quicklook:
        from geoseg.plots.common import require_matplotlib

        require_matplotlib()  # before the first scene, not after an hour of inference
    resolved = o.device if isinstance(o.device, torch.device) else resolve_device(o.device)
    resolve_precision(o.precision, resolved)  # an unusable --precision or --compile fails before any work
    if o.compile:
        check_compile(resolved)
    if isinstance(model, torch.nn.Module):
        if not isinstance(card, ModelCard):
            raise ConfigurationError("an in-memory model needs its ModelCard (card=...)")
        network, model_card = model, card
        model_source = ModelSource(model_digest(network), module=network, compile=o.compile)
    else:
        from geoseg.model.checkpoint import default_checkpoint_path

        path = default_checkpoint_path() if model is None else Path(model)
        network, model_card = load_model(path, preset, card)
        model_source = ModelSource(model_digest(network), str(path), preset, card, compile=o.compile)
    runtime = resolve_engine(o.engine, o.precision, resolved, network, compile=o.compile)
    batch_size = resolve_batch_size(o.batch_size, resolved, o.tile or model_card.tile_size)
    options = replace(options, device=resolved, batch_size=batch_size)
    if o.compile and next(network.parameters(), None) is None:
        raise ConfigurationError(
            "this model has no torch parameters to compile (an ONNX export runs in onnxruntime); "
            "run without compile=True"
        )

    scenes: list[tuple[str, OutputPaths, ScenePlan | GeosegError | None]] = []
    items: dict[str, tuple[Path, str]] = {}  # STAC Item input -> (its VRT, its id)
    for source, paths in zip(inputs, plans, strict=True):
        if o.skip_existing and outputs_exist(paths):
            scenes.append((source, paths, None))  # finished by an earlier run: not even opened
            continue
        try:
            if is_stac_item(source):
                items[source] = item_scene(source, paths.classes, model_card.bands, o.assets)
            plan = plan_scene(
                model_card, str(items[source][0]) if source in items else source, **o.planning()
            )
            if paths.polygons is not None:
                from geoseg.vector.vectorize import check_vectorizable

                check_vectorizable(plan.georef, plan.width, plan.height, source)  # before the inference
        except GeosegError as error:
            if not o.keep_going:
                raise
            plan = error
        scenes.append((source, paths, plan))

    planned = [p for _, _, p in scenes if isinstance(p, ScenePlan)]
    network, model_source, prepared_s = engine_network(
        network, model_card, model_source, runtime, options, planned, status
    )
    total = sum(p.grid.num_tiles for _, _, p in scenes if isinstance(p, ScenePlan))
    tiles_done = _TilesDone(progress, total)
    stopping = threading.Event()  # set when the run ends early: scenes still running keep nothing

    def run_one(index: int, source: str, paths: OutputPaths, plan: ScenePlan) -> PredictResult:
        """One scene as one unit: its regions and assembly, then its polygons and quick-look drawn from the
        staged class raster, then all its files renamed into place together (on a failure or stop: none)."""
        try:
            with OutputSet() as unit:
                result = run_scene(
                    network,
                    model_card,
                    plan,
                    paths,
                    options,
                    progress=None if progress is None else tiles_done.callback(index),
                    status=status,
                    executor=executor,
                    source=model_source,
                    unit=unit,
                )
                classes = unit.temporary("classes")
                if paths.polygons is not None:
                    from geoseg.vector.vectorize import vectorize as polygonize

                    if status is not None:
                        status(f"vectorizing {paths.classes.name}")
                    sidecars = shapefile_sidecars(paths.polygons)
                    target = unit.stage("polygons", paths.polygons, obsolete=sidecars)
                    polygons = polygonize(
                        paths.classes,
                        target,
                        layer=paths.polygons.stem,
                        styles=paths.styles,
                        read_from=classes,
                    )
                    for final in sidecars:  # those GDAL wrote beside the .shp
                        if target.with_suffix(final.suffix).exists():
                            unit.stage(f"polygons{final.suffix}", final, target.with_suffix(final.suffix))
                    for kind, final in paths.style_files():
                        if kind == "polygons.qml":
                            unit.stage(kind, final, polygons.style)
                    result.seconds += polygons.seconds
                if paths.quicklook is not None:
                    from geoseg.plots.quicklook import quicklook as draw_quicklook

                    draw_quicklook(paths.classes, unit.stage("quicklook", paths.quicklook), read_from=classes)
                if stopping.is_set():
                    raise CancelledError("the run was stopped")
            result.outputs = unit.files()
            if source in items:
                result.input, result.item = source, items[source][1]
            return result
        finally:
            tiles_done.finish(index, plan.grid.num_tiles)

    created: list[Path] = []  # output folders this run made: removed again if they stay empty
    executor = pool = None
    try:
        for folder in dict.fromkeys(paths.classes.parent for paths in plans):
            with contextlib.suppress(FileExistsError):
                folder.mkdir()
                created.append(folder)
        # One executor for all scenes: a cluster starts once, and each worker loads the model once.
        executor = open_executor(network, model_source, resolved, o.workers, o.scheduler)
        pending: list[Future | None] = [None] * len(scenes)
        if not isinstance(executor, LocalExecutor):
            # Scenes share the cluster: up to two per worker run at once (their regions go to Dask
            # together, each is assembled as soon as its parts exist); results still come in input order.
            pool = ThreadPoolExecutor(max(2, 2 * executor.workers), thread_name_prefix="geoseg-scene")
            for index, (source, paths, plan) in enumerate(scenes):
                if isinstance(plan, ScenePlan):
                    pending[index] = pool.submit(run_one, index, source, paths, plan)
        for index, (source, paths, plan) in enumerate(scenes):
            if plan is None:
                try:
                    skipped = _skipped(source, paths, resolved)
                except GeosegError as error:
                    if not o.keep_going:
                        raise
                    skipped = _failure(source, resolved, error)
                yield skipped
                continue
            if isinstance(plan, GeosegError):
                yield _failure(source, resolved, plan)
                continue
            try:
                future = pending[index]
                result = future.result() if future is not None else run_one(index, source, paths, plan)
            except Exception as error:
                if not o.keep_going:
                    raise
                yield _failure(source, resolved, error)
                continue
            if status is not None:
                status("")
            result.seconds += prepared_s  # the first run's export (and int8 calibration), once
            prepared_s = 0.0
            yield result
    finally:
        stopping.set()
        if pool is not None:  # stopped early (an error, Ctrl-C): cancel every scene, wait for their clean-up
            executor.stop()
            pool.shutdown(wait=True, cancel_futures=True)
        if executor is not None:
            executor.close()
        for vrt, _ in items.values():
            vrt.unlink(missing_ok=True)
        for folder in created:
            with contextlib.suppress(OSError):  # only an empty folder goes
                folder.rmdir()


class _TilesDone:
    """``progress(done, total)`` over all scenes, from the scenes running at once (one thread each)."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total = progress, total
        self.done: dict[int, int] = {}
        self.lock = threading.Lock()

    def callback(self, index: int) -> Progress:
        def update(done: int, _total: int) -> None:
            with self.lock:
                self.done[index] = done
                count = sum(self.done.values())
                self.progress(count, self.total)

        return update

    def finish(self, index: int, tiles: int) -> None:
        """A scene over (finished or failed): all its tiles count as done, told with the next update."""
        with self.lock:
            self.done[index] = tiles


def predict(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    model: str | os.PathLike | torch.nn.Module | None = None,
    preset: str | None = None,
    card: ModelCard | str | os.PathLike | None = None,
    progress: Progress | None = None,
    status: Callable[[str], None] | None = None,
    **keywords: Any,
) -> list[PredictResult]:
    """Segment GeoTIFFs (or anything GDAL reads) into class rasters aligned pixel for pixel with the inputs.

    ``inputs``: one path, or several. One input writes the file ``output``; several write
    ``<stem>.classes.tif`` (and ``.confidence.tif``, ``.probabilities.tif``) into the folder ``output``.
    ``model`` is a checkpoint path (None: the bundled one); ``preset``/``card`` describe a foreign
    checkpoint. Tile size and overlap default to the card's.
    ``margin`` (px) mirrors each scene about its own edges so that its border pixels have context (None:
    :func:`~geoseg.inference.plan.border_margin`; 0: none).
    ``scale`` is ``(min, max)`` of the raw values or ``"auto"`` (2-98 percentile). ``vectorize`` also writes
    polygons and ``quicklook`` a PNG picture of each class raster (names: see :func:`prepare_outputs`).
    ``progress(done, total)`` counts tiles over all scenes (skipped ones too); each result's ``tiles``
    counts the tiles computed, without those that hold no valid input pixel (they are skipped).
    ``precision`` ``auto`` is the fastest that keeps the classes on the device (see
    :func:`geoseg.device.resolve_precision`); ``int8`` (CPU, onnxruntime) is calibrated once per run, on
    ``calibration`` (rasters or folders of them) or on tiles spread over all the scenes. ``engine``: torch,
    onnxruntime or auto (see :func:`geoseg.export.cpu_engine.resolve_engine`); ``compile`` runs the network
    through ``torch.compile`` (minutes once, worth it on big scenes only). ``batch_size`` ``auto``: see
    :func:`geoseg.inference.acceleration.resolve_batch_size`.
    """
    return list(
        iter_predict(
            inputs,
            output,
            options,
            model=model,
            preset=preset,
            card=card,
            progress=progress,
            status=status,
            **keywords,
        )
    )


def _skipped(source: str, paths: OutputPaths, device: torch.device) -> PredictResult:
    """The record of a scene an earlier run finished: its files, and its size read from the class raster's
    header (no pixels: cheap over thousands of scenes)."""
    from geoseg.raster.reading import open_raster

    with open_raster(paths.classes, "an existing output GDAL cannot read") as dataset:
        width, height = dataset.width, dataset.height
    outputs = {kind: str(path) for kind, path in paths.results()}
    outputs.update({kind: str(path) for kind, path in paths.style_files() if path.exists()})
    outputs.update({f"polygons{p.suffix}": str(p) for p in shapefile_sidecars(paths.polygons) if p.exists()})
    return PredictResult(source, outputs, width, height, 0, 0.0, str(device), status="skipped")


def _failure(source: str, device: torch.device, error: BaseException) -> PredictResult:
    message = one_line(error)
    if not isinstance(error, GeosegError):
        message = f"{source}: {type(error).__name__}: {message}"
    return PredictResult(
        input=source, outputs={}, width=0, height=0, tiles=0, seconds=0.0, device=str(device), error=message
    )
