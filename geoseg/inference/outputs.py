"""Where a scene's results go: output names from inputs and ``-o``, checked before any work starts.

An existing output without ``overwrite`` fails at once, not after an hour of inference on the first scene;
so do unwritable folders, two inputs writing one file and an output that would replace an input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

from geoseg.atomic import check_output_path, folder_problem
from geoseg.errors import ConfigurationError, OutputError
from geoseg.raster.reading import is_gdal_path
from geoseg.styles import style_sidecar

RASTER_SUFFIXES = (".tif", ".tiff")
SUFFIXES = {"classes": ".classes.tif", "confidence": ".confidence.tif", "probabilities": ".probabilities.tif"}


@dataclass
class OutputPaths:
    """Where one scene's results go; optional outputs are None when not asked for."""

    classes: Path
    confidence: Path | None = None
    probabilities: Path | None = None
    polygons: Path | None = None
    quicklook: Path | None = None  # a PNG drawn from the finished class raster (geoseg.plots)
    styles: bool = True  # QGIS styles for the class and confidence rasters and the polygons (geoseg.styles)

    def rasters(self) -> list[tuple[str, Path]]:
        kinds = (
            ("classes", self.classes),
            ("confidence", self.confidence),
            ("probabilities", self.probabilities),
        )
        return [(kind, path) for kind, path in kinds if path is not None]

    def items(self) -> list[tuple[str, Path]]:
        extras = (("polygons", self.polygons), ("quicklook", self.quicklook))
        return self.rasters() + [(kind, path) for kind, path in extras if path is not None]

    @property
    def class_names(self) -> Path:
        """The class raster's GDAL side-car holding the class names (QGIS reads them only from there)."""
        return self.classes.with_name(self.classes.name + ".aux.xml")

    def results(self) -> list[tuple[str, Path]]:
        """The files whose presence says the scene is finished: :meth:`items` and the class names side-car
        (a Shapefile's side-cars come on top, as GDAL writes them)."""
        first, *others = self.items()
        return [first, ("classes.aux.xml", self.class_names), *others]

    def style_files(self) -> list[tuple[str, Path]]:
        """The ``.qml`` files QGIS applies by itself to the class and confidence rasters and the polygons (a
        GeoPackage holds its style inside); none without :attr:`styles`. Not in :meth:`results`: a scene
        an older geoseg finished without them is still finished."""
        if not self.styles:
            return []
        styled = (("classes", self.classes), ("confidence", self.confidence), ("polygons", self.polygons))
        found = [(f"{kind}.qml", style_sidecar(path)) for kind, path in styled if path is not None]
        return [(kind, path) for kind, path in found if path is not None]

    def files(self) -> list[tuple[str, Path]]:
        """Every file the scene is made of (one unit: all are written, or none)."""
        return self.results() + self.style_files()


def prepare_outputs(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    *,
    confidence: bool = False,
    probabilities: bool = False,
    vectorize: str | os.PathLike | None = None,
    quicklook: bool = False,
    styles: bool = True,
    overwrite: bool = False,
    skip_existing: bool = False,
) -> list[OutputPaths]:
    """Output names per input, checked before any work.

    One input writes ``output`` itself (``<stem>.confidence.tif`` etc. beside it); several inputs, or an
    existing folder as ``output``, write ``<stem>.classes.tif`` etc. into that folder (created by
    :func:`iter_predict` once the work starts). An existing output without ``overwrite``, an unwritable
    folder, two inputs with the same stem or an output that would replace its input fail here.
    ``vectorize`` is a vector file for one input, or a format (``gpkg``, ``fgb``, ``geojson``, ``parquet``,
    ``shp``) giving ``<stem>.polygons.<format>`` beside the class rasters. ``quicklook`` adds
    ``<stem>.quicklook.png`` beside each class raster; ``styles`` the QGIS styles (see
    :meth:`OutputPaths.style_files`). With ``skip_existing`` a scene whose outputs all
    exist is left for :func:`iter_predict` to skip instead of failing the check; a scene with only some of
    its files (an interrupted older run) fails it, naming those that exist and those missing.
    """
    inputs = [str(i) for i in inputs]
    output_text = str(output)
    if not output_text.strip():  # -o "$OUT" with OUT unset: Path("") is the current folder
        raise ConfigurationError(
            "output='': give the class raster .tif for one input, or a folder (. for the current one)"
        )
    output = Path(output)
    into_folder = len(inputs) > 1 or output.is_dir() or output_text.endswith(("/", os.sep))
    if into_folder and output.exists() and not output.is_dir():
        why = "with several inputs" if len(inputs) > 1 else "ending in /"
        raise OutputError(f"output={output_text!r}: {why}, give a folder (it is a file)")
    if not into_folder and output.suffix and output.suffix.lower() not in RASTER_SUFFIXES:
        raise ConfigurationError(
            f"{output}: predict writes cloud-optimized GeoTIFF; name the output .tif or .tiff"
        )
    vector_format = _vector_format(vectorize)
    if vectorize is not None and vector_format is None:
        if len(inputs) > 1:
            raise ConfigurationError(
                f"vectorize={str(vectorize)!r}: with several inputs give a format "
                "(gpkg, fgb, geojson, parquet or shp); each scene gets <stem>.polygons.<format>"
            )
        from geoseg.vector.output import output_driver

        output_driver(vectorize)  # an unknown suffix fails now, not after the inference
    plans = []
    for source in inputs:
        if into_folder:
            folder, base = output, PurePath(source).stem
            classes = folder / f"{base}{SUFFIXES['classes']}"
        else:
            folder, base, classes = output.parent, output.stem if output.suffix else output.name, output
        plans.append(
            OutputPaths(
                classes,
                folder / f"{base}{SUFFIXES['confidence']}" if confidence else None,
                folder / f"{base}{SUFFIXES['probabilities']}" if probabilities else None,
                _vector_path(vectorize, vector_format, folder, base),
                folder / f"{base}.quicklook.png" if quicklook else None,
                styles,
            )
        )

    seen: dict[Path, str] = {}
    input_files = _file_identities(inputs)
    for source, paths in zip(inputs, plans, strict=True):
        for _, path in paths.files():
            if seen.get(path) == source:  # -o x.tif --vectorize x.fgb: both styles would be x.qml
                raise ConfigurationError(
                    f"{source}: two of its outputs would write {path} (a QGIS style is named after its file "
                    "without the suffix); give them different names, or pass styles=False"
                )
            if path in seen:
                raise ConfigurationError(
                    f"{seen[path]} and {source} would both write {path}; rename one or run them separately"
                )
            seen[path] = source
            victim = input_files.get(_file_identity(path))
            if victim is not None:  # this scene's input, or another's (read after this scene replaced it)
                raise ConfigurationError(
                    f"{victim}: the output {path} would replace this input; write the outputs elsewhere"
                )

    new_folder = into_folder and not output.exists()
    if new_folder:
        problem = folder_problem(output.parent)
        if problem is not None:
            raise OutputError(f"{output}: cannot create the output folder, {output.parent} {problem}")
    writable_folders: set[Path] = set()
    for source, paths in zip(inputs, plans, strict=True):
        if skip_existing and outputs_exist(paths):
            continue
        _refuse_partial(source, paths, overwrite)
        for _, path in paths.files():
            if not (new_folder and path.parent == output):  # a new folder holds nothing yet (made later)
                check_output_path(path, overwrite, writable_folders=writable_folders)
    return plans


