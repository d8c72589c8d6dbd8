"""Masked-LM pretraining (the pretraining issue, part 1): BERT masking, dynamic masks, the RoBERTa encoder
(sizes checked against the published counts), pruning, device-cleanliness, and a tiny pretraining run on
the offline English corpus (the union of sources, data/mlm.py) through train()."""

import json
import math

import pytest
import torch

from layerdrop.config import load_config
from layerdrop.lit.mlm import MLMLitModule, mask_tokens
from layerdrop.models.encoder import EncoderConfig, TransformerEncoder
from layerdrop.models.pruning import count_parameters, layers_to_keep, prune_model
from layerdrop.schema import check_config
from tests.device_check import device_clean

PAD, MASK, V = 0, 99, 99  # ids 0..98 are the corpus vocabulary, 99 is <mask>


def test_masking_follows_berts_rates_and_never_chooses_padding():
    torch.manual_seed(0)
    tokens = torch.randint(1, V, (400, 500))
    tokens[:, -50:] = PAD
    inputs, target = mask_tokens(tokens, mask_id=MASK, n_random=V, pad_id=PAD)
    chosen = target != -100
    real = tokens != PAD
    assert not chosen[~real].any() and torch.equal(inputs[~real], tokens[~real])  # padding untouched
    assert torch.equal(target[chosen], tokens[chosen])  # targets are the original tokens
    assert torch.equal(inputs[~chosen], tokens[~chosen])  # nothing else changes
    n = int(chosen.sum())
    assert n / int(real.sum()) == pytest.approx(0.15, abs=0.003)
    masked = inputs[chosen] == MASK
    kept = inputs[chosen] == tokens[chosen]
    replaced = ~masked & ~kept
    assert float(masked.float().mean()) == pytest.approx(0.8, abs=0.01)
    # a random replacement may draw the original token (1 in 99): it then counts as kept
    assert float(replaced.float().mean()) == pytest.approx(0.1 * 98 / 99, abs=0.01)
    assert float(kept.float().mean()) == pytest.approx(0.1 + 0.1 / 99, abs=0.01)
    assert int(inputs[chosen][replaced].max()) < V  # random ids come from the vocabulary, never <mask>


def test_masks_are_dynamic_in_training_and_fixed_in_evaluation():
    lit = MLMLitModule(model=dict(vocab_size=V + 1, n_layers=2, d_model=16, n_heads=2, d_ff=32, max_len=20,
                                  dropout=0.0, attn_dropout=0.0))
    tokens = torch.randint(1, V, (4, 20))
    torch.manual_seed(1)
    first = lit._mask(tokens)[1]
    second = lit._mask(tokens)[1]
    torch.manual_seed(1)
    again = lit._mask(tokens)[1]
    assert not torch.equal(first, second)  # seen again: a new mask
    assert torch.equal(first, again)  # the same seeded step (a resumed run): the same mask
    lit.eval()
    losses = []
    for k, batch_idx in enumerate((0, 0, 1)):
        torch.manual_seed(100 + k)  # the global RNG moves on; evaluation masks do not follow it
        lit._eval_step("val", {"input": tokens}, batch_idx)
        losses.append(float(lit.metrics["val"].compute()))
        lit.metrics["val"].reset()
    assert losses[0] == losses[1] and losses[0] != losses[2]


def tiny_encoder(**kw) -> TransformerEncoder:
    cfg = dict(vocab_size=V + 1, n_layers=6, d_model=16, n_heads=2, d_ff=32, max_len=12, dropout=0.0,
               attn_dropout=0.0, layerdrop=0.2)
    torch.manual_seed(0)
    return TransformerEncoder(EncoderConfig(**{**cfg, **kw})).eval()


def test_pruned_encoder_equals_the_full_one_run_on_its_kept_layers():
    model = tiny_encoder()
    keep = layers_to_keep("every_other", 6, 3)
    pruned = prune_model(model, {"encoder": keep})
    x = torch.randint(1, V, (3, 12))
    x[1, 8:] = PAD
    pad = x.eq(PAD)
    h = model.embed_norm(model.embed(x) + model.positions.weight[:12])
    for i in keep:
        h = model.layers[i](h, pad_mask=pad)
    assert torch.allclose(pruned.mlm_logits(pruned(x)), model.mlm_logits(model.norm(h)), atol=1e-5)
    assert count_parameters(pruned) == count_parameters(model) - 3 * count_parameters(model.layers[0])
    assert pruned.config.n_layers == 3


def test_alibi_is_a_per_head_distance_penalty_with_geometric_slopes():
    from layerdrop.models.encoder import alibi_bias

    bias = alibi_bias(4, 5)
    assert bias.shape == (4, 5, 5) and torch.equal(bias, bias.transpose(1, 2))  # symmetric: |i - j|
    assert torch.all(torch.diagonal(bias, dim1=1, dim2=2) == 0)
    assert torch.allclose(bias[:, 0, 1], -torch.tensor([2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8]))
    assert torch.allclose(bias[:, 0, 3], 3 * bias[:, 0, 1])


