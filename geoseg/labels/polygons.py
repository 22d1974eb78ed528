"""Labels from the GIS: polygons with a class column → label pixels on a raster's grid, one window at a time.

This module owns "polygons → label pixels"; :mod:`geoseg.labels.raster` owns label *rasters*. Both give
uint8 class indices with :data:`geoseg.labels.IGNORE` for pixels that count in neither the loss nor the
scores, so training and evaluation treat either kind of truth alike.

The rules (the same for ``train`` and ``evaluate``, so their scores agree on the same data):

- Any vector pyogrio reads (GeoPackage, Shapefile, FlatGeobuf, GeoJSON, …; ``file.gpkg:layer`` names a layer)
  or a GeoParquet file (read with pyarrow; it must carry the ``geo`` metadata). A file with several data
  layers needs the layer named (a GeoPackage's table of QGIS styles is no data layer: geoseg's own polygons
  read without a name); a layer without a CRS, without features or without the class field is refused.
- The class field's values are class names (case-insensitive) or class ids; ``class_map`` maps other values
  (case-insensitive) to names or ids. A value that maps to no class is refused, listed with its count.
- Null and empty geometries are skipped (counted in one warning); invalid ones are repaired with
  ``shapely.make_valid`` (counted in one warning), keeping their polygonal parts.
- Polygons are reprojected vertex by vertex (pyproj) to each raster's CRS.
- A pixel takes the class of a polygon that contains its *centre* (GDAL's rule, ``rasterio.features``);
  ``all_touched`` burns every pixel a polygon touches (thin features). Where polygons of different classes
  overlap, the class ranked first in ``priority`` wins, then the *smaller* polygon (a building digitized on
  top of a land-use area keeps its class), then the later feature; overlapping pairs are counted in one
  warning.
- Inside the areas of interest (``aoi``) labels are exhaustive: a pixel under no label polygon is
  ``background``. Outside them, and everywhere without AOIs, a pixel under no label polygon is ignored.

Polygons are indexed (``shapely.STRtree``) in each raster's pixel space, so a window rasterizes only the
polygons that reach it: the work and memory of a window do not grow with the polygons elsewhere. Training
reads windows through tiles rasterized once and kept in a bounded cache, so an epoch's overlapping crops
do not rasterize the same polygons again.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
from affine import Affine

from geoseg.errors import ConfigurationError, GeosegWarning, InputError
from geoseg.labels import IGNORE
from geoseg.styles import data_layers

VECTOR_SUFFIXES = (".gpkg", ".shp", ".fgb", ".geojson", ".json", ".parquet", ".gml", ".kml", ".sqlite")
_POLYGONAL = ("Polygon", "MultiPolygon")


# --- options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VectorLabelOptions:
    """How polygons become labels: the class field, value mapping, areas of interest and burning rules."""

    class_field: str
    class_map: Mapping[str, str | int] | None = None  # field value (any case) → class name or id
    aoi: str | None = None  # a vector of areas of interest where labels are exhaustive
    background: str | int | None = None  # the class of unlabelled pixels inside AOIs [a class "background"]
    all_touched: bool = False
    priority: tuple[str | int, ...] = ()  # classes that win overlaps, first wins

    def describe(self) -> dict:
        """The rules as the card's training record holds them."""
        return {
            "class_field": self.class_field,
            "class_map": dict(self.class_map) if self.class_map else None,
            "aoi": self.aoi,
            "exhaustive": "inside the AOIs (unlabelled pixels there are the background class)"
            if self.aoi
            else "no (--aoi not given): only pixels under a label polygon are used",
            "pixel_rule": "every pixel touched (--all-touched)" if self.all_touched else "pixel centre",
            "overlaps": f"--priority {', '.join(str(p) for p in self.priority)}, then the smaller polygon"
            if self.priority
            else "the smaller polygon wins",
        }


def is_point_layer(table: VectorTable) -> bool:
    """True when every present geometry of a layer is a point: sample units, not label polygons."""
    present = table.geometries[~shapely.is_missing(table.geometries)]
    return bool(present.size) and bool(np.all(shapely.get_type_id(present) == 0))


