"""Many scenes on Dask share the cluster: the regions of several scenes run at once (a scene of one region
no longer waits for the previous scene's assembly), and every output equals the single-process one."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, PixelNet, write_scene

from geoseg.inference.batch import predict


class TimedNet(PixelNet):
    """PixelNet that takes a second per batch and records (process, start, end) of each batch in a file of
    ``folder``: which regions ran at the same time."""

    def __init__(self, folder, **kwargs):
        super().__init__(**kwargs)
        self.folder = str(folder)

    def forward(self, x):
        start = time.time()
        time.sleep(1.0)
        out = super().forward(x)
        name = os.path.join(self.folder, f"{os.getpid()}-{time.monotonic_ns()}.txt")
        with open(name, "w") as f:
            f.write(f"{os.getpid()} {start} {time.time()}")
        return out


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.read_masks(), src.profile, src.tags()


@pytest.mark.slow  # worker processes importing torch
def test_regions_of_several_scenes_run_at_once_and_give_the_single_process_rasters(tmp_path):
    scenes = []
    for i in range(3):
        path = tmp_path / f"scene{i}.tif"
        write_scene(path, 150, 100, seed=i, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
        scenes.append(path)
    one = predict(scenes, tmp_path / "one", model=PixelNet(), card=CARD, device="cpu", batch_size=16)

    log = tmp_path / "log"
    log.mkdir()
    two = predict(
        scenes, tmp_path / "two", model=TimedNet(log), card=CARD, device="cpu", batch_size=16, workers=2
    )
    assert [r.input for r in two] == [str(s) for s in scenes]  # results in input order
    assert [r.tiles for r in two] == [r.tiles for r in one]
    for a, b in zip(one, two, strict=True):
        expected, got = _read(a.outputs["classes"]), _read(b.outputs["classes"])
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
        assert got[2:] == expected[2:]
    assert not [p for p in (tmp_path / "two").iterdir() if p.name.endswith("geoseg-work")]

    # One batch per scene (one region of a few tiles): batches of different processes overlapping in time
    # are regions of different scenes running at once. Scene by scene, they never overlapped.
    calls = [f.read_text().split() for f in log.iterdir()]
    calls = [(int(pid), float(start), float(end)) for pid, start, end in calls]
    assert len(calls) == 3
    overlaps = [
        (a, b) for a in calls for b in calls if a[0] != b[0] and a[1] < b[2] and b[1] < a[2] and a < b
    ]
    assert overlaps, calls
