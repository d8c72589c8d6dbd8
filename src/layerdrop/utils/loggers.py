"""Experiment loggers: W&B by default (offline unless an API key is configured), CSV, or none."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

LOGGER_KINDS = ("wandb", "csv", "none")


def wandb_mode(mode: str) -> str:
    """'auto' -> 'online' when W&B has an API key (env or ~/.netrc), else 'offline'."""
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"logger.mode must be auto, online or offline, got {mode!r}")
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return "online" if netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore") else "offline"


def build_logger(cfg: DictConfig, run_name: str):
    kind = cfg.logger.kind
    if kind not in LOGGER_KINDS:
        raise ValueError(f"logger.kind must be one of {', '.join(LOGGER_KINDS)}, got {kind!r}")
    if kind == "none":
        return False
    save_dir = Path(cfg.paths.log_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(save_dir / "csv"), name=cfg.experiment_name, version=run_name)
    from pytorch_lightning.loggers import WandbLogger

    tags = [t for t in [*cfg.tags, cfg.artefact] if t]
    logger = WandbLogger(
        project=cfg.logger.project, group=cfg.experiment_name, tags=tags, name=run_name, job_type="train",
        save_dir=str(save_dir), offline=wandb_mode(cfg.logger.mode) == "offline",
    )
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return logger


def log_prune_curve(logger, rows: list[dict], split: str = "test") -> None:
    """The pruned-depth curve as a W&B table with a line plot (no-op for other loggers)."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger) or not rows:
        return
    import wandb

    columns = ["strategy", "kept_layers", "n_params", "valid_ppl", "test_ppl"]
    table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
    logger.experiment.log({
        "prune/curve": table,
        "prune/curve_plot": wandb.plot.line(table, "kept_layers", f"{split}_ppl", title=f"{split} perplexity vs kept layers"),
    })
