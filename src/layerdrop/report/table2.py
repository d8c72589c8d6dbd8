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
    mean_text,
    provenance,
    read_csv,
    save_figure,
    seeds_note,
    tidy_rows,
    write_csv,
    write_text,
)

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


def claims(rows: list[dict]) -> list[tuple[str, bool | None, str]]:
    """(paper claim, held here?, the numbers behind the verdict)."""
    ld = layerdrop_row(rows)
    n = ld["n_layers"]
    base, deep = full(rows, "baseline"), full(rows, "deep_layerdrop")
    out = []
    if base:
        out.append((f"LayerDrop improves the full {n}-layer model (paper 18.7 -> 18.3)",
                    ld["test_ppl"] < base["test_ppl"], f"{base['test_ppl']:.2f} -> {ld['test_ppl']:.2f}"))
    if deep:
        out.append((f"the deeper LayerDrop model ({deep['n_layers']} layers) is best (paper 17.7)",
                    deep["test_ppl"] < min(ld["test_ppl"], base["test_ppl"] if base else float("inf")),
                    f"{deep['test_ppl']:.2f} vs {ld['test_ppl']:.2f}"))
    ld_curve = {r["kept_layers"]: r["test_ppl"] for r in pruned_curve(rows, "layerdrop")}
    base_curve = {r["kept_layers"]: r["test_ppl"] for r in pruned_curve(rows, "baseline")}
    shared = sorted(d for d in ld_curve if d in base_curve and d < n)
    if shared:
        wins = [d for d in shared if ld_curve[d] < base_curve[d]]
        out.append(("pruned without fine-tuning, the LayerDrop model beats the pruned baseline at every depth",
                    len(wins) == len(shared),
                    f"wins at {len(wins)}/{len(shared)} depths; at {n // 2} layers "
                    f"{ld_curve.get(n // 2, float('nan')):.1f} vs {base_curve.get(n // 2, float('nan')):.1f}"))
    from_scratch = {d: r["test_ppl"] for d, r in sorted(scratch(rows).items())}
    if from_scratch:
        wins = [d for d in from_scratch if d in ld_curve and ld_curve[d] < from_scratch[d]]
        detail = "; ".join(f"{d} layers: {ld_curve.get(d, float('nan')):.1f} vs {s:.1f}"
                           for d, s in from_scratch.items())
        out.append(("the pruned LayerDrop model beats models trained from scratch at that depth",
                    len(wins) == len(from_scratch), detail))
    return out


def caption(records: list[dict], scale: str) -> str:
    run = provenance(records)
    split_text = ", ".join(f"{k} {v.get('tokens', '?'):,} tokens" for k, v in run["splits"].items()
                           if isinstance(v, dict))
    return (f"Scale `{scale}`; data: {run['source']} ({split_text}); tokenizer "
            f"{(run['data'].get('tokenizer') or {}).get('kind', '?')} {run['data'].get('vocab_size', '?')}; "
            f"{len(records)} training runs of {run['steps']} steps, {run['tokens']:,} training tokens in all; "
            f"machine: {run['machine']}; training wall time {run['wall_min']:.1f} min (evaluation not included). "
            "Perplexity on the test split, every token scored once in non-overlapping blocks.")


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str) -> str:
    ld = layerdrop_row(rows)
    paper_by_row = {p["row"]: p for p in paper}
    lines = ["# Table 2: language modelling with LayerDrop", "", caption(records, scale) + seeds_note(rows), "",
             "| Model | Layers | Params | Test PPL (ours) | Valid PPL (ours) | Paper: layers | Paper: params | "
             "Paper: test PPL |", "|---|---|---|---|---|---|---|---|"]
    for role, name in [("baseline", "Transformer LM"), ("layerdrop", "+ LayerDrop {p}"),
                       ("deep_layerdrop", "+ LayerDrop {p}, deeper")]:
        r = full(rows, role)
        pp = paper_by_row[role]
        ours = (f"{r['n_layers']} | {r['n_params'] / 1e6:.2f}M | {mean_text(r, 'test_ppl')} | "
                f"{mean_text(r, 'valid_ppl')}" if r else "- | not run | - | -")
        name = name.format(p=(r or ld)["layerdrop_p"])
        lines.append(f"| {name} | {ours} | {pp['layers']} | {pp['params']} | {pp['test_ppl']} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 2 (Wikitext-103 test perplexity), for comparison only.",
              "", "## Did the paper's claims hold at this scale?", ""]
    for claim, held, detail in claims(rows):
        lines.append(f"- **{'held' if held else 'did not hold'}**: {claim} ({detail}).")
    lines += ["", "Figure 2 (LM panel): `figure2_lm.png`; raw numbers: `raw.csv` (every run x pruned depth).", ""]
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
