"""Batched beam search with a length penalty (fairseq's ``SequenceGenerator``, simplified).

A hypothesis' score is the sum of its token log-probabilities (the final ``<eos>`` included)
divided by ``length ** lenpen`` (length counts the ``<eos>``; the paper uses beam 8, lenpen 0.6).
Each step keeps the 2k best continuations of the k live beams: the ``<eos>`` ones among the first k
are finished, the first k others live on. A sentence is done once it has k finished hypotheses
(fairseq's default early stop) or reaches its maximum length, where ``<eos>`` is forced; done
sentences leave the batch, so the batch shrinks as sentences finish. The decoder runs
incrementally (cached keys/values), once per step, through every layer of the given model and no
other: pass a pruned model to decode with fewer layers.

A step is whole-batch tensor work, with no Python loop over sentences or hypotheses: finished
hypotheses go into per-sentence tensors (Python objects are built once, at the end); the first
step runs one beam per sentence (all beams start from the same <bos>); the beams of a sentence
share one projection of its encoder output; the keys/values cache is written in place and
reordered in place for all layers at once, and since the order of a sentence's beams is free, each
new beam takes its parent's slot where it can, so only the rows of beams that change parent move
(likewise, a sentence that leaves is replaced by the last one, and the others stay where they are).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerdrop.models.seq2seq import DecoderState, TransformerSeq2Seq
from layerdrop.models.transformer import select_rows_


@dataclass
class Hypothesis:
    tokens: list[int]  # without <bos> and <eos>
    score: float  # length-normalised log-probability
    log_prob: float  # sum of token log-probabilities, <eos> included


def check_generation(beam: int, lenpen: float, max_len_a: float, max_len_b: int, min_len: int = 1,
                     no_repeat_ngram: int = 0) -> None:
    if beam < 1:
        raise ValueError(f"beam size must be >= 1, got {beam}")
    if lenpen < 0:
        raise ValueError(f"length penalty must be >= 0, got {lenpen}")
    if max_len_a < 0 or max_len_b < 1:
        raise ValueError(f"max length a*src+b needs a >= 0 and b >= 1, got a={max_len_a}, b={max_len_b}")
    if min_len < 1:
        raise ValueError(f"min_len counts the <eos> and must be >= 1, got {min_len}")
    if no_repeat_ngram < 0:
        raise ValueError(f"no_repeat_ngram must be >= 0 (0: no blocking; the paper blocks 3-grams), got {no_repeat_ngram}")


@dataclass(frozen=True)
class Generator:
    """Beam search with fixed settings: the one generator translation, summarisation and long-form QA
    share, each choosing its settings in config (``generate.*``). Bad settings fail when it is made."""

    bos: int
    eos: int
    beam: int = 8
    lenpen: float = 0.6
    max_len_a: float = 0.0
    max_len_b: int = 200
    min_len: int = 1
    no_repeat_ngram: int = 0

    def __post_init__(self) -> None:
        check_generation(self.beam, self.lenpen, self.max_len_a, self.max_len_b, self.min_len, self.no_repeat_ngram)

    def __call__(self, model: TransformerSeq2Seq, src: torch.Tensor) -> list[list[int]]:
        """src (B,S) -> the best hypothesis' tokens of each sentence."""
        hyps = beam_search(model, src, bos=self.bos, eos=self.eos, beam=self.beam, lenpen=self.lenpen,
                           max_len_a=self.max_len_a, max_len_b=self.max_len_b, min_len=self.min_len,
                           no_repeat_ngram=self.no_repeat_ngram)
        return [h[0].tokens for h in hyps]


