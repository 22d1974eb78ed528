"""``geoseg predict`` on the command line: outputs, JSON, exit codes, one-line errors, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.model.presets import preset_card

GRID = dict(crs="EPSG:32631", transform=from_origin(5e5, 6e6, 1, 1))


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


RESULT_KEYS = {
    "input",
    "outputs",
    "width",
    "height",
    "tiles",
    "seconds",
    "device",
    "precision",
    "engine",
    "class_fractions",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


@pytest.fixture
def colorado(shared_data):
    return shared_data / "variants" / "colorado_hro_0p15m.tif"


def _invoke(*args):
    return CliRunner().invoke(cli, ["predict", *map(str, args)])


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# --- success --------------------------------------------------------------------------------------------


def test_one_scene_writes_an_aligned_class_raster_and_says_so(checkpoint, colorado, tmp_path):
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", checkpoint)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{colorado} -> {tmp_path / 'classes.tif'} (383x232 px, 40 tiles, ")
    with rasterio.open(colorado) as src, rasterio.open(tmp_path / "classes.tif") as out:
        assert (out.crs, out.transform, out.width, out.height) == (
            src.crs,
            src.transform,
            src.width,
            src.height,
        )
        assert set(np.unique(out.read(1))) <= set(range(7))
    assert _files(tmp_path) == ["classes.qml", "classes.tif", "classes.tif.aux.xml"]


@pytest.mark.parametrize(("native_bf16", "precision"), [(True, "bf16"), (False, "fp32")])
def test_json_names_the_precision_auto_chose_for_the_cpu(
    checkpoint, colorado, tmp_path, pretend_cpu, native_bf16, precision
):
    pretend_cpu(avx512=native_bf16, native_bf16=native_bf16)
    args = ["-o", tmp_path / "classes.tif", "-m", checkpoint, "--json", "--engine", "torch"]
    result = _invoke(colorado, *args)
    assert result.exit_code == 0, result.output
    assert (json.loads(result.stdout)["engine"], json.loads(result.stdout)["precision"]) == (
        "torch",
        precision,
    )


def test_json_prints_one_object_per_scene(checkpoint, shared_data, tmp_path):
    sources = [
        shared_data / "variants" / "colorado_hro_0p15m.tif",
        shared_data / "variants" / "colorado_hro_0p15m_alpha.tif",
    ]
    result = _invoke(
        *sources,
        "-o",
        tmp_path / "out",
        "-m",
        checkpoint,
        "--json",
        "--confidence",
        "--tile",
        "96",
        "--overlap",
        "32",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(s) for s in sources]
    # "tiles" counts computed tiles: one of the alpha scene's 24 has no valid pixel and is skipped
    for record, tiles in zip(records, (24, 23), strict=True):
        assert set(record) == RESULT_KEYS
        assert (record["width"], record["height"], record["tiles"], record["device"]) == (
            383,
            232,
            tiles,
            "cpu",
        )
        # --engine auto on a CPU: a geoseg network runs its float32 export in onnxruntime
        assert (record["precision"], record["engine"]) == ("fp32", "onnxruntime")
        assert sum(record["class_fractions"].values()) == pytest.approx(1.0)
        assert list(record["class_fractions"]) == preset_card("loveda").class_names
    assert records[1]["outputs"] == {
        "classes": str(tmp_path / "out" / "colorado_hro_0p15m_alpha.classes.tif"),
        "classes.aux.xml": str(tmp_path / "out" / "colorado_hro_0p15m_alpha.classes.tif.aux.xml"),
        "confidence": str(tmp_path / "out" / "colorado_hro_0p15m_alpha.confidence.tif"),
        "classes.qml": str(tmp_path / "out" / "colorado_hro_0p15m_alpha.classes.qml"),
        "confidence.qml": str(tmp_path / "out" / "colorado_hro_0p15m_alpha.confidence.qml"),
    }
    # class fractions count valid pixels only: the alpha scene's 10044 masked pixels are not in them
    with rasterio.open(records[1]["outputs"]["classes"]) as out:
        classes = out.read(1)
    assert (classes == 255).sum() == 10044
    share = (classes == 2).sum() / (classes != 255).sum()
    assert records[1]["class_fractions"]["road"] == pytest.approx(share)


def test_quiet_prints_nothing(checkpoint, colorado, tmp_path):
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", checkpoint, "--quiet")
    assert result.exit_code == 0 and result.output == ""


def test_band_choice_and_scale_options_reach_the_model(checkpoint, shared_data, tmp_path):
    naip = shared_data / "variants" / "naip_rgbn_5m_nodata0.tif"
    landsat = shared_data / "variants" / "landsat_rgb_uint16_60m.tif"
    result = _invoke(naip, "-o", tmp_path / "naip.tif", "-m", checkpoint, "--bands", "1,2,3", "--tile", "128")
    assert result.exit_code == 0, result.output
    result = _invoke(
        landsat, "-o", tmp_path / "landsat.tif", "-m", checkpoint, "--scale", "auto", "--tile", "128"
    )
    assert result.exit_code == 0, result.output


def test_overwrite_replaces_an_existing_output(checkpoint, colorado, tmp_path):
    (tmp_path / "classes.tif").write_text("old")
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", checkpoint, "--overwrite", "-q")
    assert result.exit_code == 0
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.width == 383


def test_vectorize_writes_polygons_of_the_class_raster(checkpoint, colorado, tmp_path):
    result = _invoke(
        colorado,
        "-o",
        tmp_path / "classes.tif",
        "-m",
        checkpoint,
        "--vectorize",
        tmp_path / "map.gpkg",
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["outputs"]["polygons"] == str(tmp_path / "map.gpkg")
    import pyogrio
    from scipy import ndimage

    info = pyogrio.read_info(tmp_path / "map.gpkg", layer="map")
    assert list(info["fields"]) == ["class_id", "class_name", "area"]
    with rasterio.open(tmp_path / "classes.tif") as out:
        classes = out.read(1)
    regions = sum(ndimage.label(classes == c)[1] for c in np.unique(classes) if c != 255)
    assert info["features"] == regions > 0


# --- failing well ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make_input, extra, message",
    [
        (lambda d, tmp: tmp / "absent.tif", [], "absent.tif: file not found"),
        (lambda d, tmp: _text_file(tmp / "notes.tif"), [], "notes.tif: not a raster GDAL can read"),
        (
            lambda d, tmp: d / "variants" / "naip_rgbn_5m_nodata0.tif",
            [],
            "has 4 data band(s) but the model expects 3 (red,green,blue); choose them with --bands 1,2,3",
        ),
        (
            lambda d, tmp: d / "variants" / "landsat_rgb_uint16_60m.tif",
            [],
            "uint16 data but the model expects 8-bit values 0..255; pass --scale MIN,MAX",
        ),
        (
            lambda d, tmp: d / "variants" / "colorado_hro_0p15m.tif",
            ["--overlap", "64"],
            "--overlap 64: give 0 or more, less than the tile (64 px)",
        ),
        (
            lambda d, tmp: d / "variants" / "colorado_hro_0p15m.tif",
            ["--tile", "100"],
            "--tile 100: give a positive multiple of 32 (MANet's input multiple), e.g. 96 or 128",
        ),
        (
            lambda d, tmp: d / "variants" / "colorado_hro_0p15m.tif",
            ["--device", "tpu"],
            "unknown device 'tpu'",
        ),
        (
            lambda d, tmp: d / "variants" / "colorado_hro_0p15m.tif",
            ["--bands", "1,2,9"],
            "--bands 1,2,9: 9 out of range; the raster has bands 1..3",
        ),
    ],
)
def test_bad_inputs_fail_with_one_line_and_leave_nothing(
    checkpoint, shared_data, tmp_path, make_input, extra, message
):
    source = make_input(shared_data, tmp_path)
    (tmp_path / "out").mkdir()
    result = _invoke(source, "-o", tmp_path / "out" / "classes.tif", "-m", checkpoint, *extra)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert _files(tmp_path / "out") == []


def _text_file(path):
    path.write_text("not an image")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--tile", "64", "--overlap", "64"],
            "Invalid value for '--overlap': 64 must be smaller than --tile 64",
        ),
        (["--overlap", "-5"], "Invalid value for '--overlap'"),
        (["--scale", "high"], "Invalid value for '--scale': 'high' is not MIN,MAX"),
        (["--scale", "5,1"], "MAX must be greater than MIN"),
        (["--bands", "r,g,b"], "Invalid value for '--bands'"),
        (["--tta", "all"], "Invalid value for '--tta'"),
        (["--preset", "loveda", "--card", "card.json"], "give either --preset or --card, not both"),
    ],
)
def test_usage_errors_exit_2(checkpoint, colorado, tmp_path, extra, message):
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", checkpoint, *extra)
    assert result.exit_code == 2
    assert message in result.stderr
    assert _files(tmp_path) == []


def test_missing_output_is_a_usage_error(colorado):
    result = _invoke(colorado)
    assert result.exit_code == 2 and "Missing option '-o' / '--output'" in result.stderr


def test_an_existing_output_fails_before_any_work(checkpoint, colorado, tmp_path):
    (tmp_path / "classes.tif").write_text("keep")
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", checkpoint)
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: {tmp_path / 'classes.tif'}: output exists; pass --overwrite to replace it\n"
    )
    assert (tmp_path / "classes.tif").read_text() == "keep"


def test_an_output_folder_that_does_not_exist_is_an_error(checkpoint, colorado, tmp_path):
    result = _invoke(colorado, "-o", tmp_path / "nowhere" / "classes.tif", "-m", checkpoint)
    assert result.exit_code == 1
    assert (
        f"Error: {tmp_path / 'nowhere' / 'classes.tif'}: folder {tmp_path / 'nowhere'} does not exist"
        in result.stderr
    )


def test_an_output_under_a_file_names_the_file_not_a_missing_folder(checkpoint, colorado, tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    result = _invoke(colorado, "-o", f"{tmp_path / 'notes.txt' / 'out'}/", "-m", checkpoint)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {tmp_path / 'notes.txt' / 'out'}: cannot create the output folder, "
        f"{tmp_path / 'notes.txt'} is a file, not a folder\n"
    )
    result = _invoke(colorado, "-o", f"{tmp_path / 'notes.txt'}/", "-m", checkpoint)
    assert result.exit_code == 1
    assert (
        result.stderr == f"Error: -o {tmp_path / 'notes.txt'}/: ending in /, give a folder (it is a file)\n"
    )
    assert _files(tmp_path) == ["notes.txt"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write into read-only folders")
def test_an_unwritable_output_folder_is_an_error(checkpoint, colorado, tmp_path):
    (tmp_path / "locked").mkdir(mode=0o500)
    result = _invoke(colorado, "-o", tmp_path / "locked" / "classes.tif", "-m", checkpoint)
    assert result.exit_code == 1 and "is not writable" in result.stderr


def test_a_missing_checkpoint_is_an_error(colorado, tmp_path):
    result = _invoke(colorado, "-o", tmp_path / "classes.tif", "-m", tmp_path / "model.safetensors")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "model.safetensors" in result.stderr
    assert _files(tmp_path) == []


def test_without_a_bundled_model_the_error_asks_for_m(monkeypatch, colorado, tmp_path):
    import geoseg.model.checkpoint

    monkeypatch.setattr(geoseg.model.checkpoint, "MODELS_DIR", tmp_path / "models")
    result = _invoke(colorado, "-o", tmp_path / "classes.tif")
    assert result.exit_code == 1
    assert "no bundled model" in result.stderr and "pass -m MODEL.safetensors" in result.stderr


def test_keep_going_finishes_the_good_scenes_and_exits_1(checkpoint, colorado, tmp_path):
    _text_file(tmp_path / "broken.tif")
    result = _invoke(
        tmp_path / "broken.tif", colorado, "-o", tmp_path / "out", "-m", checkpoint, "--keep-going", "-q"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'broken.tif'}: not a raster GDAL can read")
    assert len(result.stderr.strip().splitlines()) == 1
    assert _files(tmp_path / "out") == [
        "colorado_hro_0p15m.classes.qml",
        "colorado_hro_0p15m.classes.tif",
        "colorado_hro_0p15m.classes.tif.aux.xml",
    ]


def test_without_keep_going_a_bad_scene_stops_before_any_work(checkpoint, colorado, tmp_path):
    _text_file(tmp_path / "broken.tif")
    result = _invoke(colorado, tmp_path / "broken.tif", "-o", tmp_path / "out", "-m", checkpoint)
    assert result.exit_code == 1 and "broken.tif: not a raster GDAL can read" in result.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_exits_130_and_leaves_no_partial_or_temporary_file(
    monkeypatch, checkpoint, shared_data, tmp_path
):
    import geoseg.inference.stream as engine

    real = engine._probabilities
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_probabilities", interrupted)
    (tmp_path / "out").mkdir()
    source = shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif"
    result = _invoke(
        source, "-o", tmp_path / "out" / "classes.tif", "-m", checkpoint, "--confidence", "--probabilities"
    )
    assert result.exit_code == 130
    assert "geoseg: interrupted" in result.stderr
    assert _files(tmp_path / "out") == []


def test_vectorize_with_several_inputs_takes_a_format(checkpoint, shared_data, tmp_path):
    sources = [
        shared_data / "variants" / "colorado_hro_0p15m.tif",
        shared_data / "variants" / "colorado_hro_0p15m_alpha.tif",
    ]
    result = _invoke(
        *sources, "-o", tmp_path / "out", "-m", checkpoint, "--vectorize", "fgb", "-q", "--tile", "128"
    )
    assert result.exit_code == 0, result.output
    assert [n for n in _files(tmp_path / "out") if n.endswith(".fgb")] == [
        "colorado_hro_0p15m.polygons.fgb",
        "colorado_hro_0p15m_alpha.polygons.fgb",
    ]
    result = _invoke(
        *sources, "-o", tmp_path / "again", "-m", checkpoint, "--vectorize", tmp_path / "map.gpkg"
    )
    assert result.exit_code == 1
    assert "with several inputs give a format (gpkg, fgb, geojson, parquet or shp)" in result.stderr
    assert not (tmp_path / "again").exists()
    result = _invoke(
        sources[0], "-o", tmp_path / "one.tif", "-m", checkpoint, "--vectorize", tmp_path / "map.txt"
    )
    assert result.exit_code == 1 and "unknown output format '.txt'" in result.stderr
    assert not (tmp_path / "one.tif").exists()


@pytest.mark.slow
def test_probabilities_of_a_four_band_scene_print_no_gdal_error(checkpoint, tmp_path):
    """GDAL's C-level messages bypass Python: run the real command and read its stderr file descriptor. The
    fault (a libtiff 'ExtraSamples' error from threaded part compression, on an RGB TIFF with an extra band)
    came in two of three runs."""
    import subprocess
    import sys

    scene = tmp_path / "rgba.tif"
    write_scene(
        scene,
        width=200,
        height=150,
        count=4,
        photometric="RGB",
        crs="EPSG:32631",
        transform=from_origin(5e5, 6e6, 1, 1),
    )
    command = "from geoseg.cli.main import cli; cli()"
    out = tmp_path / "out.tif"
    arguments = ["predict", str(scene), "-o", str(out), "-m", str(checkpoint), "--probabilities", "--quiet"]
    for _ in range(3):  # the fault was a race between GDAL's compression threads
        run = subprocess.run(
            [sys.executable, "-c", command, *arguments, "--overwrite"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""
    with rasterio.open(scene) as source, rasterio.open(tmp_path / "out.probabilities.tif") as probabilities:
        assert probabilities.count == 7
        assert (probabilities.crs, probabilities.transform, probabilities.shape) == (
            source.crs,
            source.transform,
            source.shape,
        )


def test_compress_and_no_styles_reach_the_outputs(checkpoint, colorado, tmp_path):
    result = _invoke(colorado, "-o", tmp_path / "c.tif", "-m", checkpoint, "--compress", "LZW", "--no-styles")
    assert result.exit_code == 0, result.output
    assert _files(tmp_path) == ["c.tif", "c.tif.aux.xml"]
    with rasterio.open(tmp_path / "c.tif") as out:
        assert out.compression.name == "lzw"


def test_a_codec_this_gdal_lacks_is_one_line_naming_those_it_has(colorado, tmp_path, monkeypatch):
    monkeypatch.setattr("geoseg.raster.writing.available_codecs", lambda: ("deflate", "lzw", "none"))
    result = _invoke(colorado, "-o", tmp_path / "c.tif", "--compress", "zstd")
    assert (result.exit_code, result.output) == (
        1,
        "Error: compression 'zstd': this GDAL build cannot write it; use one of deflate, lzw, none\n",
    )
    assert _files(tmp_path) == []
    result = _invoke(colorado, "-o", tmp_path / "c.tif", "--compress", "jpeg")
    assert (
        result.exit_code == 2
        and "'jpeg' is not one of 'deflate', 'lzw', 'zstd', 'lerc', 'none'" in result.output
    )


def test_cli_leaves_an_input_named_like_another_scene_output_untouched(checkpoint, tmp_path):
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "out" / "a.classes.tif"
    write_scene(victim, 64, 64, seed=1, **GRID)
    before = _digest(victim)
    args = ["predict", str(tmp_path / "a.tif"), str(victim), "-o", str(tmp_path / "out"), "-f"]
    result = CliRunner().invoke(cli, [*args, "-m", str(checkpoint)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {victim}: the output {victim} would")
    assert _digest(victim) == before
    assert sorted(os.listdir(tmp_path / "out")) == ["a.classes.tif"]
