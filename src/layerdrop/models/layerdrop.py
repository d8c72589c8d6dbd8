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

With ``learned=True`` the per-layer rates are learned (the paper's data-driven pruning, section
3.2.2; its code was never released, fairseq#1808). Our formulation: rates = N p softmax(scores),
so they average to p; each layer's keep mask is a Bernoulli draw used as a straight-through
estimate (forward: 0 or 1; backward: d mask / d keep-probability = 1), so the loss moves each
layer's score by how much that layer's output helps. Getting that gradient needs the output of
dropped layers too, so a learned stack computes every layer while training (and only then).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

_MASK63 = (1 << 63) - 1
MAX_LEARNED_RATE = 0.95  # a learned rate is capped so no layer is (almost) never trained


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
    h = (seed * 0x9E3779B97F4A7C15) ^ (draw * 0xBF58476D1CE4E5B9) ^ (salt * 0x94D049BB133111EB)
    return (h ^ (h >> 31)) & _MASK63


class SyncedDraws:
    """Uniform draws that are a function of (seed, draw, salt) once ``set_draw`` has been called."""

    def __init__(self, seed: int = 0, salt: int = 0):
        self.seed, self.salt = seed, salt
        self.draw: int | None = None
        self._gen = torch.Generator()

    def set_draw(self, draw: int | None, seed: int | None = None) -> None:
        self.draw = draw
        if seed is not None:
            self.seed = seed

    def uniform(self, n: int) -> torch.Tensor:
        """(n,) uniforms on the CPU: the draws decide which Python code runs, so they live on the host
        whatever device the model is on (one small host tensor, no device sync)."""
        if self.draw is None:
            return torch.rand(n, device="cpu")
        self._gen.manual_seed(draw_seed(self.seed, self.draw, self.salt))
        return torch.rand(n, generator=self._gen, device="cpu")


class LayerDropList(nn.ModuleList):
    """A ModuleList whose iteration skips layers at random while training.

    Args:
        layers: the layers, in order.
        p: one drop rate for all layers, or one per layer, each in [0, 1).
        seed: base seed for synchronised draws (see module docstring).
        salt: distinguishes several stacks in one model (encoder vs decoder).
        learned: learn the per-layer rates (mean p) instead of fixing them.
    """

    def __init__(
        self, layers: Iterable[nn.Module], p: float | Sequence[float] = 0.0, seed: int = 0, salt: int = 0,
        learned: bool = False,
    ):
        super().__init__(layers)
        self.rates = check_rates(p, len(self))
        self.draws = SyncedDraws(seed, salt)
        self.last_keep: list[bool] = [True] * len(self)  # the mask used by the latest forward
        self.learned = learned
        if learned:
            if isinstance(p, Sequence):
                raise ValueError("learned layerdrop takes one mean rate p, not a list of rates")
            self.scores = nn.Parameter(torch.zeros(len(self)))

    def set_draw(self, draw: int | None, seed: int | None = None) -> None:
        """Fix the next masks to a function of (seed, draw): same on every rank, same after resume."""
        self.draws.set_draw(draw, seed)

    def drop_rates(self) -> torch.Tensor:
        """(N,) the current drop rates (learned ones average to p before capping), on the CPU for fixed
        rates, on the scores' device for learned ones."""
        if not self.learned:
            return torch.tensor(self.rates, device="cpu")
        p = self.rates[0]
        return (len(self) * p * self.scores.softmax(0)).clamp(max=MAX_LEARNED_RATE)

    def sample_keep(self) -> list[bool]:
        """Which layers run in this forward (decided on the host: learned rates are copied there)."""
        if not self.training or not any(self.rates):
            return [True] * len(self)
        rates = self.drop_rates().detach().cpu() if self.learned else torch.tensor(self.rates, device="cpu")
        return (self.draws.uniform(len(self)) >= rates).tolist()

    def __iter__(self) -> Iterator[nn.Module | Callable]:
        self.last_keep = self.sample_keep()
        layers = list(super().__iter__())
        if self.learned and self.training and any(self.rates):
            keep_prob = 1 - self.drop_rates()
            keep = torch.tensor(self.last_keep, dtype=keep_prob.dtype, device=keep_prob.device)
            masks = keep + keep_prob - keep_prob.detach()
            return iter([_Gated(layer, m) for layer, m in zip(layers, masks)])
        return iter([layer for layer, keep in zip(layers, self.last_keep) if keep])

    def __repr__(self) -> str:  # ModuleList's repr iterates, which would draw a mask
        return nn.Module.__repr__(self)

    def extra_repr(self) -> str:
        rates = self.rates[0] if len(set(self.rates)) == 1 else self.rates
        return f"p={rates}" + (", learned" if self.learned else "")


class _Gated:
    """x -> x + m (layer(x) - x): a residual layer whose update is scaled by a 0/1 straight-through mask."""

    def __init__(self, layer: nn.Module, mask: torch.Tensor):
        self.layer, self.mask = layer, mask

    def __call__(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return x + self.mask.to(x.dtype) * (self.layer(x, *args, **kwargs) - x)
