"""A scene's outputs are one unit: all its files appear together, complete, or none of them does.

The set (:class:`geoseg.atomic.OutputSet`) is tested on its own first, then through ``predict`` with the
per-pixel PixelNet (fast, any card): a failure after the class raster leaves nothing of the scene, a resumed
run keeps its regions until the set is in place, stale side-cars go, folders geoseg made and left empty go,
and an output nobody can create is refused before any tile is computed. Real signals: tests/test_signals.py.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import rasterio
from helpers import CARD, PixelNet, write_scene
from rasterio.transform import from_origin

import geoseg.atomic as atomic
from geoseg.atomic import OutputSet, check_output_path
from geoseg.cli.main import Terminated, stop_signals_raise
from geoseg.errors import ConfigurationError, OutputError
from geoseg.inference.batch import iter_predict, predict
from geoseg.inference.outputs import prepare_outputs

GRID = dict(crs="EPSG:32631", transform=from_origin(5e5, 6e6, 1, 1))
GEOREF = dict(crs="EPSG:32631", transform=from_origin(500000, 6000000, 1, 1))


class CountingNet(PixelNet):
    """PixelNet that counts its forward passes: "no tile computed" is then a number."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.fixture
def scenes(tmp_path) -> list[Path]:
    folder = tmp_path / "scenes"
    folder.mkdir()
    for seed, name in enumerate(("a.tif", "b.tif")):
        write_scene(folder / name, 64, 48, seed=seed, **GEOREF)
    return [folder / "a.tif", folder / "b.tif"]


def _names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))  # hidden files included


def _run(inputs, output, **options):
    return predict(inputs, output, model=options.pop("model", PixelNet()), card=CARD, device="cpu", **options)


# --- the set on its own -------------------------------------------------------------------------------------


def test_a_set_appears_only_when_its_block_ends_and_all_at_once(tmp_path):
    with OutputSet() as unit:
        first = unit.stage("first", tmp_path / "a.tif")
        second = unit.stage("second", tmp_path / "b.png")
        first.write_text("A")
        second.write_text("B")
        (tmp_path / (first.name + ".aux.xml")).write_text("side-car")
        unit.stage("first.aux.xml", tmp_path / "a.tif.aux.xml", tmp_path / (first.name + ".aux.xml"))
        assert _names(tmp_path) == sorted([first.name, first.name + ".aux.xml", second.name])
        assert first.name == f".a.tif.{unit.token}.tmp.tif" and second.name == f".b.png.{unit.token}.tmp.png"
    assert _names(tmp_path) == ["a.tif", "a.tif.aux.xml", "b.png"]
    assert unit.files() == {
        "first": str(tmp_path / "a.tif"),
        "second": str(tmp_path / "b.png"),
        "first.aux.xml": str(tmp_path / "a.tif.aux.xml"),
    }


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt(), Terminated(signal.SIGTERM)])
def test_a_failure_inside_the_block_leaves_no_file_of_the_set(tmp_path, failure):
    (tmp_path / "a.shp").write_text("an earlier result")
    with pytest.raises(type(failure)), OutputSet() as unit:
        unit.stage("classes", tmp_path / "a.tif").write_text("complete")
        shp = unit.stage("polygons", tmp_path / "a.shp")
        shp.write_text("half")
        shp.with_suffix(".dbf").write_text("written by GDAL, not staged yet")
        raise failure
    assert _names(tmp_path) == ["a.shp"] and (tmp_path / "a.shp").read_text() == "an earlier result"


def test_a_file_that_was_never_written_stops_the_commit_before_any_rename(tmp_path):
    with pytest.raises(OutputError, match=r"b\.png: nothing was written"), OutputSet() as unit:
        unit.stage("classes", tmp_path / "a.tif").write_text("A")
        unit.stage("quicklook", tmp_path / "b.png")
    assert _names(tmp_path) == []


def test_a_rename_that_fails_half_way_takes_back_the_files_already_placed(tmp_path, monkeypatch):
    replace = os.replace

    def failing(src, dst):
        if Path(dst).name == "b.png":
            raise OSError(28, "No space left on device")
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", failing)
    message = r"b\.png: cannot rename it into place \(No space left on device\); the outputs written with it"
    with pytest.raises(OutputError, match=message), OutputSet() as unit:
        unit.stage("classes", tmp_path / "a.tif").write_text("A")
        unit.stage("quicklook", tmp_path / "b.png").write_text("B")
    assert _names(tmp_path) == []


