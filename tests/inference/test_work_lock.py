"""One process at a time writes an output: a second run on the same output is refused at once in one line
(naming the output and the process writing it) and touches nothing of the first; the lock dies with its
process, SIGKILL included, and leaves no file behind."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from helpers import CARD, PixelNet, write_scene

import geoseg.inference.plan as planning
from geoseg.errors import OutputError
from geoseg.inference.scene import predict_scene

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="Windows has no fcntl: outputs are not locked"
)

TESTS = Path(__file__).resolve().parents[1]
WORK, LOCK = ".out.tif.geoseg-work", ".out.tif.geoseg-lock"

# predict_scene in a fresh interpreter, as another `geoseg predict` would run; at its first progress report
# (a region half computed, the work folder full) it touches `started`, then does `then`
RUN = """
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import geoseg.device as device
import geoseg.inference.plan as planning
from conftest import PRETENDED_CPU
from helpers import CARD, PixelNet
from geoseg.inference.scene import predict_scene

planning.MIN_REGION_TILES, planning.RESUME_REGION_PIXELS = 1, 512 * 512
device.cpu_features = lambda: PRETENDED_CPU  # the CPU the tests pretend: the manifest's precision
go = Path({go!r})


def wait_for_go():
    deadline = time.monotonic() + 120
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def report(done, total):
    Path({started!r}).touch()
    {then}


predict_scene(PixelNet(), CARD, {scene!r}, {output!r}, confidence_path={confidence!r}, device="cpu",
              resume={resume}, progress=report)
"""
WAIT_FOR_GO = "wait_for_go()"
KILL = "os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a power cut"


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """700 x 600 px in four regions (the real minimum is ten tiles a region)."""
    monkeypatch.setattr(planning, "MIN_REGION_TILES", 1)
    monkeypatch.setattr(planning, "RESUME_REGION_PIXELS", 512 * 512)
    path = tmp_path / "scene.tif"
    write_scene(path, 700, 600, crs="EPSG:32633", transform=Affine(0.5, 0, 5e5, 0, -0.5, 5.8e6))
    return path


def _start(tmp_path: Path, scene: Path, then: str, resume: bool) -> subprocess.Popen:
    """The other process, once it reports its first tiles (it then holds the lock)."""
    code = RUN.format(
        tests=str(TESTS),
        go=str(tmp_path / "go"),
        started=str(tmp_path / "started"),
        then=then,
        scene=str(scene),
        output=str(tmp_path / "out.tif"),
        confidence=str(tmp_path / "out.confidence.tif"),
        resume=resume,
    )
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path)
    deadline = time.monotonic() + 240
    while not (tmp_path / "started").exists():
        assert process.poll() is None, "the first run ended before its first tiles"
        assert time.monotonic() < deadline, "the first run did not start"
        time.sleep(0.05)
    return process


def _folder(path: Path) -> dict[str, bytes | None]:
    """Every file under ``path`` (names relative to it), with its contents where the first run no longer
    writes it (the lock and the manifest; its part being written may grow meanwhile)."""
    return {
        str(p.relative_to(path)): p.read_bytes() if p.suffix != ".tif" else None
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def _read(path: Path):
    with rasterio.open(path) as dataset:
        return dataset.read(), dataset.read_masks(), dataset.profile


@pytest.mark.slow
def test_a_second_run_on_the_same_output_is_refused_in_one_line_and_the_first_finishes_intact(
    scene, tmp_path
):
    output, confidence = tmp_path / "out.tif", tmp_path / "out.confidence.tif"
    first = _start(tmp_path, scene, WAIT_FOR_GO, resume=False)
    try:
        before = _folder(tmp_path)
        assert f"{WORK}/manifest.json" in before
        with pytest.raises(OutputError) as refused:
            predict_scene(PixelNet(), CARD, scene, output, confidence_path=confidence, device="cpu")
        assert str(refused.value) == (
            f"{output}: another process (PID {first.pid}) is writing it; wait for it to finish or choose "
            "another output name"
        )
        assert _folder(tmp_path) == before  # not a file of the first run touched, nothing added
        (tmp_path / "go").touch()
        assert first.wait(timeout=240) == 0
    finally:
        first.kill()
    # complete and correct: the same rasters as one undisturbed run; the lock and work folder are gone
    whole, whole_confidence = tmp_path / "whole.tif", tmp_path / "whole.confidence.tif"
    predict_scene(PixelNet(), CARD, scene, whole, confidence_path=whole_confidence, device="cpu")
    for ours, reference in ((output, whole), (confidence, whole_confidence)):
        a, b = _read(ours), _read(reference)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.slow
def test_a_sigkilled_run_does_not_block_a_later_resume_and_the_lock_file_goes_after_it(scene, tmp_path):
    killed = _start(tmp_path, scene, KILL, resume=True)
    assert killed.wait(timeout=60) == -9
    left = tmp_path / LOCK
    assert left.read_text().strip() == str(killed.pid)  # the dead run's lock file, no longer locked
    output = tmp_path / "out.tif"
    result = predict_scene(
        PixelNet(),
        CARD,
        scene,
        output,
        confidence_path=tmp_path / "out.confidence.tif",
        device="cpu",
        resume=True,
    )
    assert result.outputs["classes"] == str(output) and output.is_file()
    assert not left.exists() and not (tmp_path / WORK).exists()


def test_a_run_that_fails_or_is_interrupted_leaves_no_lock_file(scene, tmp_path):
    def interrupt(done, total):
        assert (tmp_path / LOCK).read_text().strip() == str(os.getpid())  # held while it runs
        raise KeyboardInterrupt

    for resume in (False, True):
        with pytest.raises(KeyboardInterrupt):
            predict_scene(
                PixelNet(), CARD, scene, tmp_path / "out.tif", device="cpu", resume=resume, progress=interrupt
            )
        assert not (tmp_path / LOCK).exists()
    assert (tmp_path / WORK / "manifest.json").is_file()  # the resumable run's regions stay
