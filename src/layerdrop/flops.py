"""What the benchmark compares speed against: this machine's matmul peak, and FLOP models of the
project's models (matmul FLOPs of one forward, per token or per batch; training is 3x). The models
are checked against PyTorch's own FLOP counter in tests/test_bench.py."""

from __future__ import annotations

import time

import torch

from layerdrop.models.lm import LMConfig
from layerdrop.models.seq2seq import Seq2SeqConfig

PEAK_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (4096, 512, 2048), (4096, 128, 512), (4096, 512, 128)]


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype: torch.dtype, shapes=PEAK_SHAPES, repeats: int = 15) -> dict:
    """{shape: best GFLOP/s} and the best of all shapes ("peak"), for (m,k) @ (k,n) matmuls."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / _best(lambda a=a, b=b: a @ b, repeats) / 1e9
    out["peak"] = max(out.values())
    return out


def lm_forward_flops(cfg: LMConfig, kept_layers: float, T: int, band_shares: list[float] | None = None) -> float:
    """Per token: each kept layer's projections and feed-forward, attention over all T keys (the
    kernel computes the masked half too), the output layer (the adaptive softmax's head, plus each
    tail for its share of tokens) and the adaptive input's projections."""
    C = cfg.d_model
    layer = 2 * (4 * C * C + 2 * C * cfg.d_ff) + 4 * T * C
    if not cfg.adaptive:
        return kept_layers * layer + 2 * C * cfg.vocab_size
    edges = [0, *cfg.cutoffs, cfg.vocab_size]
    dims = [int(C // cfg.adaptive_factor**i) for i in range(len(edges) - 1)]
    shares = band_shares or [0.0] * len(dims)
    head = 2 * C * (edges[1] + len(dims) - 1)
    tails = sum(s * (2 * C * d + 2 * d * (b - a)) for s, d, a, b in zip(shares[1:], dims[1:], edges[1:-1], edges[2:]))
    inputs = sum(s * 2 * d * C for s, d in zip(shares[1:], dims[1:]))
    return kept_layers * layer + head + tails + inputs


def band_shares(cfg: LMConfig, tokens: torch.Tensor) -> list[float] | None:
    if not cfg.adaptive:
        return None
    edges = [0, *cfg.cutoffs, cfg.vocab_size]
    return [((tokens >= a) & (tokens < b)).float().mean().item() for a, b in zip(edges, edges[1:])]


def mt_forward_flops(cfg: Seq2SeqConfig, B: int, S: int, T: int, enc_kept: float, dec_kept: float) -> float:
    """Per batch of B padded pairs (S source, T target positions)."""
    C, ff = cfg.d_model, cfg.d_ff
    enc = B * S * (2 * (4 * C * C + 2 * C * ff) + 4 * S * C)
    dec = B * T * (2 * (6 * C * C + 2 * C * ff) + 4 * T * C + 4 * S * C) + B * S * 2 * 2 * C * C
    return enc_kept * enc + dec_kept * dec + B * T * 2 * C * cfg.vocab_size