@pytest.mark.parametrize("signum, stop", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_during_the_renames_waits_for_the_whole_set(tmp_path, monkeypatch, signum, stop):
    """The signal lands after the first rename: the set is completed, then the signal is delivered."""
    replace = os.replace
    seen = []

    def signalled(src, dst):
        if not seen:
            os.kill(os.getpid(), signum)
        seen.append(Path(dst).name)
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", signalled)
    with stop_signals_raise(), pytest.raises(stop), OutputSet() as unit:
        for name in ("a.tif", "b.tif", "c.png"):
            unit.stage(name, tmp_path / name).write_text(name)
    assert seen == ["a.tif", "b.tif", "c.png"] and _names(tmp_path) == ["a.tif", "b.tif", "c.png"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers given back


def test_a_committed_set_removes_stale_statistics_of_the_files_it_replaces(tmp_path):
    (tmp_path / "a.tif").write_text("old")
    (tmp_path / "a.tif.aux.xml").write_text("statistics of the old a.tif")
    with OutputSet() as unit:
        unit.stage("confidence", tmp_path / "a.tif").write_text("new")
    assert _names(tmp_path) == ["a.tif"]


def test_an_output_folder_nobody_can_create_files_in_is_refused_for_root_too():
    """``/proc`` is writable to root by its mode bits (os.access says yes), yet takes no new files; the
    folder is there, so the reason never reads "No such file or directory" (what the kernel answers root)."""
    with pytest.raises(OutputError, match=r"^/proc/p\.gpkg: folder /proc is not writable \(") as refused:
        check_output_path("/proc/p.gpkg", overwrite=False)
    assert "No such file" not in str(refused.value)


def test_a_folder_that_takes_no_new_files_is_worded_alike_for_a_file_and_a_new_output_folder(
    tmp_path, monkeypatch
):
    """One wording (geoseg.atomic.folder_problem) for an output file's folder and a new output folder's
    parent: there but refusing new names (ENOENT, as /proc answers root) is unwritable, not missing."""
    import errno

    from geoseg.inference.outputs import prepare_outputs

    real_open = os.open

    def refuse(path, flags, *args):
        if flags & os.O_CREAT:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    reason = "is not writable (its file system takes no new files)"
    with pytest.raises(OutputError) as refused:
        check_output_path(tmp_path / "p.gpkg", overwrite=False)
    assert str(refused.value) == f"{tmp_path / 'p.gpkg'}: folder {tmp_path} {reason}"
    with pytest.raises(OutputError) as refused:
        prepare_outputs([str(tmp_path / "scene.tif")], f"{tmp_path / 'out'}/")
    assert str(refused.value) == f"{tmp_path / 'out'}: cannot create the output folder, {tmp_path} {reason}"
    with pytest.raises(OutputError) as refused:
        prepare_outputs([str(tmp_path / "scene.tif")], f"{tmp_path / 'gone' / 'out'}/")
    assert str(refused.value) == (
        f"{tmp_path / 'gone' / 'out'}: cannot create the output folder, {tmp_path / 'gone'} does not exist"
    )


# --- predict: one scene, one unit ---------------------------------------------------------------------------


def test_json_outputs_list_every_file_the_scene_wrote(scenes, tmp_path):
    out = tmp_path / "out"
    (result,) = _run([scenes[0]], f"{out}/", confidence=True, quicklook=True, vectorize="shp")
    assert result.outputs == {
        "classes": str(out / "a.classes.tif"),
        "classes.aux.xml": str(out / "a.classes.tif.aux.xml"),
        "confidence": str(out / "a.confidence.tif"),
        "polygons": str(out / "a.polygons.shp"),
        "polygons.shx": str(out / "a.polygons.shx"),
        "polygons.dbf": str(out / "a.polygons.dbf"),
        "polygons.prj": str(out / "a.polygons.prj"),
        "polygons.cpg": str(out / "a.polygons.cpg"),
        "quicklook": str(out / "a.quicklook.png"),
        "classes.qml": str(out / "a.classes.qml"),  # the QGIS styles (geoseg.styles)
        "confidence.qml": str(out / "a.confidence.qml"),
        "polygons.qml": str(out / "a.polygons.qml"),
    }
    assert _names(out) == sorted(Path(p).name for p in result.outputs.values())
    # drawn and vectorized from the staged class raster, yet named after the final one
    with rasterio.open(out / "a.quicklook.png") as png:
        assert png.tags()["Title"] == "a.classes.tif quick-look"
    import pyogrio

    assert pyogrio.read_info(out / "a.polygons.shp")["layer_name"] == "a.polygons"


def test_a_failure_after_the_class_raster_leaves_nothing_of_that_scene(scenes, tmp_path, monkeypatch):
    import geoseg.plots.quicklook as quicklook

    draw = quicklook.quicklook

    def failing(classes, output, **options):
        if Path(classes).name == "b.classes.tif":
            assert Path(options["read_from"]).is_file()  # the class raster was complete
            raise OutputError(f"{output}: the disk is full")
        return draw(classes, output, **options)

    monkeypatch.setattr(quicklook, "quicklook", failing)
    out = tmp_path / "out"
    results = _run(scenes, out, confidence=True, quicklook=True, vectorize="gpkg", keep_going=True)
    assert [r.error is None for r in results] == [True, False]
    assert results[1].error.endswith(": the disk is full")
    assert _names(out) == [  # nothing of b, its styles neither (a GeoPackage holds its own)
        "a.classes.qml",
        "a.classes.tif",
        "a.classes.tif.aux.xml",
        "a.confidence.qml",
        "a.confidence.tif",
        "a.polygons.gpkg",
        "a.quicklook.png",
    ]
    monkeypatch.setattr(quicklook, "quicklook", draw)
    again = _run(scenes, out, confidence=True, quicklook=True, vectorize="gpkg", skip_existing=True)
    assert [r.status for r in again] == ["skipped", None]


@pytest.mark.slow  # worker processes importing torch
def test_on_dask_a_scene_failing_after_its_class_raster_leaves_nothing_and_order_holds(
    scenes, tmp_path, monkeypatch
):
    """Scenes run at once in threads of this process (their regions on the workers): same unit per scene."""
    import geoseg.plots.quicklook as quicklook

    draw = quicklook.quicklook

    def failing(classes, output, **options):
        if Path(classes).name == "a.classes.tif":
            raise OutputError(f"{output}: the disk is full")
        return draw(classes, output, **options)

    monkeypatch.setattr(quicklook, "quicklook", failing)
    out = tmp_path / "out"
    results = _run(scenes, out, quicklook=True, vectorize="gpkg", keep_going=True, workers=2)
    assert [(r.input, r.error is None) for r in results] == [(str(scenes[0]), False), (str(scenes[1]), True)]
    assert _names(out) == [
        "b.classes.qml",
        "b.classes.tif",
        "b.classes.tif.aux.xml",
        "b.polygons.gpkg",
        "b.quicklook.png",
    ]


def test_a_resumed_scene_keeps_its_regions_until_all_its_files_are_in_place(scenes, tmp_path, monkeypatch):
    import geoseg.plots.quicklook as quicklook

    draw = quicklook.quicklook
    monkeypatch.setattr(quicklook, "quicklook", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    out = tmp_path / "classes.tif"
    model = CountingNet()  # the same network both times (the resume manifest checks its digest)
    with pytest.raises(KeyboardInterrupt):
        _run([scenes[0]], out, quicklook=True, resume=True, model=model)
    assert _names(tmp_path) == [".classes.tif.geoseg-work", "scenes"] and model.calls > 0
    monkeypatch.setattr(quicklook, "quicklook", draw)
    model.calls = 0
    (result,) = _run([scenes[0]], out, quicklook=True, resume=True, model=model)
    assert (model.calls, result.tiles) == (0, 0)  # every region came from the interrupted run
    assert _names(tmp_path) == [
        "classes.qml",
        "classes.quicklook.png",
        "classes.tif",
        "classes.tif.aux.xml",
        "scenes",
    ]


def test_overwriting_a_shapefile_removes_its_stale_index(scenes, tmp_path):
    out = tmp_path / "classes.tif"
    _run([scenes[0]], out, vectorize=tmp_path / "p.shp")
    (tmp_path / "p.qix").write_text("a spatial index of the old polygons")
    (tmp_path / "classes.tif.aux.xml").write_text("replaced")
    _run([scenes[0]], out, vectorize=tmp_path / "p.shp", overwrite=True)
    assert "p.qix" not in _names(tmp_path)
    assert "class 0" in (tmp_path / "classes.tif.aux.xml").read_text()


# --- before any work ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["under_a_file", "/proc/p.gpkg"])
def test_an_unwritable_vectorize_target_is_refused_before_any_tile(scenes, tmp_path, target):
    (tmp_path / "a_file").write_text("x")
    vectorize = tmp_path / "a_file" / "p.gpkg" if target == "under_a_file" else Path(target)
    model = CountingNet()
    for output in (tmp_path / "out" / "classes.tif", f"{tmp_path / 'new'}/"):
        if isinstance(output, Path):
            output.parent.mkdir(exist_ok=True)
        problem = "is a file, not a folder" if target == "under_a_file" else "is not writable"
        with pytest.raises(OutputError, match=f"^{vectorize}: folder {vectorize.parent} {problem}"):
            _run([scenes[0]], output, vectorize=vectorize, model=model)
    assert model.calls == 0
    assert _names(tmp_path) == ["a_file", "out", "scenes"] and _names(tmp_path / "out") == []


def test_a_folder_geoseg_made_goes_again_when_the_run_stops_before_anything_is_in_it(scenes, tmp_path):
    class Interrupted(PixelNet):
        def forward(self, x):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(scenes, tmp_path / "new", model=Interrupted())
    assert _names(tmp_path) == ["scenes"]
    (tmp_path / "mine").mkdir()  # the user's own folder stays, empty or not
    with pytest.raises(KeyboardInterrupt):
        _run(scenes, tmp_path / "mine", model=Interrupted())
    assert _names(tmp_path) == ["mine", "scenes"]


def test_a_folder_geoseg_made_stays_with_the_scenes_finished_before_a_stop(scenes, tmp_path):
    runs = iter_predict(scenes, tmp_path / "new", model=PixelNet(), card=CARD, device="cpu")
    first = next(runs)
    runs.close()  # the consumer stops (as the CLI on Ctrl-C) after one scene
    assert first.error is None
    assert _names(tmp_path / "new") == ["a.classes.qml", "a.classes.tif", "a.classes.tif.aux.xml"]


def test_a_skipped_scene_reports_the_size_of_its_class_raster(scenes, tmp_path):
    out = tmp_path / "out"
    _run(scenes, out)
    records = [r.to_dict() for r in _run(scenes, out, skip_existing=True)]
    assert [(r["status"], r["width"], r["height"]) for r in records] == [("skipped", 64, 48)] * 2
    assert records[0]["outputs"] == {
        "classes": str(out / "a.classes.tif"),
        "classes.aux.xml": str(out / "a.classes.tif.aux.xml"),
        "classes.qml": str(out / "a.classes.qml"),
    }


# --- styles and codecs --------------------------------------------------------------------------------------


def test_no_styles_writes_no_style_file_and_a_geopackage_without_one(scenes, tmp_path):
    import sqlite3

    out = tmp_path / "out"
    (result,) = _run([scenes[0]], f"{out}/", confidence=True, vectorize="gpkg", styles=False)
    assert _names(out) == ["a.classes.tif", "a.classes.tif.aux.xml", "a.confidence.tif", "a.polygons.gpkg"]
    assert sorted(result.outputs) == ["classes", "classes.aux.xml", "confidence", "polygons"]
    with sqlite3.connect(out / "a.polygons.gpkg") as db:
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'layer_styles'").fetchall()


def test_a_scene_finished_without_styles_by_an_older_geoseg_is_still_skipped(scenes, tmp_path):
    out = tmp_path / "out"
    _run(scenes, out, confidence=True, styles=False)
    records = _run(scenes, out, confidence=True, skip_existing=True)
    assert [r.status for r in records] == ["skipped", "skipped"]
    assert "classes.qml" not in records[0].outputs  # listed only where it exists


def test_a_style_file_in_the_way_is_refused_before_any_tile(scenes, tmp_path):
    (tmp_path / "classes.confidence.qml").write_text("mine")
    model = CountingNet()
    with pytest.raises(OutputError, match="classes.confidence.qml: output exists; pass overwrite=True"):
        _run([scenes[0]], tmp_path / "classes.tif", confidence=True, model=model)
    assert model.calls == 0


def test_two_outputs_of_a_scene_with_one_style_name_are_refused_before_any_tile(scenes, tmp_path):
    from geoseg.errors import ConfigurationError

    model = CountingNet()
    with pytest.raises(ConfigurationError) as caught:
        _run([scenes[0]], tmp_path / "x.tif", vectorize=tmp_path / "x.fgb", model=model)
    assert str(caught.value) == (
        f"{scenes[0]}: two of its outputs would write {tmp_path / 'x.qml'} (a QGIS style is named after its "
        "file without the suffix); give them different names, or pass styles=False"
    )
    assert model.calls == 0
    _run([scenes[0]], tmp_path / "x.tif", vectorize=tmp_path / "x.fgb", model=model, styles=False)


@pytest.mark.parametrize("codec", ["deflate", "lzw", "zstd", "lerc", "none"])
def test_every_codec_writes_rasters_that_read_back_the_same_classes(scenes, tmp_path, codec):
    from geoseg.raster.writing import available_codecs

    if codec not in available_codecs():
        pytest.skip(f"this GDAL build cannot write {codec}")
    _run([scenes[0]], tmp_path / "reference.tif", confidence=True, probabilities=True)
    _run([scenes[0]], tmp_path / "c.tif", confidence=True, probabilities=True, compress=codec)
    for name in ("c.tif", "c.confidence.tif", "c.probabilities.tif"):
        with rasterio.open(tmp_path / name) as out, rasterio.open(tmp_path / f"reference{name[1:]}") as ref:
            assert out.compression is None if codec == "none" else out.compression.name.lower() == codec
            predictor = out.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR")
            continuous = name != "c.tif" and codec in ("deflate", "lzw", "zstd")
            assert predictor == ("2" if continuous else None)  # never on class ids
            assert (out.crs, out.transform) == (ref.crs, ref.transform)
            assert (out.read(masked=True) == ref.read(masked=True)).all()
            assert (out.read_masks() == ref.read_masks()).all()


def test_the_default_codec_is_deflate_without_predictor_on_classes(scenes, tmp_path):
    _run([scenes[0]], tmp_path / "c.tif", confidence=True)
    with rasterio.open(tmp_path / "c.tif") as classes, rasterio.open(tmp_path / "c.confidence.tif") as conf:
        assert classes.compression.name == conf.compression.name == "deflate"
        assert "PREDICTOR" not in classes.tags(ns="IMAGE_STRUCTURE")
        assert conf.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "2"


def test_a_codec_this_gdal_lacks_is_refused_before_any_tile(scenes, tmp_path, monkeypatch):
    from geoseg.errors import ConfigurationError

    monkeypatch.setattr("geoseg.raster.writing.available_codecs", lambda: ("deflate", "lzw", "none"))
    model = CountingNet()
    with pytest.raises(
        ConfigurationError, match=r"^compression 'zstd': this GDAL build cannot write it; use "
    ):
        _run([scenes[0]], tmp_path / "c.tif", compress="zstd", model=model)
    assert model.calls == 0 and _names(tmp_path) == ["scenes"]


def test_an_output_of_one_scene_that_is_another_input_is_refused(tmp_path):
    """``predict a.tif out/a.classes.tif -o out/ -f``: scene a's class raster is the second input, which was
    replaced by it before it was read (and then failed with 'IndexError: tuple index out of range')."""
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "out" / "a.classes.tif"
    write_scene(victim, 64, 64, seed=1, **GRID)
    with pytest.raises(ConfigurationError, match=f"^{victim}: the output {victim} would replace this input"):
        prepare_outputs([tmp_path / "a.tif", victim], tmp_path / "out", overwrite=True)


def test_an_output_hard_linked_to_its_input_is_refused(tmp_path):
    """Another name of the input's file (a hard link) is the input all the same."""
    write_scene(tmp_path / "scene.tif", 64, 64, **GRID)
    os.link(tmp_path / "scene.tif", tmp_path / "classes.tif")
    with pytest.raises(ConfigurationError, match="would replace this input"):
        prepare_outputs([tmp_path / "scene.tif"], tmp_path / "classes.tif", overwrite=True)


@pytest.mark.parametrize("output", ["", " "])
def test_an_empty_output_is_refused_not_taken_for_the_current_folder(tmp_path, output, monkeypatch):
    """``-o "$OUT"`` with OUT unset wrote <stem>.classes.tif into the current folder."""
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="^output='': give the class raster .tif"):
        prepare_outputs([tmp_path / "a.tif"], output)
