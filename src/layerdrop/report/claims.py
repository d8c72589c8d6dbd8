"""The claims page: every claim of the paper (C1-C11, ../shared/PAPER.md section 7) against every
artefact that tests it, from the run records (`make claims` -> results/claims.md and claims.json).

    python -m layerdrop.report.claims [--scale cpu] [--records-dir records] [--out results]

Every artefact judges its claims by the noise rule (report/verdict.py) on the seeds of each row; a
claim no artefact tests yet says "not built yet", one whose artefact has no runs "not run yet".
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

from layerdrop.report import figures, glue, regime_mlm, stability, table1, table2, table3, table8
from layerdrop.report.collect import (
    add_records_arg,
    aggregate,
    load_records,
    select_roles,
    tidy_rows,
    write_text,
)
from layerdrop.report.verdict import CLAIMS, RULE, ClaimResult
from layerdrop.utils.runs import git_sha

#: artefact -> (task, the claims it tests)
ARTEFACTS = {
    "table1": ("mt", ("C1", "C2", "C7", "C8")),
    "table2": ("lm", ("C1", "C2", "C7", "C8")),
    "table3": (("sum", "qa"), ("C1", "C2", "C7", "C8")),
    "figure4": ("lm", ("C3", "C4")),
    "figure5": ("lm", ("C5",)),
    "figure6": ("lm", ("C6",)),
    "figure7": ("lm", ("C9",)),
    "table8": ("lm_finetune", ("C11",)),
    "table4": ("mlm_classify", ("C7", "C8")),
    "table7": ("mlm_classify", ("C2", "C10")),
    "figure8": ("mlm_classify", ("C6",)),
    "stability_mt": ("mt", ("C8",)),  # the probe of where the deep post-norm pair trains (make tune-mt-stability)
}
TABLES = ("table1", "table2", "table3")  # artefacts whose runs each hold a row (a role)
#: claims whose artefact does not exist yet, and what would test them
NOT_BUILT: dict[str, str] = {}


def table_claims(artefact: str, records: list[dict]) -> list[ClaimResult]:
    """``records``: the runs holding a row of the table (``select_roles``)."""
    if artefact == "table1":
        rows = aggregate(table1.tidy_rows(records), table1.KEYS, table1.METRICS)
        return table1.claim_rows(rows)
    if artefact == "table3":
        return table3.claim_rows(aggregate(table3.tidy_rows(records), table3.KEYS, table3.METRICS))
    rows = aggregate(table2.tidy_rows(records, "table2"), table2.KEYS, table2.METRICS)
    return table2.claim_rows(rows)


FIGURE_CLAIMS = {"figure4": figures.figure4_claims, "figure5": figures.figure5_claims,
                 "figure6": figures.figure6_claims, "figure7": figures.figure7_claims}


def collect(runs_dir: Path, scale: str) -> tuple[list[ClaimResult], dict[str, int]]:
    """Every claim result of every built artefact at ``scale``, and how many runs each artefact has."""
    results, runs = [], {}
    for artefact, (task, _) in ARTEFACTS.items():
        records = [r for t in (task if isinstance(task, tuple) else (task,))
                   for r in load_records(runs_dir, t, artefact, scale)]
        if records and artefact in TABLES:
            records = select_roles(records, artefact)  # the runs that hold a row of the table
        runs[artefact] = len(records)
        if not records:
            continue
        if artefact in TABLES:
            results += table_claims(artefact, records)
        elif artefact in glue.CLAIMS_OF:  # fine-tunings, each joined with its pretraining run
            results += glue.CLAIMS_OF[artefact](glue.rows_for(artefact, records, runs_dir))
        elif artefact == "table8":
            results.append(table8.c11(table8.tidy_rows(records)))
        elif artefact == "stability_mt":
            results += stability.claims(records)
        else:
            results += FIGURE_CLAIMS[artefact](tidy_rows(records))
    probe = load_records(runs_dir, "mlm_classify", "regime_mlm", scale)  # the pretraining artefacts' precondition
    if probe:
        results += regime_mlm.precondition(probe, runs_dir)
    return results, runs


def render(results: list[ClaimResult], runs: dict[str, int], scale: str, stale: set[str] = frozenset()) -> str:
    """``stale``: artefacts whose results/ page exists but none of whose runs are in the record store (a page
    made by earlier code or an earlier regime, not judged here)."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Did the paper's claims hold?", "",
             f"Scale `{scale}`. Written by `make claims` on {when}, commit {git_sha()}, from the run records of "
             "every artefact (" + ", ".join(f"{a}: {n} runs" for a, n in runs.items()) + ").", "",
             f"Noise rule: {RULE}. A row with fewer seeds is inconclusive whatever its one run says; that run's "
             "numbers are still shown.", "",
             "Preconditions come first: where a precondition does not hold (say, depth does not matter), the "
             "claims of that artefact say little either way.", "",
             "| claim | artefact | outcome | what was compared |", "|---|---|---|---|"]
    for r in (r for r in results if r.claim == "precondition"):
        lines.append(f"| precondition: {r.statement} | {r.artefact} | **{r.outcome}** | {r.detail} |")
    for claim, text in CLAIMS.items():
        testers = [a for a, (_, cs) in ARTEFACTS.items() if claim in cs]
        if not testers:
            lines.append(f"| {claim}: {text} | {NOT_BUILT[claim]} | not built yet | - |")
        for artefact in testers:
            mine = [r for r in results if r.claim == claim and r.artefact == artefact]
            for r in mine:
                what = artefact if r.statement == text else f"{artefact}: {r.statement}"
                lines.append(f"| {claim}: {text} | {what} | **{r.outcome}** | {r.detail} |")
            if not mine:
                why = ("its rows are not run yet" if runs.get(artefact) else
                       f"no runs in the record store; `results/{artefact}/` predates the current regime and is "
                       "not judged here" if artefact in stale else "no runs at this scale")
                outcome = "not run yet" if not runs.get(artefact) else "not built yet"
                lines.append(f"| {claim}: {text} | {artefact} ({why}) | {outcome} | - |")
    lines += ["", "Each artefact's own page (`results/<artefact>/<artefact>.md`) shows its rows, seeds and curves.",
              ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.report.claims", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    add_records_arg(parser)
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    results, runs = collect(args.runs_dir, args.scale)
    name = "claims" if args.scale == "cpu" else f"claims_{args.scale}"
    stale = {a for a, n in runs.items() if not n and (args.out / (a if args.scale == "cpu" else f"{a}_{args.scale}")).is_dir()}
    write_text(args.out / f"{name}.md", render(results, runs, args.scale, stale))
    write_text(args.out / f"{name}.json", json.dumps([r.__dict__ for r in results], indent=2) + "\n")
    print(f"wrote {args.out / name}.md: {len(results)} claim results from {sum(runs.values())} runs")


if __name__ == "__main__":
    main()
