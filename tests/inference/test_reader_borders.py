"""Scene borders get context: the tile grid is laid over the scene mirrored by a margin about its own edges.

A pixel on a scene's border used to sit on a tile's edge, where the network sees least. Now the reader
mirrors the scene about its edges (numpy's ``reflect``) by the border margin, the weights stay flat at the
mirrored border and only real pixels are written: predicting a scene equals predicting an explicitly
reflect-padded copy of it without a margin, cut back, pixel for pixel, whatever the regions. The mirror is the
raster's edge only: nodata pixels are read as stored (never filled from mirrored data) and the border between
data and nodata is not a mirror.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, NeighbourNet, write_geotiff, write_scene

import geoseg.inference.plan as planning
from geoseg.errors import ConfigurationError
from geoseg.inference.grid import CHUNK_MULTIPLE, TileGrid, tile_starts
from geoseg.inference.plan import border_margin, plan_scene
from geoseg.inference.scene import predict_scene
from geoseg.raster.reading import mirror_indexes

PIXEL = 0.5
TRANSFORM = Affine(PIXEL, 0, 500000, 0, -PIXEL, 5800000)
MARGIN = border_margin(CARD.tile_size, CARD.overlap)  # 8 px for tile 64, overlap 16


def _write(path, data, mask=None, margin=0):
    """``data`` (C, h, w) as a GeoTIFF whose pixel (``margin``, ``margin``) lies on the scene's first."""
    transform = TRANSFORM * Affine.translation(-margin, -margin)
    return write_geotiff(path, data, dtype="uint8", crs="EPSG:32633", transform=transform, mask=mask)


def _mirrored(data, margin):
    """The explicitly reflect-padded copy of a (C, h, w) or (h, w) array."""
    pad = ((margin, margin), (margin, margin))
    return np.pad(data, ((0, 0), *pad) if data.ndim == 3 else pad, mode="reflect")


def _predict(tmp_path, source, name, model, **options):
    classes, probabilities = tmp_path / f"{name}.out.tif", tmp_path / f"{name}.probabilities.tif"
    options = dict(probabilities_path=probabilities, batch_size=5, chunk_size=512, **options)
    result = predict_scene(model, CARD, source, classes, **options)
    with rasterio.open(classes) as c, rasterio.open(probabilities) as p:
        return result, c.read(1), p.read(), c.transform


def _ring(height, width, depth):
    rows = np.minimum(np.arange(height), np.arange(height)[::-1])
    cols = np.minimum(np.arange(width), np.arange(width)[::-1])
    return np.minimum(rows[:, None], cols[None, :]) < depth


# --- the virtual scene -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64])
def test_mirror_indexes_are_numpys_reflect_also_past_one_mirror_image(size):
    axis = np.arange(size)
    for margin, extra in ((0, 0), (1, 0), (3, 5), (40, 90)):
        if size == 1:
            expected = np.zeros(1 + margin + extra)
        else:
            expected = np.pad(axis, (margin, extra), mode="reflect")
        assert np.array_equal(mirror_indexes(-margin, size + extra, size), expected), (margin, extra)


