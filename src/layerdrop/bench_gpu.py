"""What ran on a GPU, and how fast: `make bench-gpu` -> results/bench/gpu.md.

On a CUDA machine it runs the `gpu`-marked tests (tests/test_gpu.py: the paper-scale code paths in
fp16) and measures bf16 training tokens/s and model-FLOPs utilisation of the paper's LM and
Transformer Big shapes, shrunk in depth so a short run fits, at LayerDrop 0 and 0.5, against the
card's measured bf16 matmul peak. Without CUDA it writes only that no GPU was available, so the file
never claims a GPU result that was not measured.

    python -m layerdrop.bench_gpu [--out results/bench] [--depth 4] [--steps 10]
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra.utils import get_class

from layerdrop.config import load_config
from layerdrop.report.collect import write_text
from layerdrop.train import model_config
from layerdrop.utils.runs import git_sha, machine_info


def matmul_peak(device: str, n: int = 4096, repeats: int = 10) -> float:
    """Best bf16 FLOP/s of an n x n matmul on ``device``."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for i in range(repeats + 2):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        if i >= 2:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def paper_model(experiment: str, depth: int, p: float, overrides: dict | None = None):
    """The experiment's paper-scale model (full width and vocabulary) with ``depth`` layers per stack."""
    cfg = load_config([f"experiment={experiment}", "scale=paper"])
    model = model_config(cfg)
    depth_keys = ("encoder_layers", "decoder_layers") if "encoder_layers" in model else ("n_layers",)
    model.update(dict.fromkeys(depth_keys, depth))
    model.update({k: p for k in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop") if k in model})
    model.update(overrides or {})
    return get_class(cfg.task.lit_module)(model=model).model


def train_speed(model, device: str, tokens: int, steps: int) -> dict:
    """bf16 training tokens/s (forward, backward, Adam step) on random tokens, and model FLOPs/s
    (6 x parameters that multiply every token, counted once per kept layer)."""
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    seq2seq = hasattr(model, "encoder")
    V = model.config.vocab_size
    T = min(tokens, model.config.max_len)
    x = torch.randint(4, V, (max(1, tokens // T), T), device=device)
    times = []
    for step in range(steps + 2):
        for m in model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(step, seed=0)
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
            if seq2seq:
                loss = torch.nn.functional.cross_entropy(model.logits(model(x, x)).flatten(0, 1).float(), x.flatten())
            else:
                loss = model.nll(model(x), x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - start)
    per_token = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n)
    seconds = sorted(times)[len(times) // 2]
    return {"tokens_per_s": x.numel() / seconds, "model_flops_per_s": 6 * per_token * x.numel() / seconds}


def run_gpu_tests() -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "tests/test_gpu.py"],
                          capture_output=True, text=True)
    return proc.returncode, proc.stdout[-4000:]


def render(device_name: str, tests: tuple[int, str] | None, rows: list[dict], peak: float | None) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = f"# GPU checks and speed\n\nWritten by `make bench-gpu` on {when}, commit {git_sha()}.\n\n"
    if tests is None:
        info = machine_info()
        return head + (f"**No CUDA device was available** here ({info['cpus']} CPUs, {info['platform']}, torch "
                       f"{info['torch']}). The `gpu`-marked tests (tests/test_gpu.py) and the GPU speed "
                       "benchmarks did not run, so nothing in this file is a GPU measurement. Everything the "
                       "README lists as tested has been tested on CPU only; run `make bench-gpu` on a CUDA "
                       "machine to fill this file.\n")
    code, log = tests
    lines = [head, f"Device: {device_name}; measured bf16 matmul peak {peak / 1e12:.1f} TFLOP/s.\n",
             f"## gpu-marked tests: {'passed' if code == 0 else f'FAILED (exit {code})'}\n", "```", log.strip(), "```\n",
             "## Training speed (bf16 autocast, paper widths and vocabularies, shrunk depth)\n",
             "| model | depth | LayerDrop p | tokens/s | model TFLOP/s | MFU | step cost vs p=0 |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['depth']} | {r['p']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['model_flops_per_s'] / 1e12:.1f} | {r['model_flops_per_s'] / peak:.0%} | {r['cost']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args(argv)
    out = Path(args.out) / "gpu.md"
    if not torch.cuda.is_available():
        write_text(out, render("none", None, [], None))
        print(out.read_text())
        return
    peak = matmul_peak("cuda")
    rows = []
    for name, experiment, tokens in [("Adaptive-input LM (16 x d1024)", "table2_lm", 3072),
                                     ("Transformer Big (6/6 x d1024)", "table1_mt", 3584)]:
        base = None
        for p in (0.0, 0.5):
            r = train_speed(paper_model(experiment, args.depth, p), "cuda", tokens, args.steps)
            base = base or r["tokens_per_s"]
            rows.append({"model": name, "depth": args.depth, "p": p, **r, "cost": base / r["tokens_per_s"]})
    write_text(out, render(torch.cuda.get_device_name(0), run_gpu_tests(), rows, peak))
    print(out.read_text())


if __name__ == "__main__":
    main()
