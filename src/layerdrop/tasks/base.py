"""The task seam: what differs between task families, behind one small interface (fairseq's ``FairseqTask``,
much smaller because Lightning owns the loop).

``train.py``, ``evaluate.py``, ``params.py`` and ``dryrun.py`` ask a ``Task`` for the model's layer stacks,
the data module, the LightningModule and the scores of a (pruned) model, and never look at a task's model
fields, batch keys or data-module methods themselves. A task registers itself by name, the name that
``conf/task/<name>.yaml`` gives as ``task.name``:

    @register_task("lm")
    class LMTask(Task): ...

    task = get_task(cfg)              # the task class registered as cfg.task.name, bound to cfg
    task.stacks                       # {"decoder": 16}; {"encoder": 6, "decoder": 6}
    lit = task.build_module(model_config(cfg), optim=..., seed=...)
    task.evaluate(task.wrap(pruned), datamodule, "valid", trainer)   # {"valid_ppl": ..., "valid_loss": ...}
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from layerdrop.models.checkpoint import ARCHS
from layerdrop.utils.registry import Registry

#: evaluation split -> the data module's loader of it
SPLITS = {"valid": "val_dataloader", "test": "test_dataloader"}


class Task:
    """One family of tasks, bound to a composed config. Subclasses set the class attributes and override
    ``eval_settings`` / ``evaluate`` / ``config_errors`` where their evaluation or checks differ."""

    #: the model architecture (``models.checkpoint.ARCHS``); its ``stacks`` say what can be pruned
    arch: ClassVar[str]
    #: the typed schema of a run's config (``layerdrop.schema``)
    schema: ClassVar[type]
    #: what scoring a sub-network reports (row keys ``{split}_{metric}``); the first is logged
    eval_metrics: tuple[str, ...]
    #: what ``search_on_valid`` optimises, and which way
    search_metric: str
    higher_is_better: bool
    #: the full model's row key that ``python -m layerdrop.train`` returns to a Hydra sweeper
    sweep_metric: ClassVar[str]
    #: where an evaluation row records the settings it was made with
    settings_key: ClassVar[str] = "settings"
    #: whether the task generates text (``generate.*`` applies, e.g. the curve of ``generate.valid_sentences``)
    generates: ClassVar[bool] = False

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg

    @property
    def name(self) -> str:
        return str(self.cfg.task.name)

    # --- the model

    @property
    def model_class(self) -> type[nn.Module]:
        return ARCHS[self.arch]

    def depth_key(self, stack: str) -> str:
        """The ``model.*`` config key that holds a stack's depth."""
        return self.model_class.stacks[stack][1]

    @property
    def stacks(self) -> dict[str, int]:
        """The model's prunable layer stacks and their configured depths, in the model's order."""
        return {stack: int(self.cfg.model[self.depth_key(stack)]) for stack in self.model_class.stacks}

    def lit_class(self) -> type[pl.LightningModule]:
        """``task.lit_module``: a config may swap the LightningModule without a new task."""
        return get_class(self.cfg.task.lit_module)

    def build_module(self, model: dict, optim: dict | None = None, seed: int = 0) -> pl.LightningModule:
        """The LightningModule for ``model`` (constructor arguments, ``train.model_config``), with the task's
        ``task.module_args`` (e.g. label smoothing)."""
        args = self.cfg.task.get("module_args")
        module_args = OmegaConf.to_container(args, resolve=True) if args is not None else {}
        return self.lit_class()(model=model, optim=optim, seed=seed, **module_args)

    def wrap(self, model: nn.Module) -> pl.LightningModule:
        """A LightningModule that evaluates an existing (e.g. pruned) model."""
        return self.lit_class().wrap(model)

    # --- the data

    def build_data(self) -> pl.LightningDataModule:
        return instantiate(self.cfg.data)

    # --- evaluation

    def eval_settings(self) -> dict[str, Any]:
        """Settings an evaluation row depends on beyond its kept layers; changing them re-evaluates a run."""
        return {}

    def evaluate(self, lit: pl.LightningModule, datamodule, split: str, trainer: pl.Trainer) -> dict[str, Any]:
        """One split's scores of the model ``lit`` wraps: ``{split}_{metric}`` for every eval metric, the
        tokens scored and their rate."""
        start = time.time()
        loader = getattr(datamodule, SPLITS[split])()
        result = trainer.test(lit, dataloaders=loader, verbose=False)[0]
        seconds = time.time() - start
        row = {f"{split}_{metric}": result[f"test/{metric}"] for metric in self.eval_metrics}
        row[f"{split}_tokens"] = int(lit.eval_tokens)
        row[f"{split}_tokens_per_s"] = round(lit.eval_tokens / seconds, 1)
        return row

    # --- config checks

    def config_errors(self, run: dict) -> list[str]:
        """Constraints between this task's keys (``run`` holds the resolved sections of ``schema``)."""
        return []

    def fit_callbacks(self, datamodule) -> list[pl.Callback]:
        """Callbacks the task adds to training (after ``datamodule.setup("fit")``)."""
        return []


TASKS: Registry[type[Task]] = Registry("task", "layerdrop.tasks")
register_task = TASKS.register


def get_task(cfg: DictConfig) -> Task:
    """The task ``cfg.task.name`` names, bound to ``cfg``."""
    return TASKS[str(cfg.task.name)](cfg)
