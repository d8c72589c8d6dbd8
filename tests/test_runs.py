"""The run cache: the key covers the training code, one writer per run folder, unique temporary names,
and the role a run records for its artefact."""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from layerdrop.config import load_config
from layerdrop.report.collect import write_text
from layerdrop.train import train
from layerdrop.utils import atomic, runs

# ---------------------------------------------------------------------------------------------------
# The key covers the training code


@pytest.fixture
def code_copy(tmp_path, monkeypatch):
    """A copy of the fingerprinted files that the fingerprint reads instead of the package."""
    for pattern in runs.CODE_FILES:
        for src in runs.PACKAGE_DIR.glob(pattern):
            dst = tmp_path / "pkg" / src.relative_to(runs.PACKAGE_DIR)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    monkeypatch.setattr(runs, "PACKAGE_DIR", tmp_path / "pkg")
    return tmp_path / "pkg"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_the_key_follows_code_changes_not_comments_or_docstrings(code_copy, smoke_overrides):
    cfg = load_config(smoke_overrides)
    key, version = runs.run_key(cfg), runs.run_code_version(cfg)
    assert runs.training_config(cfg)["code"] == version
    optim = code_copy / "optim.py"
    edit(optim, '"""', '"""A reworded docstring.\n\n')  # the module docstring
    edit(optim, "\nimport math", "\n# a new comment\nimport   math  # and another")
    with optim.open("a") as f:
        f.write("\n\n# trailing comment\n")
    assert (runs.run_code_version(cfg), runs.run_key(cfg)) == (version, key)

    edit(code_copy / "models" / "layerdrop.py", "torch.rand", "torch.randn")  # a real code change
    changed = runs.run_code_version(cfg)
    assert changed != version and runs.run_key(cfg) != key


@pytest.mark.parametrize("where", ["lit/base.py", "tasks/seq2seq.py", "train.py", "data/mt.py"])
def test_every_listed_file_counts(code_copy, where):
    version = runs.code_version()
    with (code_copy / where).open("a") as f:
        f.write("\nNEW_CONSTANT = 1\n")
    assert runs.code_version() != version


def test_a_task_key_covers_the_code_it_imports_not_another_tasks(code_copy, smoke_overrides):
    """The LM smoke run's key changes with the LM model, the shared layers and the loop, not with code that
    only translation uses, nor with a new module nothing imports yet (a new task being built)."""
    cfg = load_config(smoke_overrides)
    key = runs.run_key(cfg)
    used = {p.relative_to(code_copy).as_posix() for p in runs.code_files(runs.training_modules(cfg))}
    assert {"models/lm.py", "models/transformer.py", "lit/lm.py", "tasks/lm.py", "train.py", "data/lm.py"} <= used
    assert not used & {"models/seq2seq.py", "models/generate.py", "tasks/seq2seq.py", "data/mt.py"}
    for path in ("tasks/seq2seq.py", "models/generate.py", "data/text_pairs.py"):
        with (code_copy / path).open("a") as f:
            f.write("\nNEW_CONSTANT = 1\n")
    (code_copy / "models" / "encoder.py").write_text("WIDTH = 3\n")
    everything = runs.code_version()
    assert runs.run_key(cfg) == key
    (code_copy / "models" / "encoder.py").write_text("WIDTH = 4\n")
    assert runs.code_version() != everything and runs.run_key(cfg) == key  # all code vs this task's
    with (code_copy / "models" / "transformer.py").open("a") as f:
        f.write("\n\ndef _unused_helper():\n    return 1\n")
    assert runs.run_key(cfg) != key


def test_the_import_closure_follows_imports_inside_functions_and_submodules(code_copy):
    (code_copy / "models" / "a.py").write_text("def f():\n    from layerdrop.models import b\n    return b\n")
    (code_copy / "models" / "b.py").write_text("import layerdrop.models.c\n")
    (code_copy / "models" / "c.py").write_text("X = 1\n")
    (code_copy / "models" / "d.py").write_text("X = 2\n")
    found = {p.name for p in runs.import_closure(("layerdrop.models.a",))}
    assert {"a.py", "b.py", "c.py", "__init__.py"} <= found and "d.py" not in found


