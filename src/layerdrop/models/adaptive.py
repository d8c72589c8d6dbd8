"""Adaptive input embeddings and a tied adaptive softmax (Baevski & Auli, arXiv:1809.10853).

The vocabulary is cut into frequency bands [0, c1), [c1, c2), ...; band i embeds in C / factor**i
dimensions and projects to C. The softmax reuses both: its head scores band 0 plus one logit per
tail band ("cluster"), and tail band i scores h @ P_i then against E_i, where P_i and E_i are the input
band's projection and embedding (fairseq's ``tie_adaptive_weights`` and ``tie_adaptive_proj``).
The only weights of its own are the cluster logits, (n_bands - 1) x C.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layerdrop.models.ops import cross_entropy, dropout


def band_edges(vocab_size: int, cutoffs: Sequence[int]) -> list[int]:
    edges = [0, *cutoffs, vocab_size]
    if any(a >= b for a, b in zip(edges, edges[1:])):
        raise ValueError(f"adaptive cutoffs {list(cutoffs)} must increase strictly and stay below vocab_size={vocab_size}")
    return edges


class AdaptiveInput(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, cutoffs: Sequence[int], factor: float = 4.0):
        super().__init__()
        self.edges = band_edges(vocab_size, cutoffs)
        self.d_model = d_model
        dims = [int(d_model // factor**i) for i in range(len(self.edges) - 1)]
        self.embeddings = nn.ModuleList(nn.Embedding(b - a, d) for a, b, d in zip(self.edges, self.edges[1:], dims))
        self.projections = nn.ModuleList(nn.Linear(d, d_model, bias=False) for d in dims)
        for emb, d in zip(self.embeddings, dims):
            nn.init.normal_(emb.weight, std=d**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B,T) -> (B,T,C)
        out = tokens.new_zeros(*tokens.shape, self.d_model, dtype=self.projections[0].weight.dtype)
        for (a, b), emb, proj in zip(zip(self.edges, self.edges[1:]), self.embeddings, self.projections):
            in_band = (tokens >= a) & (tokens < b)
            if in_band.any():
                out[in_band] = proj(emb(tokens[in_band] - a)).to(out.dtype)
        return out


class TiedAdaptiveSoftmax(nn.Module):
    """Head and tails share one dropped-out input, and each tail drops again after its projection.

    This is fairseq's ``adaptive_softmax_dropout``: the hidden state is dropped once before it
    feeds the head and every tail, then inside each tail between the projection P_i and the output
    E_i. Dropout draws from torch's RNG in that order: input first, then the tails in band order.
    """

    def __init__(self, adaptive_input: AdaptiveInput, dropout: float = 0.0):
        super().__init__()
        self.inp = [adaptive_input]  # a list, so the tied module is not registered (or counted) twice
        n_tails = len(adaptive_input.edges) - 2
        self.cluster = nn.Linear(adaptive_input.d_model, n_tails, bias=False)
        self.dropout = dropout

    def _head_logits(self, h: torch.Tensor) -> torch.Tensor:  # (N,C) -> (N, c1 + n_tails)
        E0 = self.inp[0].embeddings[0].weight
        return h @ torch.cat([E0, self.cluster.weight]).t()  # one matmul: no (N, c1) copy for the cat

    def _tail_logits(self, h: torch.Tensor, i: int) -> torch.Tensor:  # (N,C) -> (N, band size)
        P, E = self.inp[0].projections[i].weight, self.inp[0].embeddings[i].weight  # (C,d_i), (V_i,d_i)
        z = dropout(h @ P, self.dropout, self.training)
        return z @ E.t()

    def _head_logp(self, h: torch.Tensor) -> torch.Tensor:
        return self._head_logits(h).float().log_softmax(-1)

    def _tail_logp(self, h: torch.Tensor, i: int) -> torch.Tensor:
        return self._tail_logits(h, i).float().log_softmax(-1)

    def nll(self, h: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,C), (N,) -> (N,) negative log-likelihood; only the tails that occur are computed."""
        edges = self.inp[0].edges
        h = dropout(h, self.dropout, self.training)
        # A tail token's head target is its cluster logit c1 + i - 1. Only masks of `target` and
        # Python scalars are used, so everything stays on the input's device.
        head_target = target.clone()
        tail_rows = []
        for i in range(1, len(edges) - 1):
            in_band = (target >= edges[i]) & (target < edges[i + 1])
            head_target[in_band] = edges[1] + i - 1
            tail_rows.append(in_band.nonzero().squeeze(1))
        out = cross_entropy(self._head_logits(h), head_target)[0]  # blockwise fp32 (models/ops.py)
        for i, rows in enumerate(tail_rows, start=1):
            if rows.numel():
                tail = cross_entropy(self._tail_logits(h[rows], i), target[rows] - edges[i])[0]
                out = out.index_add(0, rows, tail)
        return out

    def log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """(N,C) -> (N,V) full log-distribution (for tests and generation; costs every tail)."""
        edges = self.inp[0].edges
        h = dropout(h, self.dropout, self.training)  # as in nll, so both describe one model
        head = self._head_logp(h)
        parts = [head[:, : edges[1]]]
        for i in range(1, len(edges) - 1):
            parts.append(head[:, edges[1] + i - 1 : edges[1] + i] + self._tail_logp(h, i))
        return torch.cat(parts, dim=-1)
