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
from layerdrop.models.ops import attention, dropout


class SelfAttention(nn.Module):
    """Multi-head attention on PyTorch's fused scaled-dot-product kernel: self-attention, or
    encoder-decoder attention with ``cross=True`` (queries from x, keys/values from ``memory``).

    ``heads`` (kept head indices) computes only those heads: their rows of the input projections and
    their columns of the output projection; the other heads cost nothing.

    ``state`` (a dict, incremental decoding): self-attention appends this call's keys/values to the
    cached ones and attends over all of them, so each new position costs O(T) instead of re-running
    the prefix; cross-attention projects ``memory`` once and reuses it."""

    def __init__(self, d_model: int, n_heads: int, attn_dropout: float = 0.0, causal: bool = True,
                 cross: bool = False):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads, self.causal, self.attn_dropout, self.cross = n_heads, causal and not cross, attn_dropout, cross
        if cross:
            self.q, self.kv = nn.Linear(d_model, d_model), nn.Linear(d_model, 2 * d_model)
        else:
            self.qkv = nn.Linear(d_model, 3 * d_model)  # q, k and v in one matmul
        self.out = nn.Linear(d_model, d_model)

    @staticmethod
    def _rows(linear: nn.Linear, parts: int, H: int, heads: torch.Tensor | None):
        """A packed (parts*H*D, C) projection, cut to the kept heads."""
        w, b = linear.weight, linear.bias
        if heads is None:
            return w, b
        C = w.size(1)
        D = w.size(0) // (parts * H)
        return w.view(parts, H, D, C)[:, heads].reshape(-1, C), b.view(parts, H, D)[:, heads].reshape(-1)

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, heads: torch.Tensor | None = None,
        memory: torch.Tensor | None = None, state: dict | None = None,
    ) -> torch.Tensor:
        """x (B,T,C); pad_mask (B,S) True at padded keys (S = T, or memory's length when cross)."""
        B, T, C = x.shape
        H = self.n_heads
        D = C // H
        w_out = self.out.weight
        if heads is not None:
            heads = heads.to(w_out.device)  # drawn on the host (see SyncedDraws)
            w_out = w_out.view(C, H, D)[:, heads].reshape(C, -1)
        h = H if heads is None else len(heads)
        if self.cross:
            w_q, b_q = self._rows(self.q, 1, H, heads)
            q = F.linear(x, w_q, b_q).view(B, T, h, D).transpose(1, 2)  # (B,h,T,D)
            if state is not None and "k" in state:
                k, v = state["k"], state["v"]
            else:
                w_kv, b_kv = self._rows(self.kv, 2, H, heads)
                S = memory.size(1)
                k, v = F.linear(memory, w_kv, b_kv).view(B, S, 2, h, D).permute(2, 0, 3, 1, 4)  # 2 x (B,h,S,D)
                if state is not None:
                    state["k"], state["v"] = k, v
            causal = False
        else:
            w_qkv, b_qkv = self._rows(self.qkv, 3, H, heads)
            q, k, v = F.linear(x, w_qkv, b_qkv).view(B, T, 3, h, D).permute(2, 0, 3, 1, 4)  # 3 x (B,h,T,D)
            causal = self.causal
            if state is not None:
                if "k" in state:  # the new position(s) see every cached one: no mask needed for T == 1
                    if T != 1:
                        raise ValueError("incremental decoding feeds one position at a time after the first call")
                    k, v = torch.cat([state["k"], k], dim=2), torch.cat([state["v"], v], dim=2)
                    causal = False
                state["k"], state["v"] = k, v
        y = attention(q, k, v, key_pad=pad_mask, causal=causal,
                      dropout_p=self.attn_dropout if self.training else 0.0)  # (B,h,T,D)
        return F.linear(y.transpose(1, 2).reshape(B, T, h * D), w_out, self.out.bias)


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act_dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act_dropout = act_dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(dropout(F.relu(self.fc1(x)), self.act_dropout, self.training))


