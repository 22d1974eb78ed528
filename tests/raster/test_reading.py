"""Reading imagery for a model: band choice, value ranges and GDAL's validity mask, on real files."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import write_geotiff
from rasterio.windows import Window

from geoseg.errors import GeosegWarning, InputError
from geoseg.raster.reading import (
    absolute_path,
    gdal_message,
    open_raster,
    percentile_range,
    read_bands,
    read_valid_mask,
    resolve_value_range,
    sample_values,
    select_bands,
)

RGB = ["red", "green", "blue"]


def _write(path, data, **profile):
    return write_geotiff(path, data, **{"transform": Affine(1, 0, 0, 0, -1, 0), **profile})


# --- opening ---------------------------------------------------------------------------------------------


def test_a_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"missing\.tif: file not found$"):
        open_raster(tmp_path / "missing.tif")


def test_a_file_that_is_not_a_raster_is_one_clear_error(tmp_path):
    (tmp_path / "notes.tif").write_text("not an image")
    with pytest.raises(InputError, match=r"notes\.tif: not a raster GDAL can read"):
        open_raster(tmp_path / "notes.tif")


def test_gdal_virtual_paths_are_opened_by_gdal(shared_data, tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as archive:
        archive.write(shared_data / "variants" / "colorado_hro_0p15m.tif", "colorado.tif")
    with open_raster(f"/vsizip/{tmp_path}/scenes.zip/colorado.tif") as dataset:
        assert (dataset.width, dataset.height) == (383, 232)
    with pytest.raises(InputError, match=r"scenes\.zip/absent\.tif: not a raster GDAL can read"):
        open_raster(f"/vsizip/{tmp_path}/scenes.zip/absent.tif")


# --- bands -----------------------------------------------------------------------------------------------


def test_rgb_bands_are_matched_by_colour_interpretation(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m.tif") as d:
        assert select_bands(d, RGB) == [1, 2, 3]
        assert select_bands(d, ["blue", "green", "red"]) == [3, 2, 1]


def test_alpha_is_a_mask_not_a_data_band(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m_alpha.tif") as d:
        assert select_bands(d, RGB) == [1, 2, 3]


def test_band_names_come_from_descriptions_with_aliases(tmp_path):
    path = _write(tmp_path / "nrg.tif", np.zeros((3, 8, 8), np.uint8))
    with rasterio.open(path, "r+") as d:
        for band, name in enumerate(["Near-Infrared", "R", "G"], start=1):
            d.set_band_description(band, name)
    with rasterio.open(path) as d:
        assert select_bands(d, ["nir", "red", "green"]) == [1, 2, 3]
        assert select_bands(d, ["green", "red", "nir"]) == [3, 2, 1]


def test_unnamed_rgbn_needs_bands_for_an_rgb_model(shared_data):
    path = shared_data / "variants" / "naip_rgbn_5m_nodata0.tif"
    with rasterio.open(path) as d:
        with pytest.raises(
            InputError, match=r"has 4 data band\(s\) but the model expects 3 \(red,green,blue\); "
        ):
            select_bands(d, RGB)
        assert select_bands(d, RGB, [1, 2, 3]) == [1, 2, 3]
        assert select_bands(d, ["nir", "red", "green"], [4, 1, 2]) == [4, 1, 2]


def test_unnamed_bands_are_used_in_order_when_the_count_fits(tmp_path):
    path = _write(tmp_path / "plain.tif", np.zeros((3, 8, 8), np.uint8), photometric="MINISBLACK")
    with rasterio.open(path) as d:
        assert select_bands(d, ["nir", "red", "green"]) == [1, 2, 3]


def test_colour_interpretation_alone_does_not_block_a_false_colour_composite(shared_data):
    """ISPRS Vaihingen tiles hold NIR,R,G but are stored as photometric RGB like every 3-band image."""
    path = shared_data / "labeled" / "vaihingen" / "image_area1_0_0_512_512_irrg.png"
    with (
        rasterio.open(path) as d,
        pytest.warns(
            GeosegWarning, match=r"labelled red,green,blue .* expects nir,red,green; using bands 1,2,3"
        ),
    ):
        assert select_bands(d, ["nir", "red", "green"]) == [1, 2, 3]


def test_band_descriptions_that_contradict_the_model_are_not_guessed(tmp_path):
    path = _write(tmp_path / "described.tif", np.zeros((3, 8, 8), np.uint8))
    with rasterio.open(path, "r+") as d:
        for index, name in enumerate(("red", "green", "blue"), start=1):
            d.set_band_description(index, name)
    with (
        rasterio.open(path) as d,
        pytest.raises(
            InputError, match=r"expects bands nir,red,green but the raster's bands are red,green,blue"
        ),
    ):
        select_bands(d, ["nir", "red", "green"])


def test_a_grey_raster_for_an_rgb_model_suggests_only_bands_that_exist(tmp_path):
    path = _write(tmp_path / "grey.tif", np.zeros((1, 8, 8), np.uint8))
    with rasterio.open(path) as d:
        with pytest.raises(
            InputError,
            match=r"grey\.tif: the raster has 1 data band\(s\) but the model expects 3 \(red,green,blue\); "
            r"choose them with bands=\[1,1,1\]$",
        ):
            select_bands(d, RGB)
        assert select_bands(d, RGB, [1, 1, 1]) == [1, 1, 1]


def test_a_gdal_read_failure_is_described_by_gdals_own_reason(tmp_path):
    pixels = np.arange(3 * 256 * 256).astype(np.uint8).reshape(3, 256, 256)
    path = _write(tmp_path / "whole.tif", pixels, tiled=True, blockxsize=64, blockysize=64)
    data = path.read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[: len(data) // 2])
    with rasterio.open(tmp_path / "cut.tif") as d, pytest.raises(rasterio.errors.RasterioIOError) as caught:
        d.read()
    assert str(caught.value) == "Read failed. See previous exception for details."
    message = gdal_message(caught.value)
    assert message == " ".join(str(caught.value.__cause__).split())
    assert message and "See previous exception" not in message


def test_band_list_is_checked_against_the_model_and_the_raster(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m.tif") as d:
        with pytest.raises(InputError, match=r"bands=\[1, 2\] lists 2 band\(s\) but the model expects 3"):
            select_bands(d, RGB, [1, 2])
        with pytest.raises(
            InputError, match=r"bands=\[1, 2, 5\]: 5 out of range; the raster has bands 1\.\.3"
        ):
            select_bands(d, RGB, [1, 2, 5])


# --- value ranges ----------------------------------------------------------------------------------------


def test_eight_bit_data_uses_the_models_range(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m.tif") as d:
        assert resolve_value_range(d, [1, 2, 3], None) == (0.0, 255.0)


def test_sixteen_bit_data_without_a_scale_is_refused(shared_data):
    with rasterio.open(shared_data / "variants" / "landsat_rgb_uint16_60m.tif") as d:
        with pytest.raises(
            InputError,
            match=r"uint16 data but the model expects 8-bit values 0\.\.255; pass scale=\(MIN, MAX\)",
        ):
            resolve_value_range(d, [1, 2, 3], None)
        assert resolve_value_range(d, [1, 2, 3], (0, 40000)) == (0.0, 40000.0)
        # a model trained on another range (its card says so) takes the data as it is
        assert resolve_value_range(d, [1, 2, 3], None, (0.0, 10000.0)) == (0.0, 10000.0)


def test_auto_scale_is_the_2_98_percentile_of_a_bounded_sample(shared_data):
    with rasterio.open(shared_data / "variants" / "landsat_rgb_uint16_60m.tif") as d:
        lo, hi = resolve_value_range(d, [1, 2, 3], "auto")
        everything = d.read().ravel()
    exact_lo, exact_hi = np.percentile(everything, [2, 98])
    span = exact_hi - exact_lo
    assert abs(lo - exact_lo) < 0.05 * span and abs(hi - exact_hi) < 0.05 * span
    assert 5000 < lo < hi < 40000


def test_auto_scale_uses_overviews_when_present_and_ignores_nodata(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(1000, 3000, (3, 600, 600)).astype(np.uint16)
    data[:, :300] = 0  # half the scene is nodata: must not drag the low percentile to 0
    path = _write(tmp_path / "u16.tif", data, nodata=0, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "r+") as d:
        d.build_overviews([2, 4])
    with rasterio.open(path) as d:
        lo, hi = percentile_range(d, [1, 2, 3])
    assert 1000 <= lo < 1100 and 2900 < hi <= 3000


def test_a_constant_image_cannot_be_auto_scaled(tmp_path):
    path = _write(tmp_path / "flat.tif", np.full((3, 64, 64), 7, np.uint16))
    with rasterio.open(path) as d, pytest.raises(InputError, match="constant image"):
        percentile_range(d, [1, 2, 3])


# --- validity ------------------------------------------------------------------------------------------


def test_nodata_marks_a_pixel_invalid_only_when_all_bands_are_nodata(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m_nodata0.tif") as d:
        data = d.read()
        valid = read_valid_mask(d, Window(0, 0, d.width, d.height), [1, 2, 3])
    assert np.array_equal(~valid, (data == 0).all(axis=0))
    assert (~valid).sum() == 2364  # and 375 pixels with a zero in some band stay valid
    assert ((data == 0).any(axis=0) & valid).sum() == 375


def test_alpha_zero_is_invalid(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m_alpha.tif") as d:
        alpha = d.read(4)
        valid = read_valid_mask(d, Window(0, 0, d.width, d.height), [1, 2, 3])
    assert np.array_equal(~valid, alpha == 0)
    assert (~valid).sum() == 10044


def test_internal_mask_zero_is_invalid(tmp_path):
    path = tmp_path / "masked.tif"
    mask = np.full((40, 50), 255, np.uint8)
    mask[5:15, 10:30] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        _write(path, np.full((3, 40, 50), 9, np.uint8))
        with rasterio.open(path, "r+") as d:
            d.write_mask(mask)
    assert not (tmp_path / "masked.tif.msk").exists()
    with rasterio.open(path) as d:
        valid = read_valid_mask(d, Window(0, 0, 50, 40), [1, 2, 3])
    assert np.array_equal(valid, mask > 0)


def test_a_fully_valid_window_has_no_mask(shared_data):
    with rasterio.open(shared_data / "variants" / "colorado_hro_0p15m.tif") as d:
        assert read_valid_mask(d, Window(0, 0, 100, 100), [1, 2, 3]) is None


def test_nan_in_float_data_is_invalid_and_read_as_zero(tmp_path):
    data = np.ones((3, 20, 20), np.float32)
    data[1, 3, 4] = np.nan
    path = _write(tmp_path / "float.tif", data)
    with rasterio.open(path) as d:
        valid = read_valid_mask(d, Window(0, 0, 20, 20), [1, 2, 3])
        values = read_bands(d, Window(0, 0, 20, 20), [1, 2, 3])
    assert (~valid).sum() == 1 and not valid[3, 4]
    assert values[1, 3, 4] == 0


# --- what a band holds -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, alpha, expand",
    [("landuse.tif", 255, "rgb"), ("landuse.png", 0, "rgba")],  # a PNG table keeps transparency (tRNS)
)
def test_palette_indices_are_refused_with_the_gdal_command_that_expands_them(tmp_path, name, alpha, expand):
    path = tmp_path / name
    driver = "GTiff" if name.endswith(".tif") else "PNG"
    with rasterio.open(path, "w", driver=driver, width=8, height=8, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
        dst.write_colormap(1, {0: (0, 0, 0, alpha), 1: (200, 30, 30, 255)})
    expected = (
        f"{path}: band 1 holds colour-table indices, not colours; expand the table to {expand.upper()} "
        f"first: gdal_translate -expand {expand} {path} expanded.tif (-of VRT makes a virtual copy)"
    )
    with open_raster(path) as d:
        for bands in (None, [1, 1, 1]):  # never fed as grey levels, whatever --bands says
            with pytest.raises(InputError) as refused:
                select_bands(d, RGB, bands, str(path))
            assert str(refused.value) == expected


def test_one_bit_data_is_refused_and_never_offered_as_grey(tmp_path):
    path = tmp_path / "mask.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", nbits=1) as dst:
        dst.write(np.ones((1, 8, 8), np.uint8))
    with open_raster(path) as d:
        for bands in (None, [1, 1, 1]):
            with pytest.raises(InputError) as refused:
                select_bands(d, RGB, bands, str(path))
            assert str(refused.value) == (
                f"{path}: band 1 holds 1-bit values (a binary mask, not imagery); "
                "geoseg segments 8-bit, 16-bit or floating-point imagery"
            )


@pytest.mark.parametrize("dtype", ["complex_int16", "complex64"])
def test_complex_sar_data_is_refused_with_or_without_a_scale(tmp_path, dtype):
    path = tmp_path / "slc.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3, dtype=dtype) as dst:
        dst.write(np.full((3, 8, 8), 3 + 4j, np.complex64))
    expected = (
        f"{path}: band 1 holds complex values ({dtype}, e.g. SAR); geoseg segments real-valued imagery: "
        f"convert it to amplitude first, e.g. gdal_calc.py -A {path} --calc='abs(A)' --type=Float32 "
        "--outfile amplitude.tif"
    )
    with open_raster(path) as d:
        for bands in (None, [1, 2, 3]):  # refused before --scale auto or an explicit --scale is looked at
            with pytest.raises(InputError) as refused:
                select_bands(d, RGB, bands, str(path))
            assert str(refused.value) == expected


def test_pixels_gdal_cannot_decode_are_refused_with_gdals_reason_before_any_work(tmp_path):
    from helpers import set_tiff_compression_tag

    path = _write(tmp_path / "next.tif", np.arange(3 * 64 * 64).astype(np.uint16).reshape(3, 64, 64))
    set_tiff_compression_tag(path, 32766)  # NeXT: the header opens, the strips do not decode
    with open_raster(path) as d, pytest.raises(InputError) as refused:
        select_bands(d, RGB, None, str(path))
    assert str(refused.value) == (
        f"{path}: read failed (next.tif, band 1: IReadBlock failed at X offset 0, Y offset 0: "
        "TIFFReadEncodedStrip() failed.)"
    )


def test_scale_auto_on_a_damaged_raster_names_the_file_and_gdals_reason(tmp_path):
    pixels = np.arange(3 * 256 * 256).astype(np.uint16).reshape(3, 256, 256)
    path = _write(tmp_path / "whole.tif", pixels, tiled=True, blockxsize=64, blockysize=64)
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) // 2])  # the first blocks decode, the last do not
    with open_raster(cut) as d:
        assert select_bands(d, RGB, None, str(cut)) == [1, 2, 3]
        with pytest.raises(InputError) as refused:
            resolve_value_range(d, [1, 2, 3], "auto", path=str(cut))
    message = str(refused.value)
    assert message.startswith(f"{cut}: scale='auto' could not read the pixels (cut.tif, band ")
    assert message.endswith("TIFFReadEncodedTile() failed.)")
    assert isinstance(refused.value.__cause__, rasterio.errors.RasterioIOError)


def _two_raster_geopackage(path):
    for i, table in enumerate(["a", "b"]):
        options = {"RASTER_TABLE": table, **({"APPEND_SUBDATASET": "YES"} if i else {})}
        with rasterio.open(
            path, "w", driver="GPKG", width=16, height=16, count=3, dtype="uint8", crs="EPSG:32633",
            transform=Affine(1, 0, 500000, 0, -1, 4000000), **options,
        ) as dst:  # fmt: skip
            dst.write(np.full((3, 16, 16), 50 * i, np.uint8))
    return path


def test_a_container_without_bands_names_a_subdataset_to_open_and_that_name_opens(tmp_path):
    path = _two_raster_geopackage(tmp_path / "two.gpkg")
    with pytest.raises(InputError) as refused:
        open_raster(path)
    assert str(refused.value) == (
        f"{path}: holds no raster bands but 2 subdataset(s); open one by its GDAL name, "
        f"e.g. GPKG:{path}:a (geoseg info {path} lists them)"
    )
    with open_raster(f"GPKG:{path}:b") as d:
        assert select_bands(d, RGB) == [1, 2, 3]
        assert int(read_bands(d, Window(0, 0, 2, 2), [1, 2, 3]).max()) == 50
    with pytest.raises(InputError, match=r"GPKG:.*missing\.gpkg:a: not a raster GDAL can read \("):
        open_raster(f"GPKG:{tmp_path / 'missing.gpkg'}:a")


def test_bands_of_different_dtypes_are_read_together_in_the_dtype_that_holds_them(tmp_path):
    _write(tmp_path / "b8.tif", np.full((2, 32, 32), 100, np.uint8))
    _write(tmp_path / "b16.tif", np.full((1, 32, 32), 3000, np.uint16))
    sources = [("b8.tif", 1, "Byte"), ("b8.tif", 2, "Byte"), ("b16.tif", 1, "UInt16")]
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{i}"><SimpleSource><SourceFilename relativeToVRT="1">'
        f"{name}</SourceFilename><SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, (name, band, kind) in enumerate(sources, start=1)
    )
    path = tmp_path / "mixed.vrt"
    path.write_text(
        f'<VRTDataset rasterXSize="32" rasterYSize="32"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>0,1,0,0,0,-1</GeoTransform>{bands}</VRTDataset>"
    )
    with open_raster(path) as d:
        indexes = select_bands(d, RGB, None, str(path))
        data = read_bands(d, Window(0, 0, 4, 4), indexes)
        assert data.dtype == np.uint16 and data[:, 0, 0].tolist() == [100, 100, 3000]
        with pytest.raises(InputError, match=r"mixed\.vrt: uint16 data but the model expects 8-bit values"):
            resolve_value_range(d, indexes, None, path=str(path))
        assert resolve_value_range(d, indexes, "auto", path=str(path)) == (100.0, 3000.0)


def test_nodata_beside_an_alpha_band_gives_gdals_mask_without_rasterios_misleading_warning(tmp_path):
    from rasterio.enums import ColorInterp

    data = np.full((4, 4, 4), 100, np.uint8)
    data[3] = 255
    data[:3, 0, 0] = 0  # every colour band at the nodata value, alpha 255: the alpha band decides (valid)
    data[3, 1, 1] = 0  # alpha 0: invalid
    path = _write(tmp_path / "rgba.tif", data, nodata=0)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
    with open_raster(path) as d, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        valid = read_valid_mask(d, Window(0, 0, 4, 4), [1, 2, 3])
        sample = sample_values(d, [1, 2, 3])
    assert [str(w.message) for w in caught] == []
    expected = np.ones((4, 4), bool)
    expected[1, 1] = False
    assert np.array_equal(valid, expected)
    assert sample.size == 3 * 15


def test_fewer_than_8_bits_need_a_scale_that_says_their_range(tmp_path):
    path = tmp_path / "four_bit.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=8, count=3, dtype="uint8", nbits=4, photometric="rgb"
    ) as dst:
        dst.write(np.arange(3 * 64).reshape(3, 8, 8).astype(np.uint8) % 16)
    with open_raster(path) as d:
        indexes = select_bands(d, RGB, None, str(path))
        with pytest.raises(InputError) as refused:
            resolve_value_range(d, indexes, None, path=str(path))
        assert str(refused.value) == (
            f"{path}: 4-bit values 0..15 but the model expects 8-bit values 0..255; pass scale=(0, 15)"
        )
        assert resolve_value_range(d, indexes, (0, 15), path=str(path)) == (0.0, 15.0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("scenes/a.tif", "{cwd}/scenes/a.tif"),
        ("./scenes/../a.tif", "{cwd}/a.tif"),
        ("/data/a.tif", "/data/a.tif"),
        ("/vsizip/scenes.zip/a.tif", "/vsizip/scenes.zip/a.tif"),
        ("s3://bucket/a.tif", "s3://bucket/a.tif"),
        ("https://example.com/a.tif", "https://example.com/a.tif"),
    ],
)
def test_a_local_path_is_made_absolute_for_other_processes_and_gdal_paths_are_kept(
    tmp_path, monkeypatch, path, expected
):
    monkeypatch.chdir(tmp_path)
    assert absolute_path(path) == expected.format(cwd=tmp_path)
