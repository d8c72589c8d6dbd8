"""Two-process CPU DDP run (gloo) of the LM with LayerDrop; launched by tests/test_ddp.py.

Each rank's global torch RNG is seeded differently on purpose: LayerDrop's masks must still agree,
because they come from (seed, step), not from each rank's own stream. Every rank writes the masks it
used and its final weights to OUT/rank{r}.pt.
"""

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from layerdrop.lit.lm import LMLitModule
from layerdrop.models.layerdrop import LayerDropList


class RecordMasks(pl.Callback):
    def __init__(self):
        self.masks = []

    def on_train_batch_end(self, trainer, lit, outputs, batch, batch_idx):
        self.masks.append([m.last_keep for m in lit.model.modules() if isinstance(m, LayerDropList)][0])


def loader():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 50, (64, 9), generator=g)
    data = TensorDataset(tokens[:, :-1], tokens[:, 1:])
    return DataLoader(data, batch_size=4, collate_fn=lambda b: {"input": torch.stack([x for x, _ in b]),
                                                                "target": torch.stack([y for _, y in b])})


def main(out: Path, steps: int):
    pl.seed_everything(0)
    model = dict(vocab_size=50, n_layers=6, d_model=16, n_heads=2, d_ff=32, max_len=8, layerdrop=0.5)
    optim = {"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
             "scheduler": {"warmup_steps": 0, "total_steps": steps}}
    lit = LMLitModule(model=model, optim=optim, seed=3)
    recorder = RecordMasks()
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true",
                         max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[recorder])
    torch.manual_seed(1000 + trainer.global_rank)  # diverge the ranks' own RNG streams
    trainer.fit(lit, train_dataloaders=loader())
    torch.save({"masks": recorder.masks, "state": lit.model.state_dict()}, out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
