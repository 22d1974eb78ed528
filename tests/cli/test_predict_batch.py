"""Batch habits of ``geoseg predict``: --skip-existing, --from-file (a list file or standard input)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import write_scene, write_small_checkpoint
from rasterio.transform import from_origin

from geoseg.cli.main import cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_small_checkpoint(tmp_path_factory.mktemp("model") / "r18.safetensors")


@pytest.fixture
def scenes(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    paths = []
    for i, name in enumerate(("a.tif", "b.tif", "c.tif")):
        write_scene(folder / name, 64, 64, seed=i, crs="EPSG:32631", transform=from_origin(5e5, 6e6, 1, 1))
        paths.append(folder / name)
    return paths


def _records(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_skip_existing_computes_only_the_missing_scenes(checkpoint, scenes, tmp_path):
    out = tmp_path / "out"
    first = CliRunner().invoke(
        cli, ["predict", str(scenes[0]), "-o", f"{out}/", "-m", str(checkpoint), "--json"]
    )
    assert first.exit_code == 0, first.output
    finished = out / "a.classes.tif"
    stamp = finished.stat().st_mtime_ns
    args = ["predict", *map(str, scenes), "-o", str(out), "-m", str(checkpoint), "--skip-existing", "--json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    records = _records(result.output)
    assert [(r["input"], r.get("status")) for r in records] == [
        (str(scenes[0]), "skipped"),
        (str(scenes[1]), None),
        (str(scenes[2]), None),
    ]
    assert records[0]["outputs"] == {
        "classes": str(finished),
        "classes.aux.xml": f"{finished}.aux.xml",
        "classes.qml": str(out / "a.classes.qml"),
    }
    assert (records[0]["width"], records[0]["height"], records[0]["tiles"]) == (64, 64, 0)
    assert records[1]["tiles"] == 1 and records[1]["outputs"]["classes"] == str(out / "b.classes.tif")
    assert finished.stat().st_mtime_ns == stamp  # not rewritten
    again = CliRunner().invoke(cli, args)
    assert [r.get("status") for r in _records(again.output)] == ["skipped"] * 3


def test_skip_existing_without_json_says_so_and_refuses_overwrite(checkpoint, scenes, tmp_path):
    out = tmp_path / "classes.tif"
    args = ["predict", str(scenes[0]), "-o", str(out), "-m", str(checkpoint)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    result = CliRunner().invoke(cli, [*args, "--skip-existing"])
    assert result.exit_code == 0 and result.output == f"{scenes[0]}: skipped, {out} exists\n"
    result = CliRunner().invoke(cli, [*args, "--skip-existing", "--overwrite"])
    assert result.exit_code == 2 and "give either --skip-existing or --overwrite, not both" in result.output


def test_a_scene_with_only_some_outputs_is_not_skipped_and_the_error_says_which(checkpoint, scenes, tmp_path):
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "classes.tif"
    args = ["predict", str(scenes[0]), "-o", str(out), "-m", str(checkpoint)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    for extra in ["--skip-existing"], []:
        result = CliRunner().invoke(cli, [*args, *extra, "--confidence"])
        assert (result.exit_code, result.output) == (
            1,
            f"Error: {scenes[0]}: an incomplete set of outputs, {out}, {out}.aux.xml exist but "
            f"{out.parent / 'classes.confidence.tif'} is missing (an interrupted earlier run?); pass "
            "--overwrite to compute the scene again\n",
        )
    result = CliRunner().invoke(cli, [*args, "--confidence", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "classes.confidence.qml",
        "classes.confidence.tif",
        "classes.qml",
        "classes.tif",
        "classes.tif.aux.xml",
    ]


def test_a_missing_class_names_side_car_makes_the_set_incomplete(checkpoint, scenes, tmp_path):
    """The side-car is one of the scene's files: a set without it is not skipped, and not overwritten
    unasked; a lone file (maybe not geoseg's) is just an existing output."""
    out = tmp_path / "classes.tif"
    args = ["predict", str(scenes[0]), "-o", str(out), "-m", str(checkpoint), "--json"]
    first = CliRunner().invoke(cli, args)
    assert _records(first.output)[0]["outputs"] == {
        "classes": str(out),
        "classes.aux.xml": f"{out}.aux.xml",
        "classes.qml": str(tmp_path / "classes.qml"),
    }
    (tmp_path / "classes.tif.aux.xml").unlink()
    result = CliRunner().invoke(cli, [*args, "--skip-existing"])
    assert (result.exit_code, result.output) == (
        1,
        f"Error: {out}: output exists; pass --overwrite to replace it\n",
    )
    second = CliRunner().invoke(cli, [*args, "--confidence", "--overwrite"])
    assert second.exit_code == 0, second.output
    (tmp_path / "classes.tif.aux.xml").unlink()
    result = CliRunner().invoke(cli, [*args, "--confidence", "--skip-existing"])
    assert result.exit_code == 1
    assert f"{out}, {tmp_path / 'classes.confidence.tif'} exist but {out}.aux.xml is missing" in result.output


def test_inputs_from_a_list_file_and_from_standard_input(checkpoint, scenes, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"# scenes of the day\n{scenes[0]}\n\n  {scenes[1]}  \n")
    out = tmp_path / "out"
    args = ["-o", str(out), "-m", str(checkpoint), "--json"]
    result = CliRunner().invoke(cli, ["predict", "--from-file", str(listing), str(scenes[2]), *args])
    assert result.exit_code == 0, result.output
    assert [r["input"] for r in _records(result.output)] == [str(scenes[2]), str(scenes[0]), str(scenes[1])]
    assert sorted(p.name for p in out.glob("*.tif")) == ["a.classes.tif", "b.classes.tif", "c.classes.tif"]
    piped = CliRunner().invoke(
        cli, ["predict", "--from-file", "-", *args, "--skip-existing"], input=f"{scenes[1]}\n{scenes[2]}\n"
    )
    assert piped.exit_code == 0, piped.output
    assert [(r["input"], r["status"]) for r in _records(piped.output)] == [
        (str(scenes[1]), "skipped"),
        (str(scenes[2]), "skipped"),
    ]


def test_no_inputs_at_all_is_a_usage_error(checkpoint, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing today\n")
    result = CliRunner().invoke(cli, ["predict", "--from-file", str(empty), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no inputs: give INPUT... or --from-file FILE" in result.output
