"""Does a deep post-norm model train at a learning rate, with and without LayerDrop (claim C8's precondition):
``results/stability_mt/`` (``stability_mt.md``, ``curves.png``, ``raw.csv``) from the runs tagged
``stability_mt`` (``make tune-mt-stability``).

The paper says the 12-encoder Transformer without LayerDrop diverges and the one with it trains. A cpu model
can only show that at a learning rate where something trains: the probe runs the first steps of Table 1's
schedule at several peak rates, and this page says, for each rate, which of the two trained. The rule
(``outcome``) is stated on the page; the valid curves show every point it read."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import save_figure, write_csv, write_text  # noqa: E402
from layerdrop.report.figures import provenance  # noqa: E402
from layerdrop.report.regime import METRIC, _layers, _sides  # noqa: E402
from layerdrop.report.verdict import MIN_SEEDS, ClaimResult  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

#: a run "blew up" when its last valid perplexity is this many times its best earlier one
BLOWUP = 2.0
#: a run "stalled" when its last valid perplexity is not below this fraction of its first one
STALL = 0.5
RULE = (f"*fails* when a loss is not finite (*not finite*), the last valid perplexity is at least the "
        f"vocabulary size (*uniform*: no better than a uniform guess), it is more than {BLOWUP:g}x the best "
        f"earlier one (*got worse*), or it is not below {STALL:g}x the first validation's (*stalled*: it stopped "
        "learning, say at the unigram level, without blowing up); otherwise *trains*")


def outcome(curve: list[float], final_train_loss: float | None, vocab: int) -> str:
    """'trains' or 'fails: <why>' by RULE, from the valid perplexities in order and the last training loss."""
    if not curve:
        raise ValueError("a stability run without a valid curve: train with trainer.val_check_interval set")
    if final_train_loss is None or not math.isfinite(final_train_loss) or not all(map(math.isfinite, curve)):
        return "fails: not finite"
    last = curve[-1]
    if last >= vocab:
        return "fails: uniform"
    if len(curve) > 1 and last > BLOWUP * min(curve[:-1]):
        return "fails: got worse"
    if len(curve) > 1 and last >= STALL * curve[0]:
        return "fails: stalled"
    return "trains"


def failed(result: str) -> bool:
    return result.startswith("fails")


def run_summary(record: dict) -> dict:
    cfg, train = record["config"], record["train"]
    curve = [p for p in train.get("curve", []) if METRIC in p]
    final = train.get("final") or {}
    valid = [p[METRIC] for p in curve]
    return {
        "run_key": record["run_key"], "layers": _layers(cfg["model"]),
        "norm": "pre" if cfg["model"].get("pre_norm", True) else "post",
        "lr": cfg["optim"]["optimizer"]["lr"], "warmup": cfg["optim"]["scheduler"]["warmup_steps"],
        "schedule_steps": cfg["optim"]["scheduler"]["total_steps"], "steps": train["steps"],
        "layerdrop_p": cfg["layerdrop"]["p"], "layerdrop_sides": _sides(cfg["layerdrop"]),
        "dropout": cfg["model"]["dropout"], "seed": cfg.get("seed"),
        "valid_curve": " ".join(f"{p['step']}:{p[METRIC]:.1f}" for p in curve),
        "final_train_loss": final.get("train/loss"),
        "outcome": outcome(valid, final.get("train/loss"), cfg["model"]["vocab_size"]),
        "train_wall_s": train_seconds(record),
    }


def _state(outcomes: list[str]) -> str:
    """'trains' or 'fails' when every seed agrees, else 'mixed'."""
    fails = sum(map(failed, outcomes))
    return "fails" if fails == len(outcomes) else "trains" if fails == 0 else "mixed"


def pairs(rows: list[dict]) -> dict[tuple, tuple[list[str], list[str]]]:
    """(layers, norm, learning rate, steps) -> (the baseline runs' outcomes, the LayerDrop runs' outcomes), for
    every setting that has both."""
    out = {}
    for key in sorted({(r["layers"], r["norm"], r["lr"], r["steps"]) for r in rows}):
        group = [r for r in rows if (r["layers"], r["norm"], r["lr"], r["steps"]) == key]
        base = [r["outcome"] for r in group if r["layerdrop_p"] == 0]
        ld = [r["outcome"] for r in group if r["layerdrop_p"] > 0]
        if base and ld:
            out[key] = (base, ld)
    return out


#: (baseline, LayerDrop) states of a rate whose seeds agree -> what the pair shows
PATTERNS = {("fails", "trains"): "the paper's pattern: without LayerDrop it fails, with LayerDrop it trains",
            ("trains", "trains"): "both train: no instability for LayerDrop to cure at this rate",
            ("fails", "fails"): "both fail: the rate is too high for this model either way",
            ("trains", "fails"): "the opposite of the paper's pattern: LayerDrop fails where the baseline trains"}


def verdicts(rows: list[dict]) -> list[str]:
    """One line per (layers, norm, learning rate, steps) that has both a LayerDrop 0 and a LayerDrop > 0 run;
    seeds of a row must agree, or the line says the seeds disagree."""
    lines = []
    for key, (base, ld) in pairs(rows).items():
        what = PATTERNS.get((_state(base), _state(ld)), "the seeds disagree: inconclusive")
        lines.append(f"- {key[0]} layers, {key[1]}-norm, peak lr {key[2]:g}, {key[3]:,} steps: "
                     f"baseline {'/'.join(base)}, LayerDrop {'/'.join(ld)} "
                     f"({len(base)} and {len(ld)} seed{'s' if max(len(base), len(ld)) > 1 else ''}): {what}.")
    return lines or ["- none yet: no learning rate has both a baseline and a LayerDrop run."]


def build(records: list[dict], out: Path, scale: str) -> None:
    summaries = [run_summary(r) for r in records]
    rows = sorted(summaries, key=lambda r: (r["layers"], r["norm"], -r["lr"], r["layerdrop_p"], r["seed"] or 0))
    write_csv(out / "raw.csv", rows, columns=list(rows[0]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record, row in zip(records, summaries):
        curve = [p for p in record["train"].get("curve", []) if METRIC in p]
        ax.plot([p["step"] for p in curve], [p[METRIC] for p in curve], marker=".",
                linestyle="-" if row["layerdrop_p"] == 0 else "--",
                label=f"{row['layers']} {row['norm']}-norm lr {row['lr']:g} LD {row['layerdrop_p']} seed {row['seed']}")
    ax.set_xlabel("training step")
    ax.set_ylabel("valid perplexity (in-training)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title("Deep post-norm translation: does it train? (cpu probe)")
    save_figure(fig, out / "curves.png")
    plt.close(fig)
    lines = ["# Does the deep model train? LayerDrop and learning rate (claim C8's precondition)", "",
             provenance(records, scale), "",
             "Each row is one training run of `make tune-mt-stability`: the first steps of a longer cosine "
             "schedule (*schedule* steps; the learning rate follows it exactly), validated on a fixed part of "
             "valid. Outcome: " + RULE + ". A rate's line below needs every seed of a row to agree. What the "
             "page shows is a probe of where each model can train over the first steps; the claims page judges C8's "
             "divergence half from it (3 agreeing seeds of each row at every rate), and Table 1's deep rows "
             "(`results/table1/`) test the fully trained comparison.", "",
             "| layers | norm | peak lr | warmup | LayerDrop | dropout | seed | steps / schedule | valid perplexity "
             "(step:ppl) | last train loss | outcome | train min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        loss = "-" if r["final_train_loss"] is None else f"{r['final_train_loss']:.2f}"
        lines.append(f"| {r['layers']} | {r['norm']} | {r['lr']:g} | {r['warmup']} | "
                     f"{r['layerdrop_sides'] or r['layerdrop_p']} | {r['dropout']} | {r['seed']} | "
                     f"{r['steps']:,} / {r['schedule_steps']:,} | {r['valid_curve']} | {loss} | **{r['outcome']}** "
                     f"| {r['train_wall_s'] / 60:.1f} |")
    lines += ["", "## At each learning rate", ""] + verdicts(rows) + ["", "Raw numbers: `raw.csv`.", ""]
    write_text(out / "stability_mt.md", "\n".join(lines))


def claims(records: list[dict]) -> list[ClaimResult]:
    """C8's divergence half as the probe tests it: *held* when at some rate the baseline fails and LayerDrop
    trains, with every one of at least MIN_SEEDS seeds of each agreeing; *not held* when at every rate where
    LayerDrop trains (so agreeing, MIN_SEEDS seeds) the baseline trains too; else *inconclusive*."""
    rates = {key: (_state(base), _state(ld), min(len(base), len(ld)))
             for key, (base, ld) in pairs([run_summary(r) for r in records]).items()}
    if not rates:
        return []
    seeded = {k: v for k, v in rates.items() if v[2] >= MIN_SEEDS}
    if any(v[:2] == ("fails", "trains") for v in seeded.values()):
        verdict = "held"
    elif (seeded and len(seeded) == len(rates) and any(v[1] == "trains" for v in seeded.values())
          and all(v[0] == "trains" for v in seeded.values() if v[1] == "trains")):
        verdict = "not held"
    else:
        verdict = "inconclusive"
    layers, norms = sorted({k[0] for k in rates}), sorted({k[1] for k in rates})
    detail = "; ".join(f"lr {k[2]:g} ({k[3]:,} steps): baseline {b}, LayerDrop {ld}, {n} seed{'s' if n > 1 else ''}"
                       for k, (b, ld, n) in sorted(rates.items(), key=lambda kv: -kv[0][2]))
    fewer = "" if len(seeded) == len(rates) else f"; a rate needs {MIN_SEEDS} agreeing seeds of each row"
    return [ClaimResult.of("C8", "stability_mt", f"the {'/'.join(layers)} {'/'.join(norms)}-norm baseline fails to "
                           "train at a learning rate where the LayerDrop model trains (probe: first steps of the "
                           "schedule)", verdict, detail + fewer + ".")]
