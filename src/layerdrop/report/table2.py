"""Table 2 (LM test perplexity) and Figure 2's LM panel (perplexity vs kept layers), from run records.

Each run records its row (``roles.table2``, from ``role=`` in experiments/table2_lm.sh): ``baseline``,
``layerdrop``, ``deep_layerdrop``, or ``scratch`` (trained from scratch without LayerDrop, one per
depth). The runs of one role with different seeds are averaged (mean ± sample std, n).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import (  # noqa: E402
    aggregate,
    depth_verdicts,
    equal_compute_claim,
    equal_compute_section,
    mean_text,
    provenance,
    read_csv,
    regime_text,
    save_figure,
    seed_values,
    seeds_note,
    tidy_rows,
    versus,
    write_csv,
    write_text,
)
from layerdrop.report.curves import curves_figure  # noqa: E402
from layerdrop.report.verdict import RULE, ClaimResult, judge  # noqa: E402

#: one model's sub-network, across seeds
KEYS = ("role", "n_layers", "strategy", "kept_layers", "layers")
METRICS = ("test_ppl", "valid_ppl")


def full(rows: list[dict], role: str, n_layers: int | None = None) -> dict | None:
    """The full-depth row of the role's model (from scratch: of the one with ``n_layers``)."""
    match = [r for r in rows if r["role"] == role and r["strategy"] == "none" and n_layers in (None, r["n_layers"])]
    return match[0] if match else None


def pruned_curve(rows: list[dict], role: str, strategy: str = "every_other") -> list[dict]:
    """The pruned sub-networks of one role's model, with the full model as the last point."""
    return sorted((r for r in rows if r["role"] == role and r["strategy"] in (strategy, "none")),
                  key=lambda r: r["kept_layers"])


def scratch(rows: list[dict]) -> dict[int, dict]:
    """depth -> full row of the model trained from scratch at that depth."""
    return {r["n_layers"]: r for r in rows if r["role"] == "scratch" and r["strategy"] == "none"}


def layerdrop_row(rows: list[dict]) -> dict:
    ld = full(rows, "layerdrop")
    if ld is None:
        raise ValueError("no run holds role 'layerdrop' in table2 (each run records its row as roles.table2, "
                         "set by role=... when training): run `make reproduce-table2` first")
    return ld


def _values(row: dict | None) -> list[float]:
    return seed_values(row, "test_ppl")


def _vs(a: dict, b: dict, metric: str = "test_ppl") -> str:
    return versus(a, b, metric)


def claim_rows(rows: list[dict]) -> list[ClaimResult]:
    """Each claim Table 2 and its Figure 2 panel test, judged by the noise rule (report/verdict.py) on the
    seeds' test perplexities; the precondition that depth matters comes first."""
    ld = layerdrop_row(rows)
    n = ld["n_layers"]
    base, deep = full(rows, "baseline"), full(rows, "deep_layerdrop")
    from_scratch = scratch(rows)
    out = []

    def add(claim, statement, verdict, detail):
        out.append(ClaimResult.of(claim, "table2", statement, verdict, detail))

    half = from_scratch.get(n // 2)
    if base and half:
        v = judge(_values(base), _values(half), higher_is_better=False)
        add("precondition", f"depth matters: the {n}-layer baseline beats {n // 2} layers trained from scratch", v,
            f"test ppl {_vs(base, half)}; {v.describe()}.")
    if base:
        v = judge(_values(ld), _values(base), higher_is_better=False)
        add("C7", f"LayerDrop {ld['layerdrop_p']} improves the full {n}-layer LM (paper 18.7 -> 18.3)", v,
            f"test ppl {_vs(ld, base)}; {v.describe()}.")
    if deep:
        others = [r for r in (ld, base) if r]
        best = min(others, key=lambda r: r["test_ppl"])
        v = judge(_values(deep), _values(best), higher_is_better=False)
        add("C8", f"the deeper LayerDrop model ({deep['n_layers']} layers) does best (paper 17.7)", v,
            f"test ppl {_vs(deep, best)}; {v.describe()}.")
    ld_curve = {r["kept_layers"]: r for r in pruned_curve(rows, "layerdrop") if r["strategy"] != "none"}
    base_curve = {r["kept_layers"]: r for r in pruned_curve(rows, "baseline") if r["strategy"] != "none"}
    shared = sorted(d for d in ld_curve if d in base_curve)
    if shared:
        add("C1", "pruned every other layer without fine-tuning, LayerDrop beats the pruned baseline at every depth",
            *depth_verdicts(ld_curve, base_curve, "test_ppl", False, "layers"))
    if any(d in ld_curve for d in from_scratch):
        add("C2", "the pruned LayerDrop model matches or beats a model of that depth trained from scratch",
            *depth_verdicts(ld_curve, from_scratch, "test_ppl", False, "layers", kind="matches"))
    return out


def equal_compute(rows: list[dict]) -> ClaimResult | None:
    """The LayerDrop model against the baseline trained for the same FLOPs (ours, not a paper claim)."""
    return equal_compute_claim("table2", layerdrop_row(rows), full(rows, "equal_compute"), "test_ppl", False)


def curves(records: list[dict], path: Path, scale: str) -> None:
    """Valid perplexity during training, for every row (the seeds of a row shaded)."""
    names = {"baseline": "baseline", "layerdrop": "LayerDrop", "deep_layerdrop": "LayerDrop, deeper",
             "equal_compute": "baseline, LayerDrop's FLOPs"}
    groups: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["config"]["model"]["n_layers"], r["config"].get("seed") or 0)):
        role = (r.get("roles") or {}).get("table2")
        n = r["config"]["model"]["n_layers"]
        label = f"{n} layers from scratch" if role == "scratch" else f"{names.get(role, role)} ({n} layers)"
        groups.setdefault(label, []).append(r)
    curves_figure(groups, path, f"Table 2 learning curves ({scale} scale)")


