"""Tables 4 and 7, Figures 3 and 8 from fine-tuning records joined with their pretraining runs: the best
valid point of each learning-rate sweep is reported, stand-ins are named as such, claims follow the noise
rule, and a fine-tuning whose pretraining run is missing is an error."""

import csv

import pytest

from layerdrop.report.__main__ import main as report_main
from layerdrop.utils.runs import write_json

SPLITS = {"train": {"examples": 100}, "valid": {"examples": 20}, "test": {"examples": 20}}


def parent(tmp_path, key, n_layers, p, seed):
    write_json(tmp_path / "runs" / "mlm" / key / "metrics.json",
               {"run_key": key, "config": {"model": {"n_layers": n_layers}, "layerdrop": {"p": p}, "seed": seed}})


def child(tmp_path, key, source, kept, valid, test, artefact, role=None, lr=1e-4, seed=1, dataset="rotten_tomatoes"):
    write_json(tmp_path / "runs" / "mlm_classify" / key / "metrics.json", {
        "run_key": key, "source_run_key": source, "scale": "cpu", "artefacts": [artefact],
        "roles": {artefact: role} if role else {}, "dataset": dataset,
        "stand_in_for": {"rotten_tomatoes": "SST-2", "foldoc_qnli": "QNLI"}[dataset], "kept_layers": list(range(kept)),
        "layerdrop": 0.0, "seed": seed, "classify": {"lr": lr, "batch_size": 32}, "valid_acc": valid,
        "test_acc": test, "data": {"splits": SPLITS}, "machine": {"cpus": 2, "torch": "x"}, "code_version": "c0de",
        "train": {"steps": 10, "wall_s": 6.0, "tokens_seen": 100,
                  "curve": [{"step": 5, "tokens_seen": 50, "val/loss": 0.7, "val/acc": valid}]}})


def probe_child(tmp_path, key, source, valid, test, splits, lr=1e-4, **classify):
    """A pretraining-probe fine-tuning (``regime_mlm``) of an 8-layer encoder: ``child`` with the recipe's
    ``classify`` settings (init, pool, max_len), the stand-in's splits and 400 test examples."""
    child(tmp_path, key, source, 8, valid, test, "regime_mlm", lr=lr)
    path = tmp_path / "runs" / "mlm_classify" / key / "metrics.json"
    record = __import__("json").loads(path.read_text())
    record["classify"].update(classify)
    record["data"]["splits"], record["test_examples"] = splits, 400
    write_json(path, record)


