"""Table 3 (summarisation and long-form QA, ROUGE) and Figure 2's summarisation panel, from run records.

Each run records its row (``roles.table3``, from ``role=`` in experiments/table3.sh): ``sum_baseline``,
``sum_layerdrop``, ``sum_deep_layerdrop`` (a deeper decoder, the paper's 6/8) and ``sum_scratch`` (a
shallower decoder trained from scratch, one per depth) for summarisation; ``qa_baseline`` and
``qa_layerdrop`` for long-form QA. Runs of one role with different seeds are averaged (mean ± sample
std, n). The claims are judged on ROUGE-L, the metric a layer search on these tasks maximises.
"""

from __future__ import annotations

from pathlib import Path

from layerdrop.report.collect import (
    aggregate,
    code_version_of,
    decoder_panel,
    decoder_rows,
    depth_verdicts,
    mean_text,
    read_csv,
    role_of,
    seed_values,
    seeds_note,
    versus,
    write_csv,
    write_text,
)
from layerdrop.report.curves import learning_lag
from layerdrop.report.verdict import RULE, ClaimResult, judge, resolution
from layerdrop.utils.machine import machines
from layerdrop.utils.store import train_seconds

ROUGE = ("test_rouge1", "test_rouge2", "test_rougeL", "test_rougeLsum")
COLUMNS = ["run_key", "scale", "task", "role", "seed", "encoder_layers", "decoder_layers", "layerdrop_p", "stack",
           "strategy", "kept_layers", "layers", "n_params", *ROUGE, "test_loss", "test_ppl", "test_sentences",
           "test_sentences_per_s", "beam", "lenpen", "min_len", "max_len_b", "no_repeat_ngram", "steps",
           "tokens_seen", "train_wall_s", "final_train_loss", "best_valid_loss", "git_sha", "code_version"]
KEYS = ("task", "role", "encoder_layers", "decoder_layers", "stack", "strategy", "kept_layers", "layers")
METRICS = (*ROUGE, "test_loss", "test_ppl", "final_train_loss")
CLAIM_METRIC = "test_rougeL"
TASK_NAMES = {"sum": "Summarization", "qa": "Long-form QA"}
#: (task, baseline role, LayerDrop role): the pairs whose learning speed the page compares
LAG_PAIRS = (("summarisation", "sum_baseline", "sum_layerdrop"), ("long-form QA", "qa_baseline", "qa_layerdrop"))


def tidy_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        cfg, train = r["config"], r["train"]
        curve = [p["val/loss"] for p in train.get("curve", []) if "val/loss" in p]
        for e in r["eval"]:
            gen = e.get("generate", {})
            rows.append({
                "run_key": r["run_key"], "scale": r["scale"], "task": r["task"], "role": role_of(r, "table3"),
                "seed": cfg.get("seed"), "encoder_layers": cfg["model"]["encoder_layers"],
                "decoder_layers": cfg["model"]["decoder_layers"], "layerdrop_p": cfg["layerdrop"]["p"],
                "stack": e.get("stack", "decoder"), "strategy": e["strategy"], "kept_layers": e["depth"],
                "layers": " ".join(map(str, e["layers"])), "n_params": e["n_params"],
                **{k: e.get(k) for k in (*ROUGE, "test_loss", "test_ppl", "test_sentences", "test_sentences_per_s")},
                "beam": gen.get("beam"), "lenpen": gen.get("lenpen"), "min_len": gen.get("min_len", 1),
                "max_len_b": gen.get("max_len_b"), "no_repeat_ngram": gen.get("no_repeat_ngram", 0),
                "steps": train["steps"], "tokens_seen": train["tokens_seen"], "train_wall_s": train_seconds(r),
                "final_train_loss": train.get("final", {}).get("train/loss"),
                "best_valid_loss": min(curve) if curve else None,
                "git_sha": r.get("git_sha"), "code_version": code_version_of(r),
            })
    return sorted(rows, key=lambda x: (x["task"], x["role"] or "", x["decoder_layers"], x["strategy"],
                                       x["kept_layers"], x["layers"], x["seed"] or 0))


