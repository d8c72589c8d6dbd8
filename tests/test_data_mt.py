"""Machine-translation data: Debian pair extraction, cleaning, splits by document, cached corpora,
token-budget batches, the hub path through local WMT16-layout files, and bad inputs."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from layerdrop.data.cache import CorpusCacheError
from layerdrop.data.debian_sources import DING, LIBREOFFICE_DE, LIBREOFFICE_EN, debian_pairs, fetch_ddtp
from layerdrop.data.lm import IGNORE_INDEX
from layerdrop.data.mt import MTDataModule, format_mt_manifest
from layerdrop.data.mt_corpus import (
    BOS,
    build_mt_corpus,
    ensure_mt_corpus,
    from_text_files,
    load_mt_corpus,
)
from layerdrop.data.mt_sources import clean_pairs, ddtp_pairs, ding_pairs, help_paragraphs, split_pairs
from layerdrop.data.pair_batches import TokenBatchSampler

ROOT = Path(__file__).resolve().parents[1]
SMALL_VOCAB = 400


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    # Same folder as `make data-mt`, so the packages are downloaded once per machine.
    return ROOT / os.environ.get("LAYERDROP_DATA_DIR", "data") / "raw"


@pytest.fixture(scope="session")
def debian_subset(raw_dir) -> tuple[list, dict]:
    """Real pairs from the first help pages and dictionary lines (DDTP is tested on its own)."""
    return debian_pairs(raw_dir, include_ddtp=False, libreoffice_pages=80, ding_lines=30000)


@pytest.fixture(scope="session")
def subset_splits(debian_subset) -> dict[str, list[tuple[str, str]]]:
    kept, _ = clean_pairs(debian_subset[0])
    return split_pairs(kept, seed=0, valid_frac=0.1, test_frac=0.1)


@pytest.fixture(scope="session")
def subset_corpus_dir(tmp_path_factory, debian_subset, subset_splits) -> Path:
    out_dir = tmp_path_factory.mktemp("mt") / "subset"
    return build_mt_corpus(
        subset_splits, out_dir, vocab_size=SMALL_VOCAB, provenance=debian_subset[1], seed=0
    )


# ---------------------------------------------------------------------------------------------------
# Sources


def test_debian_subset_has_real_pairs_and_provenance(debian_subset):
    pairs, prov = debian_subset
    sources = Counter(doc_id.split(":")[0] for _, _, doc_id in pairs)
    assert sources["libreoffice"] > 1000 and sources["ding"] > 500
    assert "subset(" in prov["source"]
    for name, info in prov["sources"].items():
        assert info["license"] and info["extracted"]["pairs"] == sources[name]
        for package in info["packages"].values():
            assert package["version"] and len(package["sha256"]) == 64 and package["bytes"] > 0
    assert set(prov["sources"]["libreoffice"]["packages"]) == {LIBREOFFICE_EN, LIBREOFFICE_DE}
    assert set(prov["sources"]["ding"]["packages"]) == {DING}
    ding = [(en, de) for en, de, doc_id in pairs if doc_id.startswith("ding:")]
    assert all(en[0].isupper() or not en[0].isalpha() for en, _ in ding)
    assert all(en.endswith((".", "!", "?")) and de.endswith((".", "!", "?")) for en, de in ding)


def test_help_page_paragraphs_resolve_switches_and_skip_markup(tmp_path):
    page = tmp_path / "page.html"
    page.write_text(
        '<html><head><script>var x = "<p id=no>";</script></head><body>'
        '<h1 id="hd_1">Title &amp; more</h1>'
        '<p id="par_1" class="paragraph">Choose <span class="switchinline">'
        '<span hidden="true" id="MACtext" class="MAC">Preferences</span>'
        '<span hidden="true" id="defaulttext">Tools - Options</span></span><br>now.</p>'
        '<p id="par_2">When <span class="switchinline"><span hidden="true" id="WRITERx" class="WRITER">'
        'text</span><span hidden="true" id="CALCx" class="CALC">a cell</span></span> is selected</p>'
        '<p class="noid">not a paragraph of the help</p><p id="par_3"><img src="x.png" alt="alt"></p>'
        "</body></html>",
        encoding="utf-8",
    )
    paragraphs = [(pid, " ".join(text.split())) for pid, text in help_paragraphs(page)]
    assert paragraphs == [
        ("hd_1", "Title & more"),
        ("par_1", "Choose Tools - Options now."),
        ("par_2", "When text is selected"),
        ("par_3", ""),
    ]


def test_ding_keeps_only_sentence_pairs_and_counts_the_rest():
    lines = [
        "# License :: GPL\n",
        "Aal {m} | Ein Aal. :: eel | An eel.\n",
        "Haus {n} | Das Haus ist sehr alt. | Er wohnt im Haus. :: house | The house is very old. | He lives in the house.\n",
        "Ding | Das ist mein Ding / meine Sache. :: thing | That is my thing.\n",
        "etw. tun | Sie tat etw. Neues dafür. :: to do sth. | She did sth. new for it.\n",
        "kaputt :: broken | extra\n",
    ]
    pairs, stats = ding_pairs(lines)
    assert pairs == [
        ("The house is very old.", "Das Haus ist sehr alt.", "ding:3"),
        ("He lives in the house.", "Er wohnt im Haus.", "ding:3"),
    ]
    assert stats["entries"] == 5 and stats["unequal_sub_entries"] == 1
    assert stats["slash_alternatives"] == 1 and stats["placeholder"] == 1
    # 'Aal'/'eel' and 'Ein Aal.' (too short), 'Haus'/'house', 'Ding'/'thing', 'etw. tun' (lower case)
    assert stats["not_sentence"] == 5


def test_ddtp_pairs_by_md5_with_paragraphs_and_lists():
    en = (
        "Package: foo\nDescription-md5: aaa\nDescription-en: tool to frobnicate files\n"
        " Foo frobnicates files\n quickly.\n .\n Features:\n  * speed and\n    more speed\n  * safety\n\n"
        "Package: bar\nDescription-md5: bbb\nDescription-en: bar library\n One paragraph.\n .\n Two.\n\n"
    ).splitlines(keepends=True)
    de = (
        "Package: foo\nDescription-md5: aaa\nDescription-de: Werkzeug zum Frobnizieren\n"
        " Foo frobniziert Dateien\n schnell.\n .\n Funktionen:\n  * Tempo und\n    mehr Tempo\n  * Sicherheit\n\n"
        "Package: bar\nDescription-md5: bbb\nDescription-de: Bar-Bibliothek\n Ein Absatz, ohne zweiten.\n\n"
        "Package: baz\nDescription-md5: ccc\nDescription-de: verwaist\n\n"
    ).splitlines(keepends=True)
    pairs, stats = ddtp_pairs(en, de)
    texts = [(" ".join(e.split()), " ".join(d.split())) for e, d, _ in pairs]
    assert texts == [
        ("tool to frobnicate files", "Werkzeug zum Frobnizieren"),
        ("Foo frobnicates files quickly.", "Foo frobniziert Dateien schnell."),
        ("Features:", "Funktionen:"),
        ("* speed and more speed", "* Tempo und mehr Tempo"),
        ("* safety", "* Sicherheit"),
        ("bar library", "Bar-Bibliothek"),  # unequal paragraphs: only the synopsis
    ]
    assert {doc_id for _, _, doc_id in pairs} == {"ddtp:aaa", "ddtp:bbb"}
    assert stats["unequal_paragraphs"] == 1 and stats["de_without_en"] == 1


def test_real_ddtp_translations(raw_dir):
    files, prov = fetch_ddtp(raw_dir)
    assert prov["suite"] == "bookworm" and prov["release_date"] and len(prov["sha256"]) == 2
    with open(files["en"], encoding="utf-8") as en, open(files["de"], encoding="utf-8") as de:
        pairs, stats = ddtp_pairs(en, de)
    assert stats["descriptions_de"] > 10000 and len(pairs) > 30000
    assert all(doc_id.startswith("ddtp:") and en and de for en, de, doc_id in pairs)


# ---------------------------------------------------------------------------------------------------
# Cleaning and splits


def test_clean_pairs_normalises_dedups_and_counts_by_source():
    pairs = [
        ("Open  the file.", "Öffnen Sie die Datei.", "a:1"),
        ("Open the file.\n", "Öffnen Sie die Datei.", "a:2"),  # same pair after normalisation
        ("", "Leer", "a:3"),
        ("Basic", "Basic", "a:4"),
        ("Open the file.", "Öffnen Sie die Datei.", "b:1"),  # repeated across sources
        ("Save it.", "Speichern Sie sie.", "b:2"),
        ("Save it.", " ", "b:3"),
    ]
    kept, stats = clean_pairs(pairs)
    assert kept == [
        ("Open the file.", "Öffnen Sie die Datei.", "a:1"),
        ("Save it.", "Speichern Sie sie.", "b:2"),
    ]
    assert stats == {
        "a": {"pairs": 4, "empty": 1, "untranslated": 1, "duplicate": 1, "kept": 1},
        "b": {"pairs": 3, "empty": 1, "untranslated": 0, "duplicate": 1, "kept": 1},
    }
    kept_all, _ = clean_pairs(pairs, drop_untranslated=False, dedup=False)
    assert len(kept_all) == 5


def test_split_by_document_is_disjoint_complete_and_deterministic():
    pairs = [(f"en {d} {k}", f"de {d} {k}", f"doc:{d}") for d in range(200) for k in range(1 + d % 7)]
    doc_of = {(en, de): doc for en, de, doc in pairs}
    splits = split_pairs(pairs, seed=7, valid_frac=0.1, test_frac=0.1)
    docs = {split: {doc_of[pair] for pair in split_pairs_} for split, split_pairs_ in splits.items()}
    assert not (docs["train"] & docs["valid"] or docs["train"] & docs["test"] or docs["valid"] & docs["test"])
    assert sorted(p for s in splits.values() for p in s) == sorted((en, de) for en, de, _ in pairs)
    for split in ("valid", "test"):
        assert 0.08 * len(pairs) < len(splits[split]) < 0.14 * len(pairs)
    assert split_pairs(list(reversed(pairs)), seed=7, valid_frac=0.1, test_frac=0.1)["test"] == list(
        reversed(splits["test"])
    )
    assert split_pairs(pairs, seed=8, valid_frac=0.1, test_frac=0.1)["test"] != splits["test"]
    with pytest.raises(ValueError, match="too few"):
        split_pairs(pairs[:2], seed=0, valid_frac=0.3, test_frac=0.3)


def test_real_subset_split_keeps_help_pages_together(debian_subset):
    kept, _ = clean_pairs(debian_subset[0])
    doc_of = {(en, de): doc for en, de, doc in kept}
    splits = split_pairs(kept, seed=0, valid_frac=0.1, test_frac=0.1)
    seen: dict[str, str] = {}
    for split, pairs in splits.items():
        for pair in pairs:
            assert seen.setdefault(doc_of[pair], split) == split


# ---------------------------------------------------------------------------------------------------
# Corpus on disk


def test_corpus_files_manifest_and_roundtrip(subset_corpus_dir, subset_splits):
    corpus = load_mt_corpus(subset_corpus_dir)
    manifest = corpus.manifest
    assert manifest["tokenizer"]["special_tokens"] == {
        "<pad>": 0,
        "<eos>": 1,
        "<unk>": 2,
        BOS: SMALL_VOCAB - 1,
    }
    assert corpus.vocab_size == SMALL_VOCAB and corpus.bos_id == SMALL_VOCAB - 1
    for split, pairs in subset_splits.items():
        stats = manifest["splits"][split]
        assert stats["pairs"] == len(pairs) == len(corpus.text[split]["en"])
        assert corpus.text[split]["de"] == [de for _, de in pairs]
        assert stats["de_words"] == sum(len(de.split()) for _, de in pairs)
        assert stats["en_tokens"] == corpus.ids[split]["en"].flat.size
        assert (
            corpus.ids[split]["en"].flat.dtype == np.int32
            and corpus.ids[split]["en"].offsets.dtype == np.int64
        )
    # Byte-level BPE gives back the exact sentence.
    en0 = corpus.ids["test"]["en"][0].tolist()
    assert corpus.tokenizer.decode(en0) == subset_splits["test"][0][0]
    assert set(manifest["sha256"]) >= {
        "tokenizer.json",
        "train.en",
        "test.de.ids.npy",
        "valid.en.offsets.npy",
    }
    summary = format_mt_manifest(subset_corpus_dir, manifest)
    assert "libreoffice" in summary and "trans-de-en=" in summary


def test_ensure_reuses_intact_corpus_and_rebuilds_damaged(tmp_path, subset_splits, debian_subset):
    out_dir = tmp_path / "c"
    prov = debian_subset[1]
    calls = []

    def make():
        calls.append(1)
        return subset_splits, prov

    settings = dict(vocab_size=SMALL_VOCAB, seed=0, source=prov["source"], log=lambda _: None)
    ensure_mt_corpus(out_dir, make, **settings)
    ensure_mt_corpus(out_dir, make, **settings)
    assert len(calls) == 1
    with open(out_dir / "valid.de.ids.npy", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\xff\xff\xff\x7f")
    with pytest.raises(CorpusCacheError, match="valid.de.ids.npy"):
        load_mt_corpus(out_dir)
    ensure_mt_corpus(out_dir, make, **settings)
    assert len(calls) == 2
    load_mt_corpus(out_dir)


def test_build_rejects_empty_or_unnormalised_pairs(tmp_path, subset_splits):
    bad = {**subset_splits, "valid": [("ok.", "ok."), ("", "leer")]}
    with pytest.raises(ValueError, match="valid pair 1"):
        build_mt_corpus(bad, tmp_path / "bad", vocab_size=SMALL_VOCAB, provenance={}, seed=0)
    assert not (tmp_path / "bad").exists()


def test_load_rejects_manifests_of_other_tasks_and_versions(tmp_path, subset_corpus_dir):
    lm_like = tmp_path / "lm_like"
    lm_like.mkdir()
    (lm_like / "manifest.json").write_text(json.dumps({"format_version": 1, "sha256": {}}))
    with pytest.raises(CorpusCacheError, match="not a translation corpus manifest") as err:
        load_mt_corpus(lm_like)
    assert "make data-mt" in str(err.value)
    newer = tmp_path / "newer"
    newer.mkdir()
    manifest = json.loads((subset_corpus_dir / "manifest.json").read_text())
    (newer / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(CorpusCacheError, match="format version 99, this code reads 1"):
        load_mt_corpus(newer)


# ---------------------------------------------------------------------------------------------------
# Batches


def _cost(batch, src_lens, tgt_lens) -> int:
    return len(batch) * (max(src_lens[batch]) + max(tgt_lens[batch]))


def test_token_batches_respect_budget_and_cover_every_pair_once():
    rng = np.random.default_rng(0)
    src_lens = rng.integers(2, 120, size=3000)
    tgt_lens = rng.integers(2, 120, size=3000)
    for shuffle in (True, False):
        sampler = TokenBatchSampler(
            src_lens, tgt_lens, max_tokens=1024, shuffle=shuffle, seed=3, bucket_pairs=500
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(_cost(b, src_lens, tgt_lens) <= 1024 for b in batches)
        assert sorted(k for b in batches for k in b) == list(range(3000))
        assert list(sampler) == batches  # deterministic within an epoch
        sampler.set_epoch(1)
        assert (list(sampler) != batches) == shuffle
    with pytest.raises(ValueError, match="max_tokens=100"):
        TokenBatchSampler(np.array([60]), np.array([50]), max_tokens=100, shuffle=False)


def test_datamodule_batches_on_real_subset(tmp_path, subset_corpus_dir):
    dm = MTDataModule(
        "debian",
        data_dir=str(tmp_path),
        vocab_size=SMALL_VOCAB,
        max_tokens=600,
        max_source_len=48,
        max_target_len=40,
        split_seed=0,
    )
    # setup() only reads dm.corpus_dir; put the small real corpus there instead of the full build.
    dm.corpus_dir.parent.mkdir(parents=True)
    os.symlink(subset_corpus_dir, dm.corpus_dir)
    dm.setup()
    corpus = load_mt_corpus(subset_corpus_dir)
    train_src = corpus.ids["train"]["en"].lengths + 1
    train_tgt = corpus.ids["train"]["de"].lengths + 1
    too_long_src = int((train_src > 48).sum())
    assert dm.stats["train"]["skipped_source_too_long"] == too_long_src > 0
    assert dm.stats["train"]["skipped_target_too_long"] == int(((train_src <= 48) & (train_tgt > 40)).sum())
    assert dm.stats["valid"]["truncated_source"] == int((corpus.ids["valid"]["en"].lengths + 1 > 48).sum())
    assert dm.stats["dropped_while_building"] == {}  # clean_pairs ran before build in the fixture

    seen = []
    for batch in dm.train_dataloader():
        src, tgt_in, tgt_out = batch["src"], batch["tgt_in"], batch["tgt_out"]
        assert src.dtype == tgt_in.dtype == tgt_out.dtype == torch.long
        assert src.numel() + tgt_in.numel() <= 600 and src.shape[1] <= 48 and tgt_in.shape[1] <= 40
        assert (tgt_in[:, 0] == dm.bos_id).all()
        for row, pair_id in enumerate(batch["ids"].tolist()):
            ids = corpus.ids["train"]["de"][pair_id].tolist()
            n = len(ids)
            assert tgt_out[row, :n].tolist() == ids and tgt_out[row, n] == dm.eos_id
            assert (tgt_out[row, n + 1 :] == IGNORE_INDEX).all() and (tgt_in[row, n + 1 :] == dm.pad_id).all()
            src_ids = corpus.ids["train"]["en"][pair_id].tolist()
            assert src[row, : len(src_ids)].tolist() == src_ids and src[row, len(src_ids)] == dm.eos_id
        seen += batch["ids"].tolist()
    assert sorted(seen) == sorted(set(seen)) and len(seen) == dm.stats["train"]["used"]

    valid_ids = [i for batch in dm.val_dataloader() for i in batch["ids"].tolist()]
    assert sorted(valid_ids) == list(range(dm.stats["valid"]["pairs"]))  # truncated, never dropped
    refs = dm.references("valid")
    assert refs == corpus.text["valid"]["de"]
    assert dm.decode(corpus.ids["valid"]["de"][0].tolist() + [dm.eos_id]) == refs[0]


# ---------------------------------------------------------------------------------------------------
# Hub path through local files in the WMT16 layout


def _wmt_rows(pairs):
    return [{"translation": {"de": de, "en": en}} for en, de in pairs]


@pytest.fixture(scope="session")
def wmt_files(tmp_path_factory, subset_splits) -> dict[str, dict[str, str]]:
    """The real subset written as WMT16-layout JSON lines and parquet, with bad rows in train/valid."""
    root = tmp_path_factory.mktemp("wmt")
    long_en = " ".join(["word"] * 300) + "."
    rows = {
        "train": _wmt_rows(subset_splits["train"])
        + _wmt_rows([("", "leer"), ("Nothing here.", "  "), (long_en, "Lang.")]),
        "validation": _wmt_rows(subset_splits["valid"]) + _wmt_rows([(long_en, "Lang.")]),
        "test": _wmt_rows(subset_splits["test"]),
    }
    files = {"json": {}, "parquet": {}}
    for split, split_rows in rows.items():
        path = root / f"{split}.jsonl"
        path.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in split_rows), encoding="utf-8"
        )
        files["json"][split] = str(path)
        pq.write_table(pa.Table.from_pylist(split_rows), root / f"{split}.parquet")
        files["parquet"][split] = str(root / f"{split}.parquet")
    return files


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_hub_path_through_local_wmt16_files(tmp_path, wmt_files, subset_splits, fmt):
    dm = MTDataModule(
        "hub",
        data_dir=str(tmp_path),
        hub_path=fmt,
        hub_name=None,
        hub_data_files=wmt_files[fmt],
        vocab_size=SMALL_VOCAB,
        max_tokens=1024,
        max_source_len=64,
        max_target_len=64,
        direction="de-en",
    )
    dm.prepare_data()
    dm.setup()
    manifest = dm.corpus_manifest
    assert manifest["seed"] is None and manifest["provenance"]["source"].startswith(f"datasets:{fmt}:")
    cleaning = manifest["provenance"]["cleaning"]
    assert cleaning["train"]["empty"] == 2 and cleaning["valid"]["empty"] == 0
    assert manifest["splits"]["train"]["pairs"] == len(subset_splits["train"]) + 1
    assert manifest["splits"]["test"]["pairs"] == len(subset_splits["test"])  # nothing deduplicated
    assert dm.stats["dropped_while_building"]["train"]["empty"] == 2
    # de-en: the long English sentence is the target here.
    assert dm.stats["train"]["skipped_target_too_long"] >= 1
    assert dm.stats["valid"]["truncated_target"] >= 1
    # A batch row decodes back to its reference (one whose target was not cut).
    short = int(np.argmin(dm.datasets["valid"].tgt_lens))
    batch = next(b for b in dm.val_dataloader() if short in b["ids"].tolist())
    target = batch["tgt_out"][batch["ids"].tolist().index(short)]
    assert dm.decode(target[target != IGNORE_INDEX].tolist()) == dm.references("valid")[short]
    assert dm.references("valid") == [en for en, _ in subset_splits["valid"]] + [
        " ".join(["word"] * 300) + "."
    ]
    # A second prepare_data reuses the cached corpus.
    before = (dm.corpus_dir / "manifest.json").stat().st_mtime_ns
    dm.prepare_data()
    assert (dm.corpus_dir / "manifest.json").stat().st_mtime_ns == before


def test_hub_path_rejects_wrong_layout(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"text": "hello"}) + "\n")
    files = {"train": str(path), "validation": str(path), "test": str(path)}
    dm = MTDataModule("hub", data_dir=str(tmp_path), hub_path="json", hub_name=None, hub_data_files=files)
    with pytest.raises(ValueError, match="'translation' column"):
        dm.prepare_data()


# ---------------------------------------------------------------------------------------------------
# Bad inputs


def test_from_text_files_counts_empty_lines_and_rejects_unequal_files(tmp_path):
    en, de = tmp_path / "x.en", tmp_path / "x.de"
    en.write_text("Hello world.\n\nGood  night.\nOnly English.\n", encoding="utf-8")
    de.write_text("Hallo Welt.\nNur Deutsch.\nGute Nacht.\n\n", encoding="utf-8")
    pairs, stats = from_text_files(en, de)
    assert pairs == [("Hello world.", "Hallo Welt."), ("Good night.", "Gute Nacht.")]
    assert stats == {"lines": 4, "empty_source": 1, "empty_target": 1, "kept": 2}
    assert from_text_files(de, en, direction="de-en")[0] == pairs
    de.write_text("Hallo Welt.\nGute Nacht.\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"x\.en has 4 lines, .*x\.de has 2"):
        from_text_files(en, de)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "web"}, "source must be one of"),
        ({"direction": "en-fr"}, "direction must be one of"),
        ({"max_tokens": 300}, "max_tokens=300 must be at least"),
        ({"max_source_len": 1}, "at least 2"),
        ({"max_train_pairs": 0}, "max_train_pairs"),
    ],
)
def test_datamodule_rejects_bad_settings(kwargs, message):
    settings = {"source": "debian", **kwargs}
    with pytest.raises(ValueError, match=message):
        MTDataModule(**settings)


def test_max_train_pairs_takes_a_seeded_subset(tmp_path, subset_corpus_dir):
    def used_ids(seed):
        data_dir = Path(tempfile.mkdtemp(dir=tmp_path))
        dm = MTDataModule(
            "debian", data_dir=str(data_dir), vocab_size=SMALL_VOCAB, split_seed=seed, max_train_pairs=50
        )
        dm.corpus_dir.parent.mkdir(parents=True)
        os.symlink(subset_corpus_dir, dm.corpus_dir)
        dm.setup()
        return dm.datasets["train"].ids.tolist(), dm.stats["train"]["used"]

    ids, used = used_ids(0)
    assert used == len(ids) == 50 and ids == sorted(ids)
    assert used_ids(0)[0] == ids and used_ids(1)[0] != ids
