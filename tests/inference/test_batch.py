"""The predict API on real and synthetic rasters: georeferencing, masks, output layout, names, failures."""

from __future__ import annotations

import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import PixelNet, write_geotiff, write_scene
from rasterio.crs import CRS
from rasterio.enums import MaskFlags

from geoseg.errors import ConfigurationError, GeosegWarning, InputError, OutputError
from geoseg.inference.batch import predict
from geoseg.inference.options import PredictOptions
from geoseg.model.card import ClassInfo, ModelCard
from geoseg.raster.classes import read_class_names


def _card(bands=("red", "green", "blue"), tile=64, overlap=16) -> ModelCard:
    classes = [
        ClassInfo(name, color)
        for name, color in zip(
            ["impervious", "building", "low vegetation", "tree", "car", "clutter"],
            [(255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0)],
            strict=True,
        )
    ]
    return ModelCard(classes=classes, bands=list(bands), backbone="resnet18", tile_size=tile, overlap=overlap)


CARD = _card()
MODEL = PixelNet(seed=2)


def _run(inputs, output, **options):
    options.setdefault("model", MODEL)
    options.setdefault("card", CARD)
    return predict(inputs if isinstance(inputs, list) else [inputs], output, **options)


def _synthetic(path, width=150, height=100, **options):
    write_scene(path, width, height, **options)
    return path


# --- georeferencing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, options",
    [
        ("aerial/netherlands_0p25m_epsg28992.tif", {}),  # JPEG/YCbCr tiled
        ("variants/colorado_hro_0p15m.tif", {}),  # striped, odd size
        ("variants/naip_rgbn_5m_nodata0.tif", {"bands": [1, 2, 3]}),  # RGBN with an overview
        ("variants/landsat_rgb_uint16_60m.tif", {"scale": "auto"}),  # 16-bit
        ("labeled/potsdam/top_potsdam_2_10_RGB_0_0_512_512.tif", {}),
    ],
)
def test_output_has_the_inputs_crs_transform_and_size_exactly(shared_data, tmp_path, name, options):
    source = shared_data / name
    [result] = _run(source, tmp_path / "classes.tif", **options)
    with rasterio.open(source) as src, rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs == src.crs and out.crs.to_wkt() == src.crs.to_wkt()
        assert out.transform == src.transform
        assert (out.width, out.height) == (src.width, src.height)
        assert out.dtypes == ("uint8",) and out.nodata == 255
    assert (result.width, result.height) == (out.width, out.height)


