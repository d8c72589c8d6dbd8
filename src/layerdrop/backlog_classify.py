"""The encoder fine-tunings an experiment script makes (its ``classify`` commands), for ``python -m
layerdrop.backlog``: each sweep expanded and each fine-tuning's key computed as ``layerdrop.classify`` does,
whether its record is stored, and what the rest cost.

A fine-tuning is *done* when its record (the record store's, else the run cache's) holds test accuracy. The
estimate of one not done is the median wall time of the stored fine-tunings on its stand-in with its kept
layers, else on its stand-in at any depth scaled by the kept layers; this CPU's where they give one, else
every CPU's (named). They are listed grouped by encoder, kept layers, start and seed.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from layerdrop.launch import expanded
from layerdrop.utils import machine, runs
from layerdrop.utils.machine import cpu_of
from layerdrop.utils.store import stored_records

TASK = "mlm_classify"  # where the fine-tunings' records live (``layerdrop.classify``)


@dataclass
class FineTuning:
    """One fine-tuning a ``classify`` command makes (``python -m layerdrop.classify``)."""
    key: str
    parent: str  # the pretraining run's key
    dataset: str
    layers: int  # encoder layers kept (pruned before fine-tuning when fewer than the parent's)
    init: str  # pretrained | scratch
    seed: int
    done: bool  # its record holds test accuracy
    estimate_s: float | None = None
    measured_on: tuple[str, ...] = ()


def fine_tunings(commands: list[tuple[str, list[str]]]) -> list[FineTuning]:
    """Every distinct fine-tuning of the dry run's ``classify`` commands (each sweep expanded), in order."""
    from layerdrop.classify import classify_key

    out: dict[str, FineTuning] = {}
    for _, cfg in expanded(commands, "classify"):
        parent = runs.run_dir(cfg)
        key = classify_key(parent.name, cfg)
        if key in out:
            continue
        record = runs.read_record(Path(cfg.paths.runs_dir) / f"{cfg.task.name}_classify" / key, runs.record_store(cfg))
        c = cfg.classify
        out[key] = FineTuning(key, parent.name, str(c.dataset), int(c.depth or cfg.model.n_layers), str(c.init),
                              int(cfg.seed), bool(record and "test_acc" in record))
    return list(out.values())


def stored_fine_tunings(commands: list[tuple[str, list[str]]]) -> list[dict]:
    """The finished fine-tunings the estimates draw on: the record store's, and the run cache's that it lacks
    (the folders the dry run's first ``classify`` command names)."""
    _, cfg = next(expanded(commands, "classify"))
    store = runs.record_store(cfg)
    records = stored_records(store, TASK) if store else []
    keys = {r.get("run_key") for r in records}
    return records + [r for r in stored_records(Path(cfg.paths.runs_dir), TASK) if r.get("run_key") not in keys]


def estimate_fine_tuning(ft: FineTuning, records: list[dict]) -> float | None:
    """The median wall time of the stored fine-tunings on ``ft``'s stand-in with its kept layers, else on its
    stand-in at any depth, each scaled by the kept layers; None when none is stored."""
    mine = [r for r in records if r.get("dataset") == ft.dataset and (r.get("train") or {}).get("wall_s")]
    same = [r for r in mine if len(r.get("kept_layers") or []) == ft.layers]
    if same:
        return statistics.median(float(r["train"]["wall_s"]) for r in same)
    scaled = [float(r["train"]["wall_s"]) * ft.layers / len(r["kept_layers"]) for r in mine if r.get("kept_layers")]
    return statistics.median(scaled) if scaled else None


def estimate_fine_tunings(found: list[FineTuning], records: list[dict], here: tuple | None) -> None:
    """Sets each fine-tuning left its estimate from ``records`` (this CPU's where they give one, else every CPU's)."""
    this_cpu = [r for r in records if here and cpu_of(r) == here]
    for ft in found:
        if ft.done:
            continue
        mine = this_cpu
        seconds = estimate_fine_tuning(ft, mine)
        if seconds is None:
            mine = records
            seconds = estimate_fine_tuning(ft, records)
        ft.estimate_s = seconds
        if seconds is not None:
            ft.measured_on = tuple(sorted({machine.cpus(r["machine"]) for r in mine if r.get("dataset") == ft.dataset
                                           and (r.get("machine") or {}).get("cpus")}))


def render_fine_tunings(found: list[FineTuning]) -> str:
    """The fine-tunings grouped by encoder, kept layers, start and seed (a sweep over stand-ins and learning rates)."""
    groups: dict[tuple, list[FineTuning]] = {}
    for ft in found:
        groups.setdefault((ft.parent, ft.layers, ft.init, ft.seed), []).append(ft)
    lines = [f"{len(found)} fine-tunings (python -m layerdrop.classify), by encoder:", "",
             "| pretraining run | layers kept | init | seed | done | estimate of the rest |", "|---|---|---|---|---|---|"]
    for (parent, layers, init, seed), fts in groups.items():
        left = [f for f in fts if not f.done]
        known = [f.estimate_s for f in left if f.estimate_s is not None]
        est = ("-" if not left else "unknown" if not known
               else f"{sum(known) / 60:.0f} min" + (f" + {len(left) - len(known)} unknown" if len(known) < len(left) else ""))
        lines.append(f"| {parent} | {layers} | {init} | {seed} | {len(fts) - len(left)} of {len(fts)} | {est} |")
    left = [f for f in found if not f.done]
    known = sum(f.estimate_s for f in left if f.estimate_s is not None)
    unknown = sum(f.estimate_s is None for f in left)
    measured = sorted({m for f in left for m in f.measured_on})
    lines += ["", f"{len(found) - len(left)} of {len(found)} fine-tunings done; {len(left)} left, about "
              f"{known / 3600:.1f} h by the stored fine-tunings on the same stand-ins" + (f", {unknown} with no estimate" if unknown else "")
              + " (scoring valid and test not included)" + (f"; measured on {'; '.join(measured)}" if measured else "") + "."]
    return "\n".join(lines)
