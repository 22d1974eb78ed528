"""Rasters as they come from the field, each kind built small with a known answer: predict, vectorize,
quicklook and info must get them right or refuse them in one line, never give a silently wrong result.

Expected classes come from :class:`helpers.PixelNet` applied to each pixel by hand (its answer does not
depend on tiling), so every test asserts exact class counts; georeferencing is compared exactly.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyogrio
import pyproj
import pytest
import rasterio
import shapely
import torch
from affine import Affine
from click.testing import CliRunner
from helpers import CARD, PixelNet, write_geotiff
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geoseg.cli.main import cli
from geoseg.errors import GeosegWarning, InputError
from geoseg.evaluation import evaluate
from geoseg.inference.batch import predict
from geoseg.model.normalize import normalize
from geoseg.plots.quicklook import quicklook
from geoseg.vector.vectorize import vectorize

UTM = CRS.from_epsg(32631)
NORTH_UP = Affine(0.5, 0, 630000, 0, -0.5, 5800000)
HEIGHT, WIDTH = 40, 56
NET = PixelNet(3, 6)


def expected_classes(data: np.ndarray, value_range=(0.0, 255.0)) -> np.ndarray:
    """PixelNet's class of every pixel of ``data`` (C, H, W), as predict must find it."""
    x = torch.as_tensor(np.asarray(data, np.float32)[None])
    with torch.no_grad():
        return NET(normalize(x, value_range, CARD.mean, CARD.std))[0].argmax(0).numpy().astype(np.uint8)


def image(seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (3, height, width)).astype(np.uint8)


def write(path, data: np.ndarray, *, crs=UTM, transform=NORTH_UP, **options):
    """``data`` (C, H, W) on this module's grid unless ``crs``/``transform`` say otherwise; ``options``
    (colorinterp, tags, scales, offsets, nodata, creation options) as write_geotiff's."""
    return write_geotiff(path, data, crs=crs, transform=transform, **options)


def run_predict(source, output, **options) -> np.ndarray:
    predict([source], output, model=NET, card=CARD, **options)
    with rasterio.open(output) as out:
        return out.read(1)


# --- masks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layout",
    ["alpha first (A,R,G,B)", "alpha after four bands (R,G,B,NIR,A)"],
)
def test_alpha_band_that_gdal_leaves_out_of_its_mask_still_masks_the_prediction(tmp_path, layout):
    """GDAL takes an alpha band as the mask only as the last of 2 or 4 bands: any other alpha was ignored,
    and its transparent pixels were classified as data."""
    data = image()
    alpha = np.full((1, HEIGHT, WIDTH), 255, np.uint8)
    alpha[0, :10] = 0
    if layout.startswith("alpha first"):
        stack = np.concatenate([alpha, data])
        interp = [ColorInterp.alpha, ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    else:
        stack = np.concatenate([data, data[:1], alpha])
        interp = [
            ColorInterp.red,
            ColorInterp.green,
            ColorInterp.blue,
            ColorInterp.undefined,
            ColorInterp.alpha,
        ]
    source = write(tmp_path / "scene.tif", stack, colorinterp=interp)
    expected = expected_classes(data)
    expected[:10] = 255

    classes = run_predict(source, tmp_path / "classes.tif")

    assert int((classes == 255).sum()) == 10 * WIDTH
    np.testing.assert_array_equal(classes, expected)


def test_an_external_msk_side_car_masks_the_prediction(tmp_path):
    """GDAL_TIFF_INTERNAL_MASK=NO writes the mask as scene.tif.msk beside the image (older GDAL's default)."""
    data = image()
    source = write(tmp_path / "scene.tif", data)
    mask = np.full((HEIGHT, WIDTH), 255, np.uint8)
    mask[:, :7] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=False), rasterio.open(source, "r+") as dst:
        dst.write_mask(mask)
    assert (tmp_path / "scene.tif.msk").exists()
    expected = expected_classes(data)
    expected[:, :7] = 255

    classes = run_predict(source, tmp_path / "classes.tif")

    np.testing.assert_array_equal(classes, expected)


def test_nan_is_nodata_in_float_imagery(tmp_path):
    data = image().astype(np.float32)
    data[:, 5:8] = np.nan
    source = write(tmp_path / "scene.tif", data, nodata=float("nan"))
    expected = expected_classes(np.nan_to_num(data))
    expected[5:8] = 255

    classes = run_predict(source, tmp_path / "classes.tif", scale=(0, 255))

    np.testing.assert_array_equal(classes, expected)


