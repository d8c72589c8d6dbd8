"""Every speed measure tried, one at a time, against the default cpu LM training step:
``python -m layerdrop.bench --ablation`` writes results/bench/ablation.md.

Each variant changes one thing and is timed interleaved with the default (step by step, so machine
noise hits both alike); the effect is the default's mean step time over the variant's. What the
project keeps is the default; a variant that loses stays out of the code and is listed here, so the
question is not asked again.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from layerdrop.bench import interleaved, lm_shape, lm_trainer, pipeline_optimizer
from layerdrop.models import ops
from layerdrop.report.collect import write_text
from layerdrop.utils.runs import code_version, cpus, machine_info


def _with(ctx_factory, step):
    def run():
        with ctx_factory():
            return step()
    return run


def _threads(n: int, step):
    def run():
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            return step()
        finally:
            torch.set_num_threads(before)
    return run


def _bf16_weights_step(cfg, x, optimizer):
    """bf16 parameters and optimizer state, no autocast, no fp32 master copy (fastest, least exact)."""
    from layerdrop.models.lm import TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(cfg).train().bfloat16()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **optimizer)

    def step():
        loss = model.nll(model(x), x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _bf16_master_step(cfg, x, optimizer):
    """bf16 parameters and activations throughout (no autocast casts), the optimizer on an fp32 master copy:
    each step copies the bf16 gradients into the master's and the updated master back (fairseq's --fp16)."""
    from layerdrop.models.lm import TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(cfg).train().bfloat16()
    params = list(model.parameters())
    master = [p.detach().float().requires_grad_() for p in params]
    opt = torch.optim.AdamW(master, lr=1e-3, **optimizer)

    def step():
        loss = model.nll(model(x), x).float().mean()
        loss.backward()
        for m, p in zip(master, params):
            m.grad = None if p.grad is None else p.grad.float()
        opt.step()
        torch._foreach_copy_([p.data for p in params], master)
        opt.zero_grad(set_to_none=True)
        model.zero_grad(set_to_none=True)
    return step


def _compiled_step(cfg, x, bf16, optimizer):
    """Regional torch.compile: each Transformer layer compiled (one graph for all layers, so a new
    set of kept layers does not recompile)."""
    from layerdrop.models.lm import TransformerLM

    torch.manual_seed(0)
    model = TransformerLM(cfg).train()
    for layer in model.layers:
        layer.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **optimizer)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.nll(model(x), x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    start = time.perf_counter()
    step()
    step.compile_s = time.perf_counter() - start
    return step


def attention_kernels(shapes, repeats: int = 20) -> list[dict]:
    """Forward + backward of causal/padded attention per kernel and shape, bf16 (as trained)."""
    rows = []
    for name, (B, H, T, D) in shapes.items():
        qkvg = [torch.randn(B, H, T, D, dtype=torch.bfloat16, requires_grad=i < 3) for i in range(4)]

        def sdpa(backend, qkvg=qkvg):
            q, k, v, g = qkvg

            def run():
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(g)
            return run

        def fast(qkvg=qkvg):
            q, k, v, g = qkvg
            ops.attention(q, k, v, causal=True).backward(g)

        t = interleaved({"SDPA math": sdpa(SDPBackend.MATH), "SDPA flash": sdpa(SDPBackend.FLASH_ATTENTION),
                         "ours (baddbmm, bf16)": fast}, repeats)
        rows.append({"shape": name, **{k: v["median_s"] * 1000 for k, v in t.items()}})
    return rows


def cross_entropy_kernels(shapes, repeats: int = 20) -> list[dict]:
    """Forward + backward of the loss on bf16 logits: fp32 log_softmax of all rows against ours."""
    rows = []
    for name, (N, V, eps) in shapes.items():
        logits = torch.randn(N, V, dtype=torch.bfloat16, requires_grad=True)
        target = torch.randint(0, V, (N,))

        def run(plain, logits=logits, target=target, eps=eps):
            def step():
                with ops.plain(attention=False, dropout=False, cross_entropy=plain):
                    ops.cross_entropy(logits, target, eps)[0].sum().backward()
            return step

        t = interleaved({"fp32 log_softmax": run(True), "ours (blockwise)": run(False)}, repeats)
        rows.append({"shape": name, **{k: v["median_s"] * 1000 for k, v in t.items()}})
    return rows


def qkv_projection(batch_tokens: int, C: int, repeats: int = 30) -> dict:
    x = torch.randn(batch_tokens, C, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(3 * C, C, dtype=torch.bfloat16, requires_grad=True)
    ws = [torch.randn(C, C, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]

    def fused():
        F.linear(x, w).sum().backward()

    def split():
        sum(F.linear(x, wi).sum() for wi in ws).backward()

    t = interleaved({"fused": fused, "split": split}, repeats)
    return {k: v["median_s"] * 1000 for k, v in t.items()}


def run(out: Path, steps: int) -> None:
    started = time.time()
    cfg, batch, _, bf16, text = lm_shape(["experiment=table2_lm"])
    x = text[: batch[0]]
    tokens = batch[0] * batch[1]
    optimizer = pipeline_optimizer(["experiment=table2_lm"])  # fused, as the cpu configs train
    default = lm_trainer(cfg, x, bf16, optimizer)
    rows = []

    def compare(name: str, variant, setting: bool, note: str, variant_tokens: int | None = None, extra: str = "",
                exact: bool = True):
        t = interleaved({"default": default, "variant": variant}, steps)
        d = tokens / t["default"]["mean_s"]
        v = (variant_tokens or tokens) / t["variant"]["mean_s"]
        rows.append({"measure": name, "default_tokens_per_s": d, "variant_tokens_per_s": v, "effect": d / v,
                     "setting": setting, "exact": exact, "note": note + extra})
        print(f"{name}: default {d:,.0f} tokens/s, variant {v:,.0f} tokens/s", flush=True)

    compare("attention: PyTorch SDPA (CPU math kernel) instead of ours",
            _with(lambda: ops.plain(attention=True, dropout=False, cross_entropy=False), lm_trainer(cfg, x, bf16, optimizer)), False,
            "SDPA's CPU math kernel computes bf16 inputs in fp32; kernels by shape below")
    compare("dropout: F.dropout (bernoulli_) instead of ours",
            _with(lambda: ops.plain(attention=False, dropout=True, cross_entropy=False), lm_trainer(cfg, x, bf16, optimizer)), False,
            "ours reads four 16-bit uniforms from each 64-bit generator call")
    compare("cross-entropy: fp32 log_softmax of all rows instead of ours (blockwise)",
            _with(lambda: ops.plain(attention=False, dropout=False, cross_entropy=True), lm_trainer(cfg, x, bf16, optimizer)),
            False, "ours never holds the (N, V) fp32 log-probabilities")
    compare("output layer: 4096-way tied softmax instead of the adaptive softmax",
            lm_trainer(replace(cfg, adaptive=False), x, bf16, optimizer), False,
            "the adaptive softmax is also the paper's LM")
    compare("optimizer: foreach AdamW instead of fused", lm_trainer(cfg, x, bf16, {"fused": False}), False,
            "Lightning refuses to clip for a fused optimizer (a guard for fp16's loss scaler); under bf16 the "
            "module clips itself (lit/base.py)")
    compare("precision: fp32 instead of bf16 autocast", lm_trainer(cfg, x, False, optimizer), False,
            "bf16's quality check is in bench.md", exact=False)
    compare("precision: bf16 weights and optimizer state, no fp32 master copy", _bf16_weights_step(cfg, x, optimizer), False,
            "without an fp32 master copy small Adam updates round away; only worth it if much faster", exact=False)
    compare("precision: bf16 weights and activations with an fp32 master copy instead of autocast",
            _bf16_master_step(cfg, x, optimizer), False,
            "no per-op casts; norms, softmax and the residual stream in bf16 (fairseq's --fp16 recipe)", exact=False)
    compare("threads: 1 instead of 2", _threads(1, lm_trainer(cfg, x, bf16, optimizer)), False, "torch's default is one thread per core")
    compiled = _compiled_step(cfg, x, bf16, optimizer)
    compare("torch.compile (inductor, each layer)", compiled, False,
            "one graph serves every layer, so new kept-layer sets do not recompile",
            extra=f"; first step (compilation) {compiled.compile_s:.0f} s")
    for B, T in [(16, 128), (64, 128), (16, 256)]:
        if cfg.max_len < T:
            cfg_b = replace(cfg, max_len=T)
        else:
            cfg_b = cfg
        compare(f"batch {B} x {T} tokens instead of {batch[0]} x {batch[1]}", lm_trainer(cfg_b, text.reshape(-1)[: B * T].view(B, T), bf16,
                                                                                 optimizer),
                True, "a training hyperparameter (the regime issue chooses it); listed for its speed", B * T)

    compare(f"width: d={2 * cfg.d_model}, ff={2 * cfg.d_ff} instead of d={cfg.d_model}, ff={cfg.d_ff}",
            lm_trainer(replace(cfg, d_model=2 * cfg.d_model, d_ff=2 * cfg.d_ff), x, bf16, optimizer), True,
            "a model shape (the regime issue chooses it); listed for its cost on this CPU: with AMX the matmuls "
            "are cheap, yet the element-wise work grows with the width too")

    attn = attention_kernels({"LM (B=32, H=4, T=128, D=32)": (32, 4, 128, 32),
                              "MT (B=100, H=4, T=20, D=32)": (100, 4, 20, 32)})
    ce = cross_entropy_kernels({"LM tied softmax (N=4096, V=4096)": (4096, 4096, 0.0),
                                "MT (N=1100, V=8000, label smoothing 0.1)": (1100, 8000, 0.1)})
    qkv = qkv_projection(tokens, cfg.d_model)
    result = {"machine": machine_info(), "code": code_version(), "seconds": round(time.time() - started),
              "shape": {"batch": batch, "bf16": bf16, "d_model": cfg.d_model, "n_layers": cfg.n_layers},
              "rows": rows, "attention_kernels_ms": attn, "cross_entropy_ms": ce, "qkv_ms": qkv}
    write_text(out / "ablation.json", json.dumps(result, indent=2, default=str) + "\n")
    text = render(result)
    write_text(out / "ablation.md", text + "\n")
    print(text)


NOISE = 0.03


def verdict(row: dict) -> str:
    if row["setting"]:
        return "a setting, not a code choice"
    if row["effect"] > 1 + NOISE:
        return "default faster: variant not used"
    if row["effect"] < 1 - NOISE:
        if not row.get("exact", True):
            return (f"variant {100 * (1 / row['effect'] - 1):.0f}% faster but it changes what is learned: "
                    "not adopted")
        return "**variant faster: adopt it**"
    return "no difference beyond the noise"


def render(r: dict) -> str:
    m = r["machine"]
    lines = ["# Speed ablation: one change at a time against the default cpu LM training step", "",
             f"`python -m layerdrop.bench --ablation` on {cpus(m)}, torch {m['torch']}, code {r['code']}, "
             f"{r['seconds']} s. Default: {r['shape']['n_layers']} layers, d={r['shape']['d_model']}, batch "
             f"{tuple(r['shape']['batch'])}, {'bf16 autocast' if r['shape']['bf16'] else 'fp32'}, the fast attention "
             "and dropout, adaptive softmax. Each row is timed interleaved with the default; effect = default "
             "tokens/s / variant tokens/s (above 1: the default is faster).", "",
             f"Verdicts: within {100 * NOISE:.0f}% is no difference (repeat runs of this table move by about that).",
             "", "| change | default tokens/s | variant tokens/s | default's speed-up | verdict | note |",
             "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        lines.append(f"| {row['measure']} | {row['default_tokens_per_s']:,.0f} | {row['variant_tokens_per_s']:,.0f} | "
                     f"{row['effect']:.2f}x | {verdict(row)} | {row['note']} |")
    lines += ["", "Attention kernels, forward + backward, bf16, median ms:", "",
              "| shape | " + " | ".join(k for k in r["attention_kernels_ms"][0] if k != "shape") + " |",
              "|---|" + "---|" * (len(r["attention_kernels_ms"][0]) - 1)]
    for row in r["attention_kernels_ms"]:
        lines.append(f"| {row['shape']} | " + " | ".join(f"{v:.1f}" for k, v in row.items() if k != "shape") + " |")
    lines += ["", "Cross-entropy, forward + backward on bf16 logits, median ms:", "",
              "| shape | " + " | ".join(k for k in r["cross_entropy_ms"][0] if k != "shape") + " |",
              "|---|" + "---|" * (len(r["cross_entropy_ms"][0]) - 1)]
    for row in r["cross_entropy_ms"]:
        lines.append(f"| {row['shape']} | " + " | ".join(f"{v:.1f}" for k, v in row.items() if k != "shape") + " |")
    q = r["qkv_ms"]
    lines += ["", f"q, k, v projections forward + backward: one fused (C, 3C) matmul {q['fused']:.2f} ms, three "
              f"(C, C) matmuls {q['split']:.2f} ms: fused kept."]
    return "\n".join(lines)