def test_table7_reports_the_best_valid_point_of_each_sweep_and_judges_c2(tmp_path):
    for seed in (1, 2, 3):
        parent(tmp_path, f"ld{seed}", 8, 0.2, seed)
        parent(tmp_path, f"s4_{seed}", 4, 0.0, seed)
        child(tmp_path, f"a{seed}", f"ld{seed}", 4, 0.80 + seed / 100, 0.78 + seed / 100, "table7", "layerdrop_half",
              seed=seed)
        # a second sweep point: worse on valid, better on test; the valid choice must win
        child(tmp_path, f"a{seed}x", f"ld{seed}", 4, 0.70, 0.95, "table7", "layerdrop_half", lr=3e-4, seed=seed)
        child(tmp_path, f"b{seed}", f"s4_{seed}", 4, 0.70 + seed / 100, 0.68 + seed / 100, "table7", "scratch_half",
              seed=seed)
    out = tmp_path / "out"
    report_main(["table7", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "table7.md").read_text()
    assert "SST-2 stand-in: rotten_tomatoes" in text and "| paper SST-2 |" in text
    assert "| LayerDrop, pruned to half | 4 | 82.0 ± 1.0 (n=3) / **80.0 ± 1.0 (n=3)** | 92.5 |" in text
    assert "| from scratch at half depth | 4 | 72.0 ± 1.0 (n=3) / **70.0 ± 1.0 (n=3)** | 92.1 |" in text
    assert "- **held** (C2): pruned to half" in text and "- **not built yet** (C2): ... and pruned to a quarter" in text
    assert "- **not built yet** (C10): ... and the student distilled to that depth" in text
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert len(rows) == 6 and all(r["sweep_points"] == ("2" if r["role"] == "layerdrop_half" else "1") for r in rows)
    assert (out / "figure3.png").stat().st_size > 0 and (out / "curves.png").stat().st_size > 0


def test_table4_names_missing_claims_and_one_seed_is_inconclusive(tmp_path):
    parent(tmp_path, "base", 8, 0.0, 1)
    parent(tmp_path, "ld", 8, 0.2, 1)
    child(tmp_path, "c1", "base", 8, 0.80, 0.79, "table4", "baseline", dataset="foldoc_qnli")
    child(tmp_path, "c2", "ld", 8, 0.85, 0.84, "table4", "layerdrop", dataset="foldoc_qnli")
    report_main(["table4", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "table4.md").read_text()
    assert "QNLI stand-in: foldoc_qnli" in text and "| 89.7 |" not in text  # Table 4's paper QNLI is 93.9/94.2
    assert "| RoBERTa-style encoder | 8 | 80.0 / **79.0** | 93.9 |" in text
    assert "- **inconclusive** (C7)" in text and "- **not built yet** (C8)" in text


def test_figure8_groups_by_drop_rate_and_share_pruned(tmp_path):
    for p in (0.1, 0.5):
        for seed in (1, 2, 3):
            parent(tmp_path, f"p{p}s{seed}", 8, p, seed)
            for kept, acc in ((8, 0.85), (4, 0.80), (2, 0.60 if p == 0.1 else 0.75)):
                child(tmp_path, f"p{p}s{seed}k{kept}", f"p{p}s{seed}", kept, acc, acc + seed / 1000, "figure8",
                      seed=seed)
    report_main(["figure8", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = (tmp_path / "out" / "figure8.md").read_text()
    assert "| 0.5 | 75 |" in text and "| 0.1 | 0 |" in text
    assert ("- **held** (C6): the more you will prune, the higher the training drop rate should be. pruned the most "
            "(75%), the encoder trained at LayerDrop 0.5 against the one trained at 0.1: SST-2 stand-in: 75.2 vs 60.2") in text
    assert (tmp_path / "out" / "figure8.png").stat().st_size > 0


def test_a_fine_tuning_without_its_pretraining_run_is_an_error(tmp_path):
    child(tmp_path, "c1", "gone", 8, 0.8, 0.8, "table4", "baseline")
    with pytest.raises(FileNotFoundError, match="names pretraining run gone, which is not in"):
        report_main(["table4", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])


def test_the_pretraining_probe_sets_each_stand_in_against_scratch_and_its_majority_class(tmp_path):
    write_json(tmp_path / "runs" / "mlm" / "enc" / "metrics.json", {
        "run_key": "enc", "config": {"model": {"n_layers": 8, "dropout": 0.1}, "layerdrop": {"p": 0.2}, "seed": 1,
                                     "data": {"max_train_tokens": 1000, "sources": ["news", "ddtp"]}}, "eval": [],
        "train": {"steps": 400, "wall_s": 600.0, "tokens_seen": 4000, "curve": [{"step": s, "val/ppl": ppl} for s, ppl in
                                                            ((100, 90.0), (200, 50.0), (300, 40.0), (400, 38.0))]}})
    splits = {"train": {"examples": 100, "labels": {"a": 50, "b": 50}}, "valid": {"examples": 20, "labels": {"a": 12, "b": 8}},
              "test": {"examples": 400, "labels": {"a": 300, "b": 100}}}
    for key, init, lr, valid, test in (("p1", "pretrained", 3e-4, 0.80, 0.81), ("p2", "pretrained", 1e-3, 0.70, 0.90),
                                       ("s1", "scratch", 3e-4, 0.74, 0.75)):
        probe_child(tmp_path, key, "enc", valid, test, splits, lr=lr, init=init)
    out = tmp_path / "out"
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    # majority 300/400; the best-on-valid pretrained point (lr 3e-4, not the better-on-test 1e-3); binomial se
    # of 81% on 400 examples is 2.0 points
    # each cell names its learning rate, and the rates it was picked from on valid when several ran
    assert ("| enc (learned positions) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 74.0 / **75.0** ± 2.2, lr 3e-4 | "
            "80.0 / **81.0** ± 2.0, lr 3e-4 (best of 3e-4, 1e-3) | +6.0 |") in text
    assert "| enc | news+ddtp, 1k tokens x 4.0 | 8 | 0.2 | 0.1 | 400 | 38.0 (400) | yes | 5.0% | 10.0 | not measured |" in text
    assert "do not compare" not in text  # one pretraining text
    write_json(tmp_path / "runs" / "mlm" / "enc" / "context.json",
               {"intact": 30.0, "shuffled": 31.0, "no_context": 90.0, "unigram": 100.0})
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "| 10.0 | 30.0 / 31.0 / 90.0 (100.0) |" in text and "reads no word order" not in text  # 3.3% apart
    assert "Caution: pretraining gains nothing" not in text  # +6.0 points, 2 se = 5.8
    write_json(tmp_path / "runs" / "mlm" / "enc" / "context.json",
               {"intact": 30.0, "shuffled": 30.1, "no_context": 90.0, "unigram": 100.0})
    path = tmp_path / "runs" / "mlm_classify" / "s1" / "metrics.json"
    write_json(path, {**__import__("json").loads(path.read_text()), "test_acc": 0.78})  # now +3.0 points
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "Caution: encoder enc reads no word order: shuffling the unmasked context changes its masked-token " \
           "perplexity by +0.33%" in text
    assert ("Caution: encoder enc: pretraining gains nothing over the same encoder from scratch on rotten_tomatoes "
            "(+3.0 points") in text
    # the claims page carries it as the pretraining artefacts' precondition: one seed, so inconclusive
    from layerdrop.report.claims import main as claims_main

    claims_main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results")])
    page = (tmp_path / "results" / "claims.md").read_text()
    assert "| precondition: pretraining transfers: the cpu encoder enc (learned positions) reads word order and " \
           "beats the same encoder from scratch after fine-tuning | regime_mlm | **inconclusive** | encoder enc reads " \
           "no word order" in page
    assert "gives no verdicts" in text and (out / "curves.png").stat().st_size > 0
    assert len(list(csv.DictReader((out / "raw.csv").open()))) == 3
    # a second encoder (ALiBi) probed the same way: its rows and cautions are its own, never mixed with enc's
    import json

    enc = json.loads((tmp_path / "runs" / "mlm" / "enc" / "metrics.json").read_text())
    enc["run_key"], enc["config"]["model"]["positions"] = "enc2", "alibi"
    enc["config"]["trainer"] = {"max_steps": 8000}  # a longer pretraining: its label says so
    write_json(tmp_path / "runs" / "mlm" / "enc2" / "metrics.json", enc)
    for key, init, test in (("q1", "pretrained", 0.95), ("t1", "scratch", 0.74)):
        probe_child(tmp_path, key, "enc2", 0.9 if init == "pretrained" else 0.5, test, splits, init=init)
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "| enc2 (alibi positions, 8,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 50.0 / **74.0** ± 2.2, lr 1e-4 | 90.0 / **95.0** ± 1.1, lr 1e-4 | +21.0 |" in text
    assert "| enc (learned positions) | rotten_tomatoes (SST-2) |" in text and "encoder enc2: pretraining gains nothing" not in text
    results = {r.statement.split(" (")[0]: r for r in __import__("layerdrop.report.claims", fromlist=["collect"]).collect(
        tmp_path / "runs", "cpu")[0] if r.artefact == "regime_mlm"}
    assert set(results) == {"pretraining transfers: the cpu encoder enc", "pretraining transfers: the cpu encoder enc2"}
    # the same encoder probed again with a mean-pooled head: its own rows, best-of-sweep and caution, never the
    # first-position head's (whose better pretrained row would otherwise win the best-on-valid pick)
    for key, init, valid, test in (("m1", "pretrained", 0.6, 0.76), ("m2", "scratch", 0.55, 0.75)):
        probe_child(tmp_path, key, "enc2", valid, test, splits, init=init, pool="mean")
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "| enc2 (alibi positions, 8,000 steps), mean pool | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 55.0 / **75.0** ± 2.2, lr 1e-4 | " \
           "60.0 / **76.0** ± 2.1, lr 1e-4 | +1.0 |" in text
    assert "| enc2 (alibi positions, 8,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 50.0 / **74.0** ± 2.2, lr 1e-4 | 90.0 / **95.0** ± 1.1, lr 1e-4 | +21.0 |" in text
    assert "Caution: encoder enc2, mean pool: pretraining gains nothing" in text
    assert "encoder enc2: pretraining gains nothing" not in text
    statements = [r.statement for r in __import__("layerdrop.report.claims", fromlist=["collect"]).collect(
        tmp_path / "runs", "cpu")[0] if r.artefact == "regime_mlm"]
    assert sum("encoder enc2 (alibi positions, 8,000 steps, mean-pooled head)" in s for s in statements) == 1 and len(statements) == 3
    # the same encoder pretrained for longer borrows enc2's scratch rows (a scratch fine-tuning never reads the
    # parent's weights); one with another architecture borrows nothing
    for key, n_layers, steps in (("enc3", 8, 16000), ("enc4", 4, 16000)):
        longer = json.loads(json.dumps(enc))
        longer["run_key"], longer["config"]["trainer"]["max_steps"] = key, steps
        longer["config"]["model"]["n_layers"] = n_layers
        write_json(tmp_path / "runs" / "mlm" / key / "metrics.json", longer)
        probe_child(tmp_path, f"p_{key}", key, 0.92, 0.96, splits, init="pretrained")
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "| enc3 (alibi positions, 16,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 50.0 / **74.0** " \
           "± 2.2, lr 1e-4 (of enc2) | 92.0 / **96.0** ± 1.0, lr 1e-4 | +22.0 |" in text
    assert "| enc4 (alibi positions, 16,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | - | 92.0 / " \
           "**96.0** ± 1.0, lr 1e-4 | - |" in text
    assert "*(of KEY)*: a scratch row borrowed" in text
    # enc2's own page rows are unchanged, and its mean-pool rows lend nothing to enc3, which has no mean-pool row
    assert "| enc2 (alibi positions, 8,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 50.0 / **74.0** ± 2.2, lr 1e-4 | 90.0 / **95.0** ± 1.1, lr 1e-4 | +21.0 |" in text
    assert "enc3 (alibi positions, 16,000 steps), mean pool" not in text
    # enc2 fine-tuned again on longer inputs (classify.max_len=128, fewer pairs cut): rows of their own, named by
    # their length, with their own cut share, never the 64-token rows' best-of-sweep or scratch pair
    for key, init, valid, test, cut in (("L1", "pretrained", 0.95, 0.97, 10), ("L2", "scratch", 0.52, 0.70, 12)):
        cut_splits = {**splits, "train": {**splits["train"], "truncated": cut}}
        probe_child(tmp_path, key, "enc2", valid, test, cut_splits, init=init, max_len=128)
    report_main(["regime_mlm", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    text = (out / "regime_mlm.md").read_text()
    assert "| enc2 (alibi positions, 8,000 steps), 128 tokens | rotten_tomatoes (SST-2) | 100 / 20 / 400 (12% cut at " \
           "128) | 75.0 | 52.0 / **70.0** ± 2.3, lr 1e-4 | 95.0 / **97.0** ± 0.9, lr 1e-4 | +27.0 |" in text
    assert "| enc2 (alibi positions, 8,000 steps) | rotten_tomatoes (SST-2) | 100 / 20 / 400 | 75.0 | 50.0 / **74.0** ± 2.2, lr 1e-4 | 90.0 / **95.0** ± 1.1, lr 1e-4 | +21.0 |" in text
    statements = [r.statement for r in __import__("layerdrop.report.claims", fromlist=["collect"]).collect(
        tmp_path / "runs", "cpu")[0] if r.artefact == "regime_mlm"]
    assert sum("encoder enc2 (alibi positions, 8,000 steps, 128-token inputs)" in s for s in statements) == 1


def test_the_probe_page_says_how_many_examples_were_cut_at_max_len():
    """A pair stand-in whose examples are mostly cut at classify.max_len (the second text first) hides what
    the task needs: the page says so beside the split sizes; records that do not count cuts say nothing."""
    from layerdrop.report.regime_mlm import cut_share

    assert cut_share({"examples": 24831, "truncated": 18995}, 64) == " (76% cut at 64)"
    assert cut_share({"examples": 100}, 64) == ""


def test_a_probe_names_its_input_length_only_where_it_is_not_the_pretraining_block():
    """Fine-tuning defaults to the pretraining block (classify.max_len: data.block_size); a probe at another
    length is its own probe, and its label says so."""
    from layerdrop.report.regime_mlm import probe_label, probe_of

    at_block = probe_of({"source_run_key": "e", "pool": "first", "max_len": 128, "pretraining_block": 128})
    shorter = probe_of({"source_run_key": "e", "pool": "first", "max_len": 64, "pretraining_block": 128})
    assert at_block == ("e", "first", None) and shorter == ("e", "first", 64)
    assert probe_label(at_block, "alibi positions") == "e (alibi positions)"
    assert probe_label(shorter, "alibi positions") == "e (alibi positions), 64 tokens"


def test_fine_tuning_reads_inputs_as_long_as_the_pretraining_block_by_default():
    from layerdrop.config import load_config

    assert load_config(["scale=cpu", "experiment=pretrain_mlm"]).classify.max_len == 128
    assert load_config(["scale=paper", "experiment=pretrain_mlm"]).classify.max_len == 512  # RoBERTa's
