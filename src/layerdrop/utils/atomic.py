"""Atomic file writes: a reader sees the old file or the whole new one, never half of it.

No dependencies beyond the standard library, so ``models/`` can use it without pulling in Lightning.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# mkstemp creates files 0600; a plain open() would give 0666 minus the umask. Read the umask once here
# (os.umask can only be read by setting it) so results stay readable by the group as before.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file beside ``path`` for the block to write; renamed onto ``path`` when the block
    succeeds, removed when it fails. Each writer gets its own name (mkstemp), so two processes writing one
    file never write into the same temporary file. The name keeps ``path``'s suffix (savefig reads it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already after a successful replace


_HELD: dict[str, int] = {}  # lock files this process holds, and how deep (a build that fetches holds two)


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on ``path``, created if absent) while the block runs:
    two processes that build one corpus or fetch one raw file take turns, and the second finds the first's
    result instead of building it again over it (parallel test workers, a sweep's parallel launcher, two
    sessions on one data folder). Re-entrant within a process. Where the lock file cannot be created (a
    read-only data folder) the block runs unlocked: there is nothing such a process could write anyway."""
    path = Path(path)
    key = str(path.resolve())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield
        finally:
            _HELD[key] -= 1
        return
    import fcntl

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")  # noqa: SIM115  (held open for the lock's life, closed below)
    except OSError:
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        _HELD[key] = 1
        try:
            yield
        finally:
            _HELD.pop(key, None)
            fcntl.flock(handle, fcntl.LOCK_UN)
