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

