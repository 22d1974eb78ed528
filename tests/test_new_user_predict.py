"""Faults a new user found in ``geoseg predict``, each pinned by the test that failed before its fix."""

from __future__ import annotations

import hashlib
import os

import pytest
from click.testing import CliRunner
from helpers import write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.cli.main import cli
from geoseg.errors import ConfigurationError
from geoseg.inference.predict import prepare_outputs

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
