"""SIGTERM and SIGHUP stop every writing command as Ctrl-C does: exit 128+N, one line, nothing left behind.

Real subprocesses get real signals. To hit the worst moment deterministically, a small wrapper pauses the
command right before an output's rename (the temporary file is complete then) and says so through a marker
file; the mid-stream test instead waits for predict's first hidden temporary file while its threads run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from helpers import write_png, write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.model.manet import build_manet

GEOREF = dict(crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5))

# Runs the CLI (arguments after the marker and the output's name) with the last step before that output's
# rename paused until a signal arrives.
PAUSED_CLI = """
import sys, time
from pathlib import Path
import geoseg.atomic as atomic

marker, name = Path(sys.argv[1]), sys.argv[2]
give_default_permissions = atomic._give_default_permissions

def pause(path):
    if path.name.startswith(f".{name}."):
        marker.write_text(str(path))
        time.sleep(120)
    give_default_permissions(path)

atomic._give_default_permissions = pause
from geoseg.cli.main import cli
cli(sys.argv[3:], prog_name="geoseg")
"""

OUTPUT_NAMES = {
    "predict": "classes.tif",
    "vectorize": "map.gpkg",
    "train": "m.safetensors",
    "convert": "m.safetensors",
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_scene(folder / "scene.tif", width=96, height=96, **GEOREF)
    write_scene(folder / "large.tif", width=1024, height=1024, **GEOREF)
    classes = np.random.default_rng(1).integers(0, 7, (1, 64, 64)).astype("uint8")
    with rasterio.open(
        folder / "classes.tif", "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", **GEOREF
    ) as dst:
        dst.write(classes)
    rng = np.random.default_rng(2)
    write_png(folder / "image.png", rng.integers(0, 256, (3, 96, 96)).astype("uint8"))
    write_png(folder / "label.png", rng.integers(1, 8, (96, 96)).astype("uint8"))
    torch.manual_seed(0)
    torch.save(build_manet(7, "resnet18").state_dict(), folder / "raw.pth")
    return folder


def _environment() -> dict[str, str]:
    # one thread each: the machine is shared, and the signal test is about clean-up, not speed
    return {**os.environ, "OMP_NUM_THREADS": "1", "GDAL_NUM_THREADS": "1"}


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(
                f"the command ended (exit {process.returncode}) before the signal: {process.stderr.read()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the command did not reach the point to interrupt")
        time.sleep(0.02)


def _stop(process: subprocess.Popen, signum: int) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the command did not stop after the signal")
    return process.returncode, stderr


def _commands(inputs: Path, checkpoint: Path, out: Path) -> dict[str, list[str]]:
    return {
        "predict": [
            "predict", str(inputs / "scene.tif"), "-o", str(out / "classes.tif"), "-m", str(checkpoint),
        ],
        "vectorize": ["vectorize", str(inputs / "classes.tif"), "-o", str(out / "map.gpkg")],
        "train": [
            "train", "--images", str(inputs / "image.png"), "--labels", str(inputs / "label.png"),
            "--preset", "loveda", "--label-offset", "1", "--backbone", "resnet18", "--crop", "64",
            "--batch-size", "1", "--steps", "1", "--device", "cpu", "-o", str(out / "m.safetensors"),
        ],
        "convert": [
            "convert", str(inputs / "raw.pth"), "-o", str(out / "m.safetensors"), "--preset", "loveda",
        ],
    }  # fmt: skip


@pytest.mark.parametrize(
    "command, signum",
    [
        ("predict", signal.SIGTERM),
        ("vectorize", signal.SIGTERM),
        ("train", signal.SIGTERM),
        ("convert", signal.SIGTERM),
        ("convert", signal.SIGHUP),
    ],
)
def test_a_signal_right_before_the_rename_leaves_nothing(inputs, checkpoint, tmp_path, command, signum):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("an earlier file")
    marker = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(marker), OUTPUT_NAMES[command],
         *_commands(inputs, checkpoint, out)[command]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    _wait_for(marker.exists, process)
    assert Path(marker.read_text()).parent == out and Path(marker.read_text()).name.startswith(".")
    code, stderr = _stop(process, signum)
    name = signal.Signals(signum).name
    assert (code, stderr.strip().splitlines()[-1]) == (128 + signum, f"geoseg: terminated by {name}")
    assert "Traceback" not in stderr
    assert os.listdir(out) == ["kept.txt"]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
def test_a_signal_while_the_engine_threads_run_leaves_nothing(inputs, checkpoint, tmp_path, signum):
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "geoseg.cli.main", "predict", str(inputs / "large.tif"), "-o",
         str(out / "classes.tif"), "-m", str(checkpoint), "--tile", "64", "--overlap", "16"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    _wait_for(lambda: any(p.name.startswith(".") for p in out.iterdir()), process)
    time.sleep(0.5)  # well inside the stream: the scene takes seconds
    code, stderr = _stop(process, signum)
    assert code == 128 + signum, stderr
    assert stderr.strip().splitlines() == [f"geoseg: terminated by {signal.Signals(signum).name}"]
    assert os.listdir(out) == []


def test_sigkill_leaves_only_a_hidden_temporary_name_never_the_final_one(inputs, checkpoint, tmp_path):
    """SIGKILL cannot be caught: what it leaves must not pass for a finished output."""
    out = tmp_path / "out"
    out.mkdir()
    marker = tmp_path / "paused"
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(marker), "m.safetensors",
         *_commands(inputs, checkpoint, out)["convert"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    _wait_for(marker.exists, process)
    code, _ = _stop(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    (left,) = os.listdir(out)
    assert left.startswith(".m.safetensors.") and left.endswith(".tmp.safetensors")


@pytest.mark.slow
def test_a_signal_stops_dask_workers_too_and_leaves_nothing(inputs, checkpoint, tmp_path):
    """With --workers the handler lives in the CLI process only; closing the cluster ends its workers."""
    import psutil

    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "geoseg.cli.main", "predict", str(inputs / "large.tif"), "-o",
         str(out / "classes.tif"), "-m", str(checkpoint), "--workers", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    _wait_for(lambda: any(out.iterdir()), process, timeout=300)
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "the cluster's worker processes"
    code, stderr = _stop(process, signal.SIGTERM)
    assert (code, stderr.strip().splitlines()) == (143, ["geoseg: terminated by SIGTERM"])
    assert os.listdir(out) == []
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
