"""Tables 4 and 7 and Figures 3 and 8 (pretraining with LayerDrop, then fine-tuning on classification
stand-ins) from the fine-tuning records (``runs/mlm_classify/``), each joined with its pretraining run.

Every fine-tuning is one point of a learning-rate (and batch) sweep; like the paper, each (pretrained
encoder, kept depth, data set) reports the sweep point with the best valid accuracy, and its test
accuracy is what the verdicts compare (the paper reports the same dev accuracy it selected on; our valid
column is shown too, but choosing on it and reporting it would flatter it). Stand-ins are named as
stand-ins (the column says "SST-2 stand-in: rotten_tomatoes"), and the paper's numbers sit beside ours.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerdrop.report.collect import read_csv, role_of, save_figure, write_csv, write_text  # noqa: E402
from layerdrop.report.verdict import RULE, ClaimResult, combine, judge  # noqa: E402
from layerdrop.utils.machine import machines  # noqa: E402
from layerdrop.utils.store import train_seconds  # noqa: E402

GLUE = ("MNLI", "MRPC", "QNLI", "SST-2")  # the paper's columns, in its order
COLUMNS = ["run_key", "source_run_key", "role", "dataset", "stand_in_for", "encoder_layers", "kept_layers",
           "layerdrop_p", "finetune_layerdrop", "seed", "lr", "batch_size", "pool", "valid_acc", "test_acc", "steps",
           "train_wall_s", "code_version"]


def join_parents(records: list[dict], runs_dir: Path) -> list[dict]:
    """Each fine-tuning record with ``parent``: the pretraining run's config (depth, LayerDrop, seed, how its
    encoder encodes position: RoBERTa's learned table unless the record says otherwise, its training steps)."""
    out = []
    for r in records:
        path = runs_dir / "mlm" / r["source_run_key"] / "metrics.json"
        if not path.exists():
            raise FileNotFoundError(f"fine-tuning {r['run_key']} names pretraining run {r['source_run_key']}, "
                                    f"which is not in {runs_dir / 'mlm'}")
        parent = json.loads(path.read_text())
        out.append({**r, "parent": {"n_layers": parent["config"]["model"]["n_layers"],
                                    "layerdrop_p": parent["config"]["layerdrop"]["p"],
                                    "seed": parent["config"].get("seed"), "run_key": parent["run_key"],
                                    "positions": parent["config"]["model"].get("positions", "learned"),
                                    "steps": (parent["config"].get("trainer") or {}).get("max_steps"),
                                    # the pretraining block: the input length fine-tuning defaults to
                                    "block": (parent["config"].get("data") or {}).get("block_size"),
                                    # what a fine-tuning from scratch copies from the run (not its training)
                                    "copied": {k: parent["config"].get(k) for k in ("model", "layerdrop", "data")}}})
    return out


def pool_of(record: dict) -> str:
    """How a fine-tuning's head read the encoder (``classify.pool``); records made before the option read the
    first position, RoBERTa's."""
    return record["classify"].get("pool", "first")


def rows_of(records: list[dict], artefact: str) -> list[dict]:
    return [{
        "run_key": r["run_key"], "source_run_key": r["source_run_key"], "role": role_of(r, artefact),
        "dataset": r["dataset"], "stand_in_for": r["stand_in_for"], "encoder_layers": r["parent"]["n_layers"],
        "kept_layers": len(r["kept_layers"]), "layerdrop_p": r["parent"]["layerdrop_p"],
        "finetune_layerdrop": r["layerdrop"], "seed": r["seed"], "lr": r["classify"]["lr"],
        "batch_size": r["classify"]["batch_size"], "pool": pool_of(r),
        "valid_acc": 100 * r["valid_acc"], "test_acc": 100 * r["test_acc"],
        "steps": r["train"]["steps"], "train_wall_s": train_seconds(r), "code_version": r.get("code_version"),
    } for r in records]


def best_of_sweep(rows: list[dict]) -> list[dict]:
    """Per (pretrained encoder, kept depth, data set, seed): the sweep point with the best valid accuracy. Every
    fine-tuning setting that varies within that group is part of the sweep (learning rate, batch size, and the
    head's pooling if several ran), picked on valid as the paper picks its learning rate."""
    best: dict[tuple, dict] = {}
    for row in rows:
        key = (row["source_run_key"], row["kept_layers"], row["dataset"], row["seed"])
        if key not in best or row["valid_acc"] > best[key]["valid_acc"]:
            best[key] = row
    return [{**row, "sweep_points": sum(1 for r in rows if (r["source_run_key"], r["kept_layers"], r["dataset"],
                                                             r["seed"]) == key)} for key, row in best.items()]