def is_vector_path(spec: str | os.PathLike) -> bool:
    """True for a path (or ``path:layer``) whose suffix names a vector format."""
    path, _ = split_layer(str(spec))
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def split_layer(spec: str) -> tuple[str, str | None]:
    """``file.gpkg:layer`` → (``file.gpkg``, ``layer``); a path that exists as given is never split."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    path, layer = spec.rsplit(":", 1)
    if Path(path).suffix.lower() in VECTOR_SUFFIXES and layer:
        return path, layer
    return spec, None


def parse_class_map(text: str | None) -> dict[str, str] | None:
    """``'Gebouw=building,Weg=road'`` or a JSON file holding ``{"Gebouw": "building", …}``."""
    if not text:
        return None
    if os.path.isfile(text):
        try:
            pairs = json.loads(Path(text).read_text(encoding="utf-8"), object_pairs_hook=list)
        except (OSError, ValueError) as error:
            raise ConfigurationError(f"{text}: not a JSON class map ({error})") from None
        if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
            raise ConfigurationError(f'{text}: a class map is a JSON object {{"value": "class", …}}')
        pairs = [(str(k), str(v)) for k, v in pairs]
        fold_class_map(pairs, text)
        return dict(pairs)
    if "=" not in text and (text.lower().endswith(".json") or "/" in text or os.sep in text):
        problem = "is a folder, not a JSON file" if os.path.isdir(text) else "the file does not exist"
        raise ConfigurationError(f"class_map={text!r}: {problem}")
    pairs = []
    for item in text.split(","):
        value, sep, target = item.partition("=")
        if not sep or not value.strip() or not target.strip():
            raise ConfigurationError(
                f"class_map={text!r}: {item!r} is not VALUE=CLASS; write 'Gebouw=building,Weg=road' "
                "or name a JSON file"
            )
        pairs.append((value.strip(), target.strip()))
    fold_class_map(pairs)
    return dict(pairs)


def fold_class_map(
    pairs: Iterable[tuple[str, str | int]], file: str | None = None
) -> dict[str, tuple[str, str | int]]:
    """Class-map keys folded to any case, as field values are matched, each to (the key as the user wrote
    it, for messages; its class); a value mapped twice to different classes (``Wasser=water,wasser=road``)
    is refused, since either choice would silently drop the other. ``file``: the JSON file they come from."""
    folded: dict[str, tuple[str, str | int]] = {}
    for key, target in pairs:
        written = str(key).strip()
        fold = written.casefold()
        if fold in folded and str(folded[fold][1]).strip().casefold() != str(target).strip().casefold():
            first, other = folded[fold]
            where = file or f"class_map={{{first!r}: {other!r}, {written!r}: {target!r}}}"
            raise ConfigurationError(
                f"{where}: the value {written!r} is mapped twice, to {other!r} and {target!r}; keep one"
            )
        folded[fold] = (written, target)
    return folded


def class_index(value: str | int, names: Sequence[str], given: str) -> int:
    """A class name (any case) or id → its index; anything else is an error naming ``given``, the
    parameter as the caller wrote it (``priority='nosuch'``), and listing the classes."""
    text = str(value).strip()
    folded = {name.casefold(): i for i, name in enumerate(names)}
    if text.casefold() in folded:
        return folded[text.casefold()]
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
        return int(text)
    raise ConfigurationError(f"{given}: {text!r} is no class; classes are {_listed(names)}")


def _listed(names: Sequence[str]) -> str:
    return ", ".join(names[:20]) + (f", … ({len(names)} classes)" if len(names) > 20 else "")


# --- reading ------------------------------------------------------------------------------------------


@dataclass
class VectorTable:
    """Geometries of one vector layer with one attribute column, and the layer's CRS (pyproj)."""

    source: str
    geometries: np.ndarray  # shapely objects, None for null geometries
    values: np.ndarray | None  # the attribute column, or None when none was asked for
    crs: object


