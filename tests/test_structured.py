"""Figure 4's machinery: finer drop targets, learned rates, and the searched pruning strategies."""

import itertools
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from layerdrop.config import load_config
from layerdrop.models import transformer
from layerdrop.models.layerdrop import LayerDropList
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.pruning import layers_to_keep, prune_model, random_subsets, search_layers
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq
from layerdrop.models.transformer import SelfAttention, TransformerLayer
from layerdrop.train import DROP_TARGETS, model_config, validate


def layer(**kw):
    torch.manual_seed(0)
    return TransformerLayer(16, 4, 32, dropout=0.0, **kw).train()


def test_sublayer_drop_skips_blocks_independently_at_rate_p(monkeypatch):
    blk = layer(sublayer_drop=0.3)
    calls = {"attn": 0, "ffn": 0}
    for name in calls:
        module = getattr(blk, name)
        original = module.forward
        monkeypatch.setattr(module, "forward", lambda *a, _o=original, _n=name, **k: (calls.__setitem__(_n, calls[_n] + 1), _o(*a, **k))[1])
    x = torch.randn(2, 5, 16)
    n, both = 2000, 0
    for _ in range(n):
        blk(x)
        both += blk.last_keep["attn"] and blk.last_keep["ffn"]
    assert calls["attn"] / n == pytest.approx(0.7, abs=0.04) and calls["ffn"] / n == pytest.approx(0.7, abs=0.04)
    assert both / n == pytest.approx(0.49, abs=0.04)  # independent draws


@pytest.fixture
def attention_calls(monkeypatch):
    """The (q, k, v) shapes of every call of the attention kernel that the transformer blocks make."""
    calls, kernel = [], transformer.attention

    def recording(q, k, v, **kw):
        calls.append((tuple(q.shape), tuple(k.shape), tuple(v.shape)))
        return kernel(q, k, v, **kw)

    monkeypatch.setattr(transformer, "attention", recording)
    return calls


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def test_dropped_heads_are_not_computed(attention_calls):
    torch.manual_seed(0)
    attn = SelfAttention(16, 4).train()
    x = torch.randn(2, 5, 16)
    kept = torch.tensor([0, 2])
    y = attn(x, heads=kept)
    assert attention_calls == [((2, 2, 5, 4),) * 3]  # q, k, v: (B, 2 kept heads of 4, T, D)
    # the projections and the kernel cost exactly 2/4 of the full attention's multiply-adds, forward and backward
    assert flops(lambda: attn(x, heads=kept).sum().backward()) * 2 == flops(lambda: attn(x).sum().backward())
    # the values: attention computed from the kept heads' weights alone
    w = attn.qkv.weight.view(3, 4, 4, 16)[:, kept]
    small_qkv_w = w.reshape(-1, 16)
    small_qkv_b = attn.qkv.bias.view(3, 4, 4)[:, kept].reshape(-1)
    q, k, v = torch.nn.functional.linear(x, small_qkv_w, small_qkv_b).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 5, 8)
    ref = torch.nn.functional.linear(ref, attn.out.weight.view(16, 4, 4)[:, kept].reshape(16, 8), attn.out.bias)
    assert torch.allclose(y, ref, atol=1e-6)
    attn.zero_grad()
    y.sum().backward()
    grad = attn.qkv.weight.grad.view(3, 4, 4, 16)
    assert grad[:, [1, 3]].abs().sum() == 0 and grad[:, [0, 2]].abs().sum() > 0  # dropped heads: no gradient


@pytest.mark.parametrize("cross", [False, True])
def test_all_heads_dropped_skips_the_attention_block(attention_calls, cross):
    """Observed from outside: with no head left neither attention module nor the kernel is called; otherwise
    each attention block (self, and cross in a decoder layer) calls the kernel once with the kept heads."""
    blk = layer(head_drop=0.9, cross=cross)
    modules = [blk.attn, blk.cross_attn] if cross else [blk.attn]
    module_calls = []
    for m in modules:
        m.register_forward_pre_hook(lambda *_: module_calls.append(1))
    x, memory = torch.randn(1, 3, 16), torch.randn(1, 4, 16)
    kept_counts = []
    for step in range(60):
        attention_calls.clear()
        module_calls.clear()
        blk.set_draw(step, seed=0)
        blk(x, memory=memory if cross else None)
        kept = blk.last_keep["heads"]
        kept_counts.append(kept)
        assert len(module_calls) == len(attention_calls) == (len(modules) if kept else 0)
        assert all(q[1] == k[1] == v[1] == kept for q, k, v in attention_calls)
    assert 0 in kept_counts and max(kept_counts) > 0  # both cases were seen


def test_structured_draws_repeat_with_the_seed_and_are_off_at_eval():
    def masks(seed):
        blk = layer(sublayer_drop=0.5, head_drop=0.5)
        out = []
        for step in range(10):
            blk.set_draw(step, seed=seed)
            blk(torch.randn(1, 3, 16))
            out.append(tuple(blk.last_keep.values()))
        return out

    assert masks(1) == masks(1) and masks(1) != masks(2)
    blk = layer(sublayer_drop=0.5, head_drop=0.5).eval()
    blk(torch.randn(1, 3, 16))
    assert blk.last_keep == {"attn": True, "ffn": True, "cross": False, "heads": 4}  # no cross-attention: an LM layer


