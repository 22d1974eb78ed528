"""Shared fixtures: paths to the real data beside the repository."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from geoseg import device
from geoseg.device import CpuFeatures


def pytest_configure(config) -> None:
    """Ctrl-C as a terminal sends it, whatever started the suite: a shell without job control (``nohup``,
    ``cmd &`` in a script) starts it with SIGINT ignored, which its subprocesses inherit, and the signal
    tests then saw a geoseg that never hears Ctrl-C. Python's own handler (not inherited across exec) puts
    it back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# One intra-op thread: on a shared machine torch's thread pool makes small operations ~100x slower under
# load, and the tests are about results, not speed (the benchmarks measure speed).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is not present")
    return SHARED_DATA


# The tests' CPU, whatever the host has (CI runs on AVX2-only and on native-bf16 machines): AVX2, no native
# bf16 or fp16, so precision ``auto`` is fp32 and the layout contiguous.
PRETENDED_CPU = CpuFeatures(avx512=False, native_bf16=False, native_fp16=False)
_HOST_CPU = device.cpu_features


@pytest.fixture(scope="session", autouse=True)
def _pretended_cpu_for_the_session() -> Iterator[None]:
    """The pretended CPU from the first fixture on: module- and session-scoped fixtures (a reference
    prediction) run before any function-scoped one and must see the CPU their tests see."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(device, "cpu_features", lambda: PRETENDED_CPU)
        yield


@pytest.fixture(autouse=True)
def pretend_cpu(request, monkeypatch) -> Callable[..., None]:
    """Every test runs on :data:`PRETENDED_CPU`; ``pretend_cpu(avx512=True, native_bf16=True)`` pretends
    another for one test. A test of the detection itself is marked ``real_cpu``. Only this process pretends:
    CLI subprocesses and Dask workers see the host (their tests check messages, or run networks without
    parameters, which neither changes)."""

    def pretend(*, avx512: bool = False, native_bf16: bool = False, native_fp16: bool = False) -> None:
        features = CpuFeatures(avx512=avx512, native_bf16=native_bf16, native_fp16=native_fp16)
        monkeypatch.setattr(device, "cpu_features", lambda: features)

    if request.node.get_closest_marker("real_cpu"):
        monkeypatch.setattr(device, "cpu_features", _HOST_CPU)
    return pretend


@pytest.fixture(scope="session", autouse=True)
def export_cache(tmp_path_factory):
    """ONNX exports the tests make go to a folder of their own, never the user's ~/.cache/geoseg."""
    import os

    folder = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


@pytest.fixture
def make_geotiff(tmp_path) -> Callable[..., Path]:
    """The one GeoTIFF factory (rio-tiler's pattern): ``make_geotiff("a.tif", data, crs=..., transform=...,
    nodata=..., mask=..., classes=..., tags=..., **creation_options)`` writes ``data`` ((C, H, W) or
    (H, W)) under ``tmp_path`` (or at an absolute path) on the test grid unless told otherwise, and returns
    the path; :func:`helpers.write_geotiff` lists the options. Module helpers that need no fixture call
    that function, the same writer."""
    from helpers import write_geotiff

    def make(name: str | Path, data, **options) -> Path:
        path = Path(name) if Path(name).is_absolute() else tmp_path / name
        return write_geotiff(path, data, **options)

    return make
