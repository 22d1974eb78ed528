"""predict keeps all of a scene's georeferencing: RPCs and GCPs reach every output raster unchanged, and a
scene placed only by them is never warned about as if it had no georeferencing."""

from __future__ import annotations

import warnings

import pytest
import rasterio
from helpers import PixelNet, write_scene
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

from geoseg.errors import GeosegWarning
from geoseg.inference.batch import predict
from geoseg.model.card import ClassInfo, ModelCard

CARD = ModelCard(
    classes=[ClassInfo("ground", (255, 255, 255)), ClassInfo("building", (255, 0, 0))],
    tile_size=64,
    overlap=16,
)
WIDTH, HEIGHT = 150, 100


def rpcs() -> RPC:
    """A plausible RPC set (coefficients as a satellite vendor writes them, to 15 significant digits)."""
    num = [0.00123456789012345, 1.01234567890123, -0.0234567890123456] + [1e-7 * (i + 1) for i in range(17)]
    den = [1.0, 0.000123456789012345] + [1e-8 * (i + 1) for i in range(18)]
    return RPC(
        height_off=245.0,
        height_scale=502.0,
        lat_off=52.3701234567,
        lat_scale=0.0412345678,
        line_den_coeff=den,
        line_num_coeff=[-v for v in num],
        line_off=HEIGHT / 2,
        line_scale=HEIGHT / 2,
        long_off=4.8956789012,
        long_scale=0.0634567890,
        samp_den_coeff=den,
        samp_num_coeff=num,
        samp_off=WIDTH / 2,
        samp_scale=WIDTH / 2,
        err_bias=1.5,
        err_rand=0.25,
    )


def gcps() -> list[GroundControlPoint]:
    corners = [(0, 0), (0, WIDTH), (HEIGHT, 0), (HEIGHT, WIDTH), (HEIGHT / 2, WIDTH / 3)]
    return [
        GroundControlPoint(r, c, 630000.0 + 0.5 * c + 0.01 * r, 5800000.0 - 0.5 * r, 12.5, id=str(i))
        for i, (r, c) in enumerate(corners)
    ]


def scene(path, *, with_rpcs=False, with_gcps=False):
    write_scene(path, WIDTH, HEIGHT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "r+") as dst:
            if with_rpcs:
                dst.rpcs = rpcs()
            if with_gcps:
                dst.gcps = (gcps(), CRS.from_epsg(32631))
    return path


def values(placed) -> tuple[list[tuple], CRS | None]:
    """GCPs as comparable values (rasterio's GroundControlPoint compares by identity)."""
    points, crs = placed
    return [(p.row, p.col, p.x, p.y, p.z, p.id) for p in points], crs


def outputs(tmp_path):
    return [tmp_path / "out.tif", tmp_path / "out.confidence.tif", tmp_path / "out.probabilities.tif"]


def run(source, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", GeosegWarning)  # a scene placed by RPCs or GCPs is georeferenced
        predict(
            [source],
            tmp_path / "out.tif",
            model=PixelNet(3, 2),
            card=CARD,
            confidence=True,
            probabilities=True,
        )


@pytest.mark.parametrize("with_gcps", [False, True])
def test_rpcs_reach_every_output_unchanged(tmp_path, with_gcps):
    source = scene(tmp_path / "scene.tif", with_rpcs=True, with_gcps=with_gcps)
    run(source, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(source) as src:
            expected, expected_tags, expected_gcps = src.rpcs, src.tags(ns="RPC"), values(src.gcps)
        assert expected is not None
        for path in outputs(tmp_path):
            with rasterio.open(path) as out:
                assert out.rpcs == expected, path
                assert out.tags(ns="RPC") == expected_tags  # every coefficient, to the digit
                assert values(out.gcps) == expected_gcps
                assert out.crs is None and (out.width, out.height) == (WIDTH, HEIGHT)


def test_gcps_reach_every_output_unchanged(tmp_path):
    source = scene(tmp_path / "scene.tif", with_gcps=True)
    run(source, tmp_path)
    with rasterio.open(source) as src:
        expected = values(src.gcps)
    assert len(expected[0]) == 5 and expected[1] == CRS.from_epsg(32631)
    for path in outputs(tmp_path):
        with rasterio.open(path) as out:
            assert values(out.gcps) == expected, path
            assert out.rpcs is None
