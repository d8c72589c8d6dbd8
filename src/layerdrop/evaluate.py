"""Evaluate a trained model at every requested pruned depth, without fine-tuning."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from layerdrop.models.pruning import STRATEGIES, count_parameters, layers_to_keep, prune_model

log = logging.getLogger("layerdrop")
SPLITS = {"valid": "val_dataloader", "test": "test_dataloader"}


def prune_grid(cfg: DictConfig, n_layers: int) -> list[tuple[str, list[int]]]:
    """(strategy, kept layers): the full model once (strategy "none"), then every requested strategy x
    depth below full, without repeats."""
    grid, seen = [("none", list(range(n_layers)))], {tuple(range(n_layers))}
    for strategy in cfg.prune.strategies:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown prune strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")
        if strategy == "explicit":
            options = [layers_to_keep("explicit", n_layers, layers=list(cfg.prune.layers or []))]
        else:
            depths = cfg.prune.depths or range(1, n_layers)
            options = [layers_to_keep(strategy, n_layers, int(d)) for d in depths]
        for keep in options:
            if tuple(keep) not in seen:
                seen.add(tuple(keep))
                grid.append((strategy, keep))
    return grid


def evaluate_grid(model: nn.Module, datamodule, cfg: DictConfig, skip: set = frozenset()) -> list[dict]:
    bad = set(cfg.prune.splits) - set(SPLITS)
    if bad:
        raise ValueError(f"prune.splits {sorted(bad)} not allowed; choose from {', '.join(SPLITS)}")
    lit_cls = get_class(cfg.task.lit_module)
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.prune.precision,
                         logger=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                         enable_model_summary=False, enable_checkpointing=False)
    n_layers = model.config.n_layers
    rows = []
    for strategy, keep in prune_grid(cfg, n_layers):
        if (strategy, tuple(keep)) in skip:
            continue
        pruned = model if len(keep) == n_layers else prune_model(model, {"decoder": keep})
        row = {"strategy": strategy, "depth": len(keep), "layers": keep, "n_params": count_parameters(pruned)}
        lit = lit_cls.wrap(pruned)
        for split in cfg.prune.splits:
            start = time.time()
            result = trainer.test(lit, dataloaders=getattr(datamodule, SPLITS[split])(), verbose=False)[0]
            seconds = time.time() - start
            row[f"{split}_ppl"] = result["test/ppl"]
            row[f"{split}_loss"] = result["test/loss"]
            row[f"{split}_tokens"] = int(lit.eval_tokens)
            row[f"{split}_tokens_per_s"] = round(lit.eval_tokens / seconds, 1)
        log.info("%s %s: %d params, %s", strategy, keep, row["n_params"],
                 ", ".join(f"{s} ppl {row[f'{s}_ppl']:.2f}" for s in cfg.prune.splits))
        rows.append(row)
    return rows
