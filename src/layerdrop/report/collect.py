"""Run records (``runs/<task>/<key>/metrics.json``) -> tidy rows, one per evaluated sub-network.

Tables take each row's run from its role (``roles.<artefact>`` in the record): ``select_roles`` checks
that no two runs claim one row, and ``aggregate`` averages the seeds of a role.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from pathlib import Path

from layerdrop.utils.atomic import atomic_path
from layerdrop.utils.machine import machines
from layerdrop.utils.store import default_store, train_seconds

log = logging.getLogger("layerdrop")

COLUMNS = ["run_key", "scale", "role", "seed", "n_layers", "layerdrop_p", "target", "learned", "strategy",
           "kept_layers", "layers", "n_params", "valid_ppl", "test_ppl", "valid_tokens", "test_tokens",
           "search_evaluations", "steps", "tokens_seen", "train_wall_s", "train_tokens_per_s", "git_sha",
           "code_version"]


def add_records_arg(parser) -> None:
    """``--records-dir`` (alias ``--runs-dir``, as ``args.runs_dir``): where a report reads run records."""
    parser.add_argument("--records-dir", "--runs-dir", dest="runs_dir", type=Path, default=default_store(),
                        help="the run records: the record store (default), or a run cache (runs/)")


def load_records(runs_dir: Path, task: str, artefact: str, scale: str) -> list[dict]:
    records = []
    for path in sorted((runs_dir / task).glob("*/metrics.json")):
        record = json.loads(path.read_text())
        if artefact in record.get("artefacts", []) and record.get("scale") == scale and "train" in record:
            records.append(record)
    return records


def role_of(record: dict, artefact: str | None) -> str | None:
    return (record.get("roles") or {}).get(artefact) if artefact else None


def code_version_of(record: dict) -> str:
    return record.get("code_version") or "unknown"  # records from before the code was fingerprinted


def tidy_rows(records: list[dict], artefact: str | None = None) -> list[dict]:
    """One row per evaluated sub-network; ``role`` is the run's role in ``artefact`` (None without one)."""
    rows = []
    for r in records:
        cfg, train = r["config"], r["train"]
        for e in r["eval"]:
            rows.append({
                "run_key": r["run_key"], "scale": r["scale"], "role": role_of(r, artefact), "seed": cfg.get("seed"),
                "n_layers": cfg["model"]["n_layers"],
                "layerdrop_p": cfg["layerdrop"]["p"], "target": cfg["layerdrop"].get("target", "layers"),
                "learned": cfg["layerdrop"].get("learned", False), "strategy": e["strategy"], "kept_layers": e["depth"],
                "layers": " ".join(map(str, e["layers"])), "n_params": e["n_params"],
                "valid_ppl": e.get("valid_ppl"), "test_ppl": e.get("test_ppl"),
                "valid_tokens": e.get("valid_tokens"), "test_tokens": e.get("test_tokens"),
                "search_evaluations": e.get("search_evaluations"),
                "steps": train["steps"], "tokens_seen": train["tokens_seen"], "train_wall_s": train_seconds(r),
                "train_tokens_per_s": train.get("train_tokens_per_s"),
                "git_sha": r.get("git_sha"), "code_version": code_version_of(r),
            })
    return sorted(rows, key=lambda x: (x["n_layers"], x["layerdrop_p"], x["target"], x["learned"], x["strategy"],
                                       x["kept_layers"], x["layers"], x["seed"] or 0))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (a reader never sees half a PNG) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=130)
    finally:
        plt.close(fig)


def provenance(records: list[dict]) -> dict:
    """What a caption says about how the runs were made: data, steps, tokens, machine, wall time."""
    data = records[0].get("data") or {}
    return {
        "data": data,
        "source": (data.get("provenance") or {}).get("source", "?"),
        "splits": data.get("splits") or {},
        "steps": "/".join(map(str, sorted({r["train"]["steps"] for r in records}))),
        "tokens": sum(r["train"]["tokens_seen"] for r in records),
        "wall_min": sum(train_seconds(r) for r in records) / 60,
        "machine": machines(records),
    }


def decoder_rows(rows: list[dict], role: str) -> dict[int, dict]:
    """kept decoder layers -> row of the role's encoder-decoder model pruned every other decoder layer (full
    depth included)."""
    return {r["kept_layers"]: r for r in rows if r["role"] == role and r["stack"] == "decoder"
            and r["strategy"] in ("every_other", "none")}


