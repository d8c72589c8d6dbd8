"""Summarization pairs from Debian package descriptions: long description -> one-line synopsis.

The stand-in for the paper's CNN/DailyMail (see /work/shared/DATA.md, "Summarization"): every stanza
of DDTP's `Translation-en` index (fetched by debian_sources.fetch_ddtp) gives the package's long
description as the source and its synopsis, a short noun phrase, as the target. That makes it
extreme summarization, like XSum, rather than CNN/DM's multi-sentence highlights.

The index is a list of stanzas

    Package: 0ad-data
    Description-md5: 26581e685027d5ae84824362a4ba59ee
    Description-en: Real-time strategy game of ancient warfare (data files)
     0 A.D. (pronounced "zero ey-dee") is a free, open-source, cross-platform
     real-time strategy (RTS) game of ancient warfare. ...
     .
     This package contains the main data files required by 0 A.D.

where a line ` .` separates paragraphs. The source is the paragraphs joined with spaces and
whitespace-normalised (one line per example, which the corpus files need); list bullets stay as text.

Cleaning, each drop counted:

- `empty`: no long description or no synopsis.
- `too_short`: a source under MIN_SOURCE_WORDS (10) words ("Transitional package." and the like):
  nothing to summarise.
- `generated`: under MIN_SOURCE_WORDS words once the sentences that Debian's Rust packaging tool
  writes into every crate's description are removed (GENERATED_SENTENCE: "This package contains
  the source for the Rust X crate, packaged by debcargo ..."). The source of such a pair names the
  crate and nothing else, while its synopsis ("Keccak-f sponge function - Rust source code") holds
  the upstream summary: a model could only guess it.
- `duplicate`: the same source text as an earlier stanza (packages built from one source often
  share a description word for word); the first in index order is kept.
- `near_duplicate`: a library's -dev, -doc, -dbg, -data, -prof, l10n and runtime packages repeat
  one description and differ only in a trailing paragraph about their role ("This package contains
  the development files."). Trailing paragraphs that start like that (ROLE_PARAGRAPH: "This package
  ...", "This is ...", "The package ...", "These are ...", "Contains ...") are removed, and of the
  stanzas whose remaining text is the same one is kept: one with no role paragraph (the main
  package, whose synopsis is the plain summary) if there is one, else the first in index order.
  Only trailing paragraphs count, so a description that *starts* "This package provides X" keeps
  its text and is not merged with others (Node.js modules end with a shared paragraph instead).
  In bookworm the largest such groups are Qt's modules (298), DPDK's libraries (190), Mono's (148)
  and Firefox's language packs (104).

A synopsis found verbatim in its source is kept: a copied noun phrase is still a correct summary,
and CNN/DM's highlights are largely extractive too. Their number is reported as
`synopsis_in_source` (case-insensitive).

Measured on bookworm 12.15's Translation-en (63,956 stanzas): 41,603 pairs survive, with a median
of 44 words in the source and 6 in the synopsis. Dropped: empty 1, too_short 877, generated 1,777,
duplicate 3,209, near_duplicate 16,489; 2,989 kept pairs have their synopsis in the source.

Pairs are `(source, target, doc_id)` with doc_id `ddtp:<package>`, the shape of mt_sources.Pair, so
`mt_sources.split_pairs` splits them by package.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from layerdrop.data.debian_sources import DDTP_SUITE, LICENSES, fetch_ddtp
from layerdrop.data.mt_sources import Pair, normalise

MIN_SOURCE_WORDS = 10
DROP_REASONS = ("empty", "too_short", "generated", "duplicate", "near_duplicate")
# A paragraph about the package's role rather than the software.
ROLE_PARAGRAPH = re.compile(r"(This|The|These|Additionally, this) (package|metapackage|is|are)\b|Contains\b")
# Sentences that Debian's Rust packaging tool (debcargo) writes into every crate's description.
GENERATED_SENTENCE = re.compile(
    r"This package contains the source for the Rust \S+ crate, packaged (by debcargo )?for use with cargo"
    r" and dh-cargo\."
    r"|This metapackage enables feature \S+ for the Rust \S+ crate, by pulling in any additional"
    r" dependencies needed by that feature\."
    r"|Additionally, this package also provides the [^.]* features?\."
)
SUMMARY_SOURCE = f"debian:ddtp-{DDTP_SUITE}:Translation-en:synopsis"


class Description(NamedTuple):
    package: str
    synopsis: str
    paragraphs: list[str]  # each normalised; list items stay inside their paragraph


def ddtp_stanzas(lines: Iterable[str]) -> Iterator[Description]:
    """Every stanza of an apt `Translation-en` index, in index order.

    A stanza with a description but no `Package:` field is an error: its pair could not be named.
    """
    package = synopsis = None
    paragraphs: list[list[str]] = []
    start = 0

    def finish() -> Description | None:
        if synopsis is None:
            return None
        if package is None:
            raise ValueError(f"stanza at line {start} has a Description-en but no Package field")
        return Description(package, normalise(synopsis), [normalise(" ".join(p)) for p in paragraphs if p])

    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if not line.strip():
            if (done := finish()) is not None:
                yield done
            package = synopsis = None
            paragraphs = []
            continue
        if package is None and synopsis is None:
            start = number
        if line.startswith("Package:"):
            package = line.split(":", 1)[1].strip()
        elif line.startswith("Description-en:"):
            synopsis, paragraphs = line.split(":", 1)[1], [[]]
        elif line.startswith(" ") and synopsis is not None:
            if line.strip() == ".":
                paragraphs.append([])
            else:
                paragraphs[-1].append(line)
    if (done := finish()) is not None:
        yield done


def description_core(paragraphs: list[str]) -> str:
    """The description without its trailing role paragraphs (at least one paragraph is kept)."""
    kept = list(paragraphs)
    while len(kept) > 1 and ROLE_PARAGRAPH.match(kept[-1]):
        kept.pop()
    return " ".join(kept)


def ddtp_summary_pairs(lines: Iterable[str]) -> tuple[list[Pair], dict[str, int]]:
    """(long description, synopsis, `ddtp:<package>`) pairs of an index, cleaned (see module doc)."""
    stats = Counter(dict.fromkeys(("descriptions", *DROP_REASONS, "synopsis_in_source", "pairs"), 0))
    seen: set[str] = set()
    groups: dict[str, list[tuple[int, Pair, bool]]] = {}  # core -> (order, pair, has role paragraph)
    for order, desc in enumerate(ddtp_stanzas(lines)):
        stats["descriptions"] += 1
        source = normalise(" ".join(desc.paragraphs))
        if not source or not desc.synopsis:
            stats["empty"] += 1
        elif len(source.split()) < MIN_SOURCE_WORDS:
            stats["too_short"] += 1
        elif len(GENERATED_SENTENCE.sub("", source).split()) < MIN_SOURCE_WORDS:
            stats["generated"] += 1
        elif source in seen:
            stats["duplicate"] += 1
        else:
            seen.add(source)
            core = description_core(desc.paragraphs)
            pair = (source, desc.synopsis, f"ddtp:{desc.package}")
            groups.setdefault(core, []).append((order, pair, core != source))
    chosen = []
    for members in groups.values():
        plain = [member for member in members if not member[2]]
        chosen.append((plain or members)[0])
        stats["near_duplicate"] += len(members) - 1
    pairs = [pair for _, pair, _ in sorted(chosen)]
    stats["synopsis_in_source"] = sum(target.lower() in source.lower() for source, target, _ in pairs)
    stats["pairs"] = len(pairs)
    return pairs, dict(stats)


def debian_summary_pairs(raw_dir: Path) -> tuple[list[Pair], dict]:
    """Cleaned DDTP summarization pairs of Debian `DDTP_SUITE` and their provenance.

    fetch_ddtp downloads the indexes into raw_dir/ddtp once (with the German one the MT data uses).
    """
    files, ddtp_provenance = fetch_ddtp(raw_dir)
    with open(files["en"], encoding="utf-8") as lines:
        pairs, stats = ddtp_summary_pairs(lines)
    provenance = {
        "source": SUMMARY_SOURCE,
        "license": LICENSES["ddtp"],
        "sources": {
            "ddtp": {
                **ddtp_provenance,
                "sha256": {"Translation-en": ddtp_provenance["sha256"]["Translation-en"]},
                "format": "apt Translation-en index; long description (paragraphs joined) -> synopsis",
                "license": LICENSES["ddtp"],
                "extracted": stats,
            }
        },
    }
    return pairs, provenance