def read_vector(spec: str | os.PathLike, role: str, field_name: str | None = None) -> VectorTable:
    """Read a vector layer (``path:layer`` allowed) with one attribute, refusing what cannot be labels:
    a missing file, several layers and none named, no CRS, no features, no such field (listing them)."""
    from pyproj import CRS

    text = str(spec)
    path, layer = split_layer(text)
    if not os.path.exists(path):
        raise InputError(f"{path}: {role} file not found")
    if Path(path).suffix.lower() == ".parquet":
        geometries, columns, crs, fields = _read_geoparquet(path, role, field_name)
    else:
        geometries, columns, crs, fields = _read_ogr(path, layer, role, field_name)
    if isinstance(crs, dict):  # GeoParquet's PROJJSON
        crs = CRS.from_json_dict(crs)
    elif crs:
        crs = CRS.from_user_input(crs)
    if field_name is not None and columns is None:
        raise InputError(
            f"{text}: no field {field_name!r}; its fields are {', '.join(fields) or '(none)'}; "
            "name one with class_field=FIELD"
        )
    if len(geometries) == 0:
        raise InputError(f"{text}: the {role} layer holds no features")
    if crs is None:
        raise InputError(
            f"{text}: the {role} layer has no CRS, so it cannot be placed on the imagery; "
            "assign one in QGIS (Layer ▸ Set CRS) or with ogr2ogr -a_srs EPSG:XXXX"
        )
    return VectorTable(text, geometries, columns, crs)


def _read_ogr(path: str, layer: str | None, role: str, field_name: str | None):
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        if layer is None:
            layers = data_layers(path)
            if len(layers) > 1:
                raise InputError(
                    f"{path}: holds {len(layers)} layers ({', '.join(layers)}); name one as {path}:LAYER"
                )
            layer = layers[0] if layers else None
        info = pyogrio.read_info(path, layer=layer)
        fields = [str(f) for f in info["fields"]]
        if field_name is not None and field_name not in fields:
            # a layer without features has every column, empty (a GeoJSON's fields come from its features)
            empty = np.empty(0, object)
            return empty, (empty if info["features"] == 0 else None), info["crs"], fields
        columns = [field_name] if field_name is not None else []
        meta, _, wkb, values = pyogrio.raw.read(path, layer=layer, columns=columns)
    except (DataSourceError, DataLayerError) as error:
        first = str(error).strip().splitlines()[0]
        raise InputError(f"{path}: cannot read as a {role} vector ({first})") from None
    geometries = shapely.from_wkb(wkb) if wkb is not None else np.empty(0, object)
    return geometries, (values[0] if field_name is not None else None), meta["crs"], fields


def _read_geoparquet(path: str, role: str, field_name: str | None):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow's ArrowInvalid and OSError: not a Parquet file
        raise InputError(f"{path}: cannot read as Parquet ({str(error).splitlines()[0]})") from None
    metadata = table.schema.metadata or {}
    if b"geo" not in metadata:
        raise InputError(
            f"{path}: a Parquet file without GeoParquet 'geo' metadata, so no column is known to be the "
            "geometry nor its CRS; write it as GeoParquet (geopandas to_parquet, ogr2ogr) or as .gpkg"
        )
    geo = json.loads(metadata[b"geo"])
    column = geo.get("primary_column", "geometry")
    spec = geo.get("columns", {}).get(column, {})
    if spec.get("encoding", "WKB").upper() != "WKB":
        raise InputError(f"{path}: geometry encoding {spec.get('encoding')!r}; only WKB GeoParquet is read")
    crs = spec.get("crs", "OGC:CRS84")  # GeoParquet: an absent crs means longitude/latitude, null unknown
    fields = [name for name in table.column_names if name != column]
    geometries = shapely.from_wkb(table.column(column).to_numpy(zero_copy_only=False))
    if field_name is not None and field_name not in fields:
        return geometries, None, crs, fields
    values = table.column(field_name).to_numpy(zero_copy_only=False) if field_name is not None else None
    return geometries, values, crs, fields


