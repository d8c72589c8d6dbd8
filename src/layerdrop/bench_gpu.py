"""What ran on a GPU, and how fast: `make bench-gpu` -> results/bench/gpu.md.

On a CUDA machine it
1. measures the card's bf16 matmul peak (several shapes, the best);
2. times bf16 training steps (forward, backward, AdamW) of the paper's LM and Transformer Big at full
   width, vocabulary and depth, at LayerDrop 0 and 0.5, at the paper's tokens per GPU and at 4x that.
   Model-FLOPs utilisation counts the FLOPs each step really executed (``FlopCounterMode`` on the same
   LayerDrop draws: matmuls and attention, skipped layers not counted), against the peak;
3. times evaluation of the full model against the model pruned to every other layer (the speed-up, and
   its FLOP ideal);
4. runs the ``gpu``-marked tests (tests/test_gpu.py: the paper architectures in fp16 with a loss scaler,
   pruning, reloading, beam search on the GPU);
5. runs the paper dry run on the GPU (``python -m layerdrop.dryrun --gpu``): every scale=paper
   experiment, width-shrunk, through ``train(cfg)`` and Lightning on CUDA in 16-mixed precision.
Without CUDA it writes only that no GPU was available, so the file never claims a GPU result that was
not measured.

    python -m layerdrop.bench_gpu [--out results/bench] [--depth N] [--steps 10] [--hub DIR]
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
from hydra.utils import get_class
from torch.utils.flop_counter import FlopCounterMode

from layerdrop.config import load_config
from layerdrop.lit.seq2seq import label_smoothed_nll
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.report.collect import write_text
from layerdrop.train import model_config
from layerdrop.utils.runs import git_sha, machine_info

#: (name, experiment, tokens per GPU per micro-batch in the paper, sequence length of the timed batch)
SHAPES = [("Adaptive-input LM (d1024, 16 layers)", "table2_lm", 3072, 3072),
          ("Transformer Big (d1024, 6+6 layers)", "table1_mt", 3584, 32)]
PEAK_SHAPES = ((4096, 4096, 4096), (8192, 8192, 8192), (8192, 8192, 2048), (16384, 4096, 4096))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, shapes=PEAK_SHAPES, repeats: int = 10) -> float:
    """Best bf16 FLOP/s over several (m, k, n) matmul shapes on ``device``, each the best of ``repeats``."""
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        b = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        for i in range(repeats + 2):
            _sync(device)
            start = time.perf_counter()
            a @ b
            _sync(device)
            if i >= 2:
                best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def paper_model(experiment: str, depth: int | None, p: float, overrides: dict | None = None):
    """The experiment's paper-scale model (full width and vocabulary), with ``depth`` layers per stack
    (None: the paper's depth)."""
    cfg = load_config([f"experiment={experiment}", "scale=paper"])
    model = model_config(cfg)
    depth_keys = ("encoder_layers", "decoder_layers") if "encoder_layers" in model else ("n_layers",)
    if depth is not None:
        model.update(dict.fromkeys(depth_keys, depth))
    model.update({k: p for k in ("layerdrop", "encoder_layerdrop", "decoder_layerdrop") if k in model})
    model.update(overrides or {})
    return get_class(cfg.task.lit_module)(model=model).model


def _set_draw(model, draw: int) -> None:
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(draw, seed=0)


def _batch(model, tokens: int, seq_len: int, device: str) -> torch.Tensor:
    """Token ids drawn from a Zipf law over the vocabulary (ids are in frequency order, as fairseq's
    dictionary and ``data.frequency_order``), so the adaptive softmax's head and tails see the traffic
    of real text (uniform ids would send 78% of the LM's tokens to its 207,744-word tail)."""
    T = min(seq_len, model.config.max_len)
    weights = 1.0 / torch.arange(1, model.config.vocab_size - 3, device=device, dtype=torch.float32)
    ids = torch.multinomial(weights, max(1, tokens // T) * T, replacement=True) + 4
    return ids.view(-1, T)


def _loss(model, x: torch.Tensor) -> torch.Tensor:
    """The training loss as the task modules compute it (adaptive-softmax NLL; label-smoothed CE)."""
    if hasattr(model, "encoder"):
        logits = model.logits(model(x, x))
        total, _, n = label_smoothed_nll(logits.flatten(0, 1), x.flatten(), 0.1)
        return total / n
    return model.nll(model(x), x).mean()


def _autocast(device: str):
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)


def counted_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def train_speed(model, device: str, tokens: int, steps: int, seq_len: int | None = None) -> dict:
    """bf16 training tokens/s (forward, backward, AdamW step) on random tokens, and the FLOPs/s those
    steps executed (counted on the same LayerDrop draws in an untimed pass)."""
    model = model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = _batch(model, tokens, seq_len or tokens, device)
    times, flops = [], 0
    for step in range(steps + 2):
        _set_draw(model, step)
        _sync(device)
        start = time.perf_counter()
        with _autocast(device):
            loss = _loss(model, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - start)

            def fwd_bwd():
                with _autocast(device):
                    _loss(model, x).backward()

            _set_draw(model, step)
            flops += counted_flops(fwd_bwd)
            opt.zero_grad(set_to_none=True)
    seconds = sum(times)
    return {"tokens_per_s": x.numel() * steps / seconds, "model_flops_per_s": flops / seconds,
            "step_s": seconds / steps, "batch": list(x.shape)}


def eval_speed(model, device: str, tokens: int, seq_len: int, repeats: int = 10) -> dict:
    """Evaluation (loss, no grad, bf16) tokens/s of the full model and of the model pruned to every
    other layer of each stack, with the FLOP ideal of that speed-up."""
    model = model.to(device).eval()
    keep = {stack: layers_to_keep("every_other", getattr(model.config, field), getattr(model.config, field) // 2)
            for stack, (_, field, _) in model.stacks.items()}
    pruned = prune_model(model, keep).eval()
    x = _batch(model, tokens, seq_len, device)
    out = {}
    for name, m in (("full", model), ("pruned", pruned)):
        def score(m=m):
            with torch.no_grad(), _autocast(device):
                return _loss(m, x)

        times = []
        for i in range(repeats + 2):
            _sync(device)
            start = time.perf_counter()
            score()
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
        out[name] = {"tokens_per_s": x.numel() / sorted(times)[len(times) // 2], "flops": counted_flops(score)}
    return {"full_tokens_per_s": out["full"]["tokens_per_s"], "pruned_tokens_per_s": out["pruned"]["tokens_per_s"],
            "speedup": out["pruned"]["tokens_per_s"] / out["full"]["tokens_per_s"],
            "ideal": out["full"]["flops"] / out["pruned"]["flops"]}


def _tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of what the command printed; its error output too if it failed (warnings otherwise)."""
    return proc.stdout[-chars:] + ("\n" + proc.stderr[-chars:] if proc.returncode else "")


def run_gpu_tests() -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-rA", "-p", "no:cacheprovider",
                           "tests/test_gpu.py"], capture_output=True, text=True)
    return proc.returncode, _tail(proc)


def run_gpu_dryrun(hub: str | None) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "layerdrop.dryrun", "--gpu", *(["--hub", hub] if hub else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, _tail(proc, 6000)


def _status(result: tuple[int, str]) -> str:
    return "passed" if result[0] == 0 else f"FAILED (exit {result[0]})"


def render(device_name: str, tests: tuple[int, str] | None, rows: list[dict], peak: float | None,
           evals: list[dict] | None = None, dryrun: tuple[int, str] | None = None, commit: str | None = None,
           seconds: float | None = None) -> str:
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = f"# GPU checks and speed\n\nWritten by `make bench-gpu` on {when}, commit {commit or git_sha()}.\n\n"
    if tests is None:
        info = machine_info()
        return head + (f"**No CUDA device was available** here ({info['cpus']} CPUs, {info['platform']}, torch "
                       f"{info['torch']}). The `gpu`-marked tests (tests/test_gpu.py) and the GPU speed "
                       "benchmarks did not run, so nothing in this file is a GPU measurement. Everything the "
                       "README lists as tested has been tested on CPU only; run `make bench-gpu` on a CUDA "
                       "machine to fill this file.\n")
    lines = [head, f"Device: {device_name}, torch {torch.__version__}; measured bf16 matmul peak "
                   f"{peak / 1e12:.1f} TFLOP/s (best of {len(PEAK_SHAPES)} shapes)."
                   + (f" The whole benchmark took {seconds / 60:.1f} min." if seconds else "") + "\n",
             "## Training speed (bf16 autocast, AdamW; paper widths, vocabularies and depths)\n",
             "Random tokens, Zipf-distributed over the vocabulary. *tokens/GPU* is the batch of one step: the paper's per-GPU micro-batch (LM 3072, "
             "MT 3584 tokens as sentences of 32) and 4x that. *model TFLOP/s* counts the matmul and attention "
             "FLOPs the step executed (forward and backward; layers LayerDrop skipped are not counted), so "
             "MFU is comparable across rates. *step cost* is the step time against LayerDrop 0 at the "
             "same batch.\n",
             "| model | tokens/GPU | LayerDrop p | tokens/s | step ms | model TFLOP/s | MFU | step cost vs p=0 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['tokens']:,} | {r['p']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['step_s'] * 1e3:.1f} | {r['model_flops_per_s'] / 1e12:.1f} | "
                     f"{r['model_flops_per_s'] / peak:.0%} | {r['cost']:.2f}x |")
    if evals:
        lines += ["\n## Evaluation: full depth against every other layer kept (bf16, no grad)\n",
                  "| model | tokens | full tokens/s | half depth tokens/s | speed-up | FLOP ideal |",
                  "|---|---|---|---|---|---|"]
        for e in evals:
            lines.append(f"| {e['model']} | {e['tokens']:,} | {e['full_tokens_per_s']:,.0f} | "
                         f"{e['pruned_tokens_per_s']:,.0f} | {e['speedup']:.2f}x | {e['ideal']:.2f}x |")
    lines += [f"\n## gpu-marked tests: {_status(tests)}\n", "```", tests[1].strip(), "```"]
    if dryrun is not None:
        lines += [f"\n## Paper dry run on the GPU (`python -m layerdrop.dryrun --gpu`, 16-mixed): {_status(dryrun)}\n",
                  "```", dryrun[1].strip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results/bench")
    parser.add_argument("--depth", type=int, default=None, help="layers per stack (default: the paper's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--hub", default=None, help="hub-layout files for the dry run (python -m layerdrop.dryrun --hub)")
    parser.add_argument("--skip-dryrun", action="store_true")
    args = parser.parse_args(argv)
    out = Path(args.out) / "gpu.md"
    if not torch.cuda.is_available():
        write_text(out, render("none", None, [], None))
        print(out.read_text())
        return
    start = time.perf_counter()
    peak = matmul_peak("cuda")
    print(f"peak {peak / 1e12:.1f} TFLOP/s", flush=True)
    rows, evals, errors = [], [], []
    try:
        speed(args, rows, evals)
    except Exception:  # still run the tests and the dry run, and say what broke
        errors.append(traceback.format_exc())
        print(errors[-1], flush=True)
    tests = run_gpu_tests()
    print(tests[1], flush=True)
    dryrun = None if args.skip_dryrun else run_gpu_dryrun(args.hub)
    if dryrun:
        print(dryrun[1], flush=True)
    text = render(torch.cuda.get_device_name(0), tests, rows, peak, evals, dryrun,
                  os.environ.get("LAYERDROP_COMMIT"), time.perf_counter() - start)
    if errors:
        text += "\n## The speed benchmark broke\n\n```\n" + errors[-1].strip() + "\n```\n"
    write_text(out, text)
    print(out.read_text())


def speed(args, rows: list[dict], evals: list[dict]) -> None:
    for name, experiment, tokens, seq_len in SHAPES:
        for mult in (1, 4):
            base = None
            for p in (0.0, 0.5):
                r = train_speed(paper_model(experiment, args.depth, p), "cuda", tokens * mult, args.steps, seq_len)
                base = base or r["step_s"]
                rows.append({"model": name, "tokens": tokens * mult, "p": p, **r, "cost": r["step_s"] / base})
                print(rows[-1], flush=True)
                torch.cuda.empty_cache()
        e = eval_speed(paper_model(experiment, args.depth, 0.0), "cuda", tokens * 4, seq_len)
        evals.append({"model": name, "tokens": tokens * 4, **e})
        print(evals[-1], flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
