"""Table 8's pipeline on a tiny model: train with LayerDrop, prune to half depth, score, fine-tune, score,
report; cached on rerun; bad settings refused before any work."""

import pytest
import torch

from layerdrop.config import load_config
from layerdrop.finetune import finetune
from layerdrop.models.checkpoint import load_model
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.report.__main__ import main as report_main
from layerdrop.train import train
from layerdrop.utils import runs

FT = ["finetune.steps=4", "finetune.warmup_steps=1", "finetune.val_check_interval=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    overrides = ["debug=smoke", "layerdrop.p=0.2", "logger=none", f"paths.runs_dir={root}/runs",
                 f"paths.log_dir={root}/logs", f"paths.records_dir={root}/records", "prune.strategies=[]", "artefact=table2",
                 "role=layerdrop"]
    train(load_config(overrides))
    return root, overrides


def test_finetune_prunes_scores_trains_and_rescores(trained):
    root, overrides = trained
    cfg = load_config([*overrides, *FT])
    record = finetune(cfg)
    assert record["kept_layers"] == layers_to_keep("every_other", 4, 2)
    assert record["train"]["steps"] == 4 and record["train"]["curve"]
    for when in ("before", "after"):
        assert record[when]["depth"] == 2 and record[when]["valid_ppl"] > 1 and record[when]["test_ppl"] > 1
    # "before" is the pruned model, scored as every evaluation is
    model, _ = load_model(runs.run_dir(cfg) / "model.pt")
    pruned = prune_model(model, {"decoder": record["kept_layers"]})
    assert record["before"]["n_params"] == sum(p.numel() for p in pruned.parameters())
    # the fine-tuned weights moved away from the pruned ones
    out = root / "runs" / "lm_finetune" / record["run_key"]
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(not torch.equal(best[f"model.{k}"], v) for k, v in pruned.state_dict().items())
    # a second call reuses the record, it does not train again
    mtime = (out / "metrics.json").stat().st_mtime_ns
    assert finetune(cfg) == record and (out / "metrics.json").stat().st_mtime_ns == mtime
    # the report: paper column, C11 verdict (one seed: inconclusive)
    report_main(["table8", "--runs-dir", str(root / "runs"), "--out", str(root / "results")])
    page = (root / "results" / "table8.md").read_text()
    assert "| pruned, no fine-tuning | " in page and "| 20.78 |" in page and "| 20.56 |" in page
    assert "**inconclusive** (C11)" in page and "% (1 seed(s); the rule needs 3)" in page
    assert (root / "results" / "curves.png").stat().st_size > 5_000


@pytest.mark.parametrize("override,message", [
    ("finetune.strategy=random", "finetune.strategy='random': must be one of every_other, first, last"),
    ("finetune.steps=0", "finetune.steps=0: must be >= 1"),
    ("finetune.warmup_steps=4", "finetune.warmup_steps=4: must be in [0, finetune.steps=4)"),
])
def test_bad_settings_fail_before_any_work(trained, override, message):
    root, overrides = trained
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        finetune(load_config([*overrides, *FT, override]))
    assert not (root / "runs" / "lm_finetune").exists() or all(
        (d / "metrics.json").exists() for d in (root / "runs" / "lm_finetune").iterdir())


def test_an_untrained_source_run_is_named(tmp_path):
    cfg = load_config(["debug=smoke", f"paths.runs_dir={tmp_path}/runs", *FT])
    with pytest.raises(FileNotFoundError, match="no trained model at .*model.pt"):
        finetune(cfg)


def test_c11_follows_the_marginal_gain_rule():
    from layerdrop.report.table8 import c11

    def rows(gains):
        return [{"before_valid_ppl": 100.0, "after_valid_ppl": 100.0 * (1 - g)} for g in gains]

    assert c11(rows([0.01, 0.012, 0.008])).outcome == "held"  # about 1%, as the paper
    assert c11(rows([0.20, 0.22, 0.18])).outcome == "not held"  # 20%: not marginal
    assert c11(rows([0.0, 0.10, 0.05])).outcome == "inconclusive"
    assert c11(rows([0.01])).outcome == "inconclusive"
