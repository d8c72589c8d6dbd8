"""On-disk corpus caches shared by the LM and MT data layers.

A cache directory holds data files, `tokenizer.json` and `manifest.json`; the manifest records the
settings the corpus was built with and the sha256 of every file. A directory is built in a temporary
directory beside its final place and renamed into place, so a reader never sees a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"


class CorpusCacheError(Exception):
    """A cached corpus directory is missing, damaged or from another format version."""


CacheError = Callable[[Path, str], CorpusCacheError]  # (cache dir, problem) -> error to raise


# ---------------------------------------------------------------------------------------------------
# Files and atomic directories


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(directory: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: sha256} of the files `names` in `directory`, the `sha256` entry of a manifest."""
    return {name: sha256_file(directory / name) for name in names}


def replace_dir(tmp_dir: Path, out_dir: Path) -> None:
    """Move a finished tmp_dir to out_dir; an older out_dir is moved aside first, then deleted."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / out_dir.name)
    os.replace(tmp_dir, out_dir)
    if old is not None:
        shutil.rmtree(old)


@contextmanager
def atomic_dir(out_dir: Path) -> Iterator[Path]:
    """A fresh temporary directory beside out_dir that replaces out_dir when the block succeeds.

    If the block (or the replacement) fails, the temporary directory is deleted and out_dir is
    left as it was.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    tmp_dir.chmod(0o755)  # mkdtemp makes it private; caches are meant to be shared
    try:
        yield tmp_dir
        replace_dir(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------
# Manifests


def write_manifest(directory: Path, manifest: dict) -> None:
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read_manifest(out_dir: Path, format_version: int, error: CacheError, task: str | None = None) -> dict:
    """The manifest of out_dir, checked to be of `format_version` (and of `task`, when given)."""
    path = out_dir / MANIFEST_FILE
    if not path.is_file():
        raise error(out_dir, f"missing manifest {MANIFEST_FILE}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error(out_dir, f"damaged manifest {MANIFEST_FILE} ({err})") from err
    if task is not None and (not isinstance(manifest, dict) or manifest.get("task") != task):
        raise error(out_dir, f"manifest is not a {task} corpus manifest")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if version != format_version:
        raise error(out_dir, f"manifest format version {version!r}, this code reads {format_version}")
    return manifest


def verify_files(out_dir: Path, checksums: Mapping[str, str], error: CacheError) -> None:
    """Check that every file named in a manifest's `sha256` entry is present and intact."""
    for name, expected in checksums.items():
        path = out_dir / name
        if not path.is_file():
            raise error(out_dir, f"missing file {name}")
        if sha256_file(path) != expected:
            raise error(out_dir, f"damaged file {name} (sha256 mismatch)")


def settings_mismatch(manifest: dict, wanted: dict) -> str | None:
    """Why a cached corpus built with `manifest` does not match the `wanted` settings, or None.

    `wanted` may hold tokenizer, vocab_size, seed and source (the provenance source).
    """
    cached = {
        "tokenizer": manifest.get("tokenizer", {}).get("kind"),
        "vocab_size": manifest.get("tokenizer", {}).get("vocab_size_requested"),
        "seed": manifest.get("seed"),
        "source": manifest.get("provenance", {}).get("source"),
    }
    diffs = [
        f"{key} {cached[key]!r} != wanted {value!r}" for key, value in wanted.items() if cached[key] != value
    ]
    return "cached settings differ: " + ", ".join(diffs) if diffs else None


class _HasManifest(Protocol):
    manifest: dict


C = TypeVar("C", bound=_HasManifest)


def cached_corpus(out_dir: Path, load: Callable[[Path], C], wanted: dict) -> tuple[C | None, str]:
    """The reusable corpus at out_dir (read with `load`), or None and the reason it cannot be reused."""
    if not out_dir.exists():
        return None, "no cached corpus yet"
    try:
        corpus = load(out_dir)
    except CorpusCacheError as err:
        return None, str(err)
    reason = settings_mismatch(corpus.manifest, wanted)
    return (None, reason) if reason else (corpus, "")


# ---------------------------------------------------------------------------------------------------
# Cache names of `datasets` sources


def sanitise(part: str) -> str:
    """`part` reduced to letters, digits, '.' and '-', fit for a directory name."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", part).strip("-")


def plain_data_files(data_files: Mapping | None) -> dict | None:
    """Plain dict of str or list[str] (Hydra hands over DictConfig/ListConfig)."""
    if not data_files:
        return None
    return {str(k): v if isinstance(v, str) else [str(x) for x in v] for k, v in dict(data_files).items()}


def hub_corpus_name(path: str, name: str | None, data_files: dict | None, tag: str) -> str:
    """`hub_{path}_{name}_{tag}`, plus a hash of `data_files` when given (see plain_data_files)."""
    corpus_name = f"hub_{sanitise(path)}_{sanitise(name or 'default')}_{tag}"
    if data_files:
        files_id = json.dumps(data_files, sort_keys=True).encode()
        corpus_name += "_" + hashlib.sha256(files_id).hexdigest()[:8]
    return corpus_name
