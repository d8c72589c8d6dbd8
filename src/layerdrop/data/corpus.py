"""Tokenised language-modelling corpora, cached on disk with a checksummed manifest.

A corpus directory holds `{split}.npy` (flat int32 token ids, `<eos>` after every document, or
after every line of a line-based source such as Wikitext, as fairseq does), `tokenizer.json` and
`manifest.json`. It is built in a temporary directory beside its final place and renamed into
place, so a reader never sees a half-written corpus (see cache.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from layerdrop.data.cache import (
    MANIFEST_FILE,
    TOKENIZER_FILE,
    CorpusCacheError,
    atomic_dir,
    cached_corpus,
    read_manifest,
    sha256_files,
    verify_files,
    write_manifest,
)
from layerdrop.utils.lock import file_lock

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL_TOKENS = [PAD, EOS, UNK]
REBUILD_HINT = "it will be rebuilt by the next `make data-lm` (or any run that prepares the data)"
_ENCODE_CHUNK = 1024  # texts per encode_batch call: bounds memory on Wikitext-103-sized splits

TokenizerKind = Literal["bpe", "word"]
# Where `<eos>` goes: after every document (the news articles), or after every line, empty ones
# included, as fairseq does for line-based text (Wikitext-103 valid: 213,886 words + 3,760 lines).
EosAfter = Literal["document", "line"]
EOS_AFTER = ("document", "line")


@dataclass
class Corpus:
    tokens: dict[str, torch.Tensor]
    tokenizer: Tokenizer
    manifest: dict
    vocab_size: int
    eos_id: int
    pad_id: int


def _check_settings(tokenizer: str, vocab_size: int | None) -> None:
    if tokenizer == "bpe":
        if vocab_size is None or vocab_size < 256 + len(SPECIAL_TOKENS):
            raise ValueError(
                f"bpe vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                f"(256 bytes + special tokens), got {vocab_size}"
            )
    elif tokenizer == "word":
        if vocab_size is not None:
            raise ValueError(
                f"the 'word' tokenizer keeps every train word; pass vocab_size=None, got {vocab_size}"
            )
    else:
        raise ValueError(f"tokenizer must be 'bpe' or 'word', got {tokenizer!r}")


def train_tokenizer(train_docs: Iterable[str], kind: TokenizerKind, vocab_size: int | None) -> Tokenizer:
    """Byte-level BPE as in GPT-2, or a word-level vocabulary of every train word (Wikitext style)."""
    _check_settings(kind, vocab_size)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte, so nothing is ever unknown
        )
    else:
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        trainer = trainers.WordLevelTrainer(
            vocab_size=2**31 - 1, min_frequency=0, special_tokens=SPECIAL_TOKENS, show_progress=False
        )
    length = len(train_docs) if isinstance(train_docs, Sized) else None
    tok.train_from_iterator(train_docs, trainer=trainer, length=length)
    return tok


def encoded_ids(tok: Tokenizer, texts: Iterable[str], chunk: int = _ENCODE_CHUNK) -> Iterator[list[int]]:
    """The token ids of every text (no special tokens), encoded `chunk` texts at a time."""
    texts = iter(texts)
    while batch := list(islice(texts, chunk)):
        for enc in tok.encode_batch(batch, add_special_tokens=False):
            yield enc.ids


def eos_units(docs: list[str], eos_after: EosAfter) -> Iterable[str]:
    """The texts that each end with `<eos>`: the documents, or every line of every document."""
    if eos_after not in EOS_AFTER:
        raise ValueError(f"eos_after must be one of {EOS_AFTER}, got {eos_after!r}")
    return docs if eos_after == "document" else (line for doc in docs for line in doc.split("\n"))


def encode_stream(tok: Tokenizer, docs: list[str], eos_id: int, eos_after: EosAfter = "document") -> np.ndarray:
    """One flat int32 stream of token ids with eos_id after every document (or every line)."""
    # One growing array, not one per text: Wikitext-103 train has 1.8M lines.
    ids = chain.from_iterable(ids + [eos_id] for ids in encoded_ids(tok, eos_units(docs, eos_after)))
    return np.fromiter(ids, dtype=np.int32)


def build_corpus(
    splits: dict[str, list[str]],
    out_dir: Path,
    *,
    tokenizer: TokenizerKind,
    vocab_size: int | None,
    provenance: dict,
    seed: int | None,
    eos_after: EosAfter = "document",
) -> Path:
    """Train the tokenizer on the train split, encode every split, and write the corpus atomically.

    `vocab_size` is the BPE target; the 'word' tokenizer keeps every train word and takes None.
    `seed` is the split seed recorded in the manifest (None when the source brings its own splits).
    The tokenizer learns from the texts that are encoded: documents, or lines (see `eos_after`).
    """
    if sorted(splits) != sorted(SPLITS):
        raise ValueError(f"splits must be exactly {list(SPLITS)}, got {sorted(splits)}")
    _check_settings(tokenizer, vocab_size)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp_dir:
        tok = train_tokenizer(eos_units(splits["train"], eos_after), tokenizer, vocab_size)
        special_ids = {token: tok.token_to_id(token) for token in SPECIAL_TOKENS}
        split_stats = {}
        for split in SPLITS:
            stream = encode_stream(tok, splits[split], special_ids[EOS], eos_after)
            np.save(tmp_dir / f"{split}.npy", stream, allow_pickle=False)
            split_stats[split] = {
                "documents": len(splits[split]),
                "words": sum(len(doc.split()) for doc in splits[split]),
                "tokens": int(stream.size),
                "file": f"{split}.npy",
            }
            if eos_after == "line":  # one <eos> per line: tokens = words + lines for a word vocabulary
                split_stats[split]["lines"] = sum(doc.count("\n") + 1 for doc in splits[split])
        tok.save(str(tmp_dir / TOKENIZER_FILE))
        files = [f"{split}.npy" for split in SPLITS] + [TOKENIZER_FILE]
        manifest = {
            "format_version": FORMAT_VERSION,
            "provenance": provenance,
            "seed": seed,
            "eos_after": eos_after,
            "tokenizer": {
                "kind": tokenizer,
                "vocab_size_requested": vocab_size,
                "special_tokens": special_ids,
            },
            "vocab_size": tok.get_vocab_size(),
            "splits": split_stats,
            "sha256": sha256_files(tmp_dir, files),
        }
        write_manifest(tmp_dir, manifest)
    return out_dir


def _cache_error(out_dir: Path, problem: str) -> CorpusCacheError:
    return CorpusCacheError(f"corpus cache at {out_dir} is unusable: {problem}; {REBUILD_HINT}")


def load_corpus(out_dir: Path) -> Corpus:
    """Load a cached corpus after checking its manifest and every file's sha256."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir, FORMAT_VERSION, _cache_error)
    try:
        checksums = manifest["sha256"]
        special = manifest["tokenizer"]["special_tokens"]
        split_stats = manifest["splits"]
    except (KeyError, TypeError) as err:
        raise _cache_error(out_dir, f"damaged manifest {MANIFEST_FILE} (no {err})") from err
    verify_files(out_dir, checksums, _cache_error)
    tokens = {}
    for split, stats in split_stats.items():
        array = np.load(out_dir / stats["file"], allow_pickle=False)
        if array.ndim != 1 or array.size != stats["tokens"]:
            raise _cache_error(
                out_dir,
                f"damaged file {stats['file']} (shape {array.shape}, manifest says {stats['tokens']} tokens)",
            )
        tokens[split] = torch.from_numpy(array.astype(np.int64))
    return Corpus(
        tokens=tokens,
        tokenizer=Tokenizer.from_file(str(out_dir / TOKENIZER_FILE)),
        manifest=manifest,
        vocab_size=manifest["vocab_size"],
        eos_id=special[EOS],
        pad_id=special[PAD],
    )