@torch.no_grad()
def beam_search(
    model: TransformerSeq2Seq, src: torch.Tensor, *, bos: int, eos: int, beam: int = 8, lenpen: float = 0.6,
    max_len_a: float = 0.0, max_len_b: int = 200, n_best: int = 1, min_len: int = 1, no_repeat_ngram: int = 0,
) -> list[list[Hypothesis]]:
    """src (B,S) padded with the model's pad id -> for each sentence its ``n_best`` hypotheses, best first.

    A sentence may generate at most ``max_len_a * source length + max_len_b`` tokens (<eos> included),
    capped by the model's positions, and at least ``min_len`` (fairseq ``--min-len``: <eos> is banned
    before; setting it to the maximum makes every sentence decode the same number of steps, which is
    how ``make bench`` compares decoder depths). ``no_repeat_ngram=n`` (fairseq ``--no-repeat-ngram-size``)
    bans any token that would repeat an n-gram already in the hypothesis (the paper blocks 3-grams for
    summarisation and long-form QA)."""
    check_generation(beam, lenpen, max_len_a, max_len_b, min_len, no_repeat_ngram)
    if not 1 <= n_best <= beam:
        raise ValueError(f"n_best must be in [1, beam={beam}], got {n_best}")
    if model.training:
        raise ValueError("beam_search needs the model in eval mode (every kept layer runs, no dropout)")
    B, K, pad = src.size(0), beam, model.config.pad_id
    device, inf = src.device, float("inf")
    src_lens = src.ne(pad).sum(1)
    max_len = (max_len_a * src_lens.float() + max_len_b).floor().long().clamp(max=model.config.max_len - 1).clamp(min=1)
    steps = int(max_len.max())

    memory, src_pad = model.encode(src)  # one row per sentence: its beams share it
    # on CPU the cache is sized for the longest output at once: pages never written cost nothing,
    # while growing it copies the whole cache (on a GPU memory is real: it starts small and doubles)
    state = DecoderState(len(model.decoder), capacity=steps + 1 if device.type == "cpu" else min(steps + 1, 16))
    # finished hypotheses, per sentence in the order they finish: log-probability, length, tokens
    fin_lp = torch.full((B, K), -inf, device=device)
    fin_len = torch.zeros(B, K, dtype=torch.long, device=device)
    fin_tokens = torch.full((B, K, steps), pad, dtype=torch.long, device=device)
    fin_count = torch.zeros(B, dtype=torch.long, device=device)
    tokens = torch.full((B, steps + 1), bos, dtype=torch.long, device=device)  # the live beams, <bos> first
    scores = torch.zeros(B, 1, device=device)  # one live beam per sentence at the start (k = 1)
    sentence = torch.arange(B, device=device)  # original index of each live sentence
    rank = torch.arange(2 * K, device=device)
    work = None  # each step's log-probabilities, in one buffer for the whole search (float32 models)
    if model.embed.weight.dtype == torch.float32 and not torch.is_autocast_enabled(device.type):
        work = torch.empty(B * K, model.config.vocab_size, device=device)
    for step in range(steps):
        n, k = scores.shape
        lp = model.step_log_probs(tokens[:, step : step + 1], memory, src_pad, state, out=work)  # (n*k, V)
        lp[:, pad] = -inf
        lp[:, bos] = -inf
        if step + 1 < min_len:
            lp[:, eos] = -inf
        if no_repeat_ngram and step >= no_repeat_ngram:
            _block_repeats(lp, tokens[:, 1 : step + 1], no_repeat_ngram)
        at_max = step + 1 >= max_len  # this token is the last allowed: <eos>
        if at_max.any():
            rows = at_max.repeat_interleave(k)
            eos_lp = lp[rows, eos].clone()
            lp[rows] = -inf
            lp[rows, eos] = eos_lp
        top_scores, parent, token = _best_candidates(lp, scores, 2 * K)  # (n, 2K) each
        is_eos = token.eq(eos)
        final = is_eos & (rank < K) & top_scores.gt(-inf)
        if final.any():  # store them in each sentence's next free slots, in rank order, while there is room
            slot = fin_count[sentence, None] + final.cumsum(1) - 1
            store = final & slot.lt(K)
            i, j = store.nonzero(as_tuple=True)
            s, sl = sentence[i], slot[i, j]
            fin_lp[s, sl] = top_scores[i, j]
            fin_len[s, sl] = step + 1
            fin_tokens[s, sl, :step] = tokens[i * k + parent[i, j], 1 : step + 1]
            fin_count[sentence] += store.sum(1)
        live_scores = top_scores.masked_fill(is_eos, -inf)
        scores, pick = live_scores.topk(K, dim=1)  # the first K non-eos continuations
        parent, token = parent.gather(1, pick), token.gather(1, pick)
        done = fin_count[sentence].ge(K) | at_max | scores[:, 0].eq(-inf)  # the last: nothing left alive
        if done.all():
            break
        if k == K:  # the order of a sentence's beams is free: keep each beam in its parent's slot
            slot = _stay(parent)
            scores, parent, token = (x.scatter(1, slot, x) for x in (scores, parent, token))
        block = torch.arange(n, device=device)
        if done.any():  # sentences that are done leave the batch; the last live ones fill their places
            block = _fill_holes(done)
            token, scores, parent, sentence, max_len = (x[block] for x in (token, scores, parent, sentence, max_len))
            memory, src_pad = select_rows_(memory, block), select_rows_(src_pad, block)
            state.select_sources(block)
        rows = (parent + block[:, None] * k).view(-1)  # the row each new beam continues
        tokens = tokens.index_select(0, rows)
        tokens[:, step + 1] = token.view(-1)
        state.select(rows)
    return _best(fin_lp, fin_len, fin_tokens, fin_count, lenpen, n_best)


