"""geoseg serve: class tiles are the batch raster warped (nearest), computed region by region on demand into
the work folder predict --resume finishes; nothing outside the served inputs is reachable."""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, PixelNet, write_scene, write_small_checkpoint
from rasterio.io import MemoryFile

import geoseg.inference.plan as planning
import geoseg.inference.stream as stream
from geoseg.errors import OutputError
from geoseg.inference.scene import predict_scene
from geoseg.raster.classes import class_colormap

pytest.importorskip("starlette")
pytest.importorskip("rio_tiler")

from geoseg.serve import tiles  # noqa: E402
from geoseg.serve.layers import open_layers  # noqa: E402
from geoseg.serve.server import bind, make_server  # noqa: E402

WIDTH, HEIGHT = 1300, 1100
TRANSFORM = Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6)
CRS = "EPSG:32633"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """1300 x 1100 px in six regions of about one block each (the real minimum is ten tiles), its
    bottom-left corner without data."""
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", 512 * 512)
    mask = np.full((HEIGHT, WIDTH), 255, dtype=np.uint8)
    mask[800:, :300] = 0
    path = tmp_path / "scene.tif"
    write_scene(path, WIDTH, HEIGHT, crs=CRS, transform=TRANSFORM, mask=mask)
    return path


class Server:
    """A server on 127.0.0.1 and a free port, in a thread; stopped and its layers closed by :meth:`stop`."""

    def __init__(self, layers):
        self.layers = layers
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.server = make_server(layers)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def get(self, path: str) -> tuple[int, bytes]:
        """Send ``path`` exactly as given (no normalisation of ``..`` or escapes by the client)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        connection.close()
        return response.status, body

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.layers.close()


@pytest.fixture
def served(scene, tmp_path):
    layers = open_layers(
        [str(scene)], model=PixelNet(), card=CARD, outputs=[tmp_path / "out.tif"], device="cpu"
    )
    server = Server(layers)
    yield server
    server.stop()


@pytest.fixture
def reference(scene, tmp_path):
    """The batch raster: predict of the whole scene in one run."""
    path = tmp_path / "reference.tif"
    predict_scene(PixelNet(), CARD, scene, path, device="cpu")
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _rgba(png: bytes) -> np.ndarray:
    with MemoryFile(png) as memory, memory.open() as dataset:
        assert (dataset.count, dataset.width, dataset.height) == (4, 256, 256)
        return dataset.read()


def _expected_rgba(classes: np.ndarray, z: int, x: int, y: int) -> np.ndarray:
    """The batch raster sampled at each tile pixel's centre (nearest neighbour, every point transformed
    exactly by PROJ), in the card's colours; outside the scene and no-data transparent."""
    from pyproj import Transformer

    left, bottom, right, top = tiles.TMS.xy_bounds(x, y, z)
    centres = (np.arange(256) + 0.5) / 256
    mx, my = np.meshgrid(left + centres * (right - left), top - centres * (top - bottom))
    ex, ny = Transformer.from_crs("EPSG:3857", CRS, always_xy=True).transform(mx, my)
    col, row = (~TRANSFORM) * (ex, ny)
    col, row = np.floor(col).astype(int), np.floor(row).astype(int)
    inside = (row >= 0) & (row < classes.shape[0]) & (col >= 0) & (col < classes.shape[1])
    warped = np.full((256, 256), 255, dtype=np.uint8)
    warped[inside] = classes[row[inside], col[inside]]
    table = np.array([class_colormap([c.color for c in CARD.classes])[i] for i in range(256)], dtype=np.uint8)
    return np.moveaxis(table[warped], -1, 0)


def _tile_of(row: float, col: float, z: int) -> tuple[int, int, int]:
    from rasterio.warp import transform as points

    xs, ys = points(CRS, "EPSG:4326", *zip(TRANSFORM * (col, row), strict=True))
    found = tiles.TMS.tile(xs[0], ys[0], z)
    return z, found.x, found.y


def _native_zoom() -> int:
    return tiles.native_zoom(CRS, TRANSFORM, WIDTH, HEIGHT)