def ensure_corpus(
    out_dir: Path,
    make_splits: Callable[[], tuple[dict[str, list[str]], dict]],
    *,
    tokenizer: TokenizerKind,
    vocab_size: int | None,
    seed: int | None,
    source: str | None = None,
    eos_after: EosAfter = "document",
    log: Callable[[str], None] = print,
) -> Corpus:
    """Reuse the corpus at out_dir if it is intact and was built with these settings, else rebuild it.

    `make_splits` returns (splits, provenance) and is only called when a rebuild is needed; `source`,
    when given, must equal the cached provenance source (so a changed data source is noticed).
    Corpora cached before `eos_after` existed put `<eos>` after every document.
    """
    out_dir = Path(out_dir)
    with file_lock(out_dir.parent / f".{out_dir.name}.lock"):  # one builder at a time; the others reuse its corpus
        return _ensure_corpus(out_dir, make_splits, tokenizer=tokenizer, vocab_size=vocab_size, seed=seed,
                              source=source, eos_after=eos_after, log=log)


def _ensure_corpus(out_dir, make_splits, *, tokenizer, vocab_size, seed, source, eos_after, log) -> Corpus:
    wanted = {"tokenizer": tokenizer, "vocab_size": vocab_size, "seed": seed}
    if source is not None:
        wanted["source"] = source
    corpus, reason = cached_corpus(out_dir, load_corpus, wanted)
    cached_eos = corpus.manifest.get("eos_after", "document") if corpus is not None else None
    if corpus is not None and cached_eos != eos_after:
        corpus, reason = None, f"cached corpus puts <eos> after every {cached_eos}, wanted every {eos_after}"
    if corpus is not None:
        log(f"reusing cached corpus at {out_dir}")
        return corpus
    log(f"building corpus at {out_dir}: {reason}")
    splits, provenance = make_splits()
    build_corpus(
        splits,
        out_dir,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        provenance=provenance,
        seed=seed,
        eos_after=eos_after,
    )
    return load_corpus(out_dir)
