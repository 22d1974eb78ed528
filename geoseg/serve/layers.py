"""What a server shows: per input an ``image`` layer (the scene in natural colour) and a ``classes`` layer
(computed on demand from the model, or an existing class raster), checked and opened before it starts."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath

import torch
from affine import Affine

from geoseg.errors import ConfigurationError, GeosegWarning
from geoseg.inference.plan import plan_scene
from geoseg.raster.classes import class_colormap, read_class_names
from geoseg.raster.reading import Scale, open_raster
from geoseg.serve import tiles
from geoseg.serve.regions import ComputeOptions, RegionCache, RegionQueue, Ticket

NATURAL = ("red", "green", "blue")


@dataclass
class Layer:
    """A georeferenced raster shown as tiles; ``name`` is its URL path component."""

    name: str
    title: str
    crs: object
    transform: Affine
    width: int
    height: int

    def footprint(self, z: int, x: int, y: int) -> tiles.Footprint | None:
        return tiles.footprint(self.crs, self.transform, self.width, self.height, z, x, y)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "bounds": tiles.lonlat_bounds(self.crs, self.transform, self.width, self.height),
            "native_zoom": tiles.native_zoom(self.crs, self.transform, self.width, self.height),
        }


@dataclass
class ImageLayer(Layer):
    path: str = ""
    bands: list[int] = field(default_factory=list)
    value_range: tuple[float, float] = (0.0, 255.0)

    def render(self, z: int, x: int, y: int) -> bytes:
        return tiles.image_tile(self.path, self.bands, self.value_range, z, x, y)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "image"}


@dataclass
class ClassesLayer(Layer):
    """Classes of a scene: from ``cache`` (computed on demand) or from the class raster at ``path``."""

    names: list[str] = field(default_factory=list)
    colors: list[tuple[int, int, int]] = field(default_factory=list)
    cache: RegionCache | None = None
    path: str | None = None

    @property
    def colormap(self) -> dict:
        return class_colormap(self.colors)

    def wanted(self, footprint: tiles.Footprint):
        """The regions a tile needs computed; none at zooms coarser than the model's useful scale."""
        if self.cache is None or footprint.step > tiles.MAX_COMPUTE_STEP:
            return []
        return self.cache.covering(footprint.window)

    def render(self, z: int, x: int, y: int, footprint: tiles.Footprint) -> bytes:
        if self.cache is None:
            return tiles.classes_file_tile(self.path, z, x, y, self.colormap)
        step = 1 if footprint.step <= tiles.MAX_COMPUTE_STEP else 2 ** min(int(math.log2(footprint.step)), 9)
        w = footprint.window
        row, col = w.row_off // step * step, w.col_off // step * step
        rows, cols = -(-(w.row_off + w.height - row) // step), -(-(w.col_off + w.width - col) // step)
        classes = self.cache.mosaic(row, col, rows, cols, step)
        transform = self.transform * Affine.translation(col, row) * Affine.scale(step)
        return tiles.classes_tile(classes, self.crs, transform, z, x, y, self.colormap)

    def pixel(self, lon: float, lat: float) -> dict:
        """The class (name, confidence) at a point, ``computed: false`` while its region is not finished."""
        from rasterio.warp import transform as reproject_points

        xs, ys = reproject_points("EPSG:4326", self.crs, [lon], [lat])
        col, row = (math.floor(v) for v in ~self.transform * (xs[0], ys[0]))
        if not (0 <= row < self.height and 0 <= col < self.width):
            return {"inside": False}
        if self.cache is not None:
            found = self.cache.pixel(row, col)
            if found is None:
                return {"inside": True, "computed": False}
            value, score = found
        else:
            with open_raster(self.path) as dataset:
                value = int(dataset.read(1, window=((row, row + 1), (col, col + 1)))[0, 0])
            score = None
        named = value < len(self.names)
        return {
            "inside": True,
            "computed": True,
            "row": row,
            "col": col,
            "class": value if named else None,
            "name": self.names[value] if named else None,
            "confidence": None if score is None or not named else round(score / 255, 3),
        }

    def progress(self) -> dict | None:
        if self.cache is None:
            return None
        return {
            "regions": len(self.cache.regions),
            "done": len(self.cache.done),
            "computed": self.cache.computed,
        }

    def describe(self) -> dict:
        legend = [
            {"name": n, "color": "#{:02x}{:02x}{:02x}".format(*tuple(c))}
            for n, c in zip(self.names, self.colors, strict=True)
        ]
        return {
            **super().describe(),
            "kind": "classes",
            "legend": legend,
            "computed": self.cache is not None,
            "compute_step": tiles.MAX_COMPUTE_STEP,
        }


@dataclass
class Layers:
    """Every layer of a server, and the one region queue (the network loaded once) behind them."""

    layers: dict[str, Layer]
    queue: RegionQueue | None = None

    def work_folders(self) -> list[Path]:
        layers = self.layers.values()
        return [c.cache.work.path for c in layers if isinstance(c, ClassesLayer) and c.cache is not None]

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()
        for layer in self.layers.values():
            if isinstance(layer, ClassesLayer) and layer.cache is not None:
                layer.cache.close()

    def want(self, layer: ClassesLayer, footprint: tiles.Footprint, ticket: Ticket) -> list:
        regions = layer.wanted(footprint)
        if not regions or self.queue is None:
            return []
        return self.queue.want(layer.cache, regions, ticket)


def _hint_overviews(path: str, source: str) -> None:
    """One warning line for a large scene without overviews: zoomed-out image tiles then read it at full
    resolution (slow), which GDAL's ``gdaladdo`` fixes once."""
    with open_raster(path) as dataset:
        if not dataset.overviews(1) and max(dataset.width, dataset.height) > 4 * tiles.TILE * 4:
            warnings.warn(
                f"{source}: no overviews, so zoomed-out image tiles read it at full resolution "
                f"(add them once with: gdaladdo {source})",
                GeosegWarning,
                stacklevel=2,
            )


def is_class_raster(path: str) -> bool:
    """A class map (geoseg predict's: one uint8 band named by class names), served without a model."""
    with open_raster(path) as dataset:
        return dataset.count == 1 and read_class_names(dataset) is not None


def open_layers(
    inputs: list[str],
    *,
    model: str | os.PathLike | torch.nn.Module | None = None,
    card=None,
    preset: str | None = None,
    outputs: list[str | os.PathLike] | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    bands: list[int] | None = None,
    scale: Scale = None,
    tta: str = "none",
    device: str | torch.device = "auto",
    precision: str = "auto",
    batch_size: int | str = "auto",
    engine: str = "auto",
) -> Layers:
    """Check and open every input before a server starts (predict's one-line errors for a scene the model
    cannot read); scenes get an image and a classes layer whose regions go to the work folder of
    ``outputs`` (default ``<stem>.classes.tif`` in the current folder: what ``predict -o`` names), class
    rasters a classes layer. The model is loaded once, and only when a scene needs it; it runs in the engine
    ``predict`` would choose (:func:`~geoseg.inference.batch.engine_network`), so a later ``predict --resume``
    finds the regions computed by the same network at the same precision."""
    from geoseg.export.cpu_engine import resolve_engine
    from geoseg.inference.batch import engine_network
    from geoseg.inference.executors import LocalExecutor
    from geoseg.inference.options import PredictOptions
    from geoseg.inference.scene import ran_precision, resolve_options
    from geoseg.inference.tasks import ModelSource
    from geoseg.model.loading import load_model, model_digest

    if not inputs:
        raise ConfigurationError("no inputs to serve")
    outputs = list(outputs) if outputs else [Path(f"{PurePath(i).stem}.classes.tif") for i in inputs]
    if len(outputs) != len(inputs):
        raise ConfigurationError(f"{len(outputs)} outputs (-o) for {len(inputs)} inputs; give one per input")
    resolved = [Path(o).resolve() for o in outputs]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ConfigurationError(
                f"two inputs would keep their regions in the work folder of {outputs[i]}; give each input "
                "its own -o"
            )
    names = _layer_names(inputs)
    scenes = [i for i in inputs if not is_class_raster(i)]
    network = executor = options = None
    plans = {}
    if scenes:
        if isinstance(model, torch.nn.Module):
            network, model_card = model, card
        else:
            network, model_card = load_model(model, preset, card)
        predict = PredictOptions(
            tile=tile, batch_size=batch_size, device=device, precision=precision, tta=tta, engine=engine
        )
        resolved = resolve_options(predict, model_card)
        runtime = resolve_engine(engine, precision, resolved.device, network, int8=False)
        plans = {
            source: plan_scene(model_card, source, tile=tile, overlap=overlap, bands=bands, scale=scale)
            for source in scenes
        }
        network, _, _ = engine_network(
            network,
            model_card,
            ModelSource(model_digest(network)),
            runtime,
            predict,
            list(plans.values()),
            None,
        )
        resolved = replace(resolved, precision=ran_precision(network, resolved.precision))
        options = ComputeOptions(model_digest(network), resolved)
    layers: dict[str, Layer] = {}
    caches: list[RegionCache] = []
    try:
        for source, output, name in zip(inputs, outputs, names, strict=True):
            if source not in scenes:
                layers[f"{name}classes"] = _classes_file(f"{name}classes", source)
                continue
            plan = plans[source]
            georef = plan.georef
            if georef.get("crs") is None or georef.get("transform") is None or georef.get("gcps"):
                raise ConfigurationError(
                    f"{source}: serve needs a CRS and a geotransform to place the scene on a web map"
                )
            common = dict(
                crs=georef["crs"], transform=georef["transform"], width=plan.width, height=plan.height
            )
            _hint_overviews(plan.path, source)
            layers[f"{name}image"] = ImageLayer(
                f"{name}image",
                f"{PurePath(source).name} (image)",
                **common,
                path=plan.path,
                bands=_natural(model_card.bands, plan.bands),
                value_range=plan.value_range,
            )
            cache = RegionCache(f"{name}classes", model_card, plan, Path(output), options)
            caches.append(cache)
            layers[f"{name}classes"] = ClassesLayer(
                f"{name}classes",
                f"{PurePath(source).name} (classes)",
                **common,
                names=model_card.class_names,
                colors=[c.color for c in model_card.classes],
                cache=cache,
            )
        if scenes:
            executor = LocalExecutor(network, options.predict.device)
    except BaseException:
        for cache in caches:
            cache.close()
        raise
    return Layers(layers, RegionQueue(executor) if executor is not None else None)


def _layer_names(inputs: list[str]) -> list[str]:
    """URL prefixes: none for one input (``image``, ``classes``), else ``<stem>.`` (made unique)."""
    if len(inputs) == 1:
        return [""]
    seen: dict[str, int] = {}
    names = []
    for source in inputs:
        stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in PurePath(source).stem) or "scene"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}{'-' + str(seen[stem]) if seen[stem] > 1 else ''}.")
    return names


def _natural(card_bands: list[str], plan_bands: list[int]) -> list[int]:
    """The scene bands that are red, green and blue for the model, else its first three (false colour)."""
    named = {name.lower(): index for name, index in zip(card_bands, plan_bands, strict=True)}
    if all(b in named for b in NATURAL):
        return [named[b] for b in NATURAL]
    return (plan_bands * 3)[:3]


def _classes_file(name: str, path: str) -> ClassesLayer:
    with open_raster(path) as dataset:
        if dataset.crs is None:
            raise ConfigurationError(f"{path}: serve needs a CRS and a geotransform to place the map")
        names = read_class_names(dataset) or []
        try:
            table = dataset.colormap(1)
        except ValueError:
            table = {}
        colors = [tuple(table.get(i, (128, 128, 128, 255))[:3]) for i in range(len(names))]
        return ClassesLayer(
            name,
            f"{PurePath(path).name} (classes)",
            dataset.crs,
            dataset.transform,
            dataset.width,
            dataset.height,
            names=names,
            colors=colors,
            path=path,
        )
