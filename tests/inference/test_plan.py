"""Regions: the unit of work beyond one stream. A region is computed from the tiles of the global grid that
touch it, so any cut into regions gives the pixels of the single stream, exactly (the per-pixel network)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, PixelNet, write_scene

import geoseg.inference.plan as planning
from geoseg.inference.grid import CHUNK_MULTIPLE, TileGrid
from geoseg.inference.plan import plan_regions
from geoseg.inference.reader import _own_mask
from geoseg.inference.scene import predict_scene

TRANSFORM = Affine(0.5, 0, 500000, 0, -0.5, 5800000)


def _scene(path, width=1300, height=1100, mask=None):
    write_scene(path, width, height, mask=mask, crs="EPSG:32633", transform=TRANSFORM)
    return path


def _read(path):
    with rasterio.open(path) as src:
        colormap = src.colormap(1) if src.colorinterp[0].name == "palette" else None
        descriptions = src.descriptions
        return src.read(), src.read_masks(), src.profile, src.tags(), colormap, descriptions


@pytest.fixture
def small_regions(monkeypatch):
    """Regions of one 512-px block per side on small scenes (the real minimum is ten tiles)."""
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", CHUNK_MULTIPLE * CHUNK_MULTIPLE)


# --- planning ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "resume", "count"), [(1, False, 1), (1, True, 4), (2, False, 4), (4, False, 4)]
)
def test_regions_cover_the_scene_once_on_block_boundaries(workers, resume, count):
    grid = TileGrid(6144, 6144, 256, 32)
    regions = plan_regions(grid, workers, resume)
    assert len(regions) == count
    owner = np.zeros((6144 // 512, 6144 // 512), np.int32)
    for r in regions:
        assert r.y0 % 512 == 0 and r.x0 % 512 == 0
        owner[r.y0 // 512 : -(-r.y1 // 512), r.x0 // 512 : -(-r.x1 // 512)] += 1
    assert (owner == 1).all()


@pytest.mark.parametrize(("workers", "resume"), [(1, False), (2, False), (1, True), (2, True)])
def test_border_tiles_computed_twice_stay_within_15_percent_on_6144px(workers, resume):
    grid = TileGrid(6144, 6144, 256, 32)  # 28 x 28 = 784 tiles
    tiles = sum(grid.for_region(r).num_tiles for r in plan_regions(grid, workers, resume))
    assert grid.num_tiles == 784
    if workers == 1 and not resume:
        assert tiles == 784  # one region: every tile exactly once, as the single stream
    else:
        assert 784 < tiles <= 1.15 * 784


def test_a_region_holds_exactly_the_grid_tiles_that_touch_it():
    grid = TileGrid(2000, 1500, 256, 64)  # starts every 192 px
    region = grid.for_region(planning.Region(0, 512, 1024, 1024, 1500))
    touching = [(y, x) for y in grid.ys for x in grid.xs if y < 1024 and y + 256 > 512 and x + 256 > 1024]
    tiles = [(t.y, t.x) for c in region.chunks() for t in c.tiles]
    assert sorted(tiles) == sorted(touching) and len(tiles) == region.num_tiles
    assert min(y for y, _ in tiles) == 384 < 512  # tiles starting above the region belong to its first row
    first = region.chunk(0, 0)
    assert (first.y0, first.x0, first.acc_y0, first.acc_x0) == (512, 1024, 384, 960)


def test_an_all_invalid_chunk_mask_waits_as_one_value_not_a_copy_of_the_chunk():
    empty = _own_mask(np.zeros((1500, 1500), bool))
    assert empty.shape == (1500, 1500) and not empty.any() and empty.strides == (0, 0)
    base = np.ones((1500, 1500), bool)
    base[0, 0] = False
    part = _own_mask(base[:1024, :1024])
    assert part.base is None and part.nbytes == 1024 * 1024  # not a view keeping the larger mask alive


# --- exactness ----------------------------------------------------------------------------------------------


def test_regions_give_the_single_stream_pixels_exactly(tmp_path, small_regions):
    mask = np.full((1100, 1300), 255, np.uint8)
    mask[300:700, 400:1100] = 0  # no data across region borders
    source = _scene(tmp_path / "scene.tif", mask=mask)
    net = PixelNet()
    outputs = {}
    for name, resume in (("stream", False), ("regions", True)):
        kinds = ("classes", "confidence", "probabilities")
        paths = {k: tmp_path / f"{name}.{k}.tif" for k in kinds}
        result = predict_scene(
            net,
            CARD,
            source,
            paths["classes"],
            confidence_path=paths["confidence"],
            probabilities_path=paths["probabilities"],
            device="cpu",
            resume=resume,
        )
        outputs[name] = (result, {k: _read(p) for k, p in paths.items()})
    (stream, single), (regions, parts) = outputs["stream"], outputs["regions"]
    grid = TileGrid(1100, 1300, 64, 16, margin=8)  # the plan's: mirrored by 8 px
    assert stream.tiles < grid.num_tiles  # tiles inside the no-data hole are skipped
    assert regions.tiles > stream.tiles  # 6 regions: border tiles computed by both neighbours
    assert len(plan_regions(grid, 1, True)) == 6
    for kind in single:
        data, masks, profile, tags, colormap, descriptions = single[kind]
        assert np.array_equal(parts[kind][0], data), kind
        assert np.array_equal(parts[kind][1], masks), kind
        assert parts[kind][2:] == (profile, tags, colormap, descriptions), kind
    assert (single["classes"][0][0, 300:700, 400:1100] == 255).all()
    assert single["classes"][2]["transform"] == TRANSFORM and single["classes"][2]["crs"] == "EPSG:32633"
    assert regions.class_fractions == stream.class_fractions
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["scene.tif"]
        + [f"{n}.{k}.tif" for n in ("stream", "regions") for k in single]
        + ["stream.classes.tif.aux.xml", "regions.classes.tif.aux.xml"]
        + [f"{n}.{k}.qml" for n in ("stream", "regions") for k in ("classes", "confidence")]
    )  # the work folders are gone
