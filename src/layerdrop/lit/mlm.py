"""Lightning module for masked-LM pretraining (RoBERTa; paper Tables 4 and 7): dynamic masking, the
masked-LM loss, LayerDrop draws.

Masking is BERT's: each token is chosen with probability ``mask_prob`` (15%); a chosen token is
replaced by ``<mask>`` 80% of the time, by a uniformly random token 10% of the time, and kept 10% of
the time, and only chosen tokens are scored. Masks are drawn on the batch's device when a batch is
trained on, so a sequence gets a new mask every time it is seen (RoBERTa's dynamic masking), and the
draws follow the seeded per-step RNG (``LayerDropModule``): a resumed run draws the masks an
uninterrupted one would have. Validation and test masks are fixed (seeded by the batch's index), so
every checkpoint and every pruned sub-network is scored on the same masked positions.

The data are the LM's token blocks (``data.lm``); ``<mask>`` is one id past the corpus vocabulary
(``model.vocab_size = data.vocab_size + 1``), and padding is never chosen.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from layerdrop.lit.base import LayerDropModule, PerplexityScores
from layerdrop.models.encoder import EncoderConfig, TransformerEncoder

EVAL_MASK_SEED = 20_191_115  # the fixed masks of validation and test batches


def check_masking(mask_prob: float, mask_frac: float, random_frac: float) -> None:
    if not 0 < mask_prob < 1:
        raise ValueError(f"mask_prob={mask_prob}: must be in (0, 1)")
    if mask_frac < 0 or random_frac < 0 or mask_frac + random_frac > 1:
        raise ValueError(f"mask_frac={mask_frac}, random_frac={random_frac}: must be >= 0 and sum to at most 1 "
                         "(the rest of the chosen tokens is kept)")


def mask_tokens(
    tokens: torch.Tensor, *, mask_id: int, n_random: int, mask_prob: float = 0.15, mask_frac: float = 0.8,
    random_frac: float = 0.1, pad_id: int | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B,T) -> (input, target): ``input`` with the chosen tokens masked, replaced by a random id in
    [0, n_random) or kept; ``target`` the original token where chosen, -100 elsewhere. Every random draw
    is made on ``tokens.device`` (from ``generator`` when given)."""
    u = torch.rand(tokens.shape, device=tokens.device, generator=generator)
    chosen = u < mask_prob
    if pad_id is not None:
        chosen &= tokens.ne(pad_id)
    how = torch.rand(tokens.shape, device=tokens.device, generator=generator)
    random_ids = torch.randint(n_random, tokens.shape, device=tokens.device, generator=generator)
    inputs = torch.where(chosen & (how < mask_frac), torch.full_like(tokens, mask_id), tokens)
    inputs = torch.where(chosen & (how >= mask_frac) & (how < mask_frac + random_frac), random_ids, inputs)
    return inputs, torch.where(chosen, tokens, torch.full_like(tokens, -100))


class MLMLitModule(PerplexityScores, LayerDropModule):
    """Args are plain dicts (so checkpoints load with ``weights_only=True``): model: ``EncoderConfig``
    fields; optim: ``{optimizer: <partial _target_>, scheduler: {...}}``; seed: base seed of the
    synchronised draws; the masking rates as above."""

    def __init__(self, model: dict, optim: dict | None = None, seed: int = 0, arch: str = "encoder",
                 mask_prob: float = 0.15, mask_frac: float = 0.8, random_frac: float = 0.1):
        super().__init__()
        check_masking(mask_prob, mask_frac, random_frac)
        self.save_hyperparameters(logger=False)
        self.model = TransformerEncoder(EncoderConfig(**model))
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long))
        self.metrics = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})
        self.eval_tokens = 0  # masked tokens scored by the latest validation/test epoch

    @classmethod
    def wrap(cls, model: TransformerEncoder) -> MLMLitModule:
        """Evaluate an existing (e.g. pruned) model."""
        from dataclasses import asdict

        lit = cls(model=asdict(model.config))
        lit.model = model
        return lit

    @property
    def mask_id(self) -> int:
        return self.model.config.vocab_size - 1

    def _mask(self, tokens: torch.Tensor, generator: torch.Generator | None = None):
        h = self.hparams
        return mask_tokens(tokens, mask_id=self.mask_id, n_random=self.mask_id, mask_prob=h.mask_prob,
                           mask_frac=h.mask_frac, random_frac=h.random_frac, pad_id=self.model.config.pad_id,
                           generator=generator)

    def _nll(self, inputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed negative log-likelihood, masked tokens) of a masked batch."""
        nll = self.model.mlm_nll(self.model(inputs), target)
        return nll.sum(), (target != -100).sum()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        inputs, target = self._mask(batch["input"])  # the per-step seeded RNG: a new mask every time
        loss_sum, n = self._nll(inputs, target)
        self.tokens_seen += batch["input"].numel() * self.trainer.world_size
        self.log_training(loss_sum, n)
        return self.update_loss(loss_sum, n)

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        tokens = batch["input"]
        generator = torch.Generator(device=tokens.device).manual_seed(EVAL_MASK_SEED + batch_idx)
        loss_sum, n = self._nll(*self._mask(tokens, generator))
        self.metrics[split].update(loss_sum / n.clamp(min=1), weight=n)
        self.eval_tokens += int(n)
