"""bf16 autocast's CPU matrix products through fp32 GEMMs (``layerdrop.utils.bf16``): the same rounding
as PyTorch's own bf16 kernels (inputs, outputs and gradients), only the GEMM's order of additions
differs; chosen by ``LAYERDROP_BF16_GEMM`` and, by default, by whether this CPU emulates bf16."""

import logging

import pytest
import torch
import torch.nn.functional as F

from layerdrop import schema
from layerdrop.config import load_config
from layerdrop.models import ops
from layerdrop.utils import bf16, machine


@pytest.fixture
def gemm(monkeypatch):
    """Leaves the process as it found it: the GEMMs PyTorch's, or re-routed if they were."""
    was = bf16.installed()
    bf16.uninstall()
    monkeypatch.setattr(schema, "_WARNED", set())
    monkeypatch.delenv(bf16.ENV, raising=False)
    yield
    bf16.uninstall()
    if was:
        bf16.install()


def run(fn, *inputs):
    """fn(*inputs) under CPU bf16 autocast -> (output, gradients of every input)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fn(*leaves)
    out.float().pow(2).sum().backward()
    return out, [x.grad for x in leaves]


CASES = {
    "linear": (lambda x, w, b: F.linear(x, w, b), [(4, 24, 64), (48, 64), (48,)]),
    "matmul": (lambda a, b: torch.matmul(a, b), [(4, 24, 64), (64, 40)]),
    "mm": (lambda a, b: torch.mm(a, b), [(24, 64), (64, 40)]),
    "bmm": (lambda a, b: torch.bmm(a, b), [(6, 24, 32), (6, 32, 24)]),
    "addmm": (lambda c, a, b: torch.addmm(c, a, b, alpha=0.5), [(24, 40), (24, 64), (64, 40)]),
    "baddbmm": (lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.25), [(6, 24, 24), (6, 24, 32), (6, 32, 24)]),
}


def close_in_bf16(a: torch.Tensor, b: torch.Tensor, share_equal: float = 0.95) -> None:
    """Equal but for a few elements one or two bf16 units apart (an fp32 sum in another order can round
    to the neighbouring bf16 value), relative to the tensor's scale."""
    a, b = a.float(), b.float()
    assert (a == b).float().mean() >= share_equal
    assert (a - b).abs().max() <= 2 ** -6 * b.abs().max()


@pytest.mark.parametrize("op", list(CASES))
def test_each_product_rounds_as_pytorchs_bf16_kernel_forward_and_backward(gemm, op):
    fn, shapes = CASES[op]
    torch.manual_seed(0)
    inputs = [torch.randn(s) for s in shapes]
    native, native_grads = run(fn, *inputs)
    bf16.install()
    ours, our_grads = run(fn, *inputs)
    assert ours.dtype == native.dtype == torch.bfloat16
    close_in_bf16(ours, native)
    for g, h in zip(our_grads, native_grads):
        assert g.dtype == h.dtype == torch.float32
        close_in_bf16(g, h, share_equal=0.5)  # fp32 gradients of bf16-rounded products


def test_the_fp32_gemm_differs_from_an_unrounded_product(gemm):
    """The check above can fail: a product that skipped autocast's rounding (fp32 throughout) is not
    within it."""
    torch.manual_seed(0)
    x, w = torch.randn(4, 24, 256), torch.randn(48, 256)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        native = F.linear(x, w)
    with pytest.raises(AssertionError):
        close_in_bf16(F.linear(x, w).bfloat16(), native)


