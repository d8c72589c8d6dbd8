"""Figures 4-7 (the LM analyses) from run records: one builder per figure, each writing
``raw.csv``, ``figureN.png`` and ``figureN.md`` (how it was made, and which claims held)."""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import aggregate, save_figure, tidy_rows, write_csv, write_text  # noqa: E402
from layerdrop.report.verdict import (  # noqa: E402
    RULE,
    ClaimResult,
    combine,
    judge,
    judge_equal,
    judge_small_gain,
    judge_threshold,
)
from layerdrop.utils.machine import machines  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

TARGETS = ["layers", "sublayers", "heads", "heads+layers", "heads+sublayers"]


def provenance(records: list[dict], scale: str) -> str:
    """How the figure was made: scale, data, runs, tokens, machine, cost."""
    train_s = sum(train_seconds(r) for r in records)
    eval_s = sum(e.get(f"{s}_tokens", 0) / e[f"{s}_tokens_per_s"] for r in records for e in r["eval"]
                 for s in ("valid", "test") if e.get(f"{s}_tokens_per_s"))
    search_s = sum(e.get("search_s", 0) for r in records for e in r["eval"])
    sources = [((r.get("data") or {}).get("provenance") or {}).get("source", "?") for r in records]
    counts = {s: sources.count(s) for s in sorted(set(sources))}  # a page over several tasks names each corpus
    source = next(iter(counts)) if len(counts) == 1 else ", ".join(f"{s} ({n} run{'s' * (n > 1)})" for s, n in counts.items())
    return (f"Scale `{scale}`; data {source}; {len(records)} trained models "
            f"({sum(r['train']['tokens_seen'] for r in records):,} training tokens); machine "
            f"{machines(records)}. Cost, summed over the runs "
            f"(each run is trained once and shared with other artefacts through the run cache): training "
            f"{train_s / 60:.1f} min, evaluation {(eval_s + search_s) / 60:.1f} min.")


#: one model's sub-network, across seeds
KEYS = ("n_layers", "layerdrop_p", "target", "learned", "strategy", "kept_layers", "layers")
METRICS = ("valid_ppl", "test_ppl", "train_tokens_per_s")
SMALL = 0.05  # "about equal", "gain little": within 5%
FAST = 1.6  # "almost 2x faster": at least 1.6x


def _values(rows: list[dict], metric: str, **match) -> list[float]:
    """``metric`` of every seed's row that matches ``match`` (one value per seed)."""
    return [r[metric] for r in rows if all(r[k] == v for k, v in match.items()) and r[metric] is not None]


def _mean(values: list[float]) -> str:
    if not values:
        return "-"
    text = f"{statistics.fmean(values):.1f}"
    return text if len(values) == 1 else f"{text} ± {statistics.stdev(values):.1f} (n={len(values)})"


save = save_figure


def write(out: Path, name: str, rows: list[dict], title: str, how: str, claims: list[ClaimResult], notes: list[str],
          fig) -> None:
    write_csv(out / "raw.csv", rows)
    save(fig, out / f"{name}.png")
    lines = [f"# {title}", "", how, "", "## Did the paper's claims hold at this scale?", "",
             f"Noise rule: {RULE}; \"about equal\" and \"gain little\" mean within {100 * SMALL:g}%, confidently.", "",
             *[c.line() for c in claims], *notes, "", f"Figure: `{name}.png`; raw numbers: `raw.csv`.", ""]
    write_text(out / f"{name}.md", "\n".join(lines))


def _full(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["strategy"] == "none"]


