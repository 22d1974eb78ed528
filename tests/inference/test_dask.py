"""Regions on Dask: a LocalCluster of worker processes and a cluster started by hand (``dask scheduler`` +
``dask worker``) give the raster of one process, a dying worker costs time only, and bad addresses fail in
one line. Every cluster is shut down: no process outlives its test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import rasterio
import torch
from affine import Affine
from click.testing import CliRunner
from helpers import CARD, KillOnceNet, PixelNet, write_scene, write_small_checkpoint

import geoseg.inference.plan as planning
from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.inference.scene import predict_scene


def _blocked_signals() -> set[int]:
    import signal

    return {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])}


TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """1100 x 300 px, cut into two regions of one block column each (the real minimum is ten tiles)."""
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)
    mask = np.full((300, 1100), 255, np.uint8)
    mask[100:200, 450:700] = 0
    path = tmp_path / "scene.tif"
    write_scene(path, 1100, 300, mask=mask, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
    return path


@pytest.fixture
def reference(scene, tmp_path):
    """The single-process result: classes and confidence."""
    paths = tmp_path / "one.tif", tmp_path / "one.confidence.tif"
    result = predict_scene(PixelNet(), CARD, scene, paths[0], confidence_path=paths[1], device="cpu")
    return result, [_read(p) for p in paths]


def _read(path):
    with rasterio.open(path) as src:
        return src.read(), src.read_masks(), src.profile, src.tags()


def _children() -> list[psutil.Process]:
    """Processes started by this one, but multiprocessing's resource tracker (it lives as long as we do)."""
    alive = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    return [p for p in alive if "resource_tracker" not in " ".join(p.cmdline())]


def _same_as(reference, outputs) -> None:
    for (data, masks, profile, tags), path in zip(reference, outputs, strict=True):
        got = _read(path)
        assert np.array_equal(got[0], data) and np.array_equal(got[1], masks)
        assert got[2:] == (profile, tags)


@pytest.mark.slow  # worker processes importing torch: ~35 s on two loaded cores
def test_two_workers_on_a_local_cluster_give_the_single_process_raster(scene, reference, tmp_path):
    one, expected = reference
    outputs = tmp_path / "two.tif", tmp_path / "two.confidence.tif"
    calls, texts = [], []
    two = predict_scene(
        PixelNet(), CARD, scene, outputs[0], confidence_path=outputs[1], device="cpu", workers=2,
        progress=lambda done, total: calls.append((done, total)), status=texts.append,
    )  # fmt: skip
    _same_as(expected, outputs)
    grid_tiles = calls[-1][1]
    assert calls[-1] == (grid_tiles, grid_tiles) and all(0 <= d <= grid_tiles for d, _ in calls)
    assert texts[0] == "0/2 regions, 2 workers" and texts[-1] == "2/2 regions, 2 workers"
    assert two.class_fractions == one.class_fractions
    assert two.tiles > one.tiles  # two regions: the tiles on their border are computed by both
    assert not any(p.name.endswith(".geoseg-work") for p in tmp_path.iterdir())
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _children() == []  # the cluster is shut down


@pytest.mark.slow
def test_a_worker_killed_mid_region_costs_time_not_correctness(scene, reference, tmp_path):
    _, expected = reference
    marker = tmp_path / "killed-once"
    outputs = tmp_path / "two.tif", tmp_path / "two.confidence.tif"
    predict_scene(
        KillOnceNet(marker), CARD, scene, outputs[0], confidence_path=outputs[1], device="cpu", workers=2
    )
    assert marker.exists()  # a worker did die, and Dask ran its region again elsewhere
    _same_as(expected, outputs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1, all killed afterwards."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(TESTS.parent)])}
    common = {"env": env, "cwd": tmp_path, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1"]
    worker = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--host", "127.0.0.1"]
    processes = [subprocess.Popen([*scheduler, "--port", str(port), "--no-dashboard"], **common)]
    try:
        for _ in range(2):
            processes.append(subprocess.Popen([*worker, "--nthreads", "1", "--no-dashboard"], **common))
        yield address
    finally:
        for process in reversed(processes):
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait(timeout=30)


@pytest.mark.slow  # three Python processes importing torch and Dask: ~30 s on two loaded cores
def test_a_cluster_started_by_hand_gives_the_single_process_raster(scene, reference, tmp_path, cluster):
    _, expected = reference
    outputs = tmp_path / "remote.tif", tmp_path / "remote.confidence.tif"
    result = predict_scene(
        PixelNet(), CARD, scene, outputs[0], confidence_path=outputs[1], device="cpu", scheduler=cluster
    )
    _same_as(expected, outputs)
    assert result.tiles > reference[0].tiles  # two workers: two regions


@pytest.mark.slow
def test_an_address_without_a_scheduler_fails_in_one_line_before_any_work(scene, tmp_path):
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match=f"scheduler='{address}': cannot reach a Dask scheduler"):
        predict_scene(PixelNet(), CARD, scene, tmp_path / "out.tif", device="cpu", scheduler=address)
    assert time.monotonic() - started < 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


@pytest.mark.parametrize("workers", ["0", "-2", "many"])
def test_workers_must_be_a_positive_number_or_auto(workers, scene, tmp_path):
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "-o", str(tmp_path / "o.tif"), "--workers", workers]
    )
    assert result.exit_code == 2
    assert "--workers" in result.output and "auto" in result.output


