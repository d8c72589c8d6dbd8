"""fairseq's loss normalisation: an update's gradient is that of the summed loss of all its micro-batches
(and ranks) divided by its target-token count, whatever the micro-batch sizes."""

import copy

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from layerdrop.lit.seq2seq import IGNORE, Seq2SeqLitModule, label_smoothed_nll

MODEL = dict(vocab_size=30, encoder_layers=1, decoder_layers=1, d_model=16, n_heads=2, d_ff=32, max_len=32,
             dropout=0.0, attn_dropout=0.0)
OPTIM = {"optimizer": {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 1.0},
         "scheduler": {"warmup_steps": 0, "total_steps": 10}}


def batch(rows: int, tgt_len: int, pad_from: int | None, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, 30, (rows, 5), generator=g)
    tgt = torch.randint(3, 30, (rows, tgt_len + 1), generator=g)
    out = tgt[:, 1:].clone()
    if pad_from is not None:
        out[0, pad_from:] = IGNORE
    return {"src": src, "tgt_in": tgt[:, :-1], "tgt_out": out, "ids": torch.arange(rows)}


def test_an_update_is_normalised_by_its_token_count_not_per_micro_batch():
    torch.manual_seed(0)
    lit = Seq2SeqLitModule(model=MODEL, optim=OPTIM, seed=0, label_smoothing=0.1)
    before = copy.deepcopy(lit.model)
    small, large = batch(1, 3, None, 1), batch(4, 9, 2, 2)  # 3 and 29 target tokens
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, accumulate_grad_batches=2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(lit, train_dataloaders=DataLoader([small, large], batch_size=None))

    def summed(b):
        logits = before.logits(before(b["src"], b["tgt_in"]))
        loss, _, n = label_smoothed_nll(logits.reshape(-1, 30), b["tgt_out"].reshape(-1), 0.1)
        return loss, n

    (l1, n1), (l2, n2) = summed(small), summed(large)
    assert (int(n1), int(n2)) == (3, 29)
    ((l1 + l2) / (n1 + n2)).backward(retain_graph=True)  # fairseq: one sum over the update, one division
    mean_of_means = torch.autograd.grad(((l1 / n1 + l2 / n2) / 2), list(before.parameters()), allow_unused=True)
    after = dict(lit.model.named_parameters())
    differs = False
    for (name, p), g_old in zip(before.named_parameters(), mean_of_means):
        step = p.detach() - after[name].detach()  # SGD, lr 1: the applied gradient
        torch.testing.assert_close(step, p.grad, rtol=1e-4, atol=1e-6, msg=name)
        differs |= g_old is not None and not torch.allclose(step, g_old, rtol=1e-3, atol=1e-6)
    assert differs  # Lightning's default (a mean per micro-batch, averaged) would have given another step
