"""bf16 autocast's matrix products computed through fp32 GEMMs, for CPUs that have no bf16 units.

Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (Lightning's ``bf16-mixed``), a matrix product
rounds its floating-point inputs to bf16, multiplies them accumulating in fp32 and returns bf16. On a
CPU with bf16 matrix units (AMX) that is fast; on one without (an AMD EPYC with AVX2 only) PyTorch
falls back to a reference bf16 GEMM that this project measured 7-35x slower than fp32, forward and
backward, so a 15-minute cpu-scale run takes hours.

``install()`` registers, for autocast on the CPU only, kernels that compute the same thing another
way: each input is rounded to the autocast dtype exactly as autocast rounds it, widened back to fp32
(exact: every bf16 value is an fp32 value), multiplied by PyTorch's fp32 GEMM, and the product is
rounded to the autocast dtype. The rounding points are autocast's: bf16 inputs, fp32 accumulation,
a bf16 output, and in the backward pass the output's gradient and the inputs' gradients rounded to
bf16 as well. What differs is only the order of the fp32 additions inside the GEMM, as between any
two GEMM libraries (measured: 99.99% of the outputs are bit-identical to the reference bf16 kernel,
the rest one bf16 unit apart; ``tests/test_bf16_gemm.py``). XLA computes bf16 dots on CPUs the same
way. Runs are therefore the same runs (the run key does not change); each record says which GEMM its
machine used (``machine.bf16_gemm``).

Only autocast's matrix products are re-routed (``OPS``); an op called outside autocast, on bf16 tensors
the caller made, is left to PyTorch. Nothing changes on a GPU or on a CPU with bf16 units.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

#: the matrix products that CPU autocast runs in its lower precision (PyTorch's autocast_mode.cpp list),
#: less the convolutions and RNN kernels this project does not use, and less ``addbmm``: PyTorch's bf16
#: kernel rounds each batch's product to bf16 before summing them, which one fp32 GEMM would not
#: (measured: half its outputs differed); it stays PyTorch's
OPS = ("linear", "matmul", "mm", "bmm", "addmm", "baddbmm")

#: the environment variable that chooses the GEMM: "fp32" always re-routes, "native" never does, and
#: "auto" (or unset) re-routes where this CPU emulates bf16 (``machine.SLOW_BF16``)
ENV = "LAYERDROP_BF16_GEMM"
CHOICES = ("auto", "fp32", "native")

_AUTOCAST = torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)
_library: torch.library.Library | None = None


def _rounded(value: Any, dtype: torch.dtype) -> Any:
    """What autocast does to an argument (a floating tensor that is not fp64 goes to ``dtype``), then
    widened to fp32 for the GEMM."""
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.to(dtype).float()
    return value


def _kernel(op: str) -> Callable[..., torch.Tensor]:
    aten = getattr(torch.ops.aten, op).default

    def kernel(*args: Any, **kwargs: Any) -> torch.Tensor:
        dtype = torch.get_autocast_dtype("cpu")
        if any(isinstance(a, torch.Tensor) and a.dtype == torch.float64 for a in (*args, *kwargs.values())):
            with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST):  # autocast leaves an fp64 product alone
                return aten(*args, **kwargs)
        with torch._C._ExcludeDispatchKeyGuard(_AUTOCAST):
            out = aten(*(_rounded(a, dtype) for a in args), **{k: _rounded(v, dtype) for k, v in kwargs.items()})
            return out.to(dtype)

    return kernel


def installed() -> bool:
    """Whether autocast's CPU matrix products go through fp32 GEMMs in this process."""
    return _library is not None


def install() -> None:
    """Re-route autocast's CPU matrix products through fp32 GEMMs in this process (idempotent)."""
    global _library
    if _library is not None:
        return
    import warnings

    library = torch.library.Library("aten", "IMPL")
    with warnings.catch_warnings():  # PyTorch warns that a registered kernel is being overridden: that is the point
        warnings.simplefilter("ignore", UserWarning)
        for op in OPS:
            library.impl(op, _kernel(op), "AutocastCPU")
    _library = library


def uninstall() -> None:
    """Give autocast's CPU matrix products back to PyTorch's own kernels."""
    global _library
    if _library is not None:
        _library._destroy()
        _library = None


def choice() -> str:
    """``LAYERDROP_BF16_GEMM``, checked: one of ``CHOICES``."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value!r}: expected one of {', '.join(CHOICES)} (auto re-routes bf16 autocast's "
                         "CPU matrix products through fp32 GEMMs where this CPU has no bf16 units)")
    return value


def gemm_name() -> str:
    """What a record says of its machine's bf16 GEMM: 'fp32' (re-routed here) or 'native'."""
    return "fp32" if installed() else "native"
