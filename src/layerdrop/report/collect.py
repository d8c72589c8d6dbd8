"""Run records (``runs/<task>/<key>/metrics.json``) -> tidy rows, one per evaluated sub-network."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

COLUMNS = ["run_key", "scale", "n_layers", "layerdrop_p", "target", "learned", "strategy", "kept_layers", "layers",
           "n_params", "valid_ppl", "test_ppl", "valid_tokens", "test_tokens", "search_evaluations", "steps",
           "tokens_seen", "train_wall_s", "train_tokens_per_s", "git_sha"]


def load_records(runs_dir: Path, task: str, artefact: str, scale: str) -> list[dict]:
    records = []
    for path in sorted((runs_dir / task).glob("*/metrics.json")):
        record = json.loads(path.read_text())
        if artefact in record.get("artefacts", []) and record.get("scale") == scale and "train" in record:
            records.append(record)
    return records


def tidy_rows(records: list[dict]) -> list[dict]:
    rows = []
    for r in records:
        cfg, train = r["config"], r["train"]
        for e in r["eval"]:
            rows.append({
                "run_key": r["run_key"], "scale": r["scale"], "n_layers": cfg["model"]["n_layers"],
                "layerdrop_p": cfg["layerdrop"]["p"], "target": cfg["layerdrop"].get("target", "layers"),
                "learned": cfg["layerdrop"].get("learned", False), "strategy": e["strategy"], "kept_layers": e["depth"],
                "layers": " ".join(map(str, e["layers"])), "n_params": e["n_params"],
                "valid_ppl": e.get("valid_ppl"), "test_ppl": e.get("test_ppl"),
                "valid_tokens": e.get("valid_tokens"), "test_tokens": e.get("test_tokens"),
                "search_evaluations": e.get("search_evaluations"),
                "steps": train["steps"], "tokens_seen": train["tokens_seen"], "train_wall_s": train["wall_s"],
                "train_tokens_per_s": train.get("train_tokens_per_s"),
                "git_sha": r.get("git_sha"),
            })
    return sorted(rows, key=lambda x: (x["n_layers"], x["layerdrop_p"], x["target"], x["learned"], x["strategy"],
                                       x["kept_layers"], x["layers"]))


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=130)
    plt.close(fig)
    tmp.replace(path)


def provenance(records: list[dict]) -> dict:
    """What a caption says about how the runs were made: data, steps, tokens, machine, wall time."""
    data = records[0].get("data") or {}
    machine = records[0].get("machine", {})
    return {
        "data": data,
        "source": (data.get("provenance") or {}).get("source", "?"),
        "splits": data.get("splits") or {},
        "steps": "/".join(map(str, sorted({r["train"]["steps"] for r in records}))),
        "tokens": sum(r["train"]["tokens_seen"] for r in records),
        "wall_min": sum(r["train"]["wall_s"] for r in records) / 60,
        "machine": f"{machine.get('cpus', '?')} CPUs, {machine.get('platform', '?')}, torch {machine.get('torch', '?')}",
    }
