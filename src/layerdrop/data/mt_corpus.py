"""Machine-translation corpora (English-German): built, cached and checksummed on disk.

A corpus directory holds, for every split and language (en, de), the BPE token ids of each sentence
as a ragged array (`{split}.{lang}.ids.npy`, flat int32, and `{split}.{lang}.offsets.npy`, int64
with one more entry than sentences), the cleaned text (`{split}.{lang}`, one sentence a line: the
references for BLEU), `tokenizer.json` (one joint byte-level BPE trained on train en+de) and
`manifest.json`. Languages, not directions, are stored, so one corpus serves en-de and de-en.
Corpora are built in a temporary directory and renamed into place (see cache.py).

Sources: `debian` (LibreOffice help, Ding and DDTP pairs, see debian_sources.py and mt_sources.py)
split by document with a seed, or `hub`: a `datasets` translation set in the WMT16 layout
(`translation: {"de": .., "en": ..}` with train/validation/test splits). Hugging Face's `wmt16`
`de-en` has 4.5M train pairs, validation = newstest2015 (2,169) and test = newstest2016 (2,999); the
paper (after Ott et al. 2018) validates on newstest2013 and tests on newstest2014, which are exactly
the validation/test splits of `wmt/wmt14` `de-en` (same layout, 4.5M train pairs). Either maps
validation -> valid, test -> test. Line-aligned text files are read by `from_text_files`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

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
from layerdrop.data.corpus import EOS, PAD, UNK, encoded_ids, train_tokenizer
from layerdrop.data.debian_sources import debian_pairs
from layerdrop.data.mt_sources import Pair, clean_pairs, normalise, split_pairs
from layerdrop.data.sources import HUB_SPLITS, hub_provenance, load_hub
from layerdrop.utils.lock import file_lock

MT_FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
LANGS = ("en", "de")
BOS = "<bos>"
SPECIAL_TOKENS = [PAD, EOS, UNK, BOS]
DIRECTIONS = ("en-de", "de-en")
VALID_FRAC = TEST_FRAC = 0.05
MT_REBUILD_HINT = "it will be rebuilt by the next `make data-mt` (or any run that prepares the data)"
WMT_LICENSE = (
    "WMT news translation task data, research use; its parts (Europarl, Common Crawl, News "
    "Commentary, newstest) carry their own terms, see the data set's card"
)
_ENCODE_CHUNK = 4096


# ---------------------------------------------------------------------------------------------------
# Ragged token arrays and the corpus on disk


@dataclass
class Ragged:
    """Variable-length int sequences stored as one flat array and offsets (len(offsets) = n + 1)."""

    flat: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i] : self.offsets[i + 1]]

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def encode_ragged(tok: Tokenizer, lines: list[str]) -> Ragged:
    lengths, pieces = [0], []
    for ids in encoded_ids(tok, lines, _ENCODE_CHUNK):
        pieces.append(np.asarray(ids, dtype=np.int32))
        lengths.append(len(ids))
    flat = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    return Ragged(flat, np.cumsum(lengths, dtype=np.int64))


@dataclass
class MTCorpus:
    ids: dict[str, dict[str, Ragged]]  # split -> lang -> token ids (no special tokens)
    text: dict[str, dict[str, list[str]]]  # split -> lang -> sentences
    tokenizer: Tokenizer
    manifest: dict
    vocab_size: int
    pad_id: int
    eos_id: int
    bos_id: int


def _files(split: str, lang: str) -> tuple[str, str, str]:
    return f"{split}.{lang}.ids.npy", f"{split}.{lang}.offsets.npy", f"{split}.{lang}"


def train_joint_tokenizer(train: list[tuple[str, str]], vocab_size: int) -> Tokenizer:
    """One byte-level BPE for both languages, trained on the train pairs only.

    corpus.train_tokenizer brings `<pad>`, `<eos>`, `<unk>`; `<bos>` is added after training and
    takes the last id, so the vocabulary is still `vocab_size` entries.
    """
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} (256 bytes + special tokens), "
            f"got {vocab_size}"
        )
    lines = [en for en, _ in train] + [de for _, de in train]
    tok = train_tokenizer(lines, "bpe", vocab_size - 1)
    tok.add_special_tokens([BOS])
    return tok


def _check_pairs(splits: dict[str, list[tuple[str, str]]]) -> None:
    if sorted(splits) != sorted(SPLITS):
        raise ValueError(f"splits must be exactly {list(SPLITS)}, got {sorted(splits)}")
    for split, pairs in splits.items():
        if not pairs:
            raise ValueError(f"split {split!r} has no pairs")
        for i, pair in enumerate(pairs):
            if any(not text or text != normalise(text) for text in pair):
                raise ValueError(
                    f"{split} pair {i} {pair!r} is empty or not normalised; pass pairs through "
                    "mt_sources.clean_pairs (or from_text_files) first"
                )


def _split_stats(pairs: list[tuple[str, str]], ids: dict[str, Ragged], train_sources: set[str],
                 sides: tuple[str, str] = LANGS) -> dict:
    stats = {"pairs": len(pairs)}
    for k, side in enumerate(sides):
        stats[f"{side}_words"] = sum(len(pair[k].split()) for pair in pairs)
        stats[f"{side}_tokens"] = int(ids[side].flat.size)
    # Sources also seen in train (with another target there): a measure of overlap.
    stats[f"{sides[0]}_in_train"] = sum(src in train_sources for src, _ in pairs)
    return stats


def build_mt_corpus(
    splits: dict[str, list[tuple[str, str]]],
    out_dir: Path,
    *,
    vocab_size: int,
    provenance: dict,
    seed: int | None,
    sides: tuple[str, str] = LANGS,
    task: str = "translation",
) -> Path:
    """Train the joint tokenizer on train, encode every split, and write the corpus atomically.

    `splits` maps train/valid/test to cleaned (en, de) pairs; `seed` is the split seed recorded in
    the manifest (None when the source brings its own splits). Other pair tasks (summarisation, QA:
    data/text_pairs.py) name their `sides` (source, target) and `task`, and share the format.
    """
    _check_pairs(splits)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp_dir:
        tok = train_joint_tokenizer(splits["train"], vocab_size)
        train_sources = {src for src, _ in splits["train"]}
        files, split_stats = [TOKENIZER_FILE], {}
        for split in SPLITS:
            ids = {}
            for k, lang in enumerate(sides):
                lines = [pair[k] for pair in splits[split]]
                ids[lang] = encode_ragged(tok, lines)
                ids_file, offsets_file, text_file = _files(split, lang)
                np.save(tmp_dir / ids_file, ids[lang].flat, allow_pickle=False)
                np.save(tmp_dir / offsets_file, ids[lang].offsets, allow_pickle=False)
                (tmp_dir / text_file).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                files += [ids_file, offsets_file, text_file]
            split_stats[split] = _split_stats(splits[split], ids, train_sources, sides)
        tok.save(str(tmp_dir / TOKENIZER_FILE))
        manifest = {
            "format_version": MT_FORMAT_VERSION,
            "task": task,
            "languages": list(sides),
            "provenance": provenance,
            "seed": seed,
            "tokenizer": {
                "kind": "bpe",
                "vocab_size_requested": vocab_size,
                "special_tokens": {token: tok.token_to_id(token) for token in SPECIAL_TOKENS},
                "trained_on": f"train {sides[0]} + {sides[1]}",
            },
            "vocab_size": tok.get_vocab_size(),
            "splits": split_stats,
            "sha256": sha256_files(tmp_dir, files),
        }
        write_manifest(tmp_dir, manifest)
    return out_dir


def _cache_error(out_dir: Path, problem: str) -> CorpusCacheError:
    return CorpusCacheError(f"MT corpus cache at {out_dir} is unusable: {problem}; {MT_REBUILD_HINT}")


def _load_ragged(out_dir: Path, split: str, lang: str, pairs: int) -> Ragged:
    ids_file, offsets_file, _ = _files(split, lang)
    ids = Ragged(
        np.load(out_dir / ids_file, allow_pickle=False), np.load(out_dir / offsets_file, allow_pickle=False)
    )
    consistent = (
        ids.flat.ndim == 1
        and ids.offsets.shape == (pairs + 1,)
        and ids.offsets[0] == 0
        and ids.offsets[-1] == ids.flat.size
        and bool(np.all(ids.lengths >= 0))
    )
    if not consistent:
        raise _cache_error(out_dir, f"damaged {ids_file}/{offsets_file} (do not hold {pairs} sentences)")
    return ids


def load_mt_corpus(out_dir: Path, task: str = "translation") -> MTCorpus:
    """Load a cached pair corpus of `task` after checking its manifest and every file's sha256."""
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir, MT_FORMAT_VERSION, _cache_error, task=task)
    try:
        checksums = manifest["sha256"]
        special = manifest["tokenizer"]["special_tokens"]
        pairs = {split: manifest["splits"][split]["pairs"] for split in SPLITS}
        sides = tuple(manifest["languages"])
    except (KeyError, TypeError) as err:
        raise _cache_error(out_dir, f"damaged manifest {MANIFEST_FILE} (no {err})") from err
    verify_files(out_dir, checksums, _cache_error)
    ids: dict[str, dict[str, Ragged]] = {}
    text: dict[str, dict[str, list[str]]] = {}
    for split in SPLITS:
        ids[split], text[split] = {}, {}
        for lang in sides:
            ids[split][lang] = _load_ragged(out_dir, split, lang, pairs[split])
            # split('\n'), not splitlines(): a sentence may contain other Unicode line separators.
            lines = (out_dir / _files(split, lang)[2]).read_text(encoding="utf-8").split("\n")[:-1]
            if len(lines) != pairs[split]:
                raise _cache_error(out_dir, f"{split}.{lang} has {len(lines)} lines, not {pairs[split]}")
            text[split][lang] = lines
    return MTCorpus(
        ids=ids,
        text=text,
        tokenizer=Tokenizer.from_file(str(out_dir / TOKENIZER_FILE)),
        manifest=manifest,
        vocab_size=manifest["vocab_size"],
        pad_id=special[PAD],
        eos_id=special[EOS],
        bos_id=special[BOS],
    )


