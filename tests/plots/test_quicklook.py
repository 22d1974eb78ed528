"""geoseg.plots.quicklook: pixels of the PNG checked against the class raster they draw."""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import (
    COLORS,
    NAMES,
    UTM,
    PixelNet,
    blocky_classes,
    class_raster_with_alpha,
    write_classes,
    write_geotiff,
    write_scene,
)
from matplotlib.image import imread
from PIL import Image
from rasterio.crs import CRS
from rasterio.enums import Resampling

from geoseg.errors import ConfigurationError, GeosegError, GeosegWarning, InputError, OutputError
from geoseg.model.presets import preset_card
from geoseg.plots.quicklook import OVERLAY_OPACITY, SMALL_MAP, quicklook
from geoseg.raster.classes import NODATA_CLASS, write_class_metadata
from geoseg.raster.writing import open_tiled, tiled_profile


def rgba(path):
    return (imread(path) * 255).round().astype(np.uint8)


def count_color(pixels, color):
    return int(np.all(pixels[..., :3] == color, axis=-1).sum())


def test_class_colour_shares_match_the_raster_and_nodata_is_transparent(tmp_path):
    data = blocky_classes(900, 1200)
    classes = write_classes(tmp_path / "classes.tif", data)
    result = quicklook(classes, tmp_path / "map.png", max_size=600)
    png = rgba(result.path)
    assert png.shape[:2] == (result.height, result.width) and max(png.shape[:2]) <= 600
    drawn = png[: result.map_height, : result.map_width]
    valid = data != NODATA_CLASS
    opaque = drawn[..., 3] == 255
    for index, color in enumerate(COLORS):
        truth = np.count_nonzero(data[valid] == index) / np.count_nonzero(valid)
        share = count_color(drawn[opaque], color) / np.count_nonzero(opaque)
        assert share == pytest.approx(truth, abs=0.02), NAMES[index]
        assert result.legend[index].share == pytest.approx(truth, abs=0.02)
    # the nodata strip (the left fifth of the raster) is transparent, the rest opaque
    assert (drawn[:, : int(0.19 * result.map_width), 3] == 0).all()
    assert (drawn[:, int(0.21 * result.map_width) :, 3] == 255).all()


def test_legend_holds_each_class_colour_and_name(tmp_path):
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(300, 400))
    result = quicklook(classes, tmp_path / "map.png")
    panel = rgba(result.path)[:, result.map_width :]
    assert [e.name for e in result.legend] == NAMES
    for color in COLORS:
        assert count_color(panel, color) >= 150  # a whole 20x13 swatch, less its outline
    assert panel[..., 3].min() == 255  # the panel is opaque white behind the text


def test_overviews_are_read_not_the_full_resolution(tmp_path):
    """Full-resolution pixels changed after the overviews were built: a small quick-look shows overviews."""
    path = tmp_path / "classes.tif"
    profile = tiled_profile(2000, 2000, 1, NODATA_CLASS, UTM)
    with open_tiled(path, profile) as dst:
        dst.write(np.zeros((2000, 2000), np.uint8), 1)
        write_class_metadata(dst, NAMES, COLORS)
        dst.build_overviews([2, 4, 8, 16], Resampling.mode)
    with rasterio.open(path, "r+") as dst:
        dst.write(np.full((2000, 2000), 2, np.uint8), 1)
    result = quicklook(path, tmp_path / "small.png", max_size=600)
    assert [e.share for e in result.legend[:3]] == [1.0, 0.0, 0.0]  # class 0: the overviews' content
    large = quicklook(path, tmp_path / "large.png", max_size=2400)  # 1:1 needs the full resolution
    assert [e.share for e in large.legend[:3]] == [0.0, 0.0, 1.0]


def test_large_raster_without_overviews_warns_how_to_add_them(tmp_path):
    path = tmp_path / "plain.tif"
    profile = tiled_profile(2000, 1500, 1, NODATA_CLASS, UTM)
    with open_tiled(path, profile) as dst:
        dst.write(blocky_classes(1500, 2000), 1)
        write_class_metadata(dst, NAMES, COLORS)
    with pytest.warns(GeosegWarning, match=f"no overviews.*gdaladdo -r mode {path}"):
        result = quicklook(path, tmp_path / "map.png", max_size=400)
    assert result.map_width <= 400
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4, 8], Resampling.mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quicklook(path, tmp_path / "again.png", max_size=400)


