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

from geoseg.cli.main import cli
from geoseg.errors import GeosegError, GeosegWarning
from geoseg.inference.acceleration import HalvingBatches, resolve_batch_size
from geoseg.inference.engine import predict_scene

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


def test_out_of_memory_halves_the_batch_with_one_warning_each_time_and_changes_no_pixel(tmp_path):
    _scene(tmp_path / "scene.tif")
    predict_scene(PixelNet(3, 6), CARD, tmp_path / "scene.tif", tmp_path / "plain.tif", batch_size=8)
    small = SmallMemoryNet(fits=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = predict_scene(small, CARD, tmp_path / "scene.tif", tmp_path / "small.tif", batch_size=8)
    messages = [str(w.message) for w in caught if issubclass(w.category, GeosegWarning)]
    assert messages == [
        "out of GPU memory: running 4 tile(s) at a time (set --batch-size 4 to start there)",
        "out of GPU memory: running 2 tile(s) at a time (set --batch-size 2 to start there)",
    ]
    assert small.seen[:3] == [8, 4, 2]  # then every batch runs in slices of two
    assert max(small.seen[3:]) == 2
    assert result.tiles == 6 * 4  # (300 - 64) / 48 -> 6 columns, (200 - 64) / 48 -> 4 rows
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "small.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_not_even_one_tile_fitting_is_a_one_line_error(tmp_path):
    _scene(tmp_path / "scene.tif")
    with (
        pytest.raises(GeosegError, match=r"^out of GPU memory with one tile per batch; use a smaller --tile"),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", GeosegWarning)
        predict_scene(SmallMemoryNet(fits=0), CARD, tmp_path / "scene.tif", tmp_path / "c.tif", batch_size=4)
    assert not (tmp_path / "c.tif").exists()


def test_halving_runs_a_batch_in_slices_of_the_limit():
    slices = HalvingBatches(3)
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
    with pytest.raises(GeosegError, match=r"batch size 0 must be at least 1 \(or auto\)"):
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