def full(rows: list[dict], role: str) -> dict | None:
    match = [r for r in rows if r["role"] == role and r["strategy"] == "none"]
    return match[0] if match else None


def scratch(rows: list[dict]) -> dict[int, dict]:
    """decoder depth -> full row of a summarisation model trained from scratch with that decoder."""
    return dict(sorted((r["decoder_layers"], r) for r in rows if r["role"] == "sum_scratch" and r["strategy"] == "none"))


def claim_rows(rows: list[dict]) -> list[ClaimResult]:
    """The claims Table 3 and its Figure 2 panel test (C7, C8, C1, C2), by the noise rule on test ROUGE-L."""
    out = []

    def add(claim, statement, verdict, detail):
        out.append(ClaimResult.of(claim, "table3", statement, verdict, detail))

    def vs(a, b):
        return versus(a, b, CLAIM_METRIC)

    base, from_scratch = full(rows, "sum_baseline"), scratch(rows)
    if base and from_scratch:  # the claims about depth say little where depth does not matter
        d = min(from_scratch)
        v = judge(seed_values(base, CLAIM_METRIC), seed_values(from_scratch[d], CLAIM_METRIC), higher_is_better=True,
                  resolution=resolution(CLAIM_METRIC))
        add("precondition", f"depth matters: the {base['decoder_layers']}-layer summarisation decoder beats {d} layers "
            "trained from scratch", v, f"test ROUGE-L {vs(base, from_scratch[d])} (test ppl "
            f"{versus(base, from_scratch[d], 'test_ppl')}); {v.describe()}.")
    for task, paper in (("sum", "40.5 vs 40.1 ROUGE-1, CNN/DM"), ("qa", "29.4 vs 28.9 ROUGE-1, ELI5")):
        base, ld = full(rows, f"{task}_baseline"), full(rows, f"{task}_layerdrop")
        if base and ld:
            v = judge(seed_values(ld, CLAIM_METRIC), seed_values(base, CLAIM_METRIC), higher_is_better=True,
                      resolution=resolution(CLAIM_METRIC))
            add("C7", f"LayerDrop improves the {TASK_NAMES[task].lower()} Transformer (paper {paper})", v,
                f"test ROUGE-L {vs(ld, base)}; {v.describe()}.")
    ld, deep = full(rows, "sum_layerdrop"), full(rows, "sum_deep_layerdrop")
    if ld and deep:
        v = judge(seed_values(deep, CLAIM_METRIC), seed_values(ld, CLAIM_METRIC), higher_is_better=True,
                  resolution=resolution(CLAIM_METRIC))
        add("C8", f"a {deep['decoder_layers']}-layer decoder with LayerDrop beats the {ld['decoder_layers']}-layer one "
            "(paper 41.1 vs 40.5 ROUGE-1)", v, f"test ROUGE-L {vs(deep, ld)}; {v.describe()}.")
    if ld:
        dec = ld["decoder_layers"]
        ld_curve = {d: r for d, r in decoder_rows(rows, "sum_layerdrop").items() if d < dec}
        base_curve = {d: r for d, r in decoder_rows(rows, "sum_baseline").items() if d < dec}
        if any(d in base_curve for d in ld_curve):
            add("C1", "summarisation decoder pruned every other layer without fine-tuning: LayerDrop beats the pruned "
                "baseline at every depth", *depth_verdicts(ld_curve, base_curve, CLAIM_METRIC, True, "decoder layers"))
        from_scratch = scratch(rows)
        if any(d in ld_curve for d in from_scratch):
            add("C2", "the pruned LayerDrop summariser matches or beats a decoder of that depth trained from scratch",
                *depth_verdicts(ld_curve, from_scratch, CLAIM_METRIC, True, "decoder layers", kind="matches"))
    return out


STILL_IMPROVING = 0.005  # a run whose last validation beat the one before by more than this has not converged


