"""STAC Items as ``geoseg predict`` input: assets picked by band common names, stacked by a VRT, local or
served over HTTP with range requests; the output sits on the assets' grid and the record names the item."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from helpers import write_small_checkpoint

from geoseg.cli.main import cli
from geoseg.stac.items import is_stac_item

SCENE = "sample_data/netherlands_0p25m_epsg28992.tif"
WINDOW = rasterio.windows.Window(300, 200, 96, 80)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


def _write(path, data, profile):
    with rasterio.open(path, "w", **{**profile, "count": data.shape[0]}) as dst:
        dst.write(data)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """Single-band COGs red/green/blue (a crop of the sample orthophoto), the same as one RGB GeoTIFF, and
    STAC 1.0 (eo:bands) and 1.1 (bands) items with relative hrefs; assets listed blue first."""
    folder = tmp_path_factory.mktemp("catalogue")
    with rasterio.open(SCENE) as src:
        data = src.read(window=WINDOW)
        profile = dict(
            driver="COG",
            width=96,
            height=80,
            dtype="uint8",
            crs=src.crs,
            transform=src.window_transform(WINDOW),
        )
    _write(folder / "rgb.tif", data, {**profile, "driver": "GTiff"})
    (folder / "cogs").mkdir()
    for i, name in enumerate(("red", "green", "blue")):
        _write(folder / "cogs" / f"{name}.tif", data[i : i + 1], profile)
    shifted = profile["transform"] * profile["transform"].translation(10, 0)
    _write(folder / "cogs" / "blue_shifted.tif", data[2:3], {**profile, "transform": shifted})
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
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".aux.xml")) == ["classes.tif"]


def test_assets_override_the_band_choice(checkpoint, catalogue, reference, tmp_path):
    out = tmp_path / "classes.tif"
    record = _predict(checkpoint, catalogue / "item.json", out, "--assets", "B2,B1,B0")
    assert record["item"] == "scene-42"
    with rasterio.open(out) as dataset:
        assert np.array_equal(dataset.read(1), reference[0])
    swapped = _predict(checkpoint, catalogue / "item.json", tmp_path / "bgr.tif", "--assets", "B0,B1,B2")
    with rasterio.open(swapped["outputs"]["classes"]) as dataset:
        assert not np.array_equal(dataset.read(1), reference[0])  # blue fed as red: another answer


@pytest.fixture
def server(catalogue, tmp_path):
    """The catalogue served on 127.0.0.1 with range requests, in its own process; yields (URL, range log)."""
    log = tmp_path / "ranges.log"
    log.touch()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("range_server.py")), str(catalogue), str(log)],
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
