"""The work folder beside an output: one part per region and kind, a record per finished region, a manifest.

Parts are written atomically, and a region's record (its class counts and tiles) only after all its parts,
so a record means "this region is done". ``--resume`` computes the regions without a record, after checking
that the manifest (input identity, model digest, every option that changes results, the regions) matches
the new run; without ``--resume`` the folder is removed whatever happens, and after success in any case.

One process at a time writes an output: :meth:`WorkFolder.lock` holds an exclusive advisory lock on the hidden
``.NAME.geoseg-lock`` beside the folder (``fcntl.flock``, taken by the process that creates and removes the
folder, never by Dask workers) from before the folder is created or reused until the outputs are in place and
the folder is gone; a second run, ``predict`` or ``serve``, is refused in one line instead of deleting the
first one's parts. The kernel drops the lock of a process that dies, SIGKILL included, so a later run or
``--resume`` is never blocked by a dead one. Windows has no ``fcntl``: there nothing keeps two runs apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.atomic import atomic_output
from geoseg.errors import ConfigurationError, OutputError
from geoseg.inference.grid import Region
from geoseg.inference.tasks import RegionResult

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, outputs are not locked there
    fcntl = None

MANIFEST = "manifest.json"
_REMOVE_TRIES = 20


class WorkFolder:
    """``.<output name>.geoseg-work`` in the output's folder (same file system, so parts can be renamed)."""

    def __init__(self, output: Path):
        self.output = Path(output)
        self.path = self.output.with_name(f".{self.output.name}.geoseg-work")
        self.lock_path = self.output.with_name(f".{self.output.name}.geoseg-lock")
        self._lock: int | None = None  # the lock file's descriptor while held (None also where unlocked)
        self._holds = 0

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the output's lock while inside (re-entrant for this object); fails at once with an
        :class:`~geoseg.errors.OutputError` naming the output when another process holds it. The lock file
        is removed on leaving."""
        if self._holds == 0:
            self._lock = _acquire(self.lock_path, self.output)
        self._holds += 1
        try:
            yield
        finally:
            self._holds -= 1
            if self._holds == 0:
                _release(self.lock_path, self._lock)
                self._lock = None

    def part(self, region: Region, kind: str) -> Path:
        return self.path / f"region-{region.index:05d}.{kind}.tif"

    def _record(self, region: Region) -> Path:
        return self.path / f"region-{region.index:05d}.json"

    @contextlib.contextmanager
    def session(
        self, manifest: dict[str, Any], regions: list[Region], resume: bool, keep_when_done: bool = False
    ) -> Iterator[tuple[list[Region], dict[int, RegionResult]]]:
        """Open the folder; yield the regions (an earlier run's when resuming) and those already done.

        Removes the folder on leaving, except when ``resume`` is set and the run did not finish, or when
        ``keep_when_done`` (the caller removes it once the outputs are in place: until then a resumed run
        still needs the regions). Holds :meth:`lock` while open (a caller that removes the folder later
        holds it longer).
        """
        with self.lock():
            if resume and (self.path / MANIFEST).is_file():
                regions = self._check(manifest)
            else:
                self.remove()  # a folder left by a killed run without --resume
                try:
                    self.path.mkdir()
                except OSError as error:
                    raise OutputError(
                        f"{self.path}: cannot create the work folder ({error.strerror})"
                    ) from error
                self._write_json(
                    self.path / MANIFEST, {**manifest, "regions": [_region_list(r) for r in regions]}
                )
            finished = self._finished(regions, list(manifest["outputs"])) if resume else {}
            completed = False
            try:
                yield regions, finished
                completed = True
            finally:
                if (completed and not keep_when_done) or not resume:
                    self.remove()

    def remove(self) -> None:
        """Remove the folder, again while a region still running on a Dask worker (cancelled, not yet
        stopped) creates a file in it between listing and removal; it never creates the folder itself."""
        for _ in range(_REMOVE_TRIES):
            shutil.rmtree(self.path, ignore_errors=True)
            if not self.path.exists():
                return
            time.sleep(0.1)

    def record(self, result: RegionResult) -> None:
        """Mark a region done (after its parts are in place): its class counts and tiles computed."""
        self._write_json(
            self._record(result.region), {"counts": result.counts.tolist(), "tiles": int(result.tiles)}
        )

    def _check(self, manifest: dict[str, Any]) -> list[Region]:
        try:
            saved = json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))
            regions = [Region(i, *r) for i, r in enumerate(saved.pop("regions"))]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ConfigurationError(
                f"{self.path}: the work folder's manifest is unreadable ({error}); delete the folder or drop "
                "resume=True"
            ) from error
        changed = _differences(saved, manifest)
        if changed:
            raise ConfigurationError(
                f"{self.output}: cannot resume, {'; '.join(changed)} since the interrupted run; delete "
                f"{self.path} or drop resume=True to start over"
            )
        return regions

    def _finished(self, regions: list[Region], kinds: list[str]) -> dict[int, RegionResult]:
        done = {}
        for region in regions:
            record = self._record(region)
            if not record.is_file() or not all(self.part(region, kind).is_file() for kind in kinds):
                continue
            try:
                saved = json.loads(record.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # computed again
            done[region.index] = RegionResult(region, np.asarray(saved["counts"], dtype=np.int64), 0)
        return done

    @staticmethod
    def _write_json(path: Path, value: dict[str, Any]) -> None:
        with atomic_output(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps(value, sort_keys=True), encoding="utf-8")


def _acquire(path: Path, output: Path) -> int | None:
    """Lock ``path`` (created if missing) and write this process's id into it; its descriptor, or None
    where locking is not possible (no ``fcntl``, a file system without locks: unprotected, as ever)."""
    if fcntl is None:
        return None
    while True:
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise OutputError(f"{output}: cannot create the lock file {path} ({error.strerror})") from error
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
            os.close(descriptor)
            process = f"another process (PID {holder})" if holder.isdigit() else "another process"
            raise OutputError(
                f"{output}: {process} is writing it; wait for it to finish or choose another output name"
            ) from None
        except OSError:  # a file system without locks (some network mounts)
            os.close(descriptor)
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        opened = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode("ascii"), 0)
            return descriptor
        os.close(descriptor)  # its holder removed that file as we opened it: lock the one now on disk


def _release(path: Path, descriptor: int | None) -> None:
    """Remove the lock file while still holding it (a process waiting on the old file then finds it gone
    and locks a new one), then unlock: explicitly, as a copy of the descriptor may live on in a child."""
    if descriptor is None:
        return
    with contextlib.suppress(OSError):
        path.unlink()
    fcntl.flock(descriptor, fcntl.LOCK_UN)
    os.close(descriptor)


def input_identity(path: str) -> dict[str, Any]:
    """What tells one input file from another: its path and, for a local file, size and modification time."""
    identity: dict[str, Any] = {"path": path}
    with contextlib.suppress(OSError):
        stat = os.stat(path)
        identity.update(size=stat.st_size, modified_ns=stat.st_mtime_ns)
    return identity


def _region_list(region: Region) -> list[int]:
    return [region.y0, region.y1, region.x0, region.x1]


def _differences(saved: dict[str, Any], wanted: dict[str, Any], prefix: str = "") -> list[str]:
    """'the tile changed from 256 to 512'-style phrases for every key whose value differs."""
    changed = []
    for key in sorted(set(saved) | set(wanted)):
        old, new = saved.get(key), wanted.get(key)
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            changed += _differences(old, new, f"{name} ")
        elif old != _plain(new):
            changed.append(f"the {name} changed from {_show(old)} to {_show(new)}")
    return changed


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:16] + "..." + text[-8:]