@pytest.mark.parametrize(
    "height, width, tile, overlap, margin",
    [(777, 1000, 64, 16, 8), (1030, 600, 256, 64, 32), (40, 50, 64, 16, 8), (33, 1200, 64, 16, 63)],
)
def test_the_grid_over_the_mirrored_scene_finishes_each_real_pixel_once(height, width, tile, overlap, margin):
    grid = TileGrid(height, width, tile, overlap, 512, margin=margin)
    my, mx = grid.margin_y, grid.margin_x  # an axis that fits in a tile: as far as it fits
    assert (my, mx) == (
        margin if height > tile else min(margin, (tile - height) // 2),
        margin if width > tile else min(margin, (tile - width) // 2),
    )
    assert (grid.ys[0], grid.xs[0]) == (-my, -mx)  # the first tile starts in the margin
    assert grid.ys[-1] + grid.tile_height == height + my
    assert grid.xs[-1] + grid.tile_width == width + mx
    owner = np.zeros((height, width), np.int32)
    tiles = []
    for c in grid.chunks():
        owner[c.y0 : c.y1, c.x0 : c.x1] += 1
        assert c.ext_y1 <= height + my and c.ext_x1 <= width + mx
        for t in c.tiles:
            assert t.y < height and t.x < width and t.y + t.height > 0 and t.x + t.width > 0  # real pixels
            assert c.acc_y0 <= t.y and t.y + t.height <= c.ext_y1  # inside the chunk's accumulator
            assert c.acc_x0 <= t.x and t.x + t.width <= c.ext_x1
            tiles.append((t.y, t.x))
    assert (owner == 1).all()
    assert sorted(tiles) == sorted((y, x) for y in grid.ys for x in grid.xs) and len(set(tiles)) == len(tiles)


def test_a_margin_that_would_leave_a_tile_without_real_pixels_is_refused(tmp_path):
    write_scene(tmp_path / "scene.tif", 100, 80, crs="EPSG:32633", transform=TRANSFORM)
    with pytest.raises(ConfigurationError, match="border margin 64 must be at least 0 and smaller than"):
        plan_scene(CARD, tmp_path / "scene.tif", margin=64)
    assert plan_scene(CARD, tmp_path / "scene.tif", margin=0).grid.margin == 0
    assert plan_scene(CARD, tmp_path / "scene.tif").grid.margin == MARGIN == 8


def test_the_sample_scene_costs_no_extra_tile_and_a_big_one_a_few_percent():
    tile, overlap = 512, 128  # the bundled model's
    margin = border_margin(tile, overlap)
    assert margin == 64
    for size, before, after in ((512, 1, 1), (1000, 9, 9), (10000, 26 * 26, 27 * 27)):
        assert TileGrid(size, size, tile, overlap).num_tiles == before
        assert TileGrid(size, size, tile, overlap, margin=margin).num_tiles == after
    assert tile_starts(1000, tile, tile - overlap, margin) == [-64, 320, 552]


# --- predictions -------------------------------------------------------------------------------------------


def test_border_pixels_are_predicted_from_the_scene_mirrored_about_its_edges(tmp_path):
    data = write_scene(tmp_path / "scene.tif", 300, 200, seed=11, crs="EPSG:32633", transform=TRANSFORM)
    padded = _write(tmp_path / "padded.tif", _mirrored(data, MARGIN), margin=MARGIN)
    model = NeighbourNet(seed=3)  # sees 4 px around each pixel, zeros beyond a tile's edge
    _, classes, probabilities, transform = _predict(tmp_path, tmp_path / "scene.tif", "scene", model)
    explicit, padded_classes, padded_probabilities, _ = _predict(tmp_path, padded, "padded", model, margin=0)
    cut = np.s_[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert np.array_equal(classes, padded_classes[cut])
    assert np.array_equal(probabilities, padded_probabilities[(slice(None), *cut)])
    assert transform == TRANSFORM  # only real pixels are written, where they lie
    # without the margin, pixels near the border were predicted from tile edges (zeros beyond them)
    _, blind, _, _ = _predict(tmp_path, tmp_path / "scene.tif", "blind", model, margin=0)
    border, interior, changed = _ring(200, 300, 4), ~_ring(200, 300, 16), blind != classes
    assert changed[border].mean() > 0.15 > 10 * changed[interior].mean()  # 18.5 % and 0.3 % (grid shift)
    assert len(np.unique(classes)) >= 3


def test_regions_give_the_single_stream_pixels_exactly_with_the_margin(tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)  # regions of one 512-px block per side
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", CHUNK_MULTIPLE * CHUNK_MULTIPLE)
    mask = np.full((1100, 1300), 255, np.uint8)
    mask[300:700, 0:600] = 0  # no data at the scene's border and across region borders
    write_scene(tmp_path / "scene.tif", 1300, 1100, seed=5, mask=mask, crs="EPSG:32633", transform=TRANSFORM)
    model = NeighbourNet(seed=4)
    stream, *single = _predict(tmp_path, tmp_path / "scene.tif", "stream", model)
    regions, *parts = _predict(tmp_path, tmp_path / "scene.tif", "regions", model, resume=True)
    grid = plan_scene(CARD, tmp_path / "scene.tif").grid
    assert grid.margin == MARGIN and len(planning.plan_regions(grid, 1, True)) == 6
    assert regions.tiles > stream.tiles  # region borders: tiles computed by both neighbours
    for one, other in zip(single, parts, strict=True):
        assert np.array_equal(one, other)


def test_nodata_is_read_as_stored_and_never_a_mirror(tmp_path):
    # A collar of nodata 5 px wide at the left edge: the margin mirrors it (cols 5..1) and the data beyond it
    # (cols 8..6), exactly as the stored values stand; the hole in the middle is no mirror: its border
    # pixels see its stored values as before. Equal to the explicitly padded copy, mask padded alike.
    mask = np.full((200, 300), 255, np.uint8)
    mask[:, :5] = 0
    mask[80:120, 100:160] = 0
    data = write_scene(
        tmp_path / "scene.tif", 300, 200, seed=8, mask=mask, crs="EPSG:32633", transform=TRANSFORM
    )
    padded = _write(tmp_path / "padded.tif", _mirrored(data, MARGIN), _mirrored(mask, MARGIN), margin=MARGIN)
    model = NeighbourNet(seed=6)
    result, classes, probabilities, _ = _predict(tmp_path, tmp_path / "scene.tif", "scene", model)
    explicit, padded_classes, padded_probabilities, _ = _predict(tmp_path, padded, "padded", model, margin=0)
    cut = np.s_[MARGIN:-MARGIN, MARGIN:-MARGIN]
    assert np.array_equal(classes, padded_classes[cut])
    assert np.array_equal(probabilities, padded_probabilities[(slice(None), *cut)])
    assert (classes[mask == 0] == 255).all() and (classes[mask > 0] != 255).all()
    assert result.tiles == explicit.tiles
