"""The cpu-scale regime search from its run records: ``results/regime_lm/`` (``regime_lm.md``,
``curves.png``, ``raw.csv``). Every run tagged ``artefact=regime_lm`` (``make tune-lm``) is one point of
the map: its settings, its learning curve (valid perplexity against training tokens), where valid
stopped improving, the weights it reports (``select``), and what it scores at full depth.

The baseline's dropout is picked on valid, as the paper tuned its regularisation: the LayerDrop-0 run
with the lowest reported valid perplexity, per training budget."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import save_figure, write_csv, write_text  # noqa: E402
from layerdrop.report.figures import provenance  # noqa: E402

METRIC = "val/ppl"


def run_summary(record: dict) -> dict:
    cfg, train = record["config"], record["train"]
    curve = [p for p in train.get("curve", []) if METRIC in p]
    best = min(curve, key=lambda p: p[METRIC]) if curve else None
    full = max(record["eval"], key=lambda e: e["depth"]) if record["eval"] else {}
    data_tokens = cfg["data"].get("max_train_tokens") or (record.get("data") or {}).get("splits", {}).get(
        "train", {}).get("tokens")
    return {
        "run_key": record["run_key"], "seed": cfg.get("seed"), "n_layers": cfg["model"]["n_layers"],
        "dropout": cfg["model"]["dropout"], "layerdrop_p": cfg["layerdrop"]["p"],
        "train_tokens": data_tokens, "steps": train["steps"], "tokens_seen": train["tokens_seen"],
        "epochs": round(train["tokens_seen"] / data_tokens, 1) if data_tokens else None,
        "select": (train.get("selected") or {}).get("rule", "final"),
        "best_step": best["step"] if best else None, "best_valid_ppl": best[METRIC] if best else None,
        "last_valid_ppl": curve[-1][METRIC] if curve else None,
        "still_improving": bool(best and curve and best["step"] == curve[-1]["step"]),
        "last_fifth_gain": last_fifth_gain(curve),
        "full_valid_ppl": full.get("valid_ppl"), "full_test_ppl": full.get("test_ppl"),
        "train_wall_s": train["wall_s"], "code_version": record.get("code_version"),
    }


def last_fifth_gain(curve: list[dict]) -> float | None:
    """How much valid perplexity fell over the last fifth of the run's steps (relative): near 0 when the
    run has converged for its schedule, large when more steps would still pay."""
    if len(curve) < 2:
        return None
    end = curve[-1]["step"]
    start = min(curve, key=lambda p: abs(p["step"] - 0.8 * end))
    return (start[METRIC] - curve[-1][METRIC]) / start[METRIC]


def build(records: list[dict], out: Path, scale: str) -> None:
    rows = sorted((run_summary(r) for r in records),
                  key=lambda r: (r["train_tokens"] or 0, r["layerdrop_p"], -r["n_layers"], r["dropout"], r["seed"] or 0))
    write_csv(out / "raw.csv", rows, columns=list(rows[0]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record in records:
        row = run_summary(record)
        curve = [p for p in record["train"].get("curve", []) if METRIC in p]
        if curve:
            ax.plot([p["tokens_seen"] / 1e6 for p in curve], [p[METRIC] for p in curve], marker=".",
                    label=f"{row['n_layers']}L drop {row['dropout']} LD {row['layerdrop_p']} seed {row['seed']}")
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel("valid perplexity (in-training, limit_val_batches)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("cpu LM regime search: learning curves")
    save_figure(fig, out / "curves.png")
    plt.close(fig)

    lines = ["# cpu LM regime search", "", provenance(records, scale), "",
             "Each row is one training run (`make tune-lm`). *best valid* is the lowest in-training valid "
             "perplexity of its learning curve (`curves.png`) and the step it was reached at; *still improving* "
             "means that was the last validation, so the run had not converged. *full valid / test* score the "
             "weights the run reports (`select`) on the whole valid and test sets.", "",
             "*last fifth* is how much valid perplexity fell over the last 20% of the run's steps: near 0 when "
             "the run has converged for its schedule.", "",
             "| layers | dropout | LayerDrop | seed | train tokens | steps | epochs | best valid (step) | still improving "
             "| last fifth | select | full valid | full test | train min | code |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = "-" if r["last_fifth_gain"] is None else f"{100 * r['last_fifth_gain']:.1f}%"
        lines.append(
            f"| {r['n_layers']} | {r['dropout']} | {r['layerdrop_p']} | {r['seed']} | {r['train_tokens']:,} | {r['steps']} "
            f"| {r['epochs']} | {r['best_valid_ppl']:.1f} ({r['best_step']}) | {'yes' if r['still_improving'] else 'no'} "
            f"| {gain} | {r['select']} | {r['full_valid_ppl']:.1f} | {r['full_test_ppl']:.1f} | "
            f"{r['train_wall_s'] / 60:.1f} | {r['code_version']} |")
    lines += ["", "## Dropout picked on valid (full depth)", "",
              "The baseline's dropout (LayerDrop 0), and the LayerDrop rows' own (fairseq's tip: about 0.1 less "
              "once LayerDrop is on), each the lowest full-model valid perplexity of its group.", ""]
    budgets = sorted({(r["train_tokens"], r["n_layers"], r["layerdrop_p"]) for r in rows})
    for tokens, layers, p in budgets:
        cands = [r for r in rows if r["layerdrop_p"] == p and r["train_tokens"] == tokens and r["n_layers"] == layers]
        if len({r["dropout"] for r in cands}) < 2:
            continue  # nothing was picked in this group
        by_dropout: dict[float, list[float]] = {}
        for r in cands:
            by_dropout.setdefault(r["dropout"], []).append(r["full_valid_ppl"])
        means = {d: statistics.mean(v) for d, v in by_dropout.items()}
        pick = min(means, key=means.get)
        tried = ", ".join(f"{d}: {m:.1f} (n={len(by_dropout[d])})" for d, m in sorted(means.items()))
        lines.append(f"- {layers} layers, LayerDrop {p}, {tokens:,} train tokens: dropout **{pick}** (valid "
                     f"perplexity {tried})")
    lines += ["", "Raw numbers: `raw.csv`.", ""]
    write_text(out / "regime_lm.md", "\n".join(lines))
