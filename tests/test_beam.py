"""Fast beam search against a plain reference: same hypotheses, same scores; and its parts (the
keys/values cache, in-place row selection, shared encoder rows, sentences leaving the batch)."""

import pytest
import torch
import torch.nn.functional as F

from layerdrop.models.generate import beam_search
from layerdrop.models.seq2seq import DecoderState, Seq2SeqConfig, TransformerSeq2Seq
from layerdrop.models.transformer import KVCache, select_rows_

PAD, EOS, BOS = 0, 1, 2
INF = float("inf")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors and thousands of ops: on a shared 2-core machine, two threads waiting on each other
    at every op made these tests up to 100x slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(vocab=40, seed=0, dec=3) -> TransformerSeq2Seq:
    torch.manual_seed(seed)
    cfg = Seq2SeqConfig(vocab_size=vocab, encoder_layers=2, decoder_layers=dec, d_model=32, n_heads=4, d_ff=64,
                        max_len=64, pad_id=PAD, dropout=0.0, attn_dropout=0.0, pre_norm=seed % 2 == 0)
    return TransformerSeq2Seq(cfg).eval()


def random_sources(vocab, seed, n=6, width=10):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (n, width), generator=g)
    for row, length in enumerate(torch.randint(1, width + 1, (n,), generator=g).tolist()):
        src[row, length:] = PAD  # lengths differ, so do maximum output lengths
    return src


def repeats_an_ngram(tokens, n) -> bool:
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return n > 0 and len(grams) != len(set(grams))


@torch.no_grad()
def reference_beam_search(model, src_row, *, beam, lenpen, max_len, min_len, ngram=0):
    """One sentence, no cache, no batching: each step runs the decoder over every live beam's whole
    prefix and walks the 2k best candidates in Python, as the search is written down (n-gram blocking:
    a candidate whose tokens would repeat an n-gram scores -inf). -> the finished hypotheses (tokens,
    score, log-prob), best first."""
    K = beam
    memory, src_pad = model.encode(src_row[None])
    live, finished = [([], 0.0)], []
    for step in range(max_len):
        prefixes = torch.tensor([[BOS, *tokens] for tokens, _ in live])
        n = len(live)
        hidden = model.decode(prefixes, memory.expand(n, -1, -1), src_pad.expand(n, -1))[:, -1]
        lp = model.logits(hidden).float().log_softmax(-1)
        lp[:, [PAD, BOS]] = -INF
        if step + 1 < min_len:
            lp[:, EOS] = -INF
        for b, (tokens, _) in enumerate(live):
            for t in range(lp.size(1)):
                if repeats_an_ngram([*tokens, t], ngram):
                    lp[b, t] = -INF
        if step + 1 == max_len:  # the last allowed token: <eos>
            lp[:, [t for t in range(lp.size(1)) if t != EOS]] = -INF
        V = lp.size(1)
        flat = (torch.tensor([score for _, score in live])[:, None] + lp).view(-1).tolist()  # float32 sums
        best = sorted(range(len(flat)), key=lambda i: -flat[i])[: 2 * K]
        next_live = []
        for rank, i in enumerate(best):
            parent, token = divmod(i, V)
            if token == EOS:
                if rank < K and flat[i] > -INF and len(finished) < K:
                    finished.append((live[parent][0], flat[i] / (step + 1) ** lenpen, flat[i]))
            elif len(next_live) < K:
                next_live.append((live[parent][0] + [token], flat[i]))
        live = next_live
        if len(finished) >= K or all(score == -INF for _, score in live):
            break
    return sorted(finished, key=lambda h: -h[1])


SETTINGS = [  # beam, lenpen, max_len_a, max_len_b, min_len, no_repeat_ngram
    (4, 0.6, 0.5, 4, 1, 0),
    (3, 1.5, 1.0, 3, 4, 0),  # min_len
    (8, 0.0, 0.0, 9, 1, 0),
    (5, 0.6, 1.2, 2, 1, 0),
    (2, 1.0, 0.0, 6, 6, 0),  # min_len = max: every sentence decodes the same number of steps
    (1, 0.6, 1.0, 5, 1, 0),  # greedy
    (4, 0.6, 1.0, 12, 1, 3),  # 3-gram blocking, as the paper's summarisation and QA
    (3, 1.0, 0.0, 10, 8, 2),  # 2-gram blocking with a minimum length: vocab 7 runs out of bigrams
    (5, 0.6, 0.0, 8, 1, 1),  # no token twice
]


@pytest.mark.parametrize("vocab", [7, 40, 100])
@pytest.mark.parametrize("setting", SETTINGS, ids=[f"beam{s[0]}-lenpen{s[1]}-min{s[4]}-block{s[5]}" for s in SETTINGS])
def test_beam_search_matches_a_per_sentence_reference_without_cache(vocab, setting):
    """Every hypothesis of every sentence: same tokens in the same order, same score and log-prob
    (vocab 7 has fewer candidates than 2 x beam 8: the search must still be exact)."""
    beam, lenpen, a, b, min_len, ngram = setting
    for seed in range(3):
        model, src = tiny(vocab, seed), random_sources(vocab, seed)
        got = beam_search(model, src, bos=BOS, eos=EOS, beam=beam, lenpen=lenpen, max_len_a=a, max_len_b=b,
                          min_len=min_len, n_best=beam, no_repeat_ngram=ngram)
        for row, hyps in enumerate(got):
            max_len = max(1, int(a * int(src[row].ne(PAD).sum()) + b))
            want = reference_beam_search(model, src[row], beam=beam, lenpen=lenpen, max_len=max_len, min_len=min_len,
                                         ngram=ngram)
            assert [h.tokens for h in hyps] == [w[0] for w in want[:beam]], (seed, row)
            for h, (_, score, log_prob) in zip(hyps, want):
                assert h.score == pytest.approx(score, abs=1e-5) and h.log_prob == pytest.approx(log_prob, abs=1e-5)


