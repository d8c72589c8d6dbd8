"""The run cache: one folder per training configuration, keyed by a hash of the resolved config.

A folder holds ``checkpoints/`` (Lightning, for resuming), ``model.pt`` (the trained model, written
once training has finished) and ``metrics.json`` (training summary plus every evaluated pruned
depth). Re-running a finished configuration trains nothing; evaluations already made are reused;
an interrupted run resumes from ``checkpoints/last.ckpt``. Everything is written atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

#: config sections that decide what a trained model is
TRAIN_SECTIONS = ("scale", "task", "model", "data", "optim", "trainer", "layerdrop", "seed")
#: keys that change how a run looks or where it lives, not what it learns
COSMETIC = {
    "data": {"data_dir", "num_workers", "eval_batch_size", "eval_max_tokens"},
    "trainer": {"enable_progress_bar", "log_every_n_steps", "enable_model_summary", "val_check_interval",
                "limit_val_batches", "num_sanity_val_steps"},
}

#: settings added after runs existed: at these values they leave a run's key (and cache) unchanged
LATER_DEFAULTS = {
    "layerdrop": {"target": "layers", "learned": False, "encoder_p": None, "decoder_p": None},
    "data": {"max_train_tokens": None},
}


def training_config(cfg: DictConfig) -> dict[str, Any]:
    out = {}
    for section in TRAIN_SECTIONS:
        value = OmegaConf.to_container(cfg[section], resolve=True) if isinstance(cfg[section], DictConfig) else cfg[section]
        if isinstance(value, dict):
            later = LATER_DEFAULTS.get(section, {})
            value = {k: v for k, v in value.items()
                     if k not in COSMETIC.get(section, ()) and not (k in later and later[k] == v)}
        out[section] = value
    return out


def run_key(cfg: DictConfig) -> str:
    blob = json.dumps(training_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.runs_dir) / cfg.task.name / run_key(cfg)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock (flock) held while the block runs; other processes wait for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def machine_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpus"] = torch.cuda.device_count()
    return info


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
