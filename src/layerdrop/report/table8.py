"""Table 8 (fine-tuning a pruned LM), from the fine-tuning records (``runs/lm_finetune/``,
``python -m layerdrop.finetune``): valid and test perplexity of the pruned LayerDrop LM before and
after fine-tuning, over seeds, beside the paper's 20.78 -> 20.56, and claim C11.

C11 ("fine-tuning helps only marginally") is judged on the relative valid-perplexity gain g: held when
g is confidently below ``MARGINAL`` (g + 2 se < 5%; a loss counts as marginal), not held when it is
confidently above (g - 2 se > 5%), inconclusive otherwise or with fewer than 3 seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from layerdrop.report.collect import write_csv, write_text
from layerdrop.report.curves import curves_figure
from layerdrop.report.verdict import MIN_SEEDS, ClaimResult, Z
from layerdrop.utils.machine import machines
from layerdrop.utils.store import train_seconds

MARGINAL = 0.05
PAPER = {"before": 20.78, "after": 20.56}  # Fan et al. 2020, Table 8: 16-layer LM pruned to 8, valid ppl
COLUMNS = ["run_key", "source_run_key", "scale", "seed", "n_layers", "kept_layers", "steps", "lr_scale",
           "before_valid_ppl", "after_valid_ppl", "before_test_ppl", "after_test_ppl", "train_wall_s", "code_version"]


def tidy_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in sorted(records, key=lambda r: r["seed"]):
        rows.append({"run_key": r["run_key"], "source_run_key": r["source_run_key"], "scale": r["scale"],
                     "seed": r["seed"], "n_layers": (r.get("source_config") or {}).get("model", {}).get("n_layers"),
                     "kept_layers": " ".join(map(str, r["kept_layers"])), "steps": r["train"]["steps"],
                     "lr_scale": r["finetune"]["lr_scale"],
                     **{f"{when}_{split}_ppl": r[when][f"{split}_ppl"] for when in ("before", "after")
                        for split in ("valid", "test")},
                     "train_wall_s": train_seconds(r), "code_version": r.get("code_version")})
    return rows


def c11(rows: list[dict]) -> ClaimResult:
    gains = [(r["before_valid_ppl"] - r["after_valid_ppl"]) / r["before_valid_ppl"] for r in rows]
    mean = statistics.fmean(gains)
    if len(gains) < MIN_SEEDS:
        outcome, noise = "inconclusive", f"{100 * mean:+.1f}% ({len(gains)} seed(s); the rule needs {MIN_SEEDS})"
    else:
        se = statistics.stdev(gains) / len(gains) ** 0.5
        outcome = ("held" if mean + Z * se < MARGINAL else "not held" if mean - Z * se > MARGINAL else "inconclusive")
        noise = f"{100 * mean:+.1f}% +- {100 * se:.1f}% (seeds {len(gains)})"
    return ClaimResult("C11", "table8", f"fine-tuning the pruned model helps only marginally (gain under "
                       f"{100 * MARGINAL:g}% of valid perplexity; paper 20.78 -> 20.56, 1.1%)", outcome,
                       f"valid ppl gain {noise}.")


def _mean(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows]
    text = f"{statistics.fmean(values):.2f}"
    return text if len(values) == 1 else f"{text} ± {statistics.stdev(values):.2f} (n={len(values)})"


def build(records: list[dict], out: Path, scale: str) -> None:
    rows = tidy_rows(records)
    first = records[0]
    ft = first["finetune"]
    n, kept = rows[0]["n_layers"], len(first["kept_layers"])
    lines = ["# Table 8: fine-tuning a pruned LayerDrop LM", "",
             f"Scale `{scale}`. The LayerDrop LM of Table 2 ({n} layers, LayerDrop "
             f"{(first.get('source_config') or {}).get('layerdrop', {}).get('p')}) pruned to {kept} layers "
             f"({ft['strategy']}), scored, then fine-tuned for {ft['steps']} steps without LayerDrop at "
             f"{ft['lr_scale']}x its peak learning rate ({ft['warmup_steps']} warmup steps, cosine decay), keeping "
             f"the best-on-valid weights (`python -m layerdrop.finetune`; settings in `conf/finetune/`, ours: the "
             f"paper gives none). {len(rows)} seed(s), one fine-tuning per trained seed; fine-tuning took "
             f"{sum(r['train_wall_s'] for r in rows) / 60:.1f} min in all on {machines(records)}; code {first.get('code_version')}.", "",
             "| | valid PPL (ours) | test PPL (ours) | Paper: valid PPL (16 -> 8 layers) |", "|---|---|---|---|",
             f"| pruned, no fine-tuning | {_mean(rows, 'before_valid_ppl')} | {_mean(rows, 'before_test_ppl')} | "
             f"{PAPER['before']} |",
             f"| pruned + fine-tuning | {_mean(rows, 'after_valid_ppl')} | {_mean(rows, 'after_test_ppl')} | "
             f"{PAPER['after']} |", "",
             "## Did the paper's claim hold at this scale?", "", c11(rows).line(), "",
             "Fine-tuning curves: `curves.png`; raw numbers: `raw.csv`.", ""]
    write_csv(out / "raw.csv", rows, COLUMNS)
    write_text(out / "table8.md", "\n".join(lines))
    curves_figure({f"seed {r['seed']}": [r] for r in sorted(records, key=lambda r: r["seed"])}, out / "curves.png",
                  f"Table 8: fine-tuning the pruned LM ({scale} scale)")
