"""STAC Items as ``geoseg predict`` input: assets picked by band common names, stacked by a VRT, local or
served over HTTP with range requests; the output sits on the assets' grid and the record names the item."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from helpers import CARD, PixelNet, write_geotiff, write_small_checkpoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp

from geoseg.cli.main import cli
from geoseg.errors import GeosegWarning, InputError
from geoseg.inference.batch import predict
from geoseg.raster.reading import dataset_mask as reading_mask
from geoseg.stac.items import is_stac_item, resolve_href

SCENE = "sample_data/netherlands_0p25m_epsg28992.tif"
WINDOW = rasterio.windows.Window(300, 200, 96, 80)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Single-band COGs red/green/blue (a crop of the sample orthophoto), the same as one RGB GeoTIFF, and
    STAC 1.0 (eo:bands) and 1.1 (bands) items with relative hrefs; assets listed blue first."""
    folder = tmp_path_factory.mktemp("catalogue")
    with rasterio.open(SCENE) as src:
        data = src.read(window=WINDOW)
        crs, transform = src.crs, src.window_transform(WINDOW)
    write_geotiff(folder / "rgb.tif", data, crs=crs, transform=transform)
    (folder / "cogs").mkdir()
    for i, name in enumerate(("red", "green", "blue")):
        write_geotiff(
            folder / "cogs" / f"{name}.tif", data[i : i + 1], crs=crs, transform=transform, driver="COG"
        )
    shifted = transform * transform.translation(10, 0)
    write_geotiff(folder / "cogs" / "blue_shifted.tif", data[2:3], crs=crs, transform=shifted, driver="COG")
    order = ("blue", "green", "red")
    v10 = {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": ["https://stac-extensions.github.io/eo/v1.1.0/schema.json"],
        "id": "scene-42",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "links": [],
        "assets": {
            "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
            **{
                f"B{i}": {"href": f"cogs/{name}.tif", "eo:bands": [{"name": f"B{i}", "common_name": name}]}
                for i, name in enumerate(order)
            },
        },
    }
    (folder / "item.json").write_text(json.dumps(v10))
    v11 = {
        **v10,
        "stac_version": "1.1.0",
        "id": "scene-42-v11",
        "assets": {
            f"band{i}": {"href": f"cogs/{name}.tif", "bands": [{"name": f"b{i}", "eo:common_name": name}]}
            for i, name in enumerate(order)
        },
    }
    (folder / "item11.json").write_text(json.dumps(v11))
    return folder


@pytest.fixture(scope="module")
def reference(checkpoint, catalogue, tmp_path_factory):
    """The class raster predicted from the plain RGB GeoTIFF."""
    out = tmp_path_factory.mktemp("reference") / "classes.tif"
    result = CliRunner().invoke(
        cli, ["predict", str(catalogue / "rgb.tif"), "-o", str(out), "-m", str(checkpoint)]
    )
    assert result.exit_code == 0, result.output
    with rasterio.open(out) as dataset:
        return dataset.read(1), dataset.crs, dataset.transform


