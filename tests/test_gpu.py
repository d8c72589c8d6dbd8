"""The paper-scale code paths on a CUDA device, in the paper's precision (fp16 mixed precision with a
loss scaler): a width-shrunk copy of each paper model trains a few steps, evaluates, is pruned every
other layer, saved and reloaded. Skipped without CUDA (CI never has one); `make bench-gpu` runs them
where a GPU is and writes what they measured to results/bench/gpu.md."""

import pytest
import torch

from layerdrop.config import load_config
from layerdrop.lit.seq2seq import label_smoothed_nll
from layerdrop.models.checkpoint import load_model, save_model
from layerdrop.models.generate import beam_search
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.train import model_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SHRINK = {"d_model": 64, "n_heads": 4, "d_ff": 128}


def paper_model(experiment: str, **extra):
    """The experiment's paper-scale model with its width shrunk (every architecture flag kept)."""
    from hydra.utils import get_class

    cfg = load_config([f"experiment={experiment}", "scale=paper"])
    model = {**model_config(cfg), **SHRINK, **extra}
    if model.get("adaptive"):
        model.update(vocab_size=3000, cutoffs=[500, 1500], max_len=256)
    else:
        model.update(vocab_size=1000, max_len=256)
    return get_class(cfg.task.lit_module)(model=model).model.cuda()


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_reloads(model, path, *inputs) -> None:
    """Saved and loaded back onto the GPU: the same weights, and the same outputs on ``inputs`` (cuBLAS may
    pick another reduction order for other buffers: 1e-5 seen)."""
    save_model(path, model)
    again, _ = load_model(path)
    again = again.cuda()
    assert_same_weights(again, model)
    with torch.no_grad():
        torch.testing.assert_close(again(*inputs), model(*inputs), rtol=1e-4, atol=1e-4)


def fp16_steps(model, loss_fn, steps: int = 4) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cuda")
    losses = []
    model.train()
    for step in range(steps):
        for m in model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(step, seed=1)
        with torch.autocast("cuda", dtype=torch.float16):
            loss = loss_fn(model)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        losses.append(float(loss))
    return losses


@pytest.mark.parametrize("experiment,extra", [("table2_lm", {}), ("table2_lm", {"layerdrop_learned": True}),
                                              ("table2_lm_deep", {})])
