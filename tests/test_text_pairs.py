"""Summarisation and long-form QA data (data/text_pairs.py): the hub path through local files in the hub's
layouts (CNN/DailyMail; an ELI5 copy with nested answers), truncation instead of skipping, bad input, a
damaged cache; a tiny end-to-end run of each task on the real offline corpora; the Table 3 report."""

import csv
import json
import math

import pytest

from layerdrop.data.cache import CorpusCacheError
from layerdrop.data.mt_corpus import load_mt_corpus
from layerdrop.data.text_pairs import TextPairDataModule, field_text
from layerdrop.report.__main__ import main as report_main
from layerdrop.utils.runs import write_json

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wise", "owls", "watch", "from", "an", "old", "oak", "tree"]


def article(i: int, n: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n)) + "."


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def cnn_files(tmp_path):
    """CNN/DailyMail's layout (article, highlights, id): every 5th article is long, one pair is empty."""
    files = {}
    for split, n in (("train", 60), ("validation", 8), ("test", 8)):
        rows = [{"article": article(i, 80 if i % 5 == 0 else 12), "highlights": f"owl {i} watches.\nfox {i} jumps.",
                 "id": f"{split}{i}"} for i in range(n)]
        rows[1]["highlights"] = ""  # an empty summary: dropped and counted
        files[split] = write_jsonl(tmp_path / f"{split}.jsonl", rows)
    return files


def datamodule(tmp_path, files, **kw):
    args = dict(task="summarization", source="hub", data_dir=str(tmp_path / "data"), vocab_size=300,
                max_tokens=512, max_source_len=32, max_target_len=24, hub_path="json", hub_name=None,
                hub_data_files=files, hub_source_field="article", hub_target_field="highlights")
    dm = TextPairDataModule(**{**args, **kw})
    dm.prepare_data()
    dm.setup()
    return dm


def test_hub_summaries_from_local_files_truncate_long_sources_instead_of_skipping_them(tmp_path, cnn_files):
    dm = datamodule(tmp_path, cnn_files)
    assert dm.corpus_dir.parent.name == "sum" and dm.corpus_manifest["task"] == "summarization"
    assert dm.corpus_manifest["languages"] == ["document", "summary"]
    cleaning = dm.corpus_manifest["provenance"]["cleaning"]
    assert cleaning["train"]["empty"] == 1 and cleaning["train"]["kept"] == 59
    train = dm.stats["train"]
    long = sum(len(dm.tokenizer.encode(a).ids) + 1 > 32 for a in dm.texts["train"]["document"])
    assert long >= 10 and train["truncated_source"] == long and train["used"] == 59  # none skipped
    assert "skipped_source_too_long" not in train
    items = [dm.datasets["train"][k] for k in range(len(dm.datasets["train"]))]
    assert max(len(item["src"]) for item in items) == 31  # cut to fit with the <eos>
    # references are the whole summaries, newlines normalised to spaces (one pair a line in the corpus)
    assert dm.references("test")[0] == "owl 0 watches. fox 0 jumps."
    assert dm.decode(dm.tokenizer.encode("owl 3 watches.").ids) == "owl 3 watches."


def test_an_eli5_copy_takes_the_best_answer_from_nested_lists(tmp_path):
    files = {}
    for split in ("train", "validation", "test"):
        rows = [{"q_id": f"{split}{i}", "title": f"why does the {WORDS[i]} jump?",
                 "answers": {"text": [f"because the {WORDS[i]} is quick. it likes to.", "no idea"], "score": [9, 1]}}
                for i in range(12)]
        files[split] = write_jsonl(tmp_path / f"{split}.jsonl", rows)
    dm = datamodule(tmp_path, files, task="qa", hub_source_field="title", hub_target_field="answers.text")
    assert dm.corpus_dir.parent.name == "qa" and dm.corpus_manifest["languages"] == ["question", "answer"]
    assert dm.texts["valid"]["question"][2] == "why does the brown jump?"
    assert dm.references("valid")[2] == "because the brown is quick. it likes to."
    assert dm.corpus_manifest["provenance"]["fields"] == {"source": "title", "target": "answers.text"}


