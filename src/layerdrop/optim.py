"""Optimizer parameter groups and the warmup + decay schedules used at both scales: cosine (the paper's
translation, LM and summarisation recipes) or linear (RoBERTa's polynomial decay, power 1)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

DECAYS = ("cosine", "linear")


def build_optimizer(
    model: nn.Module, make_optimizer: Callable, *, warmup_steps: int, total_steps: int,
    min_lr_ratio: float = 0.0, warmup_init_ratio: float = 0.0, decay: str = "cosine",
):
    """Weight decay on matrices only (not biases, norms); linear warmup then cosine (or linear) decay to
    ``min_lr_ratio`` of the peak at ``total_steps`` (the paper's cosine schedule, one period)."""
    if decay not in DECAYS:
        raise ValueError(f"decay={decay!r}: must be one of {', '.join(DECAYS)}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} must be in [0, total_steps={total_steps})")
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2]},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    optimizer = make_optimizer(groups)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_init_ratio + (1 - warmup_init_ratio) * (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if decay == "linear":
            return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
