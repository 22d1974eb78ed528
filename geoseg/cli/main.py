"""The ``geoseg`` command group: the one place where errors become one-line messages and exit codes.

Exit codes: 0 success, 1 a failure at run time, 2 a usage error, 128+N stopped by signal N: 130 Ctrl-C
(SIGINT), 143 SIGTERM (``kill``, ``docker stop``, SLURM, Kubernetes), 129 SIGHUP (a closed terminal).
Commands are imported lazily so ``geoseg --help`` and ``geoseg info`` start without importing torch.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

import click

from geoseg import __version__
from geoseg.errors import GeosegError, one_line

# command name -> module under geoseg.cli holding a click command of the same name
COMMANDS = {
    "predict": "predict",
    "vectorize": "vectorize",
    "evaluate": "evaluate",
    "train": "train",
    "convert": "convert",
    "info": "info",
    "export": "export",
    "quicklook": "quicklook",
    "serve": "serve",
    "sample": "sample",
}


# Signals that stop a run the way Ctrl-C does (SIGINT keeps Python's own KeyboardInterrupt); Windows has
# no SIGHUP.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """A stop signal, raised in the main thread so that it unwinds like KeyboardInterrupt: every
    ``atomic_output`` removes its temporary file and the engine's threads are told to stop and joined.
    A ``BaseException`` so that ``except Exception`` (per-scene error records, retries) never swallows it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise :class:`Terminated` in the main thread (once: a second signal
    during the clean-up is ignored so that the clean-up finishes); the previous handlers come back after.

    Only the main thread of the CLI process may install handlers: threads cannot, and a child process forked
    with the handler (a DataLoader or Dask worker) dies by the signal as it would have without geoseg."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()
    raised = False

    def handler(signum: int, frame) -> None:
        nonlocal raised
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not raised:
            raised = True
            raise Terminated(signum)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _one_line(message: object) -> str:
    """An error or warning as the CLI shows it: one line, the library's parameters as their flags."""
    from geoseg.cli.options import flags_for_parameters

    return flags_for_parameters(one_line(message))


class OneLineUsageError(click.ClickException):
    """A usage error shown as click shows any error, ``Error: <message>``, without click's ``Usage:`` and
    ``Try '... --help'`` preamble: bad input gets one line, whichever parser refused it."""

    exit_code = 2


@contextlib.contextmanager
def usage_errors_one_line() -> Iterator[None]:
    """Inside, a click usage error (a bad value, a missing argument, an unknown option or command) becomes
    a :class:`OneLineUsageError` with click's own message, which names the option. A bare ``geoseg`` still
    shows the help."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.UsageError as error:
        raise OneLineUsageError(one_line(error.format_message())) from None


class GeosegGroup(click.Group):
    """Lazily loads commands and turns every failure into one line on stderr, never a traceback."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The group's own options (``geoseg --bogus``); the commands' are parsed inside ``invoke``.
        with usage_errors_one_line():
            return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module_name = COMMANDS.get(name)
        if module_name is None:
            return None
        module = importlib.import_module(f"geoseg.cli.{module_name}")
        return getattr(module, name)

    def invoke(self, ctx: click.Context):
        # Outermost, so that a stop signal arriving while a failure is being reported still ends in one line.
        try:
            return self._invoke_reporting(ctx)
        except Terminated as stop:
            click.echo(f"geoseg: terminated by {signal.Signals(stop.signum).name}", err=True)
            sys.exit(128 + stop.signum)

    def _invoke_reporting(self, ctx: click.Context):
        try:
            with usage_errors_one_line():
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
    geoseg sample classes.tif -o samples.gpkg    points to label, for area estimates
    geoseg train --images ... --labels ... -o model.safetensors
    geoseg convert foreign.ckpt -o model.safetensors --preset vaihingen
    geoseg info model.safetensors | scene.tif
    geoseg quicklook classes.tif -o classes.png  picture with legend and scale bar
    geoseg serve scene.tif                       look at the map in a browser or QGIS
    """
    import rasterio

    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    warnings.showwarning = _show_warning
    ctx.with_resource(stop_signals_raise())
    # One GDAL environment for every command (GDAL settings live here and nowhere else).
    ctx.obj["env"] = ctx.with_resource(rasterio.Env(GDAL_CACHEMAX=256, GDAL_NUM_THREADS="ALL_CPUS"))


if __name__ == "__main__":
    cli(prog_name="geoseg")
