"""Regenerate a paper artefact from the run records.

    python -m layerdrop.report table2 [--scale cpu] [--records-dir records] [--out results/table2]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from layerdrop.report import figures, glue, regime, regime_mlm, stability, table1, table2, table3, table8
from layerdrop.report.collect import (
    add_records_arg,
    code_version_line,
    code_version_note,
    load_records,
    select_roles,
    write_text,
)
from layerdrop.report.curves import artefact_curves
from layerdrop.utils.runs import ROLES

log = logging.getLogger("layerdrop")

ARTEFACTS = {
    "table1": ("mt", table1.build),
    "table2": ("lm", table2.build),
    "table3": (("sum", "qa"), table3.build),
    "figure4": ("lm", figures.figure4),
    "figure5": ("lm", figures.figure5),
    "figure6": ("lm", figures.figure6),
    "figure7": ("lm", figures.figure7),
    "regime_lm": ("lm", regime.build),
    "regime_mt": ("mt", regime.build),
    "regime_sum": ("sum", regime.build),
    "regime_qa": ("qa", regime.build),
    "regime_mlm": ("mlm_classify", regime_mlm.build),
    "stability_mt": ("mt", stability.build),
    "table8": ("lm_finetune", table8.build),
    "table4": ("mlm_classify", glue.table4),
    "table7": ("mlm_classify", glue.table7),
    "figure8": ("mlm_classify", glue.figure8),
}
REPO = Path(__file__).resolve().parents[3]
#: artefacts that draw their own curves.png (the others get one grouped by what varies between runs)
OWN_CURVES = {"table2", "table8", "stability_mt", "regime_lm", "regime_mt", "regime_sum", "regime_qa", "regime_mlm"}
#: artefacts of fine-tunings (runs/mlm_classify/), joined with their pretraining runs in --runs-dir
FINETUNED = {"table4", "table7", "figure8", "regime_mlm"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.report", description=__doc__.splitlines()[0])
    parser.add_argument("artefact", choices=sorted(ARTEFACTS))
    parser.add_argument("--scale", default="cpu", choices=["cpu", "paper"])
    add_records_arg(parser)
    parser.add_argument("--out", type=Path, default=None, help="default: results/<artefact> (paper scale: results/<artefact>_paper)")
    args = parser.parse_args(argv)
    task, build = ARTEFACTS[args.artefact]
    out = args.out or Path("results") / (args.artefact if args.scale == "cpu" else f"{args.artefact}_paper")
    records = [r for t in (task if isinstance(task, tuple) else (task,))
               for r in load_records(args.runs_dir, t, args.artefact, args.scale)]
    if not records:
        raise ValueError(f"no finished {args.scale}-scale runs tagged {args.artefact} in {args.runs_dir}: "
                         f"run `make reproduce-{args.artefact}` first")
    if args.artefact in FINETUNED:  # rows by role (or drop rate), the best of each learning-rate sweep
        paper = REPO / "experiments" / "paper_numbers" / f"{args.artefact}.csv"
        build(records, out, scale=args.scale, runs_dir=args.runs_dir,
              **({} if args.artefact in ("figure8", "regime_mlm") else {"paper_csv": paper}))
    elif args.artefact in ROLES:  # tables: one run per row (or its seeds), named by the role it recorded
        records = select_roles(records, args.artefact)
        build(records, out, REPO / "experiments" / "paper_numbers" / f"{args.artefact}.csv", args.scale)
    else:
        build(records, out, args.scale)
    if args.artefact not in OWN_CURVES:
        artefact_curves(records, out / "curves.png", f"{args.artefact}: learning curves ({args.scale} scale)")
    note = code_version_note(records, args.artefact)
    if note:
        log.warning(note.replace("**", ""))
    add_note(out / f"{args.artefact}.md", note or code_version_line(records))
    print(f"wrote {out}/ from {len(records)} runs")


def add_note(markdown: Path, note: str) -> None:
    """Put ``note`` under the title of a generated markdown file (every report writes ``<artefact>.md``)."""
    title, _, rest = markdown.read_text().partition("\n")
    write_text(markdown, f"{title}\n\n{note}\n{rest}")


if __name__ == "__main__":
    main()
