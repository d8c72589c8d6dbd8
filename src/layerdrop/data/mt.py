"""Machine-translation data (English-German): token-budget batches over cached corpora.

The corpora (one per source, serving both directions) are built and cached by mt_corpus.py;
`MTDataModule` turns one into batches of padded (source, target) pairs for a direction (the pair
datasets, padding and token-budget batching are in pair_batches.py).

`python -m layerdrop.data.mt --data-dir data` builds the Debian corpus (what `make data-mt` runs).
"""

from __future__ import annotations

import argparse
import json
import random
from functools import partial
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info
from tokenizers import Tokenizer
from torch.utils.data import DataLoader

from layerdrop.data.batches import ResumableLoader, trainer_progress
from layerdrop.data.cache import hub_corpus_name, plain_data_files
from layerdrop.data.debian_sources import DEBIAN_SOURCE
from layerdrop.data.mt_corpus import (
    DIRECTIONS,
    LANGS,
    MTCorpus,
    debian_splits,
    ensure_mt_corpus,
    hub_splits,
    load_mt_corpus,
)
from layerdrop.data.pair_batches import PairDataset, TokenBatchSampler, collate
from layerdrop.data.sources import hub_source

SOURCES = ("debian", "hub")


# ---------------------------------------------------------------------------------------------------
# The DataModule (datasets and token-budget batches: pair_batches.py)