def test_class_tiles_equal_the_batch_raster_warped_across_region_borders_and_the_scene_edge(
    served, reference
):
    native = _native_zoom()
    cases = [
        _tile_of(512, 512, native),  # a corner of four regions
        _tile_of(512, 512, native + 1),
        _tile_of(600, 1024, native),  # a column border
        _tile_of(0, 0, native),  # the scene's top-left corner: half outside
        _tile_of(HEIGHT - 1, WIDTH - 1, native - 1),  # the bottom-right corner
        _tile_of(HEIGHT - 1, 0, native),  # the no-data corner
        _tile_of(HEIGHT / 2, WIDTH / 2, native - 2),  # the whole scene in about one tile
    ]
    for z, x, y in cases:
        status, png = served.get(f"/tiles/classes/{z}/{x}/{y}.png")
        assert status == 200
        expected = _expected_rgba(reference, z, x, y)
        np.testing.assert_array_equal(_rgba(png), expected, err_msg=f"tile {z}/{x}/{y}")
    nodata = _rgba(served.get("/tiles/classes/{}/{}/{}.png".format(*_tile_of(HEIGHT - 1, 0, native)))[1])
    assert (nodata[3] == 0).sum() > 256 * 64  # the no-data corner (and beyond the scene) is transparent


def test_a_second_request_of_a_tile_computes_nothing_and_coarse_zooms_start_no_work(served):
    cache = served.layers.layers["classes"].cache
    z, x, y = _tile_of(512, 512, _native_zoom())
    first = served.get(f"/tiles/classes/{z}/{x}/{y}.png")
    assert cache.computed == 4 and cache.done == {0, 1, 3, 4}
    assert served.get(f"/tiles/classes/{z}/{x}/{y}.png") == first
    assert cache.computed == 4
    progress = json.loads(served.get("/api/progress")[1])
    assert progress["layers"]["classes"] == {"regions": 6, "done": 4, "computed": 4}
    coarse = _tile_of(HEIGHT / 2, WIDTH / 2, _native_zoom() - 4)
    assert served.get("/tiles/classes/{}/{}/{}.png".format(*coarse))[0] == 200
    assert cache.computed == 4  # shows what is computed, starts nothing


def test_predict_resume_after_serving_computes_only_the_regions_the_browser_has_not(
    scene, tmp_path, reference, monkeypatch
):
    output = tmp_path / "out.tif"
    layers = open_layers([str(scene)], model=PixelNet(), card=CARD, outputs=[output], device="cpu")
    server = Server(layers)
    try:
        server.get("/tiles/classes/{}/{}/{}.png".format(*_tile_of(100, 100, _native_zoom())))
        assert layers.layers["classes"].cache.done == {0}
        click = json.loads(
            server.get(f"/api/pixel/classes?lon={_lonlat(100, 100)[0]}&lat={_lonlat(100, 100)[1]}")[1]
        )
        assert click["name"] == CARD.class_names[reference[100, 100]] and 0 < click["confidence"] <= 1
        # the server holds the output's lock while it runs: predict --resume meanwhile is refused in one line
        with pytest.raises(OutputError) as refused:
            predict_scene(PixelNet(), CARD, scene, output, device="cpu", resume=True)
        assert str(refused.value) == (
            f"{output}: another process (PID {os.getpid()}) is writing it; wait for it to finish or choose "
            "another output name"
        )
    finally:
        server.stop()
    work = tmp_path / ".out.tif.geoseg-work"
    assert sorted(p.name for p in work.glob("region-*.json")) == ["region-00000.json"]
    computed = []
    run_region = stream.run_region
    monkeypatch.setattr(
        stream, "run_region", lambda *a, **k: computed.append(a[3].index) or run_region(*a, **k)
    )
    predict_scene(PixelNet(), CARD, scene, output, device="cpu", resume=True)
    assert computed == [1, 2, 3, 4, 5]  # the five regions the browser did not ask for, not region 0
    with rasterio.open(output) as dataset:
        np.testing.assert_array_equal(dataset.read(1), reference)
    assert not work.exists()


