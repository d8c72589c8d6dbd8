"""Evaluate a trained model's sub-networks without fine-tuning: the full model, then every requested
strategy x depth.

Strategies (``prune.strategies``): every_other, first, last, explicit (``prune.layers``),
data_driven (the model's learned rates), random (``prune.samples`` seeded subsets per depth, for
Figure 5) and search_on_valid (the subset with the best valid perplexity: exhaustive up to
``prune.max_exhaustive`` candidates, else a beam search; the search only ever sees the valid split,
so its honest number is the test one).

``prune.stack`` names the stack the depths apply to (the LM has one, ``decoder``; the translation
model prunes its ``decoder`` by default, as in the paper, or its ``encoder``); the other stack keeps
every layer. How a sub-network is scored is the task's (``layerdrop.tasks``): perplexity for the LM;
perplexity, generation and a text metric for translation (``generate.*``, ``task.metric``). Each row
records the settings it was made with, so changing them re-evaluates.
"""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from layerdrop.models.pruning import (
    SEARCHED,
    STRATEGIES,
    count_parameters,
    layers_to_keep,
    prune_model,
    random_subsets,
    search_layers,
)
from layerdrop.tasks import SPLITS, Task, get_task

log = logging.getLogger("layerdrop")


def learned_rates(model: nn.Module, stack_name: str = "decoder") -> list[float] | None:
    """The learned drop rates of one stack (None if that stack's rates are fixed)."""
    stack = getattr(model, model.stacks[stack_name][0].rstrip("."))
    if not stack.learned:
        return None
    with torch.no_grad():
        return stack.drop_rates().tolist()


def stack_size(model: nn.Module, stack: str) -> int:
    if stack not in model.stacks:
        raise ValueError(f"prune.stack {stack!r} is not a stack of {type(model).__name__}; "
                         f"allowed: {', '.join(model.stacks)}")
    return getattr(model.config, model.stacks[stack][1])


def prune_grid(cfg: DictConfig, model: nn.Module) -> list[tuple[str, list[int] | int]]:
    """(strategy, kept layers) for the full model (strategy "none") and every strategy x depth below
    full, without repeats; search_on_valid appears as (strategy, depth): its layers come from the search."""
    n_layers = stack_size(model, cfg.prune.get("stack", "decoder"))
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
            rates = learned_rates(model, cfg.prune.get("stack", "decoder")) if strategy == "data_driven" else None
            options = [layers_to_keep(strategy, n_layers, d, rates=rates) for d in depths]
        for keep in options:
            if (strategy, tuple(keep)) not in seen:  # a subset is evaluated once per strategy
                seen.add((strategy, tuple(keep)))
                grid.append((strategy, keep))
    return grid


class SubnetEvaluator:
    """Scores of pruned copies of one model on the data module's splits, through Lightning, as its task
    scores them."""

    def __init__(self, model: nn.Module, datamodule, cfg: DictConfig, task: Task | None = None):
        self.model, self.datamodule = model, datamodule
        self.task = task or get_task(cfg)
        self.stack = cfg.prune.get("stack", "decoder")
        self.settings = self.task.eval_settings()
        self.trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, precision=cfg.prune.precision,
                                  logger=False, enable_progress_bar=cfg.trainer.enable_progress_bar,
                                  enable_model_summary=False, enable_checkpointing=False)

    def subnet(self, keep: list[int]) -> nn.Module:
        n = stack_size(self.model, self.stack)
        return self.model if len(keep) == n else prune_model(self.model, {self.stack: keep})

    def evaluate(self, keep: list[int], splits) -> dict:
        pruned = self.subnet(keep)
        lit = self.task.wrap(pruned)
        row = {"depth": len(keep), "layers": list(keep), "n_params": count_parameters(pruned)}
        if len(self.model.stacks) > 1:  # a single-stack row names none: it can only be that stack
            row["stack"] = self.stack
        if self.settings:
            row[self.task.settings_key] = self.settings
        for split in splits:
            row.update(self.task.evaluate(lit, self.datamodule, split, self.trainer))
        return row

    def search_score(self, keep: list[int]) -> float:
        """What the layer search minimises: the valid metric, negated when higher is better."""
        value = self.evaluate(keep, ["valid"])[f"valid_{self.task.search_metric}"]
        return -value if self.task.higher_is_better else value


def evaluate_grid(model: nn.Module, datamodule, cfg: DictConfig, skip: set | None = None,
                  task: Task | None = None) -> list[dict]:
    """New rows for every grid entry not in ``skip`` ((strategy, layers) or (strategy, depth) pairs)."""
    bad = set(cfg.prune.splits) - set(SPLITS)
    if bad:
        raise ValueError(f"prune.splits {sorted(bad)} not allowed; choose from {', '.join(SPLITS)}")
    evaluator = SubnetEvaluator(model, datamodule, cfg, task)
    skip = skip if skip is not None else set()
    n_layers = stack_size(model, evaluator.stack)
    rows = []
    for strategy, target in prune_grid(cfg, model):
        key = (strategy, target if isinstance(target, int) else tuple(target))
        if key in skip:
            continue
        extra = {}
        if strategy == "search_on_valid":
            start = time.time()
            keep, n_scored = search_layers(evaluator.search_score, n_layers, target, cfg.prune.max_exhaustive,
                                           cfg.prune.beam)
            extra = {"search_evaluations": n_scored, "search_s": round(time.time() - start, 1), "search_split": "valid"}
        else:
            keep = target
        row = {"strategy": strategy, **evaluator.evaluate(keep, cfg.prune.splits), **extra}
        if strategy == "data_driven":
            row["learned_rates"] = learned_rates(model, evaluator.stack)
        metric = evaluator.task.eval_metrics[0]
        log.info("%s %s %s: %d params, %s", evaluator.stack, strategy, keep, row["n_params"],
                 ", ".join(f"{s} {metric} {row[f'{s}_{metric}']:.2f}" for s in cfg.prune.splits))
        rows.append(row)
    return rows


def row_key(row: dict) -> tuple:
    target = row["depth"] if row["strategy"] == "search_on_valid" else tuple(row["layers"])
    return row.get("stack", "decoder"), row["strategy"], target


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Old rows that no new row replaces (same stack, strategy and layers), then the new ones."""
    replaced = {row_key(r) for r in new}
    return [r for r in old if row_key(r) not in replaced] + new


def done_keys(rows: list[dict], stack: str = "decoder", settings: dict | None = None) -> set:
    """What ``evaluate_grid`` may skip: rows of this stack made with these settings; searches by
    depth, everything else by its layers. A row naming no stack is a single-stack model's (``evaluate``
    names the stack only where a model has two), so it is the stack asked about, a decoder or an encoder."""
    settings = settings or {}
    return {(r["strategy"], r["depth"]) if r["strategy"] == "search_on_valid" else (r["strategy"], tuple(r["layers"]))
            for r in rows if r.get("stack", stack) == stack and row_settings(r) == settings}


def row_settings(row: dict) -> dict:
    """The evaluation settings a row was made with (generation for translation; the LM's context window)."""
    return row.get("generate", row.get("settings", {}))
