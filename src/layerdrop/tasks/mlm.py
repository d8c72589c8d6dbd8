"""Masked-LM pretraining (paper Tables 4 and 7, Figures 3 and 8): a RoBERTa-style encoder scored by the
perplexity of its masked-token predictions, on the LM's token blocks."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from layerdrop.schema import MLMRun
from layerdrop.tasks.base import Task, register_task


@register_task("mlm")
class MLMTask(Task):
    arch = "encoder"
    schema = MLMRun
    eval_metrics = ("ppl", "loss")
    search_metric, higher_is_better = "ppl", False
    sweep_metric = "valid_ppl"

    def build_module(self, model: dict, optim: dict | None = None, seed: int = 0) -> pl.LightningModule:
        """A distilled student (``task.module_args.teacher``: the teacher's run key) gets the teacher's
        ``model.pt`` from the run cache; the path is not part of the config (nor of the run key)."""
        teacher = (self.cfg.task.get("module_args") or {}).get("teacher")
        if teacher is None:
            return super().build_module(model, optim, seed)
        lit = super().lit_class()
        path = Path(self.cfg.paths.runs_dir) / "mlm" / str(teacher) / "model.pt"
        from omegaconf import OmegaConf

        args = OmegaConf.to_container(self.cfg.task.module_args, resolve=True)
        return lit(model=model, optim=optim, seed=seed, teacher_path=str(path), **args)

    def config_errors(self, run: dict) -> list[str]:
        from layerdrop.lit.mlm import check_masking

        model, data, errors = run["model"], run["data"], []
        if model["vocab_size"] != data["vocab_size"] + 1:
            errors.append(f"model.vocab_size={model['vocab_size']}: must be data.vocab_size + 1 = "
                          f"{data['vocab_size'] + 1} (<mask> is the id after the corpus vocabulary)")
        if model.get("max_len") is not None and model["max_len"] < data.get("block_size", 0):
            errors.append(f"model.max_len={model['max_len']}: must be >= data.block_size={data['block_size']}")
        if data.get("context_window", 0):
            errors.append(f"data.context_window={data['context_window']}: must be 0 (a masked LM sees the "
                          "whole block; there is no left context to slide)")
        if data.get("frequency_order"):
            errors.append("data.frequency_order=true: must be false for the masked LM (it exists for the adaptive "
                          "softmax, and would move <pad> away from model.pad_id)")
        args = (self.cfg.task.get("module_args") or {})
        if str(self.cfg.task.lit_module).endswith("DistillLitModule") and not args.get("teacher"):
            errors.append("task.module_args.teacher: a distilled student needs its teacher's run key "
                          "(python -m layerdrop.runkey <the teacher's overrides> prints it)")
        try:
            check_masking(float(args.get("mask_prob", 0.15)), float(args.get("mask_frac", 0.8)),
                          float(args.get("random_frac", 0.1)))
        except ValueError as error:
            errors.append(f"task.module_args: {error}")
        return errors
