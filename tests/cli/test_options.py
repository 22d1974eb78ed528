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
        # a bare, single-quoted and double-quoted value, and True: the flag alone
        ("max_size=100 is too small", "--max-size 100 is too small"),
        (
            "precision='int8' runs on the CPU; use device='cpu'",
            "--precision int8 runs on the CPU; use --device cpu",
        ),
        ('drop engine="torch"; then', "drop --engine torch; then"),
        ("output exists; pass overwrite=True to replace it", "output exists; pass --overwrite to replace it"),
        # a value that has a flag of its own, and parameters spelled differently on the command line
        ("or pass styles=False", "or pass --no-styles"),
        ("target='deepness': tile 500", "--for deepness: tile 500"),
        # lists, tuples and dicts as a flag takes them
        ("bands=[4, 3, 2] lists 3 band(s)", "--bands 4,3,2 lists 3 band(s)"),
        ("pass scale=(0, 4000) or scale='auto'", "pass --scale 0,4000 or --scale auto"),
        ("priority=('building',) first", "--priority building first"),
        ("map them with class_map={'VALUE': 'CLASS', …}", "map them with --class-map VALUE=CLASS,…"),
        # short flags, an empty value, and the one form of class names and counts (a dict entry)
        ("per_class=-4: give 0 or more units per class", "-n -4: give 0 or more units per class"),
        ("output='': give the class raster", '-o "": give the class raster'),
        ("seed=-1: give a whole number, 0 or more", "--seed -1: give a whole number, 0 or more"),
        ("class_map={'water': 'ocean'}: 'ocean' is no class", "--class-map water=ocean: 'ocean' is no class"),
        ("allocation={'nosuch': 5}: 'nosuch' is no class", "--allocation nosuch=5: 'nosuch' is no class"),
        ("allocation='water=abc': 'water=abc' is not", "--allocation water=abc: 'water=abc' is not"),
        # placeholders: the flag and its metavar
        ("pass preset=NAME or card=FILE", "pass --preset NAME or --card FILE"),
    ],
)
def test_the_cli_shows_each_parameter_as_its_flag(library, cli):
    assert flags_for_parameters(library) == cli


def test_a_parameter_of_the_table_has_its_flag_in_every_command_that_takes_it():
    """One table serves every command: a command whose option is named like a parameter of the table (the
    click name is the function's parameter) offers that parameter's flag, so no command means another."""
    import click

    flags = {key.partition("=")[0]: flag for key, flag in PARAMETER_FLAGS.items()}
    commands = {name: cli.get_command(None, name) for name in cli.list_commands(None)}
    offered = set()
    for name, command in commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                offered.update(param.opts)
                if param.name in flags and flags[param.name] != "--no-styles":
                    assert flags[param.name] in param.opts, (name, param.name, param.opts)
    assert set(PARAMETER_FLAGS.values()) <= offered


def test_quicklook_names_overwrite_in_python_and_its_flag_on_the_command_line(tmp_path):
    from helpers import blocky_classes, write_classes

    from geoseg.api import quicklook
    from geoseg.errors import OutputError

    classes = write_classes(tmp_path / "c.tif", blocky_classes(40, 60))
    (tmp_path / "c.png").write_bytes(b"old")
    with pytest.raises(OutputError, match=r"c\.png: output exists; pass overwrite=True to replace it$"):
        quicklook(classes, tmp_path / "c.png")
    result = CliRunner().invoke(cli, ["quicklook", str(classes), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {tmp_path / 'c.png'}: output exists; pass --overwrite to replace it\n"


def test_every_parameter_maps_to_a_flag_of_its_own():
    assert all(flag.startswith("-") for flag in PARAMETER_FLAGS.values())
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


@pytest.mark.parametrize(
    ("call", "cli"),
    [
        (lambda: _vectorize(min_area=-1), "--min-area -1: give zero or more square metres"),
        (lambda: _vectorize(simplify=-2), "--simplify -2: give zero or more metres"),
        (
            lambda: _vectorize(min_area=2, min_pixels=5),
            "give either --min-area M2 or --min-pixels N, not both",
        ),
        (lambda: _vectorize(connectivity=6), "--connectivity 6: give 4 or 8"),
        (lambda: _label_encoding(offset=-1), "--label-offset -1: give 0 or more"),
        (lambda: _training(seed=-1), "--seed -1: give a whole number, 0 or more"),
        (lambda: _training(epochs=0), "--epochs 0: give at least 1"),
    ],
)
def test_values_the_library_refuses_are_named_as_their_parameter_and_shown_as_their_flag(call, cli):
    """Before: 'minimum area must be zero or more square metres, not -1', 'label offset must be ...'."""
    from geoseg.errors import GeosegError

    with pytest.raises(GeosegError) as refused:
        call()
    assert flags_for_parameters(str(refused.value)) == cli


def _vectorize(**options):
    from geoseg.vector.vectorize import vectorize

    vectorize("missing.tif", "out.gpkg", **options)


def _label_encoding(**options):
    from geoseg.labels.raster import LabelEncoding

    LabelEncoding(**options)


def _training(**options):
    from geoseg.model.architectures import ARCHITECTURES
    from geoseg.training.loop import TrainingConfig

    TrainingConfig(**options).check(ARCHITECTURES["manet"])
