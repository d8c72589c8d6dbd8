"""Where the cpu regime stands, task by task: ``results/regime/`` (``regime.md``, ``curves.png``), from the
run records of every regime search (``regime_<task>``) and every table built on it.

    python -m layerdrop.report.regime_overview [--scale cpu] [--records-dir records] [--out results/regime]

For each task it checks what a verdict needs before it means anything (the regime issue's rules):
the dropout picked on valid from {0.1, 0.2, 0.3} (and the LayerDrop rows' own), the table's runs
converged (the regime map's rule: valid stopped improving, or fell under 1% over the last fifth of the
steps), depth matters (the claims page's precondition, by the noise rule), at least 3 seeds a row, and
for translation a baseline at 15 test BLEU or more. Each check is met, not met, or not measured, with
the numbers behind it; the task's own page has the runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report import claims  # noqa: E402
from layerdrop.report.collect import add_records_arg, load_records, role_of, save_figure, write_text  # noqa: E402
from layerdrop.report.regime import CONVERGED_GAIN, METRIC, converged, dropout_picks, run_summary  # noqa: E402
from layerdrop.report.regime_mlm import TRANSFERS  # noqa: E402
from layerdrop.utils.machine import machines  # noqa: E402
from layerdrop.utils.runs import git_sha  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

DROPOUTS = {0.1, 0.2, 0.3}  # the paper's (and fairseq's) search space for the baseline
MIN_SEEDS = 3
BLEU_TARGET = 15.0
ARCHIVE = "before_the_store"  # results/regime_<task>/<this>/: a search's page made from records the store lacks
#: task -> (name, its records' task, the regime artefact, the table artefact, role prefix in that table)
TASKS = {
    "lm": ("language modelling (Table 2)", "lm", "regime_lm", "table2", ""),
    "mt": ("translation (Table 1)", "mt", "regime_mt", "table1", ""),
    "sum": ("summarisation (Table 3)", "sum", "regime_sum", "table3", "sum_"),
    "qa": ("long-form QA (Table 3)", "qa", "regime_qa", "table3", "qa_"),
}


def table_runs(records: list[dict], table: str, prefix: str) -> list[dict]:
    """The runs that hold a row of ``table`` (for Table 3, this task's rows)."""
    return [r for r in records if (role_of(r, table) or "").startswith(prefix) and role_of(r, table)]


def dropout_check(summaries: list[dict]) -> tuple[str, str]:
    """Met when the baseline's dropout was picked from all of {0.1, 0.2, 0.3} and the LayerDrop rows' from
    two or more values."""
    picks = dropout_picks(summaries)
    base = [g for g in picks if g["layerdrop_p"] == 0]
    ld = [g for g in picks if g["layerdrop_p"] > 0]
    said = "; ".join(f"LayerDrop {g['layerdrop_sides'] or format(g['layerdrop_p'], 'g')}: {g['pick']} of "
                     f"{sorted(g['tried'])}" for g in picks)
    if not base:
        return "not measured", "no baseline runs that differ only in dropout" + (f" ({said})" if said else "")
    full = any(set(g["tried"]) >= DROPOUTS for g in base)
    missing = sorted(DROPOUTS - set().union(*(set(g["tried"]) for g in base)))
    if full and ld:
        return "met", said
    why = [f"baseline dropout {', '.join(map(str, missing))} not tried"] if missing else []
    if not ld:
        why.append("no LayerDrop dropout picked")
    return "not met", f"{said} ({'; '.join(why)})"


def converged_check(summaries: list[dict], where: str) -> tuple[str, str]:
    if not summaries:
        return "not measured", f"no {where} runs"
    still = [s for s in summaries if not converged(s)]  # the regime map's rule
    detail = (f"{len(still)} of {len(summaries)} {where} runs still improving at the end (best at the last "
              f"validation, and valid fell by {CONVERGED_GAIN:.0%} or more over the last fifth of the steps)"
              + (f" ({', '.join(sorted({str(s['steps']) for s in still}))} steps)" if still else ""))
    return ("not met" if still else "met"), detail


def seeds_check(records: list[dict], table: str) -> tuple[str, str]:
    if not records:
        return "not measured", f"no {table} runs"
    seeds: dict[str, set] = {}
    for r in records:
        seeds.setdefault(role_of(r, table), set()).add(r["config"].get("seed"))
    few = sorted(role for role, s in seeds.items() if len(s) < MIN_SEEDS)
    detail = ", ".join(f"{role} {len(s)}" for role, s in sorted(seeds.items()))
    return ("not met" if few else "met"), f"seeds per row: {detail}"


def depth_check(results: list, table: str, prefix: str) -> tuple[str, str]:
    """The table's 'depth matters' precondition from the claims page (judged by the noise rule)."""
    task_word = {"sum_": "summarisation", "qa_": "qa"}.get(prefix, "")
    found = [r for r in results if r.claim == "precondition" and r.artefact == table
             and "depth matters" in r.statement and task_word in r.statement]
    if not found:
        return "not measured", f"no full-depth vs half-depth-from-scratch rows in {table}"
    r = found[0]
    return {"held": "met", "not held": "not met"}.get(r.outcome, "inconclusive"), r.detail


def bleu_check(summaries: list[dict]) -> tuple[str, str]:
    scored = [s for s in summaries if s.get("full_test_bleu") is not None and s["layerdrop_p"] == 0]
    if not scored:
        return "not measured", "no scored baseline"
    best = max(scored, key=lambda s: s["full_test_bleu"])
    return ("met" if best["full_test_bleu"] >= BLEU_TARGET else "not met",
            f"best baseline {best['full_test_bleu']:.2f} test BLEU ({best['steps']} steps, {best['epochs']} epochs, "
            f"dropout {best['dropout']}, still improving: {'yes' if best['still_improving'] else 'no'}); "
            f"target {BLEU_TARGET:g}")


def task_checks(task: str, runs_dir: Path, scale: str, results: list) -> dict:
    name, record_task, regime_art, table, prefix = TASKS[task]
    regime = load_records(runs_dir, record_task, regime_art, scale)
    rows = table_runs(load_records(runs_dir, record_task, table, scale), table, prefix)
    searched, tabled = [run_summary(r) for r in regime], [run_summary(r) for r in rows]
    checks = {"dropout picked on valid": dropout_check(searched),
              "table runs converged": converged_check(tabled, table),
              "depth matters": depth_check(results, table, prefix),
              f"{MIN_SEEDS}+ seeds a row": seeds_check(rows, table)}
    if task == "mt":
        checks["translation works"] = bleu_check(searched + tabled)
    return {"task": task, "name": name, "regime": regime, "rows": rows, "checks": checks,
            "page": f"../{regime_art}/{regime_art}.md", "table": table}


def curves(tasks: list[dict], path: Path) -> None:
    shown = [t for t in tasks if t["regime"] or t["rows"]]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(4.5 * max(1, len(shown)), 3.8), squeeze=False)
    for ax, t in zip(axes[0], shown, strict=False):
        seen = set()
        for r in t["regime"] + t["rows"]:
            if r["run_key"] in seen:
                continue
            seen.add(r["run_key"])
            s = run_summary(r)
            curve = [p for p in r["train"].get("curve", []) if METRIC in p]
            if not curve:
                continue
            label = (role_of(r, t["table"]) or f"drop {s['dropout']} LD {s['layerdrop_p']}")
            ax.plot([p["tokens_seen"] / 1e6 for p in curve], [p[METRIC] for p in curve], lw=1,
                    ls="-" if role_of(r, t["table"]) else "--", label=f"{label} s{s['seed']}")
        ax.set_title(t["name"], fontsize=9)
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel("valid perplexity")
        ax.set_yscale("log")
        ax.legend(fontsize=5)
    save_figure(fig, path)
    plt.close(fig)


