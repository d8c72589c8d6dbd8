"""LayerDrop under 2-process CPU DDP: same layers skipped on both ranks, same weights after training."""

import os
import subprocess
import sys
from pathlib import Path

import torch


def test_ddp_ranks_skip_the_same_layers_and_stay_in_sync(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(tmp_path), "8"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert len(r0["masks"]) == 8 and r0["masks"] == r1["masks"]
    assert any(not all(m) for m in r0["masks"])  # layers really were skipped
    assert len({tuple(m) for m in r0["masks"]}) > 1  # and not the same ones every step
    for name, w in r0["state"].items():
        assert torch.equal(w, r1["state"][name]), name
