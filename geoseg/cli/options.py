"""Options and parameter types shared by several commands, defined once."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from geoseg.model.presets import PRESET_NAMES
from geoseg.raster.writing import CODECS, DEFAULT_CODEC

overwrite_option = click.option(
    "--overwrite", "-f", is_flag=True, help="Replace outputs that already exist (otherwise an error)."
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object per result on stdout (for pipelines)."
)
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress display.")
styles_option = click.option(
    "--no-styles",
    "styles",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Write no QGIS styles (by default a .qml beside class and confidence rasters and polygon files, "
    "and the style inside a GeoPackage, which QGIS applies by itself).",
)
compress_option = click.option(
    "--compress",
    type=click.Choice(CODECS, case_sensitive=False),
    default=DEFAULT_CODEC,
    show_default=True,
    help="Codec of the rasters. deflate and lzw: every TIFF reader decodes them; zstd (about 7 % smaller "
    "class maps) and lerc: not web viewers on geotiff.js, GeoServer, ArcMap or some QGIS builds.",
)
device_option = click.option(
    "--device",
    default="auto",
    show_default=True,
    help="auto, cpu, cuda, cuda:N or mps. auto picks CUDA, then MPS, then the CPU.",
)
# The library's errors name a parameter as the Python API spells it (``workers=0``, ``compile=True``); the CLI
# shows the flag that sets it. One table for every command: each parameter below has the same flag in
# every command that takes it (tests/cli/test_options.py checks this against the commands). A
# ``parameter=value`` key is a value with a flag of its own (``styles=False`` is ``--no-styles``).
PARAMETER_FLAGS = {
    "aoi": "--aoi",
    "all_touched": "--all-touched",
    "allocation": "--allocation",
    "assets": "--assets",
    "background": "--background",
    "bands": "--bands",
    "batch_size": "--batch-size",
    "calibration": "--calibration",
    "card": "--card",
    "class_field": "--class-field",
    "class_map": "--class-map",
    "compile": "--compile",
    "connectivity": "--connectivity",
    "crop": "--crop",
    "device": "--device",
    "engine": "--engine",
    "epochs": "--epochs",
    "exclude_classes": "--exclude-classes",
    "ignore_index": "--ignore-index",
    "keep_crs": "--keep-crs",
    "label_offset": "--label-offset",
    "logits": "--logits",
    "lr": "--lr",
    "max_size": "--max-size",
    "min_area": "--min-area",
    "min_pixels": "--min-pixels",
    "model": "-m",
    "output": "-o",
    "over": "--over",
    "overlap": "--overlap",
    "per_class": "-n",
    "overwrite": "--overwrite",
    "port": "--port",
    "precision": "--precision",
    "preset": "--preset",
    "priority": "--priority",
    "resume": "--resume",
    "scale": "--scale",
    "scheduler": "--scheduler",
    "seed": "--seed",
    "simplify": "--simplify",
    "split_polygons_at": "--split-polygons-at",
    "steps": "--steps",
    "styles=False": "--no-styles",
    "target": "--for",
    "tile": "--tile",
    "val_fraction": "--val-fraction",
    "val_images": "--val-images",
    "val_labels": "--val-labels",
    "vectorize": "--vectorize",
    "workers": "--workers",
}


def _cli_value(value: str) -> str:
    """A Python value as a flag takes it: a list, tuple or dict as ``a,b`` or ``k=v,...``, quotes dropped."""
    if value[:1] not in "[({" or value[-1:] not in "])}":
        return value
    items = [item for item in value[1:-1].split(",") if item.strip()]
    return ",".join("=".join(part.strip().strip("'\"") for part in item.split(":", 1)) for item in items)


def flags_for_parameters(message: str) -> str:
    """``message`` with each ``parameter=value`` of :data:`PARAMETER_FLAGS` as its flag: ``workers=0`` ->
    ``--workers 0``, ``scheduler='tcp://h:8786'`` -> ``--scheduler tcp://h:8786``, ``compile=True`` ->
    ``--compile``, ``bands=[4, 3, 2]`` -> ``--bands 4,3,2``, ``styles=False`` -> ``--no-styles``."""
    import re

    def flag(match: re.Match) -> str:
        parameter = match["parameter"]
        quoted = match["single"] if match["single"] is not None else match["double"]
        value = quoted if quoted is not None else _cli_value(match["value"])
        own = PARAMETER_FLAGS.get(f"{parameter}={value}")
        if own is not None:
            return own
        name = PARAMETER_FLAGS[parameter]
        if value == "":  # an empty value as a shell passes it
            return f'{name} ""'
        return name if value == "True" else f"{name} {value}"

    names = "|".join(dict.fromkeys(key.partition("=")[0] for key in PARAMETER_FLAGS))
    pattern = (
        rf"\b(?P<parameter>{names})=(?:'(?P<single>[^']*)'|\"(?P<double>[^\"]*)\""
        r"|(?P<value>\[[^\]]*\]|\([^)]*\)|\{[^}]*\}|[^\s,;:)\]]+))"
    )
    return re.sub(pattern, flag, message)


def _precision_option(choices: list[str], auto: str, more: str = "") -> Callable:
    return click.option(
        "--precision",
        type=click.Choice(choices),
        default="auto",
        show_default=True,
        help=f"Network precision. auto: the fastest that keeps the classes ({auto}).{more}",
    )


_TORCH_AUTO = (
    "bf16 on GPUs that support it, else fp16; bf16 on CPUs with native bf16 (AVX512-BF16, AMX), else fp32"
)
_UNDER_BF16 = (
    " MANet keeps its stem, first encoder stage and attention in float32 under bf16, which keeps the classes."
)
_ENGINE_AUTO = "on the CPU: float32 in onnxruntime, see --engine; bf16 on GPUs that support it, else fp16"
# train runs PyTorch; serve runs the engine predict would (--engine), without int8's calibration.
precision_option = _precision_option(["auto", "fp32", "bf16", "fp16"], _TORCH_AUTO, _UNDER_BF16)
serve_precision_option = _precision_option(["auto", "fp32", "bf16", "fp16"], _ENGINE_AUTO, _UNDER_BF16)
predict_precision_option = _precision_option(
    ["auto", "fp32", "bf16", "fp16", "int8"],
    _ENGINE_AUTO,
    " int8 (CPU, onnxruntime, opt-in): calibrated once per run on --calibration or on tiles spread over "
    "all the scenes, the layers whose int8 changes classes kept float32; refused where it keeps fewer than "
    "99.5 % of the calibration pixels' classes.",
)
engine_option = click.option(
    "--engine",
    type=click.Choice(["auto", "torch", "onnxruntime"]),
    default="auto",
    show_default=True,
    help="What runs the network. auto: onnxruntime on the CPU for geoseg's networks where it is installed "
    "(the export is made once per model into $XDG_CACHE_HOME/geoseg), else torch.",
)
calibration_option = click.option(
    "--calibration",
    multiple=True,
    type=click.Path(exists=True),
    help="With --precision int8: rasters (or folders of .tif) whose tiles calibrate the int8 network "
    "(default: 8 tiles spread over all the scenes of the run; the int8 network is cached per calibration "
    "set, so the same set, e.g. this option, reuses it across runs). Repeatable.",
)
compile_option = click.option(
    "--compile",
    "compile_network",
    is_flag=True,
    help="Run the network through torch.compile: a few minutes once per run, faster tiles after; "
    "pays off on big scenes only (README: break-even).",
)
preset_option = click.option(
    "--preset",
    type=click.Choice(PRESET_NAMES, case_sensitive=False),
    default=None,
    help="Dataset preset: classes, colours and bands of a published setup (normalised as the network's "
    "authors trained it).",
)
card_option = click.option(
    "--card",
    "card_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="JSON model card file: classes, colours, bands and normalisation.",
)


def _checkpoint_name(ctx, param, value: str | None) -> str | None:
    """``predict -m`` and ``info`` read a ``.onnx`` file with onnxruntime, whatever it holds: a checkpoint
    written under that name could not be read back."""
    if value is not None and Path(value).suffix.lower() == ".onnx":
        raise click.BadParameter(
            f"{value}: geoseg reads .onnx files as ONNX exports (geoseg export), not as checkpoints; "
            "name the file .safetensors",
            ctx,
            param,
        )
    return value


checkpoint_output_option = click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    callback=_checkpoint_name,
    help="Checkpoint to write (.safetensors).",
)

label_offset_option = click.option(
    "--label-offset",
    type=click.IntRange(0, 254),
    default=0,
    show_default=True,
    help="Subtract N from label values; values below N are ignored (1 for ISPRS and LoveDA index labels).",
)
ignore_index_option = click.option(
    "--ignore-index",
    type=int,  # its range is the library's check (geoseg.labels.raster.check_ignore_index)
    default=None,
    help="Label class index (after --label-offset) left out of the loss and the scores. Default: the card's.",
)


class IntListType(click.ParamType):
    """A comma-separated list of integers, such as ``--bands 4,3,2``."""

    name = "LIST"

    def convert(self, value: Any, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        try:
            items = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers (e.g. 1,2,3)", param, ctx)
        if not items:
            self.fail("the list is empty", param, ctx)
        return items


class ScaleType(click.ParamType):
    """``MIN,MAX`` (raw values mapped onto the model's 0..1 range) or ``auto`` (2-98 percentile stretch)."""

    name = "MIN,MAX|auto"

    def convert(self, value: Any, param, ctx) -> tuple[float, float] | str:
        if isinstance(value, tuple) or value == "auto":
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not MIN,MAX (e.g. 0,4000) or auto", param, ctx)
        if not hi > lo:
            self.fail(f"{value!r}: MAX must be greater than MIN", param, ctx)
        return lo, hi


# predict and train read imagery alike, so they take the same band and scaling options
bands_option = click.option(
    "--bands", type=IntListType(), default=None, help="Input bands in the model's order, e.g. 4,1,2."
)
scale_option = click.option(
    "--scale",
    type=ScaleType(),
    default=None,
    help="Value range for 16-bit or float imagery (e.g. 0,4000), or auto (2-98 percentile); in the bands' "
    "scaled units where they carry a scale/offset (e.g. 0,0.3 for reflectance stored with scale 0.0001).",
)


class NameListType(click.ParamType):
    """A comma-separated list of names (class names may contain spaces)."""

    name = "NAMES"

    def convert(self, value: Any, param, ctx) -> list[str]:
        if isinstance(value, list):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("the list is empty", param, ctx)
        return items


def emit_json(record: dict[str, Any]) -> None:
    """One strict JSON object per line on stdout: NaN and infinities (a float raster's nodata, a metric of an
    absent class) become the strings "nan", "inf" and "-inf" (``gdalinfo -json`` writes a NaN nodata as
    "nan"; Python's ``float()`` reads all three back), since strict parsers refuse a bare ``NaN``."""
    click.echo(json.dumps(_finite(record), default=str, allow_nan=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def stderr_progress(*middle_columns):
    """A started rich progress display on stderr: name, bar, done/total, ``middle_columns``, elapsed, ETA."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *middle_columns,
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    progress.start()
    return progress


def progress_reporter(
    description: str, quiet: bool
) -> tuple[Callable[[int, int], None] | None, Callable[[], None]]:
    """A ``(done, total)`` progress callback drawing a rich bar on stderr, and a function that closes it.

    Returns ``(None, noop)`` when quiet or when stderr is not a terminal, so pipelines get clean output.
    The library only ever sees the callback; rich lives here.
    """
    if quiet or not stderr_is_terminal():
        return None, lambda: None
    from rich.progress import TextColumn
    from rich.text import Text

    class _RateColumn(TextColumn):
        def __init__(self) -> None:
            super().__init__("")

        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f}/s" if speed else "-/s", style="progress.data.speed")

    progress = stderr_progress(_RateColumn(), TextColumn("{task.fields[status]}"))
    return _Reporter(progress, progress.add_task(description, total=None, status="")), progress.stop


class _Reporter:
    """The callback of :func:`progress_reporter`: ``(done, total)``, plus a status text (regions, workers,
    the current step) and :meth:`above` for lines printed while the bar is live."""

    def __init__(self, progress, task_id) -> None:
        self.progress, self.task_id = progress, task_id

    def __call__(self, done: int, total: int) -> None:
        self.progress.update(self.task_id, completed=done, total=total)

    def status(self, text: str) -> None:
        self.progress.update(self.task_id, status=text)

    @contextlib.contextmanager
    def above(self) -> Iterator[None]:
        """Stop the bar (leaving it on its own line), let the caller print, and draw it again below."""
        self.progress.stop()
        try:
            yield
        finally:
            self.progress.start()


def label_polygon_options(command: Callable) -> Callable:
    """The options of label polygons (``train --labels``, ``evaluate TRUTH``), handed to the command as one
    ``label_polygons`` value: a :class:`geoseg.labels.polygons.VectorLabelOptions`, or None without
    ``--class-field``."""
    import functools

    options = [
        click.option(
            "--class-field",
            default=None,
            help="Label polygons: the column holding each polygon's class (a class name, any case, or id).",
        ),
        click.option(
            "--class-map",
            default=None,
            help="Map other class values to classes: 'Gebouw=building,Weg=road' or a JSON file.",
        ),
        click.option(
            "--aoi",
            type=click.Path(dir_okay=False),
            default=None,
            help="Areas of interest (polygons) inside which the labels are exhaustive: pixels under no label "
            "there are --background; elsewhere unlabelled pixels are ignored.",
        ),
        click.option(
            "--background",
            default=None,
            help="The class of unlabelled pixels inside the AOIs. [a class named background]",
        ),
        click.option(
            "--all-touched",
            is_flag=True,
            help="Label every pixel a polygon touches (thin features), not only those whose centre it holds.",
        ),
        click.option(
            "--priority",
            type=NameListType(),
            default=None,
            help="Classes that win where polygons of different classes overlap, first wins. "
            "[the smaller polygon wins]",
        ),
    ]

    @functools.wraps(command)
    def wrapper(*args, class_field, class_map, aoi, background, all_touched, priority, **kwargs):
        from geoseg.labels.polygons import VectorLabelOptions, parse_class_map

        given = [
            name for name, v in (("--class-map", class_map), ("--aoi", aoi), ("--priority", priority)) if v
        ]
        given += ["--background"] * (background is not None) + ["--all-touched"] * all_touched
        if class_field is None:
            if given:
                raise click.UsageError(
                    f"{given[0]} applies to label polygons: name their class column with --class-field"
                )
            return command(*args, label_polygons=None, **kwargs)
        label_polygons = VectorLabelOptions(
            class_field=class_field,
            class_map=parse_class_map(class_map),
            aoi=aoi,
            background=background,
            all_touched=all_touched,
            priority=tuple(priority or ()),
        )
        return command(*args, label_polygons=label_polygons, **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper


# predict and serve run the network alike, so they take the same model and tiling options
model_option = click.option(
    "-m",
    "--model",
    "model_path",
    default=None,
    help="Checkpoint (.safetensors, or a foreign .ckpt/.pth with --preset/--card) or an ONNX export "
    "(geoseg export; run by onnxruntime). Default: the bundled one.",
)


def _check_batch_size(ctx, param, value: str) -> int | str:
    """A positive number of tiles per batch, or ``auto`` (on CUDA what fits, else 4)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        size = int(text)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of tiles or auto") from None
    if size < 1:
        raise click.BadParameter(f"{size}: give at least 1 tile per batch, or auto")
    return size


tile_option = click.option("--tile", type=int, default=None, help="Tile size in px. Default: the card's.")
overlap_option = click.option(
    "--overlap",
    type=click.IntRange(min=0),
    default=None,
    help="Overlap of neighbouring tiles. Default: the card's.",
)
batch_size_option = click.option(
    "--batch-size",
    default="auto",
    show_default=True,
    metavar="N|auto",
    callback=_check_batch_size,
    help="Tiles per batch, or auto: on CUDA the most that fit (halved with a warning if they do not), "
    "else 4.",
)
tta_option = click.option(
    "--tta",
    type=click.Choice(["none", "flip", "d4"]),
    default="none",
    show_default=True,
    help="Test-time augmentation: average probabilities over flips (4 passes: none, horizontal, "
    "vertical, both) or the 8 flips and rotations of d4.",
)


def check_tiling(tile: int | None, overlap: int | None) -> None:
    """A usage error when ``--overlap`` is not below ``--tile``."""
    if tile is not None and overlap is not None and overlap >= tile:
        raise click.BadParameter(f"{overlap} must be smaller than --tile {tile}", param_hint="'--overlap'")
