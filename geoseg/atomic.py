"""Atomic outputs: write under temporary names, rename into place only when complete.

One file (:func:`atomic_output`) or all the files of one result (:class:`OutputSet`: a scene's class raster,
confidence, polygons, quick-look and side-cars) appear under their names together, complete, or not at all.
A crash, Ctrl-C, SIGTERM or SIGHUP (which the CLI turns into an exception, see ``geoseg.cli.main``)
therefore never leaves a truncated file or half a set that looks finished, and never leaves the temporary
files behind either; those signals wait for the few renames of a commit, which is never cut in half.
SIGKILL cannot be caught: it can leave temporary files, whose names are hidden, random and marked ``.tmp``
(``.NAME.<hex>.tmp.*``, never a final name, so a rerun or a resume does not take them for finished outputs;
they are safe to delete), as can a scene's lock file (``.NAME.geoseg-lock``, see
:mod:`geoseg.inference.work`; unlocked once its process is gone, removed by the next run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from geoseg.errors import OutputError

# Ctrl-C and the stop signals the CLI turns into exceptions (Windows has no SIGHUP)
_HELD_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def check_output_path(
    path: str | os.PathLike,
    overwrite: bool,
    inputs: Iterable[str | os.PathLike] = (),
    *,
    writable_folders: set[Path] | None = None,
) -> Path:
    """Fail early (before any work) when ``path`` exists without ``overwrite``, is one of the command's
    ``inputs`` (which ``--overwrite`` would destroy), or no file can be created in its folder.

    ``writable_folders``: folders already found writable by this batch of checks, probed once each (a
    thousand scenes into one folder cost one probe, not six thousand); found ones are added."""
    path = Path(path)
    for source in inputs:
        if _same_file(path, Path(source)):
            raise OutputError(
                f"{path}: is also an input of this command; write the output under another name"
            )
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists; pass overwrite=True to replace it")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if writable_folders is not None and parent in writable_folders:
        return path
    problem = folder_problem(parent)
    if problem is not None:
        raise OutputError(f"{path}: folder {parent} {problem}")
    if writable_folders is not None:
        writable_folders.add(parent)
    return path


def folder_problem(folder: Path) -> str | None:
    """What stops a file being created in ``folder``, worded to follow its name: "does not exist", "is a
    file, not a folder" or "is not writable (why)"; None when nothing does. Every output check words it so."""
    if not folder.is_dir():
        return "is a file, not a folder" if folder.exists() else "does not exist"
    reason = cannot_create_in(folder)
    if reason is None:
        return None
    return f"is not writable ({reason})" if folder.is_dir() else "does not exist"  # removed meanwhile


