"""What every task's LightningModule shares: synchronised structured-dropout draws and the optimizer."""

from __future__ import annotations

import pytorch_lightning as pl
from hydra.utils import instantiate

from layerdrop.optim import build_optimizer


class LayerDropModule(pl.LightningModule):
    """Subclasses set ``self.model`` and save ``optim`` and ``seed`` as hyperparameters."""

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """One draw index per micro-batch, the same on every rank and after resume, for every stack
        and layer that draws (LayerDrop stacks; layers with sub-layer or head drops)."""
        accum = self.trainer.accumulate_grad_batches
        draw = self.global_step * accum + batch_idx % accum
        for m in self.model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(draw, seed=self.hparams.seed)

    def configure_optimizers(self):
        optim = self.hparams.optim
        optimizer, scheduler = build_optimizer(self.model, instantiate(optim["optimizer"]), **optim["scheduler"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
