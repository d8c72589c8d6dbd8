"""Model shapes, adaptive softmax normalisation, and the paper-scale parameter counts."""

import pytest
import torch

from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.params import count_for


def test_adaptive_softmax_is_a_distribution_and_nll_matches_it():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=100, n_layers=2, d_model=16, n_heads=2, d_ff=32, max_len=12, dropout=0.0,
                   adaptive=True, cutoffs=[10, 40], final_norm=False)
    model = TransformerLM(cfg).eval()
    x = torch.randint(0, 100, (2, 12))
    h = model(x)
    lp = model.log_probs(h)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(2, 12), atol=1e-5)
    target = torch.tensor([[0, 9, 10, 39, 40, 99] * 2] * 2)
    nll = model.nll(h, target)
    assert torch.allclose(nll, -lp.gather(-1, target[..., None]).squeeze(-1), atol=1e-5)


def test_nll_ignores_padding_and_backward_reaches_kept_layers_only():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=30, n_layers=4, d_model=16, n_heads=2, d_ff=32, max_len=6, layerdrop=0.5)
    model = TransformerLM(cfg).train()
    x = torch.randint(0, 30, (2, 6))
    target = x.clone()
    target[:, -2:] = -100
    nll = model.nll(model(x), target)
    assert (nll[:, -2:] == 0).all() and (nll[:, :-2] > 0).all()
    nll.sum().backward()
    for layer, kept in zip(model.layers._modules.values(), model.layers.last_keep):
        assert (layer.ffn.fc1.weight.grad is not None) == kept


def test_too_long_input_is_refused():
    model = TransformerLM(LMConfig(vocab_size=10, n_layers=1, d_model=8, n_heads=2, d_ff=8, max_len=4))
    with pytest.raises(ValueError, match="sequence length 5 exceeds the model's max_len=4"):
        model(torch.zeros(1, 5, dtype=torch.long))


@pytest.mark.parametrize("experiment, paper", [("table2_lm", 247e6), ("table2_lm_deep", 423e6)])
def test_paper_scale_parameter_counts_match_the_paper(experiment, paper):
    n = count_for([f"experiment={experiment}", "scale=paper"])
    assert abs(n - paper) / paper < 0.01
    if experiment == "table2_lm":
        assert n == 246_933_504  # fairseq's exact count for transformer_lm_wiki103