@pytest.mark.parametrize("ngram", [1, 2, 3])
def test_blocking_never_emits_a_repeated_ngram_and_is_needed(ngram):
    """Long outputs from a random model over 37 real tokens repeat n-grams unblocked; blocked, no
    hypothesis of any sentence holds an n-gram twice, and min_len is honoured alongside."""
    model, src = tiny(40, 2), random_sources(40, 5, n=8)
    settings = dict(bos=BOS, eos=EOS, beam=4, max_len_a=0.0, max_len_b=40, n_best=4, min_len=25)
    free = [h.tokens for hyps in beam_search(model, src, **settings) for h in hyps]
    assert any(repeats_an_ngram(t, ngram) for t in free)
    for hyps in beam_search(model, src, no_repeat_ngram=ngram, **settings):
        assert len(hyps) == 4
        for h in hyps:
            assert not repeats_an_ngram(h.tokens, ngram), h.tokens
            assert len(h.tokens) + 1 >= 25


def decoder_rows(model, src, **settings) -> list[int]:
    """The decoder's batch size at each step of a beam search."""
    rows = []
    hook = model.decoder[0].register_forward_pre_hook(lambda m, args: rows.append(args[0].size(0)))
    try:
        beam_search(model, src, bos=BOS, eos=EOS, **settings)
    finally:
        hook.remove()
    return rows


def test_sentences_leave_the_batch_and_the_first_step_runs_one_beam_per_sentence():
    """Decoded in one batch, each sentence takes as many steps as alone, then leaves."""
    model, src = tiny(), random_sources(40, 0, n=6)
    settings = dict(beam=4, max_len_a=1.0, max_len_b=1)
    alone = [len(decoder_rows(model, src[i : i + 1], **settings)) for i in range(len(src))]
    assert len(set(alone)) > 2  # sentences finish at different steps
    assert decoder_rows(model, src, **settings) == [6] + [4 * sum(n > step for n in alone) for step in range(1, max(alone))]


def test_a_memory_row_serves_consecutive_decoder_rows():
    """Beams share their sentence's encoder output (2 rows per source here), with and without a cache."""
    model, src = tiny(), random_sources(40, 1, n=3)
    tgt = torch.randint(3, 40, (6, 5))
    memory, src_pad = model.encode(src)
    expanded = model.decode(tgt, memory.repeat_interleave(2, 0), src_pad.repeat_interleave(2, 0))
    torch.testing.assert_close(model.decode(tgt, memory, src_pad), expanded)
    state = DecoderState(len(model.decoder))
    steps = [model.decode(tgt[:, t : t + 1], memory, src_pad, state) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), expanded, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="7 query rows cannot share 3 memory rows"):
        model.decode(tgt[:1].repeat(7, 1), memory, src_pad)


def test_select_rows_in_place_equals_index_select():
    x = torch.randn(7, 3)
    for rows in ([1, 0, 2, 2, 6], [0, 1, 2, 3, 4, 5, 6], [6, 5, 4], [3, 3, 3, 3, 3, 3, 3]):
        before, y = x.clone(), x.clone()
        got = select_rows_(y, torch.tensor(rows))
        torch.testing.assert_close(got, before.index_select(0, torch.tensor(rows)))
        assert got.data_ptr() == y.data_ptr()  # in the same storage


def test_kv_cache_attends_and_reorders_like_a_plain_tensor():
    """Random steps and reorderings of every kind (few rows move: in place; most move, or the batch
    grows: through the spare buffer; the batch shrinks), against concatenated keys/values and SDPA."""
    g = torch.Generator().manual_seed(0)
    L, h, D, N = 2, 3, 4, 5
    cache, k_ref, v_ref = KVCache(L, capacity=2), None, None  # reference: (L, N, h, t, D)
    reorders = [None, [0, 1, 1, 3, 4], None, torch.randperm(5, generator=g).tolist() * 2, [2, 0, 1, 3, 4, 5, 6, 7, 8, 9],
                [9, 1, 2], None, [0, 0, 2]]
    for rows in reorders:
        if rows is not None:
            rows = torch.tensor(rows)
            cache.select(rows)
            k_ref, v_ref = k_ref.index_select(1, rows), v_ref.index_select(1, rows)
        N = cache.rows if k_ref is not None else N
        qkv = torch.randn(L, N, 3, h, D, generator=g)
        new_k, new_v = qkv[:, :, 1, :, None], qkv[:, :, 2, :, None]  # (L, N, h, 1, D)
        k_ref = new_k if k_ref is None else torch.cat([k_ref, new_k], 3)
        v_ref = new_v if v_ref is None else torch.cat([v_ref, new_v], 3)
        for layer in range(L):
            out = cache.attend(layer, qkv[layer])
            want = F.scaled_dot_product_attention(qkv[layer, :, 0, :, None], k_ref[layer], v_ref[layer])[:, :, 0]
            torch.testing.assert_close(out, want)
        cache.length += 1
    assert cache.buf.size(2) >= cache.length and cache.rows == 3
    with pytest.raises(ValueError, match="the cache holds 3 rows, this step has 4"):
        cache.attend(0, torch.randn(4, 3, h, D))