def test_a_rotated_transform_is_copied_exactly(tmp_path):
    rotated = Affine.translation(500000, 5800000) @ Affine.rotation(17.5) @ Affine.scale(0.3, -0.3)
    _synthetic(tmp_path / "rotated.tif", crs="EPSG:32633", transform=rotated)
    _run(tmp_path / "rotated.tif", tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.transform == rotated


def test_a_custom_wkt_crs_without_epsg_code_is_copied_exactly(tmp_path):
    custom = CRS.from_wkt(
        'PROJCS["Custom TM",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
        'PARAMETER["latitude_of_origin",47.25],PARAMETER["central_meridian",8.123],PARAMETER["scale_factor",1],'
        'PARAMETER["false_easting",12345],PARAMETER["false_northing",0],UNIT["metre",1]]'
    )
    _synthetic(tmp_path / "custom.tif", crs=custom, transform=Affine(0.1, 0, 100, 0, -0.1, 200))
    _run(tmp_path / "custom.tif", tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "custom.tif") as src, rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs.to_epsg() is None
        assert out.crs.to_wkt() == src.crs.to_wkt()
        assert out.transform == src.transform


def test_a_geographic_crs_is_kept(tmp_path):
    transform = Affine(1e-5, 0, 8.5, 0, -1e-5, 47.4)
    _synthetic(tmp_path / "wgs84.tif", crs="EPSG:4326", transform=transform)
    _run(tmp_path / "wgs84.tif", tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs == CRS.from_epsg(4326) and out.transform == transform


def test_a_raster_without_crs_warns_and_writes_none(tmp_path):
    transform = Affine(0.5, 0, 10, 0, -0.5, 20)
    _synthetic(tmp_path / "nocrs.tif", transform=transform)
    with pytest.warns(GeosegWarning, match=r"nocrs\.tif: has no CRS; the output will have none"):
        _run(tmp_path / "nocrs.tif", tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs is None and out.transform == transform


def test_a_png_without_georeferencing_warns(shared_data, tmp_path):
    source = shared_data / "labeled" / "potsdam" / "image_2_10_0_0_512_512.png"
    with pytest.warns(GeosegWarning, match="has no CRS and no georeferencing"):
        _run(source, tmp_path / "classes.tif")
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert (out.width, out.height) == (512, 512)


def test_gdal_virtual_paths_work_as_inputs(shared_data, tmp_path):
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as archive:
        archive.write(shared_data / "variants" / "colorado_hro_0p15m.tif", "colorado.tif")
    (tmp_path / "out").mkdir()
    [result] = _run(f"/vsizip/{tmp_path}/scenes.zip/colorado.tif", tmp_path / "out")  # an existing folder
    assert result.outputs["classes"] == str(tmp_path / "out" / "colorado.classes.tif")
    with rasterio.open(tmp_path / "out" / "colorado.classes.tif") as out:
        assert (out.width, out.height) == (383, 232)


# --- valid data ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, invalid_pixels",
    [("colorado_hro_0p15m_nodata0.tif", 2364), ("colorado_hro_0p15m_alpha.tif", 10044)],
)
def test_nodata_is_255_exactly_where_the_input_is_invalid(shared_data, tmp_path, name, invalid_pixels):
    source = shared_data / "variants" / name
    [result] = _run(source, tmp_path / "classes.tif")
    with rasterio.open(source) as src, rasterio.open(tmp_path / "classes.tif") as out:
        invalid = src.dataset_mask() == 0
        classes = out.read(1)
    assert invalid.sum() == invalid_pixels
    assert np.array_equal(classes == 255, invalid)
    counts = np.bincount(classes[~invalid], minlength=6)
    assert result.class_fractions == pytest.approx(
        {name: counts[i] / (~invalid).sum() for i, name in enumerate(CARD.class_names)}
    )


def test_invalid_pixels_are_nodata_in_classes_and_masked_in_confidence_and_probabilities(tmp_path):
    path = _synthetic(
        tmp_path / "masked.tif", width=90, height=70, crs="EPSG:32633", transform=Affine.identity()
    )
    mask = np.full((70, 90), 255, np.uint8)
    mask[10:30, 20:80] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as d:
        d.write_mask(mask)
    _run(path, tmp_path / "classes.tif", confidence=True, probabilities=True)
    invalid = mask == 0
    with rasterio.open(tmp_path / "classes.tif") as c:
        assert c.nodata == 255 and np.array_equal(c.read(1) == 255, invalid)
    for name, bands in (("confidence", 1), ("probabilities", 6)):
        with rasterio.open(tmp_path / f"classes.{name}.tif") as out:
            # no nodata value: every 0..255 is data, validity is the internal per-dataset mask
            assert out.nodata is None and out.mask_flag_enums == ([MaskFlags.per_dataset],) * bands
            assert np.array_equal(out.dataset_mask() == 0, invalid)
            values = out.read(masked=True)
            assert np.array_equal(values.mask, np.broadcast_to(invalid, values.shape))
            assert (values.data[:, invalid] == 0).all()
    with rasterio.open(tmp_path / "classes.probabilities.tif") as probs:
        values = probs.read(masked=True)
    genuine_zero = (values.data == 0) & ~invalid
    assert genuine_zero.sum() > 100  # probabilities that round to 0 ...
    assert not values.mask[genuine_zero].any()  # ... read as valid data


# --- output layout ---------------------------------------------------------------------------------------


def test_class_raster_is_a_cog_with_colours_names_and_mode_overviews(shared_data, tmp_path):
    out_path = tmp_path / "classes.tif"
    _run(shared_data / "aerial" / "brazil_oam_0p10m_epsg3395.tif", out_path, batch_size=16)
    with rasterio.open(out_path) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.compression.name.lower() in ("zstd", "deflate")
        assert out.block_shapes == [(512, 512)]
        assert out.overviews(1) == [2, 4]
        assert read_class_names(out) == CARD.class_names
        assert out.colormap(1)[1] == (0, 0, 255, 255) and out.colormap(1)[255] == (0, 0, 0, 0)
        full = set(np.unique(out.read(1)).tolist())
        overview = set(np.unique(out.read(1, out_shape=(512, 512))).tolist())
    assert overview <= full  # mode resampling never invents a class
    aux = (tmp_path / "classes.tif.aux.xml").read_text()
    assert "<Category>low vegetation</Category>" in aux


def test_outputs_of_several_inputs_have_predictable_names(shared_data, tmp_path):
    sources = [
        shared_data / "variants" / "colorado_hro_0p15m.tif",
        shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif",
    ]
    results = _run(sources, tmp_path / "out", confidence=True, probabilities=True)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        f"{stem}.{kind}"
        for stem in ("colorado_hro_0p15m", "netherlands_0p25m_epsg28992")
        for kind in (
            "classes.tif",
            "classes.tif.aux.xml",
            "confidence.tif",
            "probabilities.tif",
            "classes.qml",
            "confidence.qml",
        )
    )
    assert [r.outputs["classes"] for r in results] == [
        str(tmp_path / "out" / "colorado_hro_0p15m.classes.tif"),
        str(tmp_path / "out" / "netherlands_0p25m_epsg28992.classes.tif"),
    ]
    assert json.loads(json.dumps(results[0].to_dict()))["tiles"] == results[0].tiles == 40


def test_one_input_puts_optional_outputs_beside_the_output(shared_data, tmp_path):
    [result] = _run(
        shared_data / "variants" / "colorado_hro_0p15m.tif", tmp_path / "map.tif", confidence=True
    )
    assert result.outputs == {
        "classes": str(tmp_path / "map.tif"),
        "classes.aux.xml": str(tmp_path / "map.tif.aux.xml"),
        "confidence": str(tmp_path / "map.confidence.tif"),
        "classes.qml": str(tmp_path / "map.qml"),
        "confidence.qml": str(tmp_path / "map.confidence.qml"),
    }


def test_one_path_not_in_a_list_is_one_scene(tmp_path):
    """Before: ``predict("scene.tif", "out.tif")`` took the string as a list of one-letter scenes."""
    _synthetic(tmp_path / "scene.tif")
    for given in (str(tmp_path / "scene.tif"), tmp_path / "scene.tif"):
        [result] = predict(given, tmp_path / "c.tif", model=MODEL, card=CARD, overwrite=True)
        assert (result.input, result.outputs["classes"]) == (
            str(tmp_path / "scene.tif"),
            str(tmp_path / "c.tif"),
        )


def test_one_calibration_path_not_in_a_list_is_one_raster():
    with pytest.raises(ConfigurationError, match=r"^calibration='cal\.tif' is for precision='int8' only"):
        PredictOptions(calibration="cal.tif")
    assert PredictOptions(calibration=Path("cal"), precision="int8").calibration == ["cal"]


# --- failing well ----------------------------------------------------------------------------------------


def test_existing_outputs_fail_before_any_work(shared_data, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "netherlands_0p25m_epsg28992.classes.tif").write_text("keep me")
    sources = [
        shared_data / "variants" / "colorado_hro_0p15m.tif",
        shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif",
    ]
    with pytest.raises(
        OutputError, match=r"netherlands_0p25m_epsg28992\.classes\.tif: output exists; pass overwrite=True"
    ):
        _run(sources, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["netherlands_0p25m_epsg28992.classes.tif"]


def test_an_output_named_as_another_format_is_refused_before_any_work(tmp_path):
    _synthetic(tmp_path / "scene.tif", crs="EPSG:32633", transform=Affine(0.5, 0, 0, 0, -0.5, 0))
    for name in ("classes.png", "classes.jpg"):  # a GeoTIFF under such a name misleads every other tool
        with pytest.raises(ConfigurationError, match=rf"{name}: predict writes cloud-optimized GeoTIFF; "):
            _run(tmp_path / "scene.tif", tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
    _run(tmp_path / "scene.tif", tmp_path / "classes.TIFF")
    assert (tmp_path / "classes.TIFF").exists()


def test_two_inputs_with_the_same_name_are_refused(shared_data, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        _synthetic(tmp_path / folder / "scene.tif")
    with pytest.raises(ConfigurationError, match=r"would both write .*scene\.classes\.tif"):
        _run([tmp_path / "a" / "scene.tif", tmp_path / "b" / "scene.tif"], tmp_path / "out")


def test_a_scene_given_twice_is_refused_as_such(tmp_path):
    """Before: "two of its outputs would write ... (a QGIS style is named ...) pass styles=False", which
    cannot help; a link is the same scene under another name."""
    _synthetic(tmp_path / "scene.tif")
    (tmp_path / "link.tif").symlink_to(tmp_path / "scene.tif")
    scene = str(tmp_path / "scene.tif")
    with pytest.raises(ConfigurationError, match=r"scene\.tif: given twice; give each scene once$"):
        _run([scene, scene], tmp_path / "out")
    with pytest.raises(ConfigurationError, match=r"link\.tif: given twice \(as .*scene\.tif\); give each"):
        _run([scene, str(tmp_path / "link.tif")], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_keep_going_reports_a_failing_scene_and_finishes_the_others(shared_data, tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    sources = [tmp_path / "broken.tif", shared_data / "variants" / "colorado_hro_0p15m.tif"]
    results = _run(sources, tmp_path / "out", keep_going=True)
    assert results[0].error.startswith(f"{tmp_path / 'broken.tif'}: not a raster GDAL can read")
    assert results[1].error is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "colorado_hro_0p15m.classes.qml",
        "colorado_hro_0p15m.classes.tif",
        "colorado_hro_0p15m.classes.tif.aux.xml",
    ]
    with pytest.raises(InputError, match="not a raster GDAL can read"):
        _run(sources, tmp_path / "again")


def test_ctrl_c_mid_run_leaves_nothing_behind_and_stops_the_threads(shared_data, tmp_path):
    threads_before = threading.active_count()
    calls = []

    def interrupt(done, total):
        calls.append(done)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(
            shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif",
            tmp_path / "classes.tif",
            confidence=True,
            probabilities=True,
            batch_size=2,
            chunk_size=512,
            progress=interrupt,
        )
    assert list(tmp_path.iterdir()) == []
    assert threading.active_count() == threads_before
    assert calls == [2, 4, 6]


def test_progress_counts_tiles_over_all_scenes(shared_data, tmp_path):
    seen = []
    sources = [
        shared_data / "variants" / "colorado_hro_0p15m.tif",
        shared_data / "variants" / "colorado_hro_0p15m_alpha.tif",
    ]
    results = _run(
        sources, tmp_path / "out", batch_size=16, progress=lambda done, total: seen.append((done, total))
    )
    # the alpha scene's one tile without a valid pixel is skipped, yet counted as done with the next batch
    assert seen == [(16, 80), (32, 80), (40, 80), (57, 80), (73, 80), (80, 80)]
    assert [r.tiles for r in results] == [40, 39]


def test_float_imagery_needs_a_scale_and_uses_it(tmp_path):
    data = np.random.default_rng(1).random((3, 80, 120), dtype=np.float32)
    profile = dict(crs="EPSG:32633", transform=Affine(1, 0, 0, 0, -1, 0))
    for name, values in (("unit.tif", data), ("bytes.tif", data * 255)):
        write_geotiff(tmp_path / name, values, dtype="float32", **profile)
    with pytest.raises(InputError, match="float32 data but the model expects 8-bit values"):
        _run(tmp_path / "unit.tif", tmp_path / "a.tif")
    _run(tmp_path / "unit.tif", tmp_path / "unit_classes.tif", scale=(0.0, 1.0))
    _run(tmp_path / "bytes.tif", tmp_path / "bytes_classes.tif", scale=(0.0, 255.0))
    with (
        rasterio.open(tmp_path / "unit_classes.tif") as a,
        rasterio.open(tmp_path / "bytes_classes.tif") as b,
    ):
        unit, bytes_ = a.read(1), b.read(1)
    assert len(np.unique(unit)) >= 3
    # the same picture in two value ranges, each with its scale: the same answer but where rounding differs
    assert (unit == bytes_).mean() > 0.999


def test_a_file_that_breaks_while_reading_fails_with_one_line_and_leaves_nothing(shared_data, tmp_path):
    whole = (shared_data / "aerial" / "netherlands_0p25m_epsg28992.tif").read_bytes()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "truncated.tif").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InputError, match=r"truncated\.tif: read failed \(") as caught:
        _run(tmp_path / "in" / "truncated.tif", tmp_path / "classes.tif")
    assert "See previous exception" not in str(caught.value)  # GDAL's reason, not rasterio's pointer to it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]
