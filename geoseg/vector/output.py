"""Writing polygons in batches to the format the output suffix names, atomically.

GeoPackage is written directly, batch by batch, each batch inside one transaction (pyogrio's raw writer
with ``append``), as GeoPackage 1.2: nothing in it needs a later version, and GDAL up to 3.6 (the QGIS of
Debian 12 and Ubuntu 22.04) warns on every open of a 1.4 file and its validator rejects it. FlatGeobuf
cannot be appended to and GeoJSON appends by rewriting, so those and Shapefile are first staged in a hidden
GeoPackage and then streamed into the final format by GDAL (``open_arrow`` -> ``write_arrow``), which never
holds the whole layer in memory. GeoParquet is written with pyarrow (pyogrio's wheels carry no Parquet
driver), one row group per batch.

Given the classes, the writer also styles the polygons for QGIS (:mod:`geoseg.styles`): a GeoPackage gets
its default style in its ``layer_styles`` table, other formats a ``.qml`` beside the file, which
:func:`atomic_vector_output` moves into place with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from geoseg.atomic import OutputSet, check_output_path, remove_quietly, temporary_sibling
from geoseg.errors import OutputError
from geoseg.model.card import ClassInfo
from geoseg.styles import style_sidecar, write_polygons_style

DRIVERS = {
    ".gpkg": "GPKG",
    ".fgb": "FlatGeobuf",
    ".geojson": "GeoJSON",
    ".parquet": "Parquet",
    ".shp": "ESRI Shapefile",
}
SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg")
SHAPEFILE_STALE = (".qix", ".sbn", ".sbx", ".qmd")
FIELDS = ("class_id", "class_name", "area")
GEOPACKAGE_OPTIONS = {"VERSION": "1.2"}  # GDAL <= 3.6 (Debian 12, Ubuntu 22.04's QGIS) warns on 1.4


def creation_options(driver: str) -> dict[str, str] | None:
    """The dataset creation options every vector file geoseg creates with ``driver`` gets: GeoPackage 1.2,
    the lowest version its content needs."""
    return GEOPACKAGE_OPTIONS if driver == "GPKG" else None


def output_driver(path: str | os.PathLike) -> str:
    """The OGR driver (or "Parquet") that the suffix of ``path`` names; an OutputError for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in DRIVERS:
        known = ", ".join(DRIVERS)
        raise OutputError(f"{path}: unknown output format {suffix or '(no suffix)'!r}; use one of {known}")
    if DRIVERS[suffix] == "Parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise OutputError(
                f"{path}: writing GeoParquet needs pyarrow (pip install pyarrow); or write .gpkg or .fgb"
            ) from None
    return DRIVERS[suffix]