def test_per_band_nodata_invalidates_a_pixel_only_where_every_band_is_at_its_own_nodata(tmp_path):
    """A VRT may give each band its own nodata value; GDAL's rule: invalid only when all bands are."""
    data = image()
    data[0, 0, :4], data[1, 0, :4], data[2, 0, :4] = 1, 2, 3  # all three at their nodata: invalid
    data[0, 1, :4], data[1, 1, :4], data[2, 1, :4] = 1, 2, 9  # band 3 holds data: valid
    write(tmp_path / "scene.tif", data)
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><NoDataValue>{b}</NoDataValue><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">scene.tif</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in (1, 2, 3)
    )
    vrt = tmp_path / "scene.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{WIDTH}" rasterYSize="{HEIGHT}"><SRS>{UTM.to_wkt()}</SRS>'
        f"<GeoTransform>{', '.join(map(repr, NORTH_UP.to_gdal()))}</GeoTransform>{bands}</VRTDataset>"
    )
    expected = expected_classes(data)
    expected[0, :4] = 255

    classes = run_predict(vrt, tmp_path / "classes.tif")

    np.testing.assert_array_equal(classes, expected)


# --- values ---------------------------------------------------------------------------------------------


def test_band_scale_and_offset_are_applied_so_scale_speaks_of_the_scaled_values(tmp_path):
    """Reflectance stored as uint16 with scale and offset: ``--scale`` is in reflectance, as gdalinfo
    shows the band; read as stored integers (over 1000), --scale 0,0.255 saturated every pixel."""
    data = image()
    stored = (data.astype(np.uint16) * 10 + 1000).astype(np.uint16)  # reflectance = stored/10000 - 0.1
    source = write(tmp_path / "scene.tif", stored, scales=[0.0001] * 3, offsets=[-0.1] * 3)

    classes = run_predict(source, tmp_path / "classes.tif", scale=(0.0, 0.255))

    np.testing.assert_array_equal(classes, expected_classes(data))


def test_scaled_uint16_for_an_8_bit_model_is_refused_naming_its_scale(tmp_path):
    source = write(tmp_path / "scene.tif", image().astype(np.uint16), scales=[0.0001] * 3)
    with pytest.raises(InputError) as caught:
        run_predict(source, tmp_path / "classes.tif")
    assert str(caught.value) == (
        f"{source}: uint16 data with scale 0.0001 and offset 0 (read as stored × scale + offset) but the "
        "model expects 8-bit values 0..255; pass scale=(MIN, MAX) in those units (e.g. scale=(0, 0.3) for "
        "reflectance) or scale='auto' (2-98 percentile stretch)"
    )
    assert not (tmp_path / "classes.tif").exists()


@pytest.mark.parametrize("height,width", [(1, 70), (50, 1), (1, 1), (64, 64), (65, 129), (20, 30)])
def test_scenes_of_one_row_one_column_one_tile_or_odd_sizes_are_classified_pixel_for_pixel(
    tmp_path, height, width
):
    data = image(1, height, width)
    source = write(tmp_path / "scene.tif", data)

    classes = run_predict(source, tmp_path / "classes.tif")

    np.testing.assert_array_equal(classes, expected_classes(data))


# --- georeferencing -------------------------------------------------------------------------------------


def test_pixel_is_point_output_keeps_the_tag_and_lies_on_its_input_for_every_reader(tmp_path):
    """GDAL shifts a PixelIsPoint transform by half a pixel on reading (GTIFF_POINT_GEO_IGNORE=FALSE); an
    output written as PixelIsArea with the shifted transform lay half a pixel off its input for readers that
    take the tie point as it is."""
    data = image()
    source = write(tmp_path / "scene.tif", data, tags={"AREA_OR_POINT": "Point"})
    output = tmp_path / "classes.tif"

    classes = run_predict(source, output, confidence=True)

    np.testing.assert_array_equal(classes, expected_classes(data))
    for path in (output, tmp_path / "classes.confidence.tif"):
        with rasterio.open(path) as out:
            assert out.tags()["AREA_OR_POINT"] == "Point"
            assert out.transform == NORTH_UP  # the first pixel's corner, as GDAL reads both
        with rasterio.Env(GTIFF_POINT_GEO_IGNORE=True), rasterio.open(path) as out:
            # the tie point as stored: the first pixel's centre, as in the input
            assert out.transform == Affine(0.5, 0, 630000.25, 0, -0.5, 5799999.75)


SOUTH_UP = Affine(0.5, 0, 630000, 0, 0.5, 5790000)
ROTATED = Affine(0.5, 0.125, 630000, 0.125, -0.5, 5800000)