def _best_candidates(lp: torch.Tensor, scores: torch.Tensor, c: int) -> tuple[torch.Tensor, ...]:
    """lp (n*k, V) next-token log-probabilities of the k beams of n sentences, scores (n,k) -> the c best
    continuations of each sentence (score + log-probability), best first: (n,c) scores, beams, tokens.

    Exact, without sorting all k*V candidates: the tokens of each beam are split into groups of m
    (tokens j, j+W, j+2W, ...), and the c best candidates lie in the c groups with the best maxima
    (a group holding one of them has a maximum at least that good, and at most c-1 other groups can
    beat it). One max-reduction over the log-probabilities and a top-k over groups then replace a
    top-k over every candidate (3x faster for 512 beams x 8000 tokens)."""
    n, k = scores.shape
    V = lp.size(1)
    m = max(d for d in range(1, 9) if V % d == 0)
    W = V // m  # groups per beam
    if k * W < c:  # a tiny vocabulary: every candidate, padded with impossible ones
        cand = lp.add_(scores.view(-1, 1)).view(n, k * V)
        if cand.size(1) < c:
            cand = torch.cat([cand, cand.new_full((n, c - cand.size(1)), float("-inf"))], dim=1)
        top, idx = cand.topk(c, dim=1)
        return top, torch.div(idx, V, rounding_mode="floor").clamp(max=k - 1), idx % V
    group_max = lp.view(n * k, m, W).amax(1).add_(scores.view(-1, 1)).view(n, k * W)
    group = group_max.topk(c, dim=1).indices  # (n, c): beam * W + j
    beam = torch.div(group, W, rounding_mode="floor")
    token = (group % W)[:, :, None] + W * torch.arange(m, device=lp.device)  # (n, c, m)
    rows = beam + k * torch.arange(n, device=lp.device)[:, None]
    cand = (lp[rows[:, :, None], token] + scores.gather(1, beam)[:, :, None]).view(n, c * m)
    top, pick = cand.topk(c, dim=1)
    return top, beam.repeat_interleave(m, dim=1).gather(1, pick), token.view(n, c * m).gather(1, pick)


