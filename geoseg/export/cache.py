"""ONNX files geoseg builds for itself (a checkpoint's export, its int8 version), built once and kept.

A file is named by the digest of everything it depends on (the model's digest, the opset, the onnxruntime
and torch versions, the options that change the graph) and by the SHA-256 of its own bytes: a run finds it
by the first, and a file whose bytes no longer match the second (a disk error, a copy cut short) is
rebuilt. Builders write under a temporary name and rename, holding a lock per key, so concurrent runs and
the Dask workers of one machine build a file once and never read one half-written. Where the cache folder
cannot be written, the file is built in a temporary folder for this run, with one warning.

A build may also refuse, for reasons that depend only on what the key names (int8 whose classes disagree
with float32 on the calibration tiles: an :class:`~geoseg.errors.AgreementError`): the refusal is kept in
the cache like a file (``.refused``, its message, named by its hash, written atomically under the lock), so
a rerun with the same key refuses at once with the same message instead of measuring again for minutes.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from geoseg.atomic import cannot_create_in
from geoseg.errors import GeosegError, GeosegWarning

try:  # POSIX; elsewhere concurrent builders may both build, the rename still leaves one whole file
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_HASH_CHARS = 16  # of the file's SHA-256 in its name: enough to tell a damaged file


@dataclass
class CachedFile:
    """A cached file, and what getting it cost this run (``seconds`` 0 when it was there already)."""

    path: Path
    built: bool
    seconds: float


def cache_folder() -> Path:
    """``$XDG_CACHE_HOME/geoseg``, by default ``~/.cache/geoseg``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "geoseg"


def cache_key(parts: dict) -> str:
    """The digest naming a file built from ``parts`` (JSON-serialisable: digests, versions, options)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def cached_file(
    label: str,
    parts: dict,
    build: Callable[[Path], None],
    *,
    folder: Path | None = None,
    remember: type[GeosegError] | None = None,
) -> CachedFile:
    """The file for ``parts``, built by ``build(path)`` where it is missing or damaged.

    ``label`` starts the file's name (``manet-fp32``). ``build`` writes the file at the path it is given
    (a temporary name, renamed once the file is complete and hashed). A ``remember`` error raised by
    ``build`` is kept for ``parts`` and raised again, without building, by the next call.
    """
    folder = cache_folder() if folder is None else folder
    stem = f"{label}-{cache_key(parts)}"
    reason = _unwritable(folder)
    if reason is not None:
        scratch = Path(tempfile.mkdtemp(prefix="geoseg-export-"))
        atexit.register(shutil.rmtree, scratch, True)
        warnings.warn(
            f"cannot write the export cache {folder} ({reason}); building {label} in a temporary folder "
            "for this run only (set XDG_CACHE_HOME to a writable folder to keep it)",
            GeosegWarning,
            stacklevel=2,
        )
        return _build(scratch, stem, build, None)
    found = _found(folder, stem, remember)
    if found is not None:
        return found
    with _locked(folder / f"{stem}.lock"):
        found = _found(folder, stem, remember)  # another process may have built it while this one waited
        if found is not None:
            return found
        return _build(folder, stem, build, remember)


def _found(folder: Path, stem: str, remember: type[GeosegError] | None) -> CachedFile | None:
    """The cached file for ``stem``, None where there is none; a remembered refusal is raised again."""
    path = _valid(folder, stem, ".onnx")
    if path is not None:
        return CachedFile(path, False, 0.0)
    if remember is not None:
        refusal = _valid(folder, stem, ".refused")
        if refusal is not None:
            raise remember(refusal.read_text(encoding="utf-8"))
    return None


def _unwritable(folder: Path) -> str | None:
    """Why ``folder`` cannot hold the cache (None: it can; it is created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return error.strerror or type(error).__name__
    return cannot_create_in(folder)


def _valid(folder: Path, stem: str, suffix: str) -> Path | None:
    """The complete ``suffix`` file for ``stem``; damaged ones (bytes that do not match their name) are
    removed."""
    for path in sorted(folder.glob(f"{stem}.*{suffix}")):
        if path.name.endswith(f".tmp{suffix}"):
            continue
        if path.name == f"{stem}.{_file_hash(path)}{suffix}":
            return path
        what = "export" if suffix == ".onnx" else "refusal"
        warnings.warn(
            f"the cached {what} {path} is damaged (its bytes do not match its digest); building it again",
            GeosegWarning,
            stacklevel=4,
        )
        path.unlink(missing_ok=True)
    return None


def _build(
    folder: Path, stem: str, build: Callable[[Path], None], remember: type[GeosegError] | None
) -> CachedFile:
    start = time.perf_counter()
    try:
        final = _commit(folder, stem, ".onnx", build)
    except GeosegError as error:
        if remember is not None and isinstance(error, remember):
            message = str(error)
            _commit(folder, stem, ".refused", lambda path: path.write_text(message, encoding="utf-8"))
        raise
    return CachedFile(final, True, time.perf_counter() - start)


def _commit(folder: Path, stem: str, suffix: str, write: Callable[[Path], None]) -> Path:
    """``write`` a temporary file, then rename it to its name with its hash: it appears whole or not at
    all."""
    handle, name = tempfile.mkstemp(prefix=f"{stem}.", suffix=f".tmp{suffix}", dir=folder)
    os.close(handle)
    temporary = Path(name)
    try:
        write(temporary)
        final = folder / f"{stem}.{_file_hash(temporary)}{suffix}"
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
    return final


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:_HASH_CHARS]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes and threads (each opens its own descriptor)."""
    with path.open("a") as file:
        if fcntl is not None:
            fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(file, fcntl.LOCK_UN)