@pytest.mark.parametrize(
    "crs,transform",
    [
        (UTM, NORTH_UP),
        (UTM, SOUTH_UP),
        (UTM, ROTATED),
        (CRS.from_epsg(4326), Affine(1e-4, 0, 4.9, 0, -1e-4, 52.3)),
        (CRS.from_epsg(4326), Affine(1e-4, 0, 4.9, 0, 1e-4, 52.3)),
    ],
    ids=["north-up", "south-up", "rotated", "lon/lat north-up", "lon/lat south-up"],
)
def test_transform_is_kept_exactly_and_polygons_lie_on_their_pixels_with_true_areas(tmp_path, crs, transform):
    data = image()
    source = write(tmp_path / "scene.tif", data, crs=crs, transform=transform)
    output = tmp_path / "classes.tif"

    classes = run_predict(source, output)

    with rasterio.open(output) as out:
        assert out.transform == transform and out.crs == crs
    np.testing.assert_array_equal(classes, expected_classes(data))

    # vectorize a known rectangle: rows 3..9, columns 5..16 of class 1 on class 0
    rectangle = np.zeros((1, 12, 20), np.uint8)
    rectangle[0, 3:10, 5:17] = 1
    labels = write(tmp_path / "labels.tif", rectangle, crs=crs, transform=transform)
    polygons = tmp_path / "labels.gpkg"
    result = CliRunner().invoke(cli, ["vectorize", str(labels), "-o", str(polygons)])
    assert result.exit_code == 0, result.output
    _, _, geometry, fields = pyogrio.raw.read(polygons, columns=["class_id", "area"])
    shapes = shapely.from_wkb(geometry)
    one = shapes[fields[0] == 1]
    assert len(one) == 1 and len(shapes) == 2
    corners = [transform @ (c, r) for c, r in ((5, 3), (17, 3), (17, 10), (5, 10))]
    assert shapely.equals(one[0], shapely.Polygon(corners))
    # straight pixel edges: along parallels in lon/lat, geodesics to 1e-9 over a few metres in UTM
    to_lonlat = pyproj.Transformer.from_crs(crs, 4326, always_xy=True)
    lon, lat = to_lonlat.transform(*np.array(corners).T)
    geodesic, _ = pyproj.Geod(ellps="WGS84").polygon_area_perimeter(lon, lat)
    assert fields[1][fields[0] == 1][0] == pytest.approx(abs(geodesic), rel=1e-6)


@pytest.mark.parametrize(
    "crs",
    [
        CRS.from_user_input("EPSG:32631+5709"),
        CRS.from_wkt(
            'ENGCRS["site",EDATUM["site datum"],CS[Cartesian,2],AXIS["x",east,LENGTHUNIT["metre",1]],'
            'AXIS["y",north,LENGTHUNIT["metre",1]]]'
        ),
        CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'),
        CRS.from_epsg(4326),
    ],
    ids=["compound", "engineering", "LOCAL_CS", "EPSG:4326"],
)
def test_crs_of_any_kind_reaches_the_output_unchanged(tmp_path, crs):
    transform = Affine(1e-5, 0, 4.9, 0, -1e-5, 52.3) if crs.is_geographic else NORTH_UP
    data = image()
    source = write(tmp_path / "scene.tif", data, crs=crs, transform=transform)

    classes = run_predict(source, tmp_path / "classes.tif")

    with rasterio.open(source) as src, rasterio.open(tmp_path / "classes.tif") as out:
        assert out.crs == src.crs and out.transform == transform
    np.testing.assert_array_equal(classes, expected_classes(data))


UNKNOWN_METHOD = (
    'PROJCS["x",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
    'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Foo_Bar_Projection"],'
    'PARAMETER["false_easting",0],UNIT["metre",1]]'
)


@pytest.mark.parametrize(
    "crs,transform",
    [
        (CRS.from_wkt(UNKNOWN_METHOD), Affine(2, 0, 1000, 0, -2, 5000)),
        (CRS.from_user_input("ESRI:102003"), NORTH_UP),  # Albers for the USA, its inverse far off its area
        (CRS.from_epsg(4978), NORTH_UP),  # geocentric
    ],
    ids=["unknown projection method", "centre outside the CRS's area", "geocentric"],
)
def test_crs_that_proj_cannot_map_gives_one_line_for_areas_and_info_still_describes_it(
    tmp_path, crs, transform
):
    labels = np.zeros((1, 12, 20), np.uint8)
    labels[0, 3:10, 5:17] = 1
    path = write(tmp_path / "labels.tif", labels, crs=crs, transform=transform)

    result = CliRunner().invoke(cli, ["vectorize", str(path), "-o", str(tmp_path / "labels.gpkg")])

    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {path}: PROJ cannot map the raster's centre (")
    assert result.output.count("\n") == 1
    assert "so areas in square metres cannot be computed" in result.output
    assert not (tmp_path / "labels.gpkg").exists()
    info = CliRunner().invoke(cli, ["info", str(path), "--json"])
    assert info.exit_code == 0, info.output


