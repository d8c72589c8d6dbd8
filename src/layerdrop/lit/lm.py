"""Lightning module for language modelling: loss, perplexity, optimisation, LayerDrop draws."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from layerdrop.lit.base import LayerDropModule, PerplexityScores
from layerdrop.models.lm import LMConfig, TransformerLM


class LMLitModule(PerplexityScores, LayerDropModule):
    """Args are plain dicts (so checkpoints load with ``weights_only=True``):
    model: ``LMConfig`` fields; optim: ``{optimizer: <partial _target_>, scheduler: {...}}``;
    seed: base seed of the synchronised LayerDrop draws."""

    def __init__(self, model: dict, optim: dict | None = None, seed: int = 0, arch: str = "lm"):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model = TransformerLM(LMConfig(**model))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.metrics = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_tokens = 0  # tokens scored by the latest validation/test epoch

    @classmethod
    def wrap(cls, model: TransformerLM) -> LMLitModule:
        """Evaluate an existing (e.g. pruned) model."""
        from dataclasses import asdict

        lit = cls(model=asdict(model.config))
        lit.model = model
        return lit

    def _nll(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood, target tokens) of a batch."""
        hidden = self.model(batch["input"])  # (B,T,C)
        nll = self.model.nll(hidden, batch["target"])  # (B,T)
        return nll.sum(), (batch["target"] != -100).sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss_sum, n = self._nll(batch)
        self.tokens_seen += n * self.trainer.world_size
        self.log_training(loss_sum, n)
        return self.update_loss(loss_sum, n)

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        loss_sum, n = self._nll(batch)
        self.metrics[split].update(loss_sum / n.clamp(min=1), weight=n)
        self.eval_tokens += int(n)
