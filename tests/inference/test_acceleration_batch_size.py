"""Batch size: ``auto`` from the device's free memory, and halving on out-of-memory instead of a crash."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from helpers import CARD, PixelNet, write_scene

import geoseg.inference.plan as planning
from geoseg.cli.main import cli
from geoseg.errors import GeosegError, GeosegWarning
from geoseg.inference.acceleration import AcceleratedNetwork, HalvingBatches, resolve_batch_size
from geoseg.inference.grid import CHUNK_MULTIPLE
from geoseg.inference.plan import plan_regions, plan_scene
from geoseg.inference.scene import predict_scene

GIB = 1 << 30


class SmallMemoryNet(PixelNet):
    """PixelNet on a pretend device that holds at most ``fits`` tiles at once."""

    def __init__(self, fits: int):
        super().__init__(3, 6)
        self.fits, self.seen = fits, []

    def forward(self, x):
        self.seen.append(len(x))
        if len(x) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def _scene(path):
    return write_scene(path, 300, 200, crs="EPSG:32633", transform=Affine(0.5, 0, 500000, 0, -0.5, 5800000))


def _warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, GeosegWarning)]


def test_out_of_memory_halves_the_batch_until_it_fits_with_one_warning_and_changes_no_pixel(tmp_path):
    _scene(tmp_path / "scene.tif")
    predict_scene(PixelNet(3, 6), CARD, tmp_path / "scene.tif", tmp_path / "plain.tif", batch_size=8)
    small = SmallMemoryNet(fits=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict_scene(small, CARD, tmp_path / "scene.tif", tmp_path / "small.tif", batch_size=8)
    assert _warnings(caught) == [
        "out of GPU memory with 8 tiles per batch: running 2 tile(s) at a time from now on "
        "(set batch_size=2 to start there)"
    ]
    assert small.seen[:3] == [8, 4, 2]  # then every batch runs in slices of two
    assert max(small.seen[3:]) == 2
    assert result.tiles == 7 * 5  # mirrored by 8 px: (316 - 64) / 48 -> 7 columns, (216 - 64) / 48 -> 5 rows
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "small.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_the_batch_size_that_fits_is_learnt_once_for_every_region_and_scene(tmp_path, monkeypatch):
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)  # regions of one 512-px block per side
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", CHUNK_MULTIPLE * CHUNK_MULTIPLE)
    transform = Affine(0.5, 0, 500000, 0, -0.5, 5800000)
    scenes = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for seed, scene in enumerate(scenes):
        write_scene(scene, 1100, 1100, seed=seed, crs="EPSG:32633", transform=transform)
    grid = plan_scene(CARD, scenes[0]).grid
    assert len(plan_regions(grid, 1, resume=True)) == 4
    small = SmallMemoryNet(fits=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n, scene in enumerate(scenes):
            predict_scene(PixelNet(3, 6), CARD, scene, tmp_path / f"plain{n}.tif", batch_size=8)
            predict_scene(small, CARD, scene, tmp_path / f"small{n}.tif", batch_size=8, resume=True)
    assert _warnings(caught) == [
        "out of GPU memory with 8 tiles per batch: running 4 tile(s) at a time from now on "
        "(set batch_size=4 to start there)"
    ]
    assert small.seen.count(8) == 1  # the one failed attempt: every later batch starts at four
    assert max(small.seen[1:]) == 4
    assert sum(small.seen[1:]) > 2 * grid.num_tiles  # all tiles of both scenes, region borders twice
    for n in range(2):
        with rasterio.open(tmp_path / f"plain{n}.tif") as a, rasterio.open(tmp_path / f"small{n}.tif") as b:
            assert np.array_equal(a.read(1), b.read(1))


def test_a_compiled_network_stops_padding_to_a_batch_that_ran_out_of_memory():
    """The padding of short batches must not lift a halved batch back to the size that failed."""
    small = SmallMemoryNet(fits=4)
    network = AcceleratedNetwork(small, channels_last=False, compile=False)
    network.compiled = small  # the padding logic alone, without minutes of compilation
    slices = HalvingBatches(8, network, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for size in (8, 8, 3):
            assert slices(network, torch.zeros(size, 3, 32, 32)).shape == (size, 6, 32, 32)
    assert small.seen == [8, 4, 4, 4, 4, 4]  # the short batch of 3 padded to the 4 that ran, not to 8
    assert len(_warnings(caught)) == 1


def test_not_even_one_tile_fitting_is_a_one_line_error(tmp_path):
    _scene(tmp_path / "scene.tif")
    with (
        pytest.raises(GeosegError, match=r"^out of GPU memory with one tile per batch; use a smaller tile=N"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", GeosegWarning)
        predict_scene(SmallMemoryNet(fits=0), CARD, tmp_path / "scene.tif", tmp_path / "c.tif", batch_size=4)
    assert not (tmp_path / "c.tif").exists()


def test_halving_runs_a_batch_in_slices_of_the_limit():
    slices = HalvingBatches(3, PixelNet(), None)
    sizes = []

    def run(part):
        sizes.append(len(part))
        return part * 2

    batch = torch.arange(7.0)
    assert torch.equal(slices(run, batch), batch * 2)
    assert sizes == [3, 3, 1]


def test_auto_is_four_tiles_on_the_cpu():
    assert resolve_batch_size("auto", torch.device("cpu"), 512) == 4


@pytest.mark.parametrize(("free", "expected"), [(80 * GIB, 64), (3 * GIB, 4), (GIB // 4, 1)])
def test_auto_on_cuda_is_the_power_of_two_that_fits_free_memory(monkeypatch, free, expected):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (free, 141 * GIB))
    assert resolve_batch_size("auto", torch.device("cuda"), 512) == expected


def test_an_explicit_batch_size_is_kept_and_checked():
    assert resolve_batch_size(3, torch.device("cpu"), 512) == 3
    with pytest.raises(GeosegError, match=r"^batch_size=0: give at least 1 \(or auto\)$"):
        resolve_batch_size(0, torch.device("cpu"), 512)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "0: give at least 1 tile per batch, or auto"),
        ("many", "'many' is not a number of tiles or auto"),
    ],
)
def test_cli_refuses_a_batch_size_that_is_neither_positive_nor_auto(tmp_path, value, message):
    result = CliRunner().invoke(
        cli, ["predict", "x.tif", "-o", str(tmp_path / "c.tif"), "--batch-size", value]
    )
    assert result.exit_code == 2
    assert message in result.stderr
