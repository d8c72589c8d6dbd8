"""Table 2 (LM test perplexity) and Figure 2's LM panel (perplexity vs kept layers), from run records.

Roles are read off each run's config: the LayerDrop model is the shallowest run trained at
``p_ld``; the baseline has that depth and p = 0; the deep model is the deepest run with p > 0; the
from-scratch models are the p = 0 runs shallower than the baseline.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import provenance, read_csv, save_figure, tidy_rows, write_csv, write_text  # noqa: E402


def full_depth(rows: list[dict], n_layers: int, p: float) -> dict | None:
    match = [r for r in rows if r["n_layers"] == n_layers and r["layerdrop_p"] == p and r["kept_layers"] == n_layers]
    return match[0] if match else None


def pruned_curve(rows: list[dict], n_layers: int, p: float, strategy: str = "every_other") -> list[dict]:
    """The pruned sub-networks of one model, with the full model as the last point."""
    return sorted((r for r in rows if r["n_layers"] == n_layers and r["layerdrop_p"] == p
                   and r["strategy"] in (strategy, "none")), key=lambda r: r["kept_layers"])


def roles(rows: list[dict], p_ld: float) -> dict:
    ld_depths = sorted({r["n_layers"] for r in rows if r["layerdrop_p"] == p_ld})
    if not ld_depths:
        raise ValueError(f"no run trained with LayerDrop p={p_ld}: run `make reproduce-table2` first")
    n = ld_depths[0]
    deep = max((r["n_layers"] for r in rows if r["layerdrop_p"] > 0), default=n)
    scratch = sorted({r["n_layers"] for r in rows if r["layerdrop_p"] == 0 and r["n_layers"] < n})
    return {"n": n, "deep": deep if deep > n else None, "scratch": scratch}


def claims(rows: list[dict], p_ld: float) -> list[tuple[str, bool | None, str]]:
    """(paper claim, held here?, the numbers behind the verdict)."""
    role = roles(rows, p_ld)
    n = role["n"]
    base, ld = full_depth(rows, n, 0.0), full_depth(rows, n, p_ld)
    deep = full_depth(rows, role["deep"], p_ld) if role["deep"] else None
    out = []
    if base and ld:
        out.append((f"LayerDrop improves the full {n}-layer model (paper 18.7 -> 18.3)",
                    ld["test_ppl"] < base["test_ppl"], f"{base['test_ppl']:.2f} -> {ld['test_ppl']:.2f}"))
    if deep and ld:
        out.append((f"the deeper LayerDrop model ({role['deep']} layers) is best (paper 17.7)",
                    deep["test_ppl"] < min(ld["test_ppl"], base["test_ppl"] if base else float("inf")),
                    f"{deep['test_ppl']:.2f} vs {ld['test_ppl']:.2f}"))
    ld_curve = {r["kept_layers"]: r["test_ppl"] for r in pruned_curve(rows, n, p_ld)}
    base_curve = {r["kept_layers"]: r["test_ppl"] for r in pruned_curve(rows, n, 0.0)}
    shared = sorted(d for d in ld_curve if d in base_curve and d < n)
    if shared:
        wins = [d for d in shared if ld_curve[d] < base_curve[d]]
        out.append(("pruned without fine-tuning, the LayerDrop model beats the pruned baseline at every depth",
                    len(wins) == len(shared),
                    f"wins at {len(wins)}/{len(shared)} depths; at {n // 2} layers "
                    f"{ld_curve.get(n // 2, float('nan')):.1f} vs {base_curve.get(n // 2, float('nan')):.1f}"))
    scratch = {d: full_depth(rows, d, 0.0)["test_ppl"] for d in role["scratch"]}
    if scratch:
        wins = [d for d in scratch if d in ld_curve and ld_curve[d] < scratch[d]]
        detail = "; ".join(f"{d} layers: {ld_curve.get(d, float('nan')):.1f} vs {s:.1f}" for d, s in scratch.items())
        out.append(("the pruned LayerDrop model beats models trained from scratch at that depth",
                    len(wins) == len(scratch), detail))
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


def table_markdown(rows: list[dict], records: list[dict], paper: list[dict], scale: str, p_ld: float) -> str:
    role = roles(rows, p_ld)
    paper_by_row = {p["row"]: p for p in paper}
    lines = ["# Table 2: language modelling with LayerDrop", "", caption(records, scale), "",
             "| Model | Layers | Params | Test PPL (ours) | Valid PPL (ours) | Paper: layers | Paper: params | "
             "Paper: test PPL |", "|---|---|---|---|---|---|---|---|"]
    spec = [("baseline", role["n"], 0.0, "Transformer LM"), ("layerdrop", role["n"], p_ld, f"+ LayerDrop {p_ld}"),
            ("deep_layerdrop", role["deep"], p_ld, f"+ LayerDrop {p_ld}, deeper")]
    for key, n, p, name in spec:
        r = full_depth(rows, n, p) if n else None
        pp = paper_by_row[key]
        ours = (f"{r['n_params'] / 1e6:.2f}M | {r['test_ppl']:.2f} | {r['valid_ppl']:.2f}" if r
                else "not run | - | -")
        lines.append(f"| {name} | {n or '-'} | {ours} | {pp['layers']} | {pp['params']} | {pp['test_ppl']} |")
    lines += ["", "Paper numbers: Fan et al. 2020, Table 2 (Wikitext-103 test perplexity), for comparison only.",
              "", "## Did the paper's claims hold at this scale?", ""]
    for claim, held, detail in claims(rows, p_ld):
        lines.append(f"- **{'held' if held else 'did not hold'}**: {claim} ({detail}).")
    lines += ["", "Figure 2 (LM panel): `figure2_lm.png`; raw numbers: `raw.csv` (every run x pruned depth).", ""]
    return "\n".join(lines)


def figure(rows: list[dict], p_ld: float, path: Path, scale: str) -> None:
    role = roles(rows, p_ld)
    n = role["n"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for p, label, style in [(p_ld, f"LayerDrop p={p_ld}, pruned every-other", "o-"),
                            (0.0, "baseline (p=0), pruned every-other", "s--")]:
        curve = pruned_curve(rows, n, p)
        ax.plot([r["kept_layers"] for r in curve], [r["test_ppl"] for r in curve], style, label=label)
    scratch = [(d, full_depth(rows, d, 0.0)["test_ppl"]) for d in role["scratch"]]
    base = full_depth(rows, n, 0.0)
    if base:
        scratch.append((n, base["test_ppl"]))
    if scratch:
        ax.plot(*zip(*sorted(scratch)), "^:", label="trained from scratch at that depth")
    ax.set_yscale("log")
    ax.set_xlabel(f"kept layers (of {n})")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(f"Figure 2, LM panel ({scale} scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def build(records: list[dict], out_dir: Path, paper_csv: Path, scale: str, p_ld: float = 0.2) -> None:
    rows = tidy_rows(records)
    write_csv(out_dir / "raw.csv", rows)
    write_text(out_dir / "table2.md", table_markdown(rows, records, read_csv(paper_csv), scale, p_ld))
    figure(rows, p_ld, out_dir / "figure2_lm.png", scale)
