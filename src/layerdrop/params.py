"""Print an experiment's parameter count without allocating its weights (meta device).

    python -m layerdrop.params experiment=table2_lm scale=paper
"""

from __future__ import annotations

import sys

import torch
from hydra.utils import get_class

from layerdrop.config import load_config
from layerdrop.train import model_config


def count_for(overrides: list[str]) -> int:
    cfg = load_config(overrides)
    with torch.device("meta"):
        lit = get_class(cfg.task.lit_module)(model=model_config(cfg))
    return sum(p.numel() for p in lit.model.parameters())


def main(argv: list[str] | None = None) -> None:
    overrides = sys.argv[1:] if argv is None else argv
    cfg = load_config(overrides)
    n = count_for(overrides)
    per_layer = n - count_for([*overrides, f"model.n_layers={cfg.model.n_layers - 1}"])
    print(f"{cfg.experiment_name} [{cfg.scale.name}] {cfg.task.name}: {n:,} parameters "
          f"({cfg.model.n_layers} layers of {per_layer:,}; d={cfg.model.d_model}, ffn={cfg.model.d_ff})")


if __name__ == "__main__":
    main()