def _predict(checkpoint, item, out, *args):
    result = CliRunner().invoke(
        cli, ["predict", str(item), "-o", str(out), "-m", str(checkpoint), "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("name, item_id", [("item.json", "scene-42"), ("item11.json", "scene-42-v11")])
def test_an_item_is_stacked_by_common_names(checkpoint, catalogue, reference, tmp_path, name, item_id):
    out = tmp_path / "classes.tif"
    record = _predict(checkpoint, catalogue / name, out)
    assert record["input"] == str(catalogue / name) and record["item"] == item_id
    assert (record["width"], record["height"]) == (96, 80)
    with rasterio.open(out) as dataset:
        assert (dataset.crs, dataset.transform) == reference[1:]
        assert np.array_equal(dataset.read(1), reference[0])
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == [
        "classes.qml",
        "classes.tif",
    ]


def test_assets_override_the_band_choice(checkpoint, catalogue, reference, tmp_path):
    out = tmp_path / "classes.tif"
    record = _predict(checkpoint, catalogue / "item.json", out, "--assets", "B2,B1,B0")
    assert record["item"] == "scene-42"
    with rasterio.open(out) as dataset:
        assert np.array_equal(dataset.read(1), reference[0])
    swapped = _predict(checkpoint, catalogue / "item.json", tmp_path / "bgr.tif", "--assets", "B0,B1,B2")
    with rasterio.open(swapped["outputs"]["classes"]) as dataset:
        assert not np.array_equal(dataset.read(1), reference[0])  # blue fed as red: another answer


def test_assets_for_a_raster_input_are_refused_before_any_work(checkpoint, catalogue, tmp_path):
    """A raster's bands are chosen by bands=; asset keys would be silently ignored for it."""
    from geoseg.errors import ConfigurationError

    rgb = catalogue / "rgb.tif"
    with pytest.raises(ConfigurationError) as raised:
        predict([catalogue / "item.json", rgb], tmp_path / "out", model=checkpoint, assets=["B2", "B1", "B0"])
    assert str(raised.value) == f"assets=['B2', 'B1', 'B0'] is for STAC Item inputs; {rgb} is a raster"
    result = CliRunner().invoke(
        cli,
        ["predict", str(rgb), "-o", str(tmp_path / "c.tif"), "-m", str(checkpoint), "--assets", "B2,B1,B0"],
    )
    assert result.exit_code == 1
    assert result.output == f"Error: --assets B2,B1,B0 is for STAC Item inputs; {rgb} is a raster\n"
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def server(catalogue, tmp_path):
    """The catalogue served on 127.0.0.1 with range requests, in its own process; yields (URL, range log)."""
    log = tmp_path / "ranges.log"
    log.touch()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).parents[1] / "range_server.py"), str(catalogue), str(log)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_an_item_served_over_http_is_read_with_range_requests(checkpoint, server, reference, tmp_path):
    base, log = server
    url = f"{base}/item.json"
    out = tmp_path / "classes.tif"
    record = _predict(checkpoint, url, out)
    assert record["input"] == url and record["item"] == "scene-42"
    ranges = log.read_text().splitlines()
    assert {line.split()[0] for line in ranges} == {"/cogs/red.tif", "/cogs/green.tif", "/cogs/blue.tif"}
    with rasterio.open(out) as dataset:
        assert (dataset.crs, dataset.transform) == reference[1:]
        assert np.array_equal(dataset.read(1), reference[0])


