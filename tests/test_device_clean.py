"""Every model, LayerDrop path and the beam search create no tensor on an implicit device inside
forward, loss, backward or generation (see device_check.py); on a GPU such a tensor lands on the CPU."""

import pytest
import torch
from device_check import ImplicitDeviceTensor, device_clean

from layerdrop.lit.seq2seq import label_smoothed_nll
from layerdrop.models.generate import beam_search, greedy_search
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.seq2seq import Seq2SeqConfig, TransformerSeq2Seq

LM_PATHS = {
    "plain": {},
    "fixed layerdrop": {"layerdrop": 0.5},
    "per-layer rates": {"layerdrop": [0.1, 0.5, 0.5, 0.1]},
    "learned rates": {"layerdrop": 0.5, "layerdrop_learned": True},
    "sub-layers": {"sublayer_drop": 0.5},
    "heads": {"head_drop": 0.5},
    "heads + layers": {"head_drop": 0.3, "layerdrop": 0.3},
    "adaptive softmax, post-norm": {"adaptive": True, "cutoffs": [20, 40], "adaptive_dropout": 0.2,
                                    "pre_norm": False, "final_norm": False, "layerdrop": 0.5},
}


def lm(**kw) -> TransformerLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=64, n_layers=4, d_model=16, n_heads=4, d_ff=32, max_len=16, dropout=0.1,
               attn_dropout=0.1, act_dropout=0.1)
    return TransformerLM(LMConfig(**{**cfg, **kw}))


@pytest.mark.parametrize("synced", [True, False], ids=["synced draws", "global rng"])
@pytest.mark.parametrize("path", list(LM_PATHS))
def test_lm_forward_loss_backward_is_device_clean(path, synced):
    model = lm(**LM_PATHS[path]).train()
    tokens = torch.randint(0, 64, (3, 12))
    target = torch.randint(0, 64, (3, 12))
    target[0, :3] = -100
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(7 if synced else None, seed=1)
    with device_clean():
        model.nll(model(tokens), target).sum().backward()
        model.eval()
        model.log_probs(model(tokens))


def test_translation_training_and_generation_are_device_clean():
    torch.manual_seed(0)
    model = TransformerSeq2Seq(Seq2SeqConfig(vocab_size=40, encoder_layers=3, decoder_layers=3, d_model=16,
                                             n_heads=2, d_ff=32, max_len=64, pre_norm=False,
                                             encoder_layerdrop=0.5, decoder_layerdrop=0.5, head_drop=0.2))
    src = torch.randint(4, 40, (3, 7))
    src[0, 5:] = 0
    tgt = torch.randint(4, 40, (3, 6))
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(3, seed=1)
    with device_clean():
        logits = model.logits(model(src, tgt))
        loss, _, _ = label_smoothed_nll(logits.view(-1, 40), tgt.view(-1), 0.1)
        loss.backward()
        model.eval()
        beam_search(model, src, bos=1, eos=2, beam=3, max_len_a=1.0, max_len_b=3, min_len=2)
        beam_search(model, src, bos=1, eos=2, beam=3, max_len_a=1.0, max_len_b=6, no_repeat_ngram=2)
        greedy_search(model, src, bos=1, eos=2, max_len_b=5)


def test_the_check_catches_a_tensor_made_on_the_implicit_device():
    x = torch.ones(3)
    with pytest.raises(ImplicitDeviceTensor, match="without a named device"), device_clean():
        x + torch.tensor([1.0, 2.0, 3.0])
    with device_clean():
        x + torch.tensor([1.0, 2.0, 3.0], device=x.device)
