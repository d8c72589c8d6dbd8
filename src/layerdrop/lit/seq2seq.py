"""Lightning module for sequence to sequence tasks (translation; summarisation and long-form QA next):
label-smoothed cross-entropy with teacher forcing, perplexity on valid, and (at test time, when
``set_generation`` has been called) generation and a text metric, both chosen by the task
(``tasks/seq2seq.py``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from torchmetrics import MeanMetric

from layerdrop.lit.base import LayerDropModule, PerplexityScores
from layerdrop.models.ops import cross_entropy
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq

IGNORE = -100


def label_smoothed_nll(
    logits: torch.Tensor, target: torch.Tensor, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,V) logits, (N,) targets -> (summed smoothed loss, summed nll, tokens), fairseq's
    ``label_smoothed_nll_loss``: the target gets 1 - eps, every other class eps / (V - 1)."""
    keep = target != IGNORE
    loss, nll = cross_entropy(logits, target.clamp(min=0), epsilon)  # blockwise fp32 (models/ops.py)
    return loss[keep].sum(), nll[keep].sum(), keep.sum()


class GenerationCurve(pl.Callback):
    """The text metric's learning curve (fairseq's ``--eval-bleu``): at the end of every validation, the
    model generates the same ``batches`` (a seeded subset of valid) in fp32, as test evaluation does, and
    ``val/<name>`` is logged for every score of ``score(hypotheses, references)`` (``references`` indexed
    by the batches' ``ids``), so it joins the run's learning curve."""

    def __init__(self, generator: Callable[[TransformerSeq2Seq, torch.Tensor], list[list[int]]], batches: list[dict],
                 references: Sequence[str], decode: Callable[[list[int]], str],
                 score: Callable[[Sequence[str], Sequence[str]], dict[str, float]]):
        self.generator, self.batches, self.references, self.decode, self.score = (
            generator, batches, references, decode, score)

    def on_validation_epoch_end(self, trainer: pl.Trainer, lit: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        hyps, refs = [], []
        with torch.no_grad(), torch.autocast(lit.device.type, enabled=False):
            for batch in self.batches:
                for i, tokens in zip(batch["ids"].tolist(), self.generator(lit.model, batch["src"].to(lit.device))):
                    hyps.append(self.decode(tokens))
                    refs.append(self.references[i])
        for name, value in self.score(hyps, refs).items():
            lit.log(f"val/{name}", float(value))


class Seq2SeqLitModule(PerplexityScores, LayerDropModule):
    """Args are plain dicts (checkpoints load with ``weights_only=True``): model: ``Seq2SeqConfig``
    fields; optim: ``{optimizer, scheduler}``; seed: base seed of the LayerDrop draws."""

    def __init__(self, model: dict, optim: dict | None = None, seed: int = 0, arch: str = "mt",
                 label_smoothing: float = 0.1):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.save_hyperparameters(logger=False)
        self.model = TransformerSeq2Seq(Seq2SeqConfig(**model))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.metrics = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_tokens = 0
        self.generation: dict | None = None  # set_generation(): generator, references, metric
        self.hypotheses: dict[int, str] = {}
        self.generate_seconds = 0.0

    @classmethod
    def wrap(cls, model: TransformerSeq2Seq) -> Seq2SeqLitModule:
        from dataclasses import asdict

        lit = cls(model=asdict(model.config))
        lit.model = model
        return lit

    def set_generation(self, generator: Callable[[TransformerSeq2Seq, torch.Tensor], list[list[int]]], *,
                       references: list[str], decode: Callable[[list[int]], str],
                       score: Callable[[Sequence[str], Sequence[str]], dict[str, float]],
                       max_sentences: int | None = None, seed: int = 0) -> None:
        """Make test epochs generate with ``generator`` (model, src -> best tokens per sentence) and log
        ``test/<name>`` for every score of ``score(hypotheses, references)``; references are indexed by the
        batches' ``ids``, ``decode`` maps token ids to detokenized text. ``max_sentences`` generates only
        a seeded random subset of that many sentences (the same subset for every model given the same
        seed); perplexity still covers every sentence."""
        subset = None
        if max_sentences is not None:
            if max_sentences < 1:
                raise ValueError(f"generate.max_sentences must be positive or null, got {max_sentences}")
            if max_sentences < len(references):
                g = torch.Generator().manual_seed(seed)
                subset = torch.randperm(len(references), generator=g)[:max_sentences]
        self.generation = dict(generator=generator, references=references, decode=decode, score=score,
                               subset=subset)

    def _losses(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hidden = self.model(batch["src"], batch["tgt_in"])
        logits = self.model.logits(hidden)
        return label_smoothed_nll(logits.reshape(-1, logits.size(-1)), batch["tgt_out"].reshape(-1),
                                  self.hparams.label_smoothing)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, nll, n = self._losses(batch)
        n_f = n.clamp(min=1).float()
        self.tokens_seen += n * self.trainer.world_size
        self.log("train/loss", loss.detach() / n_f, prog_bar=True)
        self.log("train/nll", nll.detach() / n_f)
        self.log("train/kept_encoder_layers", float(sum(self.model.encoder.last_keep)))
        self.log("train/kept_decoder_layers", float(sum(self.model.decoder.last_keep)))
        self.log("train/tokens_seen", self.tokens_seen.float())
        return self.update_loss(loss, n)

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        _, nll, n = self._losses(batch)
        self.metrics[split].update(nll / n.clamp(min=1), weight=n)
        self.eval_tokens += int(n)
        if split == "test" and self.generation is not None:
            g = self.generation
            ids, src = batch["ids"], batch["src"]
            if g["subset"] is not None:
                chosen = torch.isin(ids, g["subset"].to(ids.device))
                ids, src = ids[chosen], src[chosen]
            if len(ids):
                start = time.perf_counter()
                hyps = g["generator"](self.model, src)
                self.generate_seconds += time.perf_counter() - start
                for i, tokens in zip(ids.tolist(), hyps):
                    self.hypotheses[i] = g["decode"](tokens)

    def _eval_end(self, split: str) -> None:
        super()._eval_end(split)  # loss and perplexity
        if split == "test" and self.generation is not None and self.hypotheses:
            ids = sorted(self.hypotheses)
            hyps = [self.hypotheses[i] for i in ids]
            refs = [self.generation["references"][i] for i in ids]
            for name, value in self.generation["score"](hyps, refs).items():
                self.log(f"test/{name}", value)

    def on_test_epoch_start(self) -> None:
        super().on_test_epoch_start()
        self.hypotheses, self.generate_seconds = {}, 0.0
