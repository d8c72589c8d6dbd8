"""Model files: config + weights, loaded with ``weights_only=True`` (no code runs from a file).

A saved model carries its own (possibly pruned) config, so a pruned model reloads like any other:
nothing about the pruning has to be remembered (fairseq#1403). Lightning ``.ckpt`` files written by
this project load too (their ``model.`` weights and ``hyper_parameters["model"]`` config).
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path

import torch
from torch import nn

from layerdrop.utils.atomic import atomic_path
from layerdrop.utils.registry import Registry

FORMAT = "layerdrop-model/1"
#: saved ``arch`` name -> model class; a model module registers its class with ``@register_arch(name)``
#: (the class sets ``config_class``, its config dataclass). The name is written into model files: never
#: rename one.
ARCHS: Registry[type[nn.Module]] = Registry("architecture", "layerdrop.models")
register_arch = ARCHS.register


def arch_of(model: nn.Module) -> str:
    for name, cls in ARCHS.items():
        if isinstance(model, cls):
            return name
    raise TypeError(f"no saved-model format for {type(model).__name__}; known: {', '.join(ARCHS.names())}")


def build_model(arch: str, config: dict) -> nn.Module:
    cls = ARCHS[arch]
    cfg_cls = cls.config_class
    known = {f.name for f in fields(cfg_cls)}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"{arch} config has unknown keys {sorted(unknown)}")
    return cls(cfg_cls(**config))


def save_model(path: str | Path, model: nn.Module, meta: dict | None = None) -> None:
    """Write atomically: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "arch": arch_of(model), "config": asdict(model.config),
               "state_dict": model.state_dict(), "meta": meta or {}}
    with atomic_path(path) as tmp:  # a fresh name per writer, removed if the save fails
        torch.save(payload, tmp)


def load_model(path: str | Path) -> tuple[nn.Module, dict]:
    """(model, meta) from a layerdrop model file or a Lightning checkpoint of this project."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "hyper_parameters" in ckpt:  # Lightning checkpoint of an LMLitModule or Seq2SeqLitModule
        hp = ckpt["hyper_parameters"]
        state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
        arch, config, meta = hp.get("arch", "lm"), hp["model"], {"lightning_step": ckpt.get("global_step")}
    elif ckpt.get("format") == FORMAT:
        arch, config, state, meta = ckpt["arch"], ckpt["config"], ckpt["state_dict"], ckpt["meta"]
    else:
        raise ValueError(f"{path} is neither a {FORMAT} file nor a layerdrop Lightning checkpoint")
    model = build_model(arch, config)
    model.load_state_dict(state, strict=True)
    return model.eval(), meta


def checkpoint_step(path: Path) -> int:
    """The step of an averaging checkpoint named ``step=N.ckpt`` (Lightning's ``{step}`` filename)."""
    stem = Path(path).stem
    if not stem.startswith("step="):
        raise ValueError(f"{path} is not named step=<N>.ckpt")
    return int(stem.split("=", 1)[1].split("-")[0])


def average_into(model: nn.Module, paths: list[Path]) -> None:
    """Set ``model``'s weights to the mean of the given Lightning checkpoints' (fairseq's
    ``average_checkpoints.py``). Floating-point tensors are averaged; others come from the last file."""
    if not paths:
        raise ValueError("checkpoint averaging needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
        for key, value in state.items():
            if key in total and value.is_floating_point():
                total[key] += value.double()
            else:
                total[key] = value.double() if value.is_floating_point() else value.clone()
    own = model.state_dict()
    averaged = {k: (v / len(paths)).to(own[k].dtype) if v.is_floating_point() else v for k, v in total.items()}
    model.load_state_dict(averaged, strict=True)
