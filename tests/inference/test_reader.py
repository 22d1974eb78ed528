"""The readers: a pool of reader threads gives exactly the single reader's stream, batch buffers are reused
(never one per batch), read failures in the pool reach the caller as one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from helpers import CARD, PixelNet, write_geotiff, write_scene

from geoseg.errors import InputError
from geoseg.inference import reader as reader_module
from geoseg.inference.channel import Stop
from geoseg.inference.plan import plan_scene
from geoseg.inference.reader import Batch, ChunkMask, End, Failed, Reader, default_readers
from geoseg.inference.scene import predict_scene
from geoseg.raster import reading as reading_module

CPU = torch.device("cpu")


def _scene(path, width=1300, height=1100):
    """A scene of 3 x 3 chunks (512 px) with a no-data hole, so some tiles are skipped."""
    mask = np.full((height, width), 255, np.uint8)
    mask[100:400, 0:700] = 0
    return write_scene(
        path,
        width,
        height,
        mask=mask,
        crs="EPSG:32633",
        transform=Affine(0.5, 0, 500000, 0, -0.5, 5800000),
    )


def _drain(path, readers: int, batch_size: int = 5) -> tuple[list, int]:
    """Every item the reader queues, batches copied out before their buffer is given back; and how many
    buffers it made."""
    plan = plan_scene(CARD, path, chunk_size=512)
    stop = Stop()
    with rasterio.open(path) as source:
        reader = Reader(source, plan, plan.grid, batch_size, CPU, stop, readers=readers)
        reader.start()
        items = []
        while True:
            item = reader.out.get(timeout=30)
            if isinstance(item, Batch):
                batch = reader.upload(item.tensor, item.slot)
                assert any(batch.data_ptr() == b.data_ptr() for b in reader.buffers.buffers)
                items.append(
                    ("batch", batch.clone(), [(t.y, t.x, t.chunk) for t in item.tiles], item.skipped)
                )
                reader.release(item.slot)
            elif isinstance(item, ChunkMask):
                items.append(("chunk", item.index, None if item.valid is None else item.valid.copy()))
            else:
                items.append(("end", item.skipped) if isinstance(item, End) else ("error", item.error))
                break
        stop.set()
        reader.join()
    return items, len(reader.buffers.buffers)


def _same(a, b) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x[0] != y[0]:
            return False
        for u, v in zip(x[1:], y[1:], strict=True):
            if isinstance(u, torch.Tensor):
                if not torch.equal(u, v):
                    return False
            elif isinstance(u, np.ndarray):
                if not np.array_equal(u, v):
                    return False
            elif u != v:
                return False
    return True


def test_a_pool_of_readers_queues_exactly_what_one_reader_queues(tmp_path):
    _scene(tmp_path / "scene.tif")
    one, _ = _drain(tmp_path / "scene.tif", readers=1)
    three, _ = _drain(tmp_path / "scene.tif", readers=3)
    kinds = [item[0] for item in one]
    assert kinds.count("chunk") == 9 and kinds[-1] == "end"
    # 23 x 28 tiles over the scene mirrored by 8 px (rows start at -8 .. 1000 and 1044, columns at -8 ..
    # 1240 and 1244); 5 rows x 14 columns of them have no real pixel outside the hole and are skipped
    assert sum(len(item[2]) for item in one if item[0] == "batch") == 23 * 28 - 5 * 14
    assert _same(one, three)


def test_batch_buffers_are_reused_not_made_per_batch(tmp_path):
    _scene(tmp_path / "scene.tif")
    items, made = _drain(tmp_path / "scene.tif", readers=2, batch_size=4)
    batches = sum(1 for item in items if item[0] == "batch")
    assert batches == -(-(23 * 28 - 5 * 14) // 4)
    assert made <= reader_module._BUFFERS


def test_prediction_with_a_pool_of_readers_equals_one_reader(tmp_path, monkeypatch):
    _scene(tmp_path / "scene.tif")
    results = {}
    for readers in (1, 3):
        monkeypatch.setattr(reader_module, "default_readers", lambda source, device, n=readers: n)
        out = tmp_path / f"classes{readers}.tif"
        predict_scene(PixelNet(3, 6), CARD, tmp_path / "scene.tif", out, batch_size=8, chunk_size=512)
        with rasterio.open(out) as src:
            results[readers] = src.read(1)
    assert np.array_equal(results[1], results[3])
    assert (results[1] == 255).sum() == 300 * 700


def test_a_read_failure_in_the_pool_is_one_line(tmp_path, monkeypatch):
    _scene(tmp_path / "scene.tif")
    plan = plan_scene(CARD, tmp_path / "scene.tif", chunk_size=512)
    calls = []

    def failing(dataset, window, bands):
        calls.append(window)
        if len(calls) == 4:
            raise rasterio.errors.RasterioIOError("TIFFReadEncodedTile() failed")
        return dataset.read(bands, window=window)

    monkeypatch.setattr(reading_module, "read_bands", failing)  # what the reader's read_mirrored reads by
    stop = Stop()
    with rasterio.open(tmp_path / "scene.tif") as source:
        reader = Reader(source, plan, plan.grid, 4, CPU, stop, readers=2)
        reader.start()
        while not isinstance(item := reader.out.get(timeout=30), Failed):
            if isinstance(item, Batch):
                reader.release(item.slot)
        stop.set()
        reader.join()
    assert isinstance(item.error, InputError)
    assert str(item.error) == f"{tmp_path / 'scene.tif'}: read failed (TIFFReadEncodedTile() failed)"


@pytest.mark.parametrize(("compression", "expected"), [("deflate", 1), ("jpeg", 2)])
def test_the_cpu_gets_a_second_reader_only_when_decoding_is_costly(
    tmp_path, monkeypatch, compression, expected
):
    monkeypatch.setattr(reader_module.os, "cpu_count", lambda: 8)
    path = tmp_path / "scene.tif"
    data = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    write_geotiff(path, data, crs=None, transform=None, compress=compression)
    with rasterio.open(path) as src:
        assert default_readers(src, CPU) == expected
        assert default_readers(src, torch.device("cuda")) == 4
