"""`make paper-dryrun`: every scale=paper experiment composes, sizes on the meta device, and trains and
evaluates a width-shrunk copy on CPU through train(), changing sizes only."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

import pytest

from layerdrop.config import load_config
from layerdrop.data.sources import hub_documents
from layerdrop.dryrun import EXPERIMENTS, STEPS, SWEEP_AXES, check_record, main
from layerdrop.dryrun_hub import MT_MAX_WORDS, PAIR_ROWS, lm_files, mt_files, qa_files, sum_files
from layerdrop.params import count_for
from layerdrop.utils.runs import training_config

REPO = Path(__file__).resolve().parents[1]
RAW_DIR = Path(os.environ["LAYERDROP_DATA_DIR"]) / "raw"
#: published sizes (README, `make params`)
PAPER_PARAMS = {"table2_lm": 246_933_504, "table2_lm_deep": 423_352_320,
                "pretrain_mlm": 124_696_665, "pretrain_mlm_large": 355_411_033}

#: training-config keys the dry run may change: widths, vocabulary, batch shapes, steps, device, data files
SHRUNK = {
    "model": {"d_model", "n_heads", "d_ff", "vocab_size", "cutoffs", "max_len"},
    "data": {
        "hub_path",
        "hub_name",
        "hub_data_files",
        "block_size",
        "context_window",
        "vocab_size",
        "max_tokens",
        "max_source_len",
        "max_target_len",
    },
    "trainer": {"accelerator", "devices", "strategy", "precision", "max_steps", "accumulate_grad_batches"},
    "optim": {"scheduler.warmup_steps", "scheduler.total_steps", "average.last", "average.every"},
}


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


#: the experiments whose shrunk copies train in CI: one for each task family and code path the others share
#: (the adaptive LM with learned rates and data-driven pruning; translation with checkpoint averaging and BLEU;
#: sequence-to-sequence ROUGE with n-gram blocking; the masked LM). The other nine train under ``slow``
#: (``make test-full``, ``make paper-dryrun``); every one of the thirteen composes and sizes in CI.
CORE = ("figure4_lm", "table1_mt", "table3_sum", "pretrain_mlm")
REST = tuple(e for e in EXPERIMENTS if e not in CORE)


def _dryrun(tmp_path_factory, experiments) -> tuple[int, str, str, Path]:
    out = tmp_path_factory.mktemp("dryrun")
    return (*run("--experiments", *experiments, "--out", str(out)), out)


@pytest.fixture(scope="module")
def dryrun_core(tmp_path_factory) -> tuple[int, str, str, Path]:
    return _dryrun(tmp_path_factory, CORE)


@pytest.fixture(scope="module")
def dryrun_rest(tmp_path_factory) -> tuple[int, str, str, Path]:
    return _dryrun(tmp_path_factory, REST)


def _flat(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _record(out: Path, experiment: str) -> dict:
    (path,) = (out / "runs" / experiment).rglob("metrics.json")
    return json.loads(path.read_text())


def _passed(result, experiments) -> dict[str, str]:
    code, stdout, stderr, _ = result
    assert code == 0, stderr
    lines = {line.split()[0]: line for line in stdout.splitlines() if line.split() and line.split()[0] in EXPERIMENTS}
    assert sorted(lines) == sorted(experiments)
    for line in lines.values():
        assert "composed OK" in line and "shrunk step OK" in line and f"{STEPS} steps" in line, line
    assert f"{len(experiments)}/{len(experiments)} paper experiments passed" in stdout
    return lines


def test_every_paper_experiment_composes_and_sizes():
    """All thirteen, in CI: each composes at scale=paper and builds full-size on the meta device, at the
    published sizes where the paper gives them."""
    assert sorted(EXPERIMENTS) == sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml"))
    assert set(CORE) <= set(EXPERIMENTS)
    for experiment in EXPERIMENTS:
        n = count_for([f"experiment={experiment}", "scale=paper", *SWEEP_AXES.get(experiment, [])])
        assert n == PAPER_PARAMS.get(experiment, n) and n > 1_000_000, (experiment, n)


def test_core_paper_experiments_pass(dryrun_core):
    lines = _passed(dryrun_core, CORE)
    assert "full-size 124,696,665 params" in " ".join(lines["pretrain_mlm"].split())


@pytest.mark.slow
def test_every_other_paper_experiment_passes(dryrun_rest):
    lines = _passed(dryrun_rest, REST)
    for experiment, n in PAPER_PARAMS.items():
        if experiment in REST:
            assert f"full-size {n:,} params" in " ".join(lines[experiment].split())


@pytest.mark.parametrize("experiment", [e if e in CORE else pytest.param(e, marks=pytest.mark.slow) for e in EXPERIMENTS])
def test_shrunk_run_changes_sizes_only(request, experiment):
    """The trained config equals the paper's outside the size keys: same task module, flags, optimizer,
    LayerDrop, label smoothing, depth; and the run really went through paper code paths."""
    _, _, _, out = request.getfixturevalue("dryrun_core" if experiment in CORE else "dryrun_rest")
    record = _record(out, experiment)
    paper = training_config(
        load_config([f"experiment={experiment}", "scale=paper", *SWEEP_AXES.get(experiment, [])])
    )
    shrunk = record["config"]
    assert shrunk.keys() == paper.keys()
    for section in paper:
        if not isinstance(paper[section], dict):
            assert shrunk[section] == paper[section], section
            continue
        before, after = _flat(paper[section]), _flat(shrunk[section])
        changed = {
            k.split(".")[0] if k.startswith("hub_data_files.") else k
            for k in before.keys() | after.keys()
            if before.get(k) != after.get(k)
        }
        assert changed <= SHRUNK.get(section, set()), (section, changed - SHRUNK.get(section, set()))
    assert shrunk["model"]["d_model"] == 32 and shrunk["trainer"]["precision"] == "bf16-mixed"
    assert record["train"]["steps"] == STEPS and all(
        math.isfinite(v) for v in record["train"]["final"].values()
    )
    if paper["task"]["name"] == "mt":
        assert record["train"]["averaged_checkpoints"] == [1, 2]  # the paper's checkpoint averaging ran
        assert {"valid_bleu", "test_bleu"} & set(record["eval"][0])
    elif paper["task"]["name"] in ("sum", "qa"):  # ROUGE on text generated with the paper's blocking
        assert "test_rougeL" in record["eval"][0] and record["eval"][0]["generate"]["no_repeat_ngram"] == 3
        assert record["data"]["provenance"]["fields"]["target"] == paper["data"]["hub_target_field"]
    elif paper["task"]["name"] == "mlm":  # RoBERTa's layers, masked-token perplexity, pruned on the encoder
        assert shrunk["model"]["activation"] == "gelu" and not shrunk["model"]["pre_norm"]
        assert {r["depth"] for r in record["eval"]} >= {paper["model"]["n_layers"]}
        assert all(math.isfinite(r["valid_ppl"]) for r in record["eval"])
    else:
        assert shrunk["model"]["adaptive"] and len(shrunk["model"]["cutoffs"]) == 2
    if experiment == "figure4_lm":  # learned rates, read back by data-driven pruning
        rows = [r for r in record["eval"] if r["strategy"] == "data_driven"]
        assert rows and len(rows[0]["learned_rates"]) == shrunk["model"]["n_layers"] == 16


def test_a_failing_step_exits_nonzero_with_its_error(tmp_path):
    code, stdout, stderr = run(
        "--experiments", "figure7_lm", "--out", str(tmp_path), "--override", "model.n_heads=3"
    )
    assert code == 1
    assert "figure7_lm" in stdout and "composed OK" in stdout and "shrunk step FAILED" in stdout
    assert "--- figure7_lm failed ---" in stderr and "model.n_heads=3: must divide model.d_model=32" in stderr
    assert "0/1 paper experiments passed" in stdout


def test_unknown_experiment_is_refused():
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()) as err:
        main(["--experiments", "table9_lm"])
    assert exit_info.value.code == 2 and "table9_lm" in err.getvalue() and "table2_lm" in err.getvalue()


def test_local_files_have_the_hub_layouts(tmp_path):
    lm = lm_files(RAW_DIR, tmp_path / "lm")
    splits = hub_documents("parquet", None, lm, cache_dir=str(tmp_path / "hf"))
    assert {k: len(v) for k, v in splits.items()} == {"train": 40, "valid": 5, "test": 5}  # one per article
    for doc in splits["train"]:  # a Wikitext title line, then paragraphs with punctuation split off
        title, *paragraphs = [line for line in doc.split("\n") if line]  # rows are lines, empty ones kept
        assert title.startswith("= ") and title.endswith(" =") and " . " in " ".join(paragraphs) + " "
    mt = mt_files(RAW_DIR, tmp_path / "mt")
    rows = [json.loads(line) for line in Path(mt["train"]).read_text(encoding="utf-8").splitlines()]
    assert 200 <= len(rows) <= 1000 and all(set(r["translation"]) == {"de", "en"} for r in rows)
    assert all(len(r["translation"]["en"].split()) <= MT_MAX_WORDS for r in rows)
    summaries = [json.loads(line) for line in Path(sum_files(RAW_DIR, tmp_path / "sum")["test"]).read_text().splitlines()]
    assert len(summaries) == PAIR_ROWS["test"] and all(set(r) == {"article", "highlights", "id"} for r in summaries)
    answers = [json.loads(line) for line in Path(qa_files(RAW_DIR, tmp_path / "qa")["train"]).read_text().splitlines()]
    assert len(answers) == PAIR_ROWS["train"]
    assert all(r["title"].startswith("What is ") and len(r["answers"]["text"]) == 2 for r in answers)


def test_check_record_refuses_a_run_that_did_not_train_or_score():
    row = {"strategy": "none", "layers": [0, 1], "valid_ppl": 12.0, "valid_loss": 2.5}
    assert "valid ppl 12" in check_record({"train": {"steps": STEPS}, "eval": [row]}, "lm")
    with pytest.raises(RuntimeError, match="trained 1 steps"):
        check_record({"train": {"steps": 1}, "eval": [row]}, "lm")
    with pytest.raises(RuntimeError, match="no evaluation rows"):
        check_record({"train": {"steps": STEPS}, "eval": []}, "lm")
    with pytest.raises(RuntimeError, match="valid_ppl = nan"):
        check_record({"train": {"steps": STEPS}, "eval": [{**row, "valid_ppl": float("nan")}]}, "lm")


@pytest.mark.parametrize("target", ["layerdrop.data.lm.LMDataModule", "layerdrop.data.mt.MTDataModule"])
def test_hub_files_from_hydra_leave_checkpoints_loadable(target, tmp_path):
    """Hydra passes data.hub_data_files as a DictConfig; kept in the data module's hparams it made every
    checkpoint of such a run unloadable with weights_only=True (resume, checkpoint averaging)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    files = {"train": "a.json", "validation": "b.json", "test": "c.json"}
    cfg = OmegaConf.create(
        {
            "_target_": target,
            "source": "hub",
            "hub_path": "json",
            "hub_data_files": files,
            "data_dir": str(tmp_path),
        }
    )
    buffer = io.BytesIO()
    torch.save(
        {"datamodule_hyper_parameters": dict(instantiate(cfg).hparams)}, buffer
    )  # as Lightning dumps it
    buffer.seek(0)
    assert (
        dict(torch.load(buffer, weights_only=True)["datamodule_hyper_parameters"]["hub_data_files"]) == files
    )
