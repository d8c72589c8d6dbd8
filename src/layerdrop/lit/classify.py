"""Lightning module for fine-tuning a pretrained encoder on sentence classification: cross-entropy,
accuracy, LayerDrop draws (kept or off, as the classifier's config says)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from layerdrop.lit.base import LayerDropModule, ScoredSplits
from layerdrop.models.classifier import ClassifierConfig, EncoderClassifier


class ClassifierLitModule(ScoredSplits, LayerDropModule):
    """Args are plain dicts (checkpoints load with ``weights_only=True``): model: ``ClassifierConfig``
    fields; optim: ``{optimizer: <partial _target_>, scheduler: {...}}``; seed: the draws' base seed."""

    def __init__(self, model: dict, optim: dict | None = None, seed: int = 0, arch: str = "classifier"):
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.model = EncoderClassifier(ClassifierConfig(**model))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.metrics = torch.nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in ("val", "test") for m in ("loss", "acc")})
        self.eval_tokens = 0  # examples scored by the latest validation/test epoch

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["input"])
        loss_sum = F.cross_entropy(logits.float(), batch["label"], reduction="sum")
        n = torch.tensor(batch["label"].numel(), device=logits.device)
        self.tokens_seen += batch["input"].numel() * self.trainer.world_size
        self.log("train/loss", loss_sum.detach() / n, prog_bar=True)
        return self.update_loss(loss_sum, n)

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["input"]).float()
        n = batch["label"].numel()
        self.metrics[f"{split}_loss"].update(F.cross_entropy(logits, batch["label"]), weight=n)
        self.metrics[f"{split}_acc"].update((logits.argmax(-1) == batch["label"]).float().mean(), weight=n)
        self.eval_tokens += n

    def _eval_end(self, split: str) -> None:
        for metric in ("loss", "acc"):
            self.log(f"{split}/{metric}", self.metrics[f"{split}_{metric}"].compute(), prog_bar=metric == "acc")
            self.metrics[f"{split}_{metric}"].reset()
