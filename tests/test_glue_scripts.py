"""The pretraining artefacts' scripts (Tables 4 and 7, Figure 8), printed instead of run (LAYERDROP_DRY=1):
every run they make composes and passes its checks, every role is a row of its artefact, and every
fine-tuning's pretraining run is one the script trains (the same run key)."""

import itertools
from pathlib import Path

import pytest

from layerdrop.backlog import dry_run, script_path
from layerdrop.classify import check
from layerdrop.config import load_config
from layerdrop.data.classify_sources import DATASETS
from layerdrop.train import validate
from layerdrop.utils import runs

REPO = Path(__file__).resolve().parents[1]


def commands(script: str, scale: str, env: dict | None = None, *overrides: str) -> list[tuple[str, list[str]]]:
    """What a script would run (LAYERDROP_DRY=1), at seed 1 and with ``overrides`` added to every run."""
    return dry_run(script_path(script), scale, ["seed=1", *overrides], env=env, flops=False)


def expand(overrides: list[str]) -> list[list[str]]:
    """A multirun's overrides, one list per run (comma lists expanded)."""
    def values(value: str) -> list[str]:  # a list value ([a,b]) is one value, not a sweep
        return [value] if value.startswith("[") else value.split(",")
    options = [[f"{o.split('=', 1)[0]}={v}" for v in values(o.split("=", 1)[1])] for o in overrides]
    return [list(run) for run in itertools.product(*options)]


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("script,artefact", [("table4", "table4"), ("table7", "table7"), ("figure8", "figure8"),
                                            ("tune_pretrain", "regime_mlm")])
def test_every_run_of_the_script_composes_and_finds_its_pretraining_run(script, artefact, scale):
    lines = commands(script, scale)
    assert lines[-1] == ("report", [artefact])
    trained = set()
    for kind, overrides in lines:
        if kind == "train":
            for run in expand(overrides):
                cfg = load_config(run)
                validate(cfg)
                teacher = (cfg.task.get("module_args") or {}).get("teacher")
                assert teacher is None or teacher in trained, f"{run}: its teacher is not trained before it"
                trained.add(runs.run_key(cfg))
    for kind, overrides in lines:  # the context probe reads a run the script trains
        if kind == "context":
            assert runs.run_key(load_config(overrides)) in trained, f"{overrides}: context of an untrained run"
    fine_tunings = 0
    for kind, overrides in lines:
        if kind != "classify":
            continue
        # the data sets and learning rates of a sweep do not change its pretraining run: compose one of each
        sweeps = ("classify.dataset=", "classify.lr=", "classify.pool=")
        swept = {o.split("=", 1)[0]: o.split("=", 1)[1].split(",") for o in overrides if o.startswith(sweeps)}
        assert set(swept["classify.dataset="[:-1]]) <= set(DATASETS) and all(float(v) > 0 for v in swept["classify.lr"])
        overrides = [o if not o.startswith(sweeps) else o.split(",")[0] for o in overrides]
        for run in expand(overrides):
            cfg = load_config(run)
            validate(cfg)
            check(cfg)
            assert cfg.artefact == artefact
            runs.tag({"run_key": "x", "artefacts": []}, cfg.artefact, cfg.role)  # a row of the artefact
            assert runs.run_key(cfg) in trained, f"{run}: its pretraining run is not trained by {script}.sh"
            fine_tunings += len(swept["classify.dataset"]) * len(swept["classify.lr"]) * len(swept.get("classify.pool", [0]))
            for pool in swept.get("classify.pool", []):  # each head composes and passes its checks
                check(load_config([o if not o.startswith("classify.pool=") else f"classify.pool={pool}" for o in run]))
    if script == "tune_pretrain":  # the probe: every stand-in, from the pretrained encoder and from scratch, both heads
        inits = [o for k, ov in lines if k == "classify" for o in ov if o.startswith("classify.init=")]
        assert sorted(inits) == ["classify.init=pretrained", "classify.init=scratch"] and fine_tunings == 4 * 2 * 2
    else:
        assert fine_tunings >= 4 * 3 * 3  # stand-ins x learning rates x rows
    if script == "table7":  # the distilled students, of both depths
        assert sum("distilled" in " ".join(o) for k, o in lines if k == "classify") == 2


def test_runkey_prints_a_configurations_key_or_its_folder(capsys):
    from layerdrop.runkey import main as runkey_main

    overrides = ["experiment=pretrain_mlm", "layerdrop.p=0.2", "paths.runs_dir=/somewhere/runs"]
    key = runs.run_key(load_config(overrides))
    runkey_main(overrides)
    runkey_main(["--dir", *overrides])
    assert capsys.readouterr().out.split() == [key, f"/somewhere/runs/mlm/{key}"]


