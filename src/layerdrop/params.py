"""Print an experiment's parameter count without allocating its weights (meta device).

    python -m layerdrop.params experiment=table2_lm scale=paper
    python -m layerdrop.params experiment=table1_mt_deep scale=paper
"""

from __future__ import annotations

import argparse

import torch

from layerdrop.config import load_config
from layerdrop.tasks import get_task
from layerdrop.train import model_config


def count_for(overrides: list[str]) -> int:
    cfg = load_config(overrides)
    with torch.device("meta"):
        lit = get_task(cfg).build_module(model_config(cfg))
    return sum(p.numel() for p in lit.model.parameters())


def describe(overrides: list[str]) -> str:
    cfg = load_config(overrides)
    task = get_task(cfg)
    n = count_for(overrides)
    stacks = []
    for stack, depth in task.stacks.items():  # a layer's size: the model with one layer fewer in that stack
        per_layer = n - count_for([*overrides, f"model.{task.depth_key(stack)}={depth - 1}"])
        stacks.append(f"{depth} {stack} layers of {per_layer:,}")
    return (f"{cfg.experiment_name} [{cfg.scale.name}] {cfg.task.name}: {n:,} parameters "
            f"({'; '.join(stacks)}; d={cfg.model.d_model}, ffn={cfg.model.d_ff}, vocab={cfg.model.vocab_size})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m layerdrop.params", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=table2_lm scale=paper")
    print(describe(parser.parse_args(argv).overrides))


if __name__ == "__main__":
    main()