@pytest.mark.slow  # a small MANet through onnxruntime over 1300 x 1100 px: ~30 s on two loaded cores
def test_a_checkpoint_is_served_by_the_engine_predict_chooses_so_resume_reuses_its_regions(
    scene, tmp_path, monkeypatch
):
    """Before: serve ran the network in torch while predict's auto engine (onnxruntime on the CPU) ran its
    export, so ``predict --resume`` refused the browser's regions ("the model changed")."""
    from geoseg.inference.batch import predict

    checkpoint = write_small_checkpoint(tmp_path / "net.safetensors")
    output = tmp_path / "out.tif"
    layers = open_layers([str(scene)], model=checkpoint, outputs=[output], device="cpu")
    server = Server(layers)
    try:
        server.get("/tiles/classes/{}/{}/{}.png".format(*_tile_of(100, 100, _native_zoom())))
        assert layers.layers["classes"].cache.done == {0}
    finally:
        server.stop()
    computed = []
    run_region = stream.run_region
    monkeypatch.setattr(
        stream, "run_region", lambda *a, **k: computed.append(a[3].index) or run_region(*a, **k)
    )
    [result] = predict([str(scene)], output, model=checkpoint, device="cpu", resume=True)
    assert (result.engine, result.precision) == ("onnxruntime", "fp32")
    assert computed == [1, 2, 3, 4, 5]  # region 0 came from the browser's request


def _lonlat(row: float, col: float) -> tuple[float, float]:
    from rasterio.warp import transform as points

    xs, ys = points(CRS, "EPSG:4326", *zip(TRANSFORM * (col + 0.5, row + 0.5), strict=True))
    return xs[0], ys[0]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static/%252e%252e/%252e%252e/etc/passwd",
        "/static/..\\..\\etc\\passwd",
        "/static/leaflet/../../__init__.py",
        "/static/leaflet/..%2f..%2fapp.py",
        "/tiles/..%2f..%2fetc%2fpasswd/1/0/0.png",
        "/tiles/%2e%2e/1/0/0.png",
        "/../../etc/passwd",
        "/api/pixel/..%2f..%2fetc%2fpasswd?lon=0&lat=0",
    ],
)
def test_paths_outside_the_served_files_are_never_read(served, path):
    status, body = served.get(path)
    assert status == 404
    assert b"root:" not in body and b"import" not in body


def test_the_page_and_its_vendored_map_library_are_served(served):
    status, page = served.get("/")
    assert status == 200 and b"/static/leaflet/leaflet.js" in page
    assert served.get("/static/leaflet/leaflet.js")[0] == 200
    assert (
        b"BSD" in served.get("/static/leaflet/LICENSE.txt")[1]
        or served.get("/static/leaflet/LICENSE.txt")[0] == 200
    )
    layers = json.loads(served.get("/api/layers")[1])["layers"]
    assert [layer["name"] for layer in layers] == ["image", "classes"]
    assert [e["name"] for e in layers[1]["legend"]] == CARD.class_names
    status, xml = served.get("/wmts/WMTSCapabilities.xml")
    assert status == 200 and b"/tiles/classes/{TileMatrix}/{TileCol}/{TileRow}.png" in xml
    image = _rgba(served.get("/tiles/image/{}/{}/{}.png".format(*_tile_of(800, 300, _native_zoom())))[1])
    assert (image[3] == 0).any() and (image[3] == 255).any()  # no-data clear, data opaque


def test_a_scene_the_model_cannot_read_is_refused_before_the_server_starts(tmp_path):
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    two_bands = tmp_path / "two.tif"
    write_scene(two_bands, 64, 64, count=2, crs=CRS, transform=TRANSFORM)
    served = CliRunner().invoke(cli, ["serve", str(two_bands), "--port", "0"])
    predicted = CliRunner().invoke(cli, ["predict", str(two_bands), "-o", str(tmp_path / "o.tif")])
    assert served.exit_code == predicted.exit_code == 1
    line = served.output.strip()
    assert line.startswith("Error: ") and "\n" not in line and "geoseg serve:" not in line
    assert line == predicted.output.strip()


class GateNet(PixelNet):
    """PixelNet that holds its first batch until ``gate`` is set, so a region stays in computation."""

    def __init__(self, gate: threading.Event):
        super().__init__()
        self.gate = gate

    def forward(self, x):
        self.gate.wait(timeout=60)
        return super().forward(x)


