"""Fine-tuning a pretrained encoder on a classification stand-in (the pretraining issue, part 2): the data
layer's rules, the classifier built from a (pruned) encoder, the paper's LayerDrop rule, the child run's
key following its parent, and a tiny pretrain -> prune -> fine-tune run on real offline data."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from layerdrop.classify import check, classify, classify_key, layerdrop_rate
from layerdrop.config import load_config
from layerdrop.data.classify import ClassificationDataModule
from layerdrop.data.classify_sources import qnli_pairs, read_examples, sentences, split_by_group
from layerdrop.models.classifier import EncoderClassifier
from layerdrop.models.encoder import EncoderConfig, TransformerEncoder
from layerdrop.models.pruning import layers_to_keep, prune_model

LABELS = ("rotten", "fresh")


@pytest.fixture(scope="module")
def lm_corpus() -> Path:
    """The smoke pretraining corpus (built on first use), whose tokenizer the stand-ins are encoded with."""
    from hydra.utils import instantiate

    dm = instantiate(load_config(["experiment=pretrain_mlm", "debug=smoke_mlm"]).data)
    dm.prepare_data()
    return dm.corpus_dir


def test_rows_are_cleaned_and_counted_and_a_foreign_label_is_an_error():
    rows = [{"category": "fresh", "text": " A  good film ", "movie_name": "a"},
            {"category": "plot", "text": "Things happen.", "movie_name": "a"},
            {"category": "rotten", "text": "   ", "movie_name": "b"},
            {"category": "rotten", "text": "A good film", "movie_name": "c"},  # the same text again
            {"category": "rotten", "text": "Dull.", "movie_name": "c"}]
    examples, dropped = read_examples(rows, LABELS)
    assert examples == [("A good film", None, 1, "a"), ("Dull.", None, 0, "c")]
    assert dropped == {"category plot": 1, "empty text": 1, "repeated text": 1}
    with pytest.raises(ValueError, match="row 1: label 'mixed' is not one of rotten, fresh"):
        read_examples([rows[0], {"category": "mixed", "text": "Hm.", "movie_name": "d"}], LABELS)


def test_splits_are_seeded_and_by_group():
    examples = [(f"text {i}", None, i % 2, f"movie {i % 40}") for i in range(400)]
    splits = split_by_group(examples, seed=3)
    assert splits == split_by_group(examples, seed=3) and splits != split_by_group(examples, seed=4)
    groups = {name: {g for *_, g in items} for name, items in splits.items()}
    assert not (groups["train"] & groups["valid"] or groups["train"] & groups["test"] or groups["valid"] & groups["test"])
    assert sum(len(v) for v in splits.values()) == 400 and len(groups["valid"]) == len(groups["test"]) == 4
    with pytest.raises(ValueError, match="2 groups are too few"):
        split_by_group(examples[:2], seed=0)


def test_qnli_stand_in_pairs_each_question_with_its_answer_and_a_sentence_naming_it():
    entries = [("What is cache?", "A small fast memory. It holds copies.", "e1"),
               ("What is disk?", "A storage device. Slower than a cache in front of it.", "e2"),
               ("What is zebra?", "An animal. It has stripes.", "e3")]
    pairs, stats = qnli_pairs(entries, seed=0)
    assert pairs[:2] == [("What is cache?", "A small fast memory.", 1, "e1"),
                         ("What is cache?", "Slower than a cache in front of it.", 0, "e1")]  # hard: names "cache"
    by_question = {}
    for q, _sentence, label, _ in pairs:
        by_question.setdefault(q, []).append(label)
    assert all(sorted(v) == [0, 1] for v in by_question.values())  # balanced: one of each per question
    negatives = {q: s for q, s, label, _ in pairs if label == 0}
    assert negatives["What is zebra?"] in ("A small fast memory.", "A storage device.")  # nothing names it: easy
    assert stats == {"hard negatives": 1, "easy negatives": 2}
    assert sentences("One. Two! Three? e.g. four") == ["One.", "Two!", "Three? e.g. four"]


def test_pairs_are_encoded_eos_first_and_cut_second_text_first(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel({"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "<unk>": 4}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    dm = ClassificationDataModule("foldoc_qnli", str(tmp_path), str(tmp_path), max_len=6)
    dm.eos_id = 1
    ids, cut = dm._encode(tokenizer, [("a a", "b b b", 1, "g"), ("a", None, 0, "g")])
    assert ids == [[1, 2, 2, 1, 3, 3], [1, 2]] and cut == 1


def tiny_encoder(layerdrop=0.2) -> TransformerEncoder:
    torch.manual_seed(0)
    return TransformerEncoder(EncoderConfig(vocab_size=50, n_layers=4, d_model=16, n_heads=2, d_ff=32, max_len=12,
                                            dropout=0.0, attn_dropout=0.0, layerdrop=layerdrop)).eval()


def test_the_classifier_takes_the_pruned_encoder_and_leaves_the_mlm_head_out():
    encoder = tiny_encoder()
    pruned = prune_model(encoder, {"encoder": layers_to_keep("every_other", 4, 2)})
    model = EncoderClassifier.from_pretrained(pruned, n_classes=3, layerdrop=0.0).eval()
    x = torch.randint(1, 49, (2, 12))
    assert torch.allclose(model.encoder(x), pruned(x), atol=1e-6)  # the same encoder, weights and all
    assert not any(k.startswith("encoder.head_") for k in model.state_dict())
    assert model(x).shape == (2, 3) and model.config.n_layers == 2 and model.encoder.layers.rates == [0.0, 0.0]


def test_the_mean_pooled_head_reads_the_mean_of_the_non_padding_states():
    encoder = tiny_encoder(layerdrop=0.0)
    first = EncoderClassifier.from_pretrained(encoder, n_classes=2).eval()
    mean = EncoderClassifier.from_pretrained(encoder, n_classes=2, pool="mean").eval()
    mean.load_state_dict(first.state_dict())  # the same weights: only the pooling differs
    x = torch.randint(1, 49, (2, 12))
    x[1, 7:] = 0  # the second sentence is 7 tokens, then padding
    hidden = encoder(x)
    pooled = torch.stack([hidden[0].mean(0), hidden[1, :7].mean(0)])
    head = lambda h: mean.out(torch.tanh(mean.dense(h)))  # noqa: E731 (pooler dropout is off in eval)
    assert torch.allclose(mean(x), head(pooled), atol=1e-5)
    assert torch.allclose(first(x), head(hidden[:, 0]), atol=1e-5)
    assert not torch.allclose(mean(x), first(x), atol=1e-3)
    # padding changes nothing: the same sentence without its padding scores the same
    assert torch.allclose(mean(x[1:, :7]), mean(x)[1:], atol=1e-5)
    with pytest.raises(ValueError, match="pool='max': must be one of first, mean"):
        EncoderClassifier.from_pretrained(encoder, n_classes=2, pool="max")


def cfg_with(**classify):
    cfg = load_config(["experiment=pretrain_mlm"])
    cfg.classify = OmegaConf.merge(cfg.classify, classify)
    return cfg


def test_layerdrop_stays_on_full_depth_models_and_is_off_once_pruned():
    assert layerdrop_rate(cfg_with(), 0.2, pruned=False) == 0.2  # paper Table 4
    assert layerdrop_rate(cfg_with(), 0.2, pruned=True) == 0.0  # paper Table 7
    assert layerdrop_rate(cfg_with(layerdrop=0.1), 0.2, pruned=True) == 0.1


def test_the_child_key_follows_its_parent_and_its_settings():
    cfg = cfg_with()
    key = classify_key("parent1", cfg)
    assert classify_key("parent1", cfg_with()) == key
    assert classify_key("parent2", cfg) != key  # a new pretraining run is a new child
    assert classify_key("parent1", cfg_with(lr=1e-4)) != key and classify_key("parent1", cfg_with(depth=3)) != key
    assert classify_key("parent1", cfg_with(pool="mean")) != key


@pytest.mark.parametrize("change,message", [
    ({"dataset": "mnli"}, "classify.dataset='mnli': must be one of rotten_tomatoes, foldoc_qnli"),
    ({"depth": 9}, "classify.depth=9: must be null or in \\[1, model.n_layers=8\\]"),
    ({"layerdrop": 1.5}, "classify.layerdrop=1.5: must be 'auto' or a rate"),
    ({"max_len": 500}, "classify.max_len=500: must be <= model.max_len=128"),
    ({"strategy": "random"}, "classify.strategy='random'"),
    ({"lr": 0.0}, "classify.lr=0.0: must be > 0"),
    ({"init": "imagenet"}, "classify.init='imagenet': must be one of pretrained, scratch"),
    ({"pool": "cls"}, "classify.pool='cls': must be one of first, mean"),
])
def test_bad_settings_are_refused_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        check(cfg_with(**change))


def test_a_missing_tokenizer_is_named(tmp_path):
    dm = ClassificationDataModule("rotten_tomatoes", str(tmp_path), str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no tokenizer at .*nowhere/tokenizer.json"):
        dm.setup()


@pytest.mark.parametrize("dataset,stand_in_for", [("rotten_tomatoes", "SST-2"), ("foldoc_qnli", "QNLI")])
def test_pretrain_prune_and_fine_tune_on_real_offline_data(tmp_path, dataset, stand_in_for):
    from layerdrop.train import train

    overrides = ["experiment=pretrain_mlm", "debug=smoke_mlm", f"paths.runs_dir={tmp_path}/runs",
                 f"paths.log_dir={tmp_path}/logs", "logger=none", "prune.depths=[2]", "prune.splits=[valid]",
                 f"classify.dataset={dataset}", "classify.depth=2", "classify.steps=8",
                 "classify.val_check_interval=4", "classify.max_len=32"]
    cfg = load_config(overrides)
    parent = train(cfg)
    record = classify(cfg)
    assert record["source_run_key"] == parent["run_key"] and record["kept_layers"] == [0, 2]
    assert record["layerdrop"] == 0.0 and record["source_layerdrop"] == 0.2  # pruned: LayerDrop off
    assert record["stand_in_for"] == stand_in_for and record["dataset"] == dataset
    splits = record["data"]["splits"]
    assert record["valid_examples"] == splits["valid"]["examples"] and record["test_examples"] == splits["test"]["examples"]
    assert sum(splits["train"]["labels"].values()) == splits["train"]["examples"] > 1000
    assert 0 <= record["valid_acc"] <= 1 and 0 <= record["test_acc"] <= 1
    assert [p["step"] for p in record["train"]["curve"]] == [4, 8]
    assert classify(cfg)["run_key"] == record["run_key"]  # done: read back, not trained again


def test_the_scratch_control_needs_no_pretrained_weights_and_starts_from_a_fresh_encoder(tmp_path, monkeypatch, lm_corpus):
    """classify.init=scratch: the pretraining run's architecture, freshly initialised, fine-tuned by the same
    recipe; no model.pt is read (none exists here: lm_corpus builds only the tokenizer it needs), and it is a
    child of its own (not the pretrained one's)."""
    import layerdrop.classify as module

    overrides = ["experiment=pretrain_mlm", "debug=smoke_mlm", f"paths.runs_dir={tmp_path}/runs",
                 f"paths.log_dir={tmp_path}/logs", "logger=none", "classify.dataset=rotten_tomatoes",
                 "classify.init=scratch", "classify.steps=4", "classify.val_check_interval=4", "classify.max_len=32"]
    cfg = load_config(overrides)
    encoders = []
    monkeypatch.setattr(module, "load_model", lambda path: pytest.fail(f"read {path}"))
    original = module._scratch_encoder
    monkeypatch.setattr(module, "_scratch_encoder", lambda c: encoders.append(original(c)) or encoders[-1])
    record = classify(cfg)
    assert record["classify"]["init"] == "scratch" and record["kept_layers"] == list(range(cfg.model.n_layers))
    assert record["layerdrop"] == 0.2  # full depth: the architecture's LayerDrop stays on, as for a pretrained one
    assert record["run_key"] != classify_key(record["source_run_key"], load_config(overrides[:-4] + overrides[-3:]))
    again = original(cfg)  # seeded: the same fresh weights each time
    assert all(torch.equal(a, b) for a, b in zip(encoders[0].state_dict().values(), again.state_dict().values()))


def vitaminc_task(examples):
    return {"canary": "x", "examples": [{"input": f"{evidence}\nClaim: {claim}",
                                         "target_scores": {k: int(k == label) for k in ("True", "False", "Neither")}}
                                        for evidence, claim, label in examples]}


def test_vitaminc_pairs_parse_to_mnli_labels_and_split_by_page(tmp_path, lm_corpus):
    import json

    from layerdrop.data.classify_sources import DATASETS, VITAMINC_FILE, vitaminc_examples

    labels = DATASETS["vitaminc"].labels
    rows = [("Westlife: sold 23 million .", "Westlife sold under 23.5 million .", "Neither"),
            ("Westlife: sold 24 million .", "Westlife sold under 23.5 million .", "False"),
            ("Westlife: sold 24 million .", "Westlife sold under 23.5 million .", "False"),  # repeated
            ("Paris: the capital of France .", "Paris is in France .", "True")]
    examples, dropped = vitaminc_examples(vitaminc_task(rows), labels)
    assert [(e[1], labels[e[2]], e[3]) for e in examples] == [
        ("Westlife sold under 23.5 million .", "neutral", "Westlife"),
        ("Westlife sold under 23.5 million .", "contradiction", "Westlife"),
        ("Paris is in France .", "entailment", "Paris")]
    assert dropped == {"repeated pair": 1}
    with pytest.raises(ValueError, match="VitaminC example 0 is not"):
        vitaminc_examples({"examples": [{"input": "no claim here", "target_scores": {"True": 1}}]}, labels)
    # the data module reads the extracted task file from raw_dir (no download when it is there)
    many = [(f"Page {i % 30}: fact {i} .", f"claim {i} .", ("True", "False", "Neither")[i % 3]) for i in range(300)]
    (tmp_path / VITAMINC_FILE).write_text(json.dumps(vitaminc_task(many)))
    dm = ClassificationDataModule("vitaminc", str(tmp_path), str(lm_corpus), raw_dir=str(tmp_path), max_len=16)
    dm.setup()
    assert dm.n_classes == 3 and dm.stats["stand_in_for"] == "MNLI"
    assert sum(s["examples"] for s in dm.stats["splits"].values()) == 300
    item = dm.datasets["train"][0]["input"]
    assert item[0] == dm.eos_id and (item == dm.eos_id).sum() == 2  # <eos> evidence <eos> claim


def test_bible_verse_pairs_are_one_per_verse_with_hard_negatives_from_the_chapter(tmp_path, lm_corpus):
    import json

    from layerdrop.data.classify_sources import BIBLES_FILE, paraphrase_pairs

    verses = {"Gen 1:1": ["In the beginning God created the heaven.", "In the beginning, God created the heavens."],
              "Gen 1:2": ["And the earth was without form.", "The earth was formless."],
              "Gen 1:3": ["And God said, Let there be light.", "God said, Let there be light."],
              "Gen 1:4": ["Same text.", "Same text."],  # identical in both: dropped
              "Exod 1:1": ["These are the names.", "Now these are the names."]}
    pairs, dropped = paraphrase_pairs(verses, seed=0)
    assert dropped == {"identical verse": 1} and len(pairs) == 4
    for kjv, other, label, chapter in pairs:
        ref = next(r for r, (k, _) in verses.items() if k == kjv)
        assert chapter == ref.rsplit(":", 1)[0]
        if label == 1:
            assert other == verses[ref][1]
        else:  # another verse of the same chapter, in the other Bible
            assert other != verses[ref][1] and any(other == w for r, (_, w) in verses.items() if r.startswith(chapter))
    assert {label for *_, label, _ in pairs} == {0, 1}  # (seed 0 draws both)
    # the data module reads the verse-aligned file from raw_dir (no Debian download when it is there)
    many = {f"Book {c}:{v}": [f"kjv text {c} {v} of the word", f"web text {c} {v}"] for c in range(30) for v in range(1, 9)}
    (tmp_path / BIBLES_FILE).write_text(json.dumps({"verses": many, "provenance": {"source": "test"}}))
    dm = ClassificationDataModule("bibles_mrpc", str(tmp_path), str(lm_corpus), raw_dir=str(tmp_path), max_len=24)
    dm.setup()
    assert dm.stats["stand_in_for"] == "MRPC" and sum(s["examples"] for s in dm.stats["splits"].values()) == 240
    assert dm.stats["splits"]["valid"]["groups"] == dm.stats["splits"]["test"]["groups"] == 3  # chapters: 10% each
