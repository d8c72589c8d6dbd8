"""The two hot element-wise paths of a training step, in a fast CPU form and a plain reference form.

``make bench`` (results/bench/ablation.md) measured, on this project's shapes (B*H = 128 short
sequences, head width 32, bf16 autocast on a 2-core CPU):

- attention: PyTorch's CPU SDPA kernels upcast bf16 to fp32 (math) or run slowly backwards
  (flash); a ``baddbmm`` with a cached additive causal mask, softmax and ``bmm``, all in the
  input's dtype, is 2.6x faster forward + backward;
- dropout: ``F.dropout`` draws its mask with ``bernoulli_``; comparing ``torch.rand`` with p is
  1.6x faster forward + backward. The drop probability and the 1 / (1 - p) scaling are the same.

Off the CPU (CUDA) the fused SDPA kernels are the fast path and are always used.

- cross-entropy: fp32 log-sum-exp a block of rows at a time instead of an (N, V) fp32 log_softmax
  and its gradient (results/bench/ablation.md has the measured effect).

``plain()`` switches to the reference forms (SDPA's math kernel, ``F.dropout``, fp32 log_softmax) for
the duration of a ``with`` block; tests use it to check that the fast forms compute the same loss
and gradients.
"""

from __future__ import annotations

import contextlib
import math
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

_plain = {"attention": False, "dropout": False, "cross_entropy": False}


@contextlib.contextmanager
def plain(attention: bool = True, dropout: bool = True, cross_entropy: bool = True):
    """Run attention, dropout and/or cross-entropy through PyTorch's reference kernels in this block."""
    before = dict(_plain)
    _plain.update(attention=attention or before["attention"], dropout=dropout or before["dropout"],
                  cross_entropy=cross_entropy or before["cross_entropy"])
    try:
        yield
    finally:
        _plain.update(before)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: each element zeroed with probability p, the rest scaled by 1 / (1 - p)."""
    if not training or p == 0.0:
        return x
    if _plain["dropout"] or x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    return x * _keep_mask(x.shape, p, x.dtype, x.device)


def _keep_mask(shape: torch.Size, p: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1 / (1 - p) with probability 1 - p, else 0. Each 63-bit draw of the generator (``random_`` on
    int64 fills [0, 2**63)) is read as four 16-bit uniforms: three over [-2**15, 2**15) and a top one
    over [0, 2**15), each compared with its own threshold; a fifth of the generator calls of
    ``torch.rand``. p is resolved to 1/65536 (1/32768 in the top lane)."""
    n = math.prod(shape)
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_().view(torch.int16).view(-1, 4)
    low, top = round(p * 65536) - 32768, round(p * 32768)
    order = [low, low, low, top] if sys.byteorder == "little" else [top, low, low, low]
    thresholds = torch.tensor(order, dtype=torch.int16, device=device)
    keep = (lanes >= thresholds).view(-1)[:n].view(shape)
    return keep.to(dtype).mul_(1.0 / (1.0 - p))


_causal_cache: dict[tuple, torch.Tensor] = {}


