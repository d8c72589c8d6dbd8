"""What every task's LightningModule shares: synchronised random draws, fairseq's loss normalisation,
and the optimizer."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from layerdrop.models.layerdrop import draw_seed
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

    def on_before_optimizer_step(self, optimizer) -> None:
        """Gradients are now (sum over micro-batches and ranks of d loss_sum) / (accum x world): scale by
        accum x world / tokens of the update. Runs before gradient clipping (and after AMP unscaling)."""
        total = self.trainer.strategy.reduce(self.update_tokens.clone(), reduce_op="sum")
        scale = self.trainer.accumulate_grad_batches * self.trainer.world_size / total.clamp(min=1)
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        self.update_tokens.zero_()

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer, scheduler = build_optimizer(self.model, instantiate(optim["optimizer"]), **optim["scheduler"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
