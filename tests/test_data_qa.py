"""Long-form QA data: dictd index/dict reading, FOLDOC and Jargon File definitions as QA pairs."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import pytest

from layerdrop.data.qa_sources import (
    MIN_ANSWER_WORDS,
    clean_definition,
    debian_qa_pairs,
    dictd_entries,
    dictd_number,
    dictd_qa_pairs,
    drop_questions_in,
    read_dictd,
)

ROOT = Path(__file__).resolve().parents[1]
DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

# 43 words once cleaned; the é and the curly quotes make byte offsets differ from character offsets
WIDGET = """\
Widget
widgets

   <hardware, humour> A small {gadget} whose purpose is not
   obvious to the café owner, described in the {wiki entry
   (http://example.org/w)} and in {(rfc:822)}, or at
   {(ftp://ftp.example.org/pub/)}.

   It is usually ‘fixed’ with a {hammer}, which rarely helps
   but always feels good to the person holding it.

   [{Jargon File}]

   (1995-03-29)

"""
SHORT = "Foo\n\n   <language> See {bar}.\n\n"
CITATION = 'ALGOL D\n\n   <language>\n\n   ["A Proposal for Definitions", B.A. Galler et al].\n\n'
# Jargon style: pronunciation in the header, etymology in brackets, wrapped and set-like braces
KLUDGE = """\
kludge
 /kluhj/, n.

    [from the old Scots "kludgie", an outside toilet]

    1. A {crock} that works, somehow, for now. See also {
    hack} and {flame
    }s, and the set { x in S } which stays as it is. 2. To use a kludge to get
    around a problem when there is no time to fix it properly.

"""


def dictd_b64(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 64)
        digits = DIGITS[r] + digits
        if n == 0:
            return digits


def dictd_files(entries: list[tuple[list[str], str]]) -> tuple[str, bytes]:
    """(index text, dict bytes) with each entry reachable from all of its headwords."""
    data, lines = b"", ["00-database-short\tA\tB"]
    for headwords, text in entries:
        raw = text.encode("utf-8")
        lines += [f"{h}\t{dictd_b64(len(data))}\t{dictd_b64(len(raw))}" for h in headwords]
        data += raw
    return "\n".join(lines) + "\n", data


def test_dictd_number():
    assert [dictd_number(d) for d in ("A", "B", "/", "BA", "BAA")] == [0, 1, 63, 64, 4096]
    assert dictd_number("Gb9L") == ((6 * 64 + 27) * 64 + 61) * 64 + 11
    assert all(dictd_number(dictd_b64(n)) == n for n in (0, 65, 99_999, 5_578_809))
    with pytest.raises(ValueError, match="'=' in 'AB=' is not a dictd base64 digit"):
        dictd_number("AB=")


def test_dictd_entries_by_byte_offsets_once_each():
    index, data = dictd_files([(["widget", "widgets"], WIDGET), (["foo"], SHORT)])
    entries, stats = dictd_entries(index, data)
    assert entries == [WIDGET, SHORT]  # SHORT follows multi-byte characters: offsets count bytes
    assert stats == {"index_lines": 4, "metadata": 1, "aliases": 1, "entries": 2}
    with pytest.raises(ValueError, match="past the end of the"):
        dictd_entries("foo\tA\tBAA\n", data[:100])
    with pytest.raises(ValueError, match="index line 1 'foo A' is not"):
        dictd_entries("foo A\n", data)


def test_clean_foldoc_definition():
    body = WIDGET.split("\n\n", 1)[1]
    assert clean_definition(body, "foldoc") == (
        "A small gadget whose purpose is not obvious to the café owner, described in the wiki entry "
        "and in RFC 822, or at ftp://ftp.example.org/pub/. It is usually ‘fixed’ with a hammer, which "
        "rarely helps but always feels good to the person holding it."
    )


def test_clean_jargon_definition_keeps_brackets_and_code_braces():
    body = KLUDGE.split("\n\n", 1)[1]
    assert clean_definition(body, "jargon") == (
        '[from the old Scots "kludgie", an outside toilet] 1. A crock that works, somehow, for now. '
        "See also hack and flames, and the set { x in S } which stays as it is. 2. To use a kludge to "
        "get around a problem when there is no time to fix it properly."
    )


def test_dictd_qa_pairs_from_gzip_files(tmp_path):
    duplicate = "Widget two\n\n" + WIDGET.split("\n\n", 1)[1]  # another headword, the same answer
    index, data = dictd_files(
        [
            (["widget", "widgets"], WIDGET),
            (["foo"], SHORT),
            (["algol d"], CITATION),
            (["widget two"], duplicate),
        ]
    )
    folder = tmp_path / "usr/share/dictd"
    folder.mkdir(parents=True)
    (folder / "foldoc.index").write_text(index, encoding="utf-8")
    with gzip.open(folder / "foldoc.dict.dz", "wb") as f:
        f.write(data)
    pairs, stats = dictd_qa_pairs(*read_dictd(tmp_path, "foldoc"), "foldoc")
    assert [(q, d) for q, _, d in pairs] == [("What is Widget?", "foldoc:Widget")]
    assert len(pairs[0][1].split()) >= MIN_ANSWER_WORDS
    assert stats == {
        "index_lines": 6,
        "metadata": 1,
        "aliases": 1,
        "entries": 4,
        "empty": 1,  # ALGOL D: only a citation
        "too_short": 1,  # Foo: "See bar."
        "duplicate": 1,
        "pairs": 1,
    }
    with pytest.raises(ValueError, match="unknown dictionary source 'wiki'"):
        dictd_qa_pairs(index, data, "wiki")
    with pytest.raises(RuntimeError, match="jargon.index is missing"):
        read_dictd(tmp_path, "jargon")


def test_jargon_pair_and_cross_source_questions():
    index, data = dictd_files([(["kludge"], KLUDGE)])
    jargon, _ = dictd_qa_pairs(index, data, "jargon")
    assert [(q, d) for q, _, d in jargon] == [("What is kludge?", "jargon:kludge")]
    foldoc = [
        ("What is Kludge?", "a FOLDOC copy", "foldoc:Kludge"),
        ("What is Widget?", "w", "foldoc:Widget"),
    ]
    stats = {"pairs": 2}
    assert drop_questions_in(foldoc, jargon, stats, "in_jargon") == foldoc[1:]
    assert stats == {"pairs": 1, "in_jargon": 1}


def test_real_dictionaries():
    raw_dir = ROOT / os.environ.get("LAYERDROP_DATA_DIR", "data") / "raw"
    pairs, prov = debian_qa_pairs(raw_dir)  # about 2 s once the two .deb files (3 MB) are downloaded
    foldoc = [p for p in pairs if p[2].startswith("foldoc:")]
    jargon = [p for p in pairs if p[2].startswith("jargon:")]
    assert len(foldoc) + len(jargon) == len(pairs)
    assert 4_500 < len(foldoc) < 7_000 and 1_500 < len(jargon) < 2_000
    stats = {source: info["extracted"] for source, info in prov["sources"].items()}
    assert stats["foldoc"]["pairs"] == len(foldoc) and stats["jargon"]["pairs"] == len(jargon)
    assert 11_000 < stats["foldoc"]["entries"] < 13_000 and 2_200 < stats["jargon"]["entries"] < 2_400
    assert stats["foldoc"]["in_jargon"] > 500  # FOLDOC took many entries from the Jargon File
    for source, info in prov["sources"].items():
        (package,) = info["packages"].values()
        assert package["version"] and len(package["sha256"]) == 64 and info["license"], source
    assert all(len(answer.split()) >= MIN_ANSWER_WORDS and "\n" not in answer for _, answer, _ in pairs)
    assert all(re.fullmatch(r"What is .+\?", question) for question, _, _ in pairs)
    assert len({answer for _, answer, _ in pairs}) == len(pairs)
    assert not any("[{Jargon File}]" in answer for _, answer, _ in foldoc)
    assert sum(bool(re.search(r"\(\d{4}-\d\d-\d\d\)\.?$", answer)) for _, answer, _ in foldoc) < 5
    # nearly every simple cross-reference became text (a few are doubled in the source: {{VAX}})
    assert sum(bool(re.search(r"\{[A-Za-z][\w ]*\}", answer)) for _, answer, _ in pairs) < 5
