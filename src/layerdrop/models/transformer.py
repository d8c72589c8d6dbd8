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

inf = float("inf")


class SelfAttention(nn.Module):
    """Multi-head attention through ``ops.attention`` (the fast CPU form, or SDPA): self-attention, or
    encoder-decoder attention with ``cross=True`` (queries from x, keys/values from ``memory``).

    ``heads`` (kept head indices) computes only those heads: their rows of the input projections and
    their columns of the output projection; the other heads cost nothing.

    ``state`` (a dict, incremental decoding): self-attention writes this call's keys/values into
    ``state["cache"]`` (a ``KVCache``, layer ``state["layer"]``) and attends over every cached
    position, so each new position costs O(T) instead of re-running the prefix; cross-attention
    projects ``memory`` once and reuses it. ``memory`` may have fewer rows than ``x``: each memory
    row then serves ``len(x) // len(memory)`` consecutive rows of ``x`` (the beams of one sentence
    share its encoder output, which is projected and stored once, not once per beam). Decoding steps
    attend without ``ops.attention``: the cache's time-major keys and the cached source mask would
    otherwise be transposed or rebuilt at every step; they compute the same softmax(q k^T / sqrt(D)) v."""

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
        memory: torch.Tensor | None = None, state: dict | None = None, bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B,T,C); pad_mask (B,S) True at padded keys (S = T, or memory's length when cross); ``bias``
        (H,T,T) added to the self-attention scores (a position bias; not with ``state``)."""
        B, T, C = x.shape
        H = self.n_heads
        D = C // H
        w_out = self.out.weight
        if heads is not None:
            heads = heads.to(w_out.device)  # drawn on the host (see SyncedDraws)
            w_out = w_out.view(C, H, D)[:, heads].reshape(C, -1)
        h = H if heads is None else len(heads)
        if self.cross:
            if state is not None and "k" in state:
                k, v = state["k"], state["v"]
            else:
                w_kv, b_kv = self._rows(self.kv, 2, H, heads)
                Bm, S = memory.shape[:2]
                kv = F.linear(memory, w_kv, b_kv).view(Bm, S, 2, h, D).permute(2, 0, 3, 1, 4)  # 2 x (Bm,h,S,D)
                if state is not None:  # stored once, contiguous, for every later step
                    kv = kv.contiguous()
                    state["k"], state["v"] = kv[0], kv[1]
                k, v = kv[0], kv[1]
            Bm = k.size(0)
            if B % Bm:
                raise ValueError(f"cross-attention: {B} query rows cannot share {Bm} memory rows evenly")
            w_q, b_q = self._rows(self.q, 1, H, heads)
            q = F.linear(x, w_q, b_q).view(Bm, B // Bm * T, h, D).transpose(1, 2)  # (Bm,h,G*T,D)
            if state is not None:  # decoding: scale and source mask folded into one batched matmul
                if "bias" not in state:  # (Bm,h,1,S): 0, or -inf at padding; made once, like k and v
                    bias = k.new_zeros(Bm, h, 1, k.size(2))
                    state["bias"] = bias if pad_mask is None else bias.masked_fill_(pad_mask[:, None, None, :], -inf)
                scores = torch.baddbmm(state["bias"].view(Bm * h, 1, -1), q.reshape(Bm * h, -1, D),
                                       k.view(Bm * h, -1, D).transpose(1, 2), alpha=D**-0.5)
                y = torch.bmm(scores.softmax(-1), v.view(Bm * h, -1, D)).view(Bm, h, -1, D)
                return F.linear(y.transpose(1, 2).reshape(B, T, h * D), w_out, self.out.bias)
            causal = False
        else:
            w_qkv, b_qkv = self._rows(self.qkv, 3, H, heads)
            qkv = F.linear(x, w_qkv, b_qkv).view(B, T, 3, h, D)
            if state is not None and T == 1:  # one new position, attending over every cached one
                y = state["cache"].attend(state["layer"], qkv[:, 0])  # (B,h,D)
                return F.linear(y.reshape(B, 1, h * D), w_out, self.out.bias)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B,h,T,D)
            causal = self.causal
            if state is not None:  # a whole prefix at once: only as the first call
                state["cache"].write(state["layer"], k, v)
        if bias is not None:
            if state is not None or self.cross:
                raise ValueError("a position bias is for self-attention over a whole sequence, not decoding or cross-attention")
            bias = bias if heads is None else bias[heads.to(bias.device)]
        y = attention(q, k, v, key_pad=pad_mask, causal=causal, bias=bias,
                      dropout_p=self.attn_dropout if self.training else 0.0)  # (B,h,T,D), or (Bm,h,G*T,D) in cross
        return F.linear(y.transpose(1, 2).reshape(B, T, h * D), w_out, self.out.bias)


def select_rows_(x: torch.Tensor, rows: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``x.index_select(dim, rows)`` made in x's own storage and returned as a view of its first
    ``len(rows)`` rows: only the rows that change (``rows[i] != i``) are copied, so a reordering that
    leaves most rows where they are costs little (beams that stay in their slot, sentences that stay
    in place). Needs ``x.size(dim) >= len(rows)``."""
    n = len(rows)
    moved = rows.ne(torch.arange(n, device=rows.device)).nonzero().squeeze(1)
    if len(moved):  # the sources are read out first, so a row may be both a source and a destination
        x.index_copy_(dim, moved, x.index_select(dim, rows[moved]))
    return x.narrow(dim, 0, n)


class KVCache:
    """The self-attention keys and values of every layer of a stack during incremental decoding, in
    one buffer allocated at the first write with its dtype and device, time-major: (layers, k|v,
    capacity, rows, heads, head width). A step writes its position in place (concatenating would copy
    the whole cache every step, O(T^2) copies in all) and attends over one contiguous slab; ``select``
    reorders the rows of every layer at once, copying only the rows that change (``select_rows_``),
    or everything into a second buffer when most of them do."""

    def __init__(self, n_layers: int, capacity: int = 16):
        self.n_layers, self.capacity = n_layers, capacity
        self.length = 0  # positions written (by every layer); the stack advances it after each call
        self.rows = 0
        self.buf: torch.Tensor | None = None
        self.spare: torch.Tensor | None = None

    def _alloc(self, like: torch.Tensor, capacity: int, rows: int) -> torch.Tensor:
        h, D = like.size(-2), like.size(-1)
        return torch.empty(self.n_layers, 2, capacity, rows, h, D, dtype=like.dtype, device=like.device)

    def _room(self, like: torch.Tensor, N: int, end: int) -> torch.Tensor:
        """The buffer, with room for positions up to ``end`` of N rows (like: (..., h, D))."""
        if self.buf is None:
            self.buf, self.rows = self._alloc(like, max(self.capacity, end), N), N
        elif self.rows != N:
            raise ValueError(f"the cache holds {self.rows} rows, this step has {N}")
        elif end > self.buf.size(2):  # full: double the capacity (amortised O(1) copies per position)
            grown = self._alloc(like, max(2 * self.buf.size(2), end), self.buf.size(3))
            grown[:, :, : self.length] = self.buf[:, :, : self.length]
            self.buf, self.spare = grown, None
        return self.buf

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v (N,h,T,D): a whole prefix, as the first call."""
        if self.length:
            raise ValueError("incremental decoding feeds one position at a time after the first call")
        N, _, T, _ = k.shape
        buf = self._room(k.transpose(1, 2), N, T)
        buf[layer, 0, :T, :N] = k.permute(2, 0, 1, 3)
        buf[layer, 1, :T, :N] = v.permute(2, 0, 1, 3)

    def attend(self, layer: int, qkv: torch.Tensor) -> torch.Tensor:
        """qkv (N,3,h,D) of the new position -> its attention output (N,h,D) over every position so far.
        One query per row: an elementwise product and sum over the contiguous time-major keys, which on
        CPU is several times faster than N*h batched (1,D) x (D,t) matrix products."""
        N, _, h, D = qkv.shape
        t = self.length
        kv = self._room(qkv, N, t + 1)[layer, :, : t + 1, :N]  # (2, t+1, N, h, D)
        kv[:, t] = qkv[:, 1:].transpose(0, 1)
        k, v = kv[0], kv[1]
        scores = (k * (qkv[:, 0] * D**-0.5)).sum(-1)  # (t+1, N, h)
        p = scores.softmax(0, dtype=torch.float32).to(v.dtype)
        return (p[..., None] * v).sum(0)

    def select(self, rows: torch.Tensor) -> None:
        """Row i of the cache becomes old row ``rows[i]``, in every layer."""
        if self.buf is None:
            raise ValueError("select() before the first write: the cache is empty")
        n, t, buf = len(rows), self.length, self.buf
        moved = int(rows.ne(torch.arange(n, device=rows.device)).sum())
        if n <= buf.size(3) and 2 * moved <= n:  # in place: copies `moved` rows twice (out, then back in)
            select_rows_(buf[:, :, :t], rows, dim=3)
        else:  # a full copy into the spare buffer: every row once
            if self.spare is None or self.spare.size(3) < n or self.spare.size(2) != buf.size(2):
                self.spare = self._alloc(buf, buf.size(2), max(n, buf.size(3)))
            torch.index_select(buf[:, :, :t, : self.rows], 3, rows, out=self.spare[:, :, :t, :n])
            self.buf, self.spare = self.spare, buf
        self.rows = n


#: the feed-forward activations: ReLU (Vaswani et al., fairseq's translation and LM) or GELU (BERT, RoBERTa)
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, act_dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        self.fc1, self.fc2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.act_dropout, self.activation = act_dropout, ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(dropout(self.activation(self.fc1(x)), self.act_dropout, self.training))


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
        head_drop: float = 0.0, salt: int = 0, cross: bool = False, activation: str = "relu",
    ):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, attn_dropout, causal)
        self.attn_norm = nn.LayerNorm(d_model)
        self.cross = cross
        if cross:
            self.cross_attn = SelfAttention(d_model, n_heads, attn_dropout, cross=True)
            self.cross_norm = nn.LayerNorm(d_model)
        self.ffn = FeedForward(d_model, d_ff, act_dropout, activation)
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
        memory_pad_mask: torch.Tensor | None = None, state: dict | None = None, attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B,T,C). Decoder layers take the encoder output ``memory`` (B,S,C) and its padding
        ``memory_pad_mask`` (B,S); ``state`` (a dict) caches keys/values for incremental decoding; ``attn_bias``
        (H,T,T) is added to the self-attention scores (the encoder's ALiBi)."""
        if self.cross and memory is None:
            raise ValueError("a decoder layer (cross=True) needs the encoder output `memory`")
        keep_attn, keep_ffn, keep_cross, heads = self._sample()
        self.last_keep = {"attn": keep_attn, "ffn": keep_ffn, "cross": keep_cross,
                          "heads": self.attn.n_heads if heads is None else len(heads)}
        self_state = cross_state = None
        if state is not None:
            self_state, cross_state = state.setdefault("self", {}), state.setdefault("cross", {})
        if keep_attn:
            x = self._residual(x, self.attn, self.attn_norm, pad_mask, heads, state=self_state, bias=attn_bias)
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
