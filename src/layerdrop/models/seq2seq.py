"""Encoder-decoder Transformer for translation (fairseq ``transformer``; Transformer Big at paper scale).

The encoder and the decoder are two LayerDrop stacks of the same ``TransformerLayer`` the LM uses
(decoder layers add encoder-decoder attention), each with its own rate and its own synchronised
draws, and each prunable on its own: pruning the decoder leaves every encoder layer in place (the
fairseq#1257 pitfall). Source, target and output embeddings are one matrix over a joint BPE
vocabulary (fairseq ``--share-all-embeddings``).

    model = TransformerSeq2Seq(Seq2SeqConfig(vocab_size=8000, encoder_layers=6, decoder_layers=6))
    hidden = model(src, tgt_in)                   # teacher forcing: (B,T,C)
    logits = model.logits(hidden)                 # (B,T,V)
    memory, src_pad = model.encode(src)           # generation: encode once ...
    state = DecoderState(len(model.decoder))      # ... then one position at a time, cached
    lp = model.step_log_probs(tokens[:, -1:], memory, src_pad, state)
    state.select(rows)                            # beams follow their parents
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from layerdrop.models.checkpoint import register_arch
from layerdrop.models.ops import dropout
from layerdrop.models.transformer import KVCache, make_stack, select_rows_, sinusoidal_positions


@dataclass
class Seq2SeqConfig:
    vocab_size: int
    encoder_layers: int = 6
    decoder_layers: int = 6
    d_model: int = 1024
    n_heads: int = 16
    d_ff: int = 4096
    max_len: int = 1024  # positions, per side
    dropout: float = 0.3
    attn_dropout: float = 0.1
    act_dropout: float = 0.0
    pre_norm: bool = False  # Transformer Big (Vaswani et al.; Ott et al. 2018) is post-norm
    pad_id: int = 0
    encoder_layerdrop: float | list[float] = 0.0
    decoder_layerdrop: float | list[float] = 0.0
    layerdrop_seed: int = 0
    layerdrop_learned: bool = False
    sublayer_drop: float = 0.0
    head_drop: float = 0.0


ENCODER_SALT, DECODER_SALT = 1, 2  # separate draws for the two stacks


@register_arch("mt")
class TransformerSeq2Seq(nn.Module):
    """(src (B,S), tgt_in (B,T)) -> decoder hidden states (B,T,C)."""

    config_class = Seq2SeqConfig

    #: the layer stacks pruning may shorten: name -> (state-dict prefix, depth field, LayerDrop field)
    stacks = {
        "encoder": ("encoder.", "encoder_layers", "encoder_layerdrop"),
        "decoder": ("decoder.", "decoder_layers", "decoder_layerdrop"),
    }

    def __init__(self, cfg: Seq2SeqConfig):
        super().__init__()
        self.config = cfg
        C = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, C, padding_idx=cfg.pad_id)
        nn.init.normal_(self.embed.weight, std=C**-0.5)
        with torch.no_grad():
            self.embed.weight[cfg.pad_id].zero_()
        self.register_buffer("positions", sinusoidal_positions(cfg.max_len, C), persistent=False)
        layer = dict(d_model=C, n_heads=cfg.n_heads, d_ff=cfg.d_ff, dropout=cfg.dropout,
                     attn_dropout=cfg.attn_dropout, act_dropout=cfg.act_dropout, pre_norm=cfg.pre_norm,
                     sublayer_drop=cfg.sublayer_drop, head_drop=cfg.head_drop)
        self.encoder = make_stack(cfg.encoder_layers, cfg.encoder_layerdrop, seed=cfg.layerdrop_seed,
                                  salt=ENCODER_SALT, learned=cfg.layerdrop_learned, causal=False, **layer)
        self.decoder = make_stack(cfg.decoder_layers, cfg.decoder_layerdrop, seed=cfg.layerdrop_seed,
                                  salt=DECODER_SALT, learned=cfg.layerdrop_learned, causal=True, cross=True, **layer)
        # pre-norm stacks end in a norm (fairseq); post-norm layers already end in one
        self.encoder_norm = nn.LayerNorm(C) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(C) if cfg.pre_norm else nn.Identity()

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        T = tokens.size(1)
        if offset + T > self.config.max_len:
            raise ValueError(f"sequence length {offset + T} exceeds the model's max_len={self.config.max_len}")
        x = self.embed(tokens) * math.sqrt(self.config.d_model) + self.positions[offset : offset + T]
        return dropout(x, self.config.dropout, self.training)

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,S) -> (memory (B,S,C), source padding mask (B,S), True at padding)."""
        pad = src.eq(self.config.pad_id)
        x = self._embed(src)
        for layer in self.encoder:  # skipped layers are never called
            x = layer(x, pad_mask=pad)
        return self.encoder_norm(x), pad

    def decode(
        self, tgt_in: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor, state: DecoderState | None = None
    ) -> torch.Tensor:
        """(B,T) target prefix -> (B,T,C). With ``state`` (a ``DecoderState``, fresh at the first call)
        the keys and values of earlier positions are cached: call with the whole prefix once, then one
        token at a time. ``memory`` and ``src_pad`` may have fewer rows than ``tgt_in`` (B = G x rows:
        G consecutive rows, e.g. the beams of a sentence, share one source)."""
        if state is None:
            x = self._embed(tgt_in)
            for layer in self.decoder:
                x = layer(x, memory=memory, memory_pad_mask=src_pad)
            return self.decoder_norm(x)
        if len(state.layers) != len(self.decoder):
            raise ValueError(f"a decoder state for {len(state.layers)} layers, the decoder has {len(self.decoder)}")
        x = self._embed(tgt_in, state.length)
        # generation runs in eval mode, where every layer of the (possibly pruned) stack runs
        for layer, layer_state in zip(self.decoder, state.layers):
            x = layer(x, memory=memory, memory_pad_mask=src_pad, state=layer_state)
        state.cache.length += tgt_in.size(1)
        return self.decoder_norm(x)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, src_pad = self.encode(src)
        return self.decode(tgt_in, memory, src_pad)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., V), through the shared embedding."""
        return F.linear(hidden, self.embed.weight)

    @torch.no_grad()
    def step_log_probs(
        self, tokens: torch.Tensor, memory: torch.Tensor, src_pad: torch.Tensor, state: DecoderState,
        out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token log-probabilities (B,V) in float32 after feeding ``tokens`` (B,T) incrementally.
        ``out`` (float32, at least B rows) receives them instead of new tensors when the model runs in
        float32: at beam-search sizes (B = sentences x beam, V = 8000) the fresh (B,V) logits and
        log-probabilities of every step cost more memory traffic than computing them."""
        hidden = self.decode(tokens, memory, src_pad, state)[:, -1]
        if out is None or hidden.dtype != torch.float32 or torch.is_autocast_enabled(hidden.device.type):
            return self.logits(hidden).float().log_softmax(-1)
        lp = out[: hidden.size(0)]
        torch.mm(hidden, self.embed.weight.t(), out=lp)  # = self.logits(hidden)
        return torch.log_softmax(lp, -1, out=lp)


class DecoderState:
    """What incremental decoding keeps between steps: every decoder layer's self-attention keys and
    values (one ``KVCache``) and its cross-attention's projection of the encoder output (made at the
    first step, one row per source sentence however many beams it has)."""

    def __init__(self, n_layers: int, capacity: int = 16):
        self.cache = KVCache(n_layers, capacity)
        self.layers = [{"self": {"cache": self.cache, "layer": i}, "cross": {}} for i in range(n_layers)]

    @property
    def length(self) -> int:
        """Positions fed so far."""
        return self.cache.length

    def select(self, rows: torch.Tensor) -> None:
        """Decoder row i continues old row ``rows[i]`` (beams follow their parents)."""
        self.cache.select(rows)

    def select_sources(self, rows: torch.Tensor) -> None:
        """Source row i of the projected encoder output becomes old row ``rows[i]`` (sentences leaving
        the batch), in place: only the rows that move are copied."""
        for layer in self.layers:
            cross = layer["cross"]  # keys, values, source mask
            for key, value in cross.items():
                cross[key] = select_rows_(value, rows)