@pytest.mark.parametrize(
    ("crs", "transform", "metres"),
    [
        ("EPSG:32632", Affine(0.5, 0, 400000, 0, -0.5, 5000000), 0.5),
        ("EPSG:2263", Affine(2.0, 0, 1000000, 0, -2.0, 200000), 2.0 * 0.3048006),  # US survey feet
        ("EPSG:4326", Affine(1e-5, 0, 10.0, 0, -1e-5, 0.0), 1.1132),  # about 1.11 m at the equator
    ],
)
def test_ground_scale_comes_from_the_crs(tmp_path, crs, transform, metres):
    georef = {"crs": CRS.from_string(crs), "transform": transform}
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(200, 200), georef)
    result = quicklook(classes, tmp_path / "map.png")
    zoom = result.map_width / 200  # a 200² raster is drawn enlarged
    assert zoom == 3 and result.metres_per_pixel == pytest.approx(metres / zoom, rel=1e-3)


def test_unreferenced_raster_has_no_scale_bar(tmp_path):
    data = blocky_classes(200, 200)
    classes = write_classes(tmp_path / "classes.tif", data, {"crs": None, "transform": Affine.identity()})
    plain = quicklook(classes, tmp_path / "plain.png")
    referenced = quicklook(write_classes(tmp_path / "utm.tif", data), tmp_path / "utm.png")
    assert plain.metres_per_pixel is None and referenced.metres_per_pixel is not None

    def black(result):  # the scale bar is the only solid black in the panel
        return count_color(rgba(result.path)[-60:, result.map_width :], (0, 0, 0))

    assert black(plain) < 20 < black(referenced)


def test_small_raster_is_enlarged_by_whole_pixels(tmp_path):
    data = blocky_classes(30, 40, block=2)
    data[:, :8] = 1  # no nodata
    result = quicklook(write_classes(tmp_path / "tiny.tif", data), tmp_path / "tiny.png")
    zoom = result.map_width // 40
    assert zoom >= 10 and (result.map_width, result.map_height) == (40 * zoom, 30 * zoom)
    drawn = rgba(result.path)[: result.map_height, : result.map_width, :3]
    expected = np.array(COLORS, np.uint8)[np.kron(data, np.ones((zoom, zoom), np.uint8))]
    np.testing.assert_array_equal(drawn, expected)


def test_classes_blend_over_the_image_and_nodata_shows_the_image(tmp_path):
    data = np.full((100, 150), 1, np.uint8)
    data[:, :50] = NODATA_CLASS
    classes = write_classes(tmp_path / "classes.tif", data)
    image = tmp_path / "image.tif"
    mask = np.full((100, 150), 255, np.uint8)
    mask[:, :20] = 0  # no image either: transparent
    write_scene(image, width=150, height=100, mask=mask, **UTM)
    with rasterio.open(image, "r+") as dst:
        dst.write(np.stack([np.full((100, 150), v, np.uint8) for v in (10, 100, 200)]))
    result = quicklook(classes, tmp_path / "over.png", over=image)
    zoom = result.map_width // 150
    png = rgba(result.path)
    row = 50 * zoom
    assert png[row, 10 * zoom, 3] == 0
    np.testing.assert_array_equal(png[row, 30 * zoom], (10, 100, 200, 255))
    expected = [
        round(OVERLAY_OPACITY * c + (1 - OVERLAY_OPACITY) * v)
        for c, v in zip(COLORS[1], (10, 100, 200), strict=True)
    ]
    np.testing.assert_allclose(png[row, 100 * zoom, :3], expected, atol=1)


def test_image_on_another_grid_is_refused(tmp_path):
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(100, 150))
    image = tmp_path / "image.tif"
    write_scene(
        image, width=150, height=100, crs=UTM["crs"], transform=UTM["transform"] * Affine.translation(40, 0)
    )
    with pytest.raises(InputError, match="image.tif"):
        quicklook(classes, tmp_path / "over.png", over=image)
    assert not (tmp_path / "over.png").exists()


def test_card_colours_override_the_rasters(tmp_path):
    data = np.zeros((60, 60), np.uint8)
    data[:, 30:] = 1
    loveda = preset_card("loveda")
    classes = write_classes(tmp_path / "c.tif", data, names=loveda.class_names, colors=[(9, 9, 9)] * 7)
    result = quicklook(classes, tmp_path / "c.png", preset="loveda")
    assert [e.name for e in result.legend] == loveda.class_names
    drawn = rgba(result.path)[: result.map_height, : result.map_width]
    assert count_color(drawn, loveda.classes[1].color) == result.map_width * result.map_height // 2


def test_raster_without_names_or_colours_gets_numbers_and_the_default_palette(tmp_path):
    path = tmp_path / "plain.tif"
    data = np.array([[0, 3], [3, 7]], np.uint8).repeat(20, 0).repeat(20, 1)
    write_geotiff(path, data, **UTM)
    result = quicklook(path, tmp_path / "plain.png")
    assert [(e.value, e.name) for e in result.legend] == [(0, "0"), (3, "3"), (7, "7")]
    assert len({e.color for e in result.legend}) == 3
    assert [e.share for e in result.legend] == [0.25, 0.5, 0.25]