def _item_with(catalogue, tmp_path, **assets):
    item = json.loads((catalogue / "item.json").read_text())
    item["assets"] = assets
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(item))
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda c, t: (t / "broken.json").write_text("{nope") and t / "broken.json",
            "not a STAC Item (invalid JSON",
        ),
        (lambda c, t: (t / "list.json").write_text("[]") and t / "list.json", "expected a GeoJSON Feature"),
        (
            lambda c, t: _item_with(
                c, t, B0={"href": str(c / "cogs/red.tif"), "eo:bands": [{"common_name": "red"}]}
            ),
            "no asset has a band with common name 'green' "
            "(the model takes red,green,blue; the item offers red)",
        ),
        (
            lambda c, t: _item_with(
                c,
                t,
                **{
                    name: {"href": str(c / path), "eo:bands": [{"common_name": name}]}
                    for name, path in (
                        ("red", "cogs/red.tif"),
                        ("green", "cogs/green.tif"),
                        ("blue", "cogs/blue_shifted.tif"),
                    )
                },
            ),
            "have different transforms: the same pixel lies up to 10 px apart",
        ),
    ],
)
def test_bad_items_fail_with_one_line_and_leave_nothing(checkpoint, catalogue, tmp_path, make, message):
    item = make(catalogue, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "classes.tif"
    result = CliRunner().invoke(cli, ["predict", str(item), "-o", str(out), "-m", str(checkpoint)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {item}: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_what_counts_as_an_item():
    assert is_stac_item("scene.json") and is_stac_item("https://x.org/stac/item.json?sig=1")
    assert is_stac_item("https://x.org/stac/v1/collections/s2/items/S2B_T31_20240501")
    assert not is_stac_item("scene.tif") and not is_stac_item("https://x.org/cogs/scene.tif")


# --- an Item is read exactly as its asset files are ------------------------------------------------------

NET = PixelNet(3, 6)
UTM = CRS.from_epsg(32631)
NORTH_UP = Affine(0.5, 0, 630000, 0, -0.5, 5800000)
HEIGHT, WIDTH = 40, 56
RGB = ("red", "green", "blue")


def _scene(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, 256, (3, HEIGHT, WIDTH)).astype(np.uint8)


def _tif(path, data, *, crs=UTM, transform=NORTH_UP, **options):
    """``data`` (C, H, W) on this module's grid; ``options`` (mask, internal_mask, nodata, colorinterp,
    scales, offsets, NBITS...) as write_geotiff's."""
    return write_geotiff(path, data, crs=crs, transform=transform, **options)


def _item(folder, assets, version="1.0", name="item.json", links=()):
    """An Item of ``assets`` {key: (file, [band dicts])}; band dicts hold ``common_name`` and the raster
    fields ``nodata``/``scale``/``offset``, written as STAC 1.0 (``eo:bands`` + ``raster:bands``) or 1.1
    (``bands``); None instead of the band list gives the asset no band metadata."""
    body = {}
    for key, (file, bands) in assets.items():
        asset: dict = {"href": os.path.relpath(file, folder), "type": "image/tiff; application=geotiff"}
        raster = [{k: b[k] for k in ("nodata", "scale", "offset") if k in b} for b in bands or []]
        if bands is not None and version == "1.0":
            asset["eo:bands"] = [
                {"name": f"b{i}", "common_name": b.get("common_name")} for i, b in enumerate(bands)
            ]
            if any(raster):
                asset["raster:bands"] = raster
        elif bands is not None:
            asset["bands"] = [
                {"name": f"b{i}", "eo:common_name": b.get("common_name")}
                | {("nodata" if k == "nodata" else f"raster:{k}"): v for k, v in r.items()}
                for i, (b, r) in enumerate(zip(bands, raster, strict=True))
            ]
        body[key] = asset
    item = {
        "type": "Feature",
        "stac_version": f"{version}.0",
        "id": "scene",
        "geometry": None,
        "properties": {"datetime": "2024-05-01T10:00:00Z"},
        "links": list(links),
        "assets": body,
    }
    path = folder / name
    path.write_text(json.dumps(item))
    return path


def _predict_classes(source, out, **options):
    predict([source], out, model=NET, card=CARD, **options)
    with rasterio.open(out) as dataset:
        return dataset.read(1), dataset.dataset_mask(), dataset.crs, dataset.transform


def _layouts(folder, write_file, data):
    """The direct file (RGB in one) and the Items over it: the file as one multi-band asset, and the same
    bands as three single-band assets (each written by ``write_file`` as the RGB file is)."""
    direct = write_file(folder / "rgb.tif", data, RGB)
    with rasterio.open(direct) as dataset:
        data_names = iter(RGB)
        names = [next(data_names) if ci != ColorInterp.alpha else None for ci in dataset.colorinterp]
    one = {"image": (direct, [{"common_name": n} if n else {"name": "alpha"} for n in names])}
    three = {}
    for i, name in enumerate(RGB):
        file = write_file(folder / f"{name}.tif", data[i : i + 1], (name,))
        with rasterio.open(file) as dataset:
            bands = [{"common_name": name} if ci != ColorInterp.alpha else {} for ci in dataset.colorinterp]
        three[f"B{i}"] = (file, bands)
    return direct, {"one multi-band asset": one, "three single-band assets": three}


def _expected(direct, out, assets, **options):
    """Predicting the direct file, with 255 wherever an asset file read directly holds the pixel invalid
    (an asset's own nodata marks its pixels even where the RGB file's other bands hold data)."""
    classes, mask, crs, transform = _predict_classes(direct, out, **options)
    for file, _ in assets.values():
        with rasterio.open(file) as dataset:
            invalid = reading_mask(dataset) == 0
        classes[invalid], mask[invalid] = 255, 0
    return classes, mask, crs, transform


def _assert_same(item_result, expected):
    classes, mask, crs, transform = item_result
    assert (crs, transform) == expected[2:]
    np.testing.assert_array_equal(classes, expected[0])
    np.testing.assert_array_equal(mask > 0, expected[1] > 0)


def _masked(rows=slice(None), cols=slice(None)):
    mask = np.full((HEIGHT, WIDTH), 255, np.uint8)
    mask[rows, cols] = 0
    return mask


def _alpha(data, first):
    alpha = _masked(slice(10, 20), slice(10, 30))[None]
    return np.concatenate([alpha, data] if first else [data, alpha])


def _alpha_interp(count, first):
    data = [ColorInterp.gray] if count == 1 else [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return [ColorInterp.alpha, *data] if first else [*data, ColorInterp.alpha]


# Each kind of validity a file may state, as a writer of one file of ``data`` bands named ``names``.
VALIDITY = {
    "internal mask": lambda path, data, names: _tif(path, data, mask=_masked(slice(0, 8))),
    ".msk side-car": lambda path, data, names: _tif(
        path, data, mask=_masked(cols=slice(0, 7)), internal_mask=False
    ),
    "alpha band last": lambda path, data, names: _tif(
        path, _alpha(data, False), colorinterp=_alpha_interp(len(names), False), alpha="YES"
    ),
    "alpha band first": lambda path, data, names: _tif(
        path, _alpha(data, True), colorinterp=_alpha_interp(len(names), True)
    ),
    "nodata": lambda path, data, names: _tif(path, data, nodata=0),
}


def _with_nodata_pixels(data):
    """Zeros in every band (nodata everywhere) and in red alone (nodata in the red asset only)."""
    data = data.copy()
    data[:, :5] = 0
    data[0, 30:35, :10] = 0
    return data


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("layout", ["one multi-band asset", "three single-band assets"])
@pytest.mark.parametrize("kind", list(VALIDITY))
def test_an_item_masks_the_pixels_its_asset_files_mask(tmp_path, kind, layout, version):
    """Internal masks, .msk side-cars, alpha bands and nodata of the assets: their pixels are 255 in the
    Item's prediction exactly where predicting the files directly makes them 255."""
    data = _with_nodata_pixels(_scene()) if kind == "nodata" else _scene()
    direct, layouts = _layouts(tmp_path, VALIDITY[kind], data)
    expected = _expected(direct, tmp_path / "direct.tif", layouts[layout])
    assert 0 < int((expected[0] == 255).sum()) < HEIGHT * WIDTH

    item = _item(tmp_path, layouts[layout], version)
    _assert_same(_predict_classes(item, tmp_path / "item.tif"), expected)


def _reflectance(path, data, names, **options):
    """uint16 counts with a per-band scale and offset in the file (reflectance = count × scale + offset)."""
    scales = {"red": 0.0001, "green": 0.0002, "blue": 0.0001}
    offsets = {"red": 0.0, "green": -0.1, "blue": 0.05}
    counts = data.astype(np.uint16) * 40
    return _tif(
        path, counts, scales=[scales[n] for n in names], offsets=[offsets[n] for n in names], **options
    )


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("layout", ["one multi-band asset", "three single-band assets"])
def test_an_item_reads_its_assets_scale_and_offset(tmp_path, layout, version):
    direct, layouts = _layouts(tmp_path, _reflectance, _scene())
    expected = _expected(direct, tmp_path / "direct.tif", layouts[layout], scale=(0.0, 1.0))
    item = _item(tmp_path, layouts[layout], version)
    _assert_same(_predict_classes(item, tmp_path / "item.tif", scale=(0.0, 1.0)), expected)


@pytest.mark.parametrize("layout", ["one multi-band asset", "three single-band assets"])
def test_an_item_reads_its_assets_nbits(tmp_path, layout):
    """4-bit values: refused without --scale as the file is (0..255 would show them nearly black), read the
    same with --scale 0,15."""
    direct, layouts = _layouts(tmp_path, lambda p, d, n: _tif(p, d >> 4, NBITS=4), _scene())
    item = _item(tmp_path, layouts[layout])
    messages = []
    for source in (direct, item):
        with pytest.raises(InputError) as error:
            _predict_classes(source, tmp_path / "refused.tif")
        messages.append(str(error.value).split(": ", 1)[1])
    assert (
        messages[0]
        == messages[1]
        == "4-bit values 0..15 but the model expects 8-bit values 0..255; pass scale=(0, 15)"
    )
    expected = _expected(direct, tmp_path / "direct.tif", layouts[layout], scale=(0.0, 15.0))
    _assert_same(_predict_classes(item, tmp_path / "item.tif", scale=(0.0, 15.0)), expected)


def test_an_asset_without_band_metadata_is_read_by_its_colour_interpretation(tmp_path):
    """A BGR file: predict picks its bands by colour interpretation; named with --assets, so does the Item."""
    data = _scene()
    interp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red]
    direct = _tif(tmp_path / "bgr.tif", data[::-1].copy(), colorinterp=interp)
    expected = _predict_classes(direct, tmp_path / "direct.tif")
    item = _item(tmp_path, {"image": (direct, None)})
    _assert_same(_predict_classes(item, tmp_path / "item.tif", assets=["image"]), expected)


def test_an_item_never_predicts_from_overviews(tmp_path):
    """Overviews hold other values (built before the pixels were rewritten): full resolution is read."""
    data = _scene()
    direct = _tif(tmp_path / "rgb.tif", np.zeros_like(data))
    with rasterio.open(direct, "r+") as dataset:
        dataset.build_overviews([2, 4])
        dataset.write(data)
    expected = _predict_classes(direct, tmp_path / "direct.tif")
    item = _item(tmp_path, {"image": (direct, [{"common_name": n} for n in RGB])})
    _assert_same(_predict_classes(item, tmp_path / "item.tif"), expected)
    with rasterio.open(tmp_path / "item.tif") as out:
        assert len(np.unique(out.read(1))) > 1


@pytest.mark.parametrize("version", ["1.0", "1.1"])
@pytest.mark.parametrize("layout", ["one multi-band asset", "three single-band assets"])
def test_raster_bands_of_the_item_apply_where_the_files_say_nothing(tmp_path, layout, version):
    """The Item's scale, offset and nodata read the files as if the files stated them."""
    data = _with_nodata_pixels(_scene())
    stated = {"red": (0.0001, 0.0), "green": (0.0002, -0.1), "blue": (0.0001, 0.05)}
    direct, layouts = _layouts(tmp_path, lambda p, d, n: _reflectance(p, d, n, nodata=0), data)
    expected = _expected(direct, tmp_path / "direct.tif", layouts[layout], scale=(0.0, 1.0))
    (tmp_path / "plain").mkdir()
    _, silent = _layouts(tmp_path / "plain", lambda p, d, n: _tif(p, d.astype(np.uint16) * 40), data)
    assets = {
        key: (
            file,
            [
                b | dict(zip(("scale", "offset"), stated[b["common_name"]], strict=True), nodata=0)
                for b in bands
            ],
        )
        for key, (file, bands) in silent[layout].items()
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeosegWarning)
        result = _predict_classes(
            _item(tmp_path / "plain", assets, version), tmp_path / "item.tif", scale=(0.0, 1.0)
        )
    _assert_same(result, expected)


def test_where_the_item_and_the_file_disagree_the_file_wins_with_one_warning(tmp_path):
    direct, layouts = _layouts(tmp_path, _reflectance, _scene())
    expected = _expected(
        direct, tmp_path / "direct.tif", layouts["three single-band assets"], scale=(0.0, 1.0)
    )
    assets = {
        key: (file, [b | {"scale": 0.001, "offset": 0.0} for b in bands])
        for key, (file, bands) in layouts["three single-band assets"].items()
    }
    item = _item(tmp_path, assets)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _predict_classes(item, tmp_path / "item.tif", scale=(0.0, 1.0))
    _assert_same(result, expected)
    said = [str(w.message) for w in caught if issubclass(w.category, GeosegWarning)]
    assert said == [
        f"{item}: the item's raster:bands disagree with the files, which win: "
        "asset B0 band 1 scale 0.001 (file: 0.0001); asset B1 band 1 scale 0.001 (file: 0.0002); "
        "asset B1 band 1 offset 0 (file: -0.1); asset B2 band 1 scale 0.001 (file: 0.0001); "
        "asset B2 band 1 offset 0 (file: 0.05)"
    ]


# --- asset hrefs are URIs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "href, base, path",
    [
        ("s3://bucket/scenes/B04.tif", "/data/item.json", "/vsis3/bucket/scenes/B04.tif"),
        ("gs://bucket/my%20scene.tif", "/data/item.json", "/vsigs/bucket/my scene.tif"),
        ("az://container/x/B04.tif", "/data/item.json", "/vsiaz/container/x/B04.tif"),
        ("../cogs/B04.tif", "s3://bucket/items/item.json", "/vsis3/bucket/cogs/B04.tif"),
        (
            "https://x.org/cogs/B04.tif?sig=a%2Fb",
            "/data/item.json",
            "/vsicurl?list_dir=no&url=https%3A%2F%2Fx.org%2Fcogs%2FB04.tif%3Fsig%3Da%252Fb",
        ),
        (
            "B04.tif",
            "https://x.org/stac/item.json",
            "/vsicurl?list_dir=no&url=https%3A%2F%2Fx.org%2Fstac%2FB04.tif",
        ),
        ("file:///data/my%20scene.tif", "/elsewhere/item.json", "/data/my scene.tif"),
        ("file://localhost/data/B04.tif", "/elsewhere/item.json", "/data/B04.tif"),
        ("B04.tif", "file:///data/items/item.json", "/data/items/B04.tif"),
        ("cogs/my%20scene.tif", "/data/items/item.json", "/data/items/cogs/my scene.tif"),
        ("./cogs/../B04.tif", "/data/items/item.json", "/data/items/B04.tif"),
        ("/data/B04.tif", "https://x.org/stac/item.json", "/data/B04.tif"),
        ("/vsizip//data/a.zip/B04.tif", "/data/item.json", "/vsizip//data/a.zip/B04.tif"),
    ],
)
def test_an_href_is_resolved_as_a_uri_reference(href, base, path):
    assert resolve_href(href, base) == path


@pytest.mark.parametrize(
    "href, message",
    [
        ("ftp://x.org/B04.tif", "ftp://x.org/B04.tif: GDAL cannot read ftp:// URIs"),
        ("file://nas/data/B04.tif", "file://nas/data/B04.tif: a file URI on another host (nas)"),
    ],
)
def test_an_href_gdal_cannot_read_is_refused_in_one_line(href, message):
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        resolve_href(href, "/data/item.json")


@pytest.mark.parametrize("form", ["file URI", "percent-encoded relative", "self link", "absolute self path"])
def test_an_item_reads_assets_named_by_any_uri_form(tmp_path, form):
    """file:// URIs, percent-encoded names and relative hrefs against the Item's own location or, for an
    Item saved away from its assets, its self link: all read the file predicted directly."""
    published = tmp_path / "published"
    published.mkdir()
    direct = _tif(published / "my scene.tif", _scene())
    expected = _predict_classes(direct, tmp_path / "direct.tif")
    bands = [{"common_name": n} for n in RGB]
    item = _item(published, {"image": (direct, bands)})
    body = json.loads(item.read_text())
    href = {"file URI": direct.as_uri(), "percent-encoded relative": "my%20scene.tif"}
    body["assets"]["image"]["href"] = href.get(form, "my%20scene.tif")
    if form in ("self link", "absolute self path"):
        self_href = (
            (published / "item.json").as_uri() if form == "self link" else str(published / "item.json")
        )
        body["links"] = [{"rel": "self", "href": self_href}]
        item = tmp_path / "saved" / "item.json"
        item.parent.mkdir()
    item.write_text(json.dumps(body))
    _assert_same(_predict_classes(item, tmp_path / "item.tif"), expected)
