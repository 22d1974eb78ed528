"""The command group turns every failure into one line and the documented exit code."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from geoseg.cli import main as cli_main
from geoseg.cli.main import cli


def _patch_describe(monkeypatch, error: BaseException) -> None:
    import geoseg.api

    def fail(path):
        raise error

    monkeypatch.setattr(geoseg.api, "describe", fail)


@pytest.mark.parametrize(
    "error, code, message",
    [
        (KeyboardInterrupt(), 130, "geoseg: interrupted"),
        (RuntimeError("weird\nmultiline failure"), 1, "Error: RuntimeError: weird multiline failure"),
        (MemoryError(), 1, "Error: out of memory"),
    ],
)
def test_failures_become_one_line_and_an_exit_code(monkeypatch, tmp_path, error, code, message):
    _patch_describe(monkeypatch, error)
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert result.exit_code == code
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_every_registered_command_loads_and_has_help():
    runner = CliRunner()
    for name in cli_main.COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage: " in result.output


def test_unknown_command_is_a_usage_error():
    result = CliRunner().invoke(cli, ["segment"])
    assert result.exit_code == 2
    assert "No such command 'segment'" in result.output