def test_function_docstrings_do_not_count_but_their_code_does(code_copy):
    path = code_copy / "optim.py"
    path.write_text(path.read_text() + textwrap.dedent('''
        def helper(x):
            """Some words."""
            return x + 1
    '''))
    version = runs.code_version()
    edit(path, '"""Some words."""', '"""Other words, and more of them."""')
    assert runs.code_version() == version
    edit(path, "return x + 1", "return x + 2")
    assert runs.code_version() != version


def test_a_code_file_pattern_matching_nothing_is_an_error(code_copy, monkeypatch):
    monkeypatch.setattr(runs, "CODE_FILES", (*runs.CODE_FILES, "trainer_v2.py"))
    with pytest.raises(ValueError, match="'trainer_v2.py' matches no file"):
        runs.code_version()


def test_early_stopping_is_part_of_the_key_only_when_on(smoke_overrides):
    cfg = load_config(smoke_overrides)
    assert runs.run_key(load_config([*smoke_overrides, "early_stop_patience=null"])) == runs.run_key(cfg)
    three = runs.run_key(load_config([*smoke_overrides, "early_stop_patience=3"]))
    assert three != runs.run_key(cfg) and three != runs.run_key(load_config([*smoke_overrides, "early_stop_patience=5"]))


def test_later_defaults_still_leave_the_key_unchanged(smoke_overrides):
    cfg = load_config(smoke_overrides)
    assert runs.run_key(load_config([*smoke_overrides, "layerdrop.target=layers"])) == runs.run_key(cfg)
    assert runs.run_key(load_config([*smoke_overrides, "layerdrop.target=heads"])) != runs.run_key(cfg)


# ---------------------------------------------------------------------------------------------------
# One writer per run folder

