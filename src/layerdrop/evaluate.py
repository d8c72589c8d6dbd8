"""Evaluate a trained model's sub-networks without fine-tuning: the full model, then every requested
strategy x depth.

Strategies (``prune.strategies``): every_other, first, last, explicit (``prune.layers``),
data_driven (the model's learned rates), random (``prune.samples`` seeded subsets per depth, for
Figure 5) and search_on_valid (the subset with the best valid perplexity: exhaustive up to
``prune.max_exhaustive`` candidates, else a beam search; the search only ever sees the valid split,
so its honest number is the test one).
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from layerdrop.models.layerdrop import LayerDropList
from layerdrop.models.pruning import (
    SEARCHED,
    STRATEGIES,
    count_parameters,
    layers_to_keep,
    prune_model,
    random_subsets,
    search_layers,
)

log = logging.getLogger("layerdrop")
SPLITS = {"valid": "val_dataloader", "test": "test_dataloader"}


def learned_rates(model: nn.Module) -> list[float] | None:
    stack = next((m for m in model.modules() if isinstance(m, LayerDropList)), None)
    if stack is None or not stack.learned:
        return None
    with torch.no_grad():
        return stack.drop_rates().tolist()


def prune_grid(cfg: DictConfig, model: nn.Module) -> list[tuple[str, list[int] | int]]:
    """(strategy, kept layers) for the full model (strategy "none") and every strategy x depth below
    full, without repeats; search_on_valid appears as (strategy, depth): its layers come from the search."""
    n_layers = model.config.n_layers
    grid, seen = [("none", list(range(n_layers)))], {tuple(range(n_layers))}
    depths = [int(d) for d in (cfg.prune.depths or range(1, n_layers))]
    for strategy in cfg.prune.strategies:
        if strategy not in STRATEGIES + SEARCHED:
            raise ValueError(f"unknown prune strategy {strategy!r}; allowed: {', '.join(STRATEGIES + SEARCHED)}")
        if strategy == "search_on_valid":
            grid += [(strategy, d) for d in depths]
            continue
        if strategy == "explicit":
            options = [layers_to_keep("explicit", n_layers, layers=list(cfg.prune.layers or []))]
        elif strategy == "random":
            options = [s for d in depths for s in random_subsets(n_layers, d, cfg.prune.samples, cfg.prune.seed)]
        else:
            rates = learned_rates(model) if strategy == "data_driven" else None
            options = [layers_to_keep(strategy, n_layers, d, rates=rates) for d in depths]
        for keep in options:
            if (strategy, tuple(keep)) not in seen:  # a subset is evaluated once per strategy
                seen.add((strategy, tuple(keep)))
                grid.append((strategy, keep))
    return grid


class SubnetEvaluator:
    """Perplexity of pruned copies of one model on the data module's splits, through Lightning."""

    def __init__(self, model: nn.Module, datamodule, cfg: DictConfig):
        self.model, self.datamodule = model, datamodule
        self.lit_cls = get_class(cfg.task.lit_module)
        self.trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.prune.precision,
                                  logger=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                                  enable_model_summary=False, enable_checkpointing=False)

    def subnet(self, keep: list[int]) -> nn.Module:
        n = self.model.config.n_layers
        return self.model if len(keep) == n else prune_model(self.model, {"decoder": keep})

    def evaluate(self, keep: list[int], splits) -> dict:
        pruned = self.subnet(keep)
        lit = self.lit_cls.wrap(pruned)
        row = {"depth": len(keep), "layers": list(keep), "n_params": count_parameters(pruned)}
        for split in splits:
            start = time.time()
            result = self.trainer.test(lit, dataloaders=getattr(self.datamodule, SPLITS[split])(), verbose=False)[0]
            seconds = time.time() - start
            row[f"{split}_ppl"], row[f"{split}_loss"] = result["test/ppl"], result["test/loss"]
            row[f"{split}_tokens"] = int(lit.eval_tokens)
            row[f"{split}_tokens_per_s"] = round(lit.eval_tokens / seconds, 1)
        return row


def evaluate_grid(model: nn.Module, datamodule, cfg: DictConfig, skip: set = frozenset()) -> list[dict]:
    """New rows for every grid entry not in ``skip`` ((strategy, layers) or (strategy, depth) pairs)."""
    bad = set(cfg.prune.splits) - set(SPLITS)
    if bad:
        raise ValueError(f"prune.splits {sorted(bad)} not allowed; choose from {', '.join(SPLITS)}")
    evaluator = SubnetEvaluator(model, datamodule, cfg)
    rows = []
    for strategy, target in prune_grid(cfg, model):
        key = (strategy, target if isinstance(target, int) else tuple(target))
        if key in skip:
            continue
        extra = {}
        if strategy == "search_on_valid":
            start = time.time()
            keep, n_scored = search_layers(lambda k: evaluator.evaluate(k, ["valid"])["valid_ppl"],
                                           model.config.n_layers, target, cfg.prune.max_exhaustive, cfg.prune.beam)
            extra = {"search_evaluations": n_scored, "search_s": round(time.time() - start, 1), "search_split": "valid"}
        else:
            keep = target
        row = {"strategy": strategy, **evaluator.evaluate(keep, cfg.prune.splits), **extra}
        if strategy == "data_driven":
            row["learned_rates"] = learned_rates(model)
        log.info("%s %s: %d params, %s", strategy, keep, row["n_params"],
                 ", ".join(f"{s} ppl {row[f'{s}_ppl']:.2f}" for s in cfg.prune.splits))
        rows.append(row)
    return rows


def done_keys(rows: list[dict]) -> set:
    """What ``evaluate_grid`` may skip: searches by depth, everything else by its layers."""
    return {(r["strategy"], r["depth"]) if r["strategy"] == "search_on_valid" else (r["strategy"], tuple(r["layers"]))
            for r in rows}
