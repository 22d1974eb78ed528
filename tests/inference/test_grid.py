"""Seamless tiling: the global grid, chunks, window weights, and exact equality with a whole-scene pass.

A network that works pixel by pixel cannot see tile borders, so whatever the tile size, overlap, chunking or
test-time augmentation, the tiled result must equal the result of one pass over the whole scene, exactly.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from helpers import CARD, PixelNet, write_scene

from geoseg.errors import ConfigurationError, GeosegWarning
from geoseg.inference.blending import WindowWeights, axis_weight
from geoseg.inference.grid import TileGrid, axis_margin, check_tiling, tile_starts
from geoseg.inference.plan import border_margin, plan_scene
from geoseg.inference.scene import predict_scene
from geoseg.model.normalize import normalize


def _scene(path, width, height, seed=0, mask=None):
    return write_scene(
        path,
        width,
        height,
        seed=seed,
        mask=mask,
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500000, 0, -0.5, 5800000),
    )


def _whole_scene(model, data):
    x = normalize(torch.from_numpy(data)[None], CARD.value_range, CARD.mean, CARD.std)
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1).argmax(1)[0].numpy().astype(np.uint8)


# --- the grid ---------------------------------------------------------------------------------------------


def test_last_tile_is_pulled_back_inside_the_scene():
    assert tile_starts(1000, 256, 192) == [0, 192, 384, 576, 744]
    assert tile_starts(1024, 256, 256) == [0, 256, 512, 768]
    assert tile_starts(256, 256, 192) == [0]
    assert tile_starts(33, 512, 384) == [0]


@pytest.mark.parametrize("tile", [0, -32])
def test_tile_size_must_be_positive(tile):
    with pytest.raises(ConfigurationError, match=f"^tile={tile}: give a positive tile size$"):
        check_tiling(tile, 0)


@pytest.mark.parametrize("overlap", [-1, 64, 100])
def test_overlap_must_be_smaller_than_the_tile(overlap):
    with pytest.raises(ConfigurationError, match=f"^overlap={overlap}: give 0 or more, less than the tile"):
        check_tiling(64, overlap)


@pytest.mark.parametrize(
    "height, width, tile, overlap, chunk",
    [(777, 1000, 64, 16, 512), (1200, 33, 64, 16, 512), (40, 50, 64, 16, 512), (1030, 600, 256, 64, 512)],
)
def test_chunks_cover_the_scene_once_and_own_every_tile_once(height, width, tile, overlap, chunk):
    grid = TileGrid(height, width, tile, overlap, chunk)
    owner = np.zeros((height, width), np.int32)
    tiles = []
    for c in grid.chunks():
        owner[c.y0 : c.y1, c.x0 : c.x1] += 1
        assert c.y1 <= c.ext_y1 <= height and c.x1 <= c.ext_x1 <= width
        for t in c.tiles:
            # a tile starts inside its chunk and stays inside the chunk's accumulator
            assert c.y0 <= t.y < c.y1 and c.x0 <= t.x < c.x1
            assert t.y + t.height <= c.ext_y1 and t.x + t.width <= c.ext_x1
            tiles.append((t.y, t.x))
    assert (owner == 1).all()
    assert sorted(tiles) == sorted((y, x) for y in grid.ys for x in grid.xs)
    assert len(tiles) == grid.num_tiles == len(set(tiles))


def test_a_chunk_row_without_tiles_of_its_own_exists_in_the_zero_tile_case():
    grid = TileGrid(1030, 600, 256, 64, 512)
    last_row = [grid.chunk(grid.chunk_rows - 1, col) for col in range(grid.chunk_cols)]
    assert [c.tiles for c in last_row] == [(), ()]


def test_a_stride_under_a_quarter_of_the_tile_warns_with_its_cost(tmp_path):
    _scene(tmp_path / "tiny.tif", 50, 40)
    # stride 2 over the scene mirrored by 15 px: columns start at -15 -13 .. 31 and 33 (25), rows at -15 ..
    # 21 and 23 (20); the card's 64/16: one tile (an axis that fits in a tile is mirrored as far as it fits)
    message = (
        r"tiny\.tif: tile 32 with overlap 30 leaves a stride of 2 px \(under a quarter of the tile\): "
        r"500 tiles where the model's default \(tile 64, overlap 16\) needs 1 \(500x\); lower the overlap$"
    )
    with pytest.warns(GeosegWarning, match=message) as caught:
        plan = plan_scene(CARD, tmp_path / "tiny.tif", tile=32, overlap=30)
    assert plan.grid.num_tiles == 500 and len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan_scene(CARD, tmp_path / "tiny.tif", tile=64, overlap=48)  # a quarter exactly
        plan_scene(CARD, tmp_path / "tiny.tif")  # the card's own choice is not second-guessed


# --- window weights ---------------------------------------------------------------------------------------


def test_weights_taper_only_inside_the_overlap_and_neighbours_sum_to_one():
    left = axis_weight(64, 16, taper_start=False, taper_end=True)
    right = axis_weight(64, 16, taper_start=True, taper_end=False)
    assert (left[:48] == 1).all() and (right[16:] == 1).all()
    np.testing.assert_allclose(left[48:] + right[:16], 1.0, atol=1e-6)
    assert left.min() > 0 and right.min() > 0


def test_weights_are_flat_at_the_scene_border():
    weights = WindowWeights(height=100, width=100, overlap=16, device=torch.device("cpu"))
    corner = weights(0, 0, 64, 64)  # top-left tile: scene border on top and left
    assert (corner[:48, :48] == 1).all()
    assert (corner[0, :48] == 1).all() and (corner[:48, 0] == 1).all()
    assert corner[63, 63] < 0.01
    small = WindowWeights(height=40, width=50, overlap=16, device=torch.device("cpu"))
    assert (small(0, 0, 40, 50) == 1).all()  # a scene smaller than a tile: all border


def test_no_overlap_means_flat_weights():
    assert (axis_weight(64, 0, True, True) == 1).all()


# --- exact equality with the whole-scene pass ------------------------------------------------------------


@pytest.mark.parametrize(
    "width, height, tile, overlap",
    [
        (1000, 777, 64, 16),
        (1000, 777, 96, 32),
        (1000, 777, 128, 0),
        (1000, 777, 64, 48),
        (33, 1200, 64, 16),
        (1200, 33, 128, 32),
        (50, 40, 64, 16),
        (600, 1030, 256, 64),
    ],
)
def test_tiled_prediction_equals_the_whole_scene_exactly(tmp_path, width, height, tile, overlap):
    data = _scene(tmp_path / "scene.tif", width, height)
    model = PixelNet(3, 6)
    result = predict_scene(
        model,
        CARD,
        tmp_path / "scene.tif",
        tmp_path / "classes.tif",
        tile=tile,
        overlap=overlap,
        batch_size=8,
        chunk_size=512,
    )
    with rasterio.open(tmp_path / "classes.tif") as out:
        classes = out.read(1)
    expected = _whole_scene(model, data)
    assert np.array_equal(classes, expected)
    assert len(np.unique(expected)) >= 4  # the test network really tells pixels apart
    margin = border_margin(tile, overlap)  # the scene is mirrored by it at its border
    assert result.tiles == len(
        tile_starts(height, tile, tile - overlap, axis_margin(height, tile, margin))
    ) * len(tile_starts(width, tile, tile - overlap, axis_margin(width, tile, margin)))


@pytest.mark.parametrize("tta", ["flip", "d4"])
def test_test_time_augmentation_puts_every_pixel_back_in_place(tmp_path, tta):
    data = _scene(tmp_path / "scene.tif", 300, 200, seed=3)
    model = PixelNet(3, 6, seed=1)
    predict_scene(model, CARD, tmp_path / "scene.tif", tmp_path / "classes.tif", tile=64, overlap=16, tta=tta)
    with rasterio.open(tmp_path / "classes.tif") as out:
        assert np.array_equal(out.read(1), _whole_scene(model, data))


@pytest.mark.parametrize("tta, passes", [("none", 1), ("flip", 4), ("d4", 8)])
def test_test_time_augmentation_runs_every_view_of_every_tile_once(tmp_path, tta, passes):
    _scene(tmp_path / "scene.tif", 100, 70, seed=4)
    model = PixelNet(3, 6, seed=1)
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    result = predict_scene(
        model, CARD, tmp_path / "scene.tif", tmp_path / "c.tif", tile=64, overlap=16, batch_size=1, tta=tta
    )
    assert result.tiles == 3 * 2  # margin 8: columns start at -8, 40 and 44, rows at -8 and 14
    assert sum(seen) == result.tiles * passes


class TileAwareNet(PixelNet):
    """PixelNet plus a logit bias growing across each tile: tiles now disagree, so the blend shows."""

    def forward(self, x):
        ramp = torch.linspace(0.0, 3.0, x.shape[-1]).view(1, 1, 1, -1)
        logits = super().forward(x)
        return torch.cat([logits[:, :1] + ramp, logits[:, 1:]], dim=1)


def _direct_blend(model, data, tile, overlap, margin=None):
    """The blend computed the obvious way: whole-scene float64 accumulators, every tile of the grid, over the
    scene explicitly reflect-padded by the border margin (weights flat at its border), cut back to the
    scene."""
    margin = border_margin(tile, overlap) if margin is None else margin
    my, mx = axis_margin(data.shape[1], tile, margin), axis_margin(data.shape[2], tile, margin)
    data = np.pad(data, ((0, 0), (my, my), (mx, mx)), mode="reflect")
    _, height, width = data.shape
    ys, xs = tile_starts(height, tile, tile - overlap), tile_starts(width, tile, tile - overlap)
    acc = np.zeros((CARD.num_classes, height, width))
    total = np.zeros((height, width))
    for y in ys:
        for x in xs:
            h, w = min(tile, height), min(tile, width)
            part = np.pad(
                data[:, y : y + h, x : x + w], ((0, 0), (0, tile - h), (0, tile - w)), mode="reflect"
            )
            inputs = normalize(torch.from_numpy(part)[None], CARD.value_range, CARD.mean, CARD.std)
            with torch.inference_mode():
                probs = torch.softmax(model(inputs), dim=1)[0, :, :h, :w].double().numpy()
            wy = axis_weight(h, overlap, y > 0, y + h < height)
            wx = axis_weight(w, overlap, x > 0, x + w < width)
            weight = np.outer(wy, wx)
            acc[:, y : y + h, x : x + w] += probs * weight
            total[y : y + h, x : x + w] += weight
    return (acc / total)[:, my : height - my, mx : width - mx]


@pytest.mark.parametrize(
    "width, height, tile, overlap", [(1000, 777, 64, 16), (600, 1030, 256, 64), (50, 40, 64, 16)]
)
def test_chunked_blending_equals_one_global_blend(tmp_path, width, height, tile, overlap):
    data = _scene(tmp_path / "scene.tif", width, height, seed=7)
    model = TileAwareNet(3, 6, seed=4)
    predict_scene(
        model,
        CARD,
        tmp_path / "scene.tif",
        tmp_path / "classes.tif",
        tile=tile,
        overlap=overlap,
        chunk_size=512,
        probabilities_path=tmp_path / "probabilities.tif",
    )
    expected = _direct_blend(model, data, tile, overlap)
    with rasterio.open(tmp_path / "classes.tif") as c, rasterio.open(tmp_path / "probabilities.tif") as p:
        classes, probabilities = c.read(1), p.read().astype(int)
    assert np.abs(probabilities - np.round(expected * 255)).max() <= 1
    top2 = np.sort(expected, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-5
    assert np.array_equal(classes[clear], expected.argmax(0)[clear])
    assert clear.mean() > 0.999


def test_confidence_and_probabilities_match_the_softmax(tmp_path):
    data = _scene(tmp_path / "scene.tif", 200, 150, seed=5)
    model = PixelNet(3, 6, seed=2)
    predict_scene(
        model,
        CARD,
        tmp_path / "scene.tif",
        tmp_path / "classes.tif",
        tile=64,
        overlap=16,
        confidence_path=tmp_path / "confidence.tif",
        probabilities_path=tmp_path / "probabilities.tif",
    )
    x = normalize(torch.from_numpy(data)[None], CARD.value_range, CARD.mean, CARD.std)
    with torch.inference_mode():
        probs = torch.softmax(model(x), dim=1)[0].numpy()
    with rasterio.open(tmp_path / "confidence.tif") as c, rasterio.open(tmp_path / "probabilities.tif") as p:
        confidence, probabilities = c.read(1).astype(int), p.read().astype(int)
        assert p.count == 6 and p.descriptions == tuple(CARD.class_names)
    assert np.abs(confidence - np.round(probs.max(0) * 255)).max() <= 1
    assert np.abs(probabilities - np.round(probs * 255)).max() <= 1


# --- skipping tiles without valid pixels ---------------------------------------------------------------


def _predict_counting(tmp_path, name, model, **options):
    """predict_scene with confidence and probabilities; also returns the tiles the network saw."""
    seen = []
    hook = model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    stem = name.removesuffix(".tif")
    try:
        result = predict_scene(
            model,
            CARD,
            tmp_path / name,
            tmp_path / f"{stem}.classes.tif",
            tile=64,
            overlap=16,
            batch_size=5,
            confidence_path=tmp_path / f"{stem}.confidence.tif",
            probabilities_path=tmp_path / f"{stem}.probabilities.tif",
            **options,
        )
    finally:
        hook.remove()
    with (
        rasterio.open(tmp_path / f"{stem}.classes.tif") as c,
        rasterio.open(tmp_path / f"{stem}.confidence.tif") as f,
        rasterio.open(tmp_path / f"{stem}.probabilities.tif") as p,
    ):
        rasters = c.read(1), f.read(1), p.read()
    return result, sum(seen), rasters


def test_tiles_without_valid_pixels_are_skipped_and_valid_pixels_do_not_change(tmp_path):
    # 300x200, tile 64, overlap 16, mirrored by 8 px: columns start at -8 40 88 136 184 232 244, rows at -8
    # 40 88 136 144 (35 tiles). A collar of 112 columns on the left leaves no valid pixel in the columns at
    # -8 and 40 (5 rows: 10 tiles), and the invalid rows from 136 down none in the last two tile rows (14
    # tiles): 20 of 35 tiles are skipped.
    mask = np.full((200, 300), 255, np.uint8)
    mask[:, :112] = 0
    mask[136:] = 0
    data = _scene(tmp_path / "collar.tif", 300, 200, seed=6, mask=mask)
    _scene(tmp_path / "whole.tif", 300, 200, seed=6)
    model = TileAwareNet(3, 6, seed=5)  # tiles disagree: a changed blend would show in the probabilities
    skipping, passes, (classes, confidence, probabilities) = _predict_counting(tmp_path, "collar.tif", model)
    full, full_passes, (all_classes, all_confidence, all_probabilities) = _predict_counting(
        tmp_path, "whole.tif", model
    )
    assert (full.tiles, full_passes) == (35, 35)
    assert (skipping.tiles, passes) == (15, 15)
    valid = mask > 0
    assert np.array_equal(classes[valid], all_classes[valid])
    assert np.array_equal(confidence[valid], all_confidence[valid])
    assert np.array_equal(probabilities[:, valid], all_probabilities[:, valid])
    assert (classes[~valid] == 255).all()
    assert (confidence[~valid] == 0).all() and (probabilities[:, ~valid] == 0).all()  # no NaN garbage
    assert len(np.unique(classes[valid])) >= 4
    # and PixelNet's whole-scene answer still holds exactly on the valid pixels
    pixel_model = PixelNet(3, 6, seed=5)
    predict_scene(pixel_model, CARD, tmp_path / "collar.tif", tmp_path / "pixel.tif", tile=64, overlap=16)
    with rasterio.open(tmp_path / "pixel.tif") as out:
        assert np.array_equal(out.read(1)[valid], _whole_scene(pixel_model, data)[valid])


def test_an_all_nodata_scene_computes_no_tile_and_writes_only_nodata(tmp_path):
    _scene(tmp_path / "empty.tif", 700, 600, mask=np.zeros((600, 700), np.uint8))
    model = PixelNet(3, 6)
    result, passes, (classes, confidence, probabilities) = _predict_counting(
        tmp_path, "empty.tif", model, chunk_size=512
    )
    assert (result.tiles, passes) == (0, 0)
    assert (classes == 255).all() and classes.shape == (600, 700)
    assert (confidence == 0).all() and (probabilities == 0).all()
    assert result.class_fractions == dict.fromkeys(CARD.class_names, 0.0)
    with rasterio.open(tmp_path / "empty.confidence.tif") as out:
        assert (out.dataset_mask() == 0).all()
