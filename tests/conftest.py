import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Offline corpora are built once per machine into data/ (as `make data-lm` does) and reused.
os.environ.setdefault("LAYERDROP_DATA_DIR", str(REPO / "data"))
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def smoke_overrides(tmp_path) -> list[str]:
    """A tiny model on the real offline corpus, writing only under tmp_path."""
    return ["debug=smoke", f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs",
            f"hydra.run.dir={tmp_path}/hydra"]
