"""The regime overview (make regime): each task's checks from a small fake run cache."""

from test_report import mt_regime_record, regime_record, table2_seeds, write_runs

from layerdrop.report import regime_overview
from layerdrop.utils.runs import write_json


def _ld(record, p=0.2):
    record["config"]["layerdrop"]["p"] = p
    return record


def _table2(ld_full, scratch3):
    runs = table2_seeds(ld_full, scratch3)
    for r in runs:  # as train() records them: the data and the dropout
        r["config"]["data"] = {"max_train_tokens": 50_000}
        r["config"]["model"]["dropout"] = 0.1
    return runs


def _lm_search(with_layerdrop: bool = True):
    runs = [regime_record(f"d{d}", d, [(100, 90.0), (200, v)], v) for d, v in ((0.1, 70.0), (0.2, 66.0), (0.3, 75.0))]
    if with_layerdrop:
        runs += [_ld(regime_record(f"l{d}", d, [(100, 90.0), (200, v)], v)) for d, v in ((0.0, 68.0), (0.1, 71.0))]
    return runs


def test_every_check_met_on_a_regime_that_has_them(tmp_path):
    write_runs(tmp_path, _lm_search() + _table2(45.0, 82.0))
    mt = mt_regime_record("m1", 0.1, [(50, 40.0), (100, 30.0), (150, 31.0)], 16.5)
    write_json(tmp_path / "runs" / "mt" / "m1" / "metrics.json", mt)
    tasks = {t["task"]: t for t in regime_overview.build(tmp_path / "runs", tmp_path / "out", "cpu")}
    lm = tasks["lm"]["checks"]
    assert lm["dropout picked on valid"][0] == "met" and "LayerDrop 0: 0.2 of [0.1, 0.2, 0.3]" in lm["dropout picked on valid"][1]
    assert lm["depth matters"][0] == "met"  # 50 vs 82 from scratch at 3 layers, 3 seeds each
    assert lm["3+ seeds a row"][0] == "met" and lm["table runs converged"][0] == "met"
    assert tasks["mt"]["checks"]["translation works"] == (
        "met", "best baseline 16.50 test BLEU (150 steps, 15.0 epochs, dropout 0.1, still improving: no); target 15")
    page = (tmp_path / "out" / "regime.md").read_text()
    assert "| language modelling (Table 2) | **met** | **met** | **met** | **met** | - | 5 / 9 |" in page
    assert (tmp_path / "out" / "curves.png").stat().st_size > 10_000


def test_checks_not_met_say_what_is_missing(tmp_path):
    seeds = _table2(45.0, 50.5)[:6]  # two seeds; the 3-layer model from scratch about as good as 6 layers
    for r in seeds:
        r["train"]["curve"] = [{"step": s, "tokens_seen": 1000 * s, "val/ppl": 100.0 / s} for s in (1, 2)]
    write_runs(tmp_path, _lm_search(with_layerdrop=False)[:2] + seeds)
    mt = mt_regime_record("m1", 0.1, [(50, 40.0), (100, 30.0)], 10.25)
    write_json(tmp_path / "runs" / "mt" / "m1" / "metrics.json", mt)
    tasks = {t["task"]: t for t in regime_overview.build(tmp_path / "runs", tmp_path / "out", "cpu")}
    lm = tasks["lm"]["checks"]
    assert lm["dropout picked on valid"] == (
        "not met", "LayerDrop 0: 0.2 of [0.1, 0.2] (baseline dropout 0.3 not tried; no LayerDrop dropout picked)")
    assert lm["table runs converged"] == ("not met", "6 of 6 table2 runs still improving at the end (best at the "
                                                     "last validation, and valid fell by 1% or more over the last "
                                                     "fifth of the steps) (100 steps)")
    assert lm["3+ seeds a row"][0] == "not met" and lm["depth matters"][0] == "inconclusive"
    assert tasks["mt"]["checks"]["translation works"][0] == "not met"
    assert tasks["mt"]["checks"]["table runs converged"] == ("not measured", "no table1 runs")
    assert tasks["sum"]["checks"]["dropout picked on valid"][0] == "not measured"


def test_a_search_whose_page_is_committed_but_whose_records_are_gone_is_named_not_passed_over(tmp_path):
    """A regime page made from records the store no longer holds keeps its numbers; the overview points to it
    (and says its checks read 'not measured' for that reason) instead of treating the search as never run."""
    write_runs(tmp_path, [r for r in _lm_search() if r["config"]["layerdrop"]["p"]] + _table2(45.0, 82.0))
    results = tmp_path / "results"
    for folder in ("regime_sum", "regime_mlm", "regime_lm"):  # regime_lm's records are in the store
        (results / folder).mkdir(parents=True)
    (results / "regime_lm" / "before_the_store").mkdir()  # ... and its earlier page is kept beside the new one
    (results / "regime_lm" / "before_the_store" / "regime_lm.md").write_text("# an earlier search\n")
    regime_overview.build(tmp_path / "runs", results / "regime", "cpu")
    page = (results / "regime" / "regime.md").read_text()
    stale = page.split("reads *not measured* above until its runs are made again):", 1)[1]
    assert "- summarisation (Table 3): [`results/regime_sum/`](../regime_sum/regime_sum.md)" in stale
    assert "- pretraining (Tables 4 and 7, Figures 3 and 8): [`results/regime_mlm/`]" in stale
    assert "regime_qa" not in stale and "[`results/regime_lm/`]" not in stale  # no page / held by the store
    assert ("- language modelling (Table 2), the earlier search: [`results/regime_lm/before_the_store/`]"
            "(../regime_lm/before_the_store/regime_lm.md)") in stale
    assert "no probe runs in the record store" in page
    # no baseline dropout search in the store, but the LayerDrop rows' pick is said
    assert ("dropout picked on valid: **not measured**. no baseline runs that differ only in dropout "
            "(LayerDrop 0.2: 0.0 of [0.0, 0.1])") in page


def test_each_probed_encoder_is_one_row_of_the_pretraining_table():
    """The pretraining probe's preconditions (one per encoder and head, from report.regime_mlm) are a table of
    encoders, each with its outcome and what the probe found, not a paragraph apiece."""
    from layerdrop.report.regime_mlm import TRANSFERS
    from layerdrop.report.verdict import ClaimResult

    found = [ClaimResult("precondition", "regime_mlm", f"{TRANSFERS}{key} ({label}) reads word order and beats the "
                         "same encoder from scratch after fine-tuning", "inconclusive", detail)
             for key, label, detail in (("e1", "alibi positions, 4,000 steps", "gains nothing (1 seed(s))"),
                                        ("e2", "alibi positions, 8,000 steps, mean-pooled head", "no caution"))]
    page = regime_overview.render([], "cpu", found, [])
    assert "| encoder probed | outcome | what the probe found |" in page
    assert "| e1 (alibi positions, 4,000 steps) | **inconclusive** | gains nothing (1 seed(s)) |" in page
    assert "| e2 (alibi positions, 8,000 steps, mean-pooled head) | **inconclusive** | no caution |" in page
    assert "no probe runs in the record store" not in page
