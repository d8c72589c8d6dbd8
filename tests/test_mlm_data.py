"""The cpu pretraining corpus: the FAQ's HTML read as sections, the union of sources split by document, and
its data module on constructed sources (the real sources go through the tiny pretraining run, test_mlm)."""

import pytest

from layerdrop.config import load_config
from layerdrop.data import english_sources, mlm
from layerdrop.data.corpus import load_corpus
from layerdrop.schema import check_config

PROSE = ("Anarchism is a political theory which aims to create a society without rulers or masters, in which "
         "people freely co-operate ")


def page(*sections: str) -> str:
    body = "".join(sections)
    return (f"<!DOCTYPE html><html><head><title>A.1 What is anarchism? | Anarchist Writers</title>"
            f"<style>p {{color: red}}</style></head><body><div class='content'>{body}</div>"
            "<script>var x = 'not text';</script></body></html>")


def test_html_sections_cut_at_headings_keep_blocks_as_lines_and_drop_hidden_and_short_text():
    html = page(f"<p>{PROSE}as <i>equals</i> &amp; free.</p><blockquote><p>A quoted line, {PROSE}</p></blockquote>",
                "<h2>A.1.1 What does &quot;anarchy&quot; mean?</h2>", f"<p>The word {PROSE}</p>",
                "<h3>Short</h3><p>Too few words here.</p>")
    sections = english_sources.html_sections(html)
    assert len(sections) == 2  # the third (5 words) is dropped
    first, second = (s.split("\n") for s in sections)
    assert first == [f"{PROSE}as equals & free.".replace("  ", " "), f"A quoted line, {PROSE.strip()}"]
    assert second[0] == 'A.1.1 What does "anarchy" mean?' and second[1].startswith("The word Anarchism")
    text = "\n".join(sections)
    assert "Anarchist Writers" not in text and "not text" not in text and "color" not in text


def test_faq_documents_read_only_prose_pages_and_drop_repeated_sections(tmp_path):
    (tmp_path / "secA1.html").write_text(page(f"<p>{PROSE}one.</p>", "<h2>Two</h2>", f"<p>{PROSE}two.</p>"))
    (tmp_path / "append1.html").write_text(page("<h2>Two</h2>", f"<p>{PROSE}two.</p>", "<h2>Three</h2>",
                                                f"<p>{PROSE}three.</p>"))
    (tmp_path / "alinks.html").write_text(page(f"<p>{PROSE}links page.</p>"))  # a link list: not prose
    docs, stats = english_sources.faq_documents(tmp_path)
    assert [d.split()[-1] for d in docs] == ["two.", "three.", "one."]  # append1, then secA1; 'two' once
    assert stats == {"pages": 2, "sections": 4, "duplicate": 1}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no FAQ section of at least 20 words"):
        english_sources.faq_documents(tmp_path / "empty")


def fake_sources(n: int = 60) -> dict[str, list[str]]:
    return {name: [f"{name} document {i}: " + " ".join(f"{name}{j}" for j in range(i % 7 + 5)) for i in range(n)]
            for name in mlm.SOURCES}


def test_union_splits_split_each_source_by_document_and_mix_the_splits():
    docs = fake_sources()
    docs["ddtp"].append(docs["news"][0])  # the same text in two sources is kept once, by the first
    splits, counts = mlm.union_splits(docs, seed=3)
    assert counts["ddtp"]["dropped_repeated"] == 1 and counts["news"]["dropped_repeated"] == 0
    for name in mlm.SOURCES:  # every split holds every source: 5% valid, 5% test of each (at least one)
        assert (counts[name]["valid"], counts[name]["test"], counts[name]["train"]) == (3, 3, 54)
        assert counts[name]["train_words"] == sum(len(d.split()) for d in splits["train"] if d.startswith(name))
    seen = [doc for split in mlm.SPLITS for doc in splits[split]]
    assert len(seen) == len(set(seen)) == 180  # no document in two splits
    assert splits == mlm.union_splits(docs, seed=3)[0] and splits != mlm.union_splits(docs, seed=4)[0]
    head = splits["train"][:30]  # a max_train_tokens prefix is a mix, not the first source
    assert {doc.split()[0] for doc in head} == set(mlm.SOURCES)
    assert len({doc.split()[0] for doc in splits["valid"][:3]}) > 1


def test_the_union_data_module_builds_one_corpus_from_every_source(tmp_path, monkeypatch):
    docs = fake_sources(80)
    for name in mlm.SOURCES:
        monkeypatch.setitem(mlm.ENGLISH_SOURCES, name,
                            lambda raw_dir, name=name: (docs[name], {"source": f"test:{name}", "license": "test"}))
    dm = mlm.UnionTextDataModule(["news", "ddtp"], data_dir=str(tmp_path), vocab_size=300, block_size=16,
                                 batch_size=4, frequency_order=False)
    assert dm.corpus_name == "union-news+ddtp_bpe300_s1234"
    dm.prepare_data()
    dm.setup("fit")
    manifest = load_corpus(tmp_path / "lm" / dm.corpus_name).manifest
    assert manifest["provenance"]["source"] == "offline:news+ddtp"
    assert set(manifest["provenance"]["sources"]) == {"news", "ddtp"}
    assert manifest["provenance"]["sources"]["news"]["split"]["train"] == 72
    assert manifest["splits"]["train"]["documents"] == 144
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (4, 16) and int(batch["input"].max()) < dm.vocab_size
    assert isinstance(dm.hparams["sources"], list)  # a plain list: a checkpoint's hparams hold it


@pytest.mark.parametrize("sources,message", [
    ([], "must name at least one of news, anarchism, ddtp"),
    (["news", "bible"], "'bible' not known; allowed: news, anarchism, ddtp"),
    (["news", "news"], "named twice"),
])
def test_bad_sources_are_refused_by_name(sources, message):
    with pytest.raises(ValueError, match=message):
        mlm.UnionTextDataModule(sources)


def test_the_union_refuses_a_hub_source():
    with pytest.raises(ValueError, match="hub_path: the union corpus reads data.sources"):
        mlm.UnionTextDataModule(["news"], hub_path="Salesforce/wikitext")


@pytest.mark.parametrize("overrides,message", [
    (["data.sources=[news,bible]"], r"data.sources\[1\]='bible': expected one of news, anarchism, ddtp"),
    (["data=mlm_cpu_news", "+data.sources=[news]"], "LMDataModule takes data.source, not data.sources"),
    (["+data.source=news"], "UnionTextDataModule takes data.sources, not data.source"),
    (["~data.sources"], "data.sources: missing"),
    (["+data.hub_path=Salesforce/wikitext"], "data.hub_path='Salesforce/wikitext': .* reads data.sources, not the hub"),
])
def test_the_pretraining_text_is_checked_at_config_time(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_config(load_config(["experiment=pretrain_mlm", *overrides]))


def test_the_cpu_default_pretrains_on_the_union_and_the_news_corpus_stays_selectable():
    union, news = (load_config(["experiment=pretrain_mlm", *o]) for o in ([], ["data=mlm_cpu_news"]))
    for cfg in (union, news):
        check_config(cfg)
    assert list(union.data.sources) == ["news", "anarchism", "ddtp"] and union.data.max_train_tokens is None
    assert news.data.source == "news" and news.data.max_train_tokens == 1_000_000