def test_a_region_being_computed_is_not_queued_again_by_a_newer_request(scene, tmp_path, reference):
    gate = threading.Event()
    layers = open_layers(
        [str(scene)], model=GateNet(gate), card=CARD, outputs=[tmp_path / "o.tif"], device="cpu"
    )
    server = Server(layers)
    try:
        z, x, y = _tile_of(100, 100, _native_zoom())  # region 0 only
        assert server.get(f"/tiles/classes/{z}/{x}/{y}.png?wait=0&view=1")[0] == 200
        deadline = time.monotonic() + 30
        while json.loads(server.get("/api/progress")[1])["running"] is None:
            assert time.monotonic() < deadline, "region 0 did not start"
            time.sleep(0.05)
        assert server.get(f"/tiles/classes/{z}/{x}/{y}.png?wait=0&view=2")[0] == 200  # the page moved
        assert json.loads(server.get("/api/progress")[1])["queued"] == 0
        gate.set()
        status, png = server.get(f"/tiles/classes/{z}/{x}/{y}.png")  # a plain client waits for it
        assert status == 200
        np.testing.assert_array_equal(_rgba(png), _expected_rgba(reference, z, x, y))
        time.sleep(0.6)  # a duplicate would start now (the queue re-checks twice a second)
        progress = json.loads(server.get("/api/progress")[1])
        assert progress["running"] is None and progress["queued"] == 0
        assert layers.layers["classes"].cache.computed == 1
    finally:
        server.stop()


def test_several_inputs_are_one_layer_pair_each_named_by_stem(tmp_path):
    first, second = tmp_path / "north.tif", tmp_path / "south.tif"
    write_scene(first, 200, 150, seed=1, crs=CRS, transform=TRANSFORM)
    write_scene(second, 200, 150, seed=2, crs=CRS, transform=TRANSFORM)
    finished = tmp_path / "done.tif"
    predict_scene(PixelNet(), CARD, second, finished, device="cpu")
    layers = open_layers(
        [str(first), str(second), str(finished)],
        model=PixelNet(),
        card=CARD,
        outputs=[tmp_path / "n.tif", tmp_path / "s.tif", tmp_path / "d.tif"],
        device="cpu",
    )
    server = Server(layers)
    try:
        listed = json.loads(server.get("/api/layers")[1])["layers"]
        assert [layer["name"] for layer in listed] == [
            "north.image",
            "north.classes",
            "south.image",
            "south.classes",
            "done.classes",
        ]
        with rasterio.open(finished) as dataset:
            south = dataset.read(1)
        z, x, y = _tile_of(75, 100, _native_zoom())
        expected = _expected_rgba(south, z, x, y)
        for name in ("south.classes", "done.classes"):  # computed here and read from predict's raster
            status, png = server.get(f"/tiles/{name}/{z}/{x}/{y}.png")
            assert status == 200
            np.testing.assert_array_equal(_rgba(png), expected, err_msg=name)
        north = _rgba(server.get(f"/tiles/north.classes/{z}/{x}/{y}.png")[1])
        assert (north[3] == 255).sum() == (expected[3] == 255).sum() and not np.array_equal(north, expected)
        assert layers.layers["south.classes"].cache.computed == 1
        assert layers.layers["north.classes"].cache.work.path.parent == tmp_path
    finally:
        server.stop()


def test_two_inputs_that_would_share_a_work_folder_are_refused(tmp_path):
    from geoseg.errors import ConfigurationError

    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        write_scene(tmp_path / folder / "scene.tif", 64, 64, crs=CRS, transform=TRANSFORM)
    inputs = [str(tmp_path / "a" / "scene.tif"), str(tmp_path / "b" / "scene.tif")]
    with pytest.raises(ConfigurationError, match="scene.classes.tif.*give each input its own -o"):
        open_layers(inputs, model=PixelNet(), card=CARD, device="cpu")


