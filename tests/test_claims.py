"""The claims page (make claims) from a small fake run cache: verdicts by the noise rule, one row per
claim and artefact, and what is not built."""

import json

from test_report import record, table2_seeds, write_runs

from layerdrop.report import claims


def _table2_seeds():
    return table2_seeds(45.0, 82.0)


def test_claims_page_from_a_fake_run_cache(tmp_path):
    # two training rates, one seed each: a comparison Figure 6 can make, inconclusive by the noise rule
    fig6 = [record("f6a", 6, 0.5, {6: 60.0, 3: 70.0}, artefacts=("figure6",)),
            record("f6b", 6, 0.0, {6: 55.0, 3: 90.0}, artefacts=("figure6",))]
    write_runs(tmp_path, [*_table2_seeds(), *fig6])
    (tmp_path / "results" / "figure5").mkdir(parents=True)  # a page from an earlier regime, no runs left
    claims.main(["--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results")])
    page = (tmp_path / "results" / "claims.md").read_text()
    lines = page.splitlines()

    def row(claim, artefact):
        return next(line for line in lines if line.startswith(f"| {claim}:") and f"| {artefact}: " in line)

    assert "**held**" in row("C7", "table2")  # 45 vs 50, three seeds each
    assert "**held**" in row("C1", "table2")  # 80 vs 900 pruned
    assert "**held**" in row("C2", "table2")  # 80 pruned vs 82 from scratch
    assert "precondition: depth matters" in page and "| table2 | **held** |" in page
    six = next(line for line in lines if line.startswith("| C6:"))
    assert "figure6" in six and "**inconclusive**" in six
    assert next(line for line in lines if line.startswith("| C10:")).endswith("| not run yet | - |")
    assert "table7 (no runs at this scale) | not run yet" in next(line for line in lines if line.startswith("| C10:"))
    assert "table8 (no runs at this scale) | not run yet" in next(line for line in lines if line.startswith("| C11:"))
    assert "table1 (no runs at this scale)" in next(line for line in lines if line.startswith("| C7:") and "table1" in line)
    assert "table1: 0 runs, table2: 9 runs" in page
    five = next(line for line in lines if line.startswith("| C5:"))
    assert "`results/figure5/` predates the current regime and is not judged here" in five
    data = json.loads((tmp_path / "results" / "claims.json").read_text())
    assert {(d["claim"], d["outcome"]) for d in data if d["artefact"] == "table2"} >= {("C7", "held"), ("C1", "held")}


def test_a_claim_that_loses_beyond_the_noise_is_not_held(tmp_path):
    write_runs(tmp_path, table2_seeds(60.0, 82.0))  # LayerDrop now clearly worse at full depth
    results, _ = claims.collect(tmp_path / "runs", "cpu")
    assert {r.claim: r.outcome for r in results}["C7"] == "not held"
