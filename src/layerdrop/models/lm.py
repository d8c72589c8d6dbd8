"""Decoder-only Transformer language model (fairseq ``transformer_lm``; Baevski & Auli at paper scale)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from layerdrop.models.adaptive import AdaptiveInput, TiedAdaptiveSoftmax
from layerdrop.models.checkpoint import register_arch
from layerdrop.models.ops import cross_entropy, dropout
from layerdrop.models.transformer import make_stack, sinusoidal_positions


@dataclass
class LMConfig:
    vocab_size: int
    n_layers: int = 16
    d_model: int = 1024
    n_heads: int = 8
    d_ff: int = 4096
    max_len: int = 3072
    dropout: float = 0.3
    attn_dropout: float = 0.1
    act_dropout: float = 0.1
    pre_norm: bool = True
    final_norm: bool = True  # fairseq's wiki103 LM has none (no_decoder_final_norm)
    adaptive: bool = False  # adaptive input + tied adaptive softmax; else one tied embedding
    cutoffs: list[int] = field(default_factory=lambda: [20000, 60000])
    adaptive_factor: float = 4.0
    adaptive_dropout: float = 0.2
    layerdrop: float | list[float] = 0.0
    layerdrop_seed: int = 0
    layerdrop_learned: bool = False  # learn per-layer rates (data-driven pruning)
    sublayer_drop: float = 0.0  # finer structured dropout (Figure 4): attention / FFN blocks
    head_drop: float = 0.0  # ... and attention heads


@register_arch("lm")
class TransformerLM(nn.Module):
    """tokens (B,T) -> hidden (B,T,C); ``nll`` scores hidden states against targets."""

    config_class = LMConfig

    #: the layer stacks pruning may shorten: name -> (state-dict prefix, depth field, LayerDrop field)
    stacks = {"decoder": ("layers.", "n_layers", "layerdrop")}

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.config = cfg
        C = cfg.d_model
        if cfg.adaptive:
            self.embed = AdaptiveInput(cfg.vocab_size, C, cfg.cutoffs, cfg.adaptive_factor)
            self.softmax = TiedAdaptiveSoftmax(self.embed, cfg.adaptive_dropout)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, C)
            nn.init.normal_(self.embed.weight, std=C**-0.5)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_len, C), persistent=False)
        self.layers = make_stack(
            cfg.n_layers, cfg.layerdrop, seed=cfg.layerdrop_seed, learned=cfg.layerdrop_learned, d_model=C, n_heads=cfg.n_heads, d_ff=cfg.d_ff,
            dropout=cfg.dropout, attn_dropout=cfg.attn_dropout, act_dropout=cfg.act_dropout,
            pre_norm=cfg.pre_norm, causal=True, sublayer_drop=cfg.sublayer_drop, head_drop=cfg.head_drop,
        )
        self.norm = nn.LayerNorm(C) if cfg.final_norm else nn.Identity()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.size(1)
        if self.config.max_len < T:
            raise ValueError(f"sequence length {T} exceeds the model's max_len={self.config.max_len}")
        x = self.embed(tokens) * math.sqrt(self.config.d_model) + self.positions[:T]  # (B,T,C)
        x = dropout(x, self.config.dropout, self.training)
        for layer in self.layers:  # skipped layers are never called
            x = layer(x)
        return self.norm(x)

    def nll(self, hidden: torch.Tensor, target: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """(B,T,C), (B,T) -> (B,T) per-token negative log-likelihood, 0 where target == ignore_index."""
        h, t = hidden.reshape(-1, hidden.size(-1)), target.reshape(-1)
        keep = t != ignore_index
        out = torch.zeros(t.shape, dtype=torch.float, device=t.device)
        if self.config.adaptive:
            out[keep] = self.softmax.nll(h[keep], t[keep])
        else:
            out[keep] = cross_entropy(h[keep] @ self.embed.weight.t(), t[keep])[0]
        return out.view_as(target)

    def log_probs(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B,T,C) -> (B,T,V)."""
        h = hidden.reshape(-1, hidden.size(-1))
        lp = self.softmax.log_probs(h) if self.config.adaptive else (h @ self.embed.weight.t()).float().log_softmax(-1)
        return lp.view(*hidden.shape[:-1], -1)