def _visible_devices() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


@pytest.mark.slow
def test_gpu_workers_are_pinned_one_per_device_with_a_gpu_resource(monkeypatch):
    """The --device cuda --workers auto cluster, started on a machine without GPUs by pretending two."""
    import torch

    from geoseg.inference.dask import _local_cluster
    from geoseg.inference.tasks import ModelSource

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    executor = _local_cluster(2, ModelSource("digest", module=PixelNet()), torch.device("cuda"))
    try:
        executor.client.wait_for_workers(2, timeout=60)
        assert sorted(executor.client.run(_visible_devices).values()) == ["0", "1"]
        workers = executor.client.scheduler_info()["workers"].values()
        assert [w["resources"] for w in workers] == [{"GPU": 1}, {"GPU": 1}]
        assert [w["nthreads"] for w in workers] == [1, 1] and executor.resources == {"GPU": 1}
    finally:
        executor.close()
    with pytest.raises(ConfigurationError, match="workers=3: this machine has 2 CUDA device"):
        _local_cluster(3, ModelSource("digest", module=PixelNet()), torch.device("cuda"))


def test_a_worker_that_cannot_reach_the_input_model_or_folder_says_which(scene, tmp_path):
    from geoseg.inference.dask import _check_access

    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    card = tmp_path / "card.json"
    card.write_text("{}")
    assert _check_access(str(scene), str(tmp_path), str(model), str(card)) is None
    assert "missing.tif" in _check_access(str(tmp_path / "missing.tif"), str(tmp_path), None, None)
    assert _check_access(str(scene), str(tmp_path), str(tmp_path / "gone.safetensors"), None) == (
        f"cannot read the model {tmp_path / 'gone.safetensors'} (workers need it on a shared file system)"
    )
    assert _check_access(str(scene), str(tmp_path), str(model), str(tmp_path / "gone.json")) == (
        f"cannot read the model card {tmp_path / 'gone.json'} (workers need it on a shared file system)"
    )
    assert _check_access(str(scene), str(tmp_path / "nowhere"), None, None) == (
        f"cannot write the output folder {tmp_path / 'nowhere'} (workers need it on a shared file system)"
    )


@pytest.mark.slow  # three Python processes importing torch and Dask: ~30 s on two loaded cores
def test_relative_paths_mean_the_clients_files_on_workers_in_another_folder(tmp_path, cluster, monkeypatch):
    """The workers run in tmp_path, where another scene.tif and another model.safetensors lie; the client runs
    in tmp_path/client: every relative path (input, model, output and its work folder) is the client's file,
    and the result is the single-process one."""
    client = tmp_path / "client"
    client.mkdir()
    monkeypatch.chdir(client)
    profile = dict(crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
    write_scene(client / "scene.tif", 200, 150, **profile)
    write_small_checkpoint(client / "model.safetensors")
    write_scene(tmp_path / "scene.tif", 90, 70, seed=1, **profile)  # the decoys in the workers' folder
    (tmp_path / "model.safetensors").write_bytes(b"not this one")

    def predict(*args):
        return CliRunner().invoke(cli, ["predict", "scene.tif", "-m", "model.safetensors", "--quiet", *args])

    single = predict("-o", "single.tif")
    assert single.exit_code == 0, single.output
    remote = predict("-o", "remote.tif", "--scheduler", cluster)
    assert remote.exit_code == 0, remote.output
    with rasterio.open(client / "single.tif") as one, rasterio.open(client / "remote.tif") as other:
        assert (other.width, other.height, other.transform) == (200, 150, one.transform)
        assert np.array_equal(other.read(), one.read())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client", "model.safetensors", "scene.tif"]


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="POSIX signal masks")
@pytest.mark.slow
def test_local_dask_workers_do_not_hear_stop_signals():
    """Ctrl-C reaches the whole process group: each worker process of ``--workers 2`` printed a
    KeyboardInterrupt traceback (a hang-up: a KeyError traceback; SIGTERM: the scheduler's failed
    broadcasts) while this process stopped them cleanly. Workers start with the stop signals blocked; this
    process's mask is as it was."""
    import signal

    from helpers import PixelNet

    from geoseg.inference.executors import open_executor
    from geoseg.inference.tasks import ModelSource
    from geoseg.model.loading import model_digest

    before = _blocked_signals()
    network = PixelNet()
    executor = open_executor(
        network, ModelSource(model_digest(network), module=network), torch.device("cpu"), workers=2
    )
    try:
        assert _blocked_signals() == before
        masks = executor.client.run(_blocked_signals)
        assert len(masks) == 2
        for blocked in masks.values():
            assert {int(signal.SIGINT), int(signal.SIGTERM), int(signal.SIGHUP)} <= blocked
    finally:
        executor.close()
