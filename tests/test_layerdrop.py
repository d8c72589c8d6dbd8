"""LayerDrop behaviour: what runs, how often, and who decides."""

import pytest
import torch
from torch import nn

from layerdrop.models.layerdrop import LayerDropList, check_rates
from layerdrop.models.lm import LMConfig, TransformerLM


class Counting(nn.Module):
    """Adds a constant and counts its calls, so a skipped layer is visible."""

    def __init__(self, k: float):
        super().__init__()
        self.k, self.calls = k, 0
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x):
        self.calls += 1
        return x + self.k * self.w


def run(stack, x):
    for layer in stack:
        x = layer(x)
    return x


def test_eval_runs_every_layer():
    stack = LayerDropList([Counting(i) for i in range(6)], p=0.9).eval()
    assert run(stack, torch.zeros(())) == sum(range(6))
    assert all(layer.calls == 1 for layer in stack.modules() if isinstance(layer, Counting))


def test_p0_equals_plain_stack():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=50, n_layers=3, d_model=16, n_heads=2, d_ff=32, max_len=8, dropout=0.0,
                   attn_dropout=0.0, act_dropout=0.0)
    model = TransformerLM(cfg).train()
    x = torch.randint(0, 50, (2, 8))
    plain = model.embed(x) * 4.0 + model.positions[:8]
    for layer in model.layers._modules.values():  # the plain ModuleList walk, no LayerDrop
        plain = layer(plain)
    assert torch.allclose(model(x), model.norm(plain))


def test_skipped_layers_do_no_compute_and_skip_rate_matches_p():
    torch.manual_seed(1)
    layers = [Counting(1.0) for _ in range(8)]
    stack = LayerDropList(layers, p=0.3).train()
    n = 2000
    for _ in range(n):
        out = run(stack, torch.zeros(()))
        assert out.item() == sum(stack.last_keep)  # each kept layer added 1; dropped ones added nothing
    calls = torch.tensor([layer.calls for layer in layers], dtype=torch.float)
    assert calls.sum().item() == pytest.approx(n * 8 * 0.7, rel=0.03)
    assert ((calls / n) - 0.7).abs().max() < 0.05


def test_per_layer_rates():
    torch.manual_seed(2)
    layers = [Counting(1.0) for _ in range(3)]
    stack = LayerDropList(layers, p=[0.0, 0.5, 0.9]).train()
    for _ in range(3000):
        run(stack, torch.zeros(()))
    rates = [1 - layer.calls / 3000 for layer in layers]
    assert rates[0] == 0.0
    assert rates[1] == pytest.approx(0.5, abs=0.04)
    assert rates[2] == pytest.approx(0.9, abs=0.03)


def test_skipped_layer_gets_no_gradient():
    layers = [Counting(1.0) for _ in range(6)]
    stack = LayerDropList(layers, p=0.5).train()
    stack.set_draw(0, seed=3)  # a fixed mask, chosen to keep some layers and drop others
    run(stack, torch.zeros((), requires_grad=True)).backward()
    assert any(stack.last_keep) and not all(stack.last_keep)  # else the check below is vacuous
    for layer, kept in zip(layers, stack.last_keep):
        assert (layer.w.grad is not None) == kept
        assert not kept or layer.w.grad.item() == 1.0  # d(x + w) / dw: the kept layer's own gradient


def test_seeded_draws_repeat_and_depend_on_step():
    def masks(seed, draws):
        stack = LayerDropList([Counting(0) for _ in range(12)], p=0.5).train()
        out = []
        for d in draws:
            stack.set_draw(d, seed=seed)
            list(stack)
            out.append(tuple(stack.last_keep))
        return out

    assert masks(7, range(20)) == masks(7, range(20))  # same seed and step: same mask, any process
    assert masks(7, range(20)) != masks(8, range(20))
    assert len(set(masks(7, range(20)))) > 10  # steps differ from each other


def test_global_rng_governs_unsynchronised_draws():
    stack = LayerDropList([Counting(0) for _ in range(12)], p=0.5).train()
    torch.manual_seed(5)
    a = [tuple(stack.sample_keep()) for _ in range(5)]
    torch.manual_seed(5)
    b = [tuple(stack.sample_keep()) for _ in range(5)]
    assert a == b


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5])
def test_bad_rates_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=str(bad)):
        check_rates(bad, 4)
    with pytest.raises(ValueError, match="3 per-layer rates for 4 layers"):
        check_rates([0.1, 0.2, 0.3], 4)
