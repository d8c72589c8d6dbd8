"""Speed of the cpu models against this machine's measured matmul peak, with every target of the
speed issue marked met or missed, in one run so ratios compare.

    python -m layerdrop.bench [--steps 24] [--quality] [--out results/bench]     # make bench
    python -m layerdrop.bench --ablation                                          # results/bench/ablation.md

- **Peak**: the best FLOP/s of several matrix shapes (square and this model's own), each the best of
  many repeats, measured at the start and the end of the run; the larger is the peak. A share of it
  above 100% means the measurement is wrong, and the report refuses to print it.
- **Training**: forward + backward + AdamW step on batches of the configured shape, bf16 autocast as
  configured (what Lightning runs each step, without its bookkeeping). The LayerDrop rates are timed
  interleaved, step by step, with the same synchronised draws every run (so the kept depth does
  not scatter between runs), and compared with a FLOP model of the kept layers.
- **Evaluation**: full depth against every-other half depth, interleaved, against the FLOP ideal.
- **Translation**: the same for the Table 1 model on real batches, and beam search (bench_mt).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from layerdrop import bench_mt
from layerdrop.bench_report import render
from layerdrop.config import load_config
from layerdrop.flops import band_shares, lm_forward_flops, matmul_peak, mt_forward_flops
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq
from layerdrop.report.collect import write_text
from layerdrop.train import model_config
from layerdrop.utils.machine import use_fp32_gemm
from layerdrop.utils.runs import code_version, machine_info, read_json


class MeasurementError(RuntimeError):
    """A figure that cannot be right (a share of the matmul peak above 100%)."""


# ---------------------------------------------------------------------------------------------------
# timing


def _set_draw(model: torch.nn.Module, draw: int) -> None:
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(draw, seed=1)


def pipeline_optimizer(overrides: list[str]) -> dict:
    """The optimizer implementation the configured runs train with (fused or foreach): what the bench times."""
    return {"fused": bool(load_config(overrides).optim.optimizer.get("fused", False))}


def lm_trainer(cfg: LMConfig, x: torch.Tensor, bf16: bool, optimizer: dict | None = None):
    """A closure that runs one training step of a fresh model on ``x`` and returns its kept layers
    (AdamW with ``optimizer``'s keyword arguments, e.g. ``{"fused": True}``)."""
    torch.manual_seed(0)
    model = TransformerLM(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, **(optimizer or {}))
    draw = itertools.count()

    def step() -> int:
        _set_draw(model, next(draw) % 64)  # the same 64 masks in every run of the benchmark
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.nll(model(x), x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return sum(model.layers.last_keep)

    return step


def interleaved(steps: dict, n: int, warmup: int = 3) -> dict:
    """Run the named step functions round-robin (so machine noise hits them alike); per name the
    median and best step time and the mean of what the step returned."""
    for fn in steps.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in steps}
    values = {k: [] for k in steps}
    for _ in range(n):
        for k, fn in steps.items():
            start = time.perf_counter()
            values[k].append(fn())
            times[k].append(time.perf_counter() - start)
    return {k: {"median_s": statistics.median(t), "best_s": min(t), "mean_s": statistics.mean(t),
                "value": statistics.mean(values[k]) if values[k][0] is not None else None}
            for k, t in times.items()}


def lm_training(cfg: LMConfig, batch: tuple[int, int], bf16: bool, steps: int, x: torch.Tensor,
                rates=(0.0, 0.2, 0.5), optimizer: dict | None = None) -> list[dict]:
    shares = band_shares(cfg, x)
    timed = interleaved({p: lm_trainer(replace(cfg, layerdrop=p), x, bf16, optimizer) for p in rates}, steps)
    rows = []
    for p in rates:
        t = timed[p]
        flops = 3 * lm_forward_flops(cfg, t["value"], batch[1], shares) * batch[0] * batch[1]
        rows.append({"p": p, "step_s": t["mean_s"], "median_step_s": t["median_s"],
                     "tokens_per_s": batch[0] * batch[1] / t["mean_s"], "mean_kept_layers": t["value"],
                     "gflops": flops / t["mean_s"] / 1e9,
                     "ideal_vs_p0": lm_forward_flops(cfg, t["value"], batch[1], shares)
                     / lm_forward_flops(cfg, cfg.n_layers, batch[1], shares)})
    for row in rows:
        row["step_cost_vs_p0"] = row["step_s"] / rows[0]["step_s"]
    return rows


MATMUL_OPS = {"aten::mm", "aten::bmm", "aten::addmm", "aten::baddbmm", "aten::addbmm"}
CAST_OPS = {"aten::copy_", "aten::_to_copy"}


def step_breakdown(cfg: LMConfig, x: torch.Tensor, bf16: bool, optimizer: dict | None, steps: int = 6) -> dict:
    """Where a training step's time goes (LayerDrop 0), from the profiler's per-operator self time: matmul
    kernels, dtype casts (autocast's copies), the optimizer, and everything else (norms, dropout, softmax,
    losses, the rest of autograd). With the step's FLOPs it gives the rate of the matmul kernels alone,
    which is what a share of the matmul peak can at most reach if every other operator were free."""
    step = lm_trainer(replace(cfg, layerdrop=0.0), x, bf16, optimizer)
    for _ in range(3):
        step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    spent = {"matmul": 0.0, "casts": 0.0, "optimizer": 0.0, "other": 0.0}
    for event in prof.key_averages():
        kind = ("matmul" if event.key in MATMUL_OPS else "casts" if event.key in CAST_OPS
                else "optimizer" if "adam" in event.key.lower() else "other")
        spent[kind] += event.self_cpu_time_total / 1e6 / steps
    total = sum(spent.values())
    shares = band_shares(cfg, x)
    flops = 3 * lm_forward_flops(cfg, cfg.n_layers, x.shape[1], shares) * x.numel()
    return {"step_s": total, "shares": {k: v / total for k, v in spent.items()},
            "matmul_gflops": flops / spent["matmul"] / 1e9 if spent["matmul"] else None}


def lm_eval(cfg: LMConfig, batch: tuple[int, int], repeats: int, x: torch.Tensor) -> dict:
    torch.manual_seed(0)
    full = TransformerLM(replace(cfg, layerdrop=0.0)).eval()
    n = cfg.n_layers
    half = prune_model(full, {"decoder": layers_to_keep("every_other", n, n // 2)}).eval()
    shares = band_shares(cfg, x)

    def scorer(model):
        def run():
            with torch.inference_mode():
                model.nll(model(x), x)
        return run

    t = interleaved({"full": scorer(full), "half": scorer(half)}, repeats)
    ideal = lm_forward_flops(cfg, n, batch[1], shares) / lm_forward_flops(cfg, n // 2, batch[1], shares)
    tokens = batch[0] * batch[1]
    return {"full_tokens_per_s": tokens / t["full"]["mean_s"], "half_tokens_per_s": tokens / t["half"]["mean_s"],
            "half_speedup": t["full"]["mean_s"] / t["half"]["mean_s"], "ideal": ideal, "full_layers": n,
            "half_layers": n // 2}


def mt_training(overrides: list[str], steps: int, rates=(0.0, 0.5)) -> dict:
    """Target tokens/s and share of peak of the translation model on real batches of the corpus."""
    from hydra.utils import instantiate

    from layerdrop.lit.seq2seq import label_smoothed_nll

    cfg = load_config(overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batches = list(itertools.islice(iter(dm.train_dataloader()), 16))
    bf16 = cfg.trainer.precision.startswith("bf16")
    base = Seq2SeqConfig(**model_config(cfg))

    def trainer(p: float):
        torch.manual_seed(0)
        model = TransformerSeq2Seq(replace(base, encoder_layerdrop=p, decoder_layerdrop=p)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **pipeline_optimizer(overrides))
        i = itertools.count()

        def step():
            k = next(i)
            b = batches[k % len(batches)]
            _set_draw(model, k % 64)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model.logits(model(b["src"], b["tgt_in"]))
            loss, _, n = label_smoothed_nll(logits.reshape(-1, logits.size(-1)), b["tgt_out"].reshape(-1), 0.1)
            (loss / n).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            B, S = b["src"].shape
            T = b["tgt_in"].size(1)
            flops = 3 * mt_forward_flops(base, B, S, T, sum(model.encoder.last_keep), sum(model.decoder.last_keep))
            return (flops, int(n))

        return step

    steppers = {p: trainer(p) for p in rates}
    for fn in steppers.values():
        for _ in range(3):
            fn()
    rows = {p: {"s": 0.0, "flops": 0.0, "tokens": 0} for p in rates}
    for _ in range(steps):
        for p, fn in steppers.items():
            start = time.perf_counter()
            flops, n = fn()
            rows[p]["s"] += time.perf_counter() - start
            rows[p]["flops"] += flops
            rows[p]["tokens"] += n
    out = []
    for p in rates:
        r = rows[p]
        out.append({"p": p, "target_tokens_per_s": r["tokens"] / r["s"], "gflops": r["flops"] / r["s"] / 1e9})
    for row in out:
        row["speedup_vs_p0"] = row["target_tokens_per_s"] / out[0]["target_tokens_per_s"]
    return {"precision": cfg.trainer.precision, "max_tokens": cfg.data.max_tokens, "rows": out,
            "shape": {k: model_config(cfg)[k] for k in ("encoder_layers", "decoder_layers", "d_model", "d_ff")}
            | {"vocab_size": dm.vocab_size}}


def bf16_full_run(overrides: list[str]) -> dict:
    """Train the configured LM to the end twice through the pipeline, bf16 autocast and fp32, and
    compare the final valid perplexity (the run cache keeps both runs)."""
    from layerdrop.train import train

    out = {}
    for name, precision in [("bf16", "bf16-mixed"), ("fp32", "32-true")]:
        cfg = load_config([*overrides, f"trainer.precision={precision}", "logger=none"])
        record = train(cfg)
        full = max(record["eval"], key=lambda e: e["depth"])
        out[name] = {"valid_ppl": full["valid_ppl"], "test_ppl": full.get("test_ppl"), "run_key": record["run_key"],
                     "steps": record["train"].get("steps"), "wall_s": record["train"].get("wall_s")}
    out["relative_change"] = out["bf16"]["valid_ppl"] / out["fp32"]["valid_ppl"] - 1
    return out


# ---------------------------------------------------------------------------------------------------


def _share(gflops: float, peak: float) -> float:
    share = gflops / peak
    if share > 1.0:
        raise MeasurementError(f"{gflops:.0f} GFLOP/s is {100 * share:.0f}% of the measured peak {peak:.0f}: "
                               "the peak or the FLOP count is wrong; refusing to report it")
    return share


def lm_shape(overrides: list[str]) -> tuple[LMConfig, tuple[int, int], tuple[int, int], bool, torch.Tensor]:
    """The configured LM, its train and eval batch shapes, bf16 or not, and real training text: the
    first blocks of the (frequency-ordered) train stream, enough for the larger batch."""
    cfg = load_config(overrides)
    from hydra.utils import instantiate

    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    model_cfg = LMConfig(**{**model_config(cfg), "vocab_size": dm.vocab_size})
    batch, eval_batch = (cfg.data.batch_size, cfg.data.block_size), (cfg.data.eval_batch_size, cfg.data.block_size)
    rows = max(batch[0], eval_batch[0])
    text = dm.train_set.stream[: rows * cfg.data.block_size].long().view(rows, cfg.data.block_size)
    return model_cfg, batch, eval_batch, cfg.trainer.precision.startswith("bf16"), text


LM_SHAPES = {"default": ["experiment=table2_lm"],
             "before (4096-way tied softmax)": ["experiment=table2_lm", "model.adaptive=false"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=24, help="timed training steps per setting")
    parser.add_argument("--sentences", type=int, default=400, help="test sentences for beam search")
    parser.add_argument("--quality", action="store_true", help="also train the LM fully in bf16 and fp32")
    parser.add_argument("--ablation", action="store_true", help="measure each speed measure -> ablation.md")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    if args.ablation:
        from layerdrop.bench_ablation import run as run_ablation

        run_ablation(args.out, args.steps)
        return

    started = time.time()
    gemm = use_fp32_gemm("cpu", "bf16-mixed")  # time bf16 autocast as training runs it here (utils.bf16)
    if gemm:
        print(gemm)
    peak_start = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    lm = {}
    for name, overrides in LM_SHAPES.items():
        cfg, batch, eval_batch, bf16, text = lm_shape(overrides)
        lm[name] = {"overrides": overrides, "shape": asdict(cfg), "batch": batch, "bf16": bf16,
                    "train": lm_training(cfg, batch, bf16, args.steps, x=text[: batch[0]],
                                         optimizer=pipeline_optimizer(overrides)),
                    "eval": lm_eval(cfg, eval_batch, 2 * args.steps, x=text[: eval_batch[0]])}
        if name == "default":
            lm[name]["breakdown"] = step_breakdown(cfg, text[: batch[0]], bf16, pipeline_optimizer(overrides))
    mt = mt_training(["experiment=table1_mt"], args.steps)
    beam = bench_mt.generation_bench(["experiment=table1_mt"], args.sentences, out=args.out)
    peak_end = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    peak = {k: max(peak_start[k]["peak"], peak_end[k]["peak"]) for k in peak_start}
    for entry in lm.values():
        if entry.get("breakdown") and entry["breakdown"]["matmul_gflops"]:
            entry["breakdown"]["matmul_share_of_peak"] = _share(entry["breakdown"]["matmul_gflops"],
                                                                peak["bf16" if entry["bf16"] else "fp32"])
        for row in entry["train"]:
            row["share_of_peak"] = _share(row["gflops"], peak["bf16" if entry["bf16"] else "fp32"])
    for row in mt["rows"]:
        row["share_of_peak"] = _share(row["gflops"], peak["bf16" if mt["precision"].startswith("bf16") else "fp32"])
    result = {"machine": machine_info(), "code": code_version(), "seconds": round(time.time() - started),
              "peak_gflops": peak, "peak_by_shape": {"start": peak_start, "end": peak_end},
              "lm": lm, "mt": mt, "beam": beam}
    if args.quality:
        result["bf16_full_run"] = bf16_full_run(["experiment=table2_lm", "layerdrop.p=0.0"])
    elif kept := kept_quality(args.out / "bench.json"):
        result["bf16_full_run"] = kept
    report = render(result)
    print(report)
    write_text(args.out / "bench.json", json.dumps(result, indent=2, default=str) + "\n")
    write_text(args.out / "bench.md", report + "\n")


def kept_quality(previous_json: Path) -> dict | None:
    """The bf16-vs-fp32 full-run check of the previous ``bench.json`` (two full trainings, so a run without
    ``--quality`` keeps it), marked with the code version that measured it."""
    previous = read_json(previous_json)
    if not previous or not previous.get("bf16_full_run"):
        return None
    q = previous["bf16_full_run"]
    return {**q, "measured_at": q.get("measured_at", previous.get("code"))}


if __name__ == "__main__":
    main()
