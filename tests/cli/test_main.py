"""The command group turns every failure into one line and the documented exit code."""

from __future__ import annotations

import os
import signal
import threading

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
        (cli_main.Terminated(signal.SIGTERM), 143, "geoseg: terminated by SIGTERM"),
        (cli_main.Terminated(signal.SIGHUP), 129, "geoseg: terminated by SIGHUP"),
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


@pytest.mark.parametrize(
    "args, message",
    [
        ("segment", "Error: No such command 'segment'."),
        ("--bogus info", "Error: No such option '--bogus'."),
        ("predict {scene} -o {out}.tif --tile abc", "Error: Invalid value for '--tile': 'abc' is not"),
        ("predict {scene} -o {out}.tif --overlap -5", "Error: Invalid value for '--overlap':"),
        ("predict {scene} -o {out}.tif --workers 0", "Error: Invalid value for '--workers':"),
        ("predict {scene} -o {out}.tif --tta bogus", "Error: Invalid value for '--tta':"),
        ("predict {scene}", "Error: Missing option '-o' / '--output'."),
        ("predict {scene} -o {out}.tif --tiel 5", "Error: No such option '--tiel'."),
        ("vectorize {scene} -o {out}.gpkg --min-area -1", "Error: Invalid value for '--min-area':"),
        ("vectorize {scene} -o {out}.gpkg --min-area 2 --min-pixels 5", "Error: give either"),
        ("vectorize", "Error: Missing argument 'CLASSES'."),
        ("serve {scene} --port 99999", "Error: Invalid value for '--port': 99999 is not in the range"),
        ("info {scene} -o {out}.json", "Error: -o/--output writes the STAC Item: add --stac"),
        ("export {scene} -o {out}.onnx --for qgis", "Error: Invalid value for '--for':"),
    ],
)
def test_usage_errors_are_one_line_naming_the_option_and_exit_2(tmp_path, args, message):
    """Click's own refusals too: no ``Usage:`` / ``Try '... --help'`` preamble, the project's one line."""
    scene = tmp_path / "scene.tif"
    scene.write_bytes(b"")
    args = [arg.format(scene=scene, out=tmp_path / "out") for arg in args.split()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(message)
    assert result.stdout == ""


def test_a_bare_geoseg_still_shows_the_help():
    result = CliRunner().invoke(cli, [], prog_name="geoseg")
    assert result.exit_code == 2
    assert "Usage: geoseg [OPTIONS] COMMAND" in result.output
    assert "geoseg predict scene.tif -o classes.tif" in result.output


def test_stop_signals_raise_once_in_the_main_thread_and_the_old_handlers_come_back():
    before = {signum: signal.getsignal(signum) for signum in cli_main.STOP_SIGNALS}
    with pytest.raises(cli_main.Terminated) as stopped, cli_main.stop_signals_raise():
        try:
            os.kill(os.getpid(), signal.SIGHUP)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal during the clean-up is ignored
    assert stopped.value.signum == signal.SIGHUP
    assert {signum: signal.getsignal(signum) for signum in cli_main.STOP_SIGNALS} == before


def test_a_command_run_outside_the_main_thread_leaves_the_handlers_alone():
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def run():
        with cli_main.stop_signals_raise():
            seen.append(signal.getsignal(signal.SIGTERM))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert seen == [before]


def test_a_command_restores_the_signal_handlers_it_installed(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "missing.tif")])
    assert result.exit_code == 1
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_signal_while_a_failure_is_reported_still_ends_in_one_line(monkeypatch, tmp_path):
    from geoseg.errors import InputError

    _patch_describe(monkeypatch, InputError("bad input"))

    def signal_arrives(message):
        raise cli_main.Terminated(signal.SIGTERM)

    monkeypatch.setattr(cli_main, "_one_line", signal_arrives)
    result = CliRunner().invoke(cli, ["info", str(tmp_path)])
    assert (result.exit_code, result.output) == (143, "geoseg: terminated by SIGTERM\n")


@pytest.fixture(scope="module")
def undecodable(tmp_path_factory):
    """A 3-band image and a 1-band class raster whose headers open but whose pixels GDAL cannot decode (NeXT
    compression), without georeferencing (which every command would otherwise warn about first)."""
    import numpy as np
    from helpers import set_tiff_compression_tag, write_geotiff

    folder = tmp_path_factory.mktemp("undecodable")
    for name, count in [("image.tif", 3), ("classes.tif", 1)]:
        write_geotiff(folder / name, np.zeros((count, 64, 64), np.uint8), crs=None, transform=None)
        set_tiff_compression_tag(folder / name, 32766)
    return folder


@pytest.mark.parametrize(
    "command",
    [
        ["predict", "{image}", "-o", "{out}/classes.tif", "-m", "{model}"],
        ["predict", "{image}", "-o", "{out}/classes.tif", "-m", "{model}", "--scale", "auto"],
        ["vectorize", "{classes}", "-o", "{out}/map.gpkg"],
        ["evaluate", "{classes}", "{classes}", "--preset", "loveda"],
    ],
)
def test_pixels_gdal_cannot_decode_are_one_line_before_any_warning(undecodable, tmp_path, command):
    import torch

    from geoseg.model.checkpoint import save_checkpoint
    from geoseg.model.manet import build_manet
    from geoseg.model.presets import preset_card

    model = tmp_path / "m.safetensors"
    if "-m" in command:
        torch.manual_seed(0)
        save_checkpoint(build_manet(7, "resnet18"), preset_card("loveda", "resnet18"), model)
    image, classes = undecodable / "image.tif", undecodable / "classes.tif"
    args = [a.format(image=image, classes=classes, out=tmp_path, model=model) for a in command]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    path = image if command[0] == "predict" else classes
    reason = (
        f"{path.name}, band 1: IReadBlock failed at X offset 0, Y offset 0: TIFFReadEncodedStrip() failed."
    )
    assert result.output == f"Error: {path}: read failed ({reason})\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["m.safetensors"] if "-m" in command else [])


def test_every_json_line_is_strict_json_with_non_finite_numbers_as_strings(capsys):
    import json

    from geoseg.cli.options import emit_json

    emit_json({"iou": {"road": float("nan"), "water": 0.5}, "range": (float("-inf"), float("inf")), "n": 3})
    line = capsys.readouterr().out

    def refuse(name):
        raise ValueError(name)

    assert json.loads(line, parse_constant=refuse) == {
        "iou": {"road": "nan", "water": 0.5},
        "range": ["-inf", "inf"],
        "n": 3,
    }
