"""``python -m layerdrop.backlog``: every training run of an experiment script, whether the store holds it,
and what the rest costs, estimated from the stored runs most like each."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from layerdrop.backlog import (
    WEIGHTS_AGAIN,
    Run,
    backlog,
    backlog_all,
    checkpoint_step,
    estimate,
    render,
    scaled_estimate,
    script_path,
    speed_ratios,
)
from layerdrop.backlog_classify import FineTuning, estimate_fine_tunings, render_fine_tunings
from layerdrop.config import load_config
from layerdrop.evaluate import prune_grid
from layerdrop.tasks import get_task
from layerdrop.train import model_config
from layerdrop.utils import machine
from layerdrop.utils.runs import write_json

REPO = Path(__file__).resolve().parents[1]


def test_runs_are_done_partial_or_to_train_and_estimated_from_the_store(tmp_path):
    script = script_path("figure4_lm")
    paths = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.records_dir={tmp_path / 'records'}"]
    found, _ = backlog(script, "cpu", ["seed=1", *paths])
    assert len(found) == 6 and all(r.state == "to train" and r.estimate_s is None for r in found)
    assert len({r.key for r in found}) == 6 and {r.task for r in found} == {"lm"}
    layers, done, partial, learned = found[0], found[1], found[2], found[-1]
    assert "prune.strategies=[data_driven,every_other]" in learned.overrides  # the data-driven run
    assert "layerdrop.target=layers" in layers.overrides  # the left panel's layers run: the right panel's model
    # a stored record of a finished training (10 min; early-stopped at 4,000 steps) with its one evaluation (the
    # full model: its script asks no pruning), and a killed run's checkpoint
    full = {"strategy": "none", "depth": 6, "layers": list(range(6))}
    write_json(tmp_path / "records" / "lm" / done.key / "metrics.json",
               {"run_key": done.key, "config": done.config, "train": {"wall_s": 600.0, "steps": 4000}, "eval": [full]})
    # the layers run, evaluated as the left panel asks (in full) but not yet as the right panel asks of the same run
    write_json(tmp_path / "records" / "lm" / layers.key / "metrics.json",
               {"run_key": layers.key, "config": layers.config, "train": {"wall_s": 600.0, "steps": 4000}, "eval": [full]})
    (tmp_path / "runs" / "lm" / partial.key / "checkpoints").mkdir(parents=True)
    torch.save({"global_step": 1000, "state_dict": {}}, tmp_path / "runs" / "lm" / partial.key / "checkpoints" / "last.ckpt")
    # the data-driven run trained and evaluated in full and every other, not yet by its learned rates
    every_other = {"strategy": "every_other", "depth": 3, "layers": [0, 2, 4]}
    write_json(tmp_path / "records" / "lm" / learned.key / "metrics.json",
               {"run_key": learned.key, "config": learned.config, "train": {"wall_s": 600.0, "steps": 4000},
                "eval": [full, every_other]})
    found, _ = backlog(script, "cpu", ["seed=1,2", *paths])
    by_key = {r.key: r for r in found}
    assert len(found) == 12 and by_key[done.key].state == "done" and by_key[partial.key].state == "partial"
    assert by_key[learned.key].state == "to evaluate" and "data_driven" in by_key[learned.key].missing
    assert by_key[learned.key].estimate_s is None  # trained: no training left to estimate
    assert by_key[layers.key].state == "to evaluate"  # listed once, with what the second command asks of it
    assert by_key[layers.key].missing == "every_other [0, 2, 4], first [0, 1, 2], last [3, 4, 5], search_on_valid 3"
    assert sum(r.state == "to train" for r in found) == 8
    # seed 2 of the stored setting takes that run's wall time; another setting its step budget (5,000) at the
    # stored run's time a step
    def setting(r):
        return [o for o in r.overrides if not o.startswith("seed=")]

    twin = next(r for r in found if r.seed == 2 and setting(r) == setting(done))
    stored = [setting(r) for r in (done, layers, learned)]
    other = next(r for r in found if r.state == "to train" and setting(r) not in stored)
    assert twin.estimate_s == 600.0 and other.config["trainer"]["max_steps"] == 5000
    assert other.estimate_s == pytest.approx(5000 * 600.0 / 4000)
    # the partial run has the 4,000 steps its checkpoint (step 1,000) does not hold left of its 5,000
    assert by_key[partial.key].step == 1000 and by_key[partial.key].estimate_s == pytest.approx(4000 * 600.0 / 4000)
    text = render(script, "cpu", ["seed=1,2"], found, {})
    assert "3 of 12 runs trained (2 still to evaluate); 9 left" in text and f"| {partial.key} | lm | - | " in text
    assert "| partial: step 1000 checkpointed |" in text
    assert "| 1 | to evaluate: the data_driven pruning" in text
    # once its data-driven rows are in, it is done; a record lacking the full model's row is not
    write_json(tmp_path / "records" / "lm" / learned.key / "metrics.json",
               {"run_key": learned.key, "config": learned.config, "train": {"wall_s": 600.0, "steps": 4000},
                "eval": [full, every_other, {"strategy": "data_driven", "depth": 3, "layers": [0, 1, 2]}]})
    write_json(tmp_path / "records" / "lm" / done.key / "metrics.json",
               {"run_key": done.key, "config": done.config, "train": {"wall_s": 600.0, "steps": 4000}, "eval": []})
    by_key = {r.key: r for r in backlog(script, "cpu", ["seed=1", *paths])[0]}
    assert by_key[learned.key].state == "done"
    assert by_key[done.key].state == "to evaluate" and by_key[done.key].missing == "none [0, 1, 2, 3, 4, 5]"
    assert "layerdrop.target=sublayers" in text  # the setting that sets a run apart is named
    assert f"paths.runs_dir={tmp_path / 'runs'}" not in text.split("\n", 1)[1]  # shared by every run: not a setting


def test_an_unknown_script_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"no experiment script 'table9': one of .*table1_mt.*"):
        script_path("table9")


def test_the_dry_run_computes_equal_flops_steps_only_when_asked():
    snippet = 'source experiments/common.sh; type equal_steps'
    env = {**os.environ, "LAYERDROP_DRY": "1", "SCALE": "cpu"}
    plain = subprocess.run(["bash", "-c", snippet], cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout
    real = subprocess.run(["bash", "-c", snippet], cwd=REPO, env={**env, "LAYERDROP_DRY_FLOPS": "1"},
                          capture_output=True, text=True, check=True).stdout
    assert "EQUAL_FLOPS_STEPS" in plain and "layerdrop.flops equal-steps" not in plain
    assert "layerdrop.flops equal-steps" in real


def test_a_checkpoint_that_cannot_be_read_has_no_step(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert checkpoint_step(tmp_path) is None  # none
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert checkpoint_step(tmp_path) is None  # empty (killed while writing it elsewhere)


def test_estimates_count_every_session_and_skip_runs_whose_earlier_sessions_are_lost():
    config = {"model": {"n_layers": 6}, "trainer": {"max_steps": 1000}, "seed": 1}
    run = Run("k", "lm", None, None, 2, "to train", {**config, "seed": 2}, [])
    whole = {"config": config, "train": {"wall_s": 100.0, "total_wall_s": 400.0, "resumed": True, "steps": 1000}}
    lost = {"config": config, "train": {"wall_s": 50.0, "resumed": True, "steps": 1000}}  # resumed, sessions not kept
    assert estimate(run, [whole, lost]) == (400.0, 1000)
    assert estimate(run, [lost]) is None


def _record(cpu, layers, seconds, steps=1000, seed=1, **model):
    return {"config": {"model": {**layers, **model}, "trainer": {"max_steps": steps}, "seed": seed},
            "machine": {"cpu": cpu, "amx_bf16": cpu == "xeon"}, "train": {"wall_s": seconds, "steps": steps}}


def test_other_cpus_times_are_scaled_by_their_measured_speed_ratio():
    here, xeon = ("amd", False), ("xeon", True)
    seq2seq, lm = {"encoder_layers": 6, "decoder_layers": 6}, {"n_layers": 6}
    by_task = {
        # summarisation 6/6 from both CPUs: a step takes 3x as long here
        "sum": [_record("amd", seq2seq, 300.0), _record("amd", seq2seq, 330.0, seed=2), _record("xeon", seq2seq, 105.0)],
        # the language model: 6x, a ratio for decoder-only models only
        "lm": [_record("amd", lm, 600.0), _record("xeon", lm, 100.0)],
        "qa": [_record("xeon", seq2seq, 200.0)],  # stored from the Xeon alone
        "mt": [_record("epyc-old", {"encoder_layers": 6, "decoder_layers": 3}, 50.0)],  # a CPU with no run from both
    }
    ratios = speed_ratios(by_task, here, "sum", (None, 6, 6))
    assert set(ratios) == {xeon} and ratios[xeon][0] == pytest.approx(315.0 / 105.0) and ratios[xeon][1] == "sum 6/6"
    # QA has no pair of its own: the sequence-to-sequence pairs decide, not the language model's 6x
    qa = speed_ratios(by_task, here, "qa", (None, 6, 6))
    assert qa[xeon][0] == pytest.approx(3.0) and qa[xeon][1] == "sum 6/6"
    # a decoder-only task with no pair of its own takes the language model's
    assert speed_ratios(by_task, here, "mlm", (6, None, None))[xeon][0] == pytest.approx(6.0)
    run = Run("k", "qa", None, None, 2, "to train", {**by_task["qa"][0]["config"], "seed": 2}, [])
    (seconds, steps), words = scaled_estimate(run, by_task["qa"] + by_task["mt"], qa, here)
    assert seconds == pytest.approx(600.0) and steps == 1000  # the Xeon's 200 s for the same setting, 3x
    assert any("xeon's times x3.00" in w for w in words) and any("epyc-old's times unscaled" in w for w in words)


def test_a_depth_never_stored_is_estimated_from_its_stacks_at_another_depth_scaled_by_layers():
    seq2seq = {"encoder_layers": 6, "decoder_layers": 6}
    stored = _record("amd", seq2seq, 1200.0)  # 1.2 s a step for 12 layers
    deeper = Run("k", "sum", None, None, 1, "to train",
                 {"model": {"encoder_layers": 6, "decoder_layers": 8}, "trainer": {"max_steps": 500}, "seed": 1}, [])
    assert estimate(deeper, [stored]) == (pytest.approx(500 * 1.2 * 14 / 12), 500)
    lm = Run("k", "lm", None, None, 1, "to train", {"model": {"n_layers": 6}, "trainer": {"max_steps": 500}}, [])
    assert estimate(lm, [stored]) is None  # another kind of model tells nothing


def test_a_stored_run_whose_weights_a_later_step_reads_trains_again_and_fine_tunings_are_listed(tmp_path):
    """The pretraining probe trains its encoder with need_weights=true, then fine-tunes it 16 ways: a record in
    the store without the weights here is trained again, as the script will; fine-tunings are done or estimated."""
    script = script_path("tune_pretrain")
    paths = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.records_dir={tmp_path / 'records'}"]
    found, _, tuned = backlog_all(script, "cpu", ["seed=1", *paths])
    (encoder,) = found
    assert encoder.state == "to train" and encoder.missing is None
    assert len(tuned) == 16 and not any(f.done for f in tuned) and {f.parent for f in tuned} == {encoder.key}
    assert {(f.init, f.layers) for f in tuned} == {("pretrained", 8), ("scratch", 8)}
    assert len({f.dataset for f in tuned}) == 4 and all(f.estimate_s is None for f in tuned)
    # the encoder's record in the store, evaluated on its whole grid (rows naming no stack, as an encoder's do)
    cfg = load_config(encoder.overrides)
    with torch.device("meta"):
        model = get_task(cfg).build_module(model_config(cfg), seed=cfg.seed).model
    rows = [{"strategy": s, "depth": len(t), "layers": list(t)} for s, t in prune_grid(cfg, model)]
    write_json(tmp_path / "records" / "mlm" / encoder.key / "metrics.json",
               {"run_key": encoder.key, "config": encoder.config, "train": {"wall_s": 1200.0, "steps": 4000}, "eval": rows})
    # one fine-tuning stored from this CPU (5 min); the other fine-tunings on its stand-in take its time
    here = machine.cpu_model()
    first = tuned[0]
    write_json(tmp_path / "records" / "mlm_classify" / first.key / "metrics.json",
               {"run_key": first.key, "dataset": first.dataset, "kept_layers": list(range(8)), "test_acc": 0.5,
                "train": {"wall_s": 300.0}, "machine": {"cpu": here.get("cpu"), "amx_bf16": here.get("amx_bf16"), "cpus": 2}})
    found, _, tuned = backlog_all(script, "cpu", ["seed=1", *paths])
    (encoder,) = found
    assert encoder.state == "to train" and encoder.missing == WEIGHTS_AGAIN and encoder.estimate_s == 1200.0
    assert "| to train: again, for its weights" in render(script, "cpu", ["seed=1"], found, {})
    assert [f.done for f in tuned] == [True] + [False] * 15
    same = [f for f in tuned[1:] if f.dataset == first.dataset]
    assert same and all(f.estimate_s == 300.0 for f in same)
    assert all(f.estimate_s is None for f in tuned if f.dataset != first.dataset)
    text = render_fine_tunings(tuned)
    assert "1 of 16 fine-tunings done; 15 left" in text and f"| {encoder.key} | 8 | pretrained | 1 | 1 of 8 |" in text
    # with its weights here the encoder is done
    (tmp_path / "runs" / "mlm" / encoder.key).mkdir(parents=True)
    (tmp_path / "runs" / "mlm" / encoder.key / "model.pt").write_bytes(b"")
    assert backlog_all(script, "cpu", ["seed=1", *paths])[0][0].state == "done"


def test_a_fine_tuning_at_a_depth_never_stored_is_scaled_by_its_kept_layers():
    here = ("amd", False)
    stored = [{"dataset": "vitaminc", "kept_layers": list(range(8)), "train": {"wall_s": 400.0},
               "machine": {"cpu": "amd", "amx_bf16": False, "cpus": 2}},
              {"dataset": "vitaminc", "kept_layers": list(range(8)), "train": {"wall_s": 100.0},
               "machine": {"cpu": "xeon", "amx_bf16": True, "cpus": 2}}]
    half = FineTuning("k", "p", "vitaminc", 4, "pretrained", 1, False)
    other = FineTuning("k2", "p", "rotten_tomatoes", 8, "pretrained", 1, False)
    estimate_fine_tunings([half, other], stored, here)
    assert half.estimate_s == pytest.approx(200.0)  # this CPU's 400 s at 8 layers, for 4: the Xeon's not mixed in
    assert other.estimate_s is None
