"""LayerDrop under 2-process CPU DDP: same layers skipped on both ranks, same weights after training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


# ---------------------------------------------------------------------------------------------------
# The whole train() under DDP: fit, then the evaluation grid and metrics.json, on 2 CPU processes.

SMALL = ["debug=smoke", "trainer.max_steps=4", "checkpoint_every=2", "prune.depths=[2]", "prune.splits=[test]",
         "trainer.precision=32-true"]


def _run(cmd, tmp_path, timeout=600):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _paths(tmp_path, name):
    return [f"paths.runs_dir={tmp_path}/{name}", f"paths.log_dir={tmp_path}/logs", f"hydra.run.dir={tmp_path}/h-{name}"]


def _record(tmp_path, name):
    (path,) = (tmp_path / name / "lm").glob("*/metrics.json")
    return json.loads(path.read_text()), path.parent


def _scores(rows):
    """Evaluation rows without their timings (which differ between any two runs), in one order."""
    rows = sorted(rows, key=lambda r: (r["strategy"], r["depth"]))
    return [{k: v for k, v in r.items() if not k.endswith(("_per_s", "_s"))} for r in rows]


def test_ddp_equals_one_process_accumulating_the_same_batches(tmp_path):
    """Two ranks taking alternate batches of the same plan = one process accumulating 2 batches per
    update (no LayerDrop, no dropout: nothing random). The loss is normalised by the update's token
    count in both, and evaluation after the distributed fit runs once, on rank 0, over every token."""
    same = [*SMALL, "layerdrop.p=0", "model.dropout=0", "model.adaptive_dropout=0"]
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "layerdrop.train",
          *same, "trainer.devices=2", "trainer.strategy=ddp", *_paths(tmp_path, "ddp")], tmp_path)
    _run([sys.executable, "-m", "layerdrop.train", *same, "trainer.accumulate_grad_batches=2",
          *_paths(tmp_path, "one")], tmp_path)
    (ddp, ddp_dir), (one, one_dir) = _record(tmp_path, "ddp"), _record(tmp_path, "one")
    assert ddp["train"]["world_size"] == 2 and one["train"]["world_size"] == 1
    assert ddp["train"]["steps"] == one["train"]["steps"] == 4
    assert ddp["train"]["tokens_seen"] == one["train"]["tokens_seen"] == 4 * 2 * 8 * 32
    w_ddp = torch.load(ddp_dir / "model.pt", weights_only=True)["state_dict"]
    w_one = torch.load(one_dir / "model.pt", weights_only=True)["state_dict"]
    for name, w in w_ddp.items():
        torch.testing.assert_close(w, w_one[name], rtol=1e-4, atol=1e-5, msg=name)
    test_tokens = ddp["data"]["splits"]["test"]["tokens"]
    assert [r["test_tokens"] for r in ddp["eval"]] == [test_tokens] * len(ddp["eval"])  # nothing counted twice
    for a, b in zip(_scores(ddp["eval"]), _scores(one["eval"])):
        assert a.keys() == b.keys() and a["layers"] == b["layers"]
        assert a["test_ppl"] == pytest.approx(b["test_ppl"], rel=1e-3)


def test_lightning_ddp_launcher_runs_fit_and_evaluation_to_the_end(tmp_path):
    """The command a new user tries (Lightning starts the second process itself), with LayerDrop on:
    it must not hang after fit, and its evaluation rows equal a single-process evaluation of its model."""
    from hydra.utils import instantiate

    from layerdrop.config import load_config
    from layerdrop.evaluate import evaluate_grid
    from layerdrop.models.checkpoint import load_model

    _run([sys.executable, "-m", "layerdrop.train", *SMALL, "layerdrop.p=0.5", "trainer.devices=2",
          "trainer.strategy=ddp_find_unused_parameters_true", *_paths(tmp_path, "pl")], tmp_path)
    record, run_dir = _record(tmp_path, "pl")
    assert record["train"]["world_size"] == 2 and record["train"]["steps"] == 4
    cfg = load_config([*SMALL, "layerdrop.p=0.5", *_paths(tmp_path, "pl")[:2]])
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    model, _ = load_model(run_dir / "model.pt")
    mine, theirs = _scores(evaluate_grid(model, dm, cfg)), _scores(record["eval"])
    assert [r.keys() for r in mine] == [r.keys() for r in theirs]
    for a, b in zip(mine, theirs):  # equal up to float summation order (the ranks ran on 1 thread)
        assert a == {k: pytest.approx(v, rel=1e-5) if isinstance(v, float) else v for k, v in b.items()}


def test_a_multirun_sweep_is_refused_when_each_run_needs_several_processes(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "layerdrop.train", "-m", "debug=smoke", "layerdrop.p=0,0.5",
                           "trainer.devices=2", *_paths(tmp_path, "mr")[:2], f"hydra.sweep.dir={tmp_path}/sweep"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "layerdrop.launch" in proc.stderr
    assert not (tmp_path / "mr").exists()  # refused before any work


def test_launch_expands_a_sweep_into_one_torchrun_per_multi_process_run():
    from layerdrop.launch import commands

    cmds = commands(["experiment=table2_lm", "scale=paper", "layerdrop.p=0,0.2"])
    assert len(cmds) == 2 and all("--nproc_per_node=8" in c and "-m" not in c[c.index("layerdrop.train"):]
                                  for c in cmds)
    assert [c[-1] for c in cmds] == ["layerdrop.p=0", "layerdrop.p=0.2"]
    (cpu,) = commands(["experiment=table2_lm", "layerdrop.p=0,0.2"])  # single-process runs: one multirun
    assert cpu[1:] == ["-m", "layerdrop.train", "-m", "experiment=table2_lm", "layerdrop.p=0,0.2"]
