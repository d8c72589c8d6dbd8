"""Translation: encoder-decoder model, incremental decoding, beam search, per-side pruning, BLEU, loss."""

import itertools
import math
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from layerdrop.lit.seq2seq import label_smoothed_nll
from layerdrop.metrics.bleu import compound_split, detok_bleu, tokenized_bleu
from layerdrop.models.generate import beam_search, greedy_search
from layerdrop.models.layerdrop import LayerDropList
from layerdrop.models.pruning import prune_model
from layerdrop.models.seq2seq import DecoderState, Seq2SeqConfig, TransformerSeq2Seq

PAD, EOS, BOS = 0, 1, 2


def tiny(vocab=40, enc=2, dec=3, pre_norm=True, seed=0, **kw) -> TransformerSeq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=vocab, encoder_layers=enc, decoder_layers=dec, d_model=32, n_heads=4, d_ff=64,
                        max_len=64, pre_norm=pre_norm, pad_id=PAD, dropout=0.0, attn_dropout=0.0, **kw)
    return TransformerSeq2Seq(cfg).eval()


def sources(vocab=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (5, 9), generator=g)
    src[1, 6:] = PAD  # padded sentences in the batch
    src[3, 4:] = PAD
    return src


@pytest.mark.parametrize("pre_norm", [True, False])
def test_incremental_decoding_gives_the_full_forward_logits(pre_norm):
    model, src = tiny(pre_norm=pre_norm), sources()
    tgt = torch.randint(3, 40, (5, 11))
    full = model.logits(model(src, tgt))
    memory, src_pad = model.encode(src)
    state = DecoderState(len(model.decoder), capacity=4)  # too small: the cache grows on the way
    steps = [model.logits(model.decode(tgt[:, t : t + 1], memory, src_pad, state)) for t in range(tgt.size(1))]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert state.length == tgt.size(1)  # one position cached per step: linear cost per token
    state = DecoderState(len(model.decoder))  # a whole prefix first, then one position at a time
    steps = [model.logits(model.decode(tgt[:, :4], memory, src_pad, state))]
    steps += [model.logits(model.decode(tgt[:, t : t + 1], memory, src_pad, state)) for t in range(4, tgt.size(1))]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="one position at a time"):
        model.decode(tgt[:, :2], memory, src_pad, state)


def test_beam_one_is_greedy():
    model, src = tiny(), sources()
    greedy = greedy_search(model, src, bos=BOS, eos=EOS, max_len_b=12)
    beam = beam_search(model, src, bos=BOS, eos=EOS, beam=1, lenpen=0.6, max_len_b=12)
    assert [h[0].tokens for h in beam] == greedy


def sequence_score(model, src_row, tokens, lenpen):
    """Teacher-forced log-probability of tokens + <eos>, length-normalised like the beam search."""
    tgt_in = torch.tensor([[BOS, *tokens]])
    with torch.no_grad():
        lp = model.logits(model(src_row[None], tgt_in)).float().log_softmax(-1)[0]
    target = [*tokens, EOS]
    total = sum(float(lp[i, t]) for i, t in enumerate(target))
    return total / len(target) ** lenpen, total


@pytest.mark.parametrize("lenpen,ngram", [(0.0, 0), (0.6, 0), (1.5, 0), (0.6, 1), (1.0, 2)])
def test_beam_search_finds_the_exact_best_sequence_when_everything_fits_in_the_beam(lenpen, ngram):
    """Vocabulary of 4 real tokens, at most 3 of them: 1 + 4 + 16 + 64 = 85 sequences. A beam of 85
    holds every prefix, so the search is exhaustive and must return the best-scoring sequence; with
    n-gram blocking, the best of those that repeat no n-gram."""
    vocab = 7  # pad, eos, bos + 4 tokens
    model = tiny(vocab=vocab, seed=3)
    src = torch.tensor([[3, 4, 5, 6, 3], [6, 6, 5, PAD, PAD]])
    content = [3, 4, 5, 6]
    for row in range(2):
        scored = [(sequence_score(model, src[row], list(seq), lenpen), list(seq))
                  for n in range(4) for seq in itertools.product(content, repeat=n)
                  if not (ngram and len(seq) - ngram + 1 > len({seq[i : i + ngram] for i in range(len(seq) - ngram + 1)}))]
        (best_score, best_lp), best = max(scored, key=lambda x: x[0][0])
        hyp = beam_search(model, src[row : row + 1], bos=BOS, eos=EOS, beam=85, lenpen=lenpen, max_len_a=0,
                          max_len_b=4, no_repeat_ngram=ngram)[0][0]
        assert ngram == 0 or len(scored) < 85
        assert hyp.tokens == best
        assert hyp.score == pytest.approx(best_score, abs=1e-4) and hyp.log_prob == pytest.approx(best_lp, abs=1e-4)


