"""What every task's LightningModule shares: synchronised random draws, fairseq's loss normalisation,
and the optimizer."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from layerdrop.models.layerdrop import LayerDropList, draw_seed
from layerdrop.optim import build_optimizer

DROPOUT_SALT = 7919  # separates the dropout stream of a micro-batch from its LayerDrop draws


class LayerDropModule(pl.LightningModule):
    """Subclasses set ``self.model``, save ``optim`` and ``seed`` as hyperparameters, and return
    ``self.update_loss(summed loss, target tokens)`` from ``training_step``."""

    def __init__(self):
        super().__init__()
        self.register_buffer("update_tokens", torch.zeros(()), persistent=False)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """One draw index per micro-batch, the same on every rank and after resume, for every stack
        and layer that draws (LayerDrop stacks; layers with sub-layer or head drops). The global RNG
        (dropout) is re-seeded from (seed, draw, rank) too: each rank gets its own dropout masks, and a
        resumed run continues with exactly the masks an uninterrupted one would have drawn."""
        accum = self.trainer.accumulate_grad_batches
        draw = self.global_step * accum + batch_idx % accum
        for m in self.model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(draw, seed=self.hparams.seed)
        torch.manual_seed(draw_seed(self.hparams.seed, draw, DROPOUT_SALT + self.global_rank))

    def update_loss(self, loss_sum: torch.Tensor, n_tokens: torch.Tensor) -> torch.Tensor:
        """The loss to back-propagate for one micro-batch. fairseq divides the summed loss of a whole
        update (every micro-batch of every rank) by that update's target-token count; Lightning instead
        divides each micro-batch's loss by the accumulation steps and DDP averages over ranks. So we
        back-propagate sums and, once the update's token count is known, rescale the gradients
        (``on_before_optimizer_step``): micro-batches of different sizes then weigh by their tokens."""
        self.update_tokens += n_tokens.to(self.update_tokens.dtype)
        return loss_sum

    def log_training(self, loss_sum: torch.Tensor, n: torch.Tensor) -> None:
        """The step's mean loss, the layers it ran (every LayerDrop stack) and the tokens seen so far."""
        kept = sum(sum(m.last_keep) for m in self.model.modules() if isinstance(m, LayerDropList))
        self.log("train/loss", loss_sum.detach() / n.clamp(min=1), prog_bar=True)
        self.log("train/kept_layers", float(kept))
        self.log("train/tokens_seen", self.tokens_seen.float())

    def on_before_optimizer_step(self, optimizer) -> None:
        """Gradients are now (sum over micro-batches and ranks of d loss_sum) / (accum x world): scale by
        accum x world / tokens of the update. Runs before gradient clipping (and after AMP unscaling)."""
        total = self.trainer.strategy.reduce(self.update_tokens.clone(), reduce_op="sum")
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / total.clamp(min=1)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        self.update_tokens.zero_()

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning refuses to clip for an optimizer that unscales its own gradients (fused Adam), a guard
        for fp16's loss scaler. Without a scaler (bf16-mixed, fp32) the gradients are already unscaled, so
        they are clipped here, as Lightning would (the cpu configs use fused Adam; results/bench/ablation.md)."""
        unscales = getattr(optimizer, "_step_supports_amp_scaling", False)
        if gradient_clip_val and unscales and getattr(self.trainer.precision_plugin, "scaler", None) is None:
            params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val, foreach=True)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer, scheduler = build_optimizer(self.model, instantiate(optim["optimizer"]), **optim["scheduler"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class ScoredSplits:
    """Validation and test through one ``_eval_step(split, batch, batch_idx)`` ("val" or "test") and one
    ``_eval_end(split)``; ``eval_tokens`` counts what the latest epoch scored (``Task.evaluate`` reports it).
    Mixed in before ``LayerDropModule``."""

    eval_tokens: int

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self.eval_tokens = 0

    def on_test_epoch_start(self) -> None:
        self.eval_tokens = 0

    def on_validation_epoch_end(self) -> None:
        self._eval_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_end("test")


class PerplexityScores(ScoredSplits):
    """``_eval_end`` for token-level models (LM, masked LM): the token-weighted mean loss of the split
    (``self.metrics[split]``, a ``MeanMetric``) and its perplexity."""

    def _eval_end(self, split: str) -> None:
        loss = self.metrics[split].compute()
        self.log(f"{split}/loss", loss, sync_dist=False)
        self.log(f"{split}/ppl", torch.exp(loss), prog_bar=True)
        self.metrics[split].reset()