def test_only_autocast_is_rerouted(gemm):
    bf16.install()
    torch.manual_seed(0)
    a, b = torch.randn(24, 64, dtype=torch.float64), torch.randn(64, 40, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.mm(a, b).dtype == torch.float64  # autocast leaves fp64 alone, and so do we
        assert torch.equal(torch.mm(a, b), a @ b)
    x, y = torch.randn(24, 64), torch.randn(64, 40)
    assert torch.mm(x, y).dtype == torch.float32  # no autocast: untouched
    bf16.uninstall()
    assert not bf16.installed() and bf16.gemm_name() == "native"


def test_a_training_step_of_the_project_attention_matches_pytorchs_bf16(gemm):
    """The fast CPU attention (baddbmm, softmax, bmm under autocast) and a linear layer, a few AdamW
    steps: the losses agree to bf16 precision."""
    def losses() -> list[float]:
        torch.manual_seed(0)
        proj = torch.nn.Linear(32, 96)
        opt = torch.optim.AdamW(proj.parameters(), lr=1e-2)
        x = torch.randn(4, 16, 32)
        out = []
        for _ in range(5):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                q, k, v = proj(x).view(4, 16, 3, 2, 16).permute(2, 0, 3, 1, 4)
                loss = ops.attention(q, k, v, causal=True).float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        return out

    native = losses()
    bf16.install()
    assert losses() == pytest.approx(native, rel=2e-2)


def test_the_choice_follows_the_cpu_and_the_environment(gemm, monkeypatch):
    monkeypatch.setattr(machine, "bf16_slowdown", lambda: 35.0)  # a CPU that emulates bf16
    assert machine.use_fp32_gemm("cpu", "32-true") is None and not bf16.installed()
    assert machine.use_fp32_gemm("gpu", "bf16-mixed") is None and not bf16.installed()
    message = machine.use_fp32_gemm("cpu", "bf16-mixed")
    assert "fp32 GEMMs" in message and "35x" in message and bf16.installed()
    assert machine.machine_info()["bf16_gemm"] == "fp32"  # every record says which GEMM it trained with
    assert machine.slow_bf16_warning("cpu", "bf16-mixed") is None  # nothing to warn of
    bf16.uninstall()
    monkeypatch.setenv(bf16.ENV, "native")
    assert machine.use_fp32_gemm("cpu", "bf16-mixed") is None and not bf16.installed()
    assert "35x" in machine.slow_bf16_warning("cpu", "bf16-mixed")
    monkeypatch.setattr(machine, "bf16_slowdown", lambda: 0.4)  # a CPU with bf16 units
    monkeypatch.setenv(bf16.ENV, "auto")
    assert machine.use_fp32_gemm("cpu", "bf16-mixed") is None and not bf16.installed()
    monkeypatch.setenv(bf16.ENV, "fp32")  # asked for: re-routed anyway
    assert "LAYERDROP_BF16_GEMM=fp32" in machine.use_fp32_gemm("cpu", "bf16-mixed") and bf16.installed()


def test_a_bad_choice_names_itself_and_the_allowed_ones(gemm, monkeypatch):
    monkeypatch.setenv(bf16.ENV, "fp16")
    with pytest.raises(ValueError, match=r"LAYERDROP_BF16_GEMM='fp16': expected one of auto, fp32, native"):
        bf16.choice()


def test_the_config_check_reroutes_once_and_says_so(gemm, monkeypatch, caplog):
    monkeypatch.setattr(machine, "bf16_slowdown", lambda: 35.0)
    with caplog.at_level(logging.INFO, logger="layerdrop"):
        schema.check_config(load_config(["experiment=table2_lm"]))
        schema.check_config(load_config(["experiment=table2_lm"]))
    said = [r for r in caplog.records if "fp32 GEMMs" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO and bf16.installed()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "bf16" in r.getMessage()]


def test_the_same_run_check_needs_its_stored_run(tmp_path, monkeypatch):
    """``make bench-bf16`` trains a stored run again: without the record it says which run it needs,
    and it cannot train past the stored run's length."""
    from layerdrop import bench_bf16

    monkeypatch.setenv("LAYERDROP_RECORDS_DIR", str(tmp_path / "records"))
    with pytest.raises(FileNotFoundError, match=r"run [0-9a-f]{12} \(experiment=figure4_lm .* seed=1\) is not in the "
                       "record store"):
        bench_bf16.same_run(250)
    monkeypatch.delenv("LAYERDROP_RECORDS_DIR")
    with pytest.raises(ValueError, match=r"--steps=6000: must be <= 5000, the stored run's length"):
        bench_bf16.same_run(6000)
