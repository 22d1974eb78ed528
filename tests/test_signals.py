"""SIGTERM and SIGHUP stop every writing command as Ctrl-C does: exit 128+N, one line, nothing left behind.

Real subprocesses get real signals. To hit the worst moment deterministically, a small wrapper pauses the
command right before the rename of a chosen temporary file (complete then) and says so through a marker file;
the mid-stream test instead waits for predict's first hidden temporary file while its threads run. A scene's
files are one set (see tests/inference/test_outputs.py): a stop between them leaves none, a stop during their
renames lets the set complete first.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_geotiff, write_png, write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.model.manet import build_manet

GRID = dict(crs="EPSG:32631", transform=from_origin(5e5, 6e6, 1, 1))
GEOREF = dict(crs="EPSG:32633", transform=from_origin(500000, 4000000, 0.5, 0.5))

# Runs the CLI (the arguments after the marker, the release file, the place and a file name pattern) paused,
# until a signal arrives or the release file appears, at the first temporary file matching the pattern: just
# before the commit of the set holding it ("commit": complete, signals not held yet), or just before its own
# rename inside the commit ("rename": signals held).
PAUSED_CLI = """
import fnmatch, os, sys, time
from pathlib import Path
import geoseg.atomic as atomic

marker, release, where, pattern = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

def pause_at(path):
    if fnmatch.fnmatchcase(path.name, pattern) and not marker.exists():
        marker.write_text(str(path))
        deadline = time.monotonic() + 120
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

commit, replace = atomic.OutputSet.commit, os.replace

def paused_commit(unit):
    for kind in unit.files():
        pause_at(unit.temporary(kind))
    commit(unit)

def paused_replace(src, dst, **options):
    pause_at(Path(src))
    replace(src, dst, **options)

if where == "commit":
    atomic.OutputSet.commit = paused_commit
else:
    os.replace = paused_replace
