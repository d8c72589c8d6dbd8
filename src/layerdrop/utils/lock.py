"""Locks between processes (``file_lock``), one writer per run folder, and the time of a training spread over several sessions.

``locked(run_dir)`` holds ``run_dir/.lock`` (pid, host, start time, CPU) while a process trains or
evaluates a run; a lock left by a dead process on this host is taken over. A session that ended before
its run finished (its machine went away, or an error stopped it) leaves a line in ``sessions.json``:
its seconds from taking the lock to its last checkpoint, which the run's record adds up
(``with_sessions``, called by ``runs.write_record``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from layerdrop.utils.machine import cpu_model
from layerdrop.utils.store import read_json, write_json

log = logging.getLogger("layerdrop")


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


# ---------------------------------------------------------------------------------------------------
# One writer per run folder

LOCK_FILE = ".lock"


class RunLockedError(RuntimeError):
    """Another process is training or evaluating this run."""


def _read_lock(lock: Path) -> dict | None:
    """The holder written in a lock file; None if it is empty or unreadable. FileNotFoundError if gone."""
    try:
        holder = json.loads(lock.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _locked_error(lock: Path, holder: dict | None) -> RunLockedError:
    who = (f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started')})" if holder
           else "an unknown process (the lock file is empty or unreadable)")
    return RunLockedError(
        f"run folder {lock.parent} is in use by {who}: two processes must not train or evaluate one run at once "
        f"(two sweeps sharing a configuration?). Wait for that process to finish; if it is gone (killed, or its "
        f"machine is down), delete {lock} and start again.")


def _take_over(lock: Path, holder: dict) -> None:
    """Remove a stale lock, unless another process took it over first (then that process holds it)."""
    aside = lock.with_name(f"{LOCK_FILE}.stale.{uuid.uuid4().hex}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return  # someone else removed it; the caller retries O_EXCL
    fresh = _read_lock(aside)
    if fresh != holder:  # a rival replaced the stale lock before we moved it: put its lock back, give way
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)  # link, not rename: never overwrite a lock created meanwhile
        aside.unlink()
        raise _locked_error(lock, fresh)
    aside.unlink()
    log.warning("took over the stale lock %s: pid %s on this host (%s), holding it since %s, is gone",
                lock, holder.get("pid"), holder.get("host"), holder.get("started"))


def _acquire(lock: Path) -> dict:
    now = datetime.now()
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": now.isoformat(timespec="seconds"),
          "time": now.timestamp(), "cpu": cpu_model().get("cpu"), "token": uuid.uuid4().hex}
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # a retry after removing a stale lock, and one more if a rival raced us to it
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = _read_lock(lock)
            except FileNotFoundError:
                continue  # released between our two calls
            pid = (holder or {}).get("pid")
            stale = isinstance(pid, int) and pid > 0 and holder["host"] == me["host"] and not _pid_alive(pid)
            if not stale:  # alive, or on another host where we cannot tell
                raise _locked_error(lock, holder) from None
            _take_over(lock, holder)
            note_session(lock.parent, holder, "its process was gone")
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise _locked_error(lock, _read_lock(lock) if lock.exists() else None)


@contextmanager
def locked(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/.lock`` (pid, host, start time) for the block: a second process, or a second call in
    this one, fails with RunLockedError instead of training into the same folder. A lock left by a dead
    process on this host is taken over with a warning. Under DDP only global rank 0 locks (the other ranks
    work in the same folder for it)."""
    from pytorch_lightning.utilities import rank_zero_only  # lazy: the reports import this module

    if rank_zero_only.rank != 0:
        yield
        return
    lock = Path(run_dir) / LOCK_FILE
    me = _acquire(lock)
    if not (lock.parent / "checkpoints" / "last.ckpt").exists():  # a training from step 0: no earlier session
        (lock.parent / SESSIONS_FILE).unlink(missing_ok=True)
    try:
        yield
    except BaseException as e:  # failed or interrupted: what it checkpointed is resumed later
        note_session(lock.parent, me, f"stopped by {type(e).__name__}")
        raise
    finally:
        try:
            holder = _read_lock(lock)
        except FileNotFoundError:
            holder = None
        if holder is not None and holder.get("token") == me["token"]:
            lock.unlink()
        else:
            log.warning("lock %s is no longer ours (holder: %s); leaving it", lock, holder)


# ---------------------------------------------------------------------------------------------------
# A training spread over several sessions

SESSIONS_FILE = "sessions.json"


def _started(holder: dict) -> float | None:
    """When a lock's holder took it, in seconds since the epoch (locks before ``time`` was kept: from
    ``started``, local time)."""
    if isinstance(holder.get("time"), (int, float)):
        return float(holder["time"])
    try:
        return datetime.fromisoformat(str(holder.get("started"))).timestamp()
    except ValueError:
        return None


def note_session(run_dir: Path, holder: dict, ended: str) -> None:
    """Add to ``run_dir/sessions.json`` the training time of a session that ended before its run finished
    (its process killed with its machine, or stopped by an error): from when it took the lock to its last
    checkpoint, the work a later session resumes from. A session that wrote no checkpoint, or that finished
    training (``model.pt``: its time is in the record already), adds nothing."""
    run_dir = Path(run_dir)
    start = _started(holder)
    try:
        saved = (run_dir / "checkpoints" / "last.ckpt").stat().st_mtime
    except FileNotFoundError:
        return
    if start is None or saved <= start or (run_dir / "model.pt").exists():
        return
    ledger = read_json(run_dir / SESSIONS_FILE) or {"sessions": []}
    ledger["sessions"].append({
        "started": holder.get("started"), "last_checkpoint": datetime.fromtimestamp(saved).isoformat(timespec="seconds"),
        "seconds": round(saved - start, 1), "cpu": holder.get("cpu"), "ended": ended})
    write_json(run_dir / SESSIONS_FILE, ledger)


def with_sessions(run_dir: Path, record: dict) -> dict:
    """``record`` with the sessions before its training's last one: ``train.earlier_sessions`` (each
    one's seconds to its last checkpoint, CPU and how it ended) and ``train.total_wall_s``, the last
    session's ``wall_s`` plus theirs. Only for a resumed training whose folder kept ``sessions.json``;
    a record that has them keeps them (the ledger goes when the checkpoints go)."""
    train = record.get("train")
    ledger = read_json(Path(run_dir) / SESSIONS_FILE)
    if not isinstance(train, dict) or not train.get("resumed") or not ledger:
        return record
    train["earlier_sessions"] = ledger["sessions"]
    train["total_wall_s"] = round(train["wall_s"] + sum(s["seconds"] for s in ledger["sessions"]), 1)
    return record
