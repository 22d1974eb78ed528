"""One scene from plan to final rasters: plan (grid, regions) -> run regions (local or Dask) -> assemble.

- :mod:`geoseg.inference.plan`: bands, value range, georeferencing, the global tile grid, the regions;
- :mod:`geoseg.inference.stream`: the streaming loop that computes one region into part GeoTIFFs;
- :mod:`geoseg.inference.executors`: regions one after another in this process, or on a Dask cluster;
- :mod:`geoseg.inference.assemble`: the parts as a VRT, copied into cloud-optimized GeoTIFFs.

Parts live in a work folder beside the output (:mod:`geoseg.inference.work`), which also makes ``resume``
possible; the final names appear only when the outputs are complete.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geoseg.atomic import OutputSet, check_output_path
from geoseg.device import resolve_device, resolve_precision
from geoseg.errors import ConfigurationError
from geoseg.inference.acceleration import resolve_batch_size
from geoseg.inference.assemble import assemble
from geoseg.inference.executors import Executor, open_executor
from geoseg.inference.grid import Region
from geoseg.inference.options import PredictOptions
from geoseg.inference.outputs import OutputPaths
from geoseg.inference.plan import ScenePlan, plan_regions, plan_scene
from geoseg.inference.tasks import ModelSource, PredictResult, Progress, RegionTask
from geoseg.inference.work import WorkFolder, input_identity
from geoseg.model.card import ModelCard
from geoseg.model.loading import model_digest

Status = Callable[[str], None]


def predict_scene(
    model: torch.nn.Module,
    card: ModelCard,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: PredictOptions | None = None,
    *,
    confidence_path: str | os.PathLike | None = None,
    probabilities_path: str | os.PathLike | None = None,
    progress: Progress | None = None,
    status: Status | None = None,
    **keywords: Any,
) -> PredictResult:
    """Segment one scene with an in-memory ``model`` (moved to ``device``) described by ``card``.

    ``options`` (or :class:`~geoseg.inference.options.PredictOptions`' fields as ``keywords``, over a batch
    size of 4): see :func:`run_scene`; ``styles``: QGIS styles beside the class and confidence rasters
    (:mod:`geoseg.styles`).
    """
    options = replace(options, **keywords) if options is not None else PredictOptions(**(_SCENE | keywords))
    outputs = OutputPaths(
        Path(output_path),
        Path(confidence_path) if confidence_path is not None else None,
        Path(probabilities_path) if probabilities_path is not None else None,
        styles=options.styles,
    )
    for _, path in outputs.files():
        check_output_path(path, options.overwrite, [input_path])
    plan = plan_scene(card, input_path, **options.planning())
    return run_scene(model, card, plan, outputs, options, progress=progress, status=status)


_SCENE = {"batch_size": 4}  # predict_scene's own default: a known batch, not the device's measured one


def run_scene(
    model: torch.nn.Module,
    card: ModelCard,
    plan: ScenePlan,
    outputs: OutputPaths,
    options: PredictOptions,
    *,
    progress: Progress | None = None,
    status: Status | None = None,
    executor: Executor | None = None,
    source: ModelSource | None = None,
    unit: OutputSet | None = None,
) -> PredictResult:
    """Run a planned scene region by region and write its outputs atomically, as one set.

    ``options.workers`` processes (a Dask LocalCluster; 1: this process) or the Dask cluster at
    ``options.scheduler`` compute the regions, or the given ``executor`` (shared by the scenes of
    :func:`~geoseg.inference.batch.predict`, with the ``source`` it was opened with). Without ``resume``
    nothing is left behind on failure or Ctrl-C; with it, finished regions survive in the work folder and
    the same call computes only the others. ``status(text)`` hears of regions done and workers when there is
    more than one of either. ``compress``: the codec of the rasters (:data:`~geoseg.raster.writing.CODECS`).
    The rasters, the class names side-car and the styles are staged in ``unit``, the set of the scene's
    files that the caller renames into place together once its other outputs (polygons, quick-look, drawn
    from the staged class raster) are complete; without one they are renamed into place here, together.
    """
    started = time.perf_counter()
    options = resolve_options(options, card)
    options = replace(options, precision=ran_precision(model, options.precision))
    device = options.device
    if source is None:
        source = ModelSource(model_digest(model), module=model)
    own_unit = unit is None
    unit = OutputSet() if own_unit else unit
    with unit if own_unit else contextlib.nullcontext(), contextlib.ExitStack() as finish:
        work = WorkFolder(outputs.classes)  # beside the final name, where a resumed run finds it
        # another process writing these outputs is refused before any work, and kept off them until this
        # scene's files are in place (or discarded) and its work folder is gone
        unit.hold(work.lock())
        if executor is None:
            executor = open_executor(model, source, device, options.workers, options.scheduler)
            finish.callback(executor.close)
        executor.check(plan, work.path.parent)
        kinds = [kind for kind, _ in outputs.rasters()]
        manifest = work_manifest(plan, source.digest, kinds, options)
        planned = plan_regions(plan.grid, executor.workers, options.resume)
        if options.resume:
            unit.after_commit(work.remove)
        with work.session(manifest, planned, options.resume, keep_when_done=options.resume) as (
            regions,
            results,
        ):
            todo = [
                region_task(plan, region, {kind: work.part(region, kind) for kind in kinds}, card, options)
                for region in regions
                if region.index not in results
            ]
            tell = status if status is not None and (len(regions) > 1 or executor.workers > 1) else None
            if tell is not None:
                tell(f"{len(results)}/{len(regions)} regions, {executor.workers} workers")
            for result in executor.run(todo, _scene_progress(progress, plan, regions, todo)):
                work.record(result)
                results[result.region.index] = result
                if tell is not None:
                    tell(f"{len(results)}/{len(regions)} regions, {executor.workers} workers")
            parts = {kind: [(r, work.part(r, kind)) for r in regions] for kind in kinds}
            assemble(plan, stage_rasters(outputs, unit), parts, card, options.overwrite, options.compress)

    counts = np.sum([r.counts for r in results.values()], axis=0)
    valid = int(counts.sum())
    names = card.class_names
    return PredictResult(
        input=plan.path,
        outputs=unit.files(),
        width=plan.width,
        height=plan.height,
        tiles=sum(r.tiles for r in results.values()),
        seconds=time.perf_counter() - started,
        device=str(device),
        class_fractions={name: (float(counts[i]) / valid if valid else 0.0) for i, name in enumerate(names)},
        precision=options.precision,
        engine=getattr(model, "engine", "torch"),
        float32_layers=getattr(model, "float32_layers", None),
    )


def ran_precision(model: torch.nn.Module, precision: str) -> str:
    """What ``model`` computes in: an onnxruntime network says it (``fp32`` or ``int8``, whatever autocast
    would do); a torch network runs the resolved ``precision``, which int8 (onnxruntime only) is not."""
    own = getattr(model, "precision", None)
    if own is not None:
        return own
    if precision == "int8":
        raise ConfigurationError(
            "precision='int8' runs in onnxruntime; use engine='onnxruntime' or engine='auto'"
        )
    return precision


def resolve_options(options: PredictOptions, card: ModelCard) -> PredictOptions:
    """``options`` with the device, precision and batch size this machine gives them (what the manifest
    records and the regions run with); unchanged when already resolved."""
    device = options.device if isinstance(options.device, torch.device) else resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    batch_size = resolve_batch_size(options.batch_size, device, options.tile or card.tile_size)
    return replace(options, device=device, precision=precision, batch_size=batch_size)


def region_task(
    plan: ScenePlan, region: Region, parts: dict[str, Path], card: ModelCard, options: PredictOptions
) -> RegionTask:
    """A region's task under resolved ``options`` (see :func:`resolve_options`)."""
    device, precision = str(options.device), options.precision
    return RegionTask(plan, region, parts, card, options.batch_size, device, precision, options.tta)


