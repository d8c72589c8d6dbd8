"""bf16 autocast on this CPU: PyTorch's own bf16 matrix kernels against the fp32 GEMMs of
``layerdrop.utils.bf16``, in speed and in what a run learns (``make bench-bf16``).

    python -m layerdrop.bench_bf16 [--steps 500] [--out results/bench]

- **Speed**: training steps of the default cpu LM (Table 2's model, real text) with bf16 autocast through
  PyTorch's kernels, through fp32 GEMMs, and in fp32 without autocast. On a CPU with bf16 units the
  first is the fast one; on one without (bf16 emulated) the second is.
- **Same run**: a stored run (Figure 4's heads+layers row, seed 1, by default; trained elsewhere, its
  record in ``records/``) trained again here for its first ``--steps`` steps, with the same learning-rate
  schedule (``optim.scheduler.total_steps`` pinned to the stored run's), through whichever GEMM this
  machine uses (``LAYERDROP_BF16_GEMM``). Its valid perplexities at each validation sit beside the
  stored ones: the same seed, data order and rounding give the same curve but for the GEMMs' order of
  additions.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from layerdrop.bench import lm_shape, lm_trainer, pipeline_optimizer
from layerdrop.config import load_config
from layerdrop.report.collect import write_text
from layerdrop.utils import bf16, machine
from layerdrop.utils.runs import code_version, machine_info, read_record, record_store, run_dir

#: the stored run trained again: Figure 4's heads+layers row, seed 1 (experiments/figure4_lm.sh)
STORED = ["experiment=figure4_lm", "layerdrop.target=heads+layers", "prune.strategies=[]", "model.dropout=0.0",
          "select=best", "early_stop_patience=6", "seed=1"]


def step_speed(steps: dict[str, int]) -> list[dict]:
    """Seconds per training step of the default cpu LM, per GEMM ('native', 'fp32' under bf16 autocast;
    'fp32 weights' without autocast), each timed over ``steps[name]`` steps after one warm-up."""
    overrides = ["experiment=table2_lm"]
    cfg, batch, _, _, text = lm_shape(overrides)
    x, optimizer = text[: batch[0]], pipeline_optimizer(overrides)
    was = bf16.installed()
    rows = []
    for name, n in steps.items():
        (bf16.install if name == "fp32" else bf16.uninstall)()
        step = lm_trainer(cfg, x, name != "fp32 weights", optimizer)
        step()
        start = time.perf_counter()
        for _ in range(n):
            step()
        seconds = (time.perf_counter() - start) / n
        rows.append({"gemm": name, "steps": n, "step_s": seconds, "steps_per_s": 1 / seconds,
                     "tokens_per_s": batch[0] * batch[1] / seconds})
    (bf16.install if was else bf16.uninstall)()
    return rows


def same_run(steps: int) -> dict:
    """The stored run ``STORED`` trained again here for ``steps`` steps: both valid curves."""
    from layerdrop.train import train

    cfg = load_config(STORED)
    key = run_dir(cfg).name
    stored = read_record(run_dir(cfg), record_store(cfg))
    if not stored or "train" not in stored:
        raise FileNotFoundError(f"run {key} ({' '.join(STORED)}) is not in the record store: it is the run this "
                                "check trains again")
    total = int(cfg.trainer.max_steps)
    if steps > total:
        raise ValueError(f"--steps={steps}: must be <= {total}, the stored run's length")
    with tempfile.TemporaryDirectory() as tmp:
        again = load_config([*STORED, f"trainer.max_steps={steps}", f"optim.scheduler.total_steps={total}",
                             "logger=none", f"paths.runs_dir={tmp}/runs", "paths.records_dir=null"])
        start = time.time()
        record = train(again)
        wall = time.time() - start
    curve = {p["step"]: p["val/ppl"] for p in stored["train"]["curve"]}
    rows = [{"step": p["step"], "stored": curve.get(p["step"]), "here": p["val/ppl"]}
            for p in record["train"]["curve"]]
    return {"run_key": key, "overrides": STORED, "steps": steps, "stored_machine": machine.cpus(stored["machine"]),
            "stored_code": stored.get("code_version"), "here_code": record.get("code_version"),
            "wall_s": round(wall, 1), "rows": rows}


def render(result: dict) -> str:
    m, run = result["machine"], result["same_run"]
    lines = [
        "# bf16 autocast on this CPU: PyTorch's bf16 matrix kernels or fp32 GEMMs",
        "",
        f"Made by `make bench-bf16` (`python -m layerdrop.bench_bf16`) on {machine.cpus(m)}, torch {m['torch']}, "
        f"code {result['code']}, in {result['seconds']} s. bf16 matmul / fp32 matmul time here: "
        f"{m['bf16_matmul_vs_fp32']:.1f}x; this machine's runs use the `{m['bf16_gemm']}` GEMM "
        f"(`{bf16.ENV}`; `layerdrop.utils.bf16`).",
        "",
        "## Speed: training steps of the default cpu LM (Table 2's model, real text)",
        "",
        "| matrix products | steps timed | s / step | steps / s | tokens / s |",
        "|---|---:|---:|---:|---:|",
    ]
    names = {"native": "bf16 autocast, PyTorch's bf16 kernels", "fp32": "bf16 autocast, fp32 GEMMs (utils.bf16)",
             "fp32 weights": "fp32, no autocast (another run key)"}
    for r in result["speed"]:
        lines.append(f"| {names[r['gemm']]} | {r['steps']} | {r['step_s']:.3f} | {r['steps_per_s']:.2f} | "
                     f"{r['tokens_per_s']:,.0f} |")
    lines += [
        "",
        f"## Same run: run `{run['run_key']}` trained again here for its first {run['steps']} steps",
        "",
        f"`{' '.join(run['overrides'])}`, stored from {run['stored_machine']} (code {run['stored_code']}); "
        f"trained again here (code {run['here_code']}) in {run['wall_s']:.0f} s with the stored run's learning-rate "
        "schedule. Valid perplexity at each validation:",
        "",
        "| step | stored | here | difference |",
        "|---:|---:|---:|---:|",
    ]
    for r in run["rows"]:
        diff = f"{100 * (r['here'] / r['stored'] - 1):+.3f}%" if r["stored"] else "-"
        stored = f"{r['stored']:.3f}" if r["stored"] else "-"
        lines.append(f"| {r['step']} | {stored} | {r['here']:.3f} | {diff} |")
    lines += ["", "The same seed, data order and rounding points: the curves may differ only by the order of the "
              "GEMMs' fp32 additions (and whatever else differs between the two machines' kernels)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="steps of the stored run trained again")
    parser.add_argument("--native-steps", type=int, default=3, help="timed steps through PyTorch's bf16 kernels "
                        "(slow where bf16 is emulated)")
    parser.add_argument("--speed-steps", type=int, default=20, help="timed steps through fp32 GEMMs and fp32")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    started = time.time()
    speed = step_speed({"native": args.native_steps, "fp32": args.speed_steps, "fp32 weights": args.speed_steps})
    run = same_run(args.steps)
    result = {"machine": machine_info(), "code": code_version(), "speed": speed, "same_run": run,
              "seconds": round(time.time() - started)}
    write_text(args.out / "bf16_gemm.json", json.dumps(result, indent=1) + "\n")
    write_text(args.out / "bf16_gemm.md", render(result))
    print(render(result))


if __name__ == "__main__":
    main()
