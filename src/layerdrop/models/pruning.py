"""Pruning without fine-tuning: choose layers to keep, then rebuild the model on them.

``layers_to_keep`` implements the paper's selection rules (section 3.2.2); ``prune_model`` does what
fairseq's ``prune_state_dict`` does at load time (renumber the kept layers' keys, build a shallower
model, load strictly), but in memory and per stack, so pruning the decoder never touches the encoder
(the fairseq#1257 pitfall). The pruned model's config simply has fewer layers: saved and reloaded,
it needs no memory of the pruning (fairseq#1403).
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

#: strategies that are a function of (N, r) alone, plus "explicit" (a list) and "data_driven" (learned rates)
STRATEGIES = ("every_other", "first", "last", "explicit", "data_driven")
#: strategies that need evaluations to choose (see ``search_layers`` and ``random_subsets``)
SEARCHED = ("search_on_valid", "random")


def target_rate(n_layers: int, depth: int) -> float:
    """p* = 1 - r/N: the LayerDrop rate whose expected kept depth in training is r (section 3.2.3)."""
    _check_depth(n_layers, depth)
    return 1.0 - depth / n_layers


def _check_depth(n_layers: int, depth: int) -> None:
    if not 1 <= depth <= n_layers:
        raise ValueError(f"prune depth {depth} is not in [1, {n_layers}]: keep at least one and at most all layers")


def every_other(n_layers: int, depth: int) -> list[int]:
    """The paper's rule: pruning at rate p drops 1-indexed layers d with d = 0 (mod floor(1/p)).

    16 -> 8 keeps 0,2,...,14 (fairseq's README); 16 -> 12 drops 3,7,11,15. Depths the rule cannot
    reach exactly are spaced evenly instead (fairseq's tip 3): below half, keep floor(j N / r);
    above half, drop floor((j + 1) N / (N - r)) - 1.
    """
    _check_depth(n_layers, depth)
    if depth == n_layers:
        return list(range(n_layers))
    period = math.floor(1.0 / target_rate(n_layers, depth))
    if period >= 2:
        keep = [i for i in range(n_layers) if (i + 1) % period]
        if len(keep) == depth:
            return keep
    if 2 * depth <= n_layers:
        return [j * n_layers // depth for j in range(depth)]
    n_drop = n_layers - depth
    drop = {(j + 1) * n_layers // n_drop - 1 for j in range(n_drop)}
    return [i for i in range(n_layers) if i not in drop]


def layers_to_keep(
    strategy: str, n_layers: int, depth: int | None = None, layers: Sequence[int] | None = None,
    rates: Sequence[float] | None = None,
) -> list[int]:
    """Sorted indices of the layers to keep (0-indexed). ``data_driven`` keeps the ``depth`` layers
    with the lowest learned drop ``rates`` (the paper's fixed top-k at inference)."""
    if strategy == "explicit":
        if not layers:
            raise ValueError("prune strategy 'explicit' needs a non-empty list of layers to keep")
        bad = [i for i in layers if not 0 <= int(i) < n_layers]
        if bad or len(set(layers)) != len(layers):
            raise ValueError(f"layers to keep {list(layers)} must be distinct indices in [0, {n_layers - 1}]")
        return sorted(int(i) for i in layers)
    if depth is None:
        raise ValueError(f"prune strategy {strategy!r} needs a depth")
    _check_depth(n_layers, depth)
    if strategy == "every_other":
        return every_other(n_layers, depth)
    if strategy == "first":
        return list(range(depth))
    if strategy == "last":
        return list(range(n_layers - depth, n_layers))
    if strategy == "data_driven":
        if rates is None or len(rates) != n_layers:
            raise ValueError("prune strategy 'data_driven' needs one learned rate per layer "
                             "(train with layerdrop.learned=true)")
        return sorted(sorted(range(n_layers), key=lambda i: (rates[i], i))[:depth])
    raise ValueError(f"unknown prune strategy {strategy!r}; allowed: {', '.join(STRATEGIES + SEARCHED)}")


def random_subsets(n_layers: int, depth: int, count: int, seed: int) -> list[list[int]]:
    """``count`` distinct random r-of-N subsets (all of them if there are fewer), seeded."""
    _check_depth(n_layers, depth)
    total = math.comb(n_layers, depth)
    if total <= count:
        return [list(c) for c in itertools.combinations(range(n_layers), depth)]
    rng, seen = random.Random(seed), set()
    while len(seen) < count:
        seen.add(tuple(sorted(rng.sample(range(n_layers), depth))))
    return [list(c) for c in sorted(seen)]


def search_layers(
    score: Callable[[list[int]], float], n_layers: int, depth: int, max_exhaustive: int = 100, beam: int = 4
) -> tuple[list[int], int]:
    """The r-of-N subset with the lowest ``score`` (e.g. valid perplexity), and how many were scored.

    Exhaustive when C(N, r) <= ``max_exhaustive``; otherwise a beam search that removes one layer at a
    time from the full stack, keeping the ``beam`` best subsets at each depth
    (about beam x N x (N - r) scores)."""
    _check_depth(n_layers, depth)
    cache: dict[tuple[int, ...], float] = {}

    def cached(subset: tuple[int, ...]) -> float:
        if subset not in cache:
            cache[subset] = score(list(subset))
        return cache[subset]

    if math.comb(n_layers, depth) <= max_exhaustive:
        best = min(itertools.combinations(range(n_layers), depth), key=cached)
        return list(best), len(cache)
    frontier = [tuple(range(n_layers))]
    for _ in range(n_layers - depth):
        children = {tuple(i for i in s if i != drop) for s in frontier for drop in s}
        frontier = sorted(children, key=cached)[:beam]
    return list(frontier[0]), len(cache)


#: per-layer vectors stored on a stack itself (learned LayerDrop scores): pruned by indexing
PER_LAYER_VECTORS = ("scores",)


def remap_state_dict(state: Mapping[str, torch.Tensor], keep: Sequence[int], prefix: str) -> dict[str, torch.Tensor]:
    """Drop the layers under ``prefix`` that are not kept and renumber the rest 0..len(keep)-1."""
    new_index = {old: new for new, old in enumerate(sorted(keep))}
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.*)$")
    vectors = {prefix + name for name in PER_LAYER_VECTORS}
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        if key in vectors:
            out[key] = value[sorted(keep)]
        elif m is None:
            out[key] = value
        elif int(m.group(1)) in new_index:
            out[f"{prefix}{new_index[int(m.group(1))]}.{m.group(2)}"] = value
    return out


def prune_model(model: nn.Module, keep: Mapping[str, Sequence[int]]) -> nn.Module:
    """A new model of the same class with only the kept layers of each named stack.

    ``keep`` maps a stack name from ``type(model).stacks`` (e.g. "decoder") to layer indices; stacks
    not named keep every layer. Loading is strict, so a missing or extra key fails loudly.
    """
    cfg, state = model.config, model.state_dict()
    changes = {}
    for stack, indices in keep.items():
        if stack not in model.stacks:
            raise ValueError(f"unknown stack {stack!r} for {type(model).__name__}; allowed: {', '.join(model.stacks)}")
        prefix, n_field, rate_field = model.stacks[stack]
        indices = layers_to_keep("explicit", getattr(cfg, n_field), layers=indices)
        state = remap_state_dict(state, indices, prefix)
        changes[n_field] = len(indices)
        rates = getattr(cfg, rate_field)
        if isinstance(rates, (list, tuple)):  # per-layer rates follow their layers
            changes[rate_field] = [rates[i] for i in indices]
    device = next(model.parameters()).device
    with torch.device(device):
        pruned = type(model)(replace(cfg, **changes))
    pruned.load_state_dict(state, strict=True)
    return pruned.train(model.training)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