def test_a_missing_field_names_the_field_and_what_the_row_has():
    row = {"title": "q", "answers": {"text": ["a"], "score": [1]}}
    assert field_text(row, "answers.text", "row 0") == "a"
    assert field_text({"answers": {"text": []}}, "answers.text", "row 0") == ""
    with pytest.raises(ValueError, match=r"row 3: no field 'answers.body' \(at 'body' it has \['score', 'text'\]\)"):
        field_text(row, "answers.body", "row 3")
    with pytest.raises(ValueError, match=r"row 3: no field 'question'.*\['answers', 'title'\]"):
        field_text(row, "question", "row 3")
    with pytest.raises(ValueError, match="holds int, not text"):
        field_text({"n": 3}, "n", "row 3")


@pytest.mark.parametrize("bad, message", [
    (dict(task="mlm"), "task must be one of \\('summarization', 'qa'\\), got 'mlm'"),
    (dict(source="web"), "source must be one of \\('debian', 'hub'\\), got 'web'"),
    (dict(source="hub", hub_target_field=""), "hub_source_field and hub_target_field"),
    (dict(max_tokens=40), "max_tokens=40 must be at least max_source_len \\+ max_target_len = 56"),
])
def test_bad_settings_fail_before_any_work(tmp_path, bad, message):
    args = dict(task="summarization", source="debian", data_dir=str(tmp_path), max_source_len=32, max_target_len=24)
    with pytest.raises(ValueError, match=message):
        TextPairDataModule(**{**args, **bad})
    assert not any(tmp_path.iterdir())


def test_a_damaged_cache_is_refused_and_rebuilt(tmp_path, cnn_files, capsys):
    dm = datamodule(tmp_path, cnn_files)
    damaged = dm.corpus_dir / "train.document.ids.npy"
    damaged.write_bytes(damaged.read_bytes()[:-8])
    with pytest.raises(CorpusCacheError, match="damaged file train.document.ids.npy"):
        load_mt_corpus(dm.corpus_dir, "summarization")
    with pytest.raises(CorpusCacheError, match="not a translation corpus manifest"):
        load_mt_corpus(dm.corpus_dir)  # a summarisation corpus is not read as translation
    again = datamodule(tmp_path, cnn_files)
    assert "building summarization corpus" in capsys.readouterr().out
    assert again.stats["train"] == dm.stats["train"]


@pytest.mark.parametrize("task", ["sum", "qa"])
def test_tiny_run_of_each_task_end_to_end_on_the_offline_corpus(tmp_path, task):
    """A few steps on the real Debian corpus, then every pruned decoder depth scored by generation + ROUGE
    with the task's generation settings (3-gram blocking)."""
    from layerdrop.config import load_config
    from layerdrop.train import train

    cfg = load_config([f"experiment=table3_{task}", "debug=smoke_mt", "generate.max_sentences=20",
                       "generate.max_len_b=12", "generate.min_len=4", "trainer.max_steps=4",
                       f"paths.runs_dir={tmp_path}/runs", f"paths.log_dir={tmp_path}/logs"]
                      + (["prune.strategies=[every_other]"] if task == "qa" else []))
    record = train(cfg)
    assert record["task"] == task and record["train"]["steps"] == 4
    assert record["data"]["task"] == {"sum": "summarization", "qa": "qa"}[task]
    assert record["data"]["provenance"]["source"].startswith("debian:")
    rows = {r["depth"]: r for r in record["eval"]}
    assert sorted(rows) == [1, 2, 3] and rows[2]["layers"] == [0, 2]
    for r in rows.values():
        assert r["test_sentences"] == 20 and math.isfinite(r["test_ppl"])
        assert all(0.0 <= r[f"test_{m}"] <= 100.0 for m in ("rouge1", "rouge2", "rougeL", "rougeLsum"))
        assert r["generate"]["no_repeat_ngram"] == 3 and r["generate"]["min_len"] == 4