def work_manifest(plan: ScenePlan, digest: str, kinds: list[str], options: PredictOptions) -> dict:
    """What a work folder's regions depend on (input identity, model digest, every option that changes
    results, the raster kinds), from resolved ``options`` (:func:`resolve_options`): ``--resume`` and
    ``geoseg serve`` reuse a folder only when this matches."""
    grid = plan.grid
    return {
        "input": {**input_identity(plan.path), "width": plan.width, "height": plan.height},
        "model": digest,
        "options": {
            "tile": grid.tile,
            "overlap": grid.overlap,
            "border margin": grid.margin,
            "bands": list(plan.bands),
            "value range": list(plan.value_range),
            "tta": options.tta,
            "precision": options.precision,
            "device": options.device.type,
            "batch size": options.batch_size,
            "chunk size": grid.chunk_size,
        },
        "outputs": list(kinds),
    }


def stage_rasters(outputs: OutputPaths, unit: OutputSet) -> OutputPaths:
    """The scene's rasters under their temporary names in ``unit``, with the class names side-car and the
    styles that :func:`~geoseg.inference.assemble.assemble` writes beside them."""
    staged = OutputPaths(unit.stage("classes", outputs.classes), styles=outputs.styles)
    unit.stage("classes.aux.xml", outputs.class_names, temporary=staged.class_names)
    if outputs.confidence is not None:
        staged.confidence = unit.stage("confidence", outputs.confidence)
    if outputs.probabilities is not None:
        staged.probabilities = unit.stage("probabilities", outputs.probabilities)
    finals = dict(outputs.style_files())
    for kind, temporary in staged.style_files():  # the rasters' (``staged`` has no polygons)
        unit.stage(kind, finals[kind], temporary=temporary)
    return staged


def _scene_progress(progress: Progress | None, plan: ScenePlan, regions: list, todo: list[RegionTask]):
    """Region tiles done, as a share of the scene's grid tiles (regions finished earlier count as done)."""
    if progress is None:
        return None
    grid_tiles = plan.grid.num_tiles
    region_tiles = sum(plan.grid.for_region(r).num_tiles for r in regions)
    before = region_tiles - sum(t.tiles for t in todo)

    def update(done: int, _total: int) -> None:
        progress(min(grid_tiles, round((before + done) * grid_tiles / region_tiles)), grid_tiles)

    return update