def test_the_lm_regime_map_trains_the_three_rows_of_one_regime_and_reports_them_apart(tmp_path):
    """experiments/tune_lm_map.sh: the baseline, half depth from scratch and the LayerDrop row, on one
    budget (so the regime map compares them), each composing and passing its checks."""
    lines = commands("tune_lm_map", "cpu")
    assert lines[-1] == ("report", ["regime_lm", "->", "results/regime_lm_map"])
    cfgs = [load_config(run) for kind, overrides in lines if kind == "train" for run in expand(overrides)]
    for cfg in cfgs:
        validate(cfg)
    rows = sorted((c.model.n_layers, c.layerdrop.p, c.model.dropout) for c in cfgs)
    assert rows == [(3, 0.0, 0.1), (6, 0.0, 0.1), (6, 0.0, 0.2), (6, 0.2, 0.0), (6, 0.2, 0.1)]
    assert {(c.trainer.max_steps, c.data.max_train_tokens, c.artefact, c.select) for c in cfgs} == {
        (12000, 1_000_000, "regime_lm", "best")}
    assert len({runs.run_key(c) for c in cfgs}) == 5
    # every 6-layer row is pruned every-other (C1, C2); the model trained at 3 layers is not
    assert all(list(c.prune.strategies) == (["every_other"] if c.model.n_layers == 6 else []) for c in cfgs)
    # the budget is a knob: STEPS=5000 gives a second regime of the same rows
    short = commands("tune_lm_map", "cpu", env={"STEPS": "5000", "DROPOUTS": "all"})
    short_cfgs = [load_config(run) for kind, overrides in short if kind == "train" for run in expand(overrides)]
    assert {c.trainer.max_steps for c in short_cfgs} == {5000}
    assert sorted(c.model.dropout for c in short_cfgs if c.layerdrop.p == 0 and c.model.n_layers == 6) == [0.1, 0.2, 0.3]


SCRIPTS = sorted(p.stem for p in (REPO / "experiments").glob("*.sh") if p.stem != "common")


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_experiment_script_prints_its_runs_and_ends_with_its_report(script, scale):
    """LAYERDROP_DRY=1 runs no training, fine-tuning or report in any script (each goes through common.sh's
    functions), and every script ends by writing its page."""
    lines = commands(script, scale)
    assert lines and lines[-1][0] == "report"
    assert {kind for kind, _ in lines} <= {"train", "classify", "finetune", "context", "layer_use", "report"}


def test_table2_in_the_cpu_regime_is_the_lm_maps_5000_step_regime():
    """The cpu Table 2 rows that decide depth, C7, C1 and C2 are the regime map's 5,000-step runs (same
    settings, so the same run keys): the map's seeds are Table 2's seeds."""
    def keys(lines):  # the equal-compute row's steps are not computed in a dry run
        return {runs.run_key(load_config(run)) for kind, overrides in lines
                if kind == "train" and "role=equal_compute" not in overrides for run in expand(overrides)}

    table2 = commands("table2_lm", "cpu")
    grid = commands("tune_lm_map", "cpu", env={"STEPS": "5000"})
    assert len(keys(table2) & keys(grid)) == 3  # baseline, LayerDrop at its dropout, 3 layers from scratch


def test_the_translation_layerdrop_dropout_search_holds_table1s_8000_step_layerdrop_row():
    """make tune-mt-layerdrop: LayerDrop 0.2 at dropout 0.0 and 0.1, with Table 1's settings at 8,000 steps, so
    the 8,000-step Table 1's LayerDrop row is one of its two runs (one run, one key)."""
    def keys(lines):
        return {runs.run_key(load_config(run)) for kind, overrides in lines
                if kind == "train" and "role=equal_compute" not in overrides for run in expand(overrides)}

    table1_ld = keys([(kind, overrides) for kind, overrides in commands("table1_mt", "cpu", None, "trainer.max_steps=8000")
                      if "role=layerdrop" in overrides])
    search = keys(commands("tune_mt", "cpu", env={"LAYERDROP": "1"}))
    assert len(table1_ld) == 1 and len(search) == 2 and table1_ld <= search


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_figures_4_to_6_reuse_table2s_layerdrop_and_baseline_models(scale):
    """Figures 4-6 say their p = 0.2 layer-drop model is Table 2's LayerDrop row and Figure 6's p = 0 its
    baseline: the same settings (the LayerDrop rows' own dropout included), so the same run keys, trained once."""
    def keys(lines, role=None):
        return {runs.run_key(load_config(run)) for kind, overrides in lines
                if kind == "train" and (role is None or f"role={role}" in overrides) for run in expand(overrides)}

    table2 = commands("table2_lm", scale)
    layerdrop, baseline = keys(table2, "layerdrop"), keys(table2, "baseline")
    assert len(layerdrop) == len(baseline) == 1
    figure4, figure5, figure6 = (keys(commands(s, scale)) for s in ("figure4_lm", "figure5_lm", "figure6_lm"))
    assert layerdrop <= figure4 and layerdrop == figure5 and layerdrop | baseline <= figure6


