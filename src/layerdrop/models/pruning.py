"""Pruning without fine-tuning: choose layers to keep, then rebuild the model on them.

``layers_to_keep`` implements the paper's selection rules (section 3.2.2); ``prune_model`` does what
fairseq's ``prune_state_dict`` does at load time (renumber the kept layers' keys, build a shallower
model, load strictly), but in memory and per stack, so pruning the decoder never touches the encoder
(the fairseq#1257 pitfall). The pruned model's config simply has fewer layers: saved and reloaded,
it needs no memory of the pruning (fairseq#1403).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
from torch import nn

STRATEGIES = ("every_other", "first", "last", "explicit")


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
    strategy: str, n_layers: int, depth: int | None = None, layers: Sequence[int] | None = None
) -> list[int]:
    """Sorted indices of the layers to keep (0-indexed)."""
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
    raise ValueError(f"unknown prune strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def remap_state_dict(state: Mapping[str, torch.Tensor], keep: Sequence[int], prefix: str) -> dict[str, torch.Tensor]:
    """Drop the layers under ``prefix`` that are not kept and renumber the rest 0..len(keep)-1."""
    new_index = {old: new for new, old in enumerate(sorted(keep))}
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.*)$")
    out = {}
    for key, value in state.items():
        m = pattern.match(key)
        if m is None:
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
