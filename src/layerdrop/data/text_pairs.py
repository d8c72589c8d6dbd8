"""Summarisation and long-form QA data: text pairs other than translation, batched as translation is.

The paper's third task family (Table 3) maps a document to its summary (CNN/DailyMail) and a question
to a multi-sentence answer (ELI5). Both are sequence-to-sequence pairs, so they reuse the translation
corpus format (mt_corpus.py: ragged BPE ids, text files, one joint BPE trained on train, checksummed
manifest, atomic build) and its token-budget batches (mt.py), with their own `sides` instead of
languages and their own corpus folder and manifest task:

| task            | sides (source, target) | offline source (`debian`)                         | paper source (`hub`)           |
|-----------------|------------------------|---------------------------------------------------|--------------------------------|
| `summarization` | document, summary      | DDTP long description -> synopsis (sum_sources)   | `cnn_dailymail` 3.0.0           |
| `qa`            | question, answer       | FOLDOC + Jargon File "What is X?" (qa_sources)    | an ELI5 copy (see conf/data)    |

The offline corpora are stand-ins: DDTP synopses are one noun phrase (extreme summarisation, like
XSum), and the QA questions are a template over dictionary headwords. Every table names them so.

Unlike translation, sources longer than `max_source_len` are truncated, never skipped, in every split
(the paper truncates CNN/DM articles to 400 tokens): `stats["train"]["truncated_source"]` counts
them. Train pairs whose target does not fit are skipped and counted; valid/test targets are cut for
the loss, and the references that ROUGE scores stay whole.

A hub set gives the texts by field: `hub_source_field` / `hub_target_field` name a column, or a path
into nested columns with dots (`answers.text`); a list takes its first element (ELI5's answers come
best-scored first).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerdrop.data.cache import hub_corpus_name
from layerdrop.data.mt import MTDataModule
from layerdrop.data.mt_corpus import SPLITS, TEST_FRAC, VALID_FRAC, load_mt_corpus
from layerdrop.data.mt_sources import Pair, clean_pairs, split_pairs
from layerdrop.data.qa_sources import QA_SOURCE, debian_qa_pairs
from layerdrop.data.sources import HUB_SPLITS, hub_provenance, hub_source, load_hub
from layerdrop.data.sum_sources import SUMMARY_SOURCE, debian_summary_pairs


@dataclass(frozen=True)
class PairTask:
    sides: tuple[str, str]
    folder: str  # under data_dir
    debian: Callable[[Path], tuple[list[Pair], dict]]  # raw_dir -> (source, target, doc_id) pairs, provenance
    debian_source: str
    split_by: str


PAIR_TASKS = {
    "summarization": PairTask(("document", "summary"), "sum", debian_summary_pairs, SUMMARY_SOURCE, "package"),
    "qa": PairTask(("question", "answer"), "qa", debian_qa_pairs, QA_SOURCE, "dictionary entry"),
}
SOURCES = ("debian", "hub")


def field_text(row: dict, field: str, where: str) -> str:
    """The text at `field` of a hub row: a column, or a dotted path into nested columns; a list gives its
    first element. A missing field is an error naming what the row has; a null or an empty list gives ''."""
    value: Any = row
    for part in field.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict) or part not in value:
            have = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise ValueError(f"{where}: no field {field!r} (at {part!r} it has {have})")
        value = value[part]
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {field!r} holds {type(value).__name__}, not text")
    return value


def hub_text_pairs(path: str, name: str | None, data_files: dict | None, source_field: str,
                   target_field: str) -> dict[str, list[Pair]]:
    """Raw (source, target, doc_id) pairs of every split of a hub set; doc_id is `{split}:{row}`."""
    loaded = load_hub(path, name, data_files)
    splits = {}
    for hub_split, split in HUB_SPLITS.items():
        rows = loaded[hub_split]
        splits[split] = [
            (field_text(row, source_field, f"{path} {hub_split} row {i}"),
             field_text(row, target_field, f"{path} {hub_split} row {i}"), f"{split}:{i}")
            for i, row in enumerate(rows)
        ]
    return splits


class TextPairDataModule(MTDataModule):
    """Summarisation (`task="summarization"`) or long-form QA (`task="qa"`) pairs from Debian packages
    (`source="debian"`, split by document with `split_seed`) or a `datasets` set (`source="hub"`, its
    own splits), cached under `{data_dir}/{sum|qa}/{corpus_name}`; batches as in MTDataModule."""

    long_train_source = "truncate"

    def __init__(
        self,
        task: str,
        source: str,
        data_dir: str = "data",
        vocab_size: int = 8000,
        max_tokens: int = 4096,
        max_source_len: int = 256,
        max_target_len: int = 64,
        split_seed: int = 1234,
        hub_path: str = "cnn_dailymail",
        hub_name: str | None = "3.0.0",
        hub_data_files: dict | None = None,
        hub_source_field: str = "article",
        hub_target_field: str = "highlights",
        max_train_pairs: int | None = None,
        num_workers: int = 0,
        raw_dir: str | None = None,
        eval_max_tokens: int | None = None,
        shuffle_seed: int | None = None,
    ) -> None:
        if task not in PAIR_TASKS:
            raise ValueError(f"task must be one of {tuple(PAIR_TASKS)}, got {task!r}")
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "hub" and not (hub_source_field and hub_target_field):
            raise ValueError("source 'hub' needs hub_source_field and hub_target_field (the columns of the pair)")
        self.pair_task = PAIR_TASKS[task]
        self.corpus_task, self.corpus_root = task, self.pair_task.folder
        self.directions = ("-".join(self.pair_task.sides),)
        super().__init__(
            source=source, data_dir=data_dir, vocab_size=vocab_size, max_tokens=max_tokens,
            max_source_len=max_source_len, max_target_len=max_target_len, split_seed=split_seed,
            hub_path=hub_path, hub_name=hub_name, hub_data_files=hub_data_files, direction=self.directions[0],
            max_train_pairs=max_train_pairs, num_workers=num_workers, raw_dir=raw_dir,
            eval_max_tokens=eval_max_tokens, shuffle_seed=shuffle_seed,
        )
        self.hub_source_field, self.hub_target_field = hub_source_field, hub_target_field

    @property
    def corpus_name(self) -> str:
        tag = f"bpe{self.requested_vocab_size}"
        if self.source == "debian":
            return f"debian_{tag}_s{self.split_seed}"
        fields = f"{self.hub_source_field}-{self.hub_target_field}"
        return hub_corpus_name(self.hub_path, self.hub_name, self.hub_data_files, f"{fields}_{tag}")

    @property
    def source_label(self) -> str:
        if self.source == "debian":
            return self.pair_task.debian_source
        return hub_source(self.hub_path, self.hub_name, self.hub_data_files)

    def make_splits(self) -> tuple[dict[str, list[tuple[str, str]]], dict]:
        if self.source == "debian":
            pairs, provenance = self.pair_task.debian(self.raw_dir)
            kept, cleaning = clean_pairs(pairs)
            provenance["cleaning"] = cleaning
            provenance["split"] = {"by": self.pair_task.split_by, "valid_frac": VALID_FRAC, "test_frac": TEST_FRAC,
                                   "documents": len({doc_id for _, _, doc_id in kept})}
            return split_pairs(kept, self.split_seed, VALID_FRAC, TEST_FRAC), provenance
        # A hub set's test set stays whole: only empty pairs are dropped (and counted).
        splits, cleaning = {}, {}
        raw = hub_text_pairs(self.hub_path, self.hub_name, self.hub_data_files, self.hub_source_field,
                             self.hub_target_field)
        for split in SPLITS:
            kept, stats = clean_pairs(raw[split], drop_untranslated=False, dedup=False)
            splits[split] = [(src, tgt) for src, tgt, _ in kept]
            cleaning[split] = stats.get(split, {"pairs": 0})
        provenance = hub_provenance(self.hub_path, self.hub_name, self.hub_data_files)
        provenance.update(splits=dict(HUB_SPLITS), cleaning=cleaning,
                          fields={"source": self.hub_source_field, "target": self.hub_target_field})
        return splits, provenance


def main(argv: list[str] | None = None) -> None:
    """Build (or check) the offline corpus of a pair task: `python -m layerdrop.data.text_pairs summarization`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m layerdrop.data.text_pairs", description=main.__doc__)
    parser.add_argument("task", choices=sorted(PAIR_TASKS))
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--split-seed", type=int, default=1234)
    args = parser.parse_args(argv)
    dm = TextPairDataModule(args.task, "debian", data_dir=args.data_dir, vocab_size=args.vocab_size,
                            split_seed=args.split_seed)
    dm.prepare_data()
    print(json.dumps({"corpus": str(dm.corpus_dir), **load_mt_corpus(dm.corpus_dir, args.task).manifest["splits"]},
                     indent=1))


if __name__ == "__main__":
    main()
