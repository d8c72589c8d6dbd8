"""Summarization data: DDTP long description -> synopsis pairs, their cleaning, and the real index."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from layerdrop.data.mt_sources import split_pairs
from layerdrop.data.sum_sources import ddtp_stanzas, ddtp_summary_pairs, debian_summary_pairs

ROOT = Path(__file__).resolve().parents[1]

FROB = "Frob turns widgets into gadgets quickly and safely, with a small command-line interface."
NODE = "Node.js is an event-based server-side JavaScript engine."
INDEX = f"""\
Package: frob
Description-md5: 01
Description-en: widget frobnicator
 Frob turns widgets into gadgets quickly and safely, with a
 small command-line interface.
 .
 Features:
  * parallel frobnication
  * undo support

Package: bar-data
Description-md5: 02
Description-en: bar game (data files)
 Bar is a puzzle game about stacking bars in as few moves as
 you can manage.
 .
 This package contains the data files.

Package: bar
Description-md5: 03
Description-en: bar game
 Bar is a puzzle game about stacking bars in as few moves as
 you can manage.

Package: frob-doc
Description-md5: 04
Description-en:  widget frobnicator - documentation
 Frob turns widgets into gadgets quickly and safely, with a
 small command-line interface.
 .
 Features:
  * parallel frobnication
  * undo support
 .
 This package contains the documentation.

Package: frob-dev
Description-md5: 05
Description-en: widget frobnicator - development files
 Frob turns widgets into gadgets quickly and safely, with a
 small command-line interface.
 .
 Features:
  * parallel frobnication
  * undo support
 .
 The package contains the headers.
 .
 This is the development package.

Package: frob-copy
Description-md5: 06
Description-en: another widget frobnicator
 Frob turns widgets into gadgets quickly and safely, with a
 small command-line interface.
 .
 Features:
  * parallel frobnication
  * undo support

Package: empty-pkg
Description-md5: 07
Description-en: nothing here

Package: tiny
Description-md5: 08
Description-en: tiny tool
 Transitional package, safe to remove.

Package: librust-keccak-dev
Description-md5: 09
Description-en: Keccak-f sponge function - Rust source code
 This package contains the source for the Rust keccak crate, packaged by debcargo for use with cargo
 and dh-cargo.

Package: node-left-pad
Description-md5: 10
Description-en: pad strings on the left
 This package provides a function that pads a string on the left to a given length.
 .
 {NODE}

Package: node-right-pad
Description-md5: 11
Description-en: pad strings on the right
 This package provides a function that pads a string on the right to a given length.
 .
 {NODE}"""  # no blank line after the last stanza


@pytest.fixture(scope="module")
def raw_dir() -> Path:
    return ROOT / os.environ.get("LAYERDROP_DATA_DIR", "data") / "raw"


def test_ddtp_stanzas_paragraphs_and_lists():
    first = next(ddtp_stanzas(INDEX.splitlines(keepends=True)))
    assert first.package == "frob" and first.synopsis == "widget frobnicator"
    assert first.paragraphs == [FROB, "Features: * parallel frobnication * undo support"]
    stanzas = list(ddtp_stanzas(INDEX.splitlines()))
    assert len(stanzas) == 11
    assert stanzas[6].paragraphs == [] and stanzas[6].synopsis == "nothing here"
    assert stanzas[-1].paragraphs[-1] == NODE


def test_ddtp_summary_pairs_exact_output_and_drops():
    pairs, stats = ddtp_summary_pairs(INDEX.splitlines())
    frob = f"{FROB} Features: * parallel frobnication * undo support"
    assert pairs == [
        (frob, "widget frobnicator", "ddtp:frob"),
        (
            "Bar is a puzzle game about stacking bars in as few moves as you can manage.",
            "bar game",
            "ddtp:bar",
        ),
        (
            f"This package provides a function that pads a string on the left to a given length. {NODE}",
            "pad strings on the left",
            "ddtp:node-left-pad",
        ),
        (
            f"This package provides a function that pads a string on the right to a given length. {NODE}",
            "pad strings on the right",
            "ddtp:node-right-pad",
        ),
    ]
    assert stats == {
        "descriptions": 11,
        "empty": 1,  # empty-pkg
        "too_short": 1,  # tiny: 5 words
        "generated": 1,  # librust-keccak-dev: nothing but debcargo's sentence
        "duplicate": 1,  # frob-copy: frob's text word for word
        "near_duplicate": 3,  # bar-data (bar has no role paragraph, so bar is kept), frob-doc, frob-dev
        "synopsis_in_source": 0,
        "pairs": 4,
    }


def test_synopsis_in_source_is_kept_and_counted():
    index = (
        "Package: ed\n"
        "Description-en: Line editor\n"
        " The classic line editor of Unix, ed is small, old and still useful.\n"
    )
    pairs, stats = ddtp_summary_pairs(index.splitlines())
    assert len(pairs) == 1 and stats["synopsis_in_source"] == 1


def test_stanza_without_package_is_an_error():
    with pytest.raises(ValueError, match="line 3 has a Description-en but no Package"):
        list(ddtp_stanzas(["Package: a\n", "\n", "Description-en: b\n", " text\n"]))


def test_real_ddtp_summary_pairs(raw_dir):
    pairs, prov = debian_summary_pairs(raw_dir)  # about 2 s: the index is already downloaded
    stats = prov["sources"]["ddtp"]["extracted"]
    assert 30_000 < len(pairs) == stats["pairs"] < stats["descriptions"]
    assert stats["near_duplicate"] > 5_000 and stats["duplicate"] > 1_000 and stats["generated"] > 500
    sources = [source for source, _, _ in pairs]
    assert len(set(sources)) == len(sources)
    assert all(doc_id.startswith("ddtp:") and target for _, target, doc_id in pairs)
    assert all("\n" not in source and len(source.split()) >= 10 for source in sources)
    assert not any("packaged by debcargo" in source and len(source.split()) < 20 for source in sources)
    assert len(prov["sources"]["ddtp"]["sha256"]["Translation-en"]) == 64
    splits = split_pairs(pairs, seed=0)
    assert sum(map(len, splits.values())) == len(pairs) and all(splits.values())