def decoder_panel(path: Path, pruned: list[tuple[str, str, dict[int, float]]], scratch: dict[int, float],
                  xlabel: str, ylabel: str, title: str) -> None:
    """A Figure 2 panel of an encoder-decoder task: a metric by kept decoder layers for each pruned model
    (label, line style, depth -> value) and for the models trained from scratch at that depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, style, curve in pruned:
        if curve:
            ax.plot(*zip(*sorted(curve.items())), style, label=label)
    if scratch:
        ax.plot(*zip(*sorted(scratch.items())), "^:", label="trained from scratch at that depth")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------
# Roles, seeds and code versions


def model_depths(record: dict) -> tuple[int, ...]:
    """The layer counts of a run's model (LM: layers; MT: encoder, decoder): tells from-scratch runs apart."""
    model = record["config"]["model"]
    return tuple(model[k] for k in ("encoder_layers", "decoder_layers", "n_layers") if k in model)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _where(record: dict) -> str:
    return f"runs/{record.get('task', '?')}/{record['run_key']} (code {code_version_of(record)})"


#: config keys in which the seeds of one row differ: the seed, the training order that follows it
#: (data.shuffle_seed: ${seed}), and the code version
SEED_KEYS = ("seed", "data.shuffle_seed", "code")


def select_roles(records: list[dict], artefact: str) -> list[dict]:
    """The runs holding a role in ``artefact``. A role (from-scratch runs: a role per depth) may have several
    runs only with different seeds and otherwise equal settings: they are averaged into one row. Two runs of
    one role and seed, or differing in more than the seed, are an error naming both."""
    left_out = [r["run_key"] for r in records if role_of(r, artefact) is None]
    if left_out:
        log.warning("%d runs tagged %s hold no role there and are left out: %s (train with role=...; see "
                    "experiments/%s_*.sh)", len(left_out), artefact, ", ".join(left_out), artefact)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        role = role_of(r, artefact)
        if role is not None:
            groups.setdefault((role, model_depths(r) if role.endswith("scratch") else ()), []).append(r)
    for (role, depths), members in groups.items():
        name = f"role {role!r}" + (f" at depth {'/'.join(map(str, depths))}" if depths else "") + f" of {artefact}"
        first, seeds = members[0], {}
        for r in members:
            seed = r["config"].get("seed")
            if seed in seeds:
                raise ValueError(
                    f"two runs claim {name} with seed {seed}: {_where(seeds[seed])} and {_where(r)}. Keep one: "
                    f"delete {artefact!r} from the other's `artefacts` and `roles` in its metrics.json (or its folder).")
            seeds[seed] = r
            a, b = _flat(first["config"]), _flat(r["config"])
            differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k not in SEED_KEYS)
            if differ:
                raise ValueError(f"runs {_where(first)} and {_where(r)} both claim {name} but differ in "
                                 f"{', '.join(differ)}; the seeds of one role are averaged, so they may differ only "
                                 "in seed (and code version).")
    return [r for members in groups.values() for r in members]


