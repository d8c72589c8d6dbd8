"""What machine a run or a benchmark ran on: CPU model (and AMX), core count, threads, torch, GPU."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


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


def cpus(m: dict) -> str:
    """'2 CPUs (Xeon ..., with AMX bf16 matrix units)': the machine a figure was measured on, which moves
    the peak several-fold (records made before the CPU was recorded say so)."""
    amx = "" if "amx_bf16" not in m else ", with AMX bf16 matrix units" if m["amx_bf16"] else ", no AMX"
    return f"{m['cpus']} CPUs ({m.get('cpu', 'CPU model not recorded')}{amx})"


def machine_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), **cpu_model()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info