def _causal_bias(T: int, S: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T,S) additive mask, 0 where query t may see key s (s <= t, as SDPA's ``is_causal``), -inf elsewhere."""
    key = (T, S, dtype, device)
    bias = _causal_cache.get(key)
    if bias is None:
        if len(_causal_cache) > 64:
            _causal_cache.clear()
        bias = torch.full((T, S), float("-inf"), dtype=dtype, device=device).triu_(1)
        _causal_cache[key] = bias
    return bias


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_pad: torch.Tensor | None = None,
    causal: bool = False, dropout_p: float = 0.0, bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """q (B,H,T,D), k and v (B,H,S,D); ``key_pad`` (B,S) True at padded keys; ``bias`` (H,T,S) added to
    every row's scores (a position bias such as ALiBi's); -> (B,H,T,D).

    Every query must see at least one key (true for causal self-attention and for any source with a
    token); the fast form gives NaN to a query that sees none."""
    if _plain["attention"] or q.device.type != "cpu":
        mask = None if key_pad is None else ~key_pad[:, None, None, :]  # True = attend
        if causal and (mask is not None or bias is not None):  # is_causal cannot be combined with a mask
            tril = torch.ones(q.size(2), k.size(2), dtype=torch.bool, device=q.device).tril()
            mask = tril if mask is None else mask & tril
        if bias is not None:  # a float mask: the bias, -inf where the boolean mask forbids
            bias = bias.to(q.dtype)
            mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
        ctx = sdpa_kernel(SDPBackend.MATH) if q.device.type == "cpu" else contextlib.nullcontext()
        with ctx:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal and mask is None,
                                                  dropout_p=dropout_p)
    B, H, T, D = q.shape
    S = k.size(2)
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else q.dtype
    q3, k3, v3 = (t.reshape(B * H, -1, D).to(dtype) for t in (q, k, v))
    add = None if bias is None else bias.to(dtype)[None]  # (1,H,T,S)
    if causal:
        add = _causal_bias(T, S, dtype, q.device) if add is None else add + _causal_bias(T, S, dtype, q.device)
    if key_pad is not None:
        pad = torch.zeros(key_pad.shape, dtype=dtype, device=q.device).masked_fill_(key_pad, float("-inf"))
        pad = pad[:, None, None, :]  # (B,1,1,S)
        add = pad if add is None else pad + add  # (B,1,1,S), or (B,1|H,T,S) with a causal mask or a bias
    if add is not None:
        add = add.expand(B, H, add.size(-2), S).reshape(B * H, add.size(-2), S)  # baddbmm broadcasts over T
    scale = 1.0 / math.sqrt(D)
    if add is None:
        scores = torch.bmm(q3, k3.transpose(1, 2)).mul_(scale)
    else:
        scores = torch.baddbmm(add, q3, k3.transpose(1, 2), alpha=scale)
    probs = scores.softmax(-1)
    if dropout_p:
        probs = dropout(probs, dropout_p, True)
    return torch.bmm(probs, v3).view(B, H, T, D)


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Per-row fairseq label-smoothed cross-entropy of (N,V) logits, computed in fp32 a block of rows at
    a time, so the (N,V) fp32 log-probabilities and their gradient never exist in memory."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, epsilon: float, rows: int):
        N, V = logits.shape
        eps_i = epsilon / (V - 1) if epsilon else 0.0
        lse = torch.empty(N, dtype=torch.float32, device=logits.device)
        z_t = logits.gather(1, target[:, None]).squeeze(1).float()
        z_sum = torch.empty(N, dtype=torch.float32, device=logits.device) if epsilon else None
        for i in range(0, N, rows):
            block = logits[i : i + rows].float()
            lse[i : i + rows] = block.logsumexp(-1)
            if epsilon:
                z_sum[i : i + rows] = block.sum(-1)
        nll = lse - z_t
        # fairseq: (1 - eps - eps_i) nll + eps_i sum_j(-log p_j) = lse - (1 - eps - eps_i) z_t - eps_i sum_j z_j
        loss = nll.clone() if not epsilon else lse - (1.0 - epsilon - eps_i) * z_t - eps_i * z_sum
        ctx.save_for_backward(logits, target, lse)
        ctx.eps, ctx.eps_i, ctx.rows = epsilon, eps_i, rows
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_nll: torch.Tensor):
        logits, target, lse = ctx.saved_tensors
        N = logits.size(0)
        grad = torch.empty_like(logits)
        on_target = 1.0 - ctx.eps - ctx.eps_i if ctx.eps else 1.0
        for i in range(0, N, ctx.rows):
            j = slice(i, i + ctx.rows)
            p = logits[j].to(torch.float32, copy=True).sub_(lse[j, None]).exp_()  # softmax of the block (a copy: fp32 logits stay intact)
            if ctx.eps_i:
                p.sub_(ctx.eps_i)
            p.scatter_add_(1, target[j, None], torch.full_like(p[:, :1], -on_target))
            grad[j] = p.mul_(grad_loss[j, None])
        return grad, None, None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, epsilon: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,V) logits (any float dtype), (N,) targets in [0, V) -> per row (label-smoothed loss, nll), fp32.

    The same numbers as ``log_softmax`` in fp32 followed by fairseq's ``label_smoothed_nll_loss`` (the
    target gets 1 - eps, every other class eps / (V - 1)); the gradient comes back in the logits' dtype."""
    if _plain["cross_entropy"]:
        lprobs = logits.float().log_softmax(-1)
        nll = -lprobs.gather(1, target[:, None]).squeeze(1)
        if not epsilon:
            return nll, nll.detach()
        eps_i = epsilon / (logits.size(-1) - 1)
        return (1.0 - epsilon - eps_i) * nll - eps_i * lprobs.sum(-1), nll.detach()
    # About 1 MB of fp32 per block on the CPU (cache-sized); 256 MB on an accelerator, where each block
    # costs kernel launches (a 3584 x 32768 MT batch is 448 blocks of 1 MB, but 2 of 256 MB).
    budget = 1 << 18 if logits.device.type == "cpu" else 1 << 26
    rows = max(1, budget // logits.size(-1))
    return _SmoothedCrossEntropy.apply(logits, target, float(epsilon), rows)
