"""Bidirectional Transformer encoder with a masked-LM head: RoBERTa (Liu et al. 2019) as fairseq builds
it, for the paper's pretraining experiments (Tables 4 and 7, Figures 3 and 8).

The layers are the same ``TransformerLayer`` and ``LayerDropList`` the LM and the translation model use
(non-causal, post-norm, GELU), so LayerDrop, its synchronised draws and every-other pruning behave as
there. RoBERTa's differences from those models are all outside the stack: learned positions (or, as the
cpu regime's stated departure, ALiBi distance biases: ``positions="alibi"``), a
LayerNorm on the embeddings (no sqrt(C) scaling), and an LM head (dense, GELU, LayerNorm, then the
embedding matrix, tied, plus a bias). No token-type embeddings and no pooler, as fairseq's RoBERTa.

    model = TransformerEncoder(EncoderConfig(vocab_size=50265))   # RoBERTa base
    hidden = model(tokens)                                        # (B,T,C)
    nll = model.mlm_nll(hidden, target)                           # target -100 where not masked
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.checkpoint import register_arch
from layerdrop.models.ops import cross_entropy, dropout
from layerdrop.models.transformer import ACTIVATIONS, make_stack

INIT_STD = 0.02  # BERT/RoBERTa's initialisation of embeddings and head (fairseq init_bert_params)


@dataclass
class EncoderConfig:
    vocab_size: int
    n_layers: int = 12
    d_model: int = 768
    n_heads: int = 12
    d_ff: int = 3072
    max_len: int = 514  # learned positions (fairseq RoBERTa: 512 tokens + 2 for its padding offset)
    positions: str = "learned"  # RoBERTa's; "alibi": no position table, a distance bias in attention (see alibi_bias)
    dropout: float = 0.1
    attn_dropout: float = 0.1
    act_dropout: float = 0.0
    activation: str = "gelu"
    pre_norm: bool = False  # BERT and RoBERTa are post-norm
    pad_id: int = 0
    layerdrop: float | list[float] = 0.0
    layerdrop_seed: int = 0
    layerdrop_learned: bool = False
    sublayer_drop: float = 0.0
    head_drop: float = 0.0


POSITIONS = ("learned", "alibi")


def alibi_bias(n_heads: int, T: int, device: torch.device | None = None) -> torch.Tensor:
    """(H,T,T) ALiBi (Press et al. 2022) for a bidirectional encoder: head h adds -m_h |i - j| to the score of
    query i on key j, with slopes m_h = 2^(-8 h / H), h = 1..H (a geometric sequence from 2^(-8/H) to 1/256).
    Each head starts out attending near itself, so word order is usable from the first step; with learned
    absolute positions a small encoder at the cpu budget never leaves the bag-of-words plateau (README)."""
    slopes = torch.pow(2.0, -8.0 * torch.arange(1, n_heads + 1, device=device, dtype=torch.float32) / n_heads)
    i = torch.arange(T, device=device)
    return -slopes[:, None, None] * (i[:, None] - i[None, :]).abs().float()


@register_arch("encoder")
class TransformerEncoder(nn.Module):
    """tokens (B,T) -> hidden (B,T,C); ``mlm_nll`` scores the masked positions."""

    config_class = EncoderConfig

    #: the layer stacks pruning may shorten: name -> (state-dict prefix, depth field, LayerDrop field)
    stacks = {"encoder": ("layers.", "n_layers", "layerdrop")}

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        if cfg.activation not in ACTIVATIONS:
            raise ValueError(f"activation={cfg.activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        if cfg.positions not in POSITIONS:
            raise ValueError(f"positions={cfg.positions!r}: must be one of {', '.join(POSITIONS)}")
        self.config = cfg
        C = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)
        self.positions = nn.Embedding(cfg.max_len, C) if cfg.positions == "learned" else None
        for table in (self.embed, self.positions):
            if table is not None:
                nn.init.normal_(table.weight, std=INIT_STD)
        with torch.no_grad():
            self.embed.weight[cfg.pad_id].zero_()
        self.embed_norm = nn.LayerNorm(C)
        self.layers = make_stack(
            cfg.n_layers, cfg.layerdrop, seed=cfg.layerdrop_seed, learned=cfg.layerdrop_learned, d_model=C,
            n_heads=cfg.n_heads, d_ff=cfg.d_ff, dropout=cfg.dropout, attn_dropout=cfg.attn_dropout,
            act_dropout=cfg.act_dropout, pre_norm=cfg.pre_norm, causal=False, sublayer_drop=cfg.sublayer_drop,
            head_drop=cfg.head_drop, activation=cfg.activation,
        )
        self.norm = nn.LayerNorm(C) if cfg.pre_norm else nn.Identity()  # post-norm layers end in one
        # the masked-LM head: dense + activation + LayerNorm, then the (tied) embedding matrix and a bias
        self.head_dense = nn.Linear(C, C)
        self.head_norm = nn.LayerNorm(C)
        self.head_bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,T) -> (B,T,C); padding (``pad_id``) is neither attended to nor scored."""
        T = tokens.size(1)
        if self.config.max_len < T:
            raise ValueError(f"sequence length {T} exceeds the model's max_len={self.config.max_len}")
        pad = tokens.eq(self.config.pad_id)
        x = self.embed(tokens)
        bias = None
        if self.positions is not None:
            x = x + self.positions.weight[:T]
        else:
            bias = alibi_bias(self.config.n_heads, T, tokens.device)
        x = dropout(self.embed_norm(x), self.config.dropout, self.training)
        for layer in self.layers:  # skipped layers are never called
            x = layer(x, pad_mask=pad, attn_bias=bias)
        return self.norm(x)

    def mlm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V): the masked-LM head, through the embedding matrix."""
        h = self.head_norm(ACTIVATIONS[self.config.activation](self.head_dense(hidden)))
        return F.linear(h, self.embed.weight, self.head_bias)

    def mlm_nll(self, hidden: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """(B,T,C), (B,T) -> (N,) negative log-likelihood of the N scored positions (target != ignore_index),
        the head run on those positions alone (about 15% of them in pretraining)."""
        keep = target.reshape(-1) != ignore_index
        h = hidden.reshape(-1, hidden.size(-1))[keep]
        return cross_entropy(self.mlm_logits(h), target.reshape(-1)[keep])[0]