def _serve_cli(tmp_path, monkeypatch, *args: str):
    """``geoseg serve`` of a class raster through the CLI, the server itself replaced by a stub."""
    from click.testing import CliRunner

    import geoseg.serve.server as server
    from geoseg.cli.main import cli

    classes = tmp_path / "classes.tif"
    if not classes.exists():
        write_scene(tmp_path / "s.tif", 64, 64, crs=CRS, transform=TRANSFORM)
        predict_scene(PixelNet(), CARD, tmp_path / "s.tif", classes, device="cpu")
    monkeypatch.setattr(server, "serve", lambda layers, sock, ready: (ready(), layers.close(), sock.close()))
    return CliRunner().invoke(cli, ["serve", str(classes), "--port", "0", *args])


def test_a_host_other_than_this_machine_gets_one_warning_line(tmp_path, monkeypatch):
    quiet = _serve_cli(tmp_path, monkeypatch)
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stderr.startswith("geoseg serve: http://127.0.0.1:") and len(quiet.stderr.splitlines()) == 1
    opened = _serve_cli(tmp_path, monkeypatch, "--host", "0.0.0.0")
    assert opened.exit_code == 0, opened.output
    warning, address = opened.stderr.splitlines()
    assert warning == "Warning: listening on 0.0.0.0: anyone who reaches it can see the map and the scene"
    assert address.startswith("geoseg serve: http://0.0.0.0:")
    assert opened.stdout == ""


@pytest.mark.slow
def test_ctrl_c_stops_with_exit_130_one_line_naming_the_work_folder_and_no_other_files(tmp_path):
    import signal
    import subprocess
    import sys
    import urllib.request

    from helpers import write_small_checkpoint

    write_scene(tmp_path / "scene.tif", 200, 150, crs=CRS, transform=TRANSFORM)
    write_small_checkpoint(tmp_path / "model.safetensors")
    before = set(os.listdir(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "geoseg.cli.main", "serve", "scene.tif", "-m", "model.safetensors"]
    process = subprocess.Popen(
        [*command, "--port", "0"], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        address = process.stderr.readline().split()[2]
        z, x, y = _tile_of(75, 100, 18)
        with urllib.request.urlopen(f"{address}tiles/classes/{z}/{x}/{y}.png", timeout=120) as response:
            assert response.status == 200
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=60) == 130
    finally:
        process.kill()
    work = tmp_path / ".scene.classes.tif.geoseg-work"
    assert rest.splitlines() == [
        f"geoseg serve: stopped; computed regions kept in {work.resolve()} (predict --resume with the same "
        "-o computes only the rest; delete the folder to drop them)"
    ]
    assert set(os.listdir(tmp_path)) - before == {work.name}
    assert sorted(p.name for p in work.iterdir()) == [
        "manifest.json",
        "region-00000.classes.tif",
        "region-00000.confidence.tif",
        "region-00000.json",
    ]


def _browser_script():
    """benchmarks/serve_screenshot.py: headless Chromium and the colour check, shared with the test."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "serve_screenshot", REPO / "benchmarks" / "serve_screenshot.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_a_real_browser_shows_each_class_colour_where_the_batch_raster_has_that_class(
    served, scene, tmp_path, reference
):
    shot = _browser_script()
    if shot.browser() is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    layer = json.loads(served.get("/api/layers")[1])["layers"][1]
    width, height = 900, 700
    view = shot.view_of(layer["bounds"], width, height)
    page = f"http://127.0.0.1:{served.port}/#{view[0]}/{view[1]:.9f}/{view[2]:.9f}"
    shot.screenshot(page, tmp_path / "computing.png", width, height)  # the page asks for the regions
    progress = shot.wait_for_regions(f"http://127.0.0.1:{served.port}/", timeout_s=300)
    assert progress["layers"]["classes"]["done"] == 6  # the page's requests computed every region
    shot.screenshot(page, tmp_path / "done.png", width, height)
    colors = [c.color for c in CARD.classes]
    found = shot.check_colours(tmp_path / "done.png", view, scene, tmp_path / "reference.tif", colors)
    assert found["pixels"] > 100_000
    assert found["agreement"] > 0.999, found
    pairs = zip(found["screen_histogram"], found["raster_histogram"], strict=True)
    assert all(seen > 0 for seen, truth in pairs if truth)  # every class of the raster is on screen
