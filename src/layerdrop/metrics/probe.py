"""What the post-hoc probes of a finished run (``context``, ``layer_use``) share: the run's own data module,
rebuilt from its record, and the first batches of one split."""

from __future__ import annotations

import os

from hydra.utils import instantiate
from omegaconf import OmegaConf


def split_batches(record: dict, split: str, n: int, data_dir: str | None = None):
    """(data module, the first ``n`` batches of ``split``) for the run ``record`` describes. ``data_dir``:
    where the data is cached; default LAYERDROP_DATA_DIR, else the run's own."""
    if split not in ("valid", "test"):
        raise ValueError(f"split {split!r}: a probe reads valid or test")
    data = OmegaConf.create(record["config"]["data"])
    data.data_dir = data_dir or os.environ.get("LAYERDROP_DATA_DIR") or data.data_dir
    dm = instantiate(data)
    dm.prepare_data()
    dm.setup("fit" if split == "valid" else "test")
    loader = dm.val_dataloader() if split == "valid" else dm.test_dataloader()
    loader = loader[0] if isinstance(loader, list) else loader
    return dm, [b for _, b in zip(range(n), loader, strict=False)]