def test_beam_search_respects_max_length_and_never_emits_pad_or_bos():
    model, src = tiny(), sources()
    for hyps in beam_search(model, src, bos=BOS, eos=EOS, beam=4, max_len_a=0.5, max_len_b=3, n_best=4):
        assert len(hyps) == 4 and [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert PAD not in h.tokens and BOS not in h.tokens and EOS not in h.tokens
    src_lens = src.ne(PAD).sum(1)
    for hyps, n in zip(beam_search(model, src, bos=BOS, eos=EOS, beam=3, max_len_a=0.5, max_len_b=3), src_lens):
        assert len(hyps[0].tokens) + 1 <= int(0.5 * n + 3)


@pytest.mark.parametrize("bad", [dict(beam=0), dict(lenpen=-1.0), dict(max_len_b=0), dict(n_best=3, beam=2)])
def test_bad_generation_settings_fail_clearly(bad):
    with pytest.raises(ValueError, match="beam|length|max length|n_best"):
        beam_search(tiny(), sources(), bos=BOS, eos=EOS, **bad)
    with pytest.raises(ValueError, match="eval mode"):
        beam_search(tiny().train(), sources(), bos=BOS, eos=EOS)


def test_source_longer_than_the_model_fails_with_the_lengths():
    model = tiny()
    with pytest.raises(ValueError, match="sequence length 70 exceeds the model's max_len=64"):
        model.encode(torch.randint(3, 40, (1, 70)))


def _run_on_layers(model, enc_keep, dec_keep, src, tgt):
    """The full model with its stacks restricted to the given layers (no copying, no renumbering)."""
    enc, dec = model.encoder, model.decoder
    model.encoder = LayerDropList([enc[i] for i in enc_keep])
    model.decoder = LayerDropList([dec[i] for i in dec_keep])
    try:
        return model.logits(model(src, tgt))
    finally:
        model.encoder, model.decoder = enc, dec


@pytest.mark.parametrize("side", ["decoder", "encoder"])
def test_pruning_one_side_keeps_every_layer_of_the_other(side):
    model, src = tiny(enc=4, dec=4), sources()
    tgt = torch.randint(3, 40, (5, 7))
    keep = [0, 2]
    pruned = prune_model(model, {side: keep})
    other = "encoder" if side == "decoder" else "decoder"
    assert len(getattr(pruned, side)) == 2 and len(getattr(pruned, other)) == 4
    full_state, pruned_state = model.state_dict(), pruned.state_dict()
    for key, value in full_state.items():  # the other side (and embeddings) are untouched
        if not key.startswith(f"{side}."):
            assert torch.equal(pruned_state[key], value), key
    enc_keep, dec_keep = (range(4), keep) if side == "decoder" else (keep, range(4))
    torch.testing.assert_close(pruned.logits(pruned(src, tgt)), _run_on_layers(model, enc_keep, dec_keep, src, tgt))


def test_generation_runs_the_kept_decoder_layers_and_nothing_else():
    model, src = tiny(dec=4), sources()
    pruned = prune_model(model, {"decoder": [1, 3]})
    calls = []
    hooks = [layer.register_forward_hook(lambda m, i, o, n=n: calls.append(n)) for n, layer in
             [(f"full{i}", layer) for i, layer in enumerate(model.decoder)]
             + [(f"pruned{i}", layer) for i, layer in enumerate(pruned.decoder)]]
    beam_search(pruned, src, bos=BOS, eos=EOS, beam=2, max_len_b=4)
    for h in hooks:
        h.remove()
    assert set(calls) == {"pruned0", "pruned1"}  # the full model's layers never run


def test_encoder_and_decoder_draw_their_own_layerdrop_masks():
    model = tiny(enc=6, dec=6, encoder_layerdrop=0.5, decoder_layerdrop=0.5).train()
    for m in model.modules():
        if hasattr(m, "set_draw"):
            m.set_draw(7, seed=1)
    model(sources(), torch.randint(3, 40, (5, 5)))
    enc, dec = model.encoder.last_keep, model.decoder.last_keep
    assert enc != dec  # different salts: the stacks' masks are independent (seeded: fixed here)
    model(sources(), torch.randint(3, 40, (5, 5)))
    assert model.encoder.last_keep == enc and model.decoder.last_keep == dec  # same draw index, same masks


@pytest.mark.parametrize("pre_norm", [True, False])
def test_a_layerdrop_training_step_is_the_pruned_model_on_the_kept_layers(pre_norm):
    """With LayerDrop on both stacks, a training step's loss and every gradient equal those of the model pruned
    to the layers that step kept (dropout off): the skipped layers change nothing but what runs."""
    model = tiny(enc=6, dec=6, pre_norm=pre_norm, encoder_layerdrop=0.5, decoder_layerdrop=0.5).train()
    src, tgt = sources(), torch.randint(3, 40, (5, 7))
    seen = set()
    for draw in range(6):
        for m in model.modules():
            if hasattr(m, "set_draw"):
                m.set_draw(draw, seed=3)
        model.zero_grad()
        model.logits(model(src, tgt)).log_softmax(-1)[..., 5].sum().backward()
        keep = {side: [i for i, k in enumerate(getattr(model, side).last_keep) if k] for side in ("encoder", "decoder")}
        seen.add((len(keep["encoder"]), len(keep["decoder"])))
        pruned = prune_model(model, keep).train()
        for stack in (pruned.encoder, pruned.decoder):
            stack.rates = [0.0] * len(stack)
        pruned.zero_grad()
        pruned.logits(pruned(src, tgt)).log_softmax(-1)[..., 5].sum().backward()
        names = {f"{side}.{new}.": f"{side}.{old}." for side, kept in keep.items() for new, old in enumerate(kept)}
        for name, p in pruned.named_parameters():
            prefix = next((k for k in names if name.startswith(k)), None)
            source = dict(model.named_parameters())[names[prefix] + name[len(prefix):] if prefix else name]
            torch.testing.assert_close(p.grad, source.grad, atol=1e-6, rtol=1e-5, msg=name)
        for side, kept in keep.items():  # the layers the step skipped got no gradient (iterating the stack
            for i, layer in enumerate(getattr(model, side)._modules.values()):  # itself would draw a new mask)
                assert (i in kept) == any(q.grad is not None for q in layer.parameters())
    assert len(seen) > 2  # several different masks were compared


def test_label_smoothing_is_fairseqs_and_reduces_to_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(6, 10), torch.tensor([1, 2, 3, -100, 4, 5])
    loss, nll, n = label_smoothed_nll(logits, target, 0.0)
    keep = target != -100
    assert int(n) == 5
    torch.testing.assert_close(loss, F.cross_entropy(logits[keep], target[keep], reduction="sum"))
    loss, nll, _ = label_smoothed_nll(logits, target, 0.1)
    lp = logits[keep].log_softmax(-1)
    q = torch.full_like(lp, 0.1 / 9)  # fairseq: the target gets 1 - eps, each other class eps / (V - 1)
    q[torch.arange(5), target[keep]] = 0.9
    torch.testing.assert_close(loss, -(q * lp).sum())
    torch.testing.assert_close(nll, F.cross_entropy(logits[keep], target[keep], reduction="sum"))


HYPS = ["Der Hund läuft schnell über die Straße.", "Öffnen Sie das Dialogfeld Drucken.",
        "Ein Text-Feld ist leer", "Klicken Sie auf OK, um die Änderungen zu speichern.", "Hallo Welt"]
REFS = ["Der Hund rennt schnell über die Straße.", "Öffnen Sie den Dialog Drucken.",
        "Das Text-Feld ist leer.", "Klicken Sie auf OK, um Ihre Änderungen zu speichern.", "Hallo, Welt!"]


def test_bleu_matches_sacrebleus_own_command_line(tmp_path):
    (tmp_path / "hyp.txt").write_text("\n".join(HYPS) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(REFS) + "\n")
    out = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-b", "-w", "4"], capture_output=True, text=True, check=True)
    assert float(out.stdout.strip()) == pytest.approx(detok_bleu(HYPS, REFS), abs=1e-4)
    assert detok_bleu(REFS, REFS) == pytest.approx(100.0)


def test_tokenized_bleu_splits_compounds_like_fairseqs_script():
    line = "Ein Text-Feld, ein Daten-Bank-System und -5 oder a- b"
    if shutil.which("perl"):  # the very regex of fairseq's compound_split_bleu.sh
        perl = subprocess.run(["perl", "-ple", r"s{(\S)-(\S)}{$1 ##AT##-##AT## $2}g"], input=line + "\n",
                              capture_output=True, text=True, check=True).stdout.strip()
        assert compound_split(line) == perl
    assert compound_split("Text-Feld") == "Text ##AT##-##AT## Feld"
    # a wrong compound is penalised more once split (more n-grams differ), so the two columns differ
    assert tokenized_bleu(HYPS, REFS) != detok_bleu(HYPS, REFS)
    with pytest.raises(ValueError, match="2 hypotheses, 1 references"):
        detok_bleu(["a", "b"], ["a"])


def test_checkpoint_averaging_is_the_mean_of_the_files(tmp_path):
    from layerdrop.models.checkpoint import average_into, checkpoint_step

    models = [tiny(seed=s) for s in range(3)]
    paths = []
    for i, m in enumerate(models):
        path = tmp_path / f"step={10 * (i + 1)}.ckpt"
        torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()}}, path)
        paths.append(path)
    target = tiny(seed=9)
    average_into(target, paths)
    key = "decoder.1.ffn.fc1.weight"
    mean = sum(m.state_dict()[key] for m in models) / 3
    torch.testing.assert_close(target.state_dict()[key], mean)
    assert [checkpoint_step(p) for p in paths] == [10, 20, 30]
    with pytest.raises(ValueError, match="at least one"):
        average_into(target, [])