HOLD = """
import sys, time
from pathlib import Path
from layerdrop.utils import runs
with runs.locked(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_in_this_process_is_refused(tmp_path):
    with runs.locked(tmp_path / "run"):
        holder = json.loads((tmp_path / "run" / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with pytest.raises(runs.RunLockedError) as err, runs.locked(tmp_path / "run"):
            pass
    message = str(err.value)
    assert f"run folder {tmp_path / 'run'} is in use by pid {os.getpid()} on {socket.gethostname()}" in message
    assert f"delete {tmp_path / 'run' / '.lock'}" in message
    assert not (tmp_path / "run" / ".lock").exists()  # released by the first holder, untouched by the second


def test_a_writer_in_another_process_is_refused(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunLockedError, match=f"in use by pid {proc.pid} on "), runs.locked(tmp_path / "run"):
            pass
    finally:
        proc.kill()
        proc.wait()
    # the holder was killed: its lock is stale and the next writer takes it over
    with runs.locked(tmp_path / "run"):
        assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_stale_lock_on_this_host_is_taken_over_with_a_warning(tmp_path, caplog):
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    pid = dead_pid()
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2020-01-01T00:00:00"}))
    with caplog.at_level("WARNING", logger="layerdrop"), runs.locked(tmp_path / "run"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"took over the stale lock {lock}: pid {pid}" in caplog.text
    assert sorted(p.name for p in lock.parent.iterdir()) == []  # nothing left behind


@pytest.mark.parametrize("holder", [{"pid": 1, "host": "elsewhere", "started": "x"}, None])
def test_a_lock_we_cannot_judge_is_refused(tmp_path, holder):
    """On another host the pid cannot be checked; an empty lock file names nobody. Both need a person."""
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps(holder) if holder else "")
    who = "pid 1 on elsewhere" if holder else "an unknown process"
    with pytest.raises(runs.RunLockedError, match=who), runs.locked(tmp_path / "run"):
        pass
    assert lock.exists()


def _stale_holder(started: float) -> dict:
    return {"pid": dead_pid(), "host": socket.gethostname(), "time": started,
            "started": datetime.fromtimestamp(started).isoformat(timespec="seconds"), "cpu": "Some CPU"}


def _checkpoint(run: Path, at: float) -> None:
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    os.utime(run / "checkpoints" / "last.ckpt", (at, at))


def test_a_session_killed_mid_training_is_counted_in_the_record_of_the_resumed_run(tmp_path):
    """A machine gone mid-run leaves its lock and a checkpoint: the next session takes the lock over and
    notes the dead session's time to that checkpoint; the resumed run's record adds it to its own."""
    run, t0 = tmp_path / "run", time.time() - 3600
    run.mkdir()
    (run / ".lock").write_text(json.dumps(_stale_holder(t0)))
    _checkpoint(run, t0 + 1200)
    with runs.locked(run):
        pass
    (earlier,) = json.loads((run / runs.SESSIONS_FILE).read_text())["sessions"]
    assert earlier["seconds"] == 1200.0 and earlier["cpu"] == "Some CPU" and earlier["ended"] == "its process was gone"
    record = {"run_key": "run", "train": {"resumed": True, "wall_s": 300.0, "steps": 10}}
    runs.write_record(run, tmp_path / "store", record)
    stored = json.loads((tmp_path / "store" / tmp_path.name / "run" / "metrics.json").read_text())
    assert stored["train"]["total_wall_s"] == 1500.0 and stored["train"]["earlier_sessions"] == [earlier]
    assert runs.train_seconds(stored) == 1500.0 and not runs.time_incomplete(stored)
    runs.write_record(run, None, record)  # written again (a later evaluation): the sum is not added twice
    assert json.loads((run / "metrics.json").read_text())["train"]["total_wall_s"] == 1500.0
    fresh = {"run_key": "run", "train": {"resumed": False, "wall_s": 300.0}}  # a training from step 0: its own time
    runs.write_record(run, None, fresh)
    assert "total_wall_s" not in fresh["train"] and runs.train_seconds(fresh) == 300.0
    lost = {"train": {"resumed": True, "wall_s": 300.0}}  # resumed before sessions were kept
    assert runs.time_incomplete(lost) and runs.train_seconds(lost) == 300.0


@pytest.mark.parametrize("case", ["no new checkpoint", "training finished"])
def test_a_dead_session_that_left_no_new_training_adds_nothing(tmp_path, case):
    run, t0 = tmp_path / "run", time.time() - 3600
    run.mkdir()
    (run / ".lock").write_text(json.dumps(_stale_holder(t0)))
    _checkpoint(run, t0 - 60 if case == "no new checkpoint" else t0 + 600)  # from an earlier session / its own
    if case == "training finished":
        (run / "model.pt").write_bytes(b"")  # its time is in the record it was writing
    with runs.locked(run):
        pass
    assert not (run / runs.SESSIONS_FILE).exists()


def test_a_failed_session_is_noted_and_a_training_from_step_zero_forgets_the_old_ones(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), runs.locked(run):
        time.sleep(0.05)
        _checkpoint(run, time.time())
        raise KeyboardInterrupt
    (earlier,) = json.loads((run / runs.SESSIONS_FILE).read_text())["sessions"]
    assert earlier["ended"] == "stopped by KeyboardInterrupt" and 0 < earlier["seconds"] < 60
    with runs.locked(run):  # resuming: the ledger stays for the record
        pass
    assert (run / runs.SESSIONS_FILE).exists()
    shutil.rmtree(run / "checkpoints")  # checkpoints gone: the next training starts at step 0
    with runs.locked(run):
        pass
    assert not (run / runs.SESSIONS_FILE).exists()


def test_the_lock_is_released_when_the_work_fails(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), runs.locked(tmp_path / "run"):
        raise RuntimeError("boom")
    assert not (tmp_path / "run" / ".lock").exists()
    with runs.locked(tmp_path / "run"):
        pass


def test_only_global_rank_zero_locks(tmp_path, monkeypatch):
    from pytorch_lightning.utilities import rank_zero_only

    with runs.locked(tmp_path / "run"):
        monkeypatch.setattr(rank_zero_only, "rank", 1)
        with runs.locked(tmp_path / "run"):  # rank 1 works in the folder rank 0 holds
            assert json.loads((tmp_path / "run" / ".lock").read_text())["pid"] == os.getpid()
        monkeypatch.setattr(rank_zero_only, "rank", 0)
    assert not (tmp_path / "run" / ".lock").exists()


def test_train_refuses_a_run_folder_in_use(smoke_overrides):
    cfg = load_config(smoke_overrides)
    with runs.locked(runs.run_dir(cfg)), pytest.raises(runs.RunLockedError, match=str(runs.run_dir(cfg))):
        train(cfg)


# ---------------------------------------------------------------------------------------------------
# Roles


def test_train_checks_the_role_before_any_work_and_releases_the_lock(smoke_overrides):
    cfg = load_config([*smoke_overrides, "artefact=table2", "role=layerdorp"])
    with pytest.raises(ValueError, match="role 'layerdorp' is not a row of table2; allowed: baseline, layerdrop"):
        train(cfg)
    assert not (runs.run_dir(cfg) / ".lock").exists() and not (runs.run_dir(cfg) / "metrics.json").exists()


def test_tag_records_artefacts_and_roles():
    record = {"run_key": "abc", "artefacts": [], "roles": {}}
    runs.tag(record, "table2", "baseline")
    runs.tag(record, "figure6", None)
    runs.tag(record, "table2", "baseline")  # the same run again: nothing changes
    assert record["artefacts"] == ["table2", "figure6"] and record["roles"] == {"table2": "baseline"}
    with pytest.raises(ValueError, match="run abc already serves table2 as 'baseline'; it cannot also be 'scratch'"):
        runs.tag(record, "table2", "scratch")
    with pytest.raises(ValueError, match="artefact 'figure6' has no roles"):
        runs.tag(record, "figure6", "baseline")
    with pytest.raises(ValueError, match="artefact None has no roles"):
        runs.tag(record, None, "baseline")
    old = {"run_key": "old", "artefacts": ["table2"]}  # a record from before roles
    runs.tag(old, "table2", "layerdrop")
    assert old["roles"] == {"table2": "layerdrop"}


@pytest.mark.parametrize("script", ["table1_mt.sh", "table2_lm.sh"])
def test_the_table_scripts_train_each_row_with_its_role(script):
    lines = (Path(__file__).resolve().parents[1] / "experiments" / script).read_text().splitlines()
    roles, artefacts = [], set()
    for words in (line.split() for line in lines if line.startswith("train ")):
        cfg = load_config([w for w in words if w.startswith(("experiment=", "role="))])
        runs.tag({"run_key": "x", "artefacts": []}, cfg.artefact, cfg.role)  # a row of the experiment's artefact
        roles.append(cfg.role)
        artefacts.add(cfg.artefact)
    (artefact,) = artefacts
    assert sorted(roles) == sorted(runs.ROLES[artefact])  # every row, each once


# ---------------------------------------------------------------------------------------------------
# Unique temporary names


def test_writers_never_share_a_temporary_name(tmp_path, monkeypatch):
    seen = []
    replace = os.replace

    def spy(src, dst):
        seen.append(Path(src))
        assert Path(src).parent == Path(dst).parent  # same folder: the rename stays atomic
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    runs.write_json(tmp_path / "metrics.json", {"a": 1})
    runs.write_json(tmp_path / "metrics.json", {"a": 2})
    write_text(tmp_path / "metrics.json", "{}")
    assert len(seen) == 3 and len(set(seen)) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    runs.write_json(tmp_path / "metrics.json", {"a": 1})
    loop = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular reference"):
        runs.write_json(tmp_path / "metrics.json", loop)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_saved_model_files_are_written_atomically_with_plain_permissions(tmp_path, monkeypatch):
    import torch

    from layerdrop.models.checkpoint import load_model, save_model
    from layerdrop.models.lm import LMConfig, TransformerLM

    model = TransformerLM(LMConfig(vocab_size=16, d_model=8, n_heads=2, d_ff=16, n_layers=1, max_len=8))
    save_model(tmp_path / "model.pt", model)
    mode = (tmp_path / "model.pt").stat().st_mode & 0o777
    assert mode == 0o666 & ~atomic._UMASK  # not mkstemp's 0600

    def failing_save(obj, path):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(tmp_path / "model.pt", model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    load_model(tmp_path / "model.pt")  # the earlier file, intact