def test_an_alibi_encoder_has_no_position_table_reads_order_and_prunes_exactly():
    model = tiny_encoder(positions="alibi")
    learned = tiny_encoder()
    assert model.positions is None
    assert count_parameters(learned) - count_parameters(model) == learned.positions.weight.numel()
    x = torch.randint(1, V, (3, 12))
    x[1, 8:] = PAD
    h = model(x)
    swapped = x.clone()
    swapped[:, [2, 6]] = x[:, [6, 2]]
    h2 = model(swapped)  # an order-blind encoder would only swap the two outputs
    assert not torch.allclose(h2[:, [6, 2]], h[:, [2, 6]], atol=1e-4)
    keep = layers_to_keep("every_other", 6, 3)
    pruned = prune_model(model, {"encoder": keep})
    from layerdrop.models.encoder import alibi_bias

    g = model.embed_norm(model.embed(x))
    for i in keep:
        g = model.layers[i](g, pad_mask=x.eq(PAD), attn_bias=alibi_bias(2, 12))
    assert torch.allclose(pruned(x), model.norm(g), atol=1e-5) and pruned.config.positions == "alibi"


def test_layerdrop_skips_encoder_layers_in_training():
    model = tiny_encoder(layerdrop=0.5).train()
    calls = []
    for i in range(len(model.layers)):  # (iterating the stack in training would draw a mask)
        model.layers[i].register_forward_hook(lambda *_, i=i: calls.append(i))
    model.layers.set_draw(3, seed=1)
    model(torch.randint(1, V, (2, 12)))
    assert calls == [i for i, kept in enumerate(model.layers.last_keep) if kept] and len(calls) < 6


def test_only_masked_positions_are_scored_and_padding_is_not_attended():
    model = tiny_encoder(layerdrop=0.0)
    x = torch.randint(1, V, (2, 12))
    x[:, 9:] = PAD
    target = torch.full_like(x, -100)
    target[0, 2], target[1, 5] = 7, 8
    assert model.mlm_nll(model(x), target).shape == (2,)
    # padding is not attended to: the real positions see what they would see with no padding at all
    assert torch.allclose(model(x)[:, :9], model(x[:, :9]), atol=1e-5)


@pytest.mark.parametrize("layers,width,heads,ffn,published", [
    (12, 768, 12, 3072, 124_645_632),   # Hugging Face RobertaModel, roberta-base
    (24, 1024, 16, 4096, 355_359_744),  # roberta-large
])
def test_the_paper_encoders_have_robertas_parameter_counts(layers, width, heads, ffn, published):
    """Our encoder and LM head against the published counts of RobertaModel, which has a pooler
    (a C x C dense layer) and one token-type embedding, and no LM head (dense, LayerNorm, bias)."""
    with torch.device("meta"):
        model = TransformerEncoder(EncoderConfig(vocab_size=50265, n_layers=layers, d_model=width,
                                                 n_heads=heads, d_ff=ffn))
    C = width
    head = count_parameters(model.head_dense) + count_parameters(model.head_norm) + model.head_bias.numel()
    pooler, token_type = C * C + C, C
    assert count_parameters(model) - head + pooler + token_type == published


def test_paper_configs_compose_to_roberta():
    base = load_config(["experiment=pretrain_mlm", "scale=paper"])
    large = load_config(["experiment=pretrain_mlm_large", "scale=paper"])
    deep = load_config(["experiment=pretrain_mlm_deep", "scale=paper"])
    for cfg in (base, large, deep):
        check_config(cfg)
    assert (base.model.n_layers, base.model.d_model, base.optim.optimizer.lr, base.optim.scheduler.warmup_steps) \
        == (12, 768, 6e-4, 24000)
    assert (large.model.n_layers, large.model.d_model, large.optim.optimizer.lr,
            large.optim.scheduler.warmup_steps) == (24, 1024, 4e-4, 30000)
    assert (deep.model.n_layers, deep.layerdrop.p, deep.trainer.max_steps) == (48, 0.5, 300000)
    sequences = base.data.batch_size * base.trainer.devices * base.trainer.accumulate_grad_batches
    assert sequences == 8192 and base.optim.scheduler.decay == "linear"


@pytest.mark.parametrize("override,message", [
    ("model.vocab_size=4096", "must be data.vocab_size \\+ 1 = 4097"),
    ("data.frequency_order=true", "frequency_order=true: must be false"),
    ("task.module_args.mask_frac=0.95", "must be >= 0 and sum to at most 1"),
    ("model.activation=tanh", "model.activation"),
    ("model.positions=rotary", "model.positions"),
])
def test_bad_pretraining_settings_are_refused_at_config_time(override, message):
    with pytest.raises(ValueError, match=message):
        check_config(load_config(["experiment=pretrain_mlm", override]))


