"""The ``geoseg`` command group: the one place where errors become one-line messages and exit codes.

Exit codes: 0 success, 1 a failure at run time, 2 a usage error, 130 interrupted (Ctrl-C).
Commands are imported lazily so ``geoseg --help`` and ``geoseg info`` start without importing torch.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from geoseg import __version__
from geoseg.errors import GeosegError

# command name -> module under geoseg.cli holding a click command of the same name
COMMANDS = {
    "predict": "predict",
    "vectorize": "vectorize",
    "evaluate": "evaluate",
    "train": "train",
    "convert": "convert",
    "info": "info",
}


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


class GeosegGroup(click.Group):
    """Lazily loads commands and turns every failure into one line on stderr, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(f"geoseg.cli.{module_name}")
        return getattr(module, name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("geoseg: interrupted", err=True)
            sys.exit(130)
        except GeosegError as error:
            click.echo(f"Error: {_one_line(error)}", err=True)
            sys.exit(1)
        except MemoryError:
            click.echo("Error: out of memory; try a smaller --batch-size or --tile", err=True)
            sys.exit(1)
        except Exception as error:  # an unexpected failure still gets one line, not a traceback
            if ctx.obj and ctx.obj.get("debug"):
                raise
            kind = type(error).__name__
            click.echo(f"Error: {kind}: {_one_line(error)} (rerun with --debug for details)", err=True)
            sys.exit(1)


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"Warning: {_one_line(message)}", err=True)


@click.group(cls=GeosegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="geoseg")
@click.option("--debug", is_flag=True, hidden=True, help="Show tracebacks of unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Land-cover maps from very-high-resolution orthophotos with MANet.

    \b
    geoseg predict scene.tif -o classes.tif      segment a GeoTIFF of any size
    geoseg vectorize classes.tif -o map.gpkg     class raster to polygons
    geoseg evaluate classes.tif truth.tif        accuracy against ground truth
    geoseg train --images ... --labels ... -o model.safetensors
    geoseg convert foreign.ckpt -o model.safetensors --preset vaihingen
    geoseg info model.safetensors | scene.tif
    """
    import rasterio

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    warnings.showwarning = _show_warning
    # One GDAL environment for every command (GDAL settings live here and nowhere else).
    ctx.obj["env"] = ctx.with_resource(rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS="ALL_CPUS"))