def aggregate(rows: list[dict], keys: tuple[str, ...], metrics: tuple[str, ...]) -> list[dict]:
    """Average ``metrics`` over the rows that agree on ``keys`` (the seeds of one model and sub-network):
    each group becomes its first row with the means, ``<metric>_std`` (sample std) and ``seeds`` (n)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for members in groups.values():
        merged = {**members[0], "seeds": len(members)}
        for m in metrics:
            values = [r[m] for r in members if r[m] is not None]
            merged[m] = statistics.fmean(values) if values else None
            merged[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            merged[f"{m}_values"] = values  # one per seed: the verdicts test differences against their spread
        out.append(merged)
    return out


def regime_text(records: list[dict]) -> str:
    """The training regime the rows share: truncated train data, and which weights each row reports."""
    cut = sorted({r["config"].get("data", {}).get("max_train_tokens") or 0 for r in records})
    rules = sorted({(r["train"].get("selected") or {}).get("rule", "final") for r in records})
    patience = sorted({r["config"].get("early_stop_patience") or 0 for r in records})
    parts = []
    if any(cut):
        parts.append("trained on the first " + " / ".join(f"{c:,}" if c else "all" for c in cut) + " train tokens")
    parts.append("each row reports its " + " / ".join("best-on-valid" if r == "best" else "final" for r in rules)
                 + " weights")
    if any(patience):
        parts.append("early stopping after " + " / ".join(str(p) if p else "no" for p in patience)
                     + " validations without improvement")
    return " Regime: " + "; ".join(parts) + "."


def mean_text(row: dict, metric: str, digits: int = 2) -> str:
    """``12.34``, or ``12.34 ± 0.56 (n=3)`` for a row averaged over seeds."""
    text = f"{row[metric]:.{digits}f}"
    return text if row.get("seeds", 1) == 1 else f"{text} ± {row[metric + '_std']:.{digits}f} (n={row['seeds']})"


def seeds_note(rows: list[dict]) -> str:
    """What a caption says when some rows average several seeds (``aggregate``)."""
    if max((r.get("seeds", 1) for r in rows), default=1) == 1:
        return ""
    return " Cells with `± s (n=k)` average k seeds (mean ± sample standard deviation); the verdicts compare the means."


def code_version_line(records: list[dict]) -> str:
    """Which version of the training code made the runs (``code_version_note`` when there are several)."""
    versions = sorted({code_version_of(r) for r in records})
    return f"All {len(records)} runs come from one version of the training code: `{versions[0]}` (`code_version`)." \
        if len(versions) == 1 else f"The runs come from {len(versions)} versions of the training code."


def code_version_note(records: list[dict], artefact: str) -> str | None:
    """A warning line when the runs come from more than one version of the training code."""
    versions: dict[str, list[str]] = {}
    for r in records:
        role = role_of(r, artefact)
        versions.setdefault(code_version_of(r), []).append(r["run_key"] + (f" ({role})" if role else ""))
    if len(versions) < 2:
        return None
    return (f"**Warning: these runs come from {len(versions)} versions of the training code** (`code_version` in "
            "each run's record; `unknown`: trained before it was recorded), so a difference between rows may be a "
            "code change: " + "; ".join(f"`{v}`: {', '.join(keys)}" for v, keys in sorted(versions.items())) + ".")


def seed_values(row: dict | None, metric: str) -> list[float]:
    """One value per seed of an aggregated row (``aggregate``), or the row's one value."""
    return list(row.get(f"{metric}_values") or [row[metric]]) if row else []


def versus(a: dict, b: dict, metric: str) -> str:
    return f"{mean_text(a, metric)} vs {mean_text(b, metric)}"


def depth_verdicts(claimed: dict[int, dict], other: dict[int, dict], metric: str, higher_is_better: bool,
                   label: str, kind: str = "better") -> tuple[str, str]:
    """A claim made "at every depth" (C1, C2): the noise rule at each depth both rows have, combined;
    returns (outcome, the numbers behind it)."""
    from layerdrop.report.verdict import combine, judge, resolution

    depths = sorted(d for d in claimed if d in other)
    verdicts = {d: judge(seed_values(claimed[d], metric), seed_values(other[d], metric), higher_is_better, kind,
                         resolution=resolution(metric)) for d in depths}
    detail = "; ".join(f"{d} {label}: {versus(claimed[d], other[d], metric)}, {verdicts[d].describe()}"
                       for d in depths)
    return combine(list(verdicts.values())), detail + "."


def equal_compute_claim(artefact: str, ld: dict, eq: dict | None, metric: str, higher_is_better: bool):
    """The LayerDrop row against the baseline trained for the same FLOPs (``role=equal_compute``; ours, not a
    paper claim), judged by the noise rule on ``metric``; None without that row."""
    from layerdrop.report.verdict import ClaimResult, judge, resolution

    if not eq:
        return None
    v = judge(seed_values(ld, metric), seed_values(eq, metric), higher_is_better, resolution=resolution(metric))
    name = {"test_ppl": "test ppl", "test_bleu": "test BLEU"}.get(metric, metric)
    return ClaimResult.of("ours", artefact, f"at equal training FLOPs, LayerDrop {ld['layerdrop_p']} beats the "
                          f"baseline ({eq['steps']} steps against {ld['steps']})", v,
                          f"{name} {versus(ld, eq, metric)}; {v.describe()}.")


def equal_compute_section(claim) -> list[str]:
    """The markdown section a table gives its equal-compute verdict (``equal_compute_claim``), or nothing."""
    if claim is None:
        return []
    return ["", "## Equal compute (ours, beyond the paper)", "",
            "A LayerDrop step skips layers, so it costs fewer FLOPs. The paper compares models at equal "
            "updates; this row compares the LayerDrop model with a baseline trained, on its own full "
            "schedule, for the training FLOPs of the LayerDrop run (`python -m layerdrop.flops "
            "equal-steps`).", "", claim.line()]
