"""A CPU-only check that code is device-clean: it creates no tensor on an implicit (CPU) device.

Inside ``device_clean()`` the default device is ``meta``, so any tensor made without naming its
device (``torch.tensor(x)``, ``torch.rand(n)``, ``torch.arange(n)``), which on a GPU run would land
on the CPU, lands on ``meta`` instead. The model and its inputs stay on the CPU, so nothing
legitimate is ever on ``meta``: a dispatch mode fails on the first operation that yields a meta
tensor, naming the operation and the line of our code that asked for it. Host-side work that is
meant to stay on the CPU (LayerDrop's synchronised draws) names ``device="cpu"`` explicitly.
"""

from __future__ import annotations

import contextlib
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class ImplicitDeviceTensor(AssertionError):
    pass


class _FailOnMeta(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        leak = _has_meta(tree_flatten((args, kwargs))[0])
        out = None if leak else func(*args, **(kwargs or {}))
        if leak or _has_meta(tree_flatten(out)[0]):
            ours = [f for f in traceback.extract_stack() if "/layerdrop/" in f.filename]
            where = f"{ours[-1].filename}:{ours[-1].lineno}: {ours[-1].line}" if ours else "(not our code)"
            raise ImplicitDeviceTensor(f"{func} met or made a tensor without a named device, at {where}")
        return out


def _has_meta(values) -> bool:
    return any(isinstance(t, torch.Tensor) and t.device.type == "meta" for t in values)


@contextlib.contextmanager
def device_clean():
    previous = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        with _FailOnMeta():
            yield
    finally:
        torch.set_default_device(previous)
