"""A tiny end-to-end run of each figure's pipeline: Hydra-composed runs -> run cache -> report."""

import csv

import pytest

from layerdrop.config import load_config
from layerdrop.report.__main__ import main as report
from layerdrop.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures")
    base = ["debug=smoke", f"paths.runs_dir={root}/runs", f"paths.log_dir={root}/logs", "trainer.max_steps=4"]

    def run(*overrides):
        return train(load_config([*base, *overrides]))

    for target in ("layers", "sublayers", "heads", "heads+layers", "heads+sublayers"):
        run("experiment=figure4_lm", f"layerdrop.target={target}", "prune.strategies=[]")
    run("experiment=figure4_lm", "prune.strategies=[every_other,first,last,search_on_valid]", "prune.depths=[2]")
    run("experiment=figure4_lm", "layerdrop.learned=true", "prune.strategies=[data_driven,every_other]",
        "prune.depths=[2]")
    run("experiment=figure5_lm", "prune.strategies=[random]", "prune.depths=[2]", "prune.splits=[valid]")
    for p in (0.0, 0.5):
        run("experiment=figure6_lm", f"layerdrop.p={p}")
        run("experiment=figure7_lm", f"layerdrop.p={p}", "trainer.max_steps=4", "trainer.val_check_interval=4")
    return root


@pytest.mark.parametrize("n", [4, 5, 6, 7])
def test_each_figure_builds_from_its_runs(runs, n):
    out = runs / "results" / f"figure{n}"
    report([f"figure{n}", "--runs-dir", str(runs / "runs"), "--out", str(out)])
    note = (out / f"figure{n}.md").read_text()
    assert ("**held**" in note or "**did not hold**" in note) and "Scale `cpu`" in note
    assert (out / f"figure{n}.png").stat().st_size > 5_000
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert rows
    if n == 4:
        assert {r["target"] for r in rows} >= {"layers", "sublayers", "heads", "heads+layers", "heads+sublayers"}
        assert {r["strategy"] for r in rows} >= {"every_other", "first", "last", "search_on_valid", "data_driven"}
        assert "search_on_valid chose layers" in note and "scoring 6 subsets" in note  # C(4, 2)
    if n == 5:
        assert len([r for r in rows if r["strategy"] == "random"]) == 6  # all C(4, 2) subsets
    if n == 7:
        assert all(float(r["train_tokens_per_s"]) > 0 for r in rows)