def sum_record(key, task, dec, p, curve, role, seed=1):
    """A summarisation / QA run record as train() writes it; ``curve`` maps kept decoder layers -> ROUGE-L."""
    evals = [{"strategy": "none" if d == dec else "every_other", "stack": "decoder", "depth": d,
              "layers": list(range(d)), "n_params": 1000 * (6 + d), "test_rouge1": rl + 5, "test_rouge2": rl - 10,
              "test_rougeL": rl, "test_rougeLsum": rl + 1, "test_loss": 2.0, "test_ppl": 7.39, "test_sentences": 5,
              "test_sentences_per_s": 10.0, "generate": {"beam": 4, "lenpen": 1.0, "max_len_a": 0.0, "max_len_b": 32,
                                                          "no_repeat_ngram": 3}}
             for d, rl in curve.items()]
    return {"run_key": key, "task": task, "scale": "cpu", "artefacts": ["table3"], "eval": evals,
            "roles": {"table3": role}, "code_version": "c0de",
            "config": {"model": {"encoder_layers": 6, "decoder_layers": dec}, "layerdrop": {"p": p}, "seed": seed},
            "train": {"steps": 100, "tokens_seen": 5000, "wall_s": 60.0, "final": {"train/loss": 3.0},
                      "curve": [{"step": 50, "tokens_seen": 2500, "val/loss": 3.5},
                                {"step": 100, "tokens_seen": 5000, "val/loss": 3.2}]},
            "machine": {"cpus": 2, "platform": "test", "torch": "x"},
            "data": {"provenance": {"source": f"debian:{task}"}, "vocab_size": 8000, "task": task,
                     "splits": {"train": {"pairs": 90}, "test": {"pairs": 5}}}}


def test_table3_rows_claims_and_figure(tmp_path):
    runs = [sum_record("sb", "sum", 6, 0.0, {6: 30.0, 3: 10.0, 1: 2.0}, "sum_baseline"),
            sum_record("sl", "sum", 6, 0.2, {6: 31.0, 3: 25.0, 1: 8.0}, "sum_layerdrop"),
            sum_record("sd", "sum", 8, 0.2, {8: 32.0}, "sum_deep_layerdrop"),
            sum_record("s3", "sum", 3, 0.0, {3: 27.0}, "sum_scratch"),
            sum_record("qb", "qa", 6, 0.0, {6: 20.0}, "qa_baseline"),
            sum_record("ql", "qa", 6, 0.2, {6: 19.0}, "qa_layerdrop")]
    for r in runs:
        write_json(tmp_path / "runs" / r["task"] / r["run_key"] / "metrics.json", r)
    out = tmp_path / "results"
    report_main(["table3", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)])
    table = (out / "table3.md").read_text()
    assert ("| Summarization | Transformer | 6 | 6 | 0.01M | 35.00 | 20.00 | 30.00 | 31.00 | 7.39 | "
            "40.1 / 17.6 / 36.8 (6/6) |") in table
    assert "| Summarization | + LayerDrop 0.2, deeper decoder | 6 | 8 |" in table
    assert ("**inconclusive** (precondition): depth matters: the 6-layer summarisation decoder beats 3 layers trained "
            "from scratch. test ROUGE-L 30.00 vs 27.00 (test ppl 7.39 vs 7.39)") in table
    assert "| Long-form QA | + LayerDrop 0.2 | 6 | 6 | 0.01M | 24.00 | 9.00 | 19.00 |" in table
    assert "a stand-in for CNN/DailyMail" in table and "a stand-in for ELI5" in table
    assert ("**inconclusive** (C7): LayerDrop improves the summarization Transformer (paper 40.5 vs 40.1 ROUGE-1, "
            "CNN/DM). test ROUGE-L 31.00 vs 30.00; inconclusive: +3.3% (1 seed(s); the rule needs 3).") in table
    assert "(C7): LayerDrop improves the long-form qa Transformer" in table and "19.00 vs 20.00" in table
    assert "(C8): a 8-layer decoder with LayerDrop beats the 6-layer one" in table
    assert "**inconclusive** (C1)" in table and "3 decoder layers: 25.00 vs 10.00" in table
    assert "**inconclusive** (C2)" in table and "3 decoder layers: 25.00 vs 27.00" in table
    assert "| 3 | 25.00 | 10.00 | 27.00 | 7.39 | 7.39 | 7.39 |" in table
    # the cautions are computed: every record's valid loss fell 8.6% over its last interval; the 6-layer
    # baseline beats 3 layers from scratch by 11%, so depth matters enough to say nothing about it
    assert "Caution: 6 of 6 runs were still improving at their last validation" in table
    assert "depth barely matters" not in table
    assert (out / "figure2_sum.png").stat().st_size > 1000 and (out / "curves.png").stat().st_size > 1000
    with open(out / "raw.csv") as f:
        assert len(list(csv.DictReader(f))) == 10


