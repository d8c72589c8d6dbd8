"""The claims page (make claims) from a small fake run cache: verdicts by the noise rule, one row per
claim and artefact, and what is not built."""

import json

from test_report import record, write_runs

from layerdrop.report import claims


def _table2_seeds():
    runs = []
    for seed, jitter in ((1, 0.0), (2, 1.0), (3, -1.0)):
        runs += [
            record(f"base{seed}", 6, 0.0, {6: 50.0 + jitter, 3: 900.0 + jitter}, role="baseline", seed=seed),
            record(f"ld{seed}", 6, 0.2, {6: 45.0 + jitter, 3: 80.0 + jitter}, role="layerdrop", seed=seed),
            record(f"s3{seed}", 3, 0.0, {3: 82.0 + jitter}, role="scratch", seed=seed),
        ]
    return runs


def test_claims_page_from_a_fake_run_cache(tmp_path):
    fig6 = record("f6", 6, 0.5, {6: 60.0}, artefacts=("figure6",))
    write_runs(tmp_path, [*_table2_seeds(), fig6])
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
    assert next(line for line in lines if line.startswith("| C10:")).endswith("| not built yet | - |")
    assert "table8 (no runs at this scale) | not built yet" in next(line for line in lines if line.startswith("| C11:"))
    assert "table1 (no runs at this scale)" in next(line for line in lines if line.startswith("| C7:") and "table1" in line)
    assert "table1: 0 runs, table2: 9 runs" in page
    data = json.loads((tmp_path / "results" / "claims.json").read_text())
    assert {(d["claim"], d["outcome"]) for d in data if d["artefact"] == "table2"} >= {("C7", "held"), ("C1", "held")}


def test_a_claim_that_loses_beyond_the_noise_is_not_held(tmp_path):
    runs = [r for r in _table2_seeds() if not r["run_key"].startswith("ld")]
    for seed, jitter in ((1, 0.0), (2, 1.0), (3, -1.0)):  # LayerDrop now clearly worse at full depth
        runs.append(record(f"ld{seed}", 6, 0.2, {6: 60.0 + jitter, 3: 80.0 + jitter}, role="layerdrop", seed=seed))
    write_runs(tmp_path, runs)
    results, _ = claims.collect(tmp_path / "runs", "cpu")
    assert {r.claim: r.outcome for r in results}["C7"] == "not held"