def _values(rows: list[dict], metric: str, **match) -> list[float]:
    return [r[metric] for r in rows if all(r[k] == v for k, v in match.items())]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f} (n={len(values)})"


def _datasets(rows: list[dict]) -> list[tuple[str, str]]:
    """(dataset, the GLUE task it stands in for), in the paper's column order."""
    found = {(r["dataset"], r["stand_in_for"]) for r in rows}
    return sorted(found, key=lambda d: (GLUE.index(d[1]) if d[1] in GLUE else len(GLUE), d[0]))


def _provenance(records: list[dict], scale: str) -> str:
    wall = sum(train_seconds(r) for r in records) / 60
    parents = len({r["source_run_key"] for r in records})
    by_dataset: dict[tuple[str, str], dict] = {}
    for r in records:
        by_dataset.setdefault((r["dataset"], r["stand_in_for"]), r)
    sizes = "; ".join(
        f"{d} ({s} stand-in): {' / '.join(str(r['data']['splits'][p]['examples']) for p in ('train', 'valid', 'test'))}"
        " train / valid / test examples" for (d, s), r in sorted(by_dataset.items()))
    return (f"Scale `{scale}`; {len(records)} fine-tunings of {parents} pretrained encoders; {sizes}; machine "
            f"{machines(records)}; fine-tuning wall time {wall:.1f} min "
            "(pretraining not included). Accuracy in %, the best valid point of each learning-rate sweep; "
            "*test* is that point's test accuracy.")


def _paper(paper_csv: Path) -> dict[str, dict]:
    return {row["row"]: row for row in read_csv(paper_csv)} if paper_csv.exists() else {}


def _table(rows: list[dict], roles: list[tuple[str, str]], paper: dict[str, dict]) -> list[str]:
    datasets = _datasets(rows)
    head = ["model", "layers"] + [f"{s} stand-in: {d} (valid / **test**)" for d, s in datasets] + \
           [f"paper {s}" for _, s in datasets]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for role, label in roles:
        mine = [r for r in rows if r["role"] == role]
        if not mine:
            continue
        layers = sorted({r["kept_layers"] for r in mine})
        cells = [f"{_cell(_values(mine, 'valid_acc', dataset=d))} / **{_cell(_values(mine, 'test_acc', dataset=d))}**"
                 for d, _ in datasets]
        theirs = [(paper.get(role) or {}).get(s) or "-" for _, s in datasets]
        lines.append(f"| {label} | {', '.join(map(str, layers))} | " + " | ".join(cells + theirs) + " |")
    return lines


def _claim(rows: list[dict], artefact: str, claim: str, text: str, claimed: str, other: str,
           kind: str = "better") -> ClaimResult:
    verdicts = []
    details = []
    for d, s in _datasets(rows):
        a, b = _values(rows, "test_acc", role=claimed, dataset=d), _values(rows, "test_acc", role=other, dataset=d)
        if a and b:
            v = judge(a, b, higher_is_better=True, kind=kind)
            verdicts.append(v)
            details.append(f"{s} stand-in: {statistics.fmean(a):.1f} vs {statistics.fmean(b):.1f}, {v.describe()}")
    if not verdicts:
        return ClaimResult(claim, artefact, text, "not built yet", "(rows missing)")
    return ClaimResult.of(claim, artefact, text, combine(verdicts), "; ".join(details) + ".")


def _write(out: Path, name: str, title: str, rows: list[dict], records: list[dict], scale: str, body: list[str]) -> None:
    write_csv(out / "raw.csv", sorted(rows, key=lambda r: (str(r["role"]), r["dataset"], r["seed"] or 0)),
              columns=[*COLUMNS, "sweep_points"])
    lines = [f"# {title}", "", _provenance(records, scale), "", *body, "",
             f"Noise rule: {RULE}. Test accuracy, per data set; a claim holds overall when it holds on every "
             "data set built.", "", "Raw numbers: `raw.csv`.", ""]
    write_text(out / f"{name}.md", "\n".join(lines))


