"""A pretrained encoder with a sentence-classification head, for fine-tuning (paper Tables 4 and 7).

RoBERTa's head (fairseq ``RobertaClassificationHead``): the first position's final state, dropout, a
dense layer with tanh, dropout, and a projection to the classes. ``pool="mean"`` feeds the head the mean
of the final states of the non-padding positions instead (ours, for the cpu encoders, whose first
position was never trained to summarise a sentence: the pretraining blocks have no ``<s>``). The masked-LM head of pretraining is
not part of the classifier. The encoder keeps its ``LayerDropList``, so LayerDrop can stay on while
fine-tuning (the paper's Table 4 models) or be off (its pruned Table 7 models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from layerdrop.models.checkpoint import register_arch
from layerdrop.models.encoder import EncoderConfig, TransformerEncoder
from layerdrop.models.ops import dropout

MLM_HEAD = ("head_dense.", "head_norm.", "head_bias")  # pretraining-only parameters of TransformerEncoder


@dataclass
class ClassifierConfig(EncoderConfig):
    n_classes: int = 2
    pooler_dropout: float = 0.0
    pool: str = "first"  # RoBERTa's first-position state; "mean": the mean over non-padding positions


POOLS = ("first", "mean")


@register_arch("classifier")
class EncoderClassifier(nn.Module):
    """tokens (B,T), the first a start token -> class logits (B, n_classes)."""

    config_class = ClassifierConfig

    #: the layer stacks pruning may shorten: name -> (state-dict prefix, depth field, LayerDrop field)
    stacks = {"encoder": ("encoder.layers.", "n_layers", "layerdrop")}

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        if cfg.n_classes < 2:
            raise ValueError(f"n_classes={cfg.n_classes}: a classifier needs at least 2 classes")
        if cfg.pool not in POOLS:
            raise ValueError(f"pool={cfg.pool!r}: must be one of {', '.join(POOLS)}")
        self.config = cfg
        encoder = {f.name: getattr(cfg, f.name) for f in fields(EncoderConfig)}
        self.encoder = TransformerEncoder(EncoderConfig(**encoder))
        del self.encoder.head_dense, self.encoder.head_norm, self.encoder.head_bias
        C = cfg.d_model
        self.dense, self.out = nn.Linear(C, C), nn.Linear(C, cfg.n_classes)

    @classmethod
    def from_pretrained(cls, encoder: TransformerEncoder, n_classes: int, **changes) -> EncoderClassifier:
        """A classifier whose encoder is ``encoder``'s (weights copied; its masked-LM head left out), with
        ``changes`` to the encoder's config (e.g. its LayerDrop rate)."""
        model = cls(ClassifierConfig(**{**asdict(encoder.config), **changes, "n_classes": n_classes}))
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(MLM_HEAD)}
        model.encoder.load_state_dict(state)
        return model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(tokens)
        if self.config.pool == "first":
            x = hidden[:, 0]
        else:  # padding neither attended to nor averaged
            keep = tokens.ne(self.config.pad_id).unsqueeze(-1).to(hidden.dtype)
            x = (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
        p, training = self.config.pooler_dropout, self.training
        return self.out(dropout(torch.tanh(self.dense(dropout(x, p, training))), p, training))
