"""Print the run key (the folder name under ``runs/<task>/``) of a configuration, without training:

    python -m layerdrop.runkey experiment=pretrain_mlm layerdrop.p=0 seed=1

What a run that needs another run by key takes (a distilled student's teacher, for example)."""

from __future__ import annotations

import sys

from layerdrop.config import load_config
from layerdrop.utils.runs import run_key


def main(argv: list[str] | None = None) -> None:
    print(run_key(load_config(list(sys.argv[1:] if argv is None else argv))))


if __name__ == "__main__":
    main()