TABLE4_ROLES = [("baseline", "RoBERTa-style encoder"), ("layerdrop", "+ LayerDrop 0.2"),
                ("deep_layerdrop", "+ LayerDrop 0.2, twice as deep")]
TABLE7_ROLES = [("baseline", "from scratch, full depth"), ("layerdrop", "LayerDrop, full depth"),
                ("scratch_half", "from scratch at half depth"), ("layerdrop_half", "LayerDrop, pruned to half"),
                ("distilled_half", "distilled at half depth (DistilBERT's recipe)"),
                ("scratch_quarter", "from scratch at a quarter"), ("layerdrop_quarter", "LayerDrop, pruned to a quarter"),
                ("distilled_quarter", "distilled at a quarter")]


def rows_for(artefact: str, records: list[dict], runs_dir: Path) -> list[dict]:
    """The reported rows of a fine-tuning artefact: its records joined with their pretraining runs, the
    best valid point of each sweep (Figure 8: labelled by drop rate and share pruned)."""
    rows = best_of_sweep(rows_of(join_parents(records, runs_dir), artefact))
    if artefact == "figure8":
        for row in rows:
            row["role"] = f"p{row['layerdrop_p']}_pruned{round(_share(row))}"
    return rows


def _share(row: dict) -> float:
    return 100 * (1 - row["kept_layers"] / row["encoder_layers"])


def table4_claims(rows: list[dict]) -> list[ClaimResult]:
    return [_claim(rows, "table4", "C7", "LayerDrop improves the full encoder after fine-tuning", "layerdrop",
                   "baseline"),
            _claim(rows, "table4", "C8", "the deeper LayerDrop encoder does better", "deep_layerdrop", "layerdrop")]


def table7_claims(rows: list[dict]) -> list[ClaimResult]:
    return [
        _claim(rows, "table7", "C2", "pruned to half, the LayerDrop encoder matches or beats one pretrained at that "
               "depth", "layerdrop_half", "scratch_half", kind="matches"),
        _claim(rows, "table7", "C2", "... and pruned to a quarter", "layerdrop_quarter", "scratch_quarter",
               kind="matches"),
        _claim(rows, "table7", "C10", "pruned to half, it beats the encoder pretrained at that depth (the paper: "
               "BERT)", "layerdrop_half", "scratch_half"),
        _claim(rows, "table7", "C10", "... and the student distilled to that depth (the paper: DistilBERT)",
               "layerdrop_half", "distilled_half"),
        _claim(rows, "table7", "C10", "pruned to a quarter, it beats the student distilled to that depth",
               "layerdrop_quarter", "distilled_quarter")]


def figure8_claims(rows: list[dict]) -> list[ClaimResult]:
    text = "the more you will prune, the higher the training drop rate should be"
    rates, shares = sorted({r["layerdrop_p"] for r in rows}), sorted({_share(r) for r in rows})
    verdicts = []
    if len(rates) > 1 and shares:
        lo, hi, most = rates[0], rates[-1], shares[-1]
        for d, s in _datasets(rows):
            a = [r["test_acc"] for r in rows if r["layerdrop_p"] == hi and r["dataset"] == d and _share(r) == most]
            b = [r["test_acc"] for r in rows if r["layerdrop_p"] == lo and r["dataset"] == d and _share(r) == most]
            if a and b:
                verdicts.append((s, judge(a, b, higher_is_better=True), a, b))
    if not verdicts:
        return [ClaimResult("C6", "figure8", text, "not built yet", "(rows missing)")]
    detail = (f"pruned the most ({shares[-1]:.0f}%), the encoder trained at LayerDrop {rates[-1]} against the one "
              f"trained at {rates[0]}: " + "; ".join(
                  f"{s} stand-in: {statistics.fmean(a):.1f} vs {statistics.fmean(b):.1f}, {v.describe()}"
                  for s, v, a, b in verdicts) + ".")
    return [ClaimResult.of("C6", "figure8", text, combine([v for _, v, _, _ in verdicts]), detail)]


CLAIMS_OF = {"table4": table4_claims, "table7": table7_claims, "figure8": figure8_claims}


