"""Atomic outputs: write under a temporary name, rename into place only when complete.

A crash, Ctrl-C, SIGTERM or SIGHUP (which the CLI turns into an exception, see ``geoseg.cli.main``) therefore
never leaves a truncated file that looks finished, and never leaves the temporary file behind either. SIGKILL
cannot be caught: it can leave a temporary file, whose name is hidden, random and marked ``.tmp`` (never the
final name, so a rerun or a resume does not take it for a finished output; it is safe to delete).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from geoseg.errors import OutputError


def check_output_path(
    path: str | os.PathLike, overwrite: bool, inputs: Iterable[str | os.PathLike] = ()
) -> Path:
    """Fail early (before any work) when ``path`` exists without ``overwrite``, is one of the command's
    ``inputs`` (which ``--overwrite`` would destroy), or its folder is unwritable."""
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(
                f"{path}: is also an input of this command; write the output under another name"
            )
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists; pass --overwrite to replace it")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        problem = "is not a folder" if parent.exists() else "does not exist"
        raise OutputError(f"{path}: folder {parent} {problem}")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: folder {parent} is not writable")
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def temporary_sibling(path: Path) -> Path:
    """A hidden name in the same folder (so the final rename stays on one file system), marked ``.tmp``; it
    keeps the suffix because GDAL chooses a format's layout by it (a Shapefile's side-cars)."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def remove_quietly(path: Path) -> None:
    """Remove a file or a folder tree (some formats write folders, GDAL writes side-car files)."""
    import shutil

    with contextlib.suppress(FileNotFoundError):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    for sidecar in path.parent.glob(path.name + ".*"):
        with contextlib.suppress(OSError):
            sidecar.unlink()


def _give_default_permissions(path: Path) -> None:
    """Writers that stage in private temporary files leave mode 0600; outputs get the usual umask mode."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on any failure remove it.

    ``BaseException`` is caught on purpose so that Ctrl-C (KeyboardInterrupt) and the CLI's stop signals
    (``Terminated``) also clean up.
    """
    final = check_output_path(path, overwrite)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputError(f"{final}: nothing was written")
        if final.is_dir():
            raise OutputError(f"{final}: is a directory, expected a file name")
        if tmp.is_file():
            _give_default_permissions(tmp)
        os.replace(tmp, final)
    except BaseException:
        remove_quietly(tmp)
        raise