class MTDataModule(pl.LightningDataModule):
    #: what the corpus manifest says it holds, the folder under data_dir, the directions a corpus serves
    corpus_task: str = "translation"
    corpus_root: str = "mt"
    directions: tuple[str, ...] = DIRECTIONS
    #: train pairs whose source is too long: "skip" them (translation) or "truncate" them (summarisation)
    long_train_source: str = "skip"

    """English-German pairs from Debian packages (`source="debian"`) or a `datasets` set (`"hub"`).

    The corpus is cached under `{data_dir}/mt/{corpus_name}` and serves both directions. Batches hold
    up to `max_tokens` padded source + target tokens. Train pairs whose source (target) needs more
    than max_source_len (max_target_len) positions are skipped; valid/test pairs are cut to fit, so
    every reference is scored; both are counted in `self.stats`. `max_train_pairs` takes a seeded
    random subset of the usable train pairs. After `setup`, `vocab_size` is the tokenizer's size.
    """

    def __init__(
        self,
        source: str,
        data_dir: str = "data",
        vocab_size: int = 8000,
        max_tokens: int = 4096,
        max_source_len: int = 256,
        max_target_len: int = 256,
        split_seed: int = 1234,
        hub_path: str = "wmt16",
        hub_name: str | None = "de-en",
        hub_data_files: dict | None = None,
        direction: str = "en-de",
        max_train_pairs: int | None = None,
        num_workers: int = 0,
        raw_dir: str | None = None,
        eval_max_tokens: int | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if direction not in self.directions:
            raise ValueError(f"direction must be one of {self.directions}, got {direction!r}")
        if source == "hub" and not hub_path:
            raise ValueError("source 'hub' needs hub_path (e.g. 'wmt16', 'wmt/wmt14', 'json' or 'parquet')")
        if max_source_len < 2 or max_target_len < 2:
            raise ValueError(
                f"max_source_len and max_target_len must be at least 2 (a token and <eos>), "
                f"got {max_source_len} and {max_target_len}"
            )
        if max_tokens < max_source_len + max_target_len:
            raise ValueError(
                f"max_tokens={max_tokens} must be at least max_source_len + max_target_len = "
                f"{max_source_len + max_target_len}, so that the longest pair fits in a batch"
            )
        if max_train_pairs is not None and max_train_pairs < 1:
            raise ValueError(f"max_train_pairs must be positive or None, got {max_train_pairs}")
        # Hydra hands over a DictConfig, which a checkpoint's hparams could not hold: a resume or checkpoint
        # average (torch.load weights_only=True) would refuse it.
        hub_data_files = plain_data_files(hub_data_files)
        self.save_hyperparameters()
        self.source = source
        self.data_dir = Path(data_dir)
        self.raw_dir = Path(raw_dir) if raw_dir else self.data_dir / "raw"
        self.requested_vocab_size = vocab_size
        self.max_tokens = max_tokens
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.split_seed = split_seed
        self.hub_path, self.hub_name = hub_path, hub_name
        self.hub_data_files = plain_data_files(hub_data_files)
        self.src_lang, self.tgt_lang = direction.split("-")
        self.max_train_pairs = max_train_pairs
        self.num_workers = num_workers
        self.shuffle_seed = split_seed if shuffle_seed is None else shuffle_seed  # the training order
        self.eval_max_tokens = eval_max_tokens or max_tokens
        if self.eval_max_tokens < max_source_len + max_target_len:
            raise ValueError(f"eval_max_tokens={self.eval_max_tokens} must be at least max_source_len + "
                             f"max_target_len = {max_source_len + max_target_len}")
        # Set by setup():
        self.vocab_size: int | None = None
        self.pad_id = self.eos_id = self.bos_id = None
        self.tokenizer: Tokenizer | None = None
        self.corpus_manifest: dict | None = None
        self.stats: dict = {}
        self.datasets: dict[str, PairDataset] = {}
        self.texts: dict[str, dict[str, list[str]]] = {}

    @property
    def corpus_name(self) -> str:
        tag = f"bpe{self.requested_vocab_size}"
        if self.source == "debian":
            return f"debian_{tag}_s{self.split_seed}"
        return hub_corpus_name(self.hub_path, self.hub_name, self.hub_data_files, tag)

    @property
    def corpus_dir(self) -> Path:
        return self.data_dir / self.corpus_root / self.corpus_name

    def make_splits(self) -> tuple[dict[str, list[tuple[str, str]]], dict]:
        """(train/valid/test pairs, provenance) of the configured source: called only to (re)build the corpus."""
        if self.source == "debian":
            return debian_splits(self.raw_dir, self.split_seed)
        return hub_splits(self.hub_path, self.hub_name, self.hub_data_files)

    @property
    def source_label(self) -> str:
        """The provenance `source` a corpus of this configuration must carry."""
        if self.source == "debian":
            return DEBIAN_SOURCE
        return hub_source(self.hub_path, self.hub_name, self.hub_data_files)

    def prepare_data(self) -> None:
        # A hub data set brings its own splits, so no seed goes into its corpus.
        ensure_mt_corpus(
            self.corpus_dir,
            self.make_splits,
            vocab_size=self.requested_vocab_size,
            seed=self.split_seed if self.source == "debian" else None,
            source=self.source_label,
            sides=(self.src_lang, self.tgt_lang) if self.corpus_task != "translation" else LANGS,
            task=self.corpus_task,
        )

    def _train_ids(self, corpus: MTCorpus) -> tuple[np.ndarray, dict[str, int]]:
        src_lens = corpus.ids["train"][self.src_lang].lengths + 1
        tgt_lens = corpus.ids["train"][self.tgt_lang].lengths + 1
        long_src = src_lens > self.max_source_len
        truncate = self.long_train_source == "truncate"
        long_tgt = (truncate | ~long_src) & (tgt_lens > self.max_target_len)
        ids = np.flatnonzero((truncate | ~long_src) & ~long_tgt)
        stats = {"pairs": len(src_lens)}
        if truncate:
            stats["truncated_source"] = int((long_src & ~long_tgt).sum())
        else:
            stats["skipped_source_too_long"] = int(long_src.sum())
        stats["skipped_target_too_long"] = int(long_tgt.sum())
        if len(ids) == 0:
            raise ValueError(
                f"no train pair of {self.corpus_name} fits: {stats} with max_source_len={self.max_source_len}, "
                f"max_target_len={self.max_target_len} (tokens, with <eos>); raise them or check the data")
        if self.max_train_pairs is not None and self.max_train_pairs < len(ids):
            chosen = random.Random(self.split_seed).sample(range(len(ids)), self.max_train_pairs)
            ids = ids[np.sort(chosen)]
        stats["used"] = len(ids)
        return ids, stats

    def _eval_stats(self, corpus: MTCorpus, split: str) -> dict[str, int]:
        return {
            "pairs": len(corpus.ids[split][self.src_lang]),
            "truncated_source": int(
                (corpus.ids[split][self.src_lang].lengths + 1 > self.max_source_len).sum()
            ),
            "truncated_target": int(
                (corpus.ids[split][self.tgt_lang].lengths + 1 > self.max_target_len).sum()
            ),
        }

    def setup(self, stage: str | None = None) -> None:
        if self.corpus_manifest is not None:
            return  # Lightning calls setup once per stage; the corpus is loaded once.
        corpus = load_mt_corpus(self.corpus_dir, self.corpus_task)
        self.tokenizer, self.corpus_manifest = corpus.tokenizer, corpus.manifest
        self.vocab_size, self.pad_id = corpus.vocab_size, corpus.pad_id
        self.eos_id, self.bos_id = corpus.eos_id, corpus.bos_id
        self.texts = corpus.text
        train_ids, train_stats = self._train_ids(corpus)
        self.stats = {"dropped_while_building": corpus.manifest["provenance"].get("cleaning", {})}
        self.stats["train"] = train_stats
        split_ids = {"train": train_ids}
        for split in ("valid", "test"):
            self.stats[split] = self._eval_stats(corpus, split)
            split_ids[split] = np.arange(self.stats[split]["pairs"])
        # Room for the <eos> of the source and the <bos>/<eos> of the target.
        self.datasets = {
            split: PairDataset(
                corpus.ids[split][self.src_lang],
                corpus.ids[split][self.tgt_lang],
                ids,
                self.max_source_len - 1,
                self.max_target_len - 1,
            )
            for split, ids in split_ids.items()
        }
        rank_zero_info(
            f"{self.corpus_task} data {self.corpus_name} ({self.src_lang}->{self.tgt_lang}): {json.dumps(self.stats)}"
        )

    def references(self, split: str) -> list[str]:
        """Target sentences of a split, indexed by the batch `ids` (the BLEU references)."""
        return self.texts[split][self.tgt_lang]

    def decode(self, token_ids: list[int]) -> str:
        """Detokenized text of a hypothesis, special tokens left out."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.datasets[split]
        sampler = TokenBatchSampler(
            dataset.src_lens, dataset.tgt_lens, self.max_tokens if shuffle else self.eval_max_tokens,
            shuffle=shuffle, seed=self.shuffle_seed, shard=shuffle,
        )
        kwargs = dict(batch_sampler=sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                      collate_fn=partial(collate, pad_id=self.pad_id, bos_id=self.bos_id, eos_id=self.eos_id))
        if shuffle:  # the train loader resumes mid-epoch from a checkpoint
            return ResumableLoader(dataset, progress=trainer_progress(self), **kwargs)
        return DataLoader(dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


# ---------------------------------------------------------------------------------------------------
# Command line


def format_mt_manifest(corpus_dir: Path, manifest: dict) -> str:
    prov, tok = manifest["provenance"], manifest["tokenizer"]
    lines = [
        f"corpus     {corpus_dir}",
        f"source     {prov['source']}",
        f"tokenizer  joint byte-level BPE (requested {tok['vocab_size_requested']}, "
        f"actual {manifest['vocab_size']}), specials {tok['special_tokens']}",
    ]
    for name, info in prov.get("sources", {}).items():
        versions = ", ".join(f"{pkg}={p['version']}" for pkg, p in info.get("packages", {}).items())
        if not versions:
            versions = f"{info.get('suite')} {info.get('release_version')} ({info.get('release_date')})"
        lines.append(f"  {name:<12} {versions}; license {info['license']}")
        lines.append(f"  {'':<12} extracted {info['extracted']}")
    for name, counts in prov.get("cleaning", {}).items():
        lines.append(f"  {name:<12} cleaning {counts}")
    lines.append(
        f"{'split':<6} {'pairs':>9} {'en words':>10} {'de words':>10} {'en tokens':>10} {'de tokens':>10}"
    )
    for split, s in manifest["splits"].items():
        lines.append(
            f"{split:<6} {s['pairs']:>9,} {s['en_words']:>10,} {s['de_words']:>10,} "
            f"{s['en_tokens']:>10,} {s['de_tokens']:>10,}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or verify) the cached Debian en-de MT corpus.")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--raw-dir", default=None, help="where the downloaded packages live (default DATA_DIR/raw)"
    )
    args = parser.parse_args(argv)
    dm = MTDataModule(
        "debian",
        data_dir=args.data_dir,
        vocab_size=args.vocab_size,
        split_seed=args.seed,
        raw_dir=args.raw_dir,
    )
    dm.prepare_data()
    dm.setup()
    print(format_mt_manifest(dm.corpus_dir, dm.corpus_manifest))


if __name__ == "__main__":
    main()