class TransformerLayer(nn.Module):
    """Self-attention, then (``cross=True``, a decoder layer) encoder-decoder attention, then
    feed-forward, each a residual block; pre-norm (fairseq's ``normalize_before``) or post-norm
    (Vaswani et al.).

    Finer structured dropout (paper Figure 4), both off by default and only while training:
    ``sublayer_drop`` skips the attention block and the feed-forward block independently;
    ``head_drop`` skips attention heads (all heads dropped = the block is skipped). Draws are
    synchronised like LayerDrop's (``set_draw``). In a decoder layer the cross-attention block is a
    third sub-layer and shares the self-attention's head draw."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, *, dropout: float = 0.1, attn_dropout: float = 0.0,
        act_dropout: float = 0.0, pre_norm: bool = True, causal: bool = True, sublayer_drop: float = 0.0,
        head_drop: float = 0.0, salt: int = 0, cross: bool = False,
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, attn_dropout, causal)
        self.attn_norm = nn.LayerNorm(d_model)
        self.cross = cross
        if cross:
            self.cross_attn = SelfAttention(d_model, n_heads, attn_dropout, cross=True)
            self.cross_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, act_dropout)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout, self.pre_norm = dropout, pre_norm
        self.sublayer_drop, self.head_drop = check_rates(sublayer_drop, 1)[0], check_rates(head_drop, 1)[0]
        self.draws = SyncedDraws(salt=salt)
        self.last_keep = {"attn": True, "ffn": True, "cross": cross, "heads": n_heads}  # the latest forward

    def set_draw(self, draw: int | None, seed: int | None = None) -> None:
        self.draws.set_draw(draw, seed)

    def _sample(self) -> tuple[bool, bool, bool, torch.Tensor | None]:
        """(run attention?, run feed-forward?, run cross-attention?, kept heads or None for all)."""
        if not self.training or not (self.sublayer_drop or self.head_drop):
            return True, True, self.cross, None
        H = self.attn.n_heads
        u = self.draws.uniform(2 + H + self.cross)  # the LM's draws are unchanged by the cross slot
        keep_attn, keep_ffn = bool(u[0] >= self.sublayer_drop), bool(u[1] >= self.sublayer_drop)
        keep_cross = self.cross and bool(u[-1] >= self.sublayer_drop)
        heads = None
        if self.head_drop:
            heads = (u[2 : 2 + H] >= self.head_drop).nonzero().squeeze(1)
            keep_attn, keep_cross = keep_attn and len(heads) > 0, keep_cross and len(heads) > 0
        return keep_attn, keep_ffn, keep_cross, heads

    def _residual(self, x, block, norm, *args, **kwargs):
        if self.pre_norm:
            return x + dropout(block(norm(x), *args, **kwargs), self.dropout, self.training)
        return norm(x + dropout(block(x, *args, **kwargs), self.dropout, self.training))

    def forward(
        self, x: torch.Tensor, pad_mask: torch.Tensor | None = None, memory: torch.Tensor | None = None,
        memory_pad_mask: torch.Tensor | None = None, state: dict | None = None,
    ) -> torch.Tensor:
        """x (B,T,C). Decoder layers take the encoder output ``memory`` (B,S,C) and its padding
        ``memory_pad_mask`` (B,S); ``state`` (a dict) caches keys/values for incremental decoding."""
        if self.cross and memory is None:
            raise ValueError("a decoder layer (cross=True) needs the encoder output `memory`")
        keep_attn, keep_ffn, keep_cross, heads = self._sample()
        self.last_keep = {"attn": keep_attn, "ffn": keep_ffn, "cross": keep_cross,
                          "heads": self.attn.n_heads if heads is None else len(heads)}
        self_state = cross_state = None
        if state is not None:
            self_state, cross_state = state.setdefault("self", {}), state.setdefault("cross", {})
        if keep_attn:
            x = self._residual(x, self.attn, self.attn_norm, pad_mask, heads, state=self_state)
        if keep_cross:
            x = self._residual(x, self.cross_attn, self.cross_norm, memory_pad_mask, heads, memory=memory,
                               state=cross_state)
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