def _block_repeats(lp: torch.Tensor, generated: torch.Tensor, n: int) -> None:
    """lp (R,V) next-token log-probabilities, generated (R,L) each row's tokens so far, L >= n -> sets to -inf
    every token that would end an n-gram the row already holds: for each earlier n-gram whose first n-1
    tokens equal the row's last n-1, its last token. Whole-batch tensor work: (R, L-n+1) comparisons."""
    grams = generated.unfold(1, n, 1)  # (R, L-n+1, n)
    last = generated[:, generated.size(1) - n + 1 :]  # (R, n-1): what the next token would extend
    hit = grams[:, :, :-1].eq(last[:, None]).all(2)
    row, gram = hit.nonzero(as_tuple=True)
    lp[row, grams[row, gram, -1]] = float("-inf")


def _stay(parent: torch.Tensor) -> torch.Tensor:
    """(n,K) parent beam of each new beam -> (n,K) slot for it: the first child of a parent takes the
    parent's slot, the other children take the slots of parents that have none, so only their rows of
    the cache move (a permutation within each sentence; the search does not depend on beam order)."""
    K = parent.size(1)
    one_hot = parent[:, :, None].eq(torch.arange(K, device=parent.device))  # (n, child, parent)
    first = (one_hot & one_hot.cumsum(1).eq(1)).any(2)  # the first child of its parent
    childless = ~one_hot.any(1)  # (n, parent): slots that free up
    free = (childless.logical_not().long() * K + torch.arange(K, device=parent.device)).argsort(1)  # free first
    extra = (~first).long().cumsum(1) - 1  # among the other children
    return torch.where(first, parent, free.gather(1, extra.clamp(min=0)))


def _fill_holes(done: torch.Tensor) -> torch.Tensor:
    """(n,) True for the sentences that leave -> the old index of each remaining sentence, keeping every
    sentence in its place except the last ones, which move into the places that free up."""
    keep = ~done
    m = int(keep.sum())
    block = torch.arange(m, device=done.device)
    block[done[:m].nonzero().squeeze(1)] = keep[m:].nonzero().squeeze(1) + m
    return block


def _best(fin_lp, fin_len, fin_tokens, fin_count, lenpen: float, n_best: int) -> list[list[Hypothesis]]:
    """The n_best finished hypotheses of each sentence, best first (ties: the one that finished first)."""
    score = fin_lp.double() / fin_len.double().pow(lenpen)  # in double, as Python floats would be
    order = score.masked_fill(fin_len.eq(0), float("-inf")).sort(dim=1, descending=True, stable=True).indices
    lens, lps, scores = fin_len.tolist(), fin_lp.tolist(), score.tolist()
    out = []
    for s, (count, idx) in enumerate(zip(fin_count.tolist(), order[:, :n_best].tolist())):
        out.append([Hypothesis(fin_tokens[s, j, : lens[s][j] - 1].tolist(), scores[s][j], lps[s][j])
                    for j in idx[: min(count, n_best)]])
    return out


@torch.no_grad()
def greedy_search(
    model: TransformerSeq2Seq, src: torch.Tensor, *, bos: int, eos: int, max_len_a: float = 0.0, max_len_b: int = 200
) -> list[list[int]]:
    """The most likely next token at every step, until <eos> or the maximum length (for tests and quick checks)."""
    pad = model.config.pad_id
    max_len = (max_len_a * src.ne(pad).sum(1).float() + max_len_b).floor().long().clamp(max=model.config.max_len - 1)
    steps = int(max_len.max())
    memory, src_pad = model.encode(src)
    state = DecoderState(len(model.decoder), capacity=steps)
    tokens = torch.full((src.size(0), steps + 1), bos, dtype=torch.long, device=src.device)
    length = torch.full_like(max_len, steps)  # tokens before <eos>, for the sentences that end
    for step in range(steps):
        lp = model.step_log_probs(tokens[:, step : step + 1], memory, src_pad, state)
        lp[:, pad] = lp[:, bos] = float("-inf")
        nxt = lp.argmax(-1)
        nxt[step + 1 >= max_len] = eos
        tokens[:, step + 1] = nxt
        ended = nxt.eq(eos) & length.eq(steps)
        length[ended] = step
        if length.lt(steps).all():
            break
    return [row[1 : 1 + n].tolist() for row, n in zip(tokens, length.tolist())]
