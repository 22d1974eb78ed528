"""Library errors name the Python parameter; the CLI shows the flag that sets it, through one table."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from geoseg.cli.main import cli
from geoseg.cli.options import PARAMETER_FLAGS, flags_for_parameters
from geoseg.errors import one_line


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("workers=0: give at least 1 (or auto)", "--workers 0: give at least 1 (or auto)"),
        ("scheduler='tcp://127.0.0.1:1': cannot reach", "--scheduler tcp://127.0.0.1:1: cannot reach"),
        ("mps; run without compile=True", "mps; run without --compile"),
        ("(set batch_size=2 to start there)", "(set --batch-size 2 to start there)"),
        ("delete w or drop resume=True to start over", "delete w or drop --resume to start over"),
        ("the options overlap changed from 16 to 32", "the options overlap changed from 16 to 32"),
    ],
)
def test_the_cli_shows_each_parameter_as_its_flag(library, cli):
    assert flags_for_parameters(library) == cli


def test_every_parameter_maps_to_a_flag_of_its_own():
    assert all(flag.startswith("--") for flag in PARAMETER_FLAGS.values())
    assert len(set(PARAMETER_FLAGS.values())) == len(PARAMETER_FLAGS)


def test_one_line_joins_the_lines_and_runs_of_spaces_of_an_error():
    assert one_line(ValueError("a\n  b\tc ")) == "a b c"


@pytest.mark.parametrize("command", ["convert", "train"])
def test_a_checkpoint_is_never_written_under_an_export_suffix(tmp_path, command):
    """``convert ... -o model.onnx`` wrote a safetensors file that ``info`` and ``predict -m`` then read as
    ONNX ('not a readable ONNX model')."""
    output = tmp_path / "model.onnx"
    args = ["--images", "a.tif", "--labels", "b.tif"] if command == "train" else ["source.pth"]

    result = CliRunner().invoke(cli, [command, *args, "--preset", "loveda", "-o", str(output)])

    assert result.exit_code == 2
    assert (
        "model.onnx: geoseg reads .onnx files as ONNX exports (geoseg export), not as checkpoints"
        in result.output
    )
    assert not output.exists()
