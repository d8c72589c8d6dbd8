"""`seed` governs the data order: the same seed gives the same training batches, another seed another
order, for the LM and for translation. (train() also seeds initialisation with it, and the LayerDrop draws
are functions of (seed, step): tests/test_layerdrop.py.)"""

import pytest
import torch
from hydra.utils import instantiate

from layerdrop.config import load_config


def first_batches(overrides: list[str], n: int = 3) -> list[torch.Tensor]:
    cfg = load_config(overrides)
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    batches = []
    for batch in dm.train_dataloader():
        batches.append(batch[0] if isinstance(batch, (tuple, list)) else next(iter(batch.values())))
        if len(batches) == n:
            break
    return batches


@pytest.mark.parametrize("base", [["debug=smoke"], ["experiment=table1_mt", "debug=smoke_mt"]], ids=["lm", "mt"])
def test_the_seed_decides_the_training_order(base):
    one, again, two = (first_batches([*base, f"seed={s}"]) for s in (1, 1, 2))
    assert all(torch.equal(a, b) for a, b in zip(one, again, strict=True))
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(one, two, strict=True))
