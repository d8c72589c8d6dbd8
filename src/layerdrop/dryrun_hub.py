"""Small local files in the hub's layout, from the project's offline corpora, for the paper dry run
(``python -m layerdrop.dryrun``, ``--hub DIR``): Wikitext-style parquet from the news articles, WMT-style
JSON lines from the Debian en-de pairs, CNN/DailyMail- and ELI5-style JSON lines from the Debian
summarisation and QA pairs. The ``source=hub`` data modules read them as they would read the hub."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from layerdrop.data.debian_sources import debian_pairs
from layerdrop.data.mt_sources import clean_pairs, split_pairs
from layerdrop.data.qa_sources import debian_qa_pairs
from layerdrop.data.sources import news_documents, split_documents
from layerdrop.data.sum_sources import debian_summary_pairs

MT_MAX_WORDS = 16  # words per side of a local translation pair
PAIR_ROWS = {"train": 400, "validation": 20, "test": 20}  # local summarisation / QA rows per hub split
QA_WORDS = 40  # words of a local answer (the paper's ELI5 answers: about 130)


def _wikitext_tokens(text: str) -> str:
    """Wikitext-style spacing: punctuation split off as its own token."""
    return " ".join(re.sub(r"([.,!?;:()\"])", r" \1 ", text).split())


def _wikitext_rows(doc: str, max_paragraphs: int = 4) -> list[str]:
    """One news article as Wikitext-103 rows: ' = Title = ', blank rows, one paragraph per row."""
    title, *rest = doc.split("\n")
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(rest))
    paragraphs = [" ".join(sentences[i : i + 3]) for i in range(0, len(sentences), 3)][:max_paragraphs]
    rows = ["", f" = {_wikitext_tokens(title)} = ", ""]
    for paragraph in paragraphs:
        rows += [f" {_wikitext_tokens(paragraph)} ", ""]
    return rows


def lm_files(raw_dir: Path, out_dir: Path, articles: dict[str, int] | None = None) -> dict[str, str]:
    """Wikitext-103-layout parquet files (one `text` column, hub split names) from news articles."""
    articles = articles or {"train": 40, "valid": 5, "test": 5}
    docs, _ = news_documents(raw_dir)
    splits = split_documents(docs, seed=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        rows = [row for doc in splits[split][: articles[split]] for row in _wikitext_rows(doc)]
        files[hub_split] = str(out_dir / f"{hub_split}.parquet")
        pq.write_table(pa.table({"text": rows}), files[hub_split])
    return files


def mt_files(raw_dir: Path, out_dir: Path) -> dict[str, str]:
    """WMT-layout JSON lines (`{"translation": {"de": .., "en": ..}}`) from Debian en-de pairs."""
    pairs, _ = debian_pairs(raw_dir, include_ddtp=False, libreoffice_pages=20, ding_lines=10000)
    kept, _ = clean_pairs(pairs)
    # Short sentences keep the untrained model's beam search (up to 1.2 x source + 10 steps) quick.
    kept = [p for p in kept if max(len(p[0].split()), len(p[1].split())) <= MT_MAX_WORDS]
    splits = split_pairs(kept, seed=0, valid_frac=0.1, test_frac=0.1)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        files[hub_split] = str(out_dir / f"{hub_split}.jsonl")
        lines = (
            json.dumps({"translation": {"de": de, "en": en}}, ensure_ascii=False) for en, de in splits[split]
        )
        Path(files[hub_split]).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return files


def _pair_files(pairs: list, out_dir: Path, row) -> dict[str, str]:
    """JSON lines of the first PAIR_ROWS pairs of each split (split by document), one ``row(source, target,
    i)`` dict a line."""
    kept, _ = clean_pairs(pairs)
    splits = split_pairs(kept, seed=0, valid_frac=0.1, test_frac=0.1)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, hub_split in (("train", "train"), ("valid", "validation"), ("test", "test")):
        files[hub_split] = str(out_dir / f"{hub_split}.jsonl")
        lines = (json.dumps(row(src, tgt, i), ensure_ascii=False) for i, (src, tgt) in
                 enumerate(splits[split][: PAIR_ROWS[hub_split]]))
        Path(files[hub_split]).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return files


def sum_files(raw_dir: Path, out_dir: Path) -> dict[str, str]:
    """CNN/DailyMail-layout JSON lines (`article`, `highlights`, `id`) from the Debian summarisation pairs."""
    pairs, _ = debian_summary_pairs(raw_dir)
    return _pair_files(pairs, out_dir, lambda src, tgt, i: {"article": src, "highlights": tgt, "id": str(i)})


def qa_files(raw_dir: Path, out_dir: Path) -> dict[str, str]:
    """ELI5-layout JSON lines (`title`, `answers: {text, score}`, best answer first) from the Debian QA pairs,
    answers cut to QA_WORDS words; the second answer is a decoy the data module must not take."""
    pairs, _ = debian_qa_pairs(raw_dir)
    pairs = [(q, " ".join(a.split()[:QA_WORDS]), doc) for q, a, doc in pairs]
    return _pair_files(pairs, out_dir, lambda src, tgt, i: {
        "q_id": str(i), "title": src, "answers": {"text": [tgt, "a lower-scored answer."], "score": [10, 1]}})


def reuse(folder: Path, suffix: str) -> dict[str, str] | None:
    """The hub-layout files an earlier ``--hub`` run left in ``folder`` (they depend only on the raw
    sources), or None if any split is missing. A machine without the raw sources (a GPU box) reads
    files built elsewhere this way."""
    files = {split: str(folder / f"{split}{suffix}") for split in ("train", "validation", "test")}
    return files if all(Path(f).is_file() for f in files.values()) else None
