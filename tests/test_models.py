"""Model shapes, adaptive softmax normalisation, and the paper-scale parameter counts."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from layerdrop.models.adaptive import AdaptiveInput, TiedAdaptiveSoftmax
from layerdrop.models.lm import LMConfig, TransformerLM
from layerdrop.models.ops import dropout
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


def _adaptive_softmax(dropout: float) -> TiedAdaptiveSoftmax:
    torch.manual_seed(0)
    return TiedAdaptiveSoftmax(AdaptiveInput(100, 16, [10, 40], factor=2.0), dropout)


BAND_TARGETS = torch.tensor([0, 9, 10, 39, 40, 99, 5, 50])  # bands [0,10), [10,40), [40,100)


def test_adaptive_softmax_dropout_drops_the_head_input_too():
    # Dropping everything leaves zero logits: the head is uniform over its 10 words + 2 clusters, and
    # each tail uniform over its band. Were the head's input kept, head scores would not be uniform.
    sm = _adaptive_softmax(dropout=1.0).train()
    nll = sm.nll(torch.randn(8, 16), BAND_TARGETS)
    head, band_sizes = math.log(12), {0: 0.0, 1: math.log(30), 2: math.log(60)}
    expected = [head + band_sizes[int(t >= 10) + int(t >= 40)] for t in BAND_TARGETS]
    assert torch.allclose(nll, torch.tensor(expected), atol=1e-5)


def test_adaptive_softmax_dropout_order_matches_a_manual_computation():
    sm, h, p = _adaptive_softmax(dropout=0.3).train(), torch.randn(8, 16), 0.3
    emb, proj = sm.inp[0].embeddings, sm.inp[0].projections
    torch.manual_seed(7)
    nll = sm.nll(h, BAND_TARGETS)
    # By hand, drawing from the RNG in fairseq's order: the input once, then each tail that occurs.
    torch.manual_seed(7)
    hd = dropout(h, p, training=True)
    head = torch.cat([hd @ emb[0].weight.t(), hd @ sm.cluster.weight.t()], -1).log_softmax(-1)
    expected = torch.empty(8)
    tails = [BAND_TARGETS < 10, (BAND_TARGETS >= 10) & (BAND_TARGETS < 40), BAND_TARGETS >= 40]
    expected[tails[0]] = -head[tails[0], BAND_TARGETS[tails[0]]]
    for i, start in ((1, 10), (2, 40)):
        z = dropout(hd[tails[i]] @ proj[i].weight, p, training=True)
        tail = (z @ emb[i].weight.t()).log_softmax(-1)
        cluster = head[tails[i], 10 + i - 1]
        in_tail = (BAND_TARGETS[tails[i]] - start)[:, None]
        expected[tails[i]] = -cluster - tail.gather(1, in_tail).squeeze(1)
    assert torch.allclose(nll, expected, atol=1e-5)
    # In eval mode nothing is dropped: the same computation without dropout, and log_probs agree.
    sm.eval()
    full = torch.cat([h @ emb[0].weight.t(), h @ sm.cluster.weight.t()], -1).log_softmax(-1)
    assert torch.allclose(sm.nll(h[:2], BAND_TARGETS[:2]), -full[torch.arange(2), BAND_TARGETS[:2]], atol=1e-5)
    lp = sm.log_probs(h)
    assert torch.allclose(sm.nll(h, BAND_TARGETS), -lp[torch.arange(8), BAND_TARGETS], atol=1e-5)


class _DevicesSeen(TorchDispatchMode):
    """Records the device of every tensor that any aten op receives or returns."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[str, str]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves((args, kwargs, out)):
            if isinstance(t, torch.Tensor):
                self.seen.add((func.__name__, t.device.type))
        return out


try:
    import torch.fx.experimental._config as fx_config
except ImportError:  # older torch: the meta-device check below is skipped
    fx_config = None


@pytest.mark.skipif(not hasattr(fx_config, "meta_nonzero_assume_all_nonzero"), reason="torch too old")
def test_adaptive_softmax_creates_no_tensor_off_the_input_device():
    # On the meta device (nonzero assumed all-true), any CPU tensor built inside nll/log_probs
    # shows up in an op; on a GPU such a tensor is a device-mismatch crash.
    sm = _adaptive_softmax(dropout=0.1).train().to("meta")
    sm.inp[0].to("meta")
    h, target = torch.randn(8, 16, device="meta"), BAND_TARGETS.to("meta")
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True), _DevicesSeen() as mode:
        sm.nll(h, target)
        sm.log_probs(h)
    assert {op for op, device in mode.seen if device != "meta"} == set()


def test_nll_ignores_padding_and_backward_reaches_kept_layers_only():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=30, n_layers=4, d_model=16, n_heads=2, d_ff=32, max_len=6, layerdrop=0.5)
    model = TransformerLM(cfg).train()
    # a synchronised draw that keeps some layers and drops others (else the check below is vacuous)
    draw = next(d for d in range(100) if model.layers.set_draw(d) or len(set(model.layers.sample_keep())) == 2)
    model.layers.set_draw(draw)
    x = torch.randint(0, 30, (2, 6))
    target = x.clone()
    target[:, -2:] = -100
    nll = model.nll(model(x), target)
    assert (nll[:, -2:] == 0).all() and (nll[:, :-2] > 0).all()
    nll.sum().backward()
    assert any(model.layers.last_keep) and not all(model.layers.last_keep)
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


def test_the_params_command_takes_help_as_a_flag_and_overrides_as_words(capsys):
    from layerdrop.params import main

    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0 and "Hydra overrides" in capsys.readouterr().out
    main(["experiment=table2_lm", "scale=paper"])
    assert "table2_lm [paper] lm: 246,933,504 parameters" in capsys.readouterr().out
