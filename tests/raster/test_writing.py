"""Writing result rasters: georeferencing copied as is (GCPs too), COG layout, class names for QGIS."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from helpers import write_geotiff
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.windows import Window

from geoseg.errors import ConfigurationError, OutputError
from geoseg.raster.classes import read_class_names, write_class_metadata
from geoseg.raster.writing import (
    CODECS,
    available_codecs,
    category_names_xml,
    check_codec,
    georeferencing,
    open_tiled,
    part_compression,
    tiled_profile,
    to_cog,
    write_category_names,
    write_valid_mask,
)


def _finished(tmp_path, georef, width=700, height=600):
    """Write a tiled class raster with ``georef`` and copy it to COG; return the COG path."""
    profile = tiled_profile(width, height, 1, 255, georef)
    with open_tiled(tmp_path / "tiled.tif", profile, georef.get("gcps")) as dst:
        write_class_metadata(dst, ["water", "land & sea <edge>"], [(0, 0, 255), (0, 255, 0)])
        dst.set_band_description(1, "class")
        values = np.indices((height, width)).sum(axis=0) % 2
        values[:10, :10] = 255
        dst.write(values.astype(np.uint8)[np.newaxis])
    to_cog(tmp_path / "tiled.tif", tmp_path / "cog.tif")
    return tmp_path / "cog.tif"


def test_profile_is_tiled_compressed_and_bigtiff_when_needed():
    profile = tiled_profile(100, 100, 1, 255, {"crs": None, "transform": None})
    assert (profile["blockxsize"], profile["blockysize"], profile["tiled"]) == (512, 512, True)
    assert profile["compress"] == part_compression() in ("ZSTD", "DEFLATE")
    assert profile["BIGTIFF"] == "IF_SAFER" and profile["nodata"] == 255


def test_horizontal_predictor_only_on_continuous_values():
    georef = {"crs": None, "transform": None}
    assert tiled_profile(10, 10, 1, 255, georef)["predictor"] == 1
    assert tiled_profile(10, 10, 1, None, georef, categorical=False)["predictor"] == 2


def _cog_of(tmp_path, values, codec, categorical):
    height, width = values.shape[-2:]
    georef = {"crs": CRS.from_epsg(32633), "transform": rasterio.Affine(0.5, 0, 0, 0, -0.5, 0), "gcps": None}
    nodata = 255 if categorical else None
    profile = tiled_profile(width, height, 1, nodata, georef, categorical=categorical)
    with open_tiled(tmp_path / f"tiled-{codec}.tif", profile) as dst:
        dst.write(values[np.newaxis])
    to_cog(tmp_path / f"tiled-{codec}.tif", tmp_path / f"{codec}.tif", categorical=categorical, codec=codec)
    return tmp_path / f"{codec}.tif"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("categorical", [True, False])
def test_every_codec_writes_a_cog_that_reads_back_exactly(tmp_path, codec, categorical):
    if codec not in available_codecs():
        pytest.skip(f"this GDAL build cannot write {codec}")
    rng = np.random.default_rng(7)
    values = rng.integers(0, 7 if categorical else 256, (600, 700), dtype=np.uint8)
    values[:40] = 3  # runs, as class maps have
    with rasterio.open(_cog_of(tmp_path, values, codec, categorical)) as out:
        assert out.compression is None if codec == "none" else out.compression.name.lower() == codec
        predictor = out.tags(ns="IMAGE_STRUCTURE").get("PREDICTOR")
        horizontal = not categorical and codec in ("deflate", "lzw", "zstd")
        assert predictor == ("2" if horizontal else None)
        assert np.array_equal(out.read(1), values)


def test_class_rasters_are_deflate_by_default_which_every_tiff_reader_decodes(tmp_path):
    values = np.zeros((64, 64), np.uint8)
    georef = {"crs": None, "transform": None}
    with open_tiled(tmp_path / "tiled.tif", tiled_profile(64, 64, 1, 255, georef)) as dst:
        dst.write(values[np.newaxis])
    to_cog(tmp_path / "tiled.tif", tmp_path / "cog.tif")
    with rasterio.open(tmp_path / "cog.tif") as out:
        assert out.compression.name == "deflate"
        assert "PREDICTOR" not in out.tags(ns="IMAGE_STRUCTURE")


def test_a_codec_this_gdal_lacks_is_refused_naming_those_it_has(monkeypatch):
    monkeypatch.setattr("geoseg.raster.writing.available_codecs", lambda: ("deflate", "lzw", "none"))
    with pytest.raises(ConfigurationError) as caught:
        check_codec("zstd")
    assert str(caught.value) == (
        "compression 'zstd': this GDAL build cannot write it; use one of deflate, lzw, none"
    )
    assert check_codec("LZW") == "lzw"


def test_cog_keeps_names_colours_description_and_nodata(tmp_path):
    georef = {
        "crs": CRS.from_epsg(32633),
        "transform": rasterio.Affine(0.5, 0, 1000, 0, -0.5, 2000),
        "gcps": None,
    }
    with rasterio.open(_finished(tmp_path, georef)) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert read_class_names(out) == ["water", "land & sea <edge>"]
        assert out.colormap(1)[0] == (0, 0, 255, 255)
        assert out.descriptions == ("class",) and out.nodata == 255
        assert out.overviews(1) == [2]
        assert out.crs == georef["crs"] and out.transform == georef["transform"]


def test_validity_mask_is_internal_and_survives_the_cog_copy_with_its_overviews(tmp_path):
    width, height = 700, 600
    values = (np.indices((height, width)).sum(axis=0) % 3).astype(np.uint8)  # 0 is data here
    valid = np.ones((height, width), bool)
    valid[:10, :10] = False
    valid[550:, 600:] = False
    georef = {"crs": CRS.from_epsg(32633), "transform": rasterio.Affine(0.5, 0, 0, 0, -0.5, 0), "gcps": None}
    profile = tiled_profile(width, height, 2, None, georef, categorical=False)
    with open_tiled(tmp_path / "tiled.tif", profile) as dst:
        for y0, x0 in ((0, 0), (0, 512), (512, 0), (512, 512)):  # chunk by chunk, as the engine writes
            h, w = min(512, height - y0), min(512, width - x0)
            window = Window(x0, y0, w, h)
            dst.write(np.stack([values[y0 : y0 + h, x0 : x0 + w]] * 2), window=window)
            part = valid[y0 : y0 + h, x0 : x0 + w]
            write_valid_mask(dst, None if part.all() else part, window)
    to_cog(tmp_path / "tiled.tif", tmp_path / "cog.tif", categorical=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif", "tiled.tif"]  # no .msk side-car
    with rasterio.open(tmp_path / "cog.tif") as out:
        assert out.nodata is None and out.overviews(1) == [2]
        assert out.mask_flag_enums == ([MaskFlags.per_dataset], [MaskFlags.per_dataset])
        assert np.array_equal(out.read_masks(2) > 0, valid)
        assert np.array_equal(out.read(1), values)
        assert out.read(1, masked=True).mask.sum() == 100 + 50 * 100
        assert np.array_equal(out.dataset_mask(out_shape=(300, 350)) > 0, valid[::2, ::2])


def test_ground_control_points_are_copied(tmp_path):
    gcps = [
        GroundControlPoint(0, 0, 500000, 5800000),
        GroundControlPoint(0, 700, 500210, 5800000),
        GroundControlPoint(600, 0, 500000, 5799820),
    ]
    write_geotiff(
        tmp_path / "gcp.tif",
        np.zeros((600, 700), np.uint8),
        crs=CRS.from_epsg(32633),
        transform=None,
        gcps=gcps,
    )
    with rasterio.open(tmp_path / "gcp.tif") as src:
        georef = georeferencing(src)
    with rasterio.open(_finished(tmp_path, georef)) as out:
        copied, crs = out.gcps
    assert crs == CRS.from_epsg(32633)
    assert [(g.row, g.col, g.x, g.y) for g in copied] == [(g.row, g.col, g.x, g.y) for g in gcps]


def test_category_names_side_car_is_escaped_and_replaces_a_stale_one(tmp_path):
    raster = tmp_path / "classes.tif"
    (tmp_path / "classes.tif.aux.xml").write_text(
        "<PAMDataset><Metadata>stale statistics</Metadata></PAMDataset>"
    )
    write_category_names(raster, ["water", "land & sea <edge>"])
    text = (tmp_path / "classes.tif.aux.xml").read_text()
    assert text == category_names_xml(["water", "land & sea <edge>"])
    assert "<Category>land &amp; sea &lt;edge&gt;</Category>" in text and "stale" not in text


def test_category_names_xml_is_what_gdal_itself_writes():
    # byte for byte what GDAL 3.10 writes after GDALSetRasterCategoryNames(band, ["a", "b"]) on a GTiff
    assert category_names_xml(["a", "b"]) == (
        "<PAMDataset>\n"
        '  <PAMRasterBand band="1">\n'
        "    <CategoryNames>\n"
        "      <Category>a</Category>\n"
        "      <Category>b</Category>\n"
        "    </CategoryNames>\n"
        "  </PAMRasterBand>\n"
        "</PAMDataset>\n"
    )


def test_an_output_in_a_missing_folder_is_an_output_error(tmp_path):
    profile = tiled_profile(10, 10, 1, 255, {"crs": None, "transform": None})
    with pytest.raises(OutputError, match="cannot create output"):
        open_tiled(tmp_path / "missing" / "x.tif", profile)
