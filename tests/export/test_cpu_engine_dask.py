"""The onnxruntime engine on Dask workers: the classes of one process, the engine and precision reported,
the export made once by the client and read by the workers from the cache (never exported again there),
onnxruntime's threads following each worker's share of the cores. Small random MANet (ResNet-18, 64 px)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import count_calls, write_scene, write_small_checkpoint

import geoseg.export.exporter
from geoseg.inference.batch import predict


@pytest.fixture
def exports(monkeypatch, tmp_path):
    """Counts the client's network exports into a cache of this test's own (inherited by the workers)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return count_calls(monkeypatch, geoseg.export.exporter, "export_program")


def _classes(path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _cache(tmp_path) -> dict[str, int]:
    """The cached files and their modification times: a file exported again is a new file (a rename)."""
    return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache" / "geoseg").iterdir()}


@pytest.mark.slow  # worker processes importing torch and onnxruntime
def test_onnxruntime_on_dask_workers_gives_the_single_process_classes_from_one_export(tmp_path, exports):
    model = write_small_checkpoint(tmp_path / "net.safetensors")
    scenes = []
    for i in range(3):
        path = tmp_path / f"scene{i}.tif"
        write_scene(path, 150, 100, seed=i, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
        scenes.append(path)
    common = dict(model=model, device="cpu", engine="onnxruntime", batch_size=4)

    two = predict(scenes, tmp_path / "two", workers=2, **common)
    assert exports[0] == 1
    cached = _cache(tmp_path)
    assert [n for n in cached if n.endswith(".onnx")] == [n for n in cached if "-fp32-" in n and ".onnx" in n]
    assert len([n for n in cached if n.endswith(".onnx")]) == 1

    one = predict(scenes, tmp_path / "one", **common)
    assert exports[0] == 1 and _cache(tmp_path) == cached  # nobody exported it again
    assert [(r.engine, r.precision, r.error) for r in two] == [("onnxruntime", "fp32", None)] * 3
    assert [(r.engine, r.precision) for r in one] == [("onnxruntime", "fp32")] * 3
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(_classes(b.outputs["classes"]), _classes(a.outputs["classes"]))
