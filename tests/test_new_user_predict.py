"""Faults a new user found in ``geoseg predict``, each pinned by the test that failed before its fix."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from helpers import write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.inference.outputs import prepare_outputs

GRID = dict(crs="EPSG:32631", transform=from_origin(5e5, 6e6, 1, 1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


def _digest(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_output_of_one_scene_that_is_another_input_is_refused(tmp_path):
    """``predict a.tif out/a.classes.tif -o out/ -f``: scene a's class raster is the second input, which was
    replaced by it before it was read (and then failed with 'IndexError: tuple index out of range')."""
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "out" / "a.classes.tif"
    write_scene(victim, 64, 64, seed=1, **GRID)
    with pytest.raises(ConfigurationError, match=f"^{victim}: the output {victim} would replace this input"):
        prepare_outputs([tmp_path / "a.tif", victim], tmp_path / "out", overwrite=True)


def test_an_output_hard_linked_to_its_input_is_refused(tmp_path):
    """Another name of the input's file (a hard link) is the input all the same."""
    write_scene(tmp_path / "scene.tif", 64, 64, **GRID)
    os.link(tmp_path / "scene.tif", tmp_path / "classes.tif")
    with pytest.raises(ConfigurationError, match="would replace this input"):
        prepare_outputs([tmp_path / "scene.tif"], tmp_path / "classes.tif", overwrite=True)


def test_cli_leaves_an_input_named_like_another_scene_output_untouched(checkpoint, tmp_path):
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    (tmp_path / "out").mkdir()
    victim = tmp_path / "out" / "a.classes.tif"
    write_scene(victim, 64, 64, seed=1, **GRID)
    before = _digest(victim)
    args = ["predict", str(tmp_path / "a.tif"), str(victim), "-o", str(tmp_path / "out"), "-f"]
    result = CliRunner().invoke(cli, [*args, "-m", str(checkpoint)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {victim}: the output {victim} would")
    assert _digest(victim) == before
    assert sorted(os.listdir(tmp_path / "out")) == ["a.classes.tif"]


def _blocked_signals() -> set[int]:
    import signal

    return {int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])}


@pytest.mark.skipif(not hasattr(__import__("signal"), "pthread_sigmask"), reason="POSIX signal masks")
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


@pytest.mark.parametrize(
    "signum, line",
    [
        (signal.SIGINT, "geoseg: interrupted"),
        (signal.SIGTERM, "geoseg: terminated by SIGTERM"),
        (signal.SIGHUP, "geoseg: terminated by SIGHUP"),
    ],
)
def test_a_stop_signal_to_the_process_group_with_dask_workers_prints_one_line(
    checkpoint, tmp_path, signum, line
):
    """A terminal's Ctrl-C or hang-up, or ``timeout``'s SIGTERM, reach geoseg and its Dask workers alike:
    one line, no tracebacks."""
    write_scene(tmp_path / "large.tif", 1024, 1024, **GRID)
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "geoseg.cli.main", "predict", str(tmp_path / "large.tif"), "-o",
         str(out / "classes.tif"), "-m", str(checkpoint), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "GDAL_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(out.iterdir()):  # the work folder: the cluster runs regions
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    time.sleep(1)
    os.killpg(process.pid, signum)
    try:
        _, stderr = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("the command did not stop")
    assert (process.returncode, stderr.strip().splitlines()) == (128 + signum, [line])
    assert os.listdir(out) == []


@pytest.mark.parametrize("output", ["", " "])
def test_an_empty_output_is_refused_not_taken_for_the_current_folder(tmp_path, output, monkeypatch):
    """``-o "$OUT"`` with OUT unset wrote <stem>.classes.tif into the current folder."""
    write_scene(tmp_path / "a.tif", 64, 64, **GRID)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match="^-o is empty; give the class raster .tif"):
        prepare_outputs([tmp_path / "a.tif"], output)