#: target -> the shares of the budget p that go to (whole layers, sub-layers, heads), as README documents
SHARES = {"layers": (1, 0, 0), "sublayers": (0, 1, 0), "heads": (0, 0, 1), "heads+layers": (0.5, 0, 0.5),
          "heads+sublayers": (0, 0.5, 0.5)}


def assert_rates(stack, layerdrop: float, sublayer: float, head: float) -> None:
    """A built stack's rates, per layer: LayerDrop's, and each layer's sub-layer and head drop rates."""
    layers = list(stack.eval())  # eval: iterating yields every layer
    n = len(layers)
    assert stack.rates == pytest.approx([layerdrop] * n)
    assert [m.sublayer_drop for m in layers] == pytest.approx([sublayer] * n)
    assert [m.head_drop for m in layers] == pytest.approx([head] * n)


@pytest.mark.parametrize("target", sorted(DROP_TARGETS))
def test_drop_targets_share_one_budget(target):
    layer_share, sublayer_share, head_share = SHARES[target]
    cfg = load_config([f"layerdrop.target={target}", "layerdrop.p=0.4"])
    validate(cfg)
    model = TransformerLM(LMConfig(**model_config(cfg)))
    assert_rates(model.layers, 0.4 * layer_share, 0.4 * sublayer_share, 0.4 * head_share)
    # translation: each stack's LayerDrop share comes from its own budget; heads and sub-layers from p
    cfg = load_config(["experiment=table1_mt", f"layerdrop.target={target}", "layerdrop.p=0.4",
                       "layerdrop.encoder_p=0.2"])
    validate(cfg)
    model = TransformerSeq2Seq(Seq2SeqConfig(**model_config(cfg)))
    assert_rates(model.encoder, 0.2 * layer_share, 0.4 * sublayer_share, 0.4 * head_share)
    assert_rates(model.decoder, 0.4 * layer_share, 0.4 * sublayer_share, 0.4 * head_share)


def test_learned_rates_average_to_p_and_learn():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=40, n_layers=6, d_model=16, n_heads=2, d_ff=32, max_len=8, layerdrop=0.3,
                   layerdrop_learned=True)
    model = TransformerLM(cfg).train()
    stack = model.layers
    with torch.no_grad():
        stack.scores.copy_(torch.randn(6) * 0.3)
    assert stack.drop_rates().mean().item() == pytest.approx(0.3, abs=1e-6)
    x = torch.randint(0, 40, (4, 8))
    model.nll(model(x), x).mean().backward()
    assert stack.scores.grad is not None and stack.scores.grad.abs().sum() > 0
    keep = layers_to_keep("data_driven", 6, 3, rates=stack.drop_rates().tolist())
    order = sorted(range(6), key=lambda i: stack.drop_rates()[i].item())
    assert keep == sorted(order[:3]) and len(set(keep)) == 3
    pruned = prune_model(model.eval(), {"decoder": keep})  # the scores are pruned with their layers
    assert torch.equal(pruned.layers.scores, stack.scores.detach()[keep])


def test_top_k_and_random_subsets():
    rates = [0.5, 0.1, 0.3, 0.2, 0.9]
    assert layers_to_keep("data_driven", 5, 2, rates=rates) == [1, 3]
    with pytest.raises(ValueError, match="learned rate per layer"):
        layers_to_keep("data_driven", 5, 2)
    subsets = random_subsets(16, 8, 20, seed=3)
    assert len({tuple(s) for s in subsets}) == 20 and all(len(s) == 8 and s == sorted(s) for s in subsets)
    assert subsets == random_subsets(16, 8, 20, seed=3) and subsets != random_subsets(16, 8, 20, seed=4)
    assert len(random_subsets(6, 3, 50, seed=0)) == math.comb(6, 3)  # all of them when there are fewer


def test_search_finds_the_known_best_subset():
    value = [5.0, 1.0, 4.0, 0.5, 3.0, 2.0, 0.1, 6.0]  # a constructed score: sum of per-layer costs
    best = tuple(sorted(sorted(range(8), key=value.__getitem__)[:4]))

    def score(keep):
        return sum(value[i] for i in keep) + (0.01 if tuple(keep) == (0, 1, 2, 3) else 0)

    keep, n = search_layers(score, 8, 4, max_exhaustive=100)
    assert tuple(keep) == best and n == math.comb(8, 4)  # exhaustive: every subset once
    keep, n = search_layers(score, 8, 4, max_exhaustive=10, beam=2)
    assert tuple(keep) == best and n < math.comb(8, 4)  # beam search: fewer evaluations, same answer here
    brute = min(itertools.combinations(range(8), 4), key=score)
    assert tuple(keep) == brute


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["layerdrop.target=blocks"], "layerdrop.target='blocks': expected one of"),
        (["layerdrop.learned=true", "layerdrop.target=heads"], "layerdrop.learned needs"),
    ],
)
def test_bad_structured_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(load_config(overrides))


def test_learned_stack_refuses_a_rate_list():
    with pytest.raises(ValueError, match="one mean rate"):
        LayerDropList([torch.nn.Identity()] * 2, p=[0.1, 0.2], learned=True)