def test_token_batches_are_sharded_by_rank_under_ddp(monkeypatch):
    import numpy as np

    from layerdrop.data import batches, mt

    lens = np.random.default_rng(0).integers(2, 30, size=500)
    sampler = mt.TokenBatchSampler(lens, lens, max_tokens=256, shuffle=True, seed=0, shard=True)
    everything = sampler.batches()
    shards = []
    for rank in range(3):
        monkeypatch.setattr(batches, "rank_world", lambda r=rank: (r, 3))
        shards.append(list(sampler))
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    seen = [tuple(b) for s in shards for b in s]
    assert len(seen) == len(set(seen)) and len(seen) >= len(everything) - 2  # disjoint, nearly all
    eval_sampler = mt.TokenBatchSampler(lens, lens, max_tokens=256, shuffle=False)
    assert sum(len(b) for b in eval_sampler) == 500  # evaluation is never sharded


def test_sequence_score_helper_is_consistent_with_beam_log_probs():
    model, src = tiny(vocab=7, seed=3), torch.tensor([[3, 4, 5]])
    hyp = beam_search(model, src, bos=BOS, eos=EOS, beam=2, lenpen=1.0, max_len_a=0, max_len_b=5)[0][0]
    score, lp = sequence_score(model, src[0], hyp.tokens, 1.0)
    assert hyp.log_prob == pytest.approx(lp, abs=1e-4) and math.isfinite(score)


