"""The fast CPU attention and dropout (layerdrop.models.ops) compute what PyTorch's reference kernels do."""

from __future__ import annotations

import pytest
import torch

from layerdrop.models import ops
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq


def _qkv(B=3, H=2, T=5, S=5, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g, requires_grad=True) for n in (T, S, S)]


@pytest.mark.parametrize("causal,pad,T,S", [(True, False, 5, 5), (False, True, 5, 7), (True, True, 5, 5),
                                            (False, False, 1, 6), (True, False, 3, 6)])
def test_fast_attention_equals_sdpa(causal, pad, T, S):
    key_pad = None
    if pad:
        key_pad = torch.zeros(3, S, dtype=torch.bool)
        key_pad[0, -2:] = True
        key_pad[2, -1:] = True
    outs = []
    for plain in (True, False):
        q, k, v = _qkv(T=T, S=S)
        with ops.plain() if plain else torch.enable_grad():
            y = ops.attention(q, k, v, key_pad=key_pad, causal=causal)
        y.square().sum().backward()
        outs.append((y.detach(), q.grad, k.grad, v.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fast_attention_masks_what_it_must():
    """Changing a padded key or a future key changes nothing; changing a visible key does."""
    q, k, v = (t.detach() for t in _qkv(T=4, S=4))
    base = ops.attention(q, k, v, causal=True)
    v2 = v.clone()
    v2[:, :, 3] += 10.0  # the last key: visible only to the last query
    moved = ops.attention(q, k, v2, causal=True)
    assert torch.equal(moved[:, :, :3], base[:, :, :3]) and not torch.allclose(moved[:, :, 3], base[:, :, 3])
    key_pad = torch.zeros(3, 4, dtype=torch.bool)
    key_pad[:, 3] = True
    assert torch.equal(ops.attention(q, k, v, key_pad=key_pad), ops.attention(q, k, v2, key_pad=key_pad))


def test_fast_dropout_drops_at_rate_p_and_scales_the_rest():
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    y = ops.dropout(x, 0.3, training=True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d y / d x is the same scaled mask
    assert ops.dropout(x, 0.3, training=False) is x and ops.dropout(x, 0.0, training=True) is x


def _loss_and_grads(model, batch_fn, plain: bool, bf16: bool):
    model.zero_grad(set_to_none=True)
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(3, seed=11)  # the same LayerDrop masks in both forms
    with ops.plain() if plain else torch.enable_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        loss = batch_fn(model)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("bf16", [False, True])
def test_fast_path_gives_the_eager_loss_and_gradients_with_layerdrop_on(bf16):
    """A whole training step of the LM and of the translation model: same loss and gradients, the
    same layers skipped (their parameters get no gradient at all), in fp32 and in bf16 autocast."""
    torch.manual_seed(0)
    lm = TransformerLM(LMConfig(vocab_size=50, n_layers=6, d_model=32, n_heads=4, d_ff=64, max_len=16,
                                dropout=0.0, attn_dropout=0.0, act_dropout=0.0, layerdrop=0.5)).train()
    x = torch.randint(0, 50, (4, 16))
    mt = TransformerSeq2Seq(Seq2SeqConfig(vocab_size=40, encoder_layers=4, decoder_layers=4, d_model=32, n_heads=4,
                                          d_ff=64, max_len=16, dropout=0.0, attn_dropout=0.0,
                                          encoder_layerdrop=0.5, decoder_layerdrop=0.5)).train()
    src, tgt = torch.randint(1, 40, (4, 9)), torch.randint(1, 40, (4, 7))
    src[0, -3:] = 0  # padding
    cases = [(lm, lambda m: m.nll(m(x), x).mean()),
             (mt, lambda m: torch.nn.functional.cross_entropy(m.logits(m(src, tgt)).float().flatten(0, 1),
                                                              tgt.flatten()))]
    tol = dict(atol=2e-2, rtol=2e-2) if bf16 else dict(atol=1e-5, rtol=1e-4)
    for model, fn in cases:
        ref_loss, ref = _loss_and_grads(model, fn, plain=True, bf16=bf16)
        loss, fast = _loss_and_grads(model, fn, plain=False, bf16=bf16)
        torch.testing.assert_close(loss, ref_loss, **tol)
        skipped = [n for n, g in ref.items() if g is None]
        assert skipped, "the draw should skip some layers"
        assert skipped == [n for n, g in fast.items() if g is None]
        for name, g in ref.items():
            if g is not None:
                torch.testing.assert_close(fast[name], g, **tol, msg=name)


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_blockwise_cross_entropy_equals_log_softmax_and_fairseq_smoothing(epsilon):
    """Loss, nll and gradient equal the fp32 log_softmax computation, across block boundaries
    (V=300 gives blocks of 873 rows; N=2000 spans three, the last one short)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2000, 300, generator=g, requires_grad=True)
    target = torch.randint(0, 300, (2000,), generator=g)
    weights = torch.rand(2000, generator=g)
    loss, nll = ops.cross_entropy(logits, target, epsilon)
    (loss * weights).sum().backward()
    fast_grad, logits.grad = logits.grad, None
    lprobs = logits.log_softmax(-1)
    ref_nll = -lprobs.gather(1, target[:, None]).squeeze(1)
    eps_i = epsilon / 299
    ref = (1 - epsilon - eps_i) * ref_nll + eps_i * -lprobs.sum(-1)  # fairseq's label_smoothed_nll_loss
    (ref * weights).sum().backward()
    torch.testing.assert_close(loss, ref.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nll, ref_nll.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast_grad, logits.grad, atol=1e-6, rtol=1e-5)
    assert not nll.requires_grad


@pytest.mark.parametrize("causal,pad", [(False, False), (False, True), (True, False), (True, True)])
def test_fast_attention_with_a_position_bias_equals_sdpa_with_a_float_mask(causal, pad):
    from layerdrop.models.encoder import alibi_bias

    key_pad = None
    if pad:
        key_pad = torch.zeros(3, 5, dtype=torch.bool)
        key_pad[0, -2:] = True
    bias = alibi_bias(2, 5)
    outs = []
    for plain in (True, False):
        q, k, v = _qkv()
        with ops.plain() if plain else torch.enable_grad():
            y = ops.attention(q, k, v, key_pad=key_pad, causal=causal, bias=bias)
        y.square().sum().backward()
        outs.append((y.detach(), q.grad, k.grad, v.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    q, k, v = (t.detach() for t in _qkv())
    assert not torch.allclose(ops.attention(q, k, v, key_pad=key_pad, causal=causal, bias=bias),
                              ops.attention(q, k, v, key_pad=key_pad, causal=causal))  # the bias is applied