def test_png_carries_no_folder_names(tmp_path):
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(100, 100))
    result = quicklook(classes, tmp_path / "map.png")
    info = Image.open(result.path).info
    assert info["Title"] == "classes.tif quick-look"
    assert set(info) <= {"Title", "Software", "dpi"}
    assert str(tmp_path).encode() not in result.path.read_bytes()


@pytest.mark.parametrize(
    ("dtype", "count", "message"),
    [
        ("float32", 1, "float32 values; quicklook needs an integer class raster"),
        ("uint8", 3, r"has 3 bands; quicklook needs a single-band class raster .*; to draw classes over"),
    ],
)
def test_rasters_that_are_not_class_rasters_are_refused(tmp_path, dtype, count, message):
    path = tmp_path / "scene.tif"
    write_scene(path, width=50, height=40, count=count, dtype=dtype, **UTM)
    with pytest.raises(InputError, match=message):
        quicklook(path, tmp_path / "map.png")
    assert list(tmp_path.iterdir()) == [path]


def test_output_problems_fail_before_reading(tmp_path):
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(100, 100))
    with pytest.raises(OutputError, match="does not exist"):
        quicklook(classes, tmp_path / "missing" / "map.png")
    (tmp_path / "map.png").write_bytes(b"old")
    with pytest.raises(OutputError, match="pass overwrite=True"):
        quicklook(classes, tmp_path / "map.png")
    with pytest.raises(ConfigurationError, match="name the file .png"):
        quicklook(classes, tmp_path / "map.jpg")
    with pytest.raises(ConfigurationError, match="max_size=100"):
        quicklook(classes, tmp_path / "other.png", max_size=100)
    assert (tmp_path / "map.png").read_bytes() == b"old"


def test_missing_matplotlib_says_how_to_install_it(tmp_path, monkeypatch):
    classes = write_classes(tmp_path / "classes.tif", blocky_classes(100, 100))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(GeosegError, match=r"pip install 'geoseg\[plot\]'"):
        quicklook(classes, tmp_path / "map.png")
    assert not (tmp_path / "map.png").exists()


def test_predict_draws_a_quicklook_beside_each_class_raster(tmp_path):
    from geoseg.inference.batch import predict

    card = preset_card("loveda")
    scenes = []
    for name in ("a", "b"):
        write_scene(tmp_path / f"{name}.tif", width=96, height=64, seed=len(scenes), **UTM)
        scenes.append(tmp_path / f"{name}.tif")
    results = predict(
        scenes,
        tmp_path / "out",
        model=PixelNet(classes=7),
        card=card,
        device="cpu",
        tile=64,
        overlap=16,
        quicklook=True,
    )
    for name, result in zip(("a", "b"), results, strict=True):
        picture = tmp_path / "out" / f"{name}.quicklook.png"
        assert result.outputs["quicklook"] == str(picture)
        with rasterio.open(result.outputs["classes"]) as src:
            data = src.read(1)
        zoom = math.ceil(SMALL_MAP / 96)  # a 96x64 scene is drawn enlarged by whole pixels
        drawn = rgba(picture)[: 64 * zoom, : 96 * zoom, :3]
        palette = np.array([c.color for c in card.classes], np.uint8)
        np.testing.assert_array_equal(drawn, palette[np.kron(data, np.ones((zoom, zoom), np.uint8))])


def test_legend_share_of_a_class_short_of_the_whole_map_never_reads_100_percent():
    from geoseg.plots.quicklook import _share_text

    assert _share_text(65273 / 65536) == "99.6 %"  # 263 pixels of another class beside it
    assert _share_text(0.9996) == ">99.9 %"
    assert _share_text(1.0) == "100 %"
    assert _share_text(0.994) == "99 %"
    assert _share_text(0.25) == "25 %"


def test_a_raster_naming_other_classes_than_the_preset_is_refused(tmp_path):
    classes = write_classes(tmp_path / "c.tif", np.zeros((60, 60), np.uint8))

    with pytest.raises(InputError, match=r"its 5 classes \(building, road, .*\) are not the 7 of the card"):
        quicklook(classes, tmp_path / "c.png", preset="loveda")
    assert not (tmp_path / "c.png").exists()


def test_quicklook_reads_a_class_raster_whose_alpha_band_is_its_mask(tmp_path):
    from geoseg.plots.quicklook import quicklook

    path, classes, alpha = class_raster_with_alpha(tmp_path)

    result = quicklook(path, tmp_path / "q.png")

    shares = {entry.value: entry.share for entry in result.legend if entry.share}
    assert shares == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1 / 3})  # class 0 lies under the alpha