def test_prediction_reads_full_resolution_even_where_overviews_disagree(tmp_path):
    """A COG's overviews are for display: stale ones (built before the pixels changed) must not leak in."""
    data = image()
    source = write(tmp_path / "scene.tif", 255 - data, tiled=True, blockxsize=16, blockysize=16)
    with rasterio.open(source, "r+") as dst:
        dst.build_overviews([2, 4])
        dst.write(data)  # the overviews still show the old pixels

    classes = run_predict(source, tmp_path / "classes.tif")

    np.testing.assert_array_equal(classes, expected_classes(data))


# --- quicklook ------------------------------------------------------------------------------------------


def test_quicklook_over_an_image_whose_bands_have_mixed_dtypes(tmp_path):
    """A VRT may mix Byte and UInt16 bands; rasterio refuses to read them in one call."""
    data = image()
    write(tmp_path / "byte.tif", data)
    write(tmp_path / "wide.tif", data.astype(np.uint16) * 100)
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">{name}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b, kind, name in ((1, "Byte", "byte.tif"), (2, "UInt16", "wide.tif"), (3, "Byte", "byte.tif"))
    )
    vrt = tmp_path / "mixed.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{WIDTH}" rasterYSize="{HEIGHT}"><SRS>{UTM.to_wkt()}</SRS>'
        f"<GeoTransform>{', '.join(map(repr, NORTH_UP.to_gdal()))}</GeoTransform>{bands}</VRTDataset>"
    )
    labels = write(tmp_path / "labels.tif", (image()[:1] % 3).astype(np.uint8))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(
            cli, ["quicklook", str(labels), "-o", str(tmp_path / "q.png"), "--over", str(vrt)]
        )

    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "q.png") as png:
        assert png.count == 4 and png.width > WIDTH


@pytest.mark.parametrize("kind", ["constant uint16", "float with NaN nodata"])
def test_quicklook_over_an_image_with_nothing_to_stretch_or_nan_draws_it(tmp_path, kind):
    """--scale belongs to predict: quicklook must not ask for it when an image has one value only."""
    if kind == "constant uint16":
        over = write(tmp_path / "over.tif", np.full((3, HEIGHT, WIDTH), 7, np.uint16))
    else:
        values = image().astype(np.float32)
        values[:, :, :3] = np.nan
        over = write(tmp_path / "over.tif", values, nodata=float("nan"))
    labels = write(tmp_path / "labels.tif", (image()[:1] % 3).astype(np.uint8))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = CliRunner().invoke(
            cli, ["quicklook", str(labels), "-o", str(tmp_path / "q.png"), "--over", str(over)]
        )

    assert result.exit_code == 0, result.output
    with rasterio.open(tmp_path / "q.png") as png:
        assert png.count == 4 and png.width > WIDTH


