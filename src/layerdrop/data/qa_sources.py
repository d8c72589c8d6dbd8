"""Long-form QA pairs from two Debian dictionaries: "What is <headword>?" -> its definition.

A stand-in for the paper's ELI5 (see /work/shared/DATA.md, "Long-form question answering"): the
answers are real multi-sentence explanations; the questions are a template.

- FOLDOC, the Free On-line Dictionary of Computing (`dict-foldoc`);
- the Jargon File (`dict-jargon`).

Both come in dictd format: `/usr/share/dictd/<name>.index` has one line per headword,
`headword<TAB>offset<TAB>length` with the numbers in dictd's base64 (the digits
`A-Za-z0-9+/`, most significant first), pointing at UTF-8 bytes of `<name>.dict.dz`, a dictzip
file that gzip reads whole. Several headwords (aliases, lower-cased forms) point at one entry;
each entry is used once, and `00-database-*` headwords hold the dictionary's own metadata.

An entry starts with a header block up to its first blank line: the headword as printed (used in
the question), then FOLDOC's aliases or the Jargon File's pronunciation and part of speech. The
answer is the rest, cleaned:

- cross-references `{word}` become `word` (also when a line break falls just inside a brace);
  FOLDOC's links `{label (http://...)}` become `label`, `{(rfc:822)}` becomes `RFC 822` and a bare
  `{(http://...)}` its URL. Braces with spaces just inside (`{ x in S }`, C blocks) are text and
  stay; set notation without spaces (`{0}`) cannot be told from a cross-reference and loses them;
- FOLDOC only: the subject tags opening a paragraph (`<language, humour>`) are removed, and so are
  the paragraphs that are only a date stamp `(1995-03-29)` or a bracketed note (`[{Jargon File}]`,
  `[Sammet 1969, p. 123].`, `[Details?]`). The Jargon File's bracketed paragraphs are etymology
  and usage notes (`[originally, someone who makes furniture with an axe]`) and stay;
- paragraphs are joined with spaces and the whitespace normalised (one line per example).

Answers under MIN_ANSWER_WORDS (30, DATA.md's threshold) are dropped as `too_short`, an answer
already seen as `duplicate`. Many FOLDOC entries are copies of Jargon File entries (1,462 end
`[{Jargon File}]`); `debian_qa_pairs` drops the FOLDOC pairs that ask a Jargon File question
(`in_jargon`), so no question lands in two splits with two versions of one answer.

Measured on bookworm (dict-foldoc 20230119-1, dict-jargon 4.4.7-3.1):
- FOLDOC: 15,254 index lines, 3,233 aliases and 7 metadata -> 12,014 entries; dropped empty 80
  (only a citation), too_short 5,645, duplicate 0 -> 6,289; then in_jargon 1,164 -> 5,125 pairs,
  median answer 67 words. DATA.md's 6,955 counted the raw text; subject tags, date stamps and
  citations no longer count towards the 30 words.
- Jargon File: 2,314 index lines, 7 metadata -> 2,307 entries; too_short 537 -> 1,770 pairs,
  median answer 81 words.

Pairs are `(question, answer, doc_id)` with doc_id `foldoc:<headword>` or `jargon:<headword>`.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from pathlib import Path

from layerdrop.data.debian_sources import fetch_debs, package_provenance, unpack_deb
from layerdrop.data.mt_sources import Pair, normalise

DICTIONARIES = {"foldoc": "dict-foldoc", "jargon": "dict-jargon"}  # source -> Debian package
DICTD_DIR = "usr/share/dictd"
MIN_ANSWER_WORDS = 30
DROP_REASONS = ("empty", "too_short", "duplicate")
LICENSES = {
    "foldoc": "GFDL-1.1+ (FOLDOC, Denis Howe; debian/copyright of dict-foldoc)",
    "jargon": "public domain (the Jargon File 4.4.7; debian/copyright of dict-jargon)",
}
QA_SOURCE = "debian:" + "+".join(DICTIONARIES.values())

_B64 = {ch: i for i, ch in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_METADATA = "00-database-"
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
# {word}, or {label (scheme:target)}; no brace, and no space just inside either brace
_CROSS_REF = re.compile(r"\{(\S|\S[^{}]*\S)\}")
# A cross-reference wrapped just inside a brace ("{\n    word}", "{word\n    }s"); code blocks
# that open "{" at a line end close on a later line and are left alone.
_WRAPPED_OPEN = re.compile(r"\{\n[ \t]*([^{}\n]*\S)\}")
_WRAPPED_CLOSE = re.compile(r"\{(\S[^{}\n]*)\n[ \t]*\}")
_LINK = re.compile(r"(.*?)\s*\((\w+):([^()]*)\)")
_SUBJECT_TAGS = re.compile(r"^((?:\d+\.\s*)?)(?:<[A-Za-z][A-Za-z0-9 ,/&'.+-]*>\s*)+")
_DATE_STAMP = re.compile(r"\(\d{4}-\d{2}-\d{2}\)\.?")
_BRACKET_NOTE = re.compile(r"\[.*\]\.?")


def dictd_number(digits: str) -> int:
    """An offset or length of a dictd index: base64 digits, most significant first."""
    if not digits:
        raise ValueError("empty dictd base64 number")
    value = 0
    for ch in digits:
        if ch not in _B64:
            raise ValueError(f"{ch!r} in {digits!r} is not a dictd base64 digit (A-Z, a-z, 0-9, +, /)")
        value = value * 64 + _B64[ch]
    return value


def dictd_entries(index_text: str, data: bytes) -> tuple[list[str], dict[str, int]]:
    """The text of every entry of a dictd dictionary once, in index order, with counts.

    `data` is the decompressed .dict as bytes, since the index's offsets and lengths count bytes.
    """
    stats = Counter(index_lines=0, metadata=0, aliases=0)
    spans: dict[tuple[int, int], None] = {}
    for number, line in enumerate(index_text.splitlines(), start=1):
        if not line.strip():
            continue
        stats["index_lines"] += 1
        fields = line.split("\t")
        if len(fields) < 3:
            raise ValueError(f"index line {number} {line!r} is not 'headword<TAB>offset<TAB>length'")
        if fields[0].startswith(_METADATA):
            stats["metadata"] += 1
            continue
        offset, length = dictd_number(fields[1]), dictd_number(fields[2])
        if offset + length > len(data):
            raise ValueError(
                f"index line {number} points at bytes {offset}-{offset + length}, past the end of the "
                f"{len(data)}-byte dictionary"
            )
        if (offset, length) in spans:
            stats["aliases"] += 1
        spans[(offset, length)] = None
    entries = [data[offset : offset + length].decode("utf-8") for offset, length in spans]
    stats["entries"] = len(entries)
    return entries, dict(stats)


def _link_text(match: re.Match) -> str:
    inner = match.group(1)
    link = _LINK.fullmatch(inner)
    if link is None:
        return inner
    label, scheme, target = link.groups()
    if label:
        return label
    return f"RFC {target}" if scheme == "rfc" else f"{scheme}:{target}"


def clean_definition(body: str, source: str) -> str:
    """A definition as plain one-line text (the rules are in the module docstring)."""
    body = _WRAPPED_CLOSE.sub(r"{\1}", _WRAPPED_OPEN.sub(r"{\1}", body))
    paragraphs = [normalise(p) for p in _PARAGRAPH_BREAK.split(body)]
    if source == "foldoc":
        paragraphs = [
            _SUBJECT_TAGS.sub(r"\1", p, count=1)
            for p in paragraphs
            if not (_DATE_STAMP.fullmatch(p) or _BRACKET_NOTE.fullmatch(p))
        ]
    return normalise(_CROSS_REF.sub(_link_text, " ".join(paragraphs)))


def split_entry(entry: str) -> tuple[str, str]:
    """(headword as printed, body): the header block ends at the first blank line."""
    parts = _PARAGRAPH_BREAK.split(entry, maxsplit=1)
    headword = normalise(parts[0].split("\n", 1)[0])
    return headword, parts[1] if len(parts) > 1 else ""


def dictd_qa_pairs(index_text: str, data: bytes, source: str) -> tuple[list[Pair], dict[str, int]]:
    """("What is <headword>?", cleaned definition, `<source>:<headword>`) for each long-enough entry.

    `source` is "foldoc" or "jargon"; it picks the cleaning rules and names the pairs.
    """
    if source not in DICTIONARIES:
        raise ValueError(f"unknown dictionary source {source!r}; expected one of {sorted(DICTIONARIES)}")
    entries, entry_stats = dictd_entries(index_text, data)
    stats = Counter({**entry_stats, **dict.fromkeys(DROP_REASONS, 0)})
    pairs: list[Pair] = []
    seen: set[str] = set()
    for entry in entries:
        headword, body = split_entry(entry)
        answer = clean_definition(body, source)
        if not headword or not answer:
            stats["empty"] += 1
        elif len(answer.split()) < MIN_ANSWER_WORDS:
            stats["too_short"] += 1
        elif answer in seen:
            stats["duplicate"] += 1
        else:
            seen.add(answer)
            pairs.append((f"What is {headword}?", answer, f"{source}:{headword}"))
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


def drop_questions_in(pairs: list[Pair], other: list[Pair], stats: dict[str, int], reason: str) -> list[Pair]:
    """`pairs` without those whose question (case-folded) `other` also asks; counted as stats[reason]."""
    asked = {question.casefold() for question, _, _ in other}
    kept = [pair for pair in pairs if pair[0].casefold() not in asked]
    stats[reason] = len(pairs) - len(kept)
    stats["pairs"] = len(kept)
    return kept


def read_dictd(tree: Path, name: str) -> tuple[str, bytes]:
    """The index text and decompressed data of dictionary `name` in an unpacked package tree."""
    folder = Path(tree) / DICTD_DIR
    index, dict_dz = folder / f"{name}.index", folder / f"{name}.dict.dz"
    for path in (index, dict_dz):
        if not path.is_file():
            raise RuntimeError(f"{path} is missing; the package layout has changed")
    with gzip.open(dict_dz) as f:  # dictzip is gzip with an index in the header's extra field
        return index.read_text(encoding="utf-8"), f.read()


def debian_qa_pairs(raw_dir: Path) -> tuple[list[Pair], dict]:
    """FOLDOC then Jargon File QA pairs and their provenance; FOLDOC's copies of Jargon questions dropped.

    Downloads the two packages (once) into raw_dir and unpacks them into raw_dir/unpacked.
    """
    raw_dir = Path(raw_dir)
    debs = fetch_debs(DICTIONARIES.values(), raw_dir)
    extracted = {}
    for source, package in DICTIONARIES.items():
        index_text, data = read_dictd(unpack_deb(debs[package], raw_dir / "unpacked"), source)
        extracted[source] = dictd_qa_pairs(index_text, data, source)
    (foldoc, foldoc_stats), (jargon, jargon_stats) = extracted["foldoc"], extracted["jargon"]
    foldoc = drop_questions_in(foldoc, jargon, foldoc_stats, "in_jargon")
    sources = {
        source: {
            "packages": {package: package_provenance(debs[package])},
            "format": f"dictd {DICTD_DIR}/{source}.index + {source}.dict.dz; 'What is <headword>?' -> "
            f"definition of >= {MIN_ANSWER_WORDS} words",
            "license": LICENSES[source],
            "extracted": stats,
        }
        for (source, package), stats in zip(DICTIONARIES.items(), (foldoc_stats, jargon_stats))
    }
    provenance = {"source": QA_SOURCE, "license": "per source, see sources", "sources": sources}
    return foldoc + jargon, provenance
