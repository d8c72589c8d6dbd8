"""Figures 4-7 (the LM analyses) from run records: one builder per figure, each writing
``raw.csv``, ``figureN.png`` and ``figureN.md`` (how it was made, and which claims held)."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import save_figure, tidy_rows, write_csv, write_text  # noqa: E402

TARGETS = ["layers", "sublayers", "heads", "heads+layers", "heads+sublayers"]


def provenance(records: list[dict], scale: str) -> str:
    """How the figure was made: scale, data, runs, tokens, machine, cost."""
    train_s = sum(r["train"]["wall_s"] for r in records)
    eval_s = sum(e.get(f"{s}_tokens", 0) / e[f"{s}_tokens_per_s"] for r in records for e in r["eval"]
                 for s in ("valid", "test") if e.get(f"{s}_tokens_per_s"))
    search_s = sum(e.get("search_s", 0) for r in records for e in r["eval"])
    machine = records[0].get("machine", {})
    source = ((records[0].get("data") or {}).get("provenance") or {}).get("source", "?")
    return (f"Scale `{scale}`; data {source}; {len(records)} trained models "
            f"({sum(r['train']['tokens_seen'] for r in records):,} training tokens); machine "
            f"{machine.get('cpus', '?')} CPUs, torch {machine.get('torch', '?')}. Cost, summed over the runs "
            f"(each run is trained once and shared with other artefacts through the run cache): training "
            f"{train_s / 60:.1f} min, evaluation {(eval_s + search_s) / 60:.1f} min.")


def verdict(held: bool) -> str:
    return "**held**" if held else "**did not hold**"


save = save_figure


def write(out: Path, name: str, rows: list[dict], title: str, how: str, claims: list[str], fig) -> None:
    write_csv(out / "raw.csv", rows)
    save(fig, out / f"{name}.png")
    lines = [f"# {title}", "", how, "", "## Did the paper's claims hold at this scale?", "", *claims, "",
             f"Figure: `{name}.png`; raw numbers: `raw.csv`.", ""]
    write_text(out / f"{name}.md", "\n".join(lines))


def _full(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["strategy"] == "none"]


def figure4(records: list[dict], out: Path, scale: str, p: float = 0.2) -> None:
    rows = tidy_rows(records)
    n = min(r["n_layers"] for r in rows)
    targets = {r["target"]: r for r in _full(rows) if r["layerdrop_p"] == p and not r["learned"] and r["n_layers"] == n}
    layers_model = [r for r in rows if r["target"] == "layers" and not r["learned"] and r["layerdrop_p"] == p
                    and r["n_layers"] == n]
    half = n // 2
    strategies = {r["strategy"]: r for r in layers_model if r["kept_layers"] == half}
    learned = {r["strategy"]: r for r in rows if r["learned"] and r["kept_layers"] == half}
    if "data_driven" in learned:
        strategies["data_driven"] = learned["data_driven"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [t for t in TARGETS if t in targets]
    left.bar(names, [targets[t]["valid_ppl"] for t in names], color="tab:blue")
    left.set_ylabel("valid perplexity (full model)")
    left.set_title(f"what to drop (budget p={p})")
    left.tick_params(axis="x", rotation=30)
    order = [s for s in ["every_other", "search_on_valid", "data_driven", "first", "last"] if s in strategies]
    right.bar(order, [strategies[s]["test_ppl"] for s in order], color="tab:orange")
    right.set_ylabel(f"test perplexity, {half} of {n} layers")
    right.set_title("which layers to keep (no fine-tuning)")
    right.tick_params(axis="x", rotation=30)
    claims = []
    if len(names) == len(TARGETS):
        worst = max(names, key=lambda t: targets[t]["valid_ppl"])
        claims.append(f"- {verdict(worst == 'heads')}: dropping heads alone is worst (worst here: {worst}; "
                      + ", ".join(f"{t} {targets[t]['valid_ppl']:.1f}" for t in names) + ").")
        gap = targets["sublayers"]["valid_ppl"] / targets["layers"]["valid_ppl"] - 1
        claims.append(f"- {verdict(abs(gap) < 0.05)}: sub-layers and whole layers are about equal "
                      f"(within 5%: {100 * gap:+.1f}%).")
        best_combo = min(targets["heads+layers"]["valid_ppl"], targets["heads+sublayers"]["valid_ppl"])
        claims.append(f"- {verdict(best_combo < targets['layers']['valid_ppl'])}: combining heads with layers or "
                      f"sub-layers helps (best combination {best_combo:.1f} vs layers {targets['layers']['valid_ppl']:.1f}).")
    if {"every_other", "first", "last"} <= set(strategies):
        eo = strategies["every_other"]["test_ppl"]
        claims.append(f"- {verdict(min(strategies['first']['test_ppl'], strategies['last']['test_ppl']) > eo)}: "
                      f"keeping only the first or the last half is worse than every other "
                      f"(first {strategies['first']['test_ppl']:.1f}, last {strategies['last']['test_ppl']:.1f}, "
                      f"every other {eo:.1f}).")
        others = {s: strategies[s]["test_ppl"] for s in ("search_on_valid", "data_driven") if s in strategies}
        if others:
            gain = max(0.0, 1 - min(others.values()) / eo)
            claims.append(f"- {verdict(gain < 0.05)}: every other is hard to beat; search and data-driven gain "
                          f"little (best gain here {100 * gain:.1f}% on test: " + ", ".join(
                              f"{s} {v:.1f}" for s, v in others.items()) + f" vs every other {eo:.1f}).")
    if "search_on_valid" in strategies:
        s = strategies["search_on_valid"]
        claims.append(f"- search_on_valid chose layers {s['layers']} after scoring {s['search_evaluations']} "
                      "subsets on the valid split; its number above is on test, which the search never saw.")
    if "data_driven" in strategies:
        rates = next(e["learned_rates"] for r in records for e in r["eval"] if e["strategy"] == "data_driven")
        claims.append(f"- data_driven kept layers {strategies['data_driven']['layers']}; learned drop rates per "
                      f"layer: {', '.join(f'{x:.2f}' for x in rates)} (mean {statistics.mean(rates):.2f}).")
    how = provenance(records, scale) + (f" Left: full models trained with the same drop budget p={p} spent on "
                                        "different structures (combinations split it evenly). Right: sub-networks "
                                        f"of {half} of {n} layers, reported on test.")
    write(out, "figure4", rows, "Figure 4: structured drop targets and pruning strategies (LM)", how, claims, fig)


def figure5(records: list[dict], out: Path, scale: str) -> None:
    rows = [r for r in tidy_rows(records) if r["strategy"] == "random"]
    n = rows[0]["n_layers"]
    per_layer = {i: [r["valid_ppl"] for r in rows if str(i) not in r["layers"].split()] for i in range(n)}
    means = {i: statistics.mean(v) for i, v in per_layer.items() if v}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.bar(list(means), list(means.values()))
    ax.set_xlabel("pruned layer n")
    ax.set_ylabel("mean valid perplexity")
    ax.set_title(f"{len(rows)} random {rows[0]['kept_layers']}-of-{n} sub-networks")
    ax.set_ylim(min(means.values()) * 0.95, max(means.values()) * 1.02)
    top2 = sorted(means, key=means.get, reverse=True)[:2]
    claims = [f"- {verdict(set(top2) == {0, n - 1})}: the input and output layers matter most (the two layers "
              f"whose removal hurts most here: {sorted(top2)}; mean valid ppl by pruned layer: "
              + ", ".join(f"{i}: {m:.1f}" for i, m in means.items()) + ")."]
    how = provenance(records, scale) + (f" Each bar averages the valid perplexity of the random sub-networks "
                                        f"without layer n ({len(per_layer[0])} per layer).")
    write(out, "figure5", rows, "Figure 5: which layers matter (LM)", how, claims, fig)


def figure6(records: list[dict], out: Path, scale: str) -> None:
    rows = [r for r in tidy_rows(records) if r["strategy"] in ("every_other", "none")]
    rates = sorted({r["layerdrop_p"] for r in rows})
    n = rows[0]["n_layers"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    curves = {}
    for p in rates:
        curve = sorted((r for r in rows if r["layerdrop_p"] == p), key=lambda r: r["kept_layers"])
        curves[p] = {r["kept_layers"]: r["valid_ppl"] for r in curve}
        ax.plot(list(curves[p]), list(curves[p].values()), "o-", label=f"trained with p={p}")
    ax.set_yscale("log")
    ax.set_xlabel(f"kept layers (of {n}, every other)")
    ax.set_ylabel("valid perplexity (log scale)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    deep_cut = [d for d in curves[rates[0]] if d <= n // 2]
    best = {d: min(rates, key=lambda p: curves[p].get(d, float("inf"))) for d in deep_cut}
    claims = [f"- {verdict(all(best[d] == max(rates) for d in deep_cut))}: when pruning a lot (half or more), the "
              f"largest training rate is best (best rate per kept depth: "
              + ", ".join(f"{d}: p={best[d]}" for d in deep_cut) + ")."]
    full_best = min(rates, key=lambda p: curves[p][n])
    claims.append(f"- at full depth the best training rate here is p={full_best} ("
                  + ", ".join(f"p={p}: {curves[p][n]:.1f}" for p in rates) + ").")
    write(out, "figure6", rows, "Figure 6: training drop rate vs pruning (LM)", provenance(records, scale), claims, fig)


def figure7(records: list[dict], out: Path, scale: str) -> None:
    rows = sorted(_full(tidy_rows(records)), key=lambda r: r["layerdrop_p"])
    ps = [r["layerdrop_p"] for r in rows]
    speed = [r["train_tokens_per_s"] for r in rows]
    base = speed[ps.index(0.0)] if 0.0 in ps else speed[0]
    ideal = [base / (1 - p) for p in ps]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ps, speed, "o-", label="measured")
    ax.plot(ps, ideal, "k--", label="ideal: compute proportional to kept layers")
    ax.set_xlabel("LayerDrop rate p")
    ax.set_ylabel("training tokens/s")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    claims = []
    if 0.5 in ps:
        ratio = speed[ps.index(0.5)] / base
        claims.append(f"- {verdict(ratio >= 1.6)}: dropping half the layers trains almost 2x faster "
                      f"(measured {ratio:.2f}x; ideal 2x; the embedding and softmax are never dropped).")
    claims.append(f"- {verdict(all(b > a for a, b in zip(speed, speed[1:])))}: speed rises with every step in p ("
                  + ", ".join(f"p={p}: {s:,.0f}" for p, s in zip(ps, speed)) + " tokens/s).")
    how = provenance(records, scale) + (" Tokens/s counts training batches only (forward, backward, optimizer "
                                        "step), measured by a Lightning callback during each run.")
    write(out, "figure7", rows, "Figure 7: training speed vs LayerDrop rate (LM)", how, claims, fig)
