"""The record store (``records/``, committed): a copy of every run's ``metrics.json`` and ``context.json``
in the run cache's layout, ``records/<task>/<key>/``. Training writes both copies; the reports read the
store, and a sweep skips a run whose stored record already holds what it asks for, so a fresh clone
regenerates every table and resumes every sweep without the weights (which stay in ``runs/``).

    python -m layerdrop.records sync [--runs-dir runs] [--records-dir records]   # a cache made without it
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerdrop.utils.runs import default_store, sync_store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.records", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sync"], help="sync: copy the run cache's records into the store")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--records-dir", type=Path, default=default_store())
    args = parser.parse_args(argv)
    if not args.runs_dir.is_dir():
        raise SystemExit(f"--runs-dir {args.runs_dir} is not a folder (the run cache, paths.runs_dir)")
    written = sync_store(args.runs_dir, args.records_dir)
    print(f"{len(written)} records copied into {args.records_dir}")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
