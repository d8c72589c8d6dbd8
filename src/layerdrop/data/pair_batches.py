"""Sentence pairs as token tensors, their padded batches, and token-budget batching by length: the
batch layer under `MTDataModule` (data/mt.py), which serves translation, summarisation and QA."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from layerdrop.data.batches import EpochBatches
from layerdrop.data.lm import IGNORE_INDEX
from layerdrop.data.mt_corpus import Ragged

BUCKET_PAIRS = 4096  # pairs sorted together by length: small padding, yet a shuffled epoch


class PairDataset(Dataset):
    """Pairs `ids` of one split as token tensors, cut to at most max_src/max_tgt tokens.

    The lengths the batches are planned with include the `<eos>` (source) or `<bos>`/`<eos>` (target)
    that `collate` adds.
    """

    def __init__(self, src: Ragged, tgt: Ragged, ids: np.ndarray, max_src: int, max_tgt: int) -> None:
        self.src, self.tgt, self.ids = src, tgt, ids
        self.max_src, self.max_tgt = max_src, max_tgt
        self.src_lens = np.minimum(src.lengths[ids], max_src) + 1
        self.tgt_lens = np.minimum(tgt.lengths[ids], max_tgt) + 1

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> dict:
        i = int(self.ids[k])
        return {
            "id": i,
            "src": torch.from_numpy(self.src[i][: self.max_src].astype(np.int64)),
            "tgt": torch.from_numpy(self.tgt[i][: self.max_tgt].astype(np.int64)),
        }


def collate(items: list[dict], pad_id: int, bos_id: int, eos_id: int) -> dict[str, torch.Tensor]:
    """src = tokens + <eos> (pad_id), tgt_in = <bos> + target (pad_id), tgt_out = target + <eos> (-100)."""
    batch = len(items)
    src_len = max(len(item["src"]) for item in items) + 1
    tgt_len = max(len(item["tgt"]) for item in items) + 1
    src = torch.full((batch, src_len), pad_id, dtype=torch.long)
    tgt_in = torch.full((batch, tgt_len), pad_id, dtype=torch.long)
    tgt_out = torch.full((batch, tgt_len), IGNORE_INDEX, dtype=torch.long)
    for row, item in enumerate(items):
        n, m = len(item["src"]), len(item["tgt"])
        src[row, :n], src[row, n] = item["src"], eos_id
        tgt_in[row, 0], tgt_in[row, 1 : m + 1] = bos_id, item["tgt"]
        tgt_out[row, :m], tgt_out[row, m] = item["tgt"], eos_id
    ids = torch.tensor([item["id"] for item in items], dtype=torch.long)
    return {"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out, "ids": ids}


class TokenBatchSampler(EpochBatches):
    """Batches of dataset positions whose padded size B * (max src len + max tgt len) <= max_tokens.

    Training (shuffle=True): epoch e shuffles the pairs with a generator seeded by (seed, e), sorts
    buckets of `bucket_pairs` pairs by length, packs them greedily and shuffles the batches.
    Evaluation: the whole split sorted by length, the same every time. Every pair is in exactly one
    batch. With ``shard=True`` (the train loader) under DDP each rank takes every world-th batch
    (see ``EpochBatches``); evaluation loaders are not sharded.
    """

    def __init__(
        self,
        src_lens: np.ndarray,
        tgt_lens: np.ndarray,
        max_tokens: int,
        shuffle: bool,
        seed: int = 0,
        bucket_pairs: int = BUCKET_PAIRS,
        shard: bool = False,
    ) -> None:
        self.src_lens, self.tgt_lens = np.asarray(src_lens), np.asarray(tgt_lens)
        longest = int((self.src_lens + self.tgt_lens).max(initial=0))
        if longest > max_tokens:
            raise ValueError(f"a pair needs {longest} tokens, more than max_tokens={max_tokens}")
        self.max_tokens, self.shuffle, self.seed, self.bucket_pairs = max_tokens, shuffle, seed, bucket_pairs
        super().__init__(self._plan, shard=shard)

    def _pack(self, positions: np.ndarray) -> Iterator[list[int]]:
        """Greedy batches over `positions` sorted by (source, target) length."""
        positions = positions[np.lexsort((self.tgt_lens[positions], self.src_lens[positions]))]
        batch: list[int] = []
        max_src = max_tgt = 0
        lengths = zip(self.src_lens[positions].tolist(), self.tgt_lens[positions].tolist())
        for k, (k_src, k_tgt) in zip(positions.tolist(), lengths):
            src, tgt = max(max_src, k_src), max(max_tgt, k_tgt)
            if batch and (len(batch) + 1) * (src + tgt) > self.max_tokens:
                yield batch
                batch, src, tgt = [], k_src, k_tgt
            batch.append(k)
            max_src, max_tgt = src, tgt
        if batch:
            yield batch

    def _plan(self, epoch: int) -> list[list[int]]:
        positions = np.arange(len(self.src_lens))
        if not self.shuffle:
            return list(self._pack(positions))
        rng = np.random.default_rng([self.seed, epoch])
        positions = rng.permutation(positions)
        buckets = (positions[i : i + self.bucket_pairs] for i in range(0, len(positions), self.bucket_pairs))
        batches = [batch for bucket in buckets for batch in self._pack(bucket)]
        return [batches[i] for i in rng.permutation(len(batches))]


def sample_batches(dataset: PairDataset, count: int, pad_id: int, bos_id: int, eos_id: int,
                   batch_sentences: int = 64, seed: int = 0) -> list[dict]:
    """A seeded random sample of ``count`` pairs of ``dataset`` (all lengths, unlike the first batches of a
    length-sorted loader), collated in batches of ``batch_sentences`` pairs of similar length."""
    g = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(dataset), generator=g)[:count].tolist()
    picked.sort(key=lambda k: int(dataset.src_lens[k]))
    items = [dataset[k] for k in picked]
    return [collate(items[i : i + batch_sentences], pad_id, bos_id, eos_id)
            for i in range(0, len(items), batch_sentences)]
