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


def lm_step_ratio(cfg: LMConfig, p: float, T: int, shares: list[float] | None = None) -> float:
    """Expected FLOPs of a LayerDrop step at rate ``p`` against a full step (training is 3x the forward
    for both): only the layers are dropped, the adaptive input and softmax always run."""
    n = cfg.n_layers
    return lm_forward_flops(cfg, (1 - p) * n, T, shares) / lm_forward_flops(cfg, n, T, shares)


def seq2seq_step_ratio(cfg: Seq2SeqConfig, p: float, shapes: list[tuple[int, int, int]]) -> float:
    """Expected FLOPs of a LayerDrop step at rate ``p`` on both stacks against a full step, over the padded
    batch ``shapes`` (B pairs, S source, T target positions) of an epoch: the layers are dropped, the
    embedding and the output layer always run."""
    E, D = cfg.encoder_layers, cfg.decoder_layers
    full = sum(mt_forward_flops(cfg, B, S, T, E, D) for B, S, T in shapes)
    return sum(mt_forward_flops(cfg, B, S, T, (1 - p) * E, (1 - p) * D) for B, S, T in shapes) / full


def equal_flops_steps(overrides: list[str], p: float) -> tuple[int, float]:
    """Steps of the configured model without LayerDrop that cost the FLOPs of its ``trainer.max_steps``
    steps at rate ``p``, and the per-step ratio. LM: adaptive-softmax band shares measured on the train
    stream; encoder-decoder tasks: rate ``p`` on both stacks, over the padded shapes of the first
    training epoch's batches."""
    from hydra.utils import instantiate

    from layerdrop.config import load_config
    from layerdrop.data.pair_batches import TokenBatchSampler
    from layerdrop.train import model_config

    cfg = load_config(overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    if cfg.task.name == "lm":
        model_cfg = LMConfig(**{**model_config(cfg), "vocab_size": dm.vocab_size})
        shares = band_shares(model_cfg, dm.train_set.stream.long())
        ratio = lm_step_ratio(model_cfg, p, cfg.data.block_size, shares)
    elif cfg.task.name in ("mt", "sum", "qa"):
        model_cfg = Seq2SeqConfig(**{**model_config(cfg), "vocab_size": dm.vocab_size})
        train = dm.datasets["train"]
        sampler = TokenBatchSampler(train.src_lens, train.tgt_lens, cfg.data.max_tokens, shuffle=True, seed=cfg.seed)
        shapes = [(len(b), int(train.src_lens[b].max()), int(train.tgt_lens[b].max())) for b in sampler.plan(0)]
        ratio = seq2seq_step_ratio(model_cfg, p, shapes)
    else:
        raise ValueError(f"task.name={cfg.task.name!r}: equal-FLOPs steps are defined for lm, mt, sum and qa")
    return round(ratio * cfg.trainer.max_steps), ratio


def main(argv: list[str] | None = None) -> None:
    """``python -m layerdrop.flops equal-steps P [OVERRIDES...]``: prints the steps of a baseline with the
    training FLOPs of a LayerDrop-P run (experiments/table1_mt.sh and table2_lm.sh use it for the equal-compute row)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2 or args[0] != "equal-steps":
        raise SystemExit("usage: python -m layerdrop.flops equal-steps P [HYDRA_OVERRIDES...]")
    try:
        p = float(args[1])
    except ValueError:
        raise SystemExit(f"P={args[1]!r}: must be a LayerDrop rate in [0, 1)") from None
    if not 0.0 <= p < 1.0:
        raise SystemExit(f"P={p}: must be a LayerDrop rate in [0, 1)")
    steps, _ = equal_flops_steps(args[2:], p)
    print(steps)


if __name__ == "__main__":
    main()
