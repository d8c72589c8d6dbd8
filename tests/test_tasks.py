"""The task seam: every task named by a config builds its model, data and LightningModule, reports its
stacks and metrics, and scores pruned models through ``evaluate_grid``; train.py and evaluate.py know
no task's internals; tasks and architectures register themselves."""

import dataclasses
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from layerdrop.config import CONF_DIR, load_config
from layerdrop.evaluate import evaluate_grid
from layerdrop.models import checkpoint
from layerdrop.schema import check_config
from layerdrop.tasks import TASKS, Task, get_task, register_task
from layerdrop.tasks.lm import LMTask
from layerdrop.tasks.seq2seq import TEXT_METRICS, Seq2SeqTask
from layerdrop.train import model_config, validate
from layerdrop.utils import runs

SMOKE = {"lm": ["debug=smoke"], "mt": ["experiment=table1_mt", "debug=smoke_mt"],
         "qa": ["experiment=table3_qa", "debug=smoke_mt"], "sum": ["experiment=table3_sum", "debug=smoke_mt"],
         "mlm": ["experiment=pretrain_mlm", "debug=smoke_mlm"]}
SRC = Path(__file__).resolve().parents[1] / "src" / "layerdrop"


def test_every_task_config_names_a_registered_task():
    names = sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml"))
    assert names == TASKS.names() == sorted(SMOKE)
    assert TASKS["lm"] is LMTask and issubclass(TASKS["mt"], Seq2SeqTask)
    with pytest.raises(ValueError, match="unknown task 'glue'; known: lm, mlm, mt, qa, sum"):
        TASKS["glue"]


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_each_task_builds_its_model_data_and_module_from_config(name):
    cfg = load_config(SMOKE[name])
    task = get_task(cfg)
    assert task.name == name
    lit = task.build_module(model_config(cfg), seed=3)
    model = lit.model
    assert isinstance(model, task.model_class) and checkpoint.arch_of(model) == task.arch
    # the stacks the task reports are the model's, at their configured depths
    built = {stack: len(getattr(model, prefix.rstrip("."))) for stack, (prefix, _, _) in model.stacks.items()}
    assert task.stacks == built and all(n > 1 for n in built.values())
    assert {task.depth_key(s) for s in task.stacks} <= set(cfg.model)
    if "module_args" in cfg.task:
        assert all(lit.hparams[k] == v for k, v in cfg.task.module_args.items())
    data = task.build_data()
    assert isinstance(data, pl.LightningDataModule) and type(data).__name__ == cfg.data._target_.rsplit(".", 1)[1]
    assert task.search_metric in task.eval_metrics and "loss" in task.eval_metrics
    assert task.sweep_metric.removeprefix("valid_") in task.eval_metrics


def test_the_old_translation_module_path_still_selects_the_seq2seq_module():
    from layerdrop.lit.seq2seq import Seq2SeqLitModule

    cfg = load_config([*SMOKE["mt"], "task.lit_module=layerdrop.lit.mt.MTLitModule"])
    assert get_task(cfg).lit_class() is Seq2SeqLitModule


def test_evaluation_settings_are_the_tasks():
    lm = get_task(load_config(SMOKE["lm"]))
    assert lm.eval_settings() == {} and lm.settings_key == "settings"
    assert get_task(load_config([*SMOKE["lm"], "data.context_window=8"])).eval_settings() == {"context_window": 8}
    mt = get_task(load_config([*SMOKE["mt"], "generate.max_sentences=5"]))
    assert mt.settings_key == "generate" and mt.eval_settings() == {
        "beam": 2, "lenpen": 0.6, "max_len_a": 1.2, "max_len_b": 10, "max_sentences": 5, "seed": 0}
    assert mt.eval_metrics == ("bleu", "bleu_tok", "loss", "ppl") and mt.search_metric == "bleu"


def test_the_metric_of_a_seq2seq_task_is_chosen_by_config():
    rouge = get_task(load_config([*SMOKE["mt"], "task.metric=rouge"]))
    assert rouge.eval_metrics == (*TEXT_METRICS["rouge"].names, "loss", "ppl")
    assert rouge.search_metric == "rougeL" and rouge.higher_is_better
    assert rouge.eval_settings()["metric"] == "rouge"  # rows scored otherwise are re-evaluated
    # evaluation-only: the trained model, and so the run key, stays the same
    assert runs.run_key(rouge.cfg) == runs.run_key(load_config(SMOKE["mt"]))
    with pytest.raises(ValueError, match="task.metric='meteor': expected one of bleu, rouge"):
        check_config(load_config([*SMOKE["mt"], "task.metric=meteor"]))


def _tiny(cfg) -> tuple[Task, nn.Module, pl.LightningDataModule]:
    """An untrained model of the task's smoke config, and its prepared data (the offline corpus)."""
    task = get_task(cfg)
    torch.manual_seed(0)
    model = task.build_module(model_config(cfg)).model.eval()
    data = task.build_data()
    data.prepare_data()
    data.setup("test")
    return task, model, data