def cautions(rows: list[dict], records: list[dict]) -> list[str]:
    """What limits the verdicts, computed from the runs: depth that barely matters, runs still improving."""
    out = []
    base, from_scratch = full(rows, "sum_baseline"), scratch(rows)
    if base and from_scratch:
        d = min(from_scratch)
        gain = base[CLAIM_METRIC] / from_scratch[d][CLAIM_METRIC] - 1
        if gain < 0.05:
            out.append(f"Caution: depth barely matters at this scale: the {base['decoder_layers']}-layer decoder beats "
                       f"{d} layers trained from scratch by {100 * gain:+.1f}% ROUGE-L, and the claims about pruning "
                       "and depth (C1, C2, C8) say little here.")
    improving = []
    for r in records:
        curve = [p["val/loss"] for p in r["train"].get("curve", []) if "val/loss" in p]
        if len(curve) >= 2 and curve[-1] < curve[-2] * (1 - STILL_IMPROVING):
            improving.append(f"{(r.get('roles') or {}).get('table3', r['run_key'])} "
                             f"({100 * (1 - curve[-1] / curve[-2]):.1f}%)")
    if improving:
        out.append(f"Caution: {len(improving)} of {len(records)} runs were still improving at their last validation "
                   f"(valid loss down by more than {100 * STILL_IMPROVING:g}% over the last interval): "
                   + ", ".join(sorted(improving)) + ". They stopped at the step budget, not at convergence.")
    return [""] + out if out else []


