"""Run a sweep of training runs, each with as many processes as its trainer asks for.

    python -m layerdrop.launch experiment=table2_lm scale=paper layerdrop.p=0,0.2
    python -m layerdrop.launch --dry-run experiment=table1_mt scale=paper layerdrop.p=0,0.2

Lightning's own DDP launcher re-executes the command line in every rank, so `python -m
layerdrop.train -m ...` with `trainer.devices=8` would run the whole sweep inside every rank. This
launcher expands the sweep itself (Hydra's basic-sweeper rule: the cartesian product of the
comma-separated values) and starts each run on its own: `torchrun --standalone --nproc_per_node N`
when the run needs N > 1 processes on this node, else one Hydra multirun for all the single-process
runs (what `scale=cpu` does). Runs in the run cache are skipped by `train` as usual. A multi-node
run needs a cluster launcher (Hydra's submitit plugin: `hydra/launcher=submitit_slurm`, one task per
GPU), not this script.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser

from layerdrop.config import load_config


def expand(overrides: list[str]) -> list[list[str]]:
    """Every run of a sweep as its own list of overrides."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def expanded(commands: list[tuple[str, list[str]]], kind: str):
    """Each run of a dry run's ``kind`` commands (``(kind, overrides)``, as ``backlog.dry_run`` gives them), each
    sweep expanded, with its composed config."""
    for command, overrides in commands:
        if command == kind:
            for run in expand(overrides):
                yield run, load_config(run)


def processes(overrides: list[str]) -> int:
    """Processes one run needs on this node: trainer.devices (an int) when it is more than one."""
    cfg = load_config(overrides)
    devices, nodes = cfg.trainer.get("devices", 1), int(cfg.trainer.get("num_nodes", 1) or 1)
    if nodes > 1:
        raise ValueError(f"trainer.num_nodes={nodes}: launch multi-node runs with a cluster launcher "
                         "(hydra/launcher=submitit_slurm), one task per GPU")
    return devices if isinstance(devices, int) and devices > 1 else 1


def commands(overrides: list[str]) -> list[list[str]]:
    """The commands that run the sweep: single-process runs first (one multirun if all are), then one
    torchrun per multi-process run."""
    runs = expand(overrides)
    sizes = [processes(run) for run in runs]
    train = [sys.executable, "-m", "layerdrop.train"]
    if all(n == 1 for n in sizes):
        return [[*train, "-m", *overrides]]
    out = [[*train, *run] for run, n in zip(runs, sizes) if n == 1]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    return out + [[*torchrun, f"--nproc_per_node={n}", "-m", "layerdrop.train", *run]
                  for run, n in zip(runs, sizes) if n > 1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args, overrides = parser.parse_known_args(argv)
    for cmd in commands(overrides):
        print("+", shlex.join(cmd), flush=True)
        if not args.dry_run:
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
