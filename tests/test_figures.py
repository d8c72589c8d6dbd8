"""A tiny end-to-end run of each figure's pipeline: Hydra-composed runs -> run cache -> report."""

import copy
import csv
import itertools
import os
from pathlib import Path

import pytest

from layerdrop.config import load_config
from layerdrop.dryrun import hub_files_override
from layerdrop.dryrun_hub import lm_files
from layerdrop.report import figures
from layerdrop.report.__main__ import main as report
from layerdrop.train import train


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Thirteen tiny runs on 200/20/20 news articles in the hub's Wikitext layout (local parquet files, as the
    paper dry run uses): the same real text as the cpu corpus, with splits small enough that the many
    pruned-depth evaluations take seconds, not the minutes the whole cpu splits took."""
    root = tmp_path_factory.mktemp("figures")
    files = lm_files(Path(os.environ["LAYERDROP_DATA_DIR"]) / "raw", root / "hub", {"train": 200, "valid": 20, "test": 20})
    base = ["debug=smoke", f"paths.runs_dir={root}/runs", f"paths.log_dir={root}/logs", f"paths.records_dir={root}/records",
            "trainer.max_steps=4", f"paths.data_dir={root}/data", "data.source=hub", "+data.hub_path=parquet",
            "+data.hub_name=null", f"+{hub_files_override(files)}"]

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
    verdict_lines = [line for line in note.splitlines() if line.startswith("- **")]
    assert verdict_lines and all(line.startswith("- **inconclusive**") for line in verdict_lines)  # one seed
    assert "Scale `cpu`" in note
    assert (out / f"figure{n}.png").stat().st_size > 5_000
    rows = list(csv.DictReader((out / "raw.csv").open()))
    assert rows
    if n == 4:
        assert {r["target"] for r in rows} >= {"layers", "sublayers", "heads", "heads+layers", "heads+sublayers"}
        assert {r["strategy"] for r in rows} >= {"every_other", "first", "last", "search_on_valid", "data_driven"}
        assert "search_on_valid (seed 1) chose layers" in note and "scoring 6 subsets" in note  # C(4, 2)
    if n == 5:
        assert len([r for r in rows if r["strategy"] == "random"]) == 6  # all C(4, 2) subsets
    if n == 7:
        assert all(float(r["train_tokens_per_s"]) > 0 for r in rows)


# The verdicts: records with constructed perplexities and speeds, so each claim's outcome is known.
# Every claim is checked both ways (held on one set of numbers, not held on another), and in mixed
# patterns, so a verdict wired to the wrong comparison cannot pass.

SEEDS = ((1, 1.0), (2, 1.01), (3, 0.99))  # three seeds, 1% apart: the constructed gaps decide every verdict


def record(evals: list[dict], p=0.2, target="layers", learned=False, tokens_per_s=1000.0, n_layers=4, seed=1) -> dict:
    """A run record as `train` writes it, trimmed to the fields the figure builders read."""
    return {
        "run_key": f"{target}-{p}-{learned}-{tokens_per_s}-{seed}", "scale": "cpu", "git_sha": "test",
        "config": {"model": {"n_layers": n_layers}, "layerdrop": {"p": p, "target": target, "learned": learned},
                   "seed": seed},
        "train": {"steps": 4, "tokens_seen": 100, "wall_s": 1.0, "train_tokens_per_s": tokens_per_s},
        "eval": evals, "machine": {"cpus": 2, "torch": "test"}, "data": {"provenance": {"source": "constructed"}},
    }


def seeded(make) -> list[dict]:
    """``make(seed, scale)`` -> records of one seed; three seeds whose numbers differ by 1%."""
    return [r for seed, scale in SEEDS for r in make(seed, scale)]


def ev(strategy: str, layers: list[int], valid_ppl: float, test_ppl: float | None = None, **extra) -> dict:
    return {"strategy": strategy, "depth": len(layers), "layers": layers, "n_params": 1, "valid_ppl": valid_ppl,
            "test_ppl": valid_ppl if test_ppl is None else test_ppl, **extra}


def verdicts(note: str, claims: list[str]) -> list[bool]:
    """Each claim's verdict (held True, not held False), found by a phrase of its line; every verdict line
    must be one of them, and none inconclusive (three seeds, clear gaps)."""
    lines = [line for line in note.splitlines() if line.startswith("- **")]
    assert len(lines) == len(claims), lines
    found = []
    for claim in claims:
        (line,) = [line for line in lines if claim in line]
        assert line.startswith(("- **held**", "- **not held**")), line
        found.append(line.startswith("- **held**"))
    return found


FIGURE4_CLAIMS = ["dropping heads alone is worst", "sub-layers and whole layers are about equal",
                  "combining heads with layers", "first or the last half is worse",
                  "every other is hard to beat"]


def figure4_records(heads_worst, sublayers_equal, combo_helps, first_last_worse, every_other_best) -> list[dict]:
    full = {"layers": 20.0, "sublayers": 20.2 if sublayers_equal else 25.0, "heads": 100.0 if heads_worst else 10.0,
            "heads+layers": 18.0 if combo_helps else 22.0, "heads+sublayers": 18.5 if combo_helps else 23.0}
    eo = 25.0
    first, last = (40.0, 35.0) if first_last_worse else (40.0, 22.0)  # "last" beats every other: not held
    search = 24.8 if every_other_best else 20.0  # a 1% gain (held) or a 20% gain (not held)

    def make(seed, k):
        records = [record([ev("none", [0, 1, 2, 3], ppl * k)], target=t, seed=seed) for t, ppl in full.items()
                   if t != "layers"]
        records.append(record([ev("none", [0, 1, 2, 3], full["layers"] * k), ev("every_other", [1, 3], eo * k),
                               ev("first", [0, 1], first * k), ev("last", [2, 3], last * k),
                               ev("search_on_valid", [0, 3], 21.0, search * k, search_evaluations=6)], seed=seed))
        records.append(record([ev("none", [0, 1, 2, 3], 21.0 * k),
                               ev("data_driven", [0, 2], 30.0, search * k, learned_rates=[0.1, 0.3, 0.1, 0.3])],
                              learned=True, seed=seed))
        return records

    return seeded(make)


@pytest.mark.parametrize("expected", [(True,) * 5, (False,) * 5, (True, False, True, False, True),
                                      (False, True, False, True, False)])
def test_figure4_verdicts_follow_the_numbers(tmp_path, expected):
    figures.figure4(figure4_records(*expected), tmp_path, "cpu")
    note = (tmp_path / "figure4.md").read_text()
    assert verdicts(note, FIGURE4_CLAIMS) == list(expected)
    assert "search_on_valid (seed 1) chose layers 0 3 after scoring 6 subsets" in note
    assert "data_driven (seed 1) kept layers 0 2" in note


@pytest.mark.parametrize("every_other_same, outcome", [(40.0, "held"), (20.0, "not held")])
def test_figure4_compares_data_driven_with_every_other_on_the_learned_models(tmp_path, every_other_same, outcome):
    """Ours: the learned-rate model pruned every other is judged against its data-driven prune (24.8 here)."""
    records = figure4_records(*(True,) * 5)
    for r in records:
        if r["config"]["layerdrop"]["learned"]:
            k = r["eval"][0]["valid_ppl"] / 21.0
            r["eval"].append(ev("every_other", [1, 3], 30.0, every_other_same * k))
    figures.figure4(records, tmp_path, "cpu")
    note = (tmp_path / "figure4.md").read_text()
    (line,) = [x for x in note.splitlines() if x.startswith("- Ours: on the learned-rate models")]
    assert f"data-driven better than every other: {outcome}:" in line
    assert f"every other on the same model {every_other_same:.1f}" in note  # seed 1 (k = 1)
    assert verdicts(note, FIGURE4_CLAIMS) == [True] * 5  # the paper's C3 row still compares the fixed-rate models
    figures.figure4(figure4_records(*(True,) * 5), tmp_path, "cpu")  # no every other on the learned models
    assert "- Ours: on the learned-rate models" not in (tmp_path / "figure4.md").read_text()


def test_one_seed_is_inconclusive_whatever_it_reads(tmp_path):
    figures.figure4([r for r in figure4_records(*(True,) * 5) if r["config"]["seed"] == 1], tmp_path, "cpu")
    note = (tmp_path / "figure4.md").read_text()
    lines = [line for line in note.splitlines() if line.startswith("- **")]
    assert len(lines) == 5 and all(line.startswith("- **inconclusive**") for line in lines)


def test_a_partly_run_figure4_names_what_it_cannot_judge_yet(tmp_path):
    records = figure4_records(*(True,) * 5)
    figures.figure4(records, tmp_path, "cpu")
    assert "not judged yet" not in (tmp_path / "figure4.md").read_text()  # all rows in: everything judged
    # the left panel under way (heads+sublayers not run, heads at one seed), the right panel not yet evaluated
    partial = [copy.deepcopy(r) for r in records if r["config"]["layerdrop"]["target"] != "heads+sublayers"
               and not (r["config"]["layerdrop"]["target"] == "heads" and r["config"]["seed"] != 1)
               and not r["config"]["layerdrop"]["learned"]]
    for r in partial:
        r["eval"] = [e for e in r["eval"] if e["strategy"] == "none"]
    figures.figure4(partial, tmp_path, "cpu")
    note = (tmp_path / "figure4.md").read_text()
    assert ("- **not judged yet** (C4): the drop targets are compared once every one has run (runs so far: "
            "layers 3 seeds, sublayers 3 seeds, heads 1 seed, heads+layers 3 seeds; not yet run: heads+sublayers)."
            in note)
    assert "- **not judged yet** (C3): the kept halves are compared once every other, first and last have" in note
    assert "(so far: none)" in note and "dropping heads alone is worst" not in note
    # the right panel evaluated, the data-driven run not yet trained: C3 is judged, and the rest named
    right = [r for r in records if not r["config"]["layerdrop"]["learned"]]
    figures.figure4(right, tmp_path, "cpu")
    note = (tmp_path / "figure4.md").read_text()
    assert "not judged yet" not in note and "first or the last half is worse" in note
    assert "- not yet run for C3: data_driven (every other is compared with what has run)." in note


@pytest.mark.parametrize("cost, top2", [([10.0, 1.0, 2.0, 9.0], [0, 3]), ([1.0, 10.0, 9.0, 2.0], [1, 2]),
                                        ([10.0, 9.0, 1.0, 2.0], [0, 1])])  # held only for [0, 3]
def test_figure5_verdict_follows_the_numbers(tmp_path, cost, top2):
    """``cost[i]``: what removing layer i adds to a sub-network's perplexity."""
    def make(seed, k):
        return [record([ev("random", list(keep), k * (10 + sum(c for i, c in enumerate(cost) if i not in keep)))
                        for keep in itertools.combinations(range(4), 2)], seed=seed)]

    figures.figure5(seeded(make), tmp_path, "cpu")
    note = (tmp_path / "figure5.md").read_text()
    assert verdicts(note, ["the input and output layers matter most"]) == [top2 == [0, 3]]
    assert f"whose removal hurts most here: {top2}" in note