def caption(records: list[dict], scale: str) -> str:
    run = provenance(records)
    split_text = ", ".join(f"{k} {v.get('tokens', '?'):,} tokens" for k, v in run["splits"].items()
                           if isinstance(v, dict))
    return (f"Scale `{scale}`; data: {run['source']} ({split_text}); tokenizer "
            f"{(run['data'].get('tokenizer') or {}).get('kind', '?')} {run['data'].get('vocab_size', '?')}; "
            f"{len(records)} training runs of {run['steps']} steps, {run['tokens']:,} training tokens in all; "
            f"machine: {run['machine']}; training wall time {run['wall_min']:.1f} min (evaluation not included). "
            "Perplexity on the test split, every token scored once in non-overlapping blocks."
            + regime_text(records))


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str) -> str:
    ld = layerdrop_row(rows)
    paper_by_row = {p["row"]: p for p in paper}
    lines = ["# Table 2: language modelling with LayerDrop", "", caption(records, scale) + seeds_note(rows), "",
             "| Model | Layers | Params | Test PPL (ours) | Valid PPL (ours) | Paper: layers | Paper: params | "
             "Paper: test PPL |", "|---|---|---|---|---|---|---|---|"]
    specs = [("baseline", "Transformer LM"), ("layerdrop", "+ LayerDrop {p}"), ("deep_layerdrop", "+ LayerDrop {p}, deeper")]
    if full(rows, "equal_compute"):
        specs.append(("equal_compute", "Transformer LM, trained for the FLOPs of the LayerDrop run (ours)"))
    for role, name in specs:
        r = full(rows, role)
        pp = paper_by_row.get(role, {"layers": "-", "params": "-", "test_ppl": "-"})
        ours = (f"{r['n_layers']} | {r['n_params'] / 1e6:.2f}M | {mean_text(r, 'test_ppl')} | "
                f"{mean_text(r, 'valid_ppl')}" if r else "- | not run | - | -")
        name = name.format(p=(r or ld)["layerdrop_p"])
        lines.append(f"| {name} | {ours} | {pp['layers']} | {pp['params']} | {pp['test_ppl']} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 2 (Wikitext-103 test perplexity), for comparison only.",
              "", "## Did the paper's claims hold at this scale?", ""]
    lines += [f"Noise rule: {RULE}.", ""]
    lines += [c.line() for c in claim_rows(rows)]
    lines += equal_compute_section(equal_compute(rows))
    lines += ["", "Learning curves: `curves.png`. Figure 2 (LM panel): `figure2_lm.png`; raw numbers: `raw.csv` "
              "(every run x pruned depth).", ""]
    return "\n".join(lines)


def figure(rows: list[dict], path: Path, scale: str) -> None:
    ld = layerdrop_row(rows)
    n = ld["n_layers"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for role, label, style in [("layerdrop", f"LayerDrop p={ld['layerdrop_p']}, pruned every-other", "o-"),
                               ("baseline", "baseline (p=0), pruned every-other", "s--")]:
        curve = pruned_curve(rows, role)
        if curve:
            ax.plot([r["kept_layers"] for r in curve], [r["test_ppl"] for r in curve], style, label=label)
    points = [(d, r["test_ppl"]) for d, r in scratch(rows).items()]
    base = full(rows, "baseline")
    if base:
        points.append((base["n_layers"], base["test_ppl"]))
    if points:
        ax.plot(*zip(*sorted(points)), "^:", label="trained from scratch at that depth")
    ax.set_yscale("log")
    ax.set_xlabel(f"kept layers (of {n})")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(f"Figure 2, LM panel ({scale} scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def build(records: list[dict], out_dir: Path, paper_csv: Path, scale: str) -> None:
    """``records``: the runs holding a role in table2 (``collect.select_roles``)."""
    raw = tidy_rows(records, "table2")
    rows = aggregate(raw, KEYS, METRICS)
    layerdrop_row(rows)  # fails before anything is written
    write_csv(out_dir / "raw.csv", raw)
    write_text(out_dir / "table2.md", table_markdown(rows, records, read_csv(paper_csv), scale))
    figure(rows, out_dir / "figure2_lm.png", scale)
    curves(records, out_dir / "curves.png", scale)