def test_tiny_translation_run_end_to_end_on_the_offline_corpus(tmp_path, caplog):
    """Train a tiny model a few steps on the real Debian en-de corpus, average its checkpoints,
    evaluate the decoder pruned to every depth by beam search + BLEU, then prune the encoder
    without retraining."""
    from layerdrop.config import load_config
    from layerdrop.train import train
    from layerdrop.utils import runs

    overrides = ["experiment=table1_mt", "debug=smoke_mt", "generate.max_len_a=0", "generate.max_len_b=5",
                 "generate.max_sentences=300",
                 f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs"]
    cfg = load_config(overrides)
    record = train(cfg)
    assert record["task"] == "mt" and record["train"]["steps"] == 6
    assert record["train"]["averaged_checkpoints"] == [4, 6]
    assert record["data"]["provenance"]["source"].startswith("debian:")
    rows = {r["depth"]: r for r in record["eval"] if r["stack"] == "decoder"}
    assert sorted(rows) == [1, 2, 3] and rows[3]["strategy"] == "none" and rows[2]["layers"] == [0, 2]
    for r in rows.values():
        assert r["test_sentences"] == 300  # BLEU on the seeded subset; perplexity on every test pair
        assert r["test_tokens"] > 300 * 5
        assert 0.0 <= r["test_bleu"] <= 100.0 and math.isfinite(r["test_ppl"])
        assert r["generate"] == {"beam": 2, "lenpen": 0.6, "max_len_a": 0.0, "max_len_b": 5, "max_sentences": 300,
                                 "seed": 0}
    assert rows[1]["n_params"] < rows[2]["n_params"] < rows[3]["n_params"]
    model_mtime = (runs.run_dir(cfg) / "model.pt").stat().st_mtime

    with caplog.at_level("INFO", logger="layerdrop"):
        again = train(load_config([*overrides, "prune.stack=encoder"]))
    assert "already trained" in caplog.text
    assert (runs.run_dir(cfg) / "model.pt").stat().st_mtime == model_mtime
    enc = {r["depth"]: r for r in again["eval"] if r["stack"] == "encoder"}
    assert sorted(enc) == [1, 2] and enc[1]["n_params"] < enc[2]["n_params"]
    assert {r["depth"] for r in again["eval"] if r["stack"] == "decoder"} == {1, 2, 3}  # kept from the first call


def test_bad_translation_configs_fail_before_any_work(tmp_path):
    from layerdrop.config import load_config
    from layerdrop.train import train

    base = ["experiment=table1_mt", f"paths.runs_dir={tmp_path}/runs", f"paths.data_dir={tmp_path}/none"]
    with pytest.raises(ValueError, match="prune.stack='middle': expected one of encoder, decoder"):
        train(load_config([*base, "prune.stack=middle"]))
    with pytest.raises(ValueError, match=r"layerdrop.decoder_p=1.5: must be in \[0, 1\)"):
        train(load_config([*base, "layerdrop.decoder_p=1.5"]))
    with pytest.raises(ValueError, match="encoder_p and layerdrop.decoder_p"):
        train(load_config([*base, "layerdrop.rates=[0.1,0.1]"]))
    assert not (tmp_path / "runs").exists()


def test_side_rates_reach_the_model():
    from layerdrop.config import load_config
    from layerdrop.train import model_config

    cfg = model_config(load_config(["experiment=table1_mt", "layerdrop.p=0.2", "layerdrop.encoder_p=0.1"]))
    assert cfg["encoder_layerdrop"] == 0.1 and cfg["decoder_layerdrop"] == 0.2 and "layerdrop" not in cfg


def test_bleu_subset_is_seeded_and_the_same_for_every_model():
    from layerdrop.lit.seq2seq import Seq2SeqLitModule
    from layerdrop.models.generate import Generator
    from layerdrop.tasks.seq2seq import bleu_scores

    refs = [f"sentence {i}" for i in range(50)]
    generate = dict(references=refs, decode=str, score=bleu_scores)
    generator = Generator(bos=BOS, eos=EOS, beam=2, lenpen=0.6, max_len_a=0, max_len_b=3)
    subsets = []
    for model_seed in (0, 1):
        lit = Seq2SeqLitModule.wrap(tiny(seed=model_seed))
        lit.set_generation(generator, **generate, max_sentences=10, seed=4)
        subsets.append(sorted(lit.generation["subset"].tolist()))
    assert subsets[0] == subsets[1] and len(set(subsets[0])) == 10
    lit.set_generation(generator, **generate, max_sentences=100)
    assert lit.generation["subset"] is None  # more than there are: every sentence
    with pytest.raises(ValueError, match="max_sentences must be positive"):
        lit.set_generation(generator, **generate, max_sentences=0)


def test_the_generator_is_beam_search_with_its_settings_and_checks_them_when_made():
    from layerdrop.models.generate import Generator

    model, src = tiny(), sources()
    generator = Generator(bos=BOS, eos=EOS, beam=3, lenpen=0.6, max_len_a=0, max_len_b=7)
    expected = beam_search(model, src, bos=BOS, eos=EOS, beam=3, lenpen=0.6, max_len_a=0, max_len_b=7)
    assert generator(model, src) == [h[0].tokens for h in expected]
    with pytest.raises(ValueError, match="beam size must be >= 1"):
        Generator(bos=BOS, eos=EOS, beam=0)


def test_prune_command_prunes_one_side_of_a_translation_model(tmp_path):
    from layerdrop.models.checkpoint import load_model, save_model
    from layerdrop.prune import main as prune_main

    model = tiny(enc=4, dec=4)
    save_model(tmp_path / "mt.pt", model)
    prune_main([str(tmp_path / "mt.pt"), "--stack", "decoder", "--depth", "2", "--out", str(tmp_path / "d2.pt")])
    prune_main([str(tmp_path / "d2.pt"), "--stack", "encoder", "--strategy", "explicit", "--layers", "1", "3",
                "--out", str(tmp_path / "e2d2.pt")])
    small, meta = load_model(tmp_path / "e2d2.pt")
    assert (small.config.encoder_layers, small.config.decoder_layers) == (2, 2)
    assert meta["stack"] == "encoder" and meta["kept_layers"] == [1, 3]
    src, tgt = sources(), torch.randint(3, 40, (5, 6))
    torch.testing.assert_close(small.logits(small(src, tgt)), _run_on_layers(model, [1, 3], [0, 2], src, tgt))
    with pytest.raises(ValueError, match="prune.stack 'middle'"):
        prune_main([str(tmp_path / "mt.pt"), "--stack", "middle", "--depth", "2", "--out", str(tmp_path / "x.pt")])


def test_min_len_makes_every_sentence_decode_the_same_number_of_steps():
    model, src = tiny(), sources()
    for hyps in beam_search(model, src, bos=BOS, eos=EOS, beam=3, max_len_a=0, max_len_b=7, min_len=7):
        assert len(hyps[0].tokens) == 6  # 6 tokens, then the forced <eos>


def test_the_bleu_curve_scores_the_model_of_each_validation_on_a_fixed_valid_subset(tmp_path, monkeypatch):
    """generate.valid_sentences: every validation point of the learning curve carries val/bleu, computed on
    the same seeded subset of valid. The last one (at the final step, no averaging) scores exactly the
    hypotheses the saved model generates on that subset afterwards, outside training, in fp32."""
    from dataclasses import replace

    from hydra.utils import instantiate

    from layerdrop.config import load_config
    from layerdrop.data.pair_batches import sample_batches
    from layerdrop.models.checkpoint import load_model
    from layerdrop.models.generate import Generator
    from layerdrop.tasks import seq2seq
    from layerdrop.train import train
    from layerdrop.utils import runs

    scored = []  # (hypotheses, references) of every scoring, in order: the curve's two come first

    def spy(hyps, refs):
        scored.append((list(hyps), list(refs)))
        return seq2seq.bleu_scores(hyps, refs)

    monkeypatch.setitem(seq2seq.TEXT_METRICS, "bleu", replace(seq2seq.TEXT_METRICS["bleu"], score=spy))
    overrides = ["experiment=table1_mt", "debug=smoke_mt", "generate.max_len_a=0", "generate.max_len_b=5",
                 "generate.valid_sentences=40", "optim.average=null", "prune.strategies=[]", "prune.splits=[valid]",
                 f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs"]
    cfg = load_config(overrides)
    record = train(cfg)
    curve = record["train"]["curve"]
    assert [p["step"] for p in curve] == [3, 6] and all(0.0 <= p["val/bleu"] <= 100.0 for p in curve)
    (hyps_3, refs_3), (hyps_6, refs_6) = scored[:2]
    assert len(hyps_6) == 40 and refs_3 == refs_6 and hyps_3 != hyps_6  # one subset, two models
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    model, _ = load_model(runs.run_dir(cfg) / "model.pt")
    generate = Generator(bos=dm.bos_id, eos=dm.eos_id, beam=2, lenpen=0.6, max_len_a=0.0, max_len_b=5)
    batches = sample_batches(dm.datasets["valid"], 40, dm.pad_id, dm.bos_id, dm.eos_id, seed=0)
    refs = dm.references("valid")
    pairs = [(dm.decode(t), refs[i]) for b in batches for i, t in zip(b["ids"].tolist(), generate(model.eval(), b["src"]))]
    assert [h for h, _ in pairs] == hyps_6 and [r for _, r in pairs] == refs_6
    assert curve[-1]["val/bleu"] == pytest.approx(seq2seq.bleu_scores(hyps_6, refs_6)["bleu"])


def test_a_bleu_curve_for_a_task_that_generates_nothing_is_refused_at_config_time():
    from layerdrop.config import load_config
    from layerdrop.train import validate

    with pytest.raises(ValueError, match="generate.valid_sentences=10: task 'lm' generates no text"):
        validate(load_config(["debug=smoke", "generate.valid_sentences=10"]))
