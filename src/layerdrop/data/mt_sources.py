"""English-German sentence pairs from the text of Debian packages, and their cleaning and splits.

Extractors for the three sources that debian_sources.py fetches (see /work/shared/DATA.md):

- LibreOffice help: generated HTML pages, one per help topic, with the same relative path in both
  languages. Paragraphs and headings carry the `id` of their source paragraph, so an element with
  the same id in the same page is the same paragraph in the other language.
- Ding: one dictionary entry per line, `German :: English`, parallel sub-entries separated by `|`;
  only the sub-entries that are whole example sentences are kept.
- DDTP: package descriptions from Debian's `Translation-de` / `Translation-en` indexes, paired by
  `Description-md5`.

Every pair is `(en, de, doc_id)`; doc_id names the page, dictionary entry or description the pair
comes from, so splits can be made by document.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from html.parser import HTMLParser
from pathlib import Path

Pair = tuple[str, str, str]  # (en, de, doc_id)

DROP_REASONS = ("empty", "untranslated", "duplicate")

_HEADINGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
# Ding usage labels and grammar: {n} {vt} [coll.] [Br.] ...
_DING_ANNOTATION = re.compile(r"\s*(\{[^{}]*\}|\[[^\[\]]*\])")
# Ding's placeholders for "somebody/something" mark a phrase pattern, not a sentence.
_DING_PLACEHOLDER = re.compile(r"\b(sb|sth|jdn|jdm|jds|etw)\.")
_SENTENCE_END = (".", "!", "?")
_SENTENCE_START = ('"', "'", "„", "‚", "‘", "“", "(")
DING_MIN_WORDS = 4
_LIST_BULLETS = ("* ", "- ", "+ ")


# ---------------------------------------------------------------------------------------------------
# Normalisation, deduplication and splits


def normalise(text: str) -> str:
    """NFC and collapsed whitespace, so that the same sentence is always the same string."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def source_of(doc_id: str) -> str:
    return doc_id.split(":", 1)[0]


def clean_pairs(
    pairs: Iterable[Pair], *, drop_untranslated: bool = True, dedup: bool = True
) -> tuple[list[Pair], dict[str, dict[str, int]]]:
    """Normalise pairs, drop empty, untranslated (en == de) and repeated ones, counting each by source.

    The source is the doc_id up to its first ':'. A repeated pair keeps its first occurrence, so
    that no text can land in two splits. An official test set keeps every non-empty pair
    (`drop_untranslated=False, dedup=False`).
    """
    kept: list[Pair] = []
    seen: set[tuple[str, str]] = set()
    stats: dict[str, Counter] = {}
    for en, de, doc_id in pairs:
        counts = stats.setdefault(
            source_of(doc_id), Counter(dict.fromkeys(("pairs", *DROP_REASONS, "kept"), 0))
        )
        counts["pairs"] += 1
        en, de = normalise(en), normalise(de)
        if not en or not de:
            counts["empty"] += 1
        elif drop_untranslated and en == de:
            counts["untranslated"] += 1  # code, names and numbers the translators left as they were
        elif dedup and (en, de) in seen:
            counts["duplicate"] += 1
        else:
            if dedup:
                seen.add((en, de))
            kept.append((en, de, doc_id))
            counts["kept"] += 1
    return kept, {source: dict(counts) for source, counts in stats.items()}


def split_pairs(
    pairs: list[Pair], seed: int, valid_frac: float = 0.05, test_frac: float = 0.05
) -> dict[str, list[tuple[str, str]]]:
    """Seeded train/valid/test split BY DOCUMENT: all pairs of a doc_id land in the same split.

    Documents are shuffled with `random.Random(seed)` and taken for test, then valid, until each holds
    its share of the pairs; every split keeps the input order of its pairs.
    """
    if not (0 <= valid_frac < 1 and 0 <= test_frac < 1 and valid_frac + test_frac < 1):
        raise ValueError(
            f"valid_frac and test_frac must be in [0, 1) with a sum below 1, got {valid_frac} and {test_frac}"
        )
    sizes = Counter(doc_id for _, _, doc_id in pairs)
    docs = sorted(sizes)  # sorted first, so the shuffle does not depend on the input order
    random.Random(seed).shuffle(docs)
    wanted = {"test": test_frac * len(pairs), "valid": valid_frac * len(pairs)}
    assigned: dict[str, str] = {}
    taken = Counter()
    docs_iter = iter(docs)
    for split in ("test", "valid"):
        # At least one document in a requested split, so tiny corpora still get valid/test data.
        while wanted[split] > 0 and (taken[split] == 0 or taken[split] < wanted[split]):
            doc = next(docs_iter, None)
            if doc is None:
                break
            assigned[doc] = split
            taken[split] += sizes[doc]
    if len(assigned) >= len(docs):
        raise ValueError(
            f"{len(docs)} documents are too few for valid_frac={valid_frac}, test_frac={test_frac}"
        )
    splits: dict[str, list[tuple[str, str]]] = {"train": [], "valid": [], "test": []}
    for en, de, doc_id in pairs:
        splits[assigned.get(doc_id, "train")].append((en, de))
    return splits