def _file_identity(path: str | os.PathLike) -> tuple[int, int] | None:
    """The file's (device, inode): the same for every name of one file (a symbolic or hard link, a relative
    path); None when it does not exist."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_dev, stat.st_ino


def _file_identities(inputs: Sequence[str]) -> dict[tuple[int, int], str]:
    """Local input files by identity (one stat each, however many scenes write how many outputs). A scene
    given twice (the same name, or another name of the same file) is refused here, before its outputs are
    named: both would write the same files."""
    found: dict[tuple[int, int], str] = {}
    given: dict[object, str] = {}
    for source in inputs:
        identity = None if is_gdal_path(source) else _file_identity(source)
        key = source if identity is None else identity
        if key in given:
            same = "" if given[key] == source else f" (as {given[key]})"
            raise ConfigurationError(f"{source}: given twice{same}; give each scene once")
        given[key] = source
        if identity is not None:
            found[identity] = source
    return found


def outputs_exist(paths: OutputPaths) -> bool:
    """Whether a scene is finished: all its files exist (they are renamed into place together, complete)."""
    return all(path.exists() for _, path in paths.results())


def _refuse_partial(source: str, paths: OutputPaths, overwrite: bool) -> None:
    """Some files of a scene without the others (an older geoseg stopped between them, or a hand-made set)
    are not a result: say which exist and which are missing, rather than "output exists" for the first.
    One file alone (often not geoseg's at all) gets the plain "output exists" of :func:`check_output_path`."""
    exist = [str(path) for _, path in paths.results() if path.exists()]
    exist += [str(path) for path in shapefile_sidecars(paths.polygons) if path.exists()]
    missing = [str(path) for _, path in paths.results() if not path.exists()]
    if len(exist) > 1 and missing and not overwrite:
        raise OutputError(
            f"{source}: an incomplete set of outputs, {', '.join(exist)} exist but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing (an interrupted earlier run?); "
            "pass overwrite=True to compute the scene again"
        )


def shapefile_sidecars(polygons: Path | None) -> list[Path]:
    """The files GDAL writes (or may have written) beside a ``.shp``: part of the scene, or stale."""
    from geoseg.vector.output import SHAPEFILE_SIDECARS, SHAPEFILE_STALE

    if polygons is None or polygons.suffix.lower() != ".shp":
        return []
    return [polygons.with_suffix(ext) for ext in (*SHAPEFILE_SIDECARS, *SHAPEFILE_STALE)]


def _vector_format(vectorize: str | os.PathLike | None) -> str | None:
    """The suffix when ``vectorize`` is a bare format name such as ``gpkg`` or ``.fgb``, else None."""
    if vectorize is None:
        return None
    from geoseg.vector.output import DRIVERS

    text = str(vectorize).lower()
    suffix = text if text.startswith(".") else f".{text}"
    return suffix if suffix in DRIVERS else None


def _vector_path(vectorize, vector_format: str | None, folder: Path, base: str) -> Path | None:
    if vectorize is None:
        return None
    if vector_format is not None:
        return folder / f"{base}.polygons{vector_format}"
    return Path(vectorize)