def check_vector_output(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    styled: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> Path | None:
    """Refuse, before any work, the vector file ``path`` (with a shapefile's side-cars and, with ``styled``,
    its QGIS style) when it cannot be written; the style's path (None when there is none). ``inputs``: as
    for :func:`atomic_vector_output`."""
    final = Path(path)
    if final.suffix.lower() == ".shp" and not overwrite:
        for ext in SHAPEFILE_SIDECARS:  # a .dbf alone may be someone's table: replaced only when asked
            if final.with_suffix(ext).exists():
                raise OutputError(
                    f"{final.with_suffix(ext)}: output exists; pass overwrite=True to replace it"
                )
    check_output_path(final, overwrite, inputs)
    style = style_sidecar(final) if styled else None
    if style is not None:
        for source in inputs:
            if os.path.abspath(style_sidecar(source) or "") == os.path.abspath(style):
                raise OutputError(
                    f"{final}: its QGIS style {style} would replace the style of {source}; give the output "
                    "another name, or pass styles=False"
                )
        check_output_path(style, overwrite)
    return style


@contextlib.contextmanager
def atomic_vector_output(
    path: str | os.PathLike,
    overwrite: bool,
    *,
    styled: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
) -> Iterator[Path]:
    """Yield a temporary name for the vector file ``path``; once the block ends, rename it into place with
    the side-car files its writer left beside it (a shapefile's, and with ``styled`` the QGIS style of
    :func:`~geoseg.styles.style_sidecar`), all together; on failure remove them all. ``inputs``: rasters
    whose own style the polygons' must not replace (``classes.tif`` -> ``classes.fgb``: both ``classes.qml``).
    """
    final = Path(path)
    shapefile = final.suffix.lower() == ".shp"
    style = check_vector_output(final, overwrite, styled=styled, inputs=inputs)
    sidecars = [final.with_suffix(ext) for ext in SHAPEFILE_SIDECARS] if shapefile else []
    stale = [final.with_suffix(ext) for ext in SHAPEFILE_STALE] if shapefile else []
    with OutputSet() as unit:
        # an old .prj would give the new polygons (written without a CRS) its CRS: obsolete unless rewritten
        tmp = unit.stage("output", final, obsolete=[*sidecars, *stale])
        yield tmp
        for sidecar in sidecars:
            if tmp.with_suffix(sidecar.suffix).exists():
                unit.stage(sidecar.suffix, sidecar, tmp.with_suffix(sidecar.suffix))
        if style is not None:
            unit.stage("style", style, style_sidecar(tmp))


@contextlib.contextmanager
def _no_crs_warning() -> Iterator[None]:
    """Silence pyogrio's warning about a missing CRS: vectorize has already said so, in its own words."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        yield


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A file that cannot be created or written (read-only or full file system) is one line naming the
    output, not GDAL's or Arrow's message about a hidden temporary file."""
    import sqlite3

    from pyogrio.errors import DataSourceError

    try:
        yield
    except (OSError, DataSourceError, sqlite3.Error) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OutputError(f"{path}: cannot write it in {path.parent} ({reason})") from None


class FeatureWriter:
    """Appends batches of (WKB polygon, class id, class name, area) to one layer; ``finish`` completes it
    and, given ``classes``, styles it (see the module's docstring)."""

    def __init__(
        self,
        path: Path,
        driver: str,
        *,
        layer: str,
        crs_wkt: str | None,
        projjson: dict | None,
        geometry_type: str,
        wide_ids: bool,
        rfc7946: bool = False,
        final: Path | None = None,
        classes: Sequence[ClassInfo] | None = None,
    ) -> None:
        self.path = path
        self.final = final or path  # the name errors give (``path`` may be a temporary sibling of it)
        self.driver = driver
        self.layer = layer
        self.crs_wkt = crs_wkt
        self.projjson = projjson
        self.geometry_type = geometry_type
        self.id_dtype = np.int64 if wide_ids else np.int32
        self.rfc7946 = rfc7946
        self.classes = classes
        self.started = False
        self._parquet = None
        staged = driver not in ("GPKG", "Parquet")
        self.target = temporary_sibling(path.with_suffix(".gpkg")) if staged else path

    def write(
        self, wkb: np.ndarray, class_ids: np.ndarray, class_names: np.ndarray, areas: np.ndarray
    ) -> None:
        columns = [class_ids.astype(self.id_dtype), class_names.astype(object), areas.astype(np.float64)]
        if self.driver == "Parquet":
            with _writing(self.final):
                self._write_parquet(wkb, columns)
        else:
            from pyogrio import raw

            with _no_crs_warning(), _writing(self.final):
                raw.write(
                    str(self.target),
                    wkb,
                    columns,
                    list(FIELDS),
                    layer=self.layer,
                    driver="GPKG",
                    geometry_type=self.geometry_type,
                    crs=self.crs_wkt,
                    append=self.started,
                    dataset_options=None if self.started else creation_options("GPKG"),
                )
        self.started = True

    def _write_parquet(self, wkb: np.ndarray, columns: list[np.ndarray]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            geo = {
                "version": "1.1.0",
                "primary_column": "geometry",
                "columns": {
                    "geometry": {
                        "encoding": "WKB",
                        "geometry_types": [self.geometry_type],
                        "crs": self.projjson,
                    }
                },
            }
            id_type = pa.int64() if self.id_dtype == np.int64 else pa.int32()
            schema = pa.schema(
                [
                    (FIELDS[0], id_type),
                    (FIELDS[1], pa.string()),
                    (FIELDS[2], pa.float64()),
                    ("geometry", pa.binary()),
                ],
                metadata={b"geo": json.dumps(geo).encode()},
            )
            self._parquet = pq.ParquetWriter(str(self.target), schema)
        table = pa.Table.from_arrays(
            [
                pa.array(columns[0]),
                pa.array(columns[1], pa.string()),
                pa.array(columns[2]),
                pa.array(wkb, pa.binary()),
            ],
            schema=self._parquet.schema,
        )
        self._parquet.write_table(table)

    def finish(self) -> None:
        """Close the layer (staged formats: stream the staging GeoPackage into the final file), style it."""
        if not self.started:
            self.write(np.empty(0, object), np.empty(0, np.int64), np.empty(0, object), np.empty(0))
        if self._parquet is not None:
            with _writing(self.final):
                self._parquet.close()
            self._parquet = None
        if self.target != self.path:
            self._convert()
        if self.classes is not None:
            with _writing(self.final):
                write_polygons_style(self.path, self.layer, self.classes)

    def _convert(self) -> None:
        """Stream the staging GeoPackage into the final format, then remove it."""
        from pyogrio import raw

        options = {"RFC7946": "YES"} if self.rfc7946 else None
        with (
            raw.open_arrow(str(self.target), layer=self.layer) as (meta, stream),
            _no_crs_warning(),
            _writing(self.final),
        ):
            raw.write_arrow(
                stream,
                str(self.path),
                layer=self.layer,
                driver=self.driver,
                geometry_name=meta["geometry_name"] or "wkb_geometry",
                geometry_type=self.geometry_type,
                crs=meta["crs"],
                layer_options=options,
            )
        self.discard()

    def discard(self) -> None:
        """Remove what this writer left besides its final path (the staging file, an open Parquet writer)."""
        if self._parquet is not None:
            with contextlib.suppress(Exception):
                self._parquet.close()
            self._parquet = None
        if self.target != self.path:
            remove_quietly(self.target)
            for extra in ("-journal", "-wal", "-shm"):
                remove_quietly(self.target.with_name(self.target.name + extra))