def _figure4_values(rows: list[dict], p: float) -> tuple[int, dict[str, list[float]], dict[str, list[float]]]:
    """Figure 4's rows as seed values: (n layers, full-model valid ppl by drop target, test ppl at half depth by
    pruning strategy); a row with no run has an empty list."""
    n = min(r["n_layers"] for r in rows)
    base = {"n_layers": n, "layerdrop_p": p, "learned": False}
    full = {t: _values(rows, "valid_ppl", strategy="none", target=t, **base) for t in TARGETS}
    kept = {s: _values(rows, "test_ppl", strategy=s, kept_layers=n // 2, target="layers", **base)
            for s in ("every_other", "first", "last", "search_on_valid")}
    kept["data_driven"] = _values(rows, "test_ppl", strategy="data_driven", kept_layers=n // 2, learned=True)
    return n, full, kept


def figure4_claims(rows: list[dict], p: float = 0.2) -> list[ClaimResult]:
    """C4 (left: drop targets at one budget) and C3 (right: which layers to keep at half depth)."""
    n, full, kept = _figure4_values(rows, p)
    full = {t: v for t, v in full.items() if v}
    half = n // 2
    kept = {s: v for s, v in kept.items() if v}
    out = []
    if len(full) == len(TARGETS):
        others = [t for t in TARGETS if t != "heads"]
        vs = {t: judge(full[t], full["heads"], higher_is_better=False) for t in others}
        out.append(ClaimResult.of("C4", "figure4", "dropping heads alone is worst", combine(list(vs.values())),
                          f"valid ppl: heads {_mean(full['heads'])}; " + "; ".join(
                              f"{t} {_mean(full[t])} ({vs[t].describe()})" for t in others) + "."))
        v = judge_equal(full["sublayers"], full["layers"], SMALL)
        out.append(ClaimResult.of("C4", "figure4", "sub-layers and whole layers are about equal", v,
                          f"valid ppl {_mean(full['sublayers'])} vs {_mean(full['layers'])}; {v.describe()}."))
        combo = min(("heads+layers", "heads+sublayers"), key=lambda t: statistics.fmean(full[t]))
        v = judge(full[combo], full["layers"], higher_is_better=False)
        out.append(ClaimResult.of("C4", "figure4", "combining heads with layers or sub-layers helps", v,
                          f"best combination {combo} {_mean(full[combo])} vs layers {_mean(full['layers'])}; "
                          f"{v.describe()}."))
    if {"every_other", "first", "last"} <= set(kept):
        eo = kept["every_other"]
        vs = {s: judge(eo, kept[s], higher_is_better=False) for s in ("first", "last")}
        out.append(ClaimResult.of("C3", "figure4", "keeping only the first or the last half is worse than every other",
                          combine(list(vs.values())), f"test ppl at {half} of {n} layers: every other {_mean(eo)}; "
                          + "; ".join(f"{s} {_mean(kept[s])} ({vs[s].describe()})" for s in vs) + "."))
        others = [s for s in ("search_on_valid", "data_driven") if s in kept]
        if others:
            vs = {s: judge_small_gain(kept[s], eo, higher_is_better=False, tolerance=SMALL) for s in others}
            out.append(ClaimResult.of("C3", "figure4", "every other is hard to beat: search and data-driven gain little",
                              combine(list(vs.values())), "; ".join(
                                  f"{s} {_mean(kept[s])} vs every other {_mean(eo)} ({vs[s].describe()})"
                                  for s in others) + "."))
    return out


def figure4_pending(rows: list[dict], p: float = 0.2) -> list[str]:
    """What a partly run Figure 4 cannot judge yet, and which of its rows have no run (note lines), with the
    seeds each row has so far."""
    _, full, kept = _figure4_values(rows, p)
    seeds = {t: len(v) for t, v in full.items()}
    kept = {s: len(v) for s, v in kept.items()}

    def have(counts: dict[str, int]) -> str:
        return ", ".join(f"{k} {v} seed{'s' * (v != 1)}" for k, v in counts.items() if v) or "none"

    out = []
    if not all(seeds.values()):
        out.append(f"- **not judged yet** (C4): the drop targets are compared once every one has run (runs so far: "
                   f"{have(seeds)}; not yet run: {', '.join(t for t, v in seeds.items() if not v)}).")
    needed = ("every_other", "first", "last")
    if not all(kept[s] for s in needed):
        out.append(f"- **not judged yet** (C3): the kept halves are compared once every other, first and last have "
                   f"been evaluated (so far: {have(kept)}).")
    elif not (kept["search_on_valid"] and kept["data_driven"]):
        out.append(f"- not yet run for C3: {', '.join(s for s in ('search_on_valid', 'data_driven') if not kept[s])} "
                   "(every other is compared with what has run).")
    return out


def learned_model_note(raw: list[dict], half: int) -> list[str]:
    """Ours, beyond the paper (its data-driven line is compared with every other on the fixed-rate models,
    the C3 row above): on the learned-rate models themselves, data-driven pruning against every other, by
    the same noise rule, so whether learning the rates moves the best half to other layers is judged too."""
    dd = _values(raw, "test_ppl", strategy="data_driven", kept_layers=half, learned=True)
    eo = _values(raw, "test_ppl", strategy="every_other", kept_layers=half, learned=True)
    if not (dd and eo):
        return []
    v = judge(dd, eo, higher_is_better=False)
    return [f"- Ours: on the learned-rate models themselves, data_driven {_mean(dd)} vs every other {_mean(eo)} "
            f"(test ppl; data-driven better than every other: {v.describe()})."]


def figure4(records: list[dict], out: Path, scale: str, p: float = 0.2) -> None:
    raw = tidy_rows(records)
    rows = aggregate(raw, KEYS, METRICS)  # seed means, for the bars
    n = min(r["n_layers"] for r in rows)
    targets = {r["target"]: r for r in _full(rows) if r["layerdrop_p"] == p and not r["learned"] and r["n_layers"] == n}
    half = n // 2
    strategies = {r["strategy"]: r for r in rows if r["target"] == "layers" and not r["learned"]
                  and r["layerdrop_p"] == p and r["n_layers"] == n and r["kept_layers"] == half}
    learned = {r["strategy"]: r for r in rows if r["learned"] and r["kept_layers"] == half}
    if "data_driven" in learned:
        strategies["data_driven"] = learned["data_driven"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    names = [t for t in TARGETS if t in targets]
    left.bar(names, [targets[t]["valid_ppl"] for t in names], yerr=[targets[t]["valid_ppl_std"] for t in names],
             color="tab:blue")
    left.set_ylabel("valid perplexity (full model)")
    left.set_title(f"what to drop (budget p={p})")
    left.tick_params(axis="x", rotation=30)
    order = [s for s in ["every_other", "search_on_valid", "data_driven", "first", "last"] if s in strategies]
    right.bar(order, [strategies[s]["test_ppl"] for s in order], yerr=[strategies[s]["test_ppl_std"] for s in order],
              color="tab:orange")
    right.set_ylabel(f"test perplexity, {half} of {n} layers")
    right.set_title("which layers to keep (no fine-tuning)")
    right.tick_params(axis="x", rotation=30)
    notes = figure4_pending(raw, p)
    for r in raw:
        if r["strategy"] == "search_on_valid":
            notes.append(f"- search_on_valid (seed {r['seed']}) chose layers {r['layers']} after scoring "
                         f"{r['search_evaluations']} subsets on the valid split; its number above is on test, which "
                         "the search never saw.")
    for rec in records:
        every_other = {e["depth"]: e for e in rec["eval"] if e["strategy"] == "every_other"}
        for e in rec["eval"]:
            if e["strategy"] == "data_driven":
                rates = e["learned_rates"]
                eo = every_other.get(e["depth"])  # the same model pruned to the same depth
                notes.append(f"- data_driven (seed {rec['config'].get('seed')}) kept layers "
                             f"{' '.join(map(str, e['layers']))}; learned drop rates per layer: "
                             f"{', '.join(f'{x:.2f}' for x in rates)} (mean {statistics.mean(rates):.2f})"
                             + (f"; test ppl {e['test_ppl']:.1f}, every other on the same model {eo['test_ppl']:.1f}"
                                if eo and "test_ppl" in e and "test_ppl" in eo else "") + ".")
    notes += learned_model_note(raw, half)
    how = provenance(records, scale) + (f" Left: full models trained with the same drop budget p={p} spent on "
                                        "different structures (combinations split it evenly). Right: sub-networks "
                                        f"of {half} of {n} layers, reported on test. Bars: seed means, whiskers: "
                                        "their standard deviation.")
    write(out, "figure4", raw, "Figure 4: structured drop targets and pruning strategies (LM)", how,
          figure4_claims(raw, p), notes, fig)


def _without_layer(rows: list[dict]) -> dict[int, dict[int, float]]:
    """layer -> seed -> mean valid ppl of the random sub-networks without that layer."""
    n = rows[0]["n_layers"]
    out: dict[int, dict[int, float]] = {}
    for i in range(n):
        for seed in sorted({r["seed"] for r in rows}, key=lambda s: s or 0):
            values = [r["valid_ppl"] for r in rows if r["seed"] == seed and str(i) not in r["layers"].split()]
            if values:
                out.setdefault(i, {})[seed] = statistics.mean(values)
    return out


def figure5_claims(rows: list[dict]) -> list[ClaimResult]:
    """C5: removing the first or the last layer hurts more than removing any middle layer."""
    rows = [r for r in rows if r["strategy"] == "random"]
    n = rows[0]["n_layers"]
    per_layer = _without_layer(rows)
    ends, middle = [0, n - 1], [i for i in range(1, n - 1) if i in per_layer]
    vs = {(e, m): judge(list(per_layer[m].values()), list(per_layer[e].values()), higher_is_better=False)
          for e in ends for m in middle}
    means = {i: statistics.fmean(v.values()) for i, v in per_layer.items()}
    top2 = sorted(sorted(means, key=means.get, reverse=True)[:2])
    return [ClaimResult.of("C5", "figure5", "the input and output layers matter most", combine(list(vs.values())),
                   f"the two layers whose removal hurts most here: {top2}; mean valid ppl by pruned layer: "
                   + ", ".join(f"{i}: {m:.1f}" for i, m in means.items())
                   + f"; ends vs middle layers: {sum(v.outcome == 'held' for v in vs.values())}/{len(vs)} held"
                   + (f" ({next(iter(vs.values())).reason})" if vs else "") + ".")]


def figure5(records: list[dict], out: Path, scale: str) -> None:
    rows = [r for r in tidy_rows(records) if r["strategy"] == "random"]
    n = rows[0]["n_layers"]
    per_layer = _without_layer(rows)
    means = {i: statistics.fmean(v.values()) for i, v in per_layer.items()}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.bar(list(means), list(means.values()))
    ax.set_xlabel("pruned layer n")
    ax.set_ylabel("mean valid perplexity")
    seeds = len({r["seed"] for r in rows})
    ax.set_title(f"random {rows[0]['kept_layers']}-of-{n} sub-networks, {seeds} seed(s)")
    ax.set_ylim(min(means.values()) * 0.95, max(means.values()) * 1.02)
    how = provenance(records, scale) + (" Each bar averages the valid perplexity of the random sub-networks "
                                        "without layer n, over the seeds' models.")
    write(out, "figure5", rows, "Figure 5: which layers matter (LM)", how, figure5_claims(rows), [], fig)


def figure6_claims(rows: list[dict]) -> list[ClaimResult]:
    """C6: pruning to half the depth or less, the model trained with the largest rate is best. Nothing to
    judge (no result) until two or more training rates have run."""
    rows = [r for r in rows if r["strategy"] in ("every_other", "none")]
    rates = sorted({r["layerdrop_p"] for r in rows})
    if len(rates) < 2:
        return []
    n = max(r["n_layers"] for r in rows)
    top = max(rates)
    deep_cut = sorted({r["kept_layers"] for r in rows if r["kept_layers"] <= n // 2})
    vs = {(d, q): judge(_values(rows, "valid_ppl", layerdrop_p=top, kept_layers=d),
                        _values(rows, "valid_ppl", layerdrop_p=q, kept_layers=d), higher_is_better=False)
          for d in deep_cut for q in rates if q != top}
    return [ClaimResult.of("C6", "figure6", f"pruned to half the depth or less, the largest training rate (p={top}) is best",
                   combine(list(vs.values())),
                   "; ".join(f"{d} layers: p={top} {_mean(_values(rows, 'valid_ppl', layerdrop_p=top, kept_layers=d))} "
                             f"vs p={q} {_mean(_values(rows, 'valid_ppl', layerdrop_p=q, kept_layers=d))} "
                             f"({v.outcome})" for (d, q), v in vs.items()) + ".")]


def figure6(records: list[dict], out: Path, scale: str) -> None:
    raw = [r for r in tidy_rows(records) if r["strategy"] in ("every_other", "none")]
    rows = aggregate(raw, KEYS, METRICS)
    rates = sorted({r["layerdrop_p"] for r in rows})
    n = rows[0]["n_layers"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    curves = {}
    for p in rates:
        curve = sorted((r for r in rows if r["layerdrop_p"] == p), key=lambda r: r["kept_layers"])
        curves[p] = {r["kept_layers"]: r["valid_ppl"] for r in curve}
        ax.errorbar(list(curves[p]), list(curves[p].values()), yerr=[r["valid_ppl_std"] for r in curve], fmt="o-",
                    capsize=2, label=f"trained with p={p}")
    ax.set_yscale("log")
    ax.set_xlabel(f"kept layers (of {n}, every other)")
    ax.set_ylabel("valid perplexity (log scale)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    full_best = min(rates, key=lambda p: curves[p][n])
    notes = [f"- at full depth the best training rate here is p={full_best} ("
             + ", ".join(f"p={p}: {curves[p][n]:.1f}" for p in rates) + ", seed means)."]
    write(out, "figure6", raw, "Figure 6: training drop rate vs pruning (LM)", provenance(records, scale),
          figure6_claims(raw), notes, fig)


def figure7_claims(rows: list[dict]) -> list[ClaimResult]:
    """C9: at p=0.5 training runs almost 2x faster (>= 1.6x), and speed rises with p."""
    rows = [r for r in rows if r["strategy"] == "none"]
    ps = sorted({r["layerdrop_p"] for r in rows})
    speed = {p: {r["seed"]: r["train_tokens_per_s"] for r in rows if r["layerdrop_p"] == p} for p in ps}
    out = []
    if 0.0 in speed and 0.5 in speed:
        ratios = [speed[0.5][s] / speed[0.0][s] for s in speed[0.5] if s in speed[0.0]]
        v = judge_threshold(ratios, FAST)
        out.append(ClaimResult.of("C9", "figure7", f"dropping half the layers trains almost 2x faster (at least {FAST}x)", v,
                          f"speed-up at p=0.5 per seed: {', '.join(f'{x:.2f}x' for x in ratios)}; {v.describe()}; "
                          "the embedding and softmax are never dropped."))
    vs = [judge(list(speed[b].values()), list(speed[a].values()), higher_is_better=True) for a, b in zip(ps, ps[1:])]
    out.append(ClaimResult.of("C9", "figure7", "speed rises with every step in p", combine(vs),
                      ", ".join(f"p={p}: {_mean(list(speed[p].values()))}" for p in ps) + " tokens/s."))
    return out


def figure7(records: list[dict], out: Path, scale: str) -> None:
    raw = _full(tidy_rows(records))
    rows = sorted(aggregate(raw, KEYS, METRICS), key=lambda r: r["layerdrop_p"])
    ps = [r["layerdrop_p"] for r in rows]
    speed = [r["train_tokens_per_s"] for r in rows]
    base = speed[ps.index(0.0)] if 0.0 in ps else speed[0]
    ideal = [base / (1 - p) for p in ps]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.errorbar(ps, speed, yerr=[r["train_tokens_per_s_std"] for r in rows], fmt="o-", capsize=2, label="measured")
    ax.plot(ps, ideal, "k--", label="ideal: compute proportional to kept layers")
    ax.set_xlabel("LayerDrop rate p")
    ax.set_ylabel("training tokens/s")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    how = provenance(records, scale) + (" Tokens/s counts training batches only (forward, backward, optimizer "
                                        "step), measured by a Lightning callback during each run.")
    write(out, "figure7", raw, "Figure 7: training speed vs LayerDrop rate (LM)", how, figure7_claims(raw), [], fig)