def test_table3_says_how_many_more_steps_each_layerdrop_row_needed_to_reach_its_best(tmp_path):
    """Per task and seed: the LayerDrop row's best in-training valid perplexity against the step at which its
    seed's baseline had reached it; another task's baseline is never the comparison."""
    def curve(values):
        return [{"step": 500 * (i + 1), "tokens_seen": 500 * (i + 1), "val/loss": 1.0, "val/ppl": v}
                for i, v in enumerate(values)]

    runs = {"sb": ("sum", "sum_baseline", [100.0, 60.0, 40.0, 30.0]), "sl": ("sum", "sum_layerdrop", [150.0, 90.0, 65.0, 58.0]),
            "qb": ("qa", "qa_baseline", [300.0, 200.0, 150.0, 140.0]), "ql": ("qa", "qa_layerdrop", [320.0, 180.0, 170.0, 175.0])}
    for key, (task, role, values) in runs.items():
        r = sum_record(key, task, 6, 0.2 if "layerdrop" in role else 0.0, {6: 20.0}, role)
        r["train"]["curve"] = curve(values)
        write_json(tmp_path / "runs" / task / key / "metrics.json", r)
    report_main(["table3", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "table3.md").read_text()
    # summarisation: 58.0 at step 2,000; the baseline had 40.0 by step 1,500. QA: 170.0 at step 1,500; its
    # baseline had 150.0 by step 1,500 too, so no lag (the summarisation baseline reached 170 by step 500)
    assert ("LayerDrop learns more slowly here (in-training valid perplexity, same seed): summarisation seed 1: its "
            "best valid perplexity, 58.0 at step 2,000, was the baseline's by step 1,500 (1.3x fewer steps).") in table
    assert "long-form QA seed" not in table


def test_table3_with_three_seeds_decides_by_the_noise_rule(tmp_path):
    runs = []
    for seed, (b, ld) in enumerate([(30.0, 33.0), (30.5, 33.4), (29.8, 32.9)], start=1):
        runs += [sum_record(f"sb{seed}", "sum", 6, 0.0, {6: b}, "sum_baseline", seed),
                 sum_record(f"sl{seed}", "sum", 6, 0.2, {6: ld}, "sum_layerdrop", seed)]
    for r in runs:
        write_json(tmp_path / "runs" / "sum" / r["run_key"] / "metrics.json", r)
    report_main(["table3", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "table3.md").read_text()
    assert "**held** (C7): LayerDrop improves the summarization Transformer" in table
    assert "33.10 ± 0.26 (n=3) vs 30.10 ± 0.36 (n=3)" in table
    assert "| Long-form QA | Transformer | - | - | not run |" in table
    runs.append(sum_record("s3", "sum", 3, 0.0, {3: 29.9}, "sum_scratch"))
    write_json(tmp_path / "runs" / "sum" / "s3" / "metrics.json", runs[-1])
    report_main(["table3", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    table = (tmp_path / "out" / "table3.md").read_text()
    assert "Caution: depth barely matters at this scale: the 6-layer decoder beats 3 layers trained from scratch by +0.7%" in table


def test_a_corpus_where_no_train_pair_fits_is_an_error_not_an_empty_run(tmp_path, cnn_files):
    with pytest.raises(ValueError, match=r"no train pair of .* fits: .*'skipped_target_too_long': 59.*max_target_len=2"):
        datamodule(tmp_path, cnn_files, max_target_len=2)