def test_predict_vectorize_refuses_a_crs_without_true_areas_before_any_inference(tmp_path):
    source = write(tmp_path / "scene.tif", image(), crs=CRS.from_wkt(UNKNOWN_METHOD))
    output = tmp_path / "classes.tif"

    with pytest.raises(InputError, match=r"scene\.tif: PROJ cannot map the raster's centre \("):
        predict([source], output, model=NET, card=CARD, vectorize=tmp_path / "classes.gpkg")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_info_shows_each_band_scale_offset_and_pixel_is_point(tmp_path):
    source = write(
        tmp_path / "scene.tif",
        image().astype(np.uint16),
        scales=[0.0001] * 3,
        offsets=[-0.1, 0.0, 0.0],
        tags={"AREA_OR_POINT": "Point"},
    )
    result = CliRunner().invoke(cli, ["info", str(source), "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.output)
    assert described["area_or_point"] == "Point"
    assert [(b["dtype"], b["scale"], b["offset"]) for b in described["bands"]] == [
        ("uint16", 0.0001, -0.1),
        ("uint16", 0.0001, 0.0),
        ("uint16", 0.0001, 0.0),
    ]


@pytest.mark.parametrize(
    "dtype,shift,scale",
    [("int8", -128, (-128, 127)), ("int16", -1000, (-1000, -745)), ("float64", 0, (0, 255))],
)
def test_signed_and_double_imagery_is_classified_with_its_scale(tmp_path, dtype, shift, scale):
    data = image()
    source = write(tmp_path / "scene.tif", (data.astype(np.int32) + shift).astype(dtype))

    classes = run_predict(source, tmp_path / "classes.tif", scale=scale)

    np.testing.assert_array_equal(classes, expected_classes(data))


@pytest.mark.parametrize("order", ["BGR", "BGRN"])
def test_bands_follow_their_colour_interpretation_not_their_order(tmp_path, order):
    data = image()
    stack = data[::-1] if order == "BGR" else np.concatenate([data[::-1], data[:1]])
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red] + [ColorInterp.undefined] * (
        len(order) - 3
    )
    source = write(tmp_path / "scene.tif", np.ascontiguousarray(stack), colorinterp=interp)

    classes = run_predict(source, tmp_path / "classes.tif")

    np.testing.assert_array_equal(classes, expected_classes(data))


def test_vectorize_of_a_crs_without_geotransform_keeps_pixel_coordinates_without_the_crs(tmp_path):
    """Pixel numbers are no coordinates in the CRS: written with it, the polygons lay at the CRS's origin
    with 'true' areas of a place they are not."""
    labels = np.zeros((1, 12, 20), np.uint8)
    labels[0, 3:10, 5:17] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        path = write(tmp_path / "labels.tif", labels, transform=None)
    polygons = tmp_path / "labels.gpkg"

    with pytest.warns(GeosegWarning) as caught:
        vectorize(path, polygons)

    assert [str(w.message) for w in caught if w.category is GeosegWarning] == [
        f"{path}: has a CRS (EPSG:32631) but no geotransform, GCPs or RPCs; polygons are in pixel "
        "coordinates, areas in square pixels, and outputs carry no CRS"
    ]
    assert pyogrio.read_info(polygons)["crs"] is None
    _, _, geometry, fields = pyogrio.raw.read(polygons, columns=["class_id", "area"])
    one = fields[0] == 1
    assert shapely.equals(shapely.from_wkb(geometry)[one][0], shapely.box(5, 3, 17, 10))
    assert fields[1][one][0] == 84.0


# --- evaluate -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("masked", ["truth", "prediction"])
def test_evaluate_does_not_score_pixels_an_internal_mask_leaves_out(tmp_path, masked):
    """A truth whose unlabelled half is marked by an internal mask (not a nodata value), or a prediction
    from another tool masked the same way: those pixels were scored as class 0."""
    truth = np.zeros((1, 10, 10), np.uint8)
    truth[0, :, 5:] = 1
    prediction = np.ones((1, 10, 10), np.uint8)
    mask = np.full((10, 10), 255, np.uint8)
    mask[:, :5] = 0
    for name, values in (("truth", truth), ("prediction", prediction)):
        write(tmp_path / f"{name}.tif", values, mask=mask if name == masked else None)

    result = evaluate(tmp_path / "prediction.tif", tmp_path / "truth.tif").to_dict()

    assert result["overall_accuracy"] == 1.0
    assert (result["pixels_evaluated"], result["pixels_ignored"]) == (50, 50)
    assert result["confusion"] == [[0, 0], [0, 50]]


@pytest.mark.parametrize("transform", [NORTH_UP, SOUTH_UP], ids=["north-up", "south-up"])
def test_quicklook_draws_north_at_the_top(tmp_path, transform):
    """A south-up raster stores its southern row first: drawn as stored, its map was upside down."""
    labels = np.zeros((1, 64, 64), np.uint8)
    north = slice(0, 16) if transform.e < 0 else slice(48, 64)  # the rows at the northern edge
    labels[0, north] = 1
    path = write(tmp_path / "labels.tif", labels, transform=transform)

    result = quicklook(path, tmp_path / "q.png")

    with rasterio.open(tmp_path / "q.png") as png:
        pixels = png.read(window=((0, result.map_height), (0, result.map_width)))
    colour = {entry.value: entry.color for entry in result.legend}
    top, bottom = pixels[:3, : result.map_height // 4], pixels[:3, -result.map_height // 4 :]
    assert (top == np.array(colour[1])[:, None, None]).all()
    assert (bottom == np.array(colour[0])[:, None, None]).all()


def test_a_scale_of_zero_is_refused_before_any_output(tmp_path):
    source = write(tmp_path / "scene.tif", image().astype(np.uint16), scales=[1.0, 0.0, 1.0])
    with pytest.raises(InputError) as caught:
        run_predict(source, tmp_path / "classes.tif", scale=(0, 255))
    assert str(caught.value) == (
        f"{source}: band 2 has scale 0 and offset 0, which map its values to nothing usable; fix them with "
        f"gdal_edit.py -scale 1 -offset 0 {source}"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]