def _polygons(table: VectorTable, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Polygonal geometries and the indices of the features they come from: nulls and empties skipped,
    invalid ones repaired, each counted in one warning; points and lines are refused."""
    geometries = table.geometries
    present = ~(shapely.is_missing(geometries) | shapely.is_empty(geometries))
    skipped = int((~present).sum())
    keep = np.flatnonzero(present)
    geometries = geometries[keep]
    kinds = shapely.get_type_id(geometries)
    polygonal = np.isin(kinds, (3, 6))  # Polygon, MultiPolygon
    collections = kinds == 7
    if not np.all(polygonal | collections):
        bad = shapely.get_type_id(geometries[~(polygonal | collections)])
        names = sorted({shapely.GeometryType(int(k)).name.title() for k in bad})
        raise InputError(
            f"{table.source}: {int((~(polygonal | collections)).sum())} {role} feature(s) are "
            f"{'/'.join(names)}, not polygons; {role} must be polygons (points are sample units for "
            "geoseg evaluate)"
        )
    invalid = ~shapely.is_valid(geometries)
    if invalid.any():
        geometries = geometries.copy()
        geometries[invalid] = shapely.make_valid(geometries[invalid])
        warnings.warn(
            f"{table.source}: repaired {int(invalid.sum())} invalid {role} polygon(s) (shapely make_valid)",
            GeosegWarning,
            stacklevel=3,
        )
    geometries = np.array([_polygonal_part(g) for g in geometries], dtype=object)
    empty = shapely.is_empty(geometries)
    skipped += int(empty.sum())
    if skipped:
        warnings.warn(
            f"{table.source}: skipped {skipped} {role} feature(s) with a null or empty geometry",
            GeosegWarning,
            stacklevel=3,
        )
    if empty.all():
        raise InputError(f"{table.source}: no {role} feature has a polygon")
    return geometries[~empty], keep[~empty]


def _polygonal_part(geometry):
    """The polygons of a geometry (make_valid may add lines or points to a collection)."""
    if shapely.get_type_id(geometry) in (3, 6):
        return geometry
    parts = [p for p in shapely.get_parts(geometry) if shapely.get_type_id(p) in (3, 6)]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def map_classes(values: np.ndarray, names: Sequence[str], options: VectorLabelOptions, source: str):
    """Field values → class indices; values mapping to no class are refused with their counts."""
    folded = {name.casefold(): i for i, name in enumerate(names)}
    mapping = fold_class_map((options.class_map or {}).items())
    targets = {}
    for key, (written, target) in mapping.items():
        targets[key] = class_index(target, names, f"class_map={{{written!r}: {target!r}}}")
    texts = np.array(["" if _is_null(v) else _value_text(v) for v in values], dtype=object)
    unique, inverse, counts = np.unique(texts, return_inverse=True, return_counts=True)
    lookup = np.full(len(unique), -1, dtype=np.int64)
    for i, text in enumerate(unique):
        key = str(text).casefold()
        if key in targets:
            lookup[i] = targets[key]
        elif key in folded:
            lookup[i] = folded[key]
        elif key.isdigit() and int(key) < len(names):
            lookup[i] = int(key)
    unknown = np.flatnonzero(lookup < 0)
    if unknown.size:
        order = unknown[np.argsort(-counts[unknown], kind="stable")]
        listed = ", ".join(f"{unique[i] or '(null)'!r} ({counts[i]})" for i in order[:10])
        more = f" and {unknown.size - 10} more" if unknown.size > 10 else ""
        raise InputError(
            f"{source}: {unknown.size} value(s) of field {options.class_field!r} map to no class: "
            f"{listed}{more}; classes are {_listed(names)}; map them with class_map={{'VALUE': 'CLASS', …}}"
        )
    return lookup[inverse.ravel()]


def _is_null(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def _value_text(value) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


# --- label polygons -----------------------------------------------------------------------------------


@dataclass
class LabelPolygons:
    """Label polygons of one file with class indices and their burning order, and optional AOIs."""

    source: str
    geometries: np.ndarray
    classes: np.ndarray
    crs: object
    rank: np.ndarray  # burn order: higher is drawn later, so it wins
    aoi: np.ndarray | None
    aoi_crs: object
    background: int | None
    all_touched: bool
    options: VectorLabelOptions
    overlaps: int = 0
    _projected: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.geometries)


def load_label_polygons(
    spec: str | os.PathLike,
    options: VectorLabelOptions,
    class_names: Sequence[str],
    table: VectorTable | None = None,
) -> LabelPolygons:
    """Read, check, map and rank the label polygons (and AOIs) of ``spec`` (or of its ``table`` already
    read); every refusal before any work."""
    names = list(class_names)
    table = table if table is not None else read_vector(spec, "label", options.class_field)
    geometries, kept = _polygons(table, "label")
    classes = map_classes(table.values[kept], names, options, table.source)
    priority = [class_index(p, names, f"priority={p!r}") for p in options.priority]
    aoi = aoi_crs = background = None
    if options.aoi is not None:
        aoi_table = read_vector(options.aoi, "AOI")
        aoi, _ = _polygons(aoi_table, "AOI")
        aoi_crs = aoi_table.crs
        background = _background(options.background, names)
    elif options.background is not None:
        raise ConfigurationError("background=CLASS applies inside areas of interest: give aoi=FILE too")
    rank = _burn_rank(geometries, classes, priority)
    overlaps = _count_overlaps(geometries, classes)
    if overlaps:
        rule = (
            f"priority={tuple(names[p] for p in priority)} first, then the smaller polygon"
            if priority
            else "the smaller polygon wins (priority=(CLASS, …) ranks classes first)"
        )
        warnings.warn(
            f"{table.source}: {overlaps} pair(s) of label polygons of different classes overlap; {rule}",
            GeosegWarning,
            stacklevel=2,
        )
    return LabelPolygons(
        table.source,
        geometries,
        classes,
        table.crs,
        rank,
        aoi,
        aoi_crs,
        background,
        options.all_touched,
        options,
        overlaps,
    )


def _background(value: str | int | None, names: Sequence[str]) -> int:
    if value is not None:
        return class_index(value, names, f"background={value!r}")
    folded = [n.casefold() for n in names]
    if "background" in folded:
        return folded.index("background")
    raise ConfigurationError(
        "aoi=FILE makes labels exhaustive: name the class of unlabelled pixels inside the AOIs with "
        f"background=CLASS (one of {', '.join(names)})"
    )


def _burn_rank(geometries: np.ndarray, classes: np.ndarray, priority: Sequence[int]) -> np.ndarray:
    """Burn positions: listed classes last (the first listed very last), then larger before smaller, then
    file order; each polygon is drawn over those before it."""
    tier = np.zeros(len(classes), dtype=np.int64)
    for position, cls in enumerate(priority):
        tier[classes == cls] = len(priority) - position
    areas = shapely.area(geometries)
    order = np.lexsort((np.arange(len(classes)), -areas, tier))
    rank = np.empty(len(classes), dtype=np.int64)
    rank[order] = np.arange(len(classes))
    return rank


def _count_overlaps(geometries: np.ndarray, classes: np.ndarray) -> int:
    """Pairs of polygons of different classes that share area (touching edges do not count)."""
    tree = shapely.STRtree(geometries)
    left, right = tree.query(geometries, predicate="intersects")
    pairs = (left < right) & (classes[left] != classes[right])
    left, right = left[pairs], right[pairs]
    if not left.size:
        return 0
    shared = shapely.area(shapely.intersection(geometries[left], geometries[right]))
    scale = np.minimum(shapely.area(geometries[left]), shapely.area(geometries[right]))
    return int(np.count_nonzero(shared > 1e-9 * scale))


def reproject(geometries: np.ndarray, source_crs, target_crs, source: str) -> np.ndarray:
    from pyproj import CRS, Transformer

    target = CRS.from_user_input(target_crs.to_wkt() if hasattr(target_crs, "to_wkt") else target_crs)
    if CRS.from_user_input(source_crs).equals(target, ignore_axis_order=True):
        return geometries
    transformer = Transformer.from_crs(source_crs, target, always_xy=True)
    moved = shapely.transform(
        geometries, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))
    )
    if not np.all(np.isfinite(shapely.bounds(moved))):
        raise InputError(
            f"{source}: some polygons cannot be reprojected to the imagery's CRS ({target.name})"
        )
    return moved


# --- on a raster's grid -------------------------------------------------------------------------------


TILE = 256
TILE_CACHE_BYTES = 256 * 1024 * 1024  # for all rasters together: a 16,000² label raster's pixels


class _TileCache:
    """Label tiles rasterized once and kept, the least recently used dropped first, within one budget:
    the crops of an epoch overlap, and rasterizing a tile's polygons again costs more than copying it."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.tiles: OrderedDict = OrderedDict()
        self.size = 0

    def get(self, key, make) -> np.ndarray:
        tile = self.tiles.get(key)
        if tile is not None:
            self.tiles.move_to_end(key)
            return tile
        tile = make()
        self.tiles[key] = tile
        self.size += tile.nbytes
        while self.size > self.budget:
            self.size -= self.tiles.popitem(last=False)[1].nbytes
        return tile


_TILES = _TileCache(TILE_CACHE_BYTES)
_GRIDS = itertools.count()  # a key per GridLabels (an id() could be reused by a later one)


class GridLabels:
    """Label polygons (and AOIs) in the pixel space of one raster, indexed, in burn order; :meth:`read`
    gives a window's labels from tiles rasterized once, :meth:`rasterize` rasterizes a window."""

    def __init__(
        self,
        geometries: np.ndarray,
        classes: np.ndarray,
        rank: np.ndarray,
        aoi: np.ndarray | None,
        background: int | None,
        all_touched: bool,
        width: int,
        height: int,
        ignore_index: int | None = None,
    ) -> None:
        order = np.argsort(rank, kind="stable")
        self.geometries = geometries[order]
        self.classes = classes[order].astype(np.uint8)
        self.aoi = aoi
        self.background = background
        self.all_touched = all_touched
        self.width, self.height = width, height
        self.ignore_index = ignore_index  # a class ignored as the card says, as in label rasters
        self.tree = shapely.STRtree(self.geometries)
        self.aoi_tree = shapely.STRtree(aoi) if aoi is not None and len(aoi) else None
        self._key = next(_GRIDS)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Labels (height, width) of the window at (row, col), copied from :data:`TILE`² tiles each
        rasterized once (a pixel's label depends on its centre alone, so tiles and windows agree)."""
        if row < 0 or col < 0 or row + height > self.height or col + width > self.width:
            return self.rasterize(row, col, height, width)
        out = np.empty((height, width), dtype=np.uint8)
        for r0 in range(row // TILE * TILE, row + height, TILE):
            for c0 in range(col // TILE * TILE, col + width, TILE):
                make = functools.partial(
                    self.rasterize, r0, c0, min(TILE, self.height - r0), min(TILE, self.width - c0)
                )
                tile = _TILES.get((self._key, r0, c0), make)
                r1, c1 = min(row + height, r0 + tile.shape[0]), min(col + width, c0 + tile.shape[1])
                rs, cs = max(row, r0), max(col, c0)
                out[rs - row : r1 - row, cs - col : c1 - col] = tile[rs - r0 : r1 - r0, cs - c0 : c1 - c0]
        return out

    def rasterize(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Labels (height, width) of the window at (row, col): uint8 classes, IGNORE where unlabelled."""
        from rasterio.features import rasterize

        out = np.full((height, width), IGNORE, dtype=np.uint8)
        box = shapely.box(col, row, col + width, row + height)
        transform = Affine.translation(col, row)
        shapes = []
        if self.aoi_tree is not None:
            shapes.extend((g, self.background) for g in self.aoi[np.sort(self.aoi_tree.query(box))])
        hits = np.sort(self.tree.query(box))  # sorted positions = burn order
        shapes.extend(zip(self.geometries[hits], self.classes[hits].tolist(), strict=True))
        if not shapes:
            return out
        return rasterize(shapes, out=out, transform=transform, all_touched=self.all_touched, dtype=np.uint8)

    def regions(self, margin: float) -> list[tuple[int, int, int, int]]:
        """Pixel boxes (row0, col0, row1, col1) of the spatial units on this raster: AOIs and label polygons
        whose boxes, grown by ``margin`` pixels, touch are one unit (see :func:`spatial_units`)."""
        return [unit.box for unit in spatial_units(self, margin)]


@dataclass(frozen=True)
class SpatialUnit:
    """A cluster of AOIs and label polygons: validation holds out whole units, never pixels or windows."""

    box: tuple[int, int, int, int]  # row0, col0, row1, col1 in pixels, inside the raster
    labels: np.ndarray  # positions in GridLabels.geometries
    aois: np.ndarray  # positions in GridLabels.aoi


def spatial_units(grid: GridLabels, margin: float) -> list[SpatialUnit]:
    """Connected groups of AOIs and label polygons whose bounding boxes, grown by ``margin``, touch; in a
    fixed order (by top-left corner)."""
    items = grid.geometries if grid.aoi is None else np.concatenate([grid.geometries, grid.aoi])
    boxes = shapely.bounds(items)
    grown = shapely.box(
        boxes[:, 0] - margin, boxes[:, 1] - margin, boxes[:, 2] + margin, boxes[:, 3] + margin
    )
    left, right = shapely.STRtree(grown).query(grown, predicate="intersects")
    component = _components(len(items), left, right)
    units = []
    labels_n = len(grid.geometries)
    for c in np.unique(component):
        members = np.flatnonzero(component == c)
        b = boxes[members]
        col0, row0 = max(0, int(np.floor(b[:, 0].min()))), max(0, int(np.floor(b[:, 1].min())))
        col1 = min(grid.width, int(np.ceil(b[:, 2].max())))
        row1 = min(grid.height, int(np.ceil(b[:, 3].max())))
        if col1 <= col0 or row1 <= row0:
            continue
        units.append(
            SpatialUnit(
                (row0, col0, row1, col1), members[members < labels_n], members[members >= labels_n] - labels_n
            )
        )
    units.sort(key=lambda u: (u.box[0], u.box[1]))
    return units


def _components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of a graph of ``n`` nodes and edges (left, right): per node the smallest node
    of its component. Union-find in bulk (numpy): each edge hooks the larger of its two roots onto the
    smaller, paths are compressed, and the edges are contracted to the pairs of roots still apart, until
    none joins two roots; a dense label grid has millions of edges, which a Python loop takes minutes on."""
    label = np.arange(n)
    while True:
        a, b = label[left], label[right]
        joined = a != b
        if not joined.any():
            return label
        a, b = a[joined], b[joined]
        left, right = np.minimum(a, b), np.maximum(a, b)  # roots, left < right
        np.minimum.at(label, right, left)  # label[root] only ever decreases
        while True:  # every node straight to its root (label[x] <= x, so this ends)
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


def subset(grid: GridLabels, units: Sequence[SpatialUnit]) -> GridLabels:
    """The labels and AOIs of some units only (a training or validation side of a spatial split)."""
    labels = np.sort(np.concatenate([u.labels for u in units])) if units else np.empty(0, np.int64)
    aois = np.sort(np.concatenate([u.aois for u in units])) if units else np.empty(0, np.int64)
    return GridLabels(
        grid.geometries[labels],
        grid.classes[labels],
        np.arange(labels.size),  # already in burn order
        grid.aoi[aois] if grid.aoi is not None else None,
        grid.background,
        grid.all_touched,
        grid.width,
        grid.height,
        grid.ignore_index,
    )


def on_grid(
    polygons: LabelPolygons,
    crs,
    transform: Affine,
    width: int,
    height: int,
    ignore_index: int | None = None,
) -> tuple[GridLabels | None, np.ndarray]:
    """The polygons that fall on a raster (CRS ``crs``, ``transform``, size), in its pixel space, and their
    positions in ``polygons`` (to report labels that fall on no raster); None when none falls on it."""
    if crs is None:
        raise InputError("the imagery has no CRS, so label polygons cannot be placed on it")
    key = crs.to_wkt()
    if key not in polygons._projected:
        polygons._projected.clear()  # one CRS at a time: images of a set share one mostly
        labels = reproject(polygons.geometries, polygons.crs, crs, polygons.source)
        aoi = (
            reproject(polygons.aoi, polygons.aoi_crs, crs, polygons.options.aoi or "AOI")
            if polygons.aoi is not None
            else None
        )
        polygons._projected[key] = (labels, shapely.STRtree(labels), aoi)
    labels, tree, aoi = polygons._projected[key]
    inverse = ~transform
    outline = shapely.transform(shapely.box(0, 0, width, height), lambda xy: _affine(xy, transform))
    hits = np.sort(tree.query(outline, predicate="intersects"))
    if not hits.size:
        return None, hits
    pixels = shapely.transform(labels[hits], lambda xy: _affine(xy, inverse))
    aoi_pixels = None
    if aoi is not None:
        aoi_pixels = shapely.transform(aoi, lambda xy: _affine(xy, inverse))
        aoi_pixels = aoi_pixels[shapely.intersects(aoi_pixels, shapely.box(0, 0, width, height))]
    grid = GridLabels(
        pixels,
        polygons.classes[hits],
        polygons.rank[hits],
        aoi_pixels,
        polygons.background,
        polygons.all_touched,
        width,
        height,
        ignore_index,
    )
    return grid, hits


def _affine(xy: np.ndarray, transform: Affine) -> np.ndarray:
    a, b, c, d, e, f = transform[:6]
    return np.column_stack((a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f))