def test_evaluate_grid_scores_a_language_model_through_the_seam(tmp_path):
    cfg = load_config([*SMOKE["lm"], "prune.depths=[1]", "prune.splits=[valid]", f"paths.runs_dir={tmp_path}"])
    task, model, data = _tiny(cfg)
    rows = evaluate_grid(model, data, cfg, task=task)
    assert [(r["strategy"], r["layers"]) for r in rows] == [("none", [0, 1, 2, 3]), ("every_other", [0])]
    for row in rows:
        assert "stack" not in row and "settings" not in row  # the record format of single-stack rows
        assert row["valid_ppl"] == pytest.approx(float(torch.exp(torch.tensor(row["valid_loss"]))), rel=1e-5)
        assert row["valid_tokens"] == data.corpus_manifest["splits"]["valid"]["tokens"]


@pytest.mark.parametrize("metric", ["bleu", "rouge"])
def test_evaluate_grid_generates_and_scores_translation_through_the_seam(metric, tmp_path):
    strategies = "[every_other]" if metric == "bleu" else "[]"
    cfg = load_config([*SMOKE["mt"], f"task.metric={metric}", f"prune.strategies={strategies}", "prune.depths=[1]",
                       "prune.splits=[valid]", "generate.max_sentences=6", "generate.max_len_a=0",
                       "generate.max_len_b=4", f"paths.runs_dir={tmp_path}"])
    task, model, data = _tiny(cfg)
    rows = evaluate_grid(model, data, cfg)  # the task found from cfg
    assert [r["layers"] for r in rows] == ([[0, 1, 2], [0]] if metric == "bleu" else [[0, 1, 2]])
    for row in rows:
        assert row["stack"] == "decoder" and row["generate"] == task.eval_settings()
        assert {f"valid_{m}" for m in task.eval_metrics} <= set(row)
        assert row["valid_sentences"] == 6 and row["valid_tokens"] > 0
        assert all(0 <= row[f"valid_{m}"] <= 100 for m in TEXT_METRICS[metric].names)


def test_train_and_evaluate_know_no_task_internals():
    """A task's model fields, batch keys, data-module methods and metric names stay behind the seam."""
    names = ["n_layers", "encoder_layers", "decoder_layers", "references", "bos_id", "eos_id", "decode",
             "set_generation", "lit_module"]
    keys = [*names, "target", "tgt_out", "lm", "mt"]  # batch keys, task names
    internals = [f"attr='{n}'" for n in names] + [f"Constant(value='{k}')" for k in keys]
    for module in ("train.py", "evaluate.py", "params.py"):
        code = runs._code_of((SRC / module).read_text())  # comments and docstrings left out
        found = [name for name in [*internals, "bleu"] if name in code]
        assert found == [], module


def test_a_new_task_registers_itself_and_the_rest_follows(monkeypatch):
    TASKS.names()  # the package's own tasks first, into the registry the test restores
    monkeypatch.setattr(TASKS, "_classes", dict(TASKS._classes))

    @register_task("lm_copy")
    class CopyTask(LMTask):
        sweep_metric = "valid_loss"

    cfg = load_config(SMOKE["lm"])
    cfg.task.name = "lm_copy"
    validate(cfg)  # its schema and checks, found through the task
    task = get_task(cfg)
    assert isinstance(task, CopyTask) and task.stacks == {"decoder": 4}
    with pytest.raises(ValueError, match="already registered"):
        register_task("lm_copy")(LMTask)
    cfg.task.name = "nothing"
    with pytest.raises(ValueError, match="task.name='nothing': expected one of lm, lm_copy, mlm, mt"):
        validate(cfg)


def test_a_new_architecture_registers_itself_for_model_files(monkeypatch, tmp_path):
    checkpoint.ARCHS.names()  # the package's own architectures first, into the registry the test restores
    monkeypatch.setattr(checkpoint.ARCHS, "_classes", dict(checkpoint.ARCHS._classes))

    @dataclasses.dataclass
    class TinyConfig:
        width: int = 3

    @checkpoint.register_arch("tiny")
    class Tiny(nn.Module):
        config_class = TinyConfig
        stacks: dict = {}

        def __init__(self, cfg: TinyConfig):
            super().__init__()
            self.config, self.proj = cfg, nn.Linear(cfg.width, cfg.width)

    model = Tiny(TinyConfig(width=5))
    checkpoint.save_model(tmp_path / "tiny.pt", model)
    loaded, _ = checkpoint.load_model(tmp_path / "tiny.pt")
    assert isinstance(loaded, Tiny) and torch.equal(loaded.proj.weight, model.proj.weight)
    assert checkpoint.ARCHS.names() == ["classifier", "encoder", "lm", "mt", "tiny"]
    with pytest.raises(ValueError, match="unknown architecture 'big'; known: classifier, encoder, lm, mt, tiny"):
        checkpoint.build_model("big", {})
