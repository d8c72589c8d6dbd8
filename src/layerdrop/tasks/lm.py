"""Language modelling (paper Table 2): a decoder-only model scored by perplexity."""

from __future__ import annotations

from typing import Any

from layerdrop.schema import LMRun
from layerdrop.tasks.base import Task, register_task


@register_task("lm")
class LMTask(Task):
    arch = "lm"
    schema = LMRun
    eval_metrics = ("ppl", "loss")
    search_metric, higher_is_better = "ppl", False
    sweep_metric = "valid_ppl"

    def eval_settings(self) -> dict[str, Any]:
        """The context window of sliding-window perplexity; 0 is left out (rows made before the setting
        existed carry none)."""
        window = int(self.cfg.data.get("context_window") or 0)
        return {"context_window": window} if window else {}

    def config_errors(self, run: dict) -> list[str]:
        model, data, errors = run["model"], run["data"], []
        if model.get("max_len") is not None and model["max_len"] < data.get("block_size", 0):
            errors.append(f"model.max_len={model['max_len']}: must be >= "
                          f"data.block_size={data['block_size']} (a position for every token of a block)")
        if data.get("context_window", 0) >= data.get("block_size", 1):
            errors.append(f"data.context_window={data['context_window']}: must be below "
                          f"data.block_size={data['block_size']} (each block scores at least one new token)")
        cutoffs = model.get("cutoffs") or []
        too_big = bool(cutoffs) and cutoffs[-1] >= model["vocab_size"]
        if model.get("adaptive") and (cutoffs != sorted(set(cutoffs)) or too_big):
            errors.append(f"model.cutoffs={cutoffs}: must increase and stay below "
                          f"model.vocab_size={model['vocab_size']}")
        return errors
