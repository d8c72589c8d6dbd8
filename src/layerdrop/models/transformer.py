"""Transformer building blocks shared by every task: attention, feed-forward, one layer, a stack.

Shapes: B batch, T time, C model width, H heads, D = C // H head width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.layerdrop import LayerDropList


class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's fused scaled-dot-product kernel."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float = 0.0, causal: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.causal, self.attn_dropout = n_heads, causal, attn_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # q, k and v in one matmul
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # 3 x (B,H,T,D)
        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # (B,1,1,T), True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal and mask is None,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # (B,H,T,D)
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act_dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act_dropout = act_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(F.relu(self.fc1(x)), self.act_dropout, self.training))


class TransformerLayer(nn.Module):
    """Self-attention then feed-forward, each a residual block; pre-norm (fairseq's
    ``normalize_before``) or post-norm (Vaswani et al.)."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1, attn_dropout: float = 0.0,
        act_dropout: float = 0.0, pre_norm: bool = True, causal: bool = True,
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, attn_dropout, causal)
        self.attn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, act_dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout, self.pre_norm = dropout, pre_norm

    def _residual(self, x, block, norm, *args):
        if self.pre_norm:
            return x + F.dropout(block(norm(x), *args), self.dropout, self.training)
        return norm(x + F.dropout(block(x, *args), self.dropout, self.training))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self._residual(x, self.attn, self.attn_norm, pad_mask)
        return self._residual(x, self.ffn, self.ffn_norm)


def make_stack(
    n_layers: int, layerdrop: float | Sequence[float], *, seed: int = 0, salt: int = 0, **layer_kwargs
) -> LayerDropList:
    return LayerDropList([TransformerLayer(**layer_kwargs) for _ in range(n_layers)], layerdrop, seed, salt)


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, C) fixed position table, as in Vaswani et al. and fairseq (sin half, cos half)."""
    half = d_model // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(max_len, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, d_model % 2))
