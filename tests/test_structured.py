"""Figure 4's machinery: finer drop targets, learned rates, and the searched pruning strategies."""

import itertools
import math

import pytest
import torch

from layerdrop.config import load_config
from layerdrop.models.layerdrop import LayerDropList
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.pruning import layers_to_keep, prune_model, random_subsets, search_layers
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


def test_dropped_heads_are_not_computed():
    torch.manual_seed(0)
    attn = SelfAttention(16, 4).train()
    x = torch.randn(2, 5, 16)
    kept = torch.tensor([0, 2])
    y = attn(x, heads=kept)
    # the reference: attention computed from the kept heads' weights alone
    w = attn.qkv.weight.view(3, 4, 4, 16)[:, kept]
    small_qkv_w = w.reshape(-1, 16)
    small_qkv_b = attn.qkv.bias.view(3, 4, 4)[:, kept].reshape(-1)
    q, k, v = torch.nn.functional.linear(x, small_qkv_w, small_qkv_b).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 5, 8)
    ref = torch.nn.functional.linear(ref, attn.out.weight.view(16, 4, 4)[:, kept].reshape(16, 8), attn.out.bias)
    assert torch.allclose(y, ref, atol=1e-6)
    y.sum().backward()
    grad = attn.qkv.weight.grad.view(3, 4, 4, 16)
    assert grad[:, [1, 3]].abs().sum() == 0 and grad[:, [0, 2]].abs().sum() > 0  # dropped heads: no compute


def test_all_heads_dropped_skips_the_attention_block():
    blk = layer(head_drop=0.9)
    x = torch.randn(1, 3, 16)
    seen = set()
    for _ in range(200):
        blk(x)
        seen.add((blk.last_keep["heads"] > 0) == blk.last_keep["attn"])
    assert seen == {True}


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


@pytest.mark.parametrize("target", sorted(DROP_TARGETS))
def test_drop_targets_share_one_budget(target):
    cfg = load_config([f"layerdrop.target={target}", "layerdrop.p=0.4"])
    validate(cfg)
    m = model_config(cfg)
    total = sum(m.get(f, 0.0) for f in ("layerdrop", "sublayer_drop", "head_drop"))
    assert total == pytest.approx(0.4)
    TransformerLM(LMConfig(**m))  # builds


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