def test_paper_lm_trains_in_fp16_evaluates_prunes_and_reloads(experiment, extra, tmp_path):
    model = paper_model(experiment, **extra)
    tokens = torch.randint(0, 3000, (2, 129), device="cuda")

    def loss(m):
        return m.nll(m(tokens[:, :-1]), tokens[:, 1:]).mean()

    losses = fp16_steps(model, loss)
    assert all(torch.isfinite(torch.tensor(losses)))
    model.eval()
    n = model.config.n_layers
    keep = layers_to_keep("every_other", n, n // 2)
    pruned = prune_model(model, {"decoder": keep})
    with torch.no_grad():
        full_lp = model.log_probs(model(tokens[:, :-1]))
        assert torch.allclose(full_lp.exp().sum(-1), torch.ones_like(full_lp[..., 0]), atol=1e-3)
    assert_reloads(pruned, tmp_path / "pruned.pt", tokens[:, :-1])


@pytest.mark.parametrize("experiment", ["table1_mt", "table1_mt_deep"])
def test_paper_transformer_big_trains_in_fp16_beam_searches_prunes_and_reloads(experiment, tmp_path):
    model = paper_model(experiment, encoder_layerdrop=0.2, decoder_layerdrop=0.2)
    src = torch.randint(4, 1000, (3, 20), device="cuda")
    tgt = torch.randint(4, 1000, (3, 16), device="cuda")

    def loss(m):
        logits = m.logits(m(src, tgt[:, :-1]))
        total, _, n = label_smoothed_nll(logits.reshape(-1, 1000), tgt[:, 1:].reshape(-1), 0.1)
        return total / n

    assert all(torch.isfinite(torch.tensor(fp16_steps(model, loss))))
    model.eval()
    pruned = prune_model(model, {"decoder": layers_to_keep("every_other", 6, 3)})
    with torch.autocast("cuda", dtype=torch.float16):
        hyps = beam_search(pruned, src, bos=1, eos=2, beam=4, lenpen=0.6, max_len_a=0, max_len_b=12)
    assert len(hyps) == 3 and all(1 <= len(h[0].tokens) + 1 <= 12 for h in hyps)
    assert_reloads(pruned, tmp_path / "mt.pt", src, tgt)


@pytest.mark.parametrize("experiment", ["table3_sum", "table3_qa"])
def test_paper_table3_models_train_in_fp16_and_generate_with_their_blocking_on_the_gpu(experiment, tmp_path):
    """Summarisation (Transformer base) and long-form QA (Transformer Big) as the paper configures them:
    fp16 steps, then the task's own generation settings (beam, minimum length, 3-gram blocking) on CUDA,
    on the full model and on the model pruned to every other decoder layer."""
    from layerdrop.models.generate import Generator

    cfg = load_config([f"experiment={experiment}", "scale=paper"])
    model = paper_model(experiment)
    src = torch.randint(4, 1000, (3, 40), device="cuda")
    src[1, 30:] = 0  # a padded source
    tgt = torch.randint(4, 1000, (3, 24), device="cuda")

    def loss(m):
        logits = m.logits(m(src, tgt[:, :-1]))
        total, _, n = label_smoothed_nll(logits.reshape(-1, 1000), tgt[:, 1:].reshape(-1), 0.1)
        return total / n

    assert all(torch.isfinite(torch.tensor(fp16_steps(model, loss))))
    model.eval()
    gen = cfg.generate
    generate = Generator(bos=1, eos=2, beam=gen.beam, lenpen=gen.lenpen, max_len_a=gen.max_len_a,
                         max_len_b=gen.max_len_b, min_len=gen.min_len, no_repeat_ngram=gen.no_repeat_ngram)
    n = gen.no_repeat_ngram
    assert n == 3 and gen.min_len >= 50
    decoders = len(model.decoder)
    pruned = prune_model(model, {"decoder": layers_to_keep("every_other", decoders, decoders // 2)})
    for m in (model, pruned):
        with torch.autocast("cuda", dtype=torch.float16):
            outputs = generate(m, src)
        assert len(outputs) == 3
        for tokens in outputs:
            body = [t for t in tokens if t != 2]
            assert gen.min_len <= len(body) + 1 <= gen.max_len_b
            grams = [tuple(body[i : i + n]) for i in range(len(body) - n + 1)]
            assert len(grams) == len(set(grams)), "a repeated n-gram got through the blocking"
    assert_reloads(pruned, tmp_path / "pruned.pt", src, tgt)


@pytest.mark.parametrize("experiment", ["pretrain_mlm", "pretrain_mlm_deep"])
def test_paper_encoder_pretrains_in_fp16_masks_on_the_gpu_prunes_and_reloads(experiment, tmp_path):
    """RoBERTa (base; 48 layers at LayerDrop 0.5), width-shrunk: dynamic masks drawn on the GPU, fp16 steps
    with a loss scaler, fixed evaluation masks, every-other pruning of the encoder, save and reload."""
    from layerdrop.lit.mlm import MLMLitModule

    cfg = load_config([f"experiment={experiment}", "scale=paper"])
    model = {**model_config(cfg), **SHRINK, "vocab_size": 1001, "max_len": 64}
    lit = MLMLitModule(model=model).cuda()
    tokens = torch.randint(1, 1000, (4, 64), device="cuda")

    def loss(m):
        inputs, target = lit._mask(tokens)
        assert inputs.is_cuda and target.is_cuda
        return m.mlm_nll(m(inputs), target).mean()

    assert all(torch.isfinite(torch.tensor(fp16_steps(lit.model, loss))))
    encoder = lit.model.eval()
    n = encoder.config.n_layers
    pruned = prune_model(encoder, {"encoder": layers_to_keep("every_other", n, n // 2)})
    generator = torch.Generator(device="cuda").manual_seed(0)
    inputs, target = lit._mask(tokens, generator)
    with torch.no_grad():
        assert torch.isfinite(pruned.mlm_nll(pruned(inputs), target)).all()
    assert_reloads(pruned, tmp_path / "encoder.pt", inputs)


def test_an_interrupted_fp16_run_resumes_mid_epoch_on_the_gpu_and_ends_as_if_never_stopped(smoke_overrides, tmp_path,
                                                                                         monkeypatch):
    """tests/test_train.py's crash and resume, on CUDA in the paper's 16-mixed precision through ``train(cfg)``:
    the run crashes at step 9 with a checkpoint at step 8; resumed, it trains only steps 8-11 on the same
    batches, and ends with the weights of a run never stopped. The checkpoint must carry the loss scaler
    too: a scaler reset to its initial scale skips steps on overflow that the uninterrupted run took. Close,
    not bit-equal: CUDA's atomic reductions (embedding backward) may add in another order."""
    from resume_check import crash_at

    from layerdrop.train import train
    from layerdrop.utils import runs

    overrides = [*smoke_overrides, "data.max_train_tokens=2000", "trainer.max_steps=12", "checkpoint_every=4",
                 "trainer.accelerator=gpu", "trainer.precision=16-mixed", "optim.optimizer.fused=false",
                 "layerdrop.p=0.3", "prune.strategies=[]", "prune.splits=[valid]"]
    cfg = load_config(overrides)

    def on_the_gpu(batch):
        assert batch["input"].is_cuda

    seen, crash = crash_at(monkeypatch, 9, on_the_gpu)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    run_dir = runs.run_dir(cfg)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 8 and last.get("MixedPrecision"), sorted(last)  # the loss scaler's state is saved
    first, crash[0] = len(seen), False
    record = train(cfg)
    assert record["train"]["resumed"] is True and record["train"]["steps"] == 12
    assert [s for s, _ in seen[first:]] == [8, 9, 10, 11]
    resumed_batches = [b for _, b in seen[first:]]
    seen.clear()
    again = load_config([*overrides, f"paths.runs_dir={tmp_path}/again", f"paths.records_dir={tmp_path}/again-records"])
    train(again)
    assert [s for s, _ in seen] == list(range(12)) and resumed_batches == [b for _, b in seen[8:]]
    a = torch.load(run_dir / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(runs.run_dir(again) / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
