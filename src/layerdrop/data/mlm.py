"""The cpu pretraining corpus: a union of English sources from packages (``data/english_sources.py``), as
the LM's token blocks (masking is the task's, ``lit/mlm.py``).

Each source is split by document on its own (``split_documents``: 5% valid, 5% test, seeded), so every
split holds every source in proportion; then each split's documents are shuffled together (seeded), so
that a ``max_train_tokens`` prefix of train and the first ``limit_val_batches`` of valid are a mix of the
sources, not the first of them. A document found in two sources is kept once.

`python -m layerdrop.data.mlm --data-dir data` builds it (what `make data-mlm` runs) and prints its sizes.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence

from layerdrop.data.corpus import SPLITS, ensure_corpus
from layerdrop.data.english_sources import ENGLISH_SOURCES
from layerdrop.data.lm import LMDataModule, format_manifest
from layerdrop.data.sources import split_documents

SOURCES = tuple(ENGLISH_SOURCES)


def check_sources(sources: Sequence[str]) -> list[str]:
    sources = [str(s) for s in sources]
    if not sources:
        raise ValueError(f"sources must name at least one of {', '.join(SOURCES)}, got []")
    unknown = [s for s in sources if s not in SOURCES]
    if unknown:
        raise ValueError(f"sources={sources}: {', '.join(map(repr, unknown))} not known; allowed: {', '.join(SOURCES)}")
    if len(set(sources)) < len(sources):
        raise ValueError(f"sources={sources}: a source is named twice")
    return sources


def union_splits(documents: dict[str, list[str]], seed: int) -> tuple[dict[str, list[str]], dict]:
    """Train/valid/test documents of several sources (name -> documents): each source split on its own by
    ``seed``, then every split's documents shuffled together. Returns the splits and per-source counts
    (documents and words per split)."""
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    seen: set[str] = set()
    counts: dict[str, dict[str, int]] = {}
    for name, docs in documents.items():
        kept = [doc for doc in dict.fromkeys(docs) if doc not in seen]
        seen.update(kept)
        parts = split_documents(kept, seed)
        counts[name] = {"documents": len(docs), "dropped_repeated": len(docs) - len(kept),
                        **{split: len(parts[split]) for split in SPLITS},
                        **{f"{split}_words": sum(len(doc.split()) for doc in parts[split]) for split in SPLITS}}
        for split in SPLITS:
            splits[split] += parts[split]
    for split in SPLITS:
        random.Random(f"{seed}:{split}").shuffle(splits[split])
    return splits, counts


class UnionTextDataModule(LMDataModule):
    """``LMDataModule`` over the union of ``sources`` (see the module doc) instead of one source; the corpus
    is cached under ``{data_dir}/lm/union-<sources>_<tokenizer>_s<split_seed>``."""

    def __init__(self, sources: Sequence[str], **kwargs) -> None:
        """``sources``, then ``LMDataModule``'s keyword arguments but its ``source`` and the hub's."""
        foreign = sorted(set(kwargs) & {"source", "hub_path", "hub_name", "hub_data_files"})
        if foreign:
            raise ValueError(f"{', '.join(foreign)}: the union corpus reads data.sources, not a single or hub source")
        sources = check_sources(sources)  # a plain list: a checkpoint's hparams cannot hold Hydra's ListConfig
        super().__init__("news", **kwargs)
        self.sources = tuple(sources)

    @property
    def source_id(self) -> str:
        return "offline:" + "+".join(self.sources)

    @property
    def corpus_name(self) -> str:
        tok = f"bpe{self.requested_vocab_size}" if self.tokenizer_kind == "bpe" else "word"
        return f"union-{'+'.join(self.sources)}_{tok}_s{self.split_seed}"

    def _union_splits(self) -> tuple[dict[str, list[str]], dict]:
        documents, provenance = {}, {}
        for name in self.sources:
            documents[name], provenance[name] = ENGLISH_SOURCES[name](self.raw_dir)
        splits, counts = union_splits(documents, self.split_seed)
        for name in self.sources:
            provenance[name]["split"] = counts[name]
        return splits, {"source": self.source_id, "license": "per source, see sources", "sources": provenance}

    def prepare_data(self) -> None:
        ensure_corpus(self.corpus_dir, self._union_splits, tokenizer=self.tokenizer_kind,
                      vocab_size=self.requested_vocab_size, seed=self.split_seed, source=self.source_id,
                      eos_after="document")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build (or verify) the cached cpu pretraining corpus.")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma-separated, of {', '.join(SOURCES)}")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--raw-dir", default=None, help="where the downloaded packages live (default DATA_DIR/raw)")
    args = parser.parse_args(argv)
    dm = UnionTextDataModule(args.sources.split(","), data_dir=args.data_dir, vocab_size=args.vocab_size,
                             split_seed=args.seed, raw_dir=args.raw_dir, frequency_order=False)
    dm.prepare_data()
    dm.setup()
    print(format_manifest(dm.corpus_dir, dm.corpus_manifest))
    for name, info in dm.corpus_manifest["provenance"]["sources"].items():
        print(f"  {name:<10} {info['split']}")


if __name__ == "__main__":
    main()