def ensure_mt_corpus(
    out_dir: Path,
    make_splits: Callable[[], tuple[dict[str, list[tuple[str, str]]], dict]],
    *,
    vocab_size: int,
    seed: int | None,
    source: str,
    log: Callable[[str], None] = print,
    sides: tuple[str, str] = LANGS,
    task: str = "translation",
) -> MTCorpus:
    """Reuse the corpus at out_dir if it is intact and was built with these settings, else rebuild it.

    `make_splits` returns (splits, provenance) and is only called when a rebuild is needed.
    """
    out_dir = Path(out_dir)
    wanted = {"tokenizer": "bpe", "vocab_size": vocab_size, "seed": seed, "source": source}
    with file_lock(out_dir.parent / f".{out_dir.name}.lock"):  # one builder at a time; the others reuse its corpus
        corpus, reason = cached_corpus(out_dir, partial(load_mt_corpus, task=task), wanted)
        if corpus is not None:
            log(f"reusing cached {task} corpus at {out_dir}")
            return corpus
        log(f"building {task} corpus at {out_dir}: {reason}")
        splits, provenance = make_splits()
        if provenance.get("source") != source:
            raise ValueError(f"make_splits gave source {provenance.get('source')!r}, expected {source!r}")
        build_mt_corpus(splits, out_dir, vocab_size=vocab_size, provenance=provenance, seed=seed, sides=sides, task=task)
        return load_mt_corpus(out_dir, task)


