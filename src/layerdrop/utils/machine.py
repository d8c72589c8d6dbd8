"""What machine a run or a benchmark ran on: CPU model (and AMX), core count, threads, torch, GPU."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from layerdrop.utils import bf16


def cpu_model() -> dict[str, Any]:
    """The CPU's name and whether it has bf16 matrix units (AMX): speeds differ several-fold between the
    machines a session may get (bf16 matmul peak 440 GFLOP/s without AMX, 2,500 with), so every record
    says which it ran on. Empty where /proc/cpuinfo is not there."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", "unknown"), "amx_bf16": "amx_bf16" in flags}


def cpu_of(record: dict) -> tuple | None:
    """The CPU a record was made on, as (name, AMX); None for records made before the CPU was recorded."""
    m = record.get("machine") or {}
    return (m["cpu"], bool(m.get("amx_bf16"))) if m.get("cpu") else None


def this_cpu() -> tuple | None:
    """This machine's CPU as ``cpu_of`` names a record's; None where the CPU cannot be read."""
    return cpu_of({"machine": cpu_model()})


#: a bf16 matmul this many times slower than fp32 marks a CPU without bf16 units, where bf16 is emulated
SLOW_BF16 = 2.0


def cpus(m: dict) -> str:
    """'2 CPUs (Xeon ..., with AMX bf16 matrix units)': the machine a figure was measured on, which moves
    the peak several-fold (records made before the CPU was recorded say so). An emulated bf16 is named
    without its measured ratio, which varies from run to run on one CPU (17-38x on the AMD EPYC) and would
    list one machine as several; the record keeps the ratio (``bf16_matmul_vs_fp32``)."""
    amx = "" if "amx_bf16" not in m else ", with AMX bf16 matrix units" if m["amx_bf16"] else ", no AMX"
    slow = m.get("bf16_matmul_vs_fp32")
    if slow is not None and slow >= SLOW_BF16:
        amx += ", bf16 emulated"
    if m.get("bf16_gemm") == "fp32":
        amx += ", bf16 autocast's matrix products through fp32 GEMMs"
    return f"{m['cpus']} CPUs ({m.get('cpu', 'CPU model not recorded')}{amx})"


def machines(records: list[dict]) -> str:
    """The machines ``records`` were made on: '2 CPUs (<model>, with AMX bf16 matrix units), torch <v>', or,
    where they differ, each with its count of runs (wall times are comparable only on one machine)."""
    def one(m: dict) -> str:
        return f"{cpus(m)}, torch {m.get('torch', '?')}" if m.get("cpus") else "machine not recorded"

    counts: dict[str, int] = {}
    for r in records:
        name = one(r.get("machine") or {})
        counts[name] = counts.get(name, 0) + 1
    if len(counts) <= 1:
        return next(iter(counts), "no runs")
    return "; ".join(f"{n} run{'s' * (n > 1)} on {m}" for m, n in sorted(counts.items(), key=lambda kv: -kv[1]))


@functools.cache
def bf16_slowdown(n: int = 256, repeats: int = 3) -> float:
    """How many times longer an n x n bf16 matmul takes than an fp32 one on this CPU (the best of
    ``repeats`` each, after a warm-up), measured once per process (tens of ms). Low where bf16 has
    matrix units (AMX); tens where it is emulated (an AMD EPYC with AVX2 only: 15-35x, measured), so
    the cpu scale's bf16 autocast would train many times slower than fp32 there.

    Measured on one thread: beside another process that keeps the cores busy (a training, the test
    suite), a multi-threaded fp32 GEMM waits for the scheduler to run its threads, and its time becomes
    the scheduler's (measured on that AMD CPU beside a training: 12-20 ms on 2 threads against 1 ms on
    one, so 1.1-1.5x where bf16 is 18x slower), which would leave a CPU without bf16 units looking
    like one with them."""
    a, b = torch.randn(n, n), torch.randn(n, n)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        return min(times)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return best(a.bfloat16(), b.bfloat16()) / max(best(a, b), 1e-9)
    finally:
        torch.set_num_threads(threads)


def _bf16_on_cpu(accelerator: str, precision: str) -> bool:
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return on_cpu and precision.startswith("bf16")


def slow_bf16_warning(accelerator: str, precision: str) -> str | None:
    """What to tell a user about to train in ``precision`` on ``accelerator`` where this CPU emulates
    bf16 and its matrix products are left to PyTorch's emulation (``LAYERDROP_BF16_GEMM=native``; None
    where it does not apply: a GPU, fp32, a CPU with bf16 units, or the fp32 GEMMs of ``utils.bf16``)."""
    if not _bf16_on_cpu(accelerator, precision) or bf16.choice() != "native":
        return None
    slowdown = bf16_slowdown()
    if slowdown < SLOW_BF16:
        return None
    return (f"trainer.precision={precision} on a CPU without bf16 units ({cpu_model().get('cpu', 'unknown CPU')}) "
            f"with {bf16.ENV}=native: a bf16 matmul takes {slowdown:.0f}x as long as an fp32 one here, so training "
            "here is many times slower than the timings in results/ and `make backlog-*` (CPUs with AMX). Unset "
            f"{bf16.ENV} (or set it to auto) to compute bf16 autocast's matrix products through fp32 GEMMs, the "
            "same run at about fp32 speed (layerdrop.utils.bf16).")


def fp32_gemm_wanted(accelerator: str, precision: str) -> bool:
    """Whether a run in ``precision`` on ``accelerator`` gets fp32 GEMMs here (``use_fp32_gemm``)."""
    if not _bf16_on_cpu(accelerator, precision):
        return False
    wanted = bf16.choice()
    return wanted == "fp32" or (wanted == "auto" and bf16_slowdown() >= SLOW_BF16)


def use_fp32_gemm(accelerator: str, precision: str) -> str | None:
    """Before training in ``precision`` on ``accelerator``: re-route bf16 autocast's CPU matrix products
    through fp32 GEMMs (``utils.bf16``) where ``LAYERDROP_BF16_GEMM`` says so (fp32), or where it is
    auto (the default) and this CPU emulates bf16. Returns what to log when it does, else None."""
    if not fp32_gemm_wanted(accelerator, precision):
        return None
    wanted = bf16.choice()
    bf16.install()
    why = (f"this CPU ({cpu_model().get('cpu', 'unknown CPU')}) has no bf16 units: a bf16 matmul takes "
           f"{bf16_slowdown():.0f}x as long as an fp32 one" if wanted == "auto" else f"{bf16.ENV}=fp32")
    return (f"bf16 autocast's matrix products go through fp32 GEMMs ({why}); the rounding is autocast's "
            f"(bf16 inputs and outputs), the run is the same run. {bf16.ENV}=native leaves them to PyTorch.")


def machine_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), **cpu_model(),
            "bf16_matmul_vs_fp32": round(bf16_slowdown(), 2), "bf16_gemm": bf16.gemm_name()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info