def _task_caption(records: list[dict], rows: list[dict], task: str) -> str:
    runs = [r for r in records if r["task"] == task]
    if not runs:
        return f"- {TASK_NAMES[task]}: not run."
    data = runs[0].get("data") or {}
    source = (data.get("provenance") or {}).get("source", "?")
    splits = data.get("splits") or {}
    sizes = ", ".join(f"{k} {v.get('pairs', '?'):,}" for k, v in splits.items() if isinstance(v, dict))
    gen = next((r for r in rows if r["task"] == task and r["beam"] is not None), {})
    steps = "/".join(map(str, sorted({r["train"]["steps"] for r in runs})))
    wall = sum(train_seconds(r) for r in runs) / 60
    stand_in = {"sum": "a stand-in for CNN/DailyMail: Debian package description -> one-line synopsis (extreme "
                       "summarisation, like XSum)",
                "qa": "a stand-in for ELI5: \"What is X?\" -> a FOLDOC or Jargon File definition (template "
                      "questions, real multi-sentence answers)"}
    return (f"- {TASK_NAMES[task]}: data `{source}`, {stand_in[task] if 'debian' in source else 'the paper data'}; "
            f"pairs {sizes}; {len(runs)} runs of {steps} "
            f"steps, {wall:.1f} min of training; test ROUGE on {gen.get('test_sentences', '?')} test pairs by beam "
            f"search (beam {gen.get('beam', '?')}, length penalty {gen.get('lenpen', '?')}, {gen.get('min_len', 1)}-"
            f"{gen.get('max_len_b', '?')} tokens, {gen.get('no_repeat_ngram', 0)}-gram blocking).")


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str) -> str:
    lines = ["# Table 3: summarisation and long-form question answering with LayerDrop", "",
             f"Scale `{scale}`; machine: {machines(records)}. ROUGE F1 x100 by `rouge-score` with stemming (ROUGE-Lsum on sentences "
             "split one a line), mean over test pairs." + seeds_note(rows), ""]
    lines += [_task_caption(records, rows, task) for task in TASK_NAMES]
    lines += ["", "| Task | Model | Enc | Dec | Params | ROUGE-1 | ROUGE-2 | ROUGE-L | ROUGE-Lsum | test ppl | "
              "Paper: R-1 / R-2 / R-L |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    paper_by_row = {p["row"]: p for p in paper}
    spec = [("sum_baseline", "Transformer"), ("sum_layerdrop", "+ LayerDrop{p}"),
            ("sum_deep_layerdrop", "+ LayerDrop{p}, deeper decoder"), ("qa_baseline", "Transformer"),
            ("qa_layerdrop", "+ LayerDrop{p}")]
    for role, name in spec:
        r, pp = full(rows, role), paper_by_row[role]
        task = TASK_NAMES[role.split("_")[0]]
        if r:
            ours = (f"{r['encoder_layers']} | {r['decoder_layers']} | {r['n_params'] / 1e6:.2f}M | "
                    + " | ".join(mean_text(r, m) for m in ROUGE) + f" | {mean_text(r, 'test_ppl')}")
        else:
            ours = "- | - | not run | - | - | - | - | -"
        paper_cells = f"{pp['rouge1']} / {pp['rouge2']} / {pp['rougeL']} ({pp['encoder_layers']}/{pp['decoder_layers']})"
        name = name.format(p=f" {r['layerdrop_p']}" if r and r["layerdrop_p"] else "")
        lines.append(f"| {task} | {name} | {ours} | {paper_cells} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 3 (CNN/DailyMail and ELI5 test sets), for comparison only: "
              "the data here are stand-ins of another kind and size, so only the direction of each difference "
              "can be compared.", "", "## Did the paper's claims hold at this scale?", "", f"Noise rule: {RULE}.", ""]
    lines += [c.line() for c in claim_rows(rows)] or ["No pair of rows to compare yet."]
    lines += cautions(rows, records)
    lines += learning_lag(records, "table3", LAG_PAIRS)
    lines += ["", "## Figure 2, summarisation panel: test ROUGE-L (and test perplexity) by kept decoder layers", "",
              "The encoder keeps all its layers.", "",
              "| kept decoder layers | LayerDrop, pruned | baseline, pruned | trained from scratch | "
              "ppl: LayerDrop | ppl: baseline | ppl: scratch |", "|---|---|---|---|---|---|---|"]
    curves = []
    for metric in (CLAIM_METRIC, "test_ppl"):
        curves += [{d: r[metric] for d, r in decoder_rows(rows, "sum_layerdrop").items()},
                   {d: r[metric] for d, r in decoder_rows(rows, "sum_baseline").items()},
                   {d: r[metric] for d, r in scratch(rows).items()}]
    for d in sorted(set().union(*curves)):
        lines.append(f"| {d} | " + " | ".join(f"{c[d]:.2f}" if d in c else "-" for c in curves) + " |")
    lines += ["", "Figure: `figure2_sum.png`; raw numbers: `raw.csv` (every run x pruned depth); learning curves: "
              "`curves.png`.", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, scale: str) -> None:
    ld = full(rows, "sum_layerdrop") or full(rows, "sum_baseline")
    points = {d: r[CLAIM_METRIC] for d, r in scratch(rows).items()}
    base = full(rows, "sum_baseline")
    if base:
        points[base["decoder_layers"]] = base[CLAIM_METRIC]
    curves = [(label, style, {d: r[CLAIM_METRIC] for d, r in decoder_rows(rows, role).items()})
              for role, label, style in [("sum_layerdrop", "LayerDrop, pruned every-other", "o-"),
                                         ("sum_baseline", "baseline (p=0), pruned every-other", "s--")]]
    xlabel = (f"kept decoder layers (of {ld['decoder_layers']}; encoder {ld['encoder_layers']} layers kept)" if ld
              else "kept decoder layers")
    decoder_panel(path, curves, points, xlabel, "test ROUGE-L", f"Figure 2, summarisation panel ({scale} scale)")


def build(records: list[dict], out_dir: Path, paper_csv: Path, scale: str) -> None:
    """``records``: the runs (of both tasks) holding a role in table3 (``collect.select_roles``)."""
    raw = tidy_rows(records)
    rows = aggregate(raw, KEYS, METRICS)
    write_csv(out_dir / "raw.csv", raw, COLUMNS)
    write_text(out_dir / "table3.md", table_markdown(rows, records, read_csv(paper_csv), scale))
    figure(rows, out_dir / "figure2_sum.png", scale)