@pytest.mark.parametrize("positions", ["learned", "alibi"])
def test_pretraining_is_device_clean(positions):
    lit = MLMLitModule(model=dict(vocab_size=V + 1, n_layers=3, d_model=16, n_heads=2, d_ff=32, max_len=12,
                                  layerdrop=0.5, positions=positions))
    tokens = torch.randint(1, V, (3, 12))
    tokens[2, 9:] = PAD
    lit.model.layers.set_draw(2, seed=1)
    with device_clean():
        inputs, target = lit._mask(tokens)
        lit._nll(inputs, target)[0].backward()
        lit.eval()
        generator = torch.Generator(device=tokens.device).manual_seed(3)
        lit._nll(*lit._mask(tokens, generator))


def test_a_tiny_pretraining_run_on_the_offline_english_corpus(tmp_path):
    from layerdrop.train import train

    overrides = ["experiment=pretrain_mlm", "debug=smoke_mlm", f"paths.runs_dir={tmp_path}/runs",
                 f"paths.log_dir={tmp_path}/logs", "logger=none", "prune.depths=[2]", "prune.splits=[valid]"]
    record = train(load_config(overrides))
    assert record["task"] == "mlm" and record["train"]["steps"] == 6
    sources = record["data"]["provenance"]["sources"]  # every source read from its package, split by document
    assert list(sources) == ["news", "anarchism", "ddtp"]
    assert all(min(s["split"][split] for split in ("train", "valid", "test")) > 0 for s in sources.values())
    assert sources["anarchism"]["extracted"]["sections"] > 500  # the FAQ's HTML read as sections
    assert [p["step"] for p in record["train"]["curve"]] == [3, 6]
    rows = {(r["strategy"], r["depth"]): r for r in record["eval"]}
    assert set(rows) == {("none", 4), ("every_other", 2)}
    full, half = rows["none", 4], rows["every_other", 2]
    assert full["valid_tokens"] == half["valid_tokens"] > 0  # the same fixed masks score every depth
    assert all(math.isfinite(r["valid_ppl"]) and r["valid_ppl"] > 1 for r in rows.values())
    saved = json.loads((tmp_path / "runs" / "mlm" / record["run_key"] / "metrics.json").read_text())
    assert saved["eval"] == record["eval"]
    # its rows (an encoder's, naming no stack, as every single-stack model's) count as done: asked again, the run
    # has nothing left to evaluate, so a fresh clone holding its record neither evaluates nor trains it again
    from layerdrop.tasks import get_task
    from layerdrop.train import unevaluated

    cfg = load_config(overrides)
    assert "stack" not in full and unevaluated(cfg, get_task(cfg), saved) is None
    # the context probe on the finished run: every mode scored on the same masked tokens, written beside it
    from layerdrop.metrics.context import main as context_main

    context_main([str(tmp_path / "runs" / "mlm" / record["run_key"]), "--batches", "2"])
    probe = json.loads((tmp_path / "runs" / "mlm" / record["run_key"] / "context.json").read_text())
    assert probe["masked_tokens"] > 0 and probe["batches"] == 2
    assert all(math.isfinite(probe[k]) and probe[k] > 1 for k in ("intact", "shuffled", "no_context", "unigram"))


def test_the_context_probe_shuffles_only_the_unscored_context_and_sees_order():
    """``shuffled`` keeps the scored positions and each row's context words, only their order changes; a
    model that reads its left neighbour scores worse on shuffled context, one that ignores order does not."""
    from layerdrop.metrics.context import context_ppl, corrupt

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, V, (4, 32), generator=g)
    inputs, target = mask_tokens(tokens, mask_id=MASK, n_random=V, generator=g, pad_id=PAD)
    shuffled = corrupt(inputs, target, "shuffled", MASK, torch.Generator().manual_seed(1))
    scored = target != -100
    assert torch.equal(shuffled[scored], inputs[scored]) and not torch.equal(shuffled, inputs)
    for row in range(4):
        assert sorted(shuffled[row][~scored[row]].tolist()) == sorted(inputs[row][~scored[row]].tolist())
    assert corrupt(inputs, target, "no_context", MASK, g).eq(MASK).all()
    with pytest.raises(ValueError, match="mode='bogus': must be one of intact, shuffled, no_context"):
        corrupt(inputs, target, "bogus", MASK, g)

    class Neighbour(torch.nn.Module):  # predicts token t+1 at every position from the token left of it
        config = EncoderConfig(vocab_size=V + 1, n_layers=1, d_model=8, n_heads=1, d_ff=8, max_len=64)

        def forward(self, x):
            return torch.roll(x, 1, dims=1)

        def mlm_nll(self, left, target):
            keep = target != -100
            logits = torch.full((int(keep.sum()), V + 1), -5.0)
            logits[torch.arange(len(logits)), (left[keep] + 1) % (V + 1)] = 5.0
            return torch.nn.functional.cross_entropy(logits, target[keep], reduction="none")

    counting = torch.arange(1, 33).repeat(4, 1)  # every token is its left neighbour + 1
    ppl = context_ppl(Neighbour(), [counting], mask_id=MASK)
    assert 10 * ppl["intact"] < ppl["shuffled"] and ppl["masked_tokens"] > 0  # (masked neighbours miss too)
