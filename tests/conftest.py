import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# Offline corpora are built once per machine into data/ (as `make data-lm` does) and reused.
os.environ.setdefault("LAYERDROP_DATA_DIR", str(REPO / "data"))
os.environ.setdefault("WANDB_SILENT", "true")
# No test writes the repo's record store (records/): module-scoped fixtures, set up before any per-test
# fixture, get a store of the session's; each test gets its own (_record_store below).
os.environ["LAYERDROP_RECORDS_DIR"] = tempfile.mkdtemp(prefix="layerdrop-test-records-")
# One intra-op thread for the tiny test models (their subprocesses inherit it): on 2 cores, 2 torch threads
# spin-wait whenever another process is busy (a d=32 forward measured 800 ms instead of 5 ms).
if not os.environ.get("OMP_NUM_THREADS", "").isdigit():
    os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture
def smoke_overrides(tmp_path) -> list[str]:
    """A tiny model on the real offline corpus, writing only under tmp_path."""
    return ["debug=smoke", f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs",
            f"hydra.run.dir={tmp_path}/hydra"]


@pytest.fixture(autouse=True)
def _record_store(tmp_path, monkeypatch) -> Path:
    """Every test's record store (paths.records_dir) lies in its own tmp_path, never in the repo's records/
    (subprocesses inherit it)."""
    store = tmp_path / "records"
    monkeypatch.setenv("LAYERDROP_RECORDS_DIR", str(store))
    return store