@pytest.mark.parametrize("deep_ppl, held", [((30.0, 60.0), True), ((30.0, 90.0), False), ((45.0, 60.0), False)])
def test_figure6_verdict_follows_the_numbers(tmp_path, deep_ppl, held):
    """p=0 gives 40 (2 layers) and 80 (1 layer); p=0.5 gives ``deep_ppl``: held if it wins at both depths."""
    def run(p, full, two, one, seed, k):
        return record([ev("none", [0, 1, 2, 3], full * k), ev("every_other", [1, 3], two * k),
                       ev("every_other", [3], one * k)], p=p, seed=seed)

    figures.figure6(seeded(lambda seed, k: [run(0.0, 18.0, 40.0, 80.0, seed, k), run(0.5, 20.0, *deep_ppl, seed, k)]),
                    tmp_path, "cpu")
    note = (tmp_path / "figure6.md").read_text()
    assert verdicts(note, ["the largest training rate (p=0.5) is best"]) == [held]
    assert "at full depth the best training rate here is p=0.0" in note


def test_figure6_with_one_training_rate_judges_nothing():
    """A sweep stopped after its first rate (p=0) leaves nothing to compare: no C6 line, not a verdict on
    an empty comparison."""
    one = [record([ev("none", [0, 1, 2, 3], 18.0), ev("every_other", [1, 3], 40.0)], p=0.0)]
    assert figures.figure6_claims(figures.tidy_rows(one)) == []


@pytest.mark.parametrize("speeds, expected", [
    ((1000.0, 1300.0, 1800.0), [True, True]),
    ((1000.0, 2000.0, 1800.0), [True, False]),  # 1.8x at p=0.5, but slower than at p=0.2
    ((1000.0, 1100.0, 1200.0), [False, True]),  # rises, but only 1.2x
    ((1000.0, 900.0, 1100.0), [False, False]),
])
def test_figure7_verdicts_follow_the_numbers(tmp_path, speeds, expected):
    def make(seed, k):
        return [record([ev("none", [0, 1, 2, 3], 20.0)], p=p, tokens_per_s=s * (k if p else 1.0), seed=seed)
                for p, s in zip((0.0, 0.2, 0.5), speeds)]

    figures.figure7(seeded(make), tmp_path, "cpu")
    note = (tmp_path / "figure7.md").read_text()
    assert verdicts(note, ["trains almost 2x faster", "speed rises with every step in p"]) == expected