# ---------------------------------------------------------------------------------------------------
# Sources as splits


def debian_splits(
    raw_dir: Path, seed: int, **subset: int | bool | None
) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Cleaned Debian pairs split by document; `subset` goes to debian_sources.debian_pairs."""
    pairs, provenance = debian_pairs(raw_dir, **subset)
    kept, cleaning = clean_pairs(pairs)
    provenance["cleaning"] = cleaning
    provenance["split"] = {
        "by": "document (help page, dictionary entry, package description)",
        "valid_frac": VALID_FRAC,
        "test_frac": TEST_FRAC,
        "documents": len({doc_id for _, _, doc_id in kept}),
    }
    return split_pairs(kept, seed, VALID_FRAC, TEST_FRAC), provenance


def hub_pairs(path: str, name: str | None, data_files: dict | None) -> dict[str, list[Pair]]:
    """Raw pairs of a `datasets` translation set in the WMT16 layout, as train/valid/test.

    doc_id is `{split}:{row}`; the hub's own splits are kept, so documents play no part.
    """
    loaded = load_hub(path, name, data_files)
    splits = {}
    for hub_split, split in HUB_SPLITS.items():
        if "translation" not in loaded[hub_split].column_names:
            raise ValueError(
                f"{path} ({name}) split {hub_split!r} has columns {loaded[hub_split].column_names}; "
                "the WMT16 layout needs a 'translation' column of {'de': ..., 'en': ...}"
            )
        pairs = []
        for row, pair in enumerate(loaded[hub_split]["translation"]):
            if not isinstance(pair, dict) or not set(LANGS) <= set(pair):
                raise ValueError(
                    f"{path} ({name}) {hub_split} row {row}: translation {pair!r} lacks 'en' or 'de'"
                )
            pairs.append((pair["en"] or "", pair["de"] or "", f"{split}:{row}"))
        splits[split] = pairs
    return splits


def hub_splits(
    path: str, name: str | None, data_files: dict | None
) -> tuple[dict[str, list[tuple[str, str]]], dict]:
    """Hub pairs with only empty ones dropped (counted): official test sets stay whole."""
    splits, cleaning = {}, {}
    for split, pairs in hub_pairs(path, name, data_files).items():
        kept, stats = clean_pairs(pairs, drop_untranslated=False, dedup=False)
        splits[split] = [(en, de) for en, de, _ in kept]
        cleaning[split] = stats.get(split, {"pairs": 0})
    provenance = hub_provenance(path, name, data_files)
    provenance["license"] = WMT_LICENSE if "wmt" in path.lower() else provenance["license"]
    provenance["splits"] = dict(HUB_SPLITS)
    provenance["cleaning"] = cleaning
    return splits, provenance


def from_text_files(
    src_path: Path, tgt_path: Path, direction: str = "en-de"
) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(en, de) pairs from two line-aligned text files (source and target language of `direction`).

    Lines empty on either side are dropped and counted; files of different lengths are an error.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    src_lines, tgt_lines = (_text_lines(Path(path)) for path in (src_path, tgt_path))
    if len(src_lines) != len(tgt_lines):
        raise ValueError(
            f"line counts differ: {src_path} has {len(src_lines)} lines, {tgt_path} has {len(tgt_lines)}; "
            "the files must be line-aligned translations"
        )
    stats = Counter(lines=len(src_lines), empty_source=0, empty_target=0)
    pairs = []
    for src, tgt in zip(src_lines, tgt_lines):
        src, tgt = normalise(src), normalise(tgt)
        if not src:
            stats["empty_source"] += 1
        elif not tgt:
            stats["empty_target"] += 1
        else:
            pairs.append((src, tgt) if direction == "en-de" else (tgt, src))
    stats["kept"] = len(pairs)
    return pairs, dict(stats)


def _text_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").split("\n")
    return lines[:-1] if lines[-1] == "" else lines
