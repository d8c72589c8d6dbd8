"""Composing the Hydra config outside ``@hydra.main`` (tests, the params and report commands)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # conf/ sits at the repo root (editable install)


def load_config(overrides: list[str] | None = None, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides or []))
