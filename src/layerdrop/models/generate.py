"""Batched beam search with a length penalty (fairseq's ``SequenceGenerator``, simplified).

A hypothesis' score is the sum of its token log-probabilities (the final ``<eos>`` included)
divided by ``length ** lenpen`` (length counts the ``<eos>``; the paper uses beam 8, lenpen 0.6).
Each step keeps the 2k best continuations of the k live beams: the ``<eos>`` ones among the first k
are finished, the first k others live on. A sentence is done once it has k finished hypotheses
(fairseq's default early stop) or reaches its maximum length, where ``<eos>`` is forced; done
sentences leave the batch, so the batch shrinks as sentences finish. The decoder runs
incrementally (cached keys/values), once per step, through every layer of the given model and no
other: pass a pruned model to decode with fewer layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from layerdrop.models.seq2seq import TransformerSeq2Seq, reorder_state


@dataclass
class Hypothesis:
    tokens: list[int]  # without <bos> and <eos>
    score: float  # length-normalised log-probability
    log_prob: float  # sum of token log-probabilities, <eos> included


def check_generation(beam: int, lenpen: float, max_len_a: float, max_len_b: int) -> None:
    if beam < 1:
        raise ValueError(f"beam size must be >= 1, got {beam}")
    if lenpen < 0:
        raise ValueError(f"length penalty must be >= 0, got {lenpen}")
    if max_len_a < 0 or max_len_b < 1:
        raise ValueError(f"max length a*src+b needs a >= 0 and b >= 1, got a={max_len_a}, b={max_len_b}")


@torch.no_grad()
def beam_search(
    model: TransformerSeq2Seq, src: torch.Tensor, *, bos: int, eos: int, beam: int = 8, lenpen: float = 0.6,
    max_len_a: float = 0.0, max_len_b: int = 200, n_best: int = 1, min_len: int = 1,
) -> list[list[Hypothesis]]:
    """src (B,S) padded with the model's pad id -> for each sentence its ``n_best`` hypotheses, best first.

    A sentence may generate at most ``max_len_a * source length + max_len_b`` tokens (<eos> included),
    capped by the model's positions, and at least ``min_len`` (fairseq ``--min-len``: <eos> is banned
    before; setting it to the maximum makes every sentence decode the same number of steps, which is
    how ``make bench`` compares decoder depths)."""
    check_generation(beam, lenpen, max_len_a, max_len_b)
    if not 1 <= n_best <= beam:
        raise ValueError(f"n_best must be in [1, beam={beam}], got {n_best}")
    if model.training:
        raise ValueError("beam_search needs the model in eval mode (every kept layer runs, no dropout)")
    B, K, pad = src.size(0), beam, model.config.pad_id
    device = src.device
    src_lens = src.ne(pad).sum(1)
    max_len = (max_len_a * src_lens.float() + max_len_b).floor().long().clamp(max=model.config.max_len - 1).clamp(min=1)

    memory, src_pad = model.encode(src)
    rows = torch.arange(B, device=device).repeat_interleave(K)
    memory, src_pad = memory.index_select(0, rows), src_pad.index_select(0, rows)
    state: dict = {}
    tokens = torch.full((B * K, 1), bos, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at the start only one beam is live, so no hypothesis is found twice
    sentence = torch.arange(B, device=device)  # original index of each live sentence
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    step = 0
    while len(sentence):
        n = len(sentence)
        lp = model.step_log_probs(tokens[:, -1:] if step else tokens, memory, src_pad, state)  # (n*K, V)
        V = lp.size(-1)
        lp[:, pad] = float("-inf")
        lp[:, bos] = float("-inf")
        if step + 1 < min_len:
            lp[:, eos] = float("-inf")
        at_max = (step + 1 >= max_len).repeat_interleave(K)  # this token is the last allowed: <eos>
        if at_max.any():
            eos_lp = lp[at_max, eos].clone()
            lp[at_max] = float("-inf")
            lp[at_max, eos] = eos_lp
        cand = (scores.view(-1, 1) + lp).view(n, K * V)
        top_scores, top_idx = cand.topk(min(2 * K, K * V), dim=1)  # (n, 2K)
        parent, token = top_idx // V, top_idx % V
        is_eos = token.eq(eos)
        rank = torch.arange(top_idx.size(1), device=device)
        final = is_eos & (rank < K) & top_scores.gt(float("-inf"))
        for i, j in final.nonzero().tolist():
            s = int(sentence[i])
            if len(finished[s]) < K:
                row = i * K + int(parent[i, j])
                log_prob = float(top_scores[i, j])
                finished[s].append(Hypothesis(tokens[row, 1:].tolist(), log_prob / (step + 1) ** lenpen, log_prob))
        live_scores = top_scores.masked_fill(is_eos, float("-inf"))
        scores, pick = live_scores.topk(K, dim=1)  # the first K non-eos continuations
        parent, token = parent.gather(1, pick), token.gather(1, pick)
        done = torch.tensor([len(finished[int(s)]) >= K for s in sentence], device=device)
        done |= step + 1 >= max_len
        done |= scores[:, 0].eq(float("-inf"))  # nothing left alive
        keep = (~done).nonzero().squeeze(1)
        rows = ((keep * K)[:, None] + parent[keep]).view(-1)
        tokens = torch.cat([tokens.index_select(0, rows), token[keep].view(-1, 1)], dim=1)
        reorder_state(state, rows, skip="cross")  # beams of a sentence share its encoder output
        if len(keep) < n:  # sentences that are done leave the batch
            expand = (keep * K).repeat_interleave(K) + torch.arange(K, device=device).repeat(len(keep))
            memory, src_pad = memory.index_select(0, expand), src_pad.index_select(0, expand)
            for layer_state in state.values():
                if isinstance(layer_state, dict) and "cross" in layer_state:
                    reorder_state(layer_state["cross"], expand)
        scores, sentence, max_len = scores[keep], sentence[keep], max_len[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[:n_best] for hyps in finished]


@torch.no_grad()
def greedy_search(
    model: TransformerSeq2Seq, src: torch.Tensor, *, bos: int, eos: int, max_len_a: float = 0.0, max_len_b: int = 200
) -> list[list[int]]:
    """The most likely next token at every step, until <eos> or the maximum length (for tests and quick checks)."""
    pad = model.config.pad_id
    max_len = (max_len_a * src.ne(pad).sum(1).float() + max_len_b).floor().long().clamp(max=model.config.max_len - 1)
    memory, src_pad = model.encode(src)
    state: dict = {}
    tokens = torch.full((src.size(0), 1), bos, dtype=torch.long, device=src.device)
    out: list[list[int] | None] = [None] * src.size(0)
    for step in range(int(max_len.max())):
        lp = model.step_log_probs(tokens[:, -1:] if step else tokens, memory, src_pad, state)
        lp[:, pad] = lp[:, bos] = float("-inf")
        nxt = lp.argmax(-1)
        nxt[step + 1 >= max_len] = eos
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        for i in range(src.size(0)):
            if out[i] is None and (nxt[i] == eos):
                out[i] = tokens[i, 1:-1].tolist()
        if all(o is not None for o in out):
            break
    return [o if o is not None else tokens[i, 1:].tolist() for i, o in enumerate(out)]
