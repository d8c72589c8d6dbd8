"""Transformer building blocks shared by every task: attention, feed-forward, one layer, a stack.

Shapes: B batch, T time, C model width, H heads, D = C // H head width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.layerdrop import LayerDropList, SyncedDraws, check_rates


class SelfAttention(nn.Module):
    """Multi-head self-attention on PyTorch's fused scaled-dot-product kernel.

    ``heads`` (kept head indices) computes only those heads: their rows of the q/k/v projection and
    their columns of the output projection; the other heads cost nothing."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float = 0.0, causal: bool = True):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.causal, self.attn_dropout = n_heads, causal, attn_dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)  # q, k and v in one matmul
        self.out = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, heads: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        H, D = self.n_heads, C // self.n_heads
        w_qkv, b_qkv, w_out = self.qkv.weight, self.qkv.bias, self.out.weight
        if heads is not None:  # slice the kept heads' weights: (3,H,D,C) -> (3,h,D,C)
            w_qkv = w_qkv.view(3, H, D, C)[:, heads].reshape(-1, C)
            b_qkv = b_qkv.view(3, H, D)[:, heads].reshape(-1)
            w_out = w_out.view(C, H, D)[:, heads].reshape(C, -1)
            H = len(heads)
        q, k, v = F.linear(x, w_qkv, b_qkv).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # 3 x (B,H,T,D)
        mask = None if pad_mask is None else ~pad_mask[:, None, None, :]  # (B,1,1,T), True = attend
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal and mask is None,
            dropout_p=self.attn_dropout if self.training else 0.0,
        )  # (B,H,T,D)
        return F.linear(y.transpose(1, 2).reshape(B, T, H * D), w_out, self.out.bias)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act_dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act_dropout = act_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.dropout(F.relu(self.fc1(x)), self.act_dropout, self.training))


class TransformerLayer(nn.Module):
    """Self-attention then feed-forward, each a residual block; pre-norm (fairseq's
    ``normalize_before``) or post-norm (Vaswani et al.).

    Finer structured dropout (paper Figure 4), both off by default and only while training:
    ``sublayer_drop`` skips the attention block and the feed-forward block independently;
    ``head_drop`` skips attention heads (all heads dropped = the block is skipped). Draws are
    synchronised like LayerDrop's (``set_draw``)."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1, attn_dropout: float = 0.0,
        act_dropout: float = 0.0, pre_norm: bool = True, causal: bool = True, sublayer_drop: float = 0.0,
        head_drop: float = 0.0, salt: int = 0,
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, attn_dropout, causal)
        self.attn_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, act_dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout, self.pre_norm = dropout, pre_norm
        self.sublayer_drop, self.head_drop = check_rates(sublayer_drop, 1)[0], check_rates(head_drop, 1)[0]
        self.draws = SyncedDraws(salt=salt)
        self.last_keep = {"attn": True, "ffn": True, "heads": n_heads}  # what the latest forward ran

    def set_draw(self, draw: int | None, seed: int | None = None) -> None:
        self.draws.set_draw(draw, seed)

    def _sample(self) -> tuple[bool, bool, torch.Tensor | None]:
        """(run attention?, run feed-forward?, kept heads or None for all)."""
        if not self.training or not (self.sublayer_drop or self.head_drop):
            return True, True, None
        u = self.draws.uniform(2 + self.attn.n_heads)
        keep_attn, keep_ffn = bool(u[0] >= self.sublayer_drop), bool(u[1] >= self.sublayer_drop)
        heads = None
        if self.head_drop:
            heads = (u[2:] >= self.head_drop).nonzero().squeeze(1)
            keep_attn = keep_attn and len(heads) > 0
        return keep_attn, keep_ffn, heads

    def _residual(self, x, block, norm, *args):
        if self.pre_norm:
            return x + F.dropout(block(norm(x), *args), self.dropout, self.training)
        return norm(x + F.dropout(block(x, *args), self.dropout, self.training))

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor | None = None) -> torch.Tensor:
        keep_attn, keep_ffn, heads = self._sample()
        self.last_keep = {"attn": keep_attn, "ffn": keep_ffn,
                          "heads": self.attn.n_heads if heads is None else len(heads)}
        if keep_attn:
            x = self._residual(x, self.attn, self.attn_norm, pad_mask, heads)
        if keep_ffn:
            x = self._residual(x, self.ffn, self.ffn_norm)
        return x


def make_stack(
    n_layers: int, layerdrop: float | Sequence[float], *, seed: int = 0, salt: int = 0, learned: bool = False,
    **layer_kwargs,
) -> LayerDropList:
    """``salt`` separates this stack's draws from another stack's; each layer gets its own salt."""
    layers = [TransformerLayer(**layer_kwargs, salt=1000 * (salt + 1) + i) for i in range(n_layers)]
    return LayerDropList(layers, layerdrop, seed, salt, learned=learned)


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    """(max_len, C) fixed position table, as in Vaswani et al. and fairseq (sin half, cos half)."""
    half = d_model // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = torch.arange(max_len, dtype=torch.float)[:, None] * freq[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(table, (0, d_model % 2))
