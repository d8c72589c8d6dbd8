"""The cpu-scale regime search from its run records: ``results/regime_<task>/`` (``regime_<task>.md``,
``curves.png``, ``raw.csv``) for the LM (``regime_lm``, ``make tune-lm``), translation (``regime_mt``,
``make tune-mt``), summarisation and QA (``regime_sum``, ``regime_qa``, ``make tune-table3``). Every run tagged with the artefact is one point of the map: its settings, its learning
curve (valid perplexity against training tokens), where valid stopped improving, the weights it reports
(``select``), and what it scores at full depth (perplexity; for translation also test BLEU).

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
from layerdrop.report.verdict import RULE, judge  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

METRIC = "val/ppl"


def _layers(model: dict) -> str:
    """'6' for an LM, '6/6' (encoder/decoder) for a sequence-to-sequence model."""
    if "n_layers" in model:
        return str(model["n_layers"])
    return f"{model['encoder_layers']}/{model['decoder_layers']}"


def _epoch_tokens(record: dict) -> int | None:
    """Training tokens in one epoch: the LM's token cap or train split, or the target side of a pair set."""
    cfg, data = record["config"], record.get("data") or {}
    if cfg["data"].get("max_train_tokens"):
        return cfg["data"]["max_train_tokens"]
    train = (data.get("splits") or {}).get("train", {})
    if "tokens" in train:
        return train["tokens"]
    languages = data.get("languages") or []
    direction = cfg["data"].get("direction")
    target = direction.split("-")[1] if direction else (languages[1] if len(languages) == 2 else None)
    return train.get(f"{target}_tokens") if target else None


def _sides(layerdrop: dict) -> str | None:
    """None when every stack drops at ``p``; else each stack's own rate (``layerdrop.encoder_p`` /
    ``decoder_p``), e.g. 'encoder 0, decoder 0.2': such a run is another configuration, not a seed or a
    dropout of the uniform one."""
    enc, dec = layerdrop.get("encoder_p"), layerdrop.get("decoder_p")
    if enc is None and dec is None:
        return None
    p = layerdrop["p"]
    return f"encoder {p if enc is None else enc:g}, decoder {p if dec is None else dec:g}"


def ld_text(row: dict) -> str:
    """The LayerDrop column of a run: its rate, or each stack's rate when they differ."""
    return row["layerdrop_sides"] or f"{row['layerdrop_p']}"


def run_summary(record: dict) -> dict:
    cfg, train = record["config"], record["train"]
    curve = [p for p in train.get("curve", []) if METRIC in p]
    best = min(curve, key=lambda p: p[METRIC]) if curve else None
    full = max(record["eval"], key=lambda e: e["depth"]) if record["eval"] else {}
    data_tokens = _epoch_tokens(record)
    return {
        "run_key": record["run_key"], "seed": cfg.get("seed"), "layers": _layers(cfg["model"]),
        "norm": "pre" if cfg["model"].get("pre_norm", True) else "post",
        "dropout": cfg["model"]["dropout"], "layerdrop_p": cfg["layerdrop"]["p"],
        "layerdrop_sides": _sides(cfg["layerdrop"]),
        "train_tokens": data_tokens, "max_steps": (cfg.get("trainer") or {}).get("max_steps"), "steps": train["steps"],
        "tokens_seen": train["tokens_seen"],
        "epochs": round(train["tokens_seen"] / data_tokens, 1) if data_tokens else None,
        "select": (train.get("selected") or {}).get("rule", "final"),
        "best_step": best["step"] if best else None, "best_valid_ppl": best[METRIC] if best else None,
        "last_valid_ppl": curve[-1][METRIC] if curve else None,
        **curve_state(curve),
        "full_valid_ppl": full.get("valid_ppl"), "full_test_ppl": full.get("test_ppl"),
        "full_test_bleu": full.get("test_bleu"), "full_test_rougeL": full.get("test_rougeL"),
        "train_wall_s": train_seconds(record), "code_version": record.get("code_version"),
    }


def curve_state(curve: list[dict]) -> dict:
    """What ``converged`` reads from a valid-perplexity curve: whether its best point is its last
    (``still_improving``) and the ``last_fifth_gain``."""
    best = min(curve, key=lambda p: p[METRIC]) if curve else None
    return {"still_improving": bool(best and best["step"] == curve[-1]["step"]),
            "last_fifth_gain": last_fifth_gain(curve)}