# ---------------------------------------------------------------------------------------------------
# LibreOffice help


class _HelpParagraphs(HTMLParser):
    """(id, text) of every paragraph or heading with an `id` in one LibreOffice help page.

    Inline switches (`<span class="switchinline">`) hold one hidden variant per application or
    platform, of which the help viewer shows one: the `default...` case, else the first.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[tuple[str, str]] = []
        self._stack: list[tuple[str, str | None]] = []  # (tag, role) of the open elements
        self._para_id: str | None = None
        self._buffers: list[list[str]] = []  # paragraph text, then one buffer per open switch case
        self._switches: list[list[tuple[bool, str]]] = []  # (is_default, text) of each open switch
        self._case_default: list[bool] = []
        self._skip = 0  # inside <script> or <style>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID_TAGS:
            if tag == "br" and self._buffers:
                self._buffers[-1].append(" ")
            return
        attr = dict(attrs)
        role = None
        if tag in ("script", "style"):
            role = "skip"
            self._skip += 1
        elif self._para_id is None:
            if tag in _HEADINGS and attr.get("id"):
                role = "para"
                self._para_id = attr["id"]
                self._buffers.append([])
        elif "switchinline" in (attr.get("class") or "").split():
            role = "switch"
            self._switches.append([])
        elif self._stack and self._stack[-1][1] == "switch" and "hidden" in attr:
            role = "case"
            self._case_default.append((attr.get("id") or "").startswith("default"))
            self._buffers.append([])
        self._stack.append((tag, role))

    def handle_endtag(self, tag: str) -> None:
        # Close up to the matching open element; a stray end tag closes nothing.
        if all(open_tag != tag for open_tag, _ in self._stack):
            return
        while self._stack:
            open_tag, role = self._stack.pop()
            self._close(role)
            if open_tag == tag:
                return

    def _close(self, role: str | None) -> None:
        if role == "skip":
            self._skip -= 1
        elif role == "para":
            self.paragraphs.append((self._para_id, "".join(self._buffers.pop())))
            self._para_id = None
        elif role == "case":
            self._switches[-1].append((self._case_default.pop(), "".join(self._buffers.pop())))
        elif role == "switch":
            cases = self._switches.pop()
            chosen = [text for is_default, text in cases if is_default] or [text for _, text in cases[:1]]
            self._buffers[-1].extend(chosen)

    def handle_data(self, data: str) -> None:
        if self._buffers and not self._skip:
            self._buffers[-1].append(data)


def help_paragraphs(page: Path) -> list[tuple[str, str]]:
    parser = _HelpParagraphs()
    parser.feed(page.read_text(encoding="utf-8"))
    parser.close()
    return parser.paragraphs


def _by_id(paragraphs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for par_id, text in paragraphs:
        grouped.setdefault(par_id, []).append(text)
    return grouped


def pair_help_page(en_page: Path, de_page: Path, doc_id: str, stats: Counter) -> list[Pair]:
    """Paragraph pairs of one help page in the two languages, matched by element id.

    An id used several times in a page (text embedded from another page) is paired in order when
    both languages use it equally often; otherwise its paragraphs are dropped and counted.
    """
    en, de = _by_id(help_paragraphs(en_page)), _by_id(help_paragraphs(de_page))
    pairs = []
    for par_id, en_texts in en.items():
        de_texts = de.get(par_id)
        if de_texts is None:
            stats["id_only_in_en"] += len(en_texts)
        elif len(de_texts) != len(en_texts):
            stats["id_repeated_unequally"] += len(en_texts)
        else:
            pairs.extend((e, d, doc_id) for e, d in zip(en_texts, de_texts))
    stats["id_only_in_de"] += sum(len(texts) for par_id, texts in de.items() if par_id not in en)
    return pairs


def libreoffice_pairs(
    en_root: Path, de_root: Path, limit_pages: int | None = None
) -> tuple[list[Pair], dict[str, int]]:
    """Paragraph pairs of every help page present in both languages (doc_id `libreoffice:<page>`).

    en_root/de_root are the unpacked help folders (`.../help/en-US`, `.../help/de`); `limit_pages`
    takes the first pages in path order (for quick tests).
    """
    en_pages = sorted(p.relative_to(en_root) for p in Path(en_root).rglob("*.html"))
    if not en_pages:
        raise RuntimeError(f"no .html help pages under {en_root}; the package layout has changed")
    stats = Counter(
        pages_en=len(en_pages), pages_only_in_en=0, id_only_in_en=0, id_only_in_de=0, id_repeated_unequally=0
    )
    pairs: list[Pair] = []
    for rel in en_pages[:limit_pages]:
        if not (de_root / rel).is_file():
            stats["pages_only_in_en"] += 1
            continue
        pairs.extend(pair_help_page(en_root / rel, de_root / rel, f"libreoffice:{rel.as_posix()}", stats))
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


# ---------------------------------------------------------------------------------------------------
# Ding dictionary


def _ding_text(part: str) -> str:
    """A sub-entry without usage labels, and only its first alternative (`a; b` lists synonyms)."""
    return _DING_ANNOTATION.sub("", part).split("; ")[0].strip()


def is_sentence(text: str, min_words: int = DING_MIN_WORDS) -> bool:
    """A whole sentence: enough words, a capital (or quote) first and final punctuation."""
    return (
        len(text.split()) >= min_words
        and text.endswith(_SENTENCE_END)
        and (text[:1].isupper() or text[:1].isdigit() or text.startswith(_SENTENCE_START))
    )


def ding_pairs(lines: Iterable[str]) -> tuple[list[Pair], dict[str, int]]:
    """Example-sentence pairs of the Ding dictionary (doc_id `ding:<line number>`).

    Sub-entries that are words or phrases are skipped (counted as `not_sentence`), and so are
    sentences that list alternatives with '/' ('rumour / rumor'), which have no single translation.
    """
    stats = Counter(
        entries=0,
        sub_entries=0,
        not_sentence=0,
        slash_alternatives=0,
        placeholder=0,
        unequal_sub_entries=0,
        malformed=0,
    )
    pairs: list[Pair] = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        stats["entries"] += 1
        if line.count("::") != 1:
            stats["malformed"] += 1
            continue
        de_part, en_part = line.split("::")
        de_subs, en_subs = de_part.split("|"), en_part.split("|")
        if len(de_subs) != len(en_subs):
            stats["unequal_sub_entries"] += 1
            continue
        for de_sub, en_sub in zip(de_subs, en_subs):
            stats["sub_entries"] += 1
            de, en = _ding_text(de_sub), _ding_text(en_sub)
            if not (is_sentence(de) and is_sentence(en)):
                stats["not_sentence"] += 1
            elif "/" in de or "/" in en:
                stats["slash_alternatives"] += 1
            elif _DING_PLACEHOLDER.search(de) or _DING_PLACEHOLDER.search(en):
                stats["placeholder"] += 1
            else:
                pairs.append((en, de, f"ding:{number}"))
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


# ---------------------------------------------------------------------------------------------------
# DDTP package descriptions


def ddtp_descriptions(lines: Iterable[str], lang: str) -> dict[str, list[str]]:
    """Description-md5 -> units of the description in `lang`: the synopsis, then each paragraph.

    In the long description, a line ` .` separates paragraphs and each list item (a line starting with
    a bullet, at any indentation) is a unit of its own; other lines continue the current unit.
    """
    field = f"Description-{lang}: "
    descriptions: dict[str, list[str]] = {}
    md5, units, new_unit = None, None, False
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith("Description-md5: "):
            md5, units = line.split(": ", 1)[1].strip(), None
        elif line.startswith(field) and md5:
            units, new_unit = [line[len(field) :]], True
            descriptions[md5] = units
        elif line.startswith(" ") and units is not None:
            body = line[1:]
            if body.strip() == ".":
                new_unit = True
            elif new_unit or body.lstrip().startswith(_LIST_BULLETS):
                units.append(body)
                new_unit = False
            else:
                units[-1] += " " + body
        elif not line.strip():
            md5, units = None, None
    return descriptions


def ddtp_pairs(en_lines: Iterable[str], de_lines: Iterable[str]) -> tuple[list[Pair], dict[str, int]]:
    """Synopsis and paragraph pairs of every description translated to German (doc_id `ddtp:<md5>`).

    Units are paired in order when both languages have the same number of them; otherwise only the
    synopsis is paired and the rest counted as `unequal_paragraphs`.
    """
    en = ddtp_descriptions(en_lines, "en")
    de = ddtp_descriptions(de_lines, "de")
    stats = Counter(descriptions_en=len(en), descriptions_de=len(de), de_without_en=0, unequal_paragraphs=0)
    pairs: list[Pair] = []
    for md5 in sorted(de):
        en_units, de_units = en.get(md5), de[md5]
        if not en_units:
            stats["de_without_en"] += 1
            continue
        if len(en_units) != len(de_units):
            stats["unequal_paragraphs"] += 1
            en_units, de_units = en_units[:1], de_units[:1]
        pairs.extend((e, d, f"ddtp:{md5}") for e, d in zip(en_units, de_units))
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)