def test_table3s_budget_probe_trains_table3s_summarisation_baseline_and_scratch_rows_at_its_budget():
    """make tune-table3-budget: the probe's summarisation baseline and 3-layer decoder are Table 3's rows (its
    cpu regime took the probe's budget; same settings, same run keys), so Table 3 reuses them, and so
    is QA's baseline at its own budget; every probe run draws the valid ROUGE curve."""
    def cfgs(lines, role=None):
        return [load_config(run) for kind, overrides in lines
                if kind == "train" and (role is None or f"role={role}" in overrides) for run in expand(overrides)]

    probe = cfgs(commands("tune_table3", "cpu", env={"BUDGET": "1"}))
    assert sorted((c.task.name, c.model.decoder_layers, c.trainer.max_steps) for c in probe) == [
        ("qa", 6, 3600), ("sum", 3, 6000), ("sum", 6, 6000)]
    assert all(c.generate.valid_sentences == 300 and c.layerdrop.p == 0 for c in probe)
    roles = ("sum_baseline", "sum_scratch", "qa_baseline")
    table3 = {runs.run_key(c) for role in roles for c in cfgs(commands("table3", "cpu"), role)}
    assert len(table3) == 3 and table3 == {runs.run_key(c) for c in probe}  # the cpu regime adopted the probe's budgets


def test_table3s_encoder_diagnostic_trains_five_runs_and_probes_exactly_those():
    """make tune-table3-norm: baseline and LayerDrop, pre- and post-norm, and pre-norm LayerDrop on the decoder
    only, otherwise the same settings (dropout 0.1, 1,500 steps), their weights kept; the layer-use probe reads
    each of those runs and no other."""
    lines = commands("tune_table3", "cpu", {"NORM": "1"})
    cfgs = [load_config(run) for kind, overrides in lines if kind == "train" for run in expand(overrides)]
    assert sorted((c.model.pre_norm, c.layerdrop.p, str(c.layerdrop.encoder_p)) for c in cfgs) == [
        (False, 0, "None"), (False, 0.2, "None"), (True, 0, "None"), (True, 0.2, "0"), (True, 0.2, "None")]
    assert {(c.model.dropout, c.trainer.max_steps, c.need_weights, c.task.name) for c in cfgs} == {(0.1, 1500, True, "sum")}
    probed = {runs.run_key(load_config(words)) for kind, words in lines if kind == "layer_use"}
    assert probed == {runs.run_key(c) for c in cfgs}
    assert lines[-1] == ("report", ["regime_sum"])


def test_mt_stability_probe_runs_the_deep_post_norm_pair_on_table_1s_own_schedule():
    """make tune-mt-stability: the 12/6 post-norm model without and with LayerDrop at three peak rates, each
    stopped early on the 12,000-step schedule's learning rate (not a shorter, gentler schedule of its own)."""
    lines = commands("tune_mt", "cpu", {"STABILITY": "1"})
    cfgs = [load_config(run) for kind, overrides in lines if kind == "train" for run in expand(overrides)]
    assert sorted((c.optim.optimizer.lr, c.layerdrop.p) for c in cfgs) == [
        (1e-3, 0), (1e-3, 0.2), (2e-3, 0), (2e-3, 0.2), (3e-3, 0), (3e-3, 0.2)]
    assert {(c.model.encoder_layers, c.model.decoder_layers, c.model.pre_norm, c.trainer.max_steps,
             c.optim.scheduler.total_steps, c.artefact) for c in cfgs} == {(12, 6, False, 600, 12000, "stability_mt")}
    assert lines[-1] == ("report", ["stability_mt"])


def test_table1s_cpu_deep_rows_are_post_norm_at_the_rate_the_stability_probe_chose():
    """The 12/6 pair is post-norm (the paper's divergence is a post-norm phenomenon) at lr 1e-3, where both
    trained in make tune-mt-stability; the 6/6 rows keep the cpu rate 3e-3 and pre-norm; paper scale keeps
    its own settings for every row."""
    cfgs = [load_config(run) for kind, overrides in commands("table1_mt", "cpu") if kind == "train"
            for run in expand(overrides)]
    deep = {(c.role, c.model.pre_norm, c.optim.optimizer.lr) for c in cfgs if c.model.encoder_layers == 12}
    assert deep == {("deep_baseline", False, 1e-3), ("deep_layerdrop", False, 1e-3)}
    assert {(c.model.pre_norm, c.optim.optimizer.lr) for c in cfgs if c.model.encoder_layers == 6} == {(True, 3e-3)}
    paper = [load_config(run) for kind, overrides in commands("table1_mt", "paper") if kind == "train"
             for run in expand(overrides)]
    assert len({c.optim.optimizer.lr for c in paper}) == 1 and not any(c.model.pre_norm for c in paper)