def last_fifth_gain(curve: list[dict]) -> float | None:
    """How much valid perplexity fell over the last fifth of the run's steps (relative): near 0 when the
    run has converged for its schedule, large when more steps would still pay."""
    if len(curve) < 2:
        return None
    end = curve[-1]["step"]
    start = min(curve[:-1], key=lambda p: abs(p["step"] - 0.8 * end))  # a point before the last, however sparse
    return (start[METRIC] - curve[-1][METRIC]) / start[METRIC]


#: per task: the title, the make target, the test metric shown beside perplexity (record key, heading)
TASKS = {"lm": ("cpu LM regime search", "make tune-lm", None),
         "mt": ("cpu translation regime search", "make tune-mt", ("full_test_bleu", "test BLEU")),
         "sum": ("cpu summarisation regime search", "make tune-table3", ("full_test_rougeL", "test ROUGE-L")),
         "qa": ("cpu long-form QA regime search", "make tune-table3", ("full_test_rougeL", "test ROUGE-L"))}


def _depth_key(layers: str) -> int:
    return sum(int(n) for n in layers.split("/"))


def build(records: list[dict], out: Path, scale: str) -> None:
    tasks = sorted({r.get("task", "lm") for r in records})
    if len(tasks) != 1:
        raise ValueError(f"a regime report covers one task; these runs are of {tasks}")
    task = tasks[0]
    title, command, extra = TASKS[task]
    summary = {r["run_key"]: run_summary(r) for r in records}
    rows = sorted(summary.values(),
                  key=lambda r: (r["train_tokens"] or 0, r["layerdrop_p"], -_depth_key(r["layers"]), r["dropout"],
                                 r["seed"] or 0))
    write_csv(out / "raw.csv", rows, columns=list(rows[0]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record in records:
        row = summary[record["run_key"]]
        curve = [p for p in record["train"].get("curve", []) if METRIC in p]
        if curve:
            ax.plot([p["tokens_seen"] / 1e6 for p in curve], [p[METRIC] for p in curve], marker=".",
                    label=f"{row['layers']}L drop {row['dropout']} LD {ld_text(row)} seed {row['seed']}")
    ax.set_xlabel("training tokens (millions)" if task == "lm" else "training target tokens (millions)")
    ax.set_ylabel("valid perplexity (in-training, limit_val_batches)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: learning curves")
    save_figure(fig, out / "curves.png")
    plt.close(fig)

    extra_head = f" {extra[1]} |" if extra else ""
    lines = [f"# {title}", "", provenance(records, scale), "",
             f"Each row is one training run (`{command}`). *best valid* is the lowest in-training valid "
             "perplexity of its learning curve (`curves.png`) and the step it was reached at; *still improving* "
             "means that was the last validation, so the run had not converged. *full valid / test* score the "
             "weights the run reports (`select`) on the whole valid and test sets"
             + (f"; *{extra[1]}* is the same weights' generation score." if extra else "."), "",
             "*last fifth* is how much valid perplexity fell over the last 20% of the run's steps: near 0 when "
             "the run has converged for its schedule. *epochs* counts "
             + ("training tokens" if task == "lm" else "target tokens") + " seen against one pass over the "
             "training set.", "",
             "| layers | norm | dropout | LayerDrop | seed | train tokens | steps | epochs | best valid (step) | still improving "
             f"| last fifth | select | full valid | full test |{extra_head} train min | code |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if extra else "") + "---|---|"]
    for r in rows:
        gain = "-" if r["last_fifth_gain"] is None else f"{100 * r['last_fifth_gain']:.1f}%"
        tokens = "-" if r["train_tokens"] is None else f"{r['train_tokens']:,}"
        best = "-" if r["best_valid_ppl"] is None else f"{r['best_valid_ppl']:.1f} ({r['best_step']})"
        score = ""
        if extra:
            value = r[extra[0]]
            score = f" {'-' if value is None else f'{value:.2f}'} |"
        lines.append(
            f"| {r['layers']} | {r['norm']} | {r['dropout']} | {ld_text(r)} | {r['seed']} | {tokens} | {r['steps']} "
            f"| {r['epochs'] if r['epochs'] is not None else '-'} | {best} "
            f"| {'yes' if r['still_improving'] else 'no'} | {gain} | {r['select']} | {_num(r['full_valid_ppl'])} "
            f"| {_num(r['full_test_ppl'])} |{score} {r['train_wall_s'] / 60:.1f} | {r['code_version']} |")
    lines += ["", "## Dropout picked on valid (full depth)", "",
              "The baseline's dropout (LayerDrop 0), and the LayerDrop rows' own (fairseq's tip: about 0.1 less "
              "once LayerDrop is on), each the lowest full-model valid perplexity of its group (the best "
              "in-training valid perplexity, the reported checkpoint's, where a run scored no full valid split).",
              ""]
    picks = dropout_picks(rows)
    for g in picks:
        tried = ", ".join(f"{d}: {m:.1f} (n={n})" for d, (m, n) in sorted(g["tried"].items()))
        lines.append(f"- {g['layers']} layers{_norm_text(g['norm'])}, LayerDrop {ld_text(g)}, {g['train_tokens']:,} train tokens, at most "
                     f"{g['max_steps'] or 0:,} steps: dropout **{g['pick']}** (valid perplexity {tried})")
    if not picks:
        lines.append("- none yet: no group of runs differs only in dropout.")
    lines += regime_map(records, summary)
    lines += text_metric_curves(records, summary, out, title)
    lines += ["", "Raw numbers: `raw.csv`.", ""]
    write_text(out / f"regime_{task}.md", "\n".join(lines))


def _pruned_depth(model: dict) -> int:
    """The depth of the stack that pruning cuts: the LM's layers, the decoder of a seq2seq model."""
    return int(model["n_layers"] if "n_layers" in model else model["decoder_layers"])


def _valid_of(record: dict, strategy: str, depth: int) -> float | None:
    """Valid perplexity of a run's evaluated sub-network (``strategy`` at ``depth`` kept layers)."""
    row = next((e for e in record["eval"] if e["strategy"] == strategy and e["depth"] == depth), None)
    return row.get("valid_ppl") if row else None


def _best_group(runs: list[tuple[dict, dict]]) -> list[tuple[dict, dict]]:
    """Of (record, summary) pairs that differ in dropout, the seeds of the dropout with the lowest mean
    valid perplexity (the pick on valid)."""
    by_dropout: dict[float, list] = {}
    for pair in runs:
        if _valid(pair[1]) is not None:
            by_dropout.setdefault(pair[1]["dropout"], []).append(pair)
    if not by_dropout:
        return []
    return min(by_dropout.values(), key=lambda g: statistics.mean(_valid(s) for _, s in g))


def regime_map(records: list[dict], summary: dict[str, dict]) -> list[str]:
    """The map of regimes tried (train tokens x step budget): in each, whether its runs converged, whether
    depth matters (the full-depth baseline against half its depth trained from scratch), and what the
    paper's claims that rest on one regime do there: LayerDrop improves the full model (C7), and the
    LayerDrop model pruned every other layer to half depth matches the half-depth model from scratch (C2).
    Each row of a comparison is its group's dropout picked on valid; verdicts by the noise rule on full
    valid perplexity (in-training where a run scored no full valid split)."""
    regimes: dict[tuple, list[tuple[dict, dict]]] = {}
    for r in records:
        s = summary[r["run_key"]]
        regimes.setdefault((s["train_tokens"] or 0, s["max_steps"] or 0, s["norm"]), []).append((r, s))
    lines = ["", "## The map: what each regime does to the claims", "",
             "One line per regime tried (train tokens x step budget, and the norm placement where runs differ in it). "
             "*converged*: runs whose best validation was not their last, or whose valid perplexity fell less than 1% over the last fifth of their steps "
             "(the schedule annealed). *depth matters*: the full-depth baseline (LayerDrop 0) against half its depth "
             "trained from scratch; *C7*: the LayerDrop model against the baseline at full depth; *C2*: the "
             "LayerDrop model pruned every other layer to half depth, without fine-tuning, against the half-depth "
             "model from scratch (matches within 1%); *C1*: the LayerDrop model and the baseline, both pruned that "
             "way. *cost*: the compared rows' training wall time as recorded (it includes any time a run was paused), "
             "and 3 seeds of each. Valid perplexity; each side is the dropout picked on valid "
             f"in its group, its seeds averaged. Noise rule: {RULE}.", ""]
    for (tokens, budget, norm), runs in sorted(regimes.items()):
        full = max(_pruned_depth(r["config"]["model"]) for r, _ in runs)
        half = full // 2
        base = _best_group([(r, s) for r, s in runs
                            if s["layerdrop_p"] == 0 and _pruned_depth(r["config"]["model"]) == full])
        scratch = _best_group([(r, s) for r, s in runs
                               if s["layerdrop_p"] == 0 and _pruned_depth(r["config"]["model"]) == half])
        ld = _best_group([(r, s) for r, s in runs  # the paper's LayerDrop: every stack at p
                          if s["layerdrop_p"] > 0 and not s["layerdrop_sides"]
                          and _pruned_depth(r["config"]["model"]) == full])
        done = sum(converged(s) for _, s in runs)
        parts = [f"converged {done} of {len(runs)} runs"]
        valid = lambda group: [_valid(s) for _, s in group]  # noqa: E731
        if base and scratch:
            v = judge(valid(base), valid(scratch), higher_is_better=False)
            parts.append(f"depth matters ({full} vs {half} layers, {_mean(valid(base))} vs {_mean(valid(scratch))}): "
                         + _verdict(v))
        else:
            parts.append("depth matters: not measured (no " + ("half-depth run from scratch" if base else
                         "full-depth baseline") + ")")
        if base and ld:
            v = judge(valid(ld), valid(base), higher_is_better=False)
            parts.append(f"C7 (LayerDrop {ld[0][1]['layerdrop_p']} at dropout {ld[0][1]['dropout']}, "
                         f"{_mean(valid(ld))} vs {_mean(valid(base))}): " + _verdict(v))
        else:
            parts.append("C7: not measured (no " + ("LayerDrop run" if base else "baseline") + " at full depth)")
        pruned_base = [_valid_of(r, "every_other", half) for r, _ in base]
        pruned = [_valid_of(r, "every_other", half) for r, _ in ld]
        if ld and base and all(x is not None for x in pruned + pruned_base):
            v = judge(pruned, pruned_base, higher_is_better=False)
            parts.append(f"C1 (both pruned every other to {half} layers, {_mean(pruned)} vs {_mean(pruned_base)}): "
                         + _verdict(v))
        else:
            parts.append("C1: not measured (needs the LayerDrop run and the baseline both pruned every other to "
                         "half depth on valid)")
        if scratch and ld and all(x is not None for x in pruned):
            v = judge(pruned, valid(scratch), higher_is_better=False, kind="matches")
            parts.append(f"C2 ({_mean(pruned)} vs {_mean(valid(scratch))}): " + _verdict(v))
        else:
            parts.append("C2: not measured (needs the LayerDrop run pruned every other to half depth on valid, and "
                         "the half-depth run from scratch)")
        cost = regime_cost([g for g in (base, scratch, ld) if g])
        if cost:
            parts.append(cost)
        lines.append(f"- {tokens:,} train tokens, at most {budget:,} steps{_norm_text(norm)}: "
                     + "; ".join(parts) + ".")
    return lines


def converged(summary: dict) -> bool:
    """Converged for its schedule: valid stopped improving before the last validation, or fell less than
    1% over the last fifth of the steps (a cosine schedule that has annealed)."""
    gain = summary["last_fifth_gain"]
    return not summary["still_improving"] or (gain is not None and gain < CONVERGED_GAIN)


CONVERGED_GAIN = 0.01
SEEDS = 3


def regime_cost(groups: list[list[tuple[dict, dict]]]) -> str | None:
    """What deciding the claims in this regime costs on this machine: each compared row's mean training
    wall time, times the 3 seeds a deciding row needs."""
    minutes = [statistics.mean(s["train_wall_s"] for _, s in g) / 60 for g in groups]
    if not minutes:
        return None
    rows = ", ".join(f"{m:.0f}" for m in minutes)
    return (f"cost: {rows} min a run for the rows compared, so {SEEDS} seeds of each take "
            f"{SEEDS * sum(minutes) / 60:.1f} h")


def _norm_text(norm: str) -> str:
    """', post-norm' for a post-norm group (a different architecture, so a regime of its own); '' for pre-norm."""
    return ", post-norm" if norm == "post" else ""


def _verdict(v) -> str:
    """A verdict as "**held**: +9.1% +- 0.4% (seeds 3 vs 3)"."""
    return f"**{v.outcome}**{v.describe()[len(v.outcome):]}"


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):.1f}" + (f" (n={len(values)})" if len(values) > 1 else "")


def text_metric_curves(records: list[dict], summary: dict[str, dict], out: Path, title: str) -> list[str]:
    """For runs trained with ``generate.valid_sentences``: the text metric at every validation (``val/bleu``
    or ``val/rougeL``), plotted against training tokens (``metric_curves.png``) and tabulated by step."""
    runs = []
    for record in records:
        curve = record["train"].get("curve", [])
        name = next((k for k in ("val/bleu", "val/rougeL") if any(k in p for p in curve)), None)
        if name:
            runs.append((summary[record["run_key"]], name, [p for p in curve if name in p]))
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row, name, curve in runs:
        ax.plot([p["tokens_seen"] / 1e6 for p in curve], [p[name] for p in curve], marker=".",
                label=f"{row['layers']}L drop {row['dropout']} LD {ld_text(row)} seed {row['seed']}, "
                      f"{row['max_steps']:,} steps")
    ax.set_xlabel("training target tokens (millions)")
    ax.set_ylabel(f"{runs[0][1]} on a fixed valid subset (in training)")
    ax.legend(fontsize=7)
    ax.set_title(f"{title}: text metric during training")
    save_figure(fig, out / "metric_curves.png")
    plt.close(fig)
    lines = ["", "## The text metric during training", "",
             "Runs trained with `generate.valid_sentences=N` beam-search the same seeded N valid sentences at every "
             "validation (fp32, the evaluation settings); the score shows when generation, not just perplexity, "
             "stops improving (`metric_curves.png`). It is measured on valid, so it can differ from test.", ""]
    for row, name, curve in runs:
        best = max(curve, key=lambda p: p[name])
        points = ", ".join(f"{p['step']}: {p[name]:.2f}" for p in curve)
        lines.append(f"- {row['layers']} layers, dropout {row['dropout']}, LayerDrop {ld_text(row)}, seed "
                     f"{row['seed']}, at most {row['max_steps']:,} steps (`{row['run_key']}`): best {name} "
                     f"**{best[name]:.2f}** at step {best['step']}; by step: {points}")
    return lines


def dropout_picks(rows: list[dict]) -> list[dict]:
    """Per group of runs that differ only in dropout (same train tokens, step budget, layers, LayerDrop rate):
    the dropout with the lowest mean valid perplexity (``_valid``), and every dropout tried: {dropout: (mean, runs)}."""
    def group(r: dict) -> tuple:
        return (r["train_tokens"] or 0, r.get("max_steps") or 0, r["layers"], r.get("norm", "pre"), r["layerdrop_p"],
                r.get("layerdrop_sides") or "")

    picks = []
    for key in sorted({group(r) for r in rows}):
        tokens, budget, layers, norm, p, sides = key
        by_dropout: dict[float, list[float]] = {}
        for r in rows:
            if group(r) == key and _valid(r) is not None:
                by_dropout.setdefault(r["dropout"], []).append(_valid(r))
        if len(by_dropout) < 2:
            continue  # nothing was picked in this group
        tried = {d: (statistics.mean(v), len(v)) for d, v in by_dropout.items()}
        picks.append({"train_tokens": tokens, "max_steps": budget, "layers": layers, "norm": norm, "layerdrop_p": p,
                      "layerdrop_sides": sides or None,
                      "tried": tried, "pick": min(tried, key=lambda d: tried[d][0])})
    return picks


def _valid(row: dict) -> float | None:
    """What a dropout is picked on: the full valid perplexity, else the reported checkpoint's in-training one."""
    return row["full_valid_ppl"] if row["full_valid_ppl"] is not None else row["best_valid_ppl"]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"

