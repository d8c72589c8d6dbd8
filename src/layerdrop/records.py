"""The record store (``records/``, committed): a copy of every run's ``metrics.json`` and ``context.json``
in the run cache's layout, ``records/<task>/<key>/``. Training writes both copies; the reports read the
store, and a sweep skips a run whose stored record already holds what it asks for, so a fresh clone
regenerates every table and resumes every sweep without the weights (which stay in ``runs/``).

    python -m layerdrop.records sync [--runs-dir runs] [--records-dir records]   # a cache made without it
    python -m layerdrop.records retag KEY [KEY ...] --drop table1 [--add regime_mt]

``retag`` moves finished runs out of an artefact when its regime changes (say Table 1's step budget): the
runs keep their records and evaluations, lose the artefact and their role (row) there, and may join another
artefact (the regime search whose evidence they become). Both copies, the run cache's and the store's, are
rewritten atomically; nothing is trained or deleted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from layerdrop.utils.runs import default_store, sync_store
from layerdrop.utils.store import read_json, write_json


def _copies(key: str, runs_dir: Path, store: Path) -> list[Path]:
    """Every ``metrics.json`` of run ``key``: the run cache's and the store's (``<dir>/<task>/<key>/``)."""
    return [p for base in (runs_dir, store) if base.is_dir() for p in sorted(base.glob(f"*/{key}/metrics.json"))]


def retag(keys: list[str], drop: str, add: str | None, runs_dir: Path, store: Path) -> list[str]:
    """Take ``drop`` (and the role there) from each run's record and add ``add`` (without a role). Every run
    is checked before anything is written: an unknown key or a run that does not serve ``drop`` is an error
    that names it. Returns one line per run changed."""
    if add == drop:
        raise SystemExit(f"--add {add!r} is the artefact being dropped; name another or leave --add out")
    plans = []
    for key in keys:
        copies = _copies(key, runs_dir, store)
        if not copies:
            raise SystemExit(f"run {key!r}: no metrics.json under {runs_dir}/*/{key}/ or {store}/*/{key}/")
        for path in copies:
            record = read_json(path)
            if drop not in record.get("artefacts", []):
                raise SystemExit(f"run {key!r} ({path}) does not serve {drop!r}; it serves "
                                 f"{', '.join(record.get('artefacts', [])) or 'no artefact'}")
            plans.append((path, record))
    lines = []
    for path, record in plans:
        role = (record.get("roles") or {}).pop(drop, None)
        record["artefacts"] = [a for a in record["artefacts"] if a != drop]
        if add and add not in record["artefacts"]:
            record["artefacts"].append(add)
        write_json(path, record)
        lines.append(f"{path}: left {drop}" + (f" (role {role})" if role else "") + (f", joined {add}" if add else ""))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.records", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["sync", "retag"],
                        help="sync: copy the run cache's records into the store; retag: move runs out of an artefact")
    parser.add_argument("keys", nargs="*", help="retag: the run keys")
    parser.add_argument("--drop", help="retag: the artefact the runs leave (with their role there)")
    parser.add_argument("--add", help="retag: an artefact the runs join, without a role")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    parser.add_argument("--records-dir", type=Path, default=default_store())
    args = parser.parse_args(argv)
    if args.command == "retag":
        if not args.keys or not args.drop:
            raise SystemExit("retag needs run keys and --drop ARTEFACT (e.g. retag 348f3a43af85 --drop table1)")
        for line in retag(args.keys, args.drop, args.add, args.runs_dir, args.records_dir):
            print(line)
        return
    if args.keys or args.drop or args.add:
        raise SystemExit("sync takes no run keys, --drop or --add (those are retag's)")
    if not args.runs_dir.is_dir():
        raise SystemExit(f"--runs-dir {args.runs_dir} is not a folder (the run cache, paths.runs_dir)")
    written = sync_store(args.runs_dir, args.records_dir)
    print(f"{len(written)} records copied into {args.records_dir}")
    for path in written:
        print(f"  {path}")


if __name__ == "__main__":
    main()
