"""The deep-model stability probe (make tune-mt-stability): which runs train, by the stated rule, and what
each learning rate shows about C8's precondition."""

import csv
import math

import pytest

from layerdrop.report.__main__ import main as report_main
from layerdrop.report.stability import outcome
from layerdrop.utils.runs import write_json


def stability_record(key, lr, p, curve, final_loss=4.0, vocab=8000, seed=1):
    """A 12/6 post-norm translation run tagged stability_mt; ``curve`` is its valid perplexities, every 150 steps."""
    points = [{"step": 150 * (i + 1), "tokens_seen": 150 * (i + 1) * 100, "val/ppl": v} for i, v in enumerate(curve)]
    return {"run_key": key, "task": "mt", "scale": "cpu", "artefacts": ["stability_mt"], "roles": {},
            "code_version": "c0de", "eval": [],
            "config": {"model": {"encoder_layers": 12, "decoder_layers": 6, "pre_norm": False, "dropout": 0.1,
                                 "vocab_size": vocab},
                       "layerdrop": {"p": p}, "seed": seed,
                       "optim": {"optimizer": {"lr": lr}, "scheduler": {"warmup_steps": 100, "total_steps": 12000}}},
            "train": {"steps": 150 * len(curve), "tokens_seen": 150 * len(curve) * 100, "wall_s": 60.0,
                      "curve": points, "final": {"train/loss": final_loss}},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": "debian:test"}, "vocab_size": vocab}}


@pytest.mark.parametrize("curve, loss, expected", [
    ([900.0, 400.0, 200.0], 4.0, "trains"),
    ([1150.0, 1150.0, 2330.0], 7.3, "fails: got worse"),  # the post-norm summarisation LayerDrop run at 3e-3
    ([900.0, 200.0, 390.0], 4.0, "trains"),         # worse, but not 2x its best: a noisy run, not a blow-up
    ([1060.0, 1010.0, 990.0], 7.0, "fails: stalled"),  # stuck near the unigram level: never blew up, never learnt
    ([9000.0], 4.0, "fails: uniform"),              # no better than a uniform guess over 8,000 tokens
    ([400.0, 150.0], math.nan, "fails: not finite"),  # the loss went NaN
    ([400.0, math.inf], 4.0, "fails: not finite"),
])
def test_outcome_follows_the_stated_rule(curve, loss, expected):
    assert outcome(curve, loss, 8000) == expected


def test_outcome_without_a_curve_is_an_error():
    with pytest.raises(ValueError, match="val_check_interval"):
        outcome([], 4.0, 8000)


def write_page(tmp_path, runs):
    """The stability page of ``runs`` (and its folder), as `python -m layerdrop.report stability_mt` writes it."""
    for r in runs:
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    out = tmp_path / "out"
    report_main(["stability_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    return (out / "stability_mt.md").read_text(), out


def test_page_says_at_each_rate_which_of_the_pair_trains(tmp_path):
    runs = [stability_record("b3", 3e-3, 0.0, [2000.0, 1900.0], final_loss=math.nan),
            stability_record("l3", 3e-3, 0.2, [600.0, 250.0]),
            stability_record("b1", 1e-3, 0.0, [500.0, 240.0]),
            stability_record("l1", 1e-3, 0.2, [550.0, 260.0]),
            stability_record("b5", 5e-4, 0.0, [700.0, 300.0])]   # no LayerDrop run at this rate yet
    page, out = write_page(tmp_path, runs)
    assert ("peak lr 0.003, 300 steps: baseline fails: not finite, LayerDrop trains (1 and 1 seed): the paper's "
            "pattern") in page
    assert "peak lr 0.001, 300 steps: baseline trains, LayerDrop trains (1 and 1 seed): both train" in page
    assert "0.0005," not in page  # a rate with only one of the pair says nothing
    assert "| 12/6 | post | 0.003 | 100 | 0.0 | 0.1 | 1 | 300 / 12,000 | 150:2000.0 300:1900.0 | nan | **fails: not finite** |" in page
    assert (out / "curves.png").stat().st_size > 0
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert {r["run_key"]: r["outcome"] for r in rows} == {"b3": "fails: not finite", "l3": "trains", "b1": "trains",
                                                         "l1": "trains", "b5": "trains"}


def test_seeds_that_disagree_make_a_rate_inconclusive_and_budgets_are_not_mixed(tmp_path):
    runs = [stability_record("b1", 2e-3, 0.0, [800.0, 300.0], seed=1),
            stability_record("b2", 2e-3, 0.0, [800.0, 290.0], seed=2),
            stability_record("l1", 2e-3, 0.2, [1100.0, 900.0], seed=1),
            stability_record("l2", 2e-3, 0.2, [1000.0, 400.0], seed=2),
            stability_record("long", 2e-3, 0.2, [1100.0, 900.0, 500.0, 300.0])]   # a longer run: its own budget
    page, _ = write_page(tmp_path, runs)
    assert ("peak lr 0.002, 300 steps: baseline trains/trains, LayerDrop fails: stalled/trains (2 and 2 seeds): the "
            "seeds disagree: inconclusive") in page
    assert "600 steps:" not in page   # the 600-step run has no baseline at its budget
    assert "| 600 / 12,000 | 150:1100.0 300:900.0 450:500.0 600:300.0 | 4.00 | **trains** |" in page


def _seeded(lr, p, curve, seeds):
    return [stability_record(f"r{lr}-{p}-{seed}", lr, p, curve, seed=seed) for seed in seeds]


TRAINS, STALLS = [900.0, 300.0], [1100.0, 900.0]


@pytest.mark.parametrize("runs, expected", [
    # the paper's pattern at 2e-3, three agreeing seeds of each row
    (_seeded(2e-3, 0.0, STALLS, (1, 2, 3)) + _seeded(2e-3, 0.2, TRAINS, (1, 2, 3)), "held"),
    # the same with one seed: a probe, not a verdict
    (_seeded(2e-3, 0.0, STALLS, (1,)) + _seeded(2e-3, 0.2, TRAINS, (1,)), "inconclusive"),
    # wherever LayerDrop trains the baseline trains too; where the baseline trains LayerDrop stalls
    (_seeded(1e-3, 0.0, TRAINS, (1, 2, 3)) + _seeded(1e-3, 0.2, TRAINS, (1, 2, 3))
     + _seeded(2e-3, 0.0, TRAINS, (1, 2, 3)) + _seeded(2e-3, 0.2, STALLS, (1, 2, 3)), "not held"),
    # ... unless another rate is still short of seeds, where the pattern might yet show
    (_seeded(1e-3, 0.0, TRAINS, (1, 2, 3)) + _seeded(1e-3, 0.2, TRAINS, (1, 2, 3))
     + _seeded(2e-3, 0.0, STALLS, (1,)) + _seeded(2e-3, 0.2, TRAINS, (1,)), "inconclusive"),
    # seeds that disagree decide nothing
    (_seeded(2e-3, 0.0, STALLS, (1, 2)) + _seeded(2e-3, 0.0, TRAINS, (3,)) + _seeded(2e-3, 0.2, TRAINS, (1, 2, 3)),
     "inconclusive"),
])
def test_c8_from_the_probe_follows_the_seed_rule(runs, expected):
    from layerdrop.report.stability import claims
    (result,) = claims(runs)
    assert (result.claim, result.artefact, result.outcome) == ("C8", "stability_mt", expected)


def test_the_claims_page_carries_the_probes_c8_line(tmp_path):
    from layerdrop.report.claims import main as claims_main
    for r in _seeded(2e-3, 0.0, STALLS, (1,)) + _seeded(2e-3, 0.2, TRAINS, (1,)):
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    claims_main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results")])
    page = (tmp_path / "results" / "claims.md").read_text()
    assert ("stability_mt: the 12/6 post-norm baseline fails to train at a learning rate where the LayerDrop model "
            "trains (probe: first steps of the schedule) | **inconclusive** | lr 0.002 (300 steps): baseline fails, "
            "LayerDrop trains, 1 seed; a rate needs 3 agreeing seeds of each row.") in page