def table4(records: list[dict], out: Path, paper_csv: Path, scale: str, runs_dir: Path = Path("runs")) -> None:
    rows = rows_for("table4", records, runs_dir)
    body = _table(rows, TABLE4_ROLES, _paper(paper_csv)) + [
        "", "## Did the paper's claims hold at this scale?", "", *(c.line() for c in table4_claims(rows))]
    _write(out, "table4", "Table 4: pretraining with LayerDrop, fine-tuned at full depth", rows, records, scale, body)


def table7(records: list[dict], out: Path, paper_csv: Path, scale: str, runs_dir: Path = Path("runs")) -> None:
    """Table 7 and Figure 3: the LayerDrop encoder pruned to half and a quarter of its depth before
    fine-tuning (LayerDrop off), against encoders pretrained from scratch and students distilled to it."""
    rows = rows_for("table7", records, runs_dir)
    body = _table(rows, TABLE7_ROLES, _paper(paper_csv)) + [
        "", "Figure 3: `figure3.png` (accuracy against the share of layers pruned, per data set).", "",
        "## Did the paper's claims hold at this scale?", "", *(c.line() for c in table7_claims(rows))]
    _write(out, "table7", "Table 7: pruned encoders, fine-tuned, against encoders of that depth", rows, records,
           scale, body)
    figure3(rows, out / "figure3.png")


def figure3(rows: list[dict], path: Path) -> None:
    datasets = _datasets(rows)
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.5 * max(1, len(datasets)), 3.8), squeeze=False)
    series = {"LayerDrop, pruned": ("layerdrop", "layerdrop_half", "layerdrop_quarter"),
              "from scratch at that depth": ("baseline", "scratch_half", "scratch_quarter"),
              "distilled to that depth": ("baseline", "distilled_half", "distilled_quarter")}
    for ax, (d, s) in zip(axes[0], datasets, strict=False):
        for label, roles in series.items():
            points = []
            for share, role in zip((0, 50, 75), roles, strict=True):
                values = _values(rows, "test_acc", role=role, dataset=d)
                if values:
                    points.append((share, statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0))
            if points:
                ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                            capsize=3, label=label)
        ax.set_title(f"{s} stand-in: {d}")
        ax.set_xlabel("% of encoder layers pruned")
        ax.set_ylabel("test accuracy (%)")
        ax.set_xticks([0, 50, 75])
        ax.legend(fontsize=7)
    save_figure(fig, path)
    plt.close(fig)


def figure8(records: list[dict], out: Path, scale: str, runs_dir: Path = Path("runs")) -> None:
    """Accuracy against the share of layers pruned, one series per training drop rate (no roles)."""
    rows = rows_for("figure8", records, runs_dir)
    datasets = _datasets(rows)
    rates, shares = sorted({r["layerdrop_p"] for r in rows}), sorted({_share(r) for r in rows})
    lines = ["| training LayerDrop | % pruned | " + " | ".join(f"{s} stand-in: {d} (test)" for d, s in datasets) + " |",
             "|---|---|" + "---|" * len(datasets)]
    for p in rates:
        for share in shares:
            cells = [_cell([r["test_acc"] for r in rows if r["layerdrop_p"] == p and r["dataset"] == d
                            and _share(r) == share]) for d, _ in datasets]
            if any(c != "-" for c in cells):
                lines.append(f"| {p} | {share:.0f} | " + " | ".join(cells) + " |")
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(4.5 * max(1, len(datasets)), 3.8), squeeze=False)
    for ax, (d, s) in zip(axes[0], datasets, strict=False):
        for p in rates:
            by_share: dict[float, list[float]] = {}
            for r in sorted((r for r in rows if r["layerdrop_p"] == p and r["dataset"] == d), key=_share):
                by_share.setdefault(_share(r), []).append(r["test_acc"])
            ax.plot(list(by_share), [statistics.fmean(v) for v in by_share.values()], marker="o", label=f"LayerDrop {p}")
        ax.set_title(f"{s} stand-in: {d}")
        ax.set_xlabel("% of encoder layers pruned")
        ax.set_ylabel("test accuracy (%)")
        ax.legend(fontsize=7)
    save_figure(fig, out / "figure8.png")
    plt.close(fig)
    body = lines + ["", "`figure8.png`: accuracy against the share of layers pruned, per training drop rate.", "",
                    "## Did the paper's claims hold at this scale?", "", *(c.line() for c in figure8_claims(rows))]
    _write(out, "figure8", "Figure 8: training drop rate against pruning, after fine-tuning", rows, records, scale, body)
