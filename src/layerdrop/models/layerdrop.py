"""LayerDrop: structured dropout over whole layers (Fan, Grave & Joulin, arXiv:1909.11556).

During training each layer is skipped, for the whole batch, with its own probability p_i; a skipped
layer is never called, so it costs nothing. At evaluation every layer runs and nothing is rescaled
(as in fairseq and Hugging Face).

The draws come from a torch.Generator that is re-seeded from ``(seed, draw, salt)`` before every
forward. ``draw`` is set by the training loop from the global step, so under DDP every rank skips
the same layers in the same step without communicating, and a resumed run draws the same masks.
Without a draw index (plain use outside the training loop) torch's global RNG is used, so
``torch.manual_seed`` governs it.

    layers = LayerDropList([Block() for _ in range(12)], p=0.2)
    for layer in layers:          # yields only the kept layers when training
        x = layer(x)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads nearby (seed, draw) pairs apart
_MASK63 = (1 << 63) - 1


def check_rates(p: float | Sequence[float], n: int) -> list[float]:
    """Per-layer drop rates from a float or a list; every rate must lie in [0, 1)."""
    rates = [float(p)] * n if isinstance(p, (int, float)) else [float(x) for x in p]
    if len(rates) != n:
        raise ValueError(f"layerdrop rates: got {len(rates)} per-layer rates for {n} layers")
    bad = [r for r in rates if not 0.0 <= r < 1.0]
    if bad:
        raise ValueError(f"layerdrop rate {bad[0]!r} is outside [0, 1): a rate is a drop probability")
    return rates


def draw_seed(seed: int, draw: int, salt: int) -> int:
    """A 63-bit generator seed that differs for every (seed, draw, salt)."""
    h = (seed * _MIX) ^ (draw * 0xBF58476D1CE4E5B9) ^ (salt * 0x94D049BB133111EB)
    return (h ^ (h >> 31)) & _MASK63


class LayerDropList(nn.ModuleList):
    """A ModuleList whose iteration skips layers at random while training.

    Args:
        layers: the layers, in order.
        p: one drop rate for all layers, or one per layer, each in [0, 1).
        seed: base seed for synchronised draws (see module docstring).
        salt: distinguishes several stacks in one model (encoder vs decoder).
    """

    def __init__(self, layers: Iterable[nn.Module], p: float | Sequence[float] = 0.0, seed: int = 0, salt: int = 0):
        super().__init__(layers)
        self.rates = check_rates(p, len(self))
        self.seed, self.salt = seed, salt
        self.draw: int | None = None
        self.last_keep: list[bool] = [True] * len(self)  # the mask used by the latest forward
        self._gen = torch.Generator()

    def set_draw(self, draw: int | None, seed: int | None = None) -> None:
        """Fix the next masks to a function of (seed, draw): same on every rank, same after resume."""
        self.draw = draw
        if seed is not None:
            self.seed = seed

    def sample_keep(self) -> list[bool]:
        """Which layers run in this forward."""
        if not self.training or not any(self.rates):
            return [True] * len(self)
        if self.draw is None:
            u = torch.rand(len(self))
        else:
            self._gen.manual_seed(draw_seed(self.seed, self.draw, self.salt))
            u = torch.rand(len(self), generator=self._gen)
        return (u >= torch.tensor(self.rates)).tolist()

    def __iter__(self) -> Iterator[nn.Module]:
        self.last_keep = self.sample_keep()
        layers = list(super().__iter__())
        return iter([layer for layer, keep in zip(layers, self.last_keep) if keep])

    def __repr__(self) -> str:  # ModuleList's repr iterates, which would draw a mask
        return nn.Module.__repr__(self)

    def extra_repr(self) -> str:
        rates = self.rates[0] if len(set(self.rates)) == 1 else self.rates
        return f"p={rates}"