def cannot_create_in(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, or None when one can. Creating (and removing) a hidden
    temporary file is the only test that holds for root too: ``os.access`` tells root yes for any folder,
    also where nothing can be created (``/proc``, some read-only mounts)."""
    probe = temporary_sibling(folder / "geoseg-probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as error:
        if error.errno == errno.ENOENT and folder.is_dir():  # /proc: there, yet it takes no new names
            return "its file system takes no new files"
        return error.strerror or type(error).__name__
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def temporary_sibling(path: Path, token: str | None = None) -> Path:
    """A hidden name in the same folder (so the final rename stays on one file system), marked ``.tmp``; it
    keeps the suffix because GDAL chooses a format's layout by it (a Shapefile's side-cars). ``token`` (the
    random part) is shared by the files of one :class:`OutputSet`."""
    return path.with_name(f".{path.name}.{token or uuid.uuid4().hex[:8]}.tmp{path.suffix}")


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


class OutputSet:
    """Files that make one result, written under hidden temporary names and renamed into place together.

    :meth:`stage` hands out a file's temporary name; later writers may read it (a quick-look drawn from the
    temporary class raster). As a context manager the set commits when the block ends normally; an error,
    Ctrl-C or a stop signal instead removes every temporary file, and whatever a writer left beside one
    under its hidden prefix, so nothing of the set is left. A commit first checks every file, then holds
    SIGINT/SIGTERM/SIGHUP for its renames (milliseconds) and delivers them after: the set is in place in
    full, or (a rename failing) not at all.
    """

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:8]
        self._files: dict[str, tuple[Path, Path]] = {}  # kind -> (final, temporary)
        self._obsolete: set[Path] = set()
        self._after: list[Callable[[], None]] = []
        self._held = contextlib.ExitStack()

    def stage(
        self,
        kind: str,
        final: str | os.PathLike,
        temporary: Path | None = None,
        obsolete: Iterable[Path] = (),
    ) -> Path:
        """Add the file ``final`` as ``kind`` and return its temporary name; ``temporary`` names one that a
        writer puts beside another staged file by itself (GDAL's ``.aux.xml``, a Shapefile's ``.dbf``).
        ``obsolete`` files belong to an earlier ``final`` (a Shapefile's old index): removed on commit unless
        the set brings them anew. ``NAME.aux.xml`` always is (GDAL would read its statistics as the new
        file's)."""
        final = Path(final)
        tmp = temporary_sibling(final, self.token) if temporary is None else Path(temporary)
        self._files[kind] = (final, tmp)
        self._obsolete.update([final.with_name(final.name + ".aux.xml"), *map(Path, obsolete)])
        return tmp

    def temporary(self, kind: str) -> Path:
        return self._files[kind][1]

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once the set is in place (clean-up that must wait for it, as a resume folder)."""
        self._after.append(action)

    def hold(self, context: contextlib.AbstractContextManager) -> None:
        """Enter ``context`` now and leave it once the set is in place (after the :meth:`after_commit`
        actions) or discarded: the lock that keeps another process off the set's outputs until then."""
        self._held.enter_context(context)

    def files(self) -> dict[str, str]:
        """Every file of the set by kind, under its final name (in place once committed)."""
        return {kind: str(final) for kind, (final, _) in self._files.items()}

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        with self._held:
            if kind is not None:
                self.discard()
                return False
            try:
                self.commit()
            except BaseException:
                self.discard()
                raise
            return False

    def commit(self) -> None:
        """Remove the obsolete files (see :meth:`stage`), then rename every file into place."""
        finals = {final for final, _ in self._files.values()}
        for final, tmp in self._files.values():
            if not tmp.exists():
                raise OutputError(f"{final}: nothing was written")
            if final.is_dir():
                raise OutputError(f"{final}: is a directory, expected a file name")
        placed: list[Path] = []
        with _signals_held():
            for stale in self._obsolete - finals:
                with contextlib.suppress(OSError):  # best effort: absent as a rule
                    stale.unlink()
            for final, tmp in self._files.values():
                try:
                    if tmp.is_file():
                        _give_default_permissions(tmp)
                    os.replace(tmp, final)
                except OSError as error:
                    for done in placed:  # half a set must not pass for a result
                        with contextlib.suppress(OSError):
                            done.unlink()
                    others = "; the outputs written with it were removed too" if placed else ""
                    raise OutputError(
                        f"{final}: cannot rename it into place ({error.strerror or error}){others}"
                    ) from error
                placed.append(final)
        for action in self._after:
            action()

    def discard(self) -> None:
        """Remove the temporary files and anything else under their hidden prefixes; final names are never
        touched (they hold an earlier result, or nothing)."""
        prefixes: dict[Path, set[str]] = {}
        for final, tmp in self._files.values():
            remove_quietly(tmp)
            prefixes.setdefault(tmp.parent, set()).add(temporary_sibling(final, self.token).stem)
        for folder, starts in prefixes.items():
            with contextlib.suppress(OSError):
                for name in os.listdir(folder):
                    if name.startswith(tuple(starts)):
                        remove_quietly(folder / name)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and the stop signals while inside, then deliver the first one that came to the handler
    it would have reached. Only the main thread receives signals (and only it may set handlers); a commit in
    another thread cannot be interrupted by one anyway."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {}
    for signum in _HELD_SIGNALS:
        if signal.getsignal(signum) not in (signal.SIG_IGN, None):  # None: a handler set outside Python
            previous[signum] = signal.signal(signum, lambda number, _frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if held:
            signal.raise_signal(held[0])


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``, on any failure remove it
    (an :class:`OutputSet` of one file).

    ``BaseException`` is caught on purpose so that Ctrl-C (KeyboardInterrupt) and the CLI's stop signals
    (``Terminated``) also clean up.
    """
    final = check_output_path(path, overwrite)
    with OutputSet() as unit:
        yield unit.stage("output", final)
