"""Print the run key (the folder name under ``runs/<task>/``) of a configuration, without training:

    python -m layerdrop.runkey experiment=pretrain_mlm layerdrop.p=0 seed=1
    python -m layerdrop.runkey --dir experiment=pretrain_mlm   # its folder: runs_dir/<task>/<key>

What a run that needs another run by key takes (a distilled student's teacher, for example)."""

from __future__ import annotations

import sys

from layerdrop.config import load_config
from layerdrop.utils.runs import run_dir, run_key


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    folder = "--dir" in args
    cfg = load_config([a for a in args if a != "--dir"])
    print(run_dir(cfg) if folder else run_key(cfg))


if __name__ == "__main__":
    main()
