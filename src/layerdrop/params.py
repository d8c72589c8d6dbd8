"""Print an experiment's parameter count without allocating its weights (meta device).

    python -m layerdrop.params experiment=table2_lm scale=paper
    python -m layerdrop.params experiment=table1_mt_deep scale=paper
"""

from __future__ import annotations

import sys

import torch
from hydra.utils import get_class

from layerdrop.config import load_config
from layerdrop.train import model_config, stack_depths


def count_for(overrides: list[str]) -> int:
    cfg = load_config(overrides)
    with torch.device("meta"):
        lit = get_class(cfg.task.lit_module)(model=model_config(cfg))
    return sum(p.numel() for p in lit.model.parameters())


def describe(overrides: list[str]) -> str:
    cfg = load_config(overrides)
    n = count_for(overrides)
    field = {"encoder": "model.encoder_layers", "decoder": "model.decoder_layers"}
    stacks = []
    for stack, depth in stack_depths(cfg).items():
        key = field[stack] if "encoder_layers" in cfg.model else "model.n_layers"
        per_layer = n - count_for([*overrides, f"{key}={depth - 1}"])
        stacks.append(f"{depth} {stack} layers of {per_layer:,}")
    return (f"{cfg.experiment_name} [{cfg.scale.name}] {cfg.task.name}: {n:,} parameters "
            f"({'; '.join(stacks)}; d={cfg.model.d_model}, ffn={cfg.model.d_ff}, vocab={cfg.model.vocab_size})")


def main(argv: list[str] | None = None) -> None:
    print(describe(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
