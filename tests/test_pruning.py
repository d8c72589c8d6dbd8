"""Pruning: the paper's selection rules, equivalence with the full model, save and reload."""

import pytest
import torch

from layerdrop.models.checkpoint import load_model, save_model
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.pruning import (
    count_parameters,
    layers_to_keep,
    prune_model,
    remap_state_dict,
    target_rate,
)


def test_every_other_matches_fairseq_and_the_paper():
    assert layers_to_keep("every_other", 16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]  # fairseq README
    assert sorted(set(range(16)) - set(layers_to_keep("every_other", 16, 12))) == [3, 7, 11, 15]  # p = 0.25
    assert sorted(set(range(16)) - set(layers_to_keep("every_other", 16, 13))) == [4, 9, 14]  # p = 0.2
    assert layers_to_keep("every_other", 12, 6) == [0, 2, 4, 6, 8, 10]
    assert layers_to_keep("every_other", 24, 12) == list(range(0, 24, 2))


@pytest.mark.parametrize("n", [6, 12, 16])
def test_every_other_gives_each_depth_evenly_spaced(n):
    for depth in range(1, n + 1):
        keep = layers_to_keep("every_other", n, depth)
        assert len(keep) == depth and keep == sorted(set(keep)) and keep[0] >= 0 and keep[-1] < n
        gaps = [b - a for a, b in zip([-1, *keep], [*keep, n])]
        assert max(gaps) - min(gaps) <= max(1, n // depth)  # no clumping: spacing within one period
    assert layers_to_keep("every_other", 16, 4) == [0, 4, 8, 12]  # below half: evenly spaced


def test_first_last_explicit_and_target_rate():
    assert layers_to_keep("first", 6, 2) == [0, 1]
    assert layers_to_keep("last", 6, 2) == [4, 5]
    assert layers_to_keep("explicit", 6, layers=[5, 1]) == [1, 5]
    assert target_rate(16, 8) == 0.5 and target_rate(16, 12) == 0.25


@pytest.mark.parametrize(
    "args, message",
    [
        (("every_other", 6, 7), "depth 7 is not in \\[1, 6\\]"),
        (("first", 6, 0), "depth 0"),
        (("middle", 6, 3), "unknown prune strategy 'middle'"),
        (("every_other", 6, None), "needs a depth"),
    ],
)
def test_bad_prune_requests(args, message):
    with pytest.raises(ValueError, match=message):
        layers_to_keep(*args)
    with pytest.raises(ValueError, match="distinct indices"):
        layers_to_keep("explicit", 4, layers=[0, 4])


def test_remap_renumbers_only_the_stack():
    sd = {"embed.weight": 0, "layers.0.a": 10, "layers.1.a": 11, "layers.2.a": 12, "layers.10.a": 20, "norm.w": 1}
    out = remap_state_dict(sd, [1, 10], "layers.")
    assert out == {"embed.weight": 0, "layers.0.a": 11, "layers.1.a": 20, "norm.w": 1}


def tiny_lm(**kw):
    cfg = dict(vocab_size=64, n_layers=6, d_model=16, n_heads=2, d_ff=32, max_len=10, dropout=0.0, layerdrop=0.2)
    torch.manual_seed(0)
    return TransformerLM(LMConfig(**{**cfg, **kw})).eval()


def full_model_on_kept_layers(model, keep, x):
    """The unpruned model, run with every layer outside ``keep`` skipped."""
    h = model.embed(x) * model.config.d_model**0.5 + model.positions[: x.size(1)]
    for i in keep:
        h = model.layers[i](h)
    return model.log_probs(model.norm(h))


@pytest.mark.parametrize("adaptive", [False, True])
def test_pruned_model_equals_full_model_on_kept_layers(adaptive):
    extra = dict(adaptive=True, cutoffs=[20, 40], final_norm=False) if adaptive else {}
    model = tiny_lm(**extra)
    keep = layers_to_keep("every_other", 6, 3)
    pruned = prune_model(model, {"decoder": keep})
    x = torch.randint(0, 64, (3, 10))
    assert torch.allclose(pruned.log_probs(pruned(x)), full_model_on_kept_layers(model, keep, x), atol=1e-6)
    per_layer = count_parameters(model.layers[0])
    assert count_parameters(pruned) == count_parameters(model) - 3 * per_layer
    assert pruned.config.n_layers == 3 and len(pruned.layers) == 3


def test_pruned_checkpoint_reloads_without_memory_of_pruning(tmp_path):
    model = tiny_lm(layerdrop=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    pruned = prune_model(model, {"decoder": [0, 3, 5]})
    assert pruned.config.layerdrop == [0.1, 0.4, 0.6]  # per-layer rates follow their layers
    save_model(tmp_path / "pruned.pt", pruned, meta={"pruned_from": 6})
    reloaded, meta = load_model(tmp_path / "pruned.pt")
    assert meta == {"pruned_from": 6} and reloaded.config.n_layers == 3
    x = torch.randint(0, 64, (2, 10))
    assert torch.equal(reloaded(x), pruned(x))
    save_model(tmp_path / "again.pt", reloaded)  # and again: still loads strictly
    assert load_model(tmp_path / "again.pt")[0].config.n_layers == 3


def test_prune_unknown_stack_and_strict_load(tmp_path):
    model = tiny_lm()
    with pytest.raises(ValueError, match="unknown stack 'encoder'"):
        prune_model(model, {"encoder": [0]})
    save_model(tmp_path / "m.pt", model)
    payload = torch.load(tmp_path / "m.pt", weights_only=True)
    del payload["state_dict"]["layers.5.ffn.fc1.weight"]
    torch.save(payload, tmp_path / "broken.pt")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_model(tmp_path / "broken.pt")


def test_prune_command_on_a_saved_model(tmp_path, caplog):
    from layerdrop.prune import main as prune_main

    model = tiny_lm()
    save_model(tmp_path / "model.pt", model)
    with caplog.at_level("INFO", logger="layerdrop"):
        prune_main([str(tmp_path / "model.pt"), "--depth", "3", "--out", str(tmp_path / "small.pt")])
    assert "layers [0, 2, 4] of 6 kept" in caplog.text
    small, meta = load_model(tmp_path / "small.pt")
    assert meta["kept_layers"] == [0, 2, 4] and meta["n_params"] == count_parameters(small) < meta["n_params_before"]
    x = torch.randint(0, 64, (2, 10))
    assert torch.allclose(small.log_probs(small(x)), full_model_on_kept_layers(model, [0, 2, 4], x), atol=1e-6)
    with pytest.raises(ValueError, match="depth 9 is not in"):
        prune_main([str(tmp_path / "model.pt"), "--depth", "9", "--out", str(tmp_path / "x.pt")])