def stale_pages(tasks: list[dict], results_dir: Path, pretraining: list) -> list[str]:
    """Regime searches whose page is committed under ``results_dir`` but none of whose runs are in the record
    store (searches made before the store existed, whose records were lost with that session's run cache):
    their pages keep the numbers, which this overview cannot check again."""
    pages = [(t["name"], t["page"].split("/")[-2]) for t in tasks if not t["regime"]]
    if not pretraining:
        pages.append(("pretraining (Tables 4 and 7, Figures 3 and 8)", "regime_mlm"))
    lines = [f"- {name}: [`results/{folder}/`](../{folder}/{folder}.md)" for name, folder in pages
             if (results_dir / folder).is_dir()]
    # a search that runs again from the store keeps its earlier page beside the new one
    lines += [f"- {t['name']}, the earlier search: [`results/{folder}/{ARCHIVE}/`](../{folder}/{ARCHIVE}/{folder}.md)"
              for t in tasks if t["regime"] for folder in [t["page"].split("/")[-2]]
              if (results_dir / folder / ARCHIVE / f"{folder}.md").is_file()]
    return lines


def render(tasks: list[dict], scale: str, pretraining: list | None = None, stale: list[str] | None = None) -> str:
    records = [r for t in tasks for r in {x["run_key"]: x for x in t["regime"] + t["rows"]}.values()]
    names = list(dict.fromkeys(n for t in tasks for n in t["checks"]))  # every check, in first-seen order
    versions = sorted({r.get("code_version") or "unknown" for r in records})
    lines = ["# The cpu regime, task by task", "",
             f"Scale `{scale}`; written by `make regime` at commit {git_sha()} from {len(records)} run records "
             f"(code versions {', '.join(versions) or '-'}); machine {machines(records)}; "
             f"training time of these runs, summed: "
             f"{sum(train_seconds(r) for r in records) / 3600:.1f} h.", "",
             "What a verdict needs before it means anything, checked on the run records: the dropout picked on "
             "valid from {0.1, 0.2, 0.3} (and the LayerDrop rows' own, about 0.1 less as fairseq advises), the "
             "table's runs trained until valid stopped improving, depth mattering (the full-depth baseline beats a "
             "half-depth model trained from scratch beyond the noise, the claims page's precondition), "
             f"{MIN_SEEDS} seeds a row, and for translation a baseline at {BLEU_TARGET:g} test BLEU. Learning curves "
             "of every run: `curves.png` (dashed: regime search runs; solid: the table's rows).", "",
             "| task | " + " | ".join(names) + " | runs: search / table | page |",
             "|---|" + "---|" * len(names) + "---|---|"]
    for t in tasks:
        cells = [f"**{t['checks'][n][0]}**" if n in t["checks"] else "-" for n in names]
        lines.append(f"| {t['name']} | " + " | ".join(cells)
                     + f" | {len(t['regime'])} / {len(t['rows'])} | [{t['page'].split('/')[-1]}]({t['page']}) |")
    if pretraining:
        lines += ["", "Pretraining (Tables 4 and 7, Figures 3 and 8), `results/regime_mlm/`: does each probed encoder "
                  "read word order and beat the same encoder fine-tuned from scratch (`make tune-pretrain`)?", "",
                  "| encoder probed | outcome | what the probe found |", "|---|---|---|"]
        for r in pretraining:
            encoder = r.statement.removeprefix(TRANSFERS).split(" reads word order")[0]
            lines.append(f"| {encoder} | **{r.outcome}** | {r.detail} |")
    if not pretraining:
        lines += ["", "Pretraining (Tables 4 and 7, Figures 3 and 8): no probe runs in the record store "
                  "(`make tune-pretrain`)."]
    if stale:
        lines += ["", "Regime searches whose pages are committed but whose run records are not in the record store "
                  "(made before it existed; their records were lost with that session's run cache). Their pages "
                  "keep the numbers, with the code version that made them; this overview cannot check them again "
                  "(a task with no stored search reads *not measured* above until its runs are made again):", "",
                  *stale]
    lines += ["", "## The numbers behind each check", ""]
    for t in tasks:
        lines.append(f"### {t['name']}")
        lines.append("")
        lines += [f"- {n}: **{outcome}**. {detail}" for n, (outcome, detail) in t["checks"].items()]
        lines.append("")
    lines += ["Not met or not measured means the claims that rest on this task say little at this scale "
              "whatever their verdicts; `results/claims.md` lists them, preconditions first.", ""]
    return "\n".join(lines)


def build(runs_dir: Path, out: Path, scale: str) -> list[dict]:
    results, _ = claims.collect(runs_dir, scale)
    tasks = [task_checks(t, runs_dir, scale, results) for t in TASKS]
    pretraining = [r for r in results if r.claim == "precondition" and r.artefact == "regime_mlm"]
    write_text(out / "regime.md", render(tasks, scale, pretraining, stale_pages(tasks, out.parent, pretraining)))
    curves(tasks, out / "curves.png")
    return tasks


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.report.regime_overview",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    add_records_arg(parser)
    parser.add_argument("--out", type=Path, default=Path("results/regime"))
    args = parser.parse_args(argv)
    tasks = build(args.runs_dir, args.out, args.scale)
    print(f"wrote {args.out}/regime.md: {len(tasks)} tasks")


if __name__ == "__main__":
    main()
