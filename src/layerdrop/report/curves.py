"""Learning curves from run records: the ``curves.png`` beside every table and figure, and how much more
slowly one row learns than another (``learning_lag``)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from layerdrop.report.collect import SEED_KEYS, role_of, save_figure


def curves_figure(groups: dict[str, list[dict]], path: Path, title: str, metric: str = "val/ppl",
                  ylabel: str = "valid perplexity (in-training validation, log scale)") -> None:
    """Learning curves: for each labelled group of runs (the seeds of one row), ``metric`` against
    training tokens, the mean over seeds as a line and the seeds' range shaded."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.2, 4.0))
    drawn = 0
    for label, records in groups.items():
        curves = [[p for p in r["train"].get("curve", []) if metric in p] for r in records]
        curves = [c for c in curves if c]
        if not curves:
            continue
        drawn += 1
        n = min(len(c) for c in curves)  # early stopping can end seeds at different points
        x = [curves[0][i]["tokens_seen"] / 1e6 for i in range(n)]
        values = [[c[i][metric] for c in curves] for i in range(n)]
        mean = [statistics.fmean(v) for v in values]
        (line,) = ax.plot(x, mean, label=f"{label} ({len(curves)} seed{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(x, [min(v) for v in values], [max(v) for v in values], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("training tokens (millions)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if drawn:
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    else:  # runs made before learning curves were recorded
        ax.text(0.5, 0.5, "no learning curve recorded by these runs", ha="center", va="center", transform=ax.transAxes)
    save_figure(fig, path)


def varying_label(records: list[dict]) -> dict[str, str]:
    """run_key -> a label naming what sets the run apart from the artefact's other runs (its role, or
    the config values that differ between runs; what differs between seeds, ``SEED_KEYS``, is left out, so
    the seeds of one setting share a label and are shaded together)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            elif f"{prefix}{k}" not in SEED_KEYS:
                out[f"{prefix}{k}"] = json.dumps(v, default=str)
        return out

    configs = {r["run_key"]: flat(r.get("config") or {}) for r in records}
    keys = sorted({k for c in configs.values() for k in c})
    varying = [k for k in keys if len({c.get(k) for c in configs.values()}) > 1]
    labels = {}
    for r in records:
        roles = ", ".join(sorted(set((r.get("roles") or {}).values())))
        parts = [f"{k.split('.')[-1]}={json.loads(configs[r['run_key']][k])}" for k in varying
                 if k in configs[r["run_key"]]]
        labels[r["run_key"]] = " ".join(([roles] if roles else []) + parts) or "run"
    return labels


def artefact_curves(records: list[dict], path: Path, title: str) -> None:
    """``curves.png`` for any artefact: its runs' learning curves, the seeds of one configuration shaded
    together; perplexity where the runs validated it, else the validation loss."""
    labels = varying_label(records)
    groups: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: labels[r["run_key"]]):
        groups.setdefault(labels[r["run_key"]], []).append(r)
    has_ppl = any("val/ppl" in p for r in records for p in r["train"].get("curve", []))
    metric, ylabel = ("val/ppl", "valid perplexity (in-training validation, log scale)") if has_ppl else (
        "val/loss", "valid loss (in-training validation, log scale)")
    curves_figure(groups, path, title, metric=metric, ylabel=ylabel)


def learning_lag(records: list[dict], artefact: str, pairs: tuple[tuple[str, str, str], ...] = (("", "baseline", "layerdrop"),),
                 metric: str = "val/ppl") -> list[str]:
    """How much slower each LayerDrop run learns than the baseline of its seed, in steps: the step of its best
    in-training valid perplexity against the first step at which the baseline had already reached that value.
    A large lag with both runs still improving says the LayerDrop row is judged before it has caught up.
    ``pairs``: (label, baseline role, LayerDrop role) per task on the page (the label names the task where a
    page has several)."""

    def curve(r: dict) -> list[tuple[int, float]]:
        return [(p["step"], p[metric]) for p in r["train"].get("curve", []) if metric in p]

    found = []
    for label, base_role, ld_role in pairs:
        base = {r["config"].get("seed"): curve(r) for r in records if role_of(r, artefact) == base_role}
        mine_runs = sorted((r for r in records if role_of(r, artefact) == ld_role), key=lambda r: r["config"].get("seed") or 0)
        for r in mine_runs:
            seed, mine = r["config"].get("seed"), curve(r)
            if not mine or not base.get(seed):
                continue
            step, best = min(mine, key=lambda x: (x[1], x[0]))
            there = next((s for s, v in base[seed] if v <= best), None)
            if there is not None and there < step:
                found.append(f"{label + ' ' if label else ''}seed {seed}: its best valid perplexity, {best:.1f} at step "
                             f"{step:,}, was the baseline's by step {there:,} ({step / there:.1f}x fewer steps)")
    if not found:
        return []
    return ["", "LayerDrop learns more slowly here (in-training valid perplexity, same seed): " + "; ".join(found)
            + ". Where both runs are still improving at the end of the budget, the full-depth comparison (C7) "
            "measures this lag as much as the end point."]
