"""The record store (``records/``, committed with the results): a copy of every run's records
(``metrics.json``, ``context.json``) in the run cache's layout, and the atomic JSON reads and writes
both use. ``layerdrop.utils.runs`` re-exports these for its callers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from layerdrop.utils.atomic import atomic_path


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------------
# The record store: the committed copy of every run's records

#: the files of a run folder that the store keeps (the weights and checkpoints stay in the run cache)
RECORD_FILES = ("metrics.json", "context.json", "layer_use.json")


def record_store(cfg: DictConfig) -> Path | None:
    """``paths.records_dir``: where every run's records are copied (``records/``, committed with the
    results), or None when it is null."""
    store = cfg.paths.get("records_dir")
    return Path(store) if store else None


def default_store() -> Path:
    """``paths.records_dir`` as the default config resolves it, for commands that take no Hydra config."""
    return Path(os.environ.get("LAYERDROP_RECORDS_DIR") or Path(os.environ.get("LAYERDROP_ROOT", ".")) / "records")


def stored(folder: Path, store: Path, name: str = "metrics.json") -> Path:
    """The store's copy of ``folder/name``, for a run folder ``<runs_dir>/<task>/<key>``: the store keeps
    the run cache's layout, ``<store>/<task>/<key>/<name>``, so everything that reads records reads either."""
    return store / folder.parent.name / folder.name / name


def read_record(folder: Path, store: Path | None, name: str = "metrics.json") -> dict | None:
    """A run's record: the run folder's own, else the store's copy (a fresh clone has the store only)."""
    return read_json(folder / name) or (read_json(stored(folder, store, name)) if store is not None else None)


def write_record(folder: Path, store: Path | None, record: dict, name: str = "metrics.json") -> None:
    """Write a run's record into its folder and its copy into the store (both atomically)."""
    write_json(folder / name, record)
    if store is not None:
        write_json(stored(folder, store, name), record)


def stored_records(store: Path, task: str) -> list[dict]:
    """The finished records (those with a ``train`` section) of ``task`` in a record store or run cache."""
    return [r for p in sorted((store / task).glob("*/metrics.json")) if (r := read_json(p)) and "train" in r]


def train_seconds(record: dict) -> float:
    """A record's training wall time, every session of it (``train.total_wall_s``), else ``train.wall_s``.
    A run resumed before sessions were kept has the last session's time only (``time_incomplete``)."""
    train = record["train"]
    return float(train.get("total_wall_s", train["wall_s"]))


def time_incomplete(record: dict) -> bool:
    """Whether ``train_seconds`` misses earlier sessions: resumed, with none recorded."""
    train = record.get("train") or {}
    return bool(train.get("resumed")) and "total_wall_s" not in train


def sync_store(runs_dir: Path, store: Path) -> list[Path]:
    """Copy into the store every record of the run cache that it lacks or holds in an older version
    (a cache made before the store existed, or by a run with ``paths.records_dir=null``). Returns the
    store files written."""
    written = []
    for name in RECORD_FILES:
        for path in sorted(runs_dir.glob(f"*/*/{name}")):
            record, target = read_json(path), stored(path.parent, store, name)
            if record is not None and read_json(target) != record:
                write_json(target, record)
                written.append(target)
    return written
