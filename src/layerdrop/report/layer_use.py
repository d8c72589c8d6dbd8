"""Which layers the probed sequence-to-sequence models use: ``results/layer_use/layer_use.md`` from every
``layer_use.json`` in the record store (``python -m layerdrop.metrics.layer_use runs/<task>/<key>``), whatever
artefact the run was trained for.

    python -m layerdrop.report.layer_use [--scale cpu] [--records-dir records] [--out results/layer_use]

One row per probed stack: the run's settings, its valid perplexity at full depth, with wrong sources, with each
layer removed and with each layer kept alone; and, computed, every stack one of whose layers alone scores within
``ONE_LAYER_GAP`` of the whole stack (a stack that works, in effect, as one layer).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from layerdrop.metrics.layer_use import SEQ2SEQ_TASKS
from layerdrop.report.collect import add_records_arg, code_version_line, code_version_note, write_text
from layerdrop.report.figures import provenance
from layerdrop.report.regime import ld_text, run_summary

#: a layer kept alone scores within this of the whole stack: the stack works, in effect, as that one layer
ONE_LAYER_GAP = 0.01
#: wrong sources raise the perplexity by less than this: the model barely reads its source, a target-side LM
SOURCE_GAP = 0.05


def probed(runs_dir: Path, scale: str) -> list[tuple[dict, dict]]:
    """(record, layer_use) for every finished run of ``scale`` with a layer_use.json, by task then run key."""
    out = []
    for task in SEQ2SEQ_TASKS:
        for path in sorted((runs_dir / task).glob("*/layer_use.json")):
            record_path = path.with_name("metrics.json")
            if not record_path.exists():
                continue
            record = json.loads(record_path.read_text())
            if record.get("scale") == scale and "train" in record:
                out.append((record, json.loads(path.read_text())))
    return out


def spread_text(use: dict) -> str:
    """The encoder's output spread, to two significant digits, or - where the probe did not measure it."""
    return f"{use['encoder_spread']:.2g}" if "encoder_spread" in use else "-"


def one_layer_stacks(use: dict) -> list[tuple[str, int, float]]:
    """(stack, layer, its perplexity alone) for each stack of several layers one of which alone scores within
    ``ONE_LAYER_GAP`` of the full model."""
    out = []
    for name, stack in use["stacks"].items():
        alone = stack["only"]
        best = min(range(len(alone)), key=lambda i: alone[i])
        if len(alone) > 1 and alone[best] <= use["full"] * (1 + ONE_LAYER_GAP):
            out.append((name, best, alone[best]))
    return out


def build(runs_dir: Path, out: Path, scale: str) -> int:
    runs = probed(runs_dir, scale)
    lines = ["# Which layers each model uses", ""]
    if runs:
        records = [r for r, _ in runs]
        lines += [code_version_note(records, None) or code_version_line(records), "", provenance(records, scale), ""]
    lines += ["`python -m layerdrop.metrics.layer_use runs/<task>/<key>` on a run's reported weights: teacher-forced "
              "perplexity on the first valid batches at full depth, with one layer of a stack removed (every other "
              "layer as trained, no fine-tuning), with one layer kept alone, and with each target read against "
              "another sentence's source (*wrong source*: how much the model reads its source at all). Layers are "
              "numbered from the input. A layer whose removal changes nothing does no work the model needs. "
              "*encoder spread*: how much the encoder's output varies over the real source positions (the mean "
              "per-dimension standard deviation over the output's root mean square; about 1 when it moves with "
              "its input, near 0 when the encoder outputs one vector whatever it reads; - where the probe "
              "predates it and the run's weights are gone).", "",
              "| task | run | layers | norm | dropout | LayerDrop | seed | steps | full | wrong source | encoder spread "
              "| stack | without layer i | layer i alone |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes, deaf = [], []
    for record, use in runs:
        row = run_summary(record)
        for name, stack in sorted(use["stacks"].items(), reverse=True):  # the encoder first
            without = ", ".join("-" if v is None else f"{v:.1f}" for v in stack["without"])
            alone = ", ".join(f"{v:.1f}" for v in stack["only"])
            lines.append(f"| {record['task']} | `{row['run_key']}` | {row['layers']} | {row['norm']} | {row['dropout']} "
                         f"| {ld_text(row)} | {row['seed']} | {row['steps']} | {use['full']:.1f} "
                         f"| {use['wrong_source']:.1f} | {spread_text(use)} | {name} | {without} | {alone} |")
        who = (f"- `{row['run_key']}` ({record['task']}, {row['norm']}-norm, LayerDrop {ld_text(row)}, "
               f"{row['steps']:,} steps)")
        for name, layer, ppl in one_layer_stacks(use):
            notes.append(f"{who}: its {name} works as one layer: layer {layer} alone scores {ppl:.1f} against "
                         f"{use['full']:.1f} for all {len(use['stacks'][name]['only'])}.")
        rise = use["wrong_source"] / use["full"] - 1
        if rise < SOURCE_GAP:
            spread = spread_text(use)
            deaf.append(f"{who}: wrong sources score {use['wrong_source']:.1f} against {use['full']:.1f} "
                        f"({round(100 * rise, 1) + 0.0:+.1f}%)"  # + 0.0: never "-0.0%"
                        + ("" if spread == "-" else f"; its encoder's output spread is {spread}") + ".")
    if not runs:
        lines.append("| no probed run yet | | | | | | | | | | | | | |")
    lines += ["", f"Stacks that work as one layer (one of their layers alone within {100 * ONE_LAYER_GAP:.0f}% of "
              "the whole):", "", *(notes or ["- none."]), "",
              f"Models that barely read their source (wrong sources raise the perplexity by less than "
              f"{100 * SOURCE_GAP:.0f}%: in effect a language model of the target side):", "", *(deaf or ["- none."]), ""]
    write_text(out / "layer_use.md", "\n".join(lines))
    return len(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.report.layer_use", description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    add_records_arg(parser)
    parser.add_argument("--out", type=Path, default=Path("results/layer_use"))
    args = parser.parse_args(argv)
    n = build(args.runs_dir, args.out, args.scale)
    print(f"wrote {args.out}/layer_use.md from {n} probed runs")


if __name__ == "__main__":
    main()
