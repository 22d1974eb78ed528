"""Shared fixtures: paths to the real data beside the repository."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