from geoseg.cli.main import cli
cli(sys.argv[5:], prog_name="geoseg")
"""

# the temporary file whose rename is the worst moment: the output complete, not yet in place
PAUSE_AT = {
    "predict": "..classes.tif.*",  # the COG copy into the class raster's staged name
    "vectorize": ".map.gpkg.*",
    "train": ".m.safetensors.*",
    "convert": ".m.safetensors.*",
}
TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp")  # .NAME.<hex>.tmp.*
# what a scene's run has beside its outputs until they are in place: temporary files and the lock it holds
STAGED = re.compile(r"^\..+\.([0-9a-f]{8}\.tmp|geoseg-lock$)")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_scene(folder / "scene.tif", width=96, height=96, **GEOREF)
    write_scene(folder / "large.tif", width=1024, height=1024, **GEOREF)
    classes = np.random.default_rng(1).integers(0, 7, (1, 64, 64)).astype("uint8")
    write_geotiff(folder / "classes.tif", classes, **GEOREF)
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


def _paused(
    tmp_path: Path, pattern: str, args: list[str], where: str = "commit"
) -> tuple[subprocess.Popen, Path, Path]:
    """The CLI with ``args`` running until it is about to commit (``where``: or rename) the first temporary
    file matching ``pattern``; returns the process, that file and the file that releases the pause."""
    marker, release = tmp_path / "paused", tmp_path / "release"
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_CLI, str(marker), str(release), where, pattern, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_environment(),
    )  # fmt: skip
    _wait_for(marker.exists, process)
    return process, Path(marker.read_text()), release


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
        pytest.param("predict", signal.SIGTERM, marks=pytest.mark.slow),
        ("vectorize", signal.SIGTERM),  # the one that loads no torch: seconds, the quick check keeps it
        pytest.param("train", signal.SIGTERM, marks=pytest.mark.slow),
        pytest.param("convert", signal.SIGTERM, marks=pytest.mark.slow),
        pytest.param("convert", signal.SIGHUP, marks=pytest.mark.slow),
    ],
)
def test_a_signal_right_before_the_rename_leaves_nothing(inputs, checkpoint, tmp_path, command, signum):
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("an earlier file")
    process, paused, _ = _paused(tmp_path, PAUSE_AT[command], _commands(inputs, checkpoint, out)[command])
    assert paused.parent == out and paused.name.startswith(".")
    code, stderr = _stop(process, signum)
    name = signal.Signals(signum).name
    assert (code, stderr.strip().splitlines()[-1]) == (128 + signum, f"geoseg: terminated by {name}")
    assert "Traceback" not in stderr
    assert os.listdir(out) == ["kept.txt"]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM])
@pytest.mark.slow
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


@pytest.mark.slow
def test_sigkill_leaves_only_a_hidden_temporary_name_never_the_final_one(inputs, checkpoint, tmp_path):
    """SIGKILL cannot be caught: what it leaves must not pass for a finished output."""
    out = tmp_path / "out"
    out.mkdir()
    process, _, _ = _paused(tmp_path, PAUSE_AT["convert"], _commands(inputs, checkpoint, out)["convert"])
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


# --- a scene's outputs are one set --------------------------------------------------------------------------

SCENE_FILES = [
    "scene.classes.qml",
    "scene.classes.tif",
    "scene.classes.tif.aux.xml",
    "scene.confidence.qml",
    "scene.confidence.tif",
    "scene.polygons.gpkg",
    "scene.quicklook.png",
]


def _scene_command(inputs: Path, checkpoint: Path, out: Path) -> list[str]:
    return [
        "predict", str(inputs / "scene.tif"), "-o", f"{out}/", "-m", str(checkpoint), "--confidence",
        "--quicklook", "--vectorize", "gpkg",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "signum, line",
    [(signal.SIGTERM, "geoseg: terminated by SIGTERM"), (signal.SIGINT, "geoseg: interrupted")],
)
@pytest.mark.slow
def test_a_signal_between_a_scenes_outputs_leaves_none_of_them(inputs, checkpoint, tmp_path, signum, line):
    """Paused as the polygons are written: class raster and confidence complete, the quick-look not begun."""
    out = tmp_path / "out"
    out.mkdir()
    process, paused, _ = _paused(tmp_path, "..scene.polygons.gpkg.*", _scene_command(inputs, checkpoint, out))
    staged = os.listdir(out)
    assert paused.parent == out and all(STAGED.match(name) for name in staged)
    assert {name.split(".tmp")[0].rsplit(".", 1)[0] for name in staged} >= {
        ".scene.classes.tif",
        ".scene.confidence.tif",
    }
    code, stderr = _stop(process, signum)
    assert (code, stderr.strip().splitlines()) == (128 + signum, [line])
    assert os.listdir(out) == []
    from click.testing import CliRunner

    from geoseg.cli.main import cli

    rerun = CliRunner().invoke(cli, _scene_command(inputs, checkpoint, out))  # no --overwrite needed
    assert rerun.exit_code == 0, rerun.output
    assert sorted(os.listdir(out)) == SCENE_FILES


@pytest.mark.slow
def test_sigkill_between_a_scenes_outputs_leaves_no_final_name(inputs, checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    process, _, _ = _paused(tmp_path, "..scene.polygons.gpkg.*", _scene_command(inputs, checkpoint, out))
    code, _ = _stop(process, signal.SIGKILL)
    assert code == -signal.SIGKILL
    left = os.listdir(out)
    assert left and all(STAGED.match(name) for name in left), left


@pytest.mark.slow
def test_a_signal_during_a_scenes_renames_lets_the_whole_set_arrive(inputs, checkpoint, tmp_path):
    """Paused at the rename of the staged confidence, after the class raster's: the set completes, then the
    signal stops the command."""
    out = tmp_path / "out"
    out.mkdir()
    process, paused, release = _paused(
        tmp_path, ".scene.confidence.tif.*", _scene_command(inputs, checkpoint, out), where="rename"
    )
    assert TEMPORARY.match(paused.name) and "scene.classes.tif" in os.listdir(out)
    process.send_signal(signal.SIGTERM)
    time.sleep(1.0)  # delivered to the waiting process
    release.write_text("go on")
    _, stderr = process.communicate(timeout=60)
    code = process.returncode
    assert (code, stderr.strip().splitlines()) == (143, ["geoseg: terminated by SIGTERM"])
    assert sorted(os.listdir(out)) == SCENE_FILES


@pytest.mark.slow
def test_a_signal_removes_the_output_folder_predict_made_while_it_is_empty(inputs, checkpoint, tmp_path):
    new = tmp_path / "new"
    scenes = [str(inputs / "scene.tif"), str(inputs / "large.tif")]
    args = ["predict", *scenes, "-o", str(new), "-m", str(checkpoint)]
    process, paused, _ = _paused(tmp_path, "..scene.classes.tif.*", args)
    assert paused.parent == new
    code, stderr = _stop(process, signal.SIGTERM)
    assert (code, stderr.strip().splitlines()) == (143, ["geoseg: terminated by SIGTERM"])
    assert sorted(os.listdir(tmp_path)) == ["paused"]


@pytest.mark.parametrize(
    "signum, line",
    [
        (signal.SIGINT, "geoseg: interrupted"),
        (signal.SIGTERM, "geoseg: terminated by SIGTERM"),
        (signal.SIGHUP, "geoseg: terminated by SIGHUP"),
    ],
)
@pytest.mark.slow
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
