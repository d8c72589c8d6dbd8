"""Every experiment composes at both scales; typos and bad values fail before any work."""

import inspect
from pathlib import Path
from typing import get_type_hints

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from layerdrop import schema
from layerdrop.config import CONF_DIR, load_config
from layerdrop.data.lm import LMDataModule
from layerdrop.data.mt import MTDataModule
from layerdrop.models.lm import LMConfig
from layerdrop.models.seq2seq import Seq2SeqConfig
from layerdrop.optim import build_optimizer
from layerdrop.params import count_for
from layerdrop.tasks import Task
from layerdrop.train import train, validate

# pathlib, not Hydra's glob: Hydra lists only files directly inside a group folder
EXPERIMENTS = sorted(p.relative_to(CONF_DIR / "experiment").with_suffix("").as_posix()
                     for p in (CONF_DIR / "experiment").rglob("*.yaml"))


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_builds(experiment, scale):
    cfg = load_config([f"experiment={experiment}", f"scale={scale}"])
    validate(cfg)
    assert cfg.scale.name == scale and cfg.experiment_name and cfg.artefact
    assert count_for([f"experiment={experiment}", f"scale={scale}"]) > 0  # meta device: no memory


def test_scale_selects_sizes_not_code():
    cpu, paper = load_config(["scale=cpu"]), load_config(["scale=paper"])
    assert cpu.task.lit_module == paper.task.lit_module and cpu.data._target_ == paper.data._target_
    assert cpu.model.n_layers < paper.model.n_layers and paper.data.source == "hub"


def test_override_typos_fail_at_composition_with_the_allowed_values():
    with pytest.raises(ConfigCompositionException, match=r"(?s)scale/papr.*Available options.*cpu.*paper"):
        load_config(["scale=papr"])
    with pytest.raises(ConfigCompositionException, match="experiment/table9"):
        load_config(["experiment=table9"])
    with pytest.raises((ConfigCompositionException, ConfigKeyError), match="pp"):
        load_config(["layerdrop.pp=0.2"])


@pytest.mark.parametrize("bad", ["layerdrop.p=1.0", "layerdrop.p=-0.5", "layerdrop.rates=[0.1,0.2]"])
def test_bad_rates_fail_at_config_time(bad, tmp_path):
    cfg = load_config([bad, f"paths.data_dir={tmp_path}/nothing-here", f"paths.runs_dir={tmp_path}/runs"])
    with pytest.raises(ValueError, match=r"layerdrop.p=(1.0|-0.5): must be in \[0, 1\)|per-layer rates"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # failed before any work


@pytest.mark.parametrize("scale", ["cpu", "paper"])
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_passes_the_schema(experiment, scale):
    schema.check_config(load_config([f"experiment={experiment}", f"scale={scale}"]))


def _selected_experiments() -> list[str]:
    """The experiments that a script in experiments/ trains with the cpu regime's selection rule (SELECT:
    best on valid, early stopping)."""
    import re

    names = set()
    for script in (CONF_DIR.parent / "experiments").glob("*.sh"):
        text = script.read_text()
        if 'SELECT[@]' in text:
            names |= set(re.findall(r"experiment=(\w+)(?![\w$])", text))  # not names built from variables
    return sorted(names)


@pytest.mark.parametrize("experiment", _selected_experiments())
def test_experiments_trained_with_the_selection_rule_accept_it(experiment):
    """select=best refuses checkpoint averaging: every experiment a script trains with SELECT at cpu scale
    must compose with it (Table 3's first launch failed on exactly this)."""
    assert {"table2_lm", "table3_sum", "table3_qa"} <= set(_selected_experiments())
    schema.check_config(load_config([f"experiment={experiment}", "scale=cpu", "select=best",
                                     "early_stop_patience=3"]))


@pytest.mark.parametrize("overrides", [["debug=smoke"], ["experiment=table1_mt", "debug=smoke_mt"]])
def test_smoke_configs_pass_the_schema(overrides):
    schema.check_config(load_config(overrides))


LM, MT = [], ["experiment=table1_mt"]
BAD = [  # (overrides, a line the error must hold: the full key, the value, what is allowed)
    (LM, "data.vocab_size=abc", "data.vocab_size='abc': expected an int"),
    (LM, "model.n_layers=0", "model.n_layers=0: must be >= 1"),
    (LM, "model.d_model=-1", "model.d_model=-1: must be >= 1"),
    (LM, "model.dropout=1.5", "model.dropout=1.5: must be in [0, 1)"),
    (LM, "data.block_size=0", "data.block_size=0: must be >= 1"),
    (LM, "optim.optimizer.lr=-1", "optim.optimizer.lr=-1: must be > 0"),
    (LM, "optim.scheduler.warmup_steps=abc", "optim.scheduler.warmup_steps='abc': expected an int"),
    (LM, "optim.scheduler.warmup_steps=5000",
     "optim.scheduler.warmup_steps=5000: must be < optim.scheduler.total_steps=5000"),
    (LM, "trainer.max_steps=-1", "optim.scheduler.total_steps=-1: must be >= 1"),  # interpolated, resolved
    (LM, "prune.depths=[0]", "prune.depths[0]=0: must be >= 1"),
    (LM, "prune.depths=[2,7]", "prune.depths[1]=7: must be <= 6 (the decoder's layers)"),
    (LM, "prune.strategies=[bogus]", "prune.strategies[0]='bogus': expected one of every_other, first, "),
    (LM, "generate.beam=0", "generate.beam=0: must be >= 1"),
    (LM, "generate.lenpen=-0.1", "generate.lenpen=-0.1: must be >= 0"),
    (LM, "layerdrop.target=bogus", "layerdrop.target='bogus': expected one of layers, sublayers, heads, "),
    (LM, "layerdrop.learned=maybe", "layerdrop.learned='maybe': expected a bool (true/false)"),
    (LM, "seed=abc", "seed='abc': expected an int"),
    (LM, "checkpoint_every=0", "checkpoint_every=0: must be >= 1"),
    (LM, "model.n_heads=3", "model.n_heads=3: must divide model.d_model=128"),
    (LM, "+model.head_drop=0.5", "model.head_drop=0.5: unknown key; allowed: vocab_size, d_model, "),
    (LM, "data.tokenizer=char", "data.tokenizer='char': expected one of bpe, word"),
    (MT, "model.encoder_layers=0", "model.encoder_layers=0: must be >= 1"),
    (MT, "data.max_tokens=abc", "data.max_tokens='abc': expected an int"),
    (MT, "data.max_tokens=100", "data.max_tokens=100: must be >= data.max_source_len + data.max_target_len"),
    (["select=best"], "trainer.max_steps=100",
     "trainer.max_steps=100: select=best keeps the best validated checkpoint, but the run ends before its first "
     "validation (trainer.val_check_interval=250)"),
    (MT, "prune.stack=middle", "prune.stack='middle': expected one of encoder, decoder"),
    (MT, "layerdrop.encoder_p=1", "layerdrop.encoder_p=1: must be in [0, 1)"),
]


@pytest.mark.parametrize("base, bad, line", BAD, ids=[bad for _, bad, _ in BAD])
def test_bad_values_fail_before_any_work_naming_key_value_and_allowed(base, bad, line, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):  # a check that lets the value through must fail here, not train
        raise AssertionError(f"{bad} reached the data module")

    monkeypatch.setattr(Task, "build_data", no_work)
    paths = [f"paths.data_dir={tmp_path}/nothing-here", f"paths.runs_dir={tmp_path}/runs"]
    cfg = load_config([*base, bad, *paths])
    with pytest.raises(ValueError) as err:
        train(cfg)
    assert line in str(err.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "nothing-here").exists()


def test_every_bad_key_is_reported_at_once():
    with pytest.raises(ValueError) as err:
        schema.check_config(load_config(["data.vocab_size=abc", "model.n_layers=0", "generate.beam=0"]))
    lines = str(err.value).splitlines()
    # model.vocab_size interpolates data.vocab_size: both keys say so
    assert lines[0] == "invalid config (4 errors):" and len(lines) == 5
    assert "  model.vocab_size='abc': expected an int" in lines and "  generate.beam=0: must be >= 1" in lines


def test_checker_types():
    ld = schema.LayerDrop
    assert schema.check_section({"p": 0, "target": "layers", "rates": None}, ld) == []  # an int is a float
    assert schema.check_section({"p": True, "target": "layers"}, ld) == ["p=True: expected a float"]
    assert schema.check_section({"p": 0.1, "target": "layers", "rates": [0.1, "x"]}, ld) == [
        "rates=[0.1, 'x']: expected a list of floats or null"]
    assert schema.check_section({"target": "layers"}, ld) == ["p: missing; expected a float"]
    assert schema.check_section({"lr": 1e-3, "betas": [0.9, 0.98]}, schema.Optimizer) == []  # open: any key


DERIVED = {"layerdrop", "encoder_layerdrop", "decoder_layerdrop", "layerdrop_seed", "layerdrop_learned",
           "sublayer_drop", "head_drop"}  # set by train.model_config from the layerdrop group


@pytest.mark.parametrize("section, target", [
    (schema.LMModel, LMConfig), (schema.MTModel, Seq2SeqConfig),
    (schema.LMData, LMDataModule.__init__), (schema.MTData, MTDataModule.__init__),
])
def test_schemas_list_what_the_code_takes(section, target):
    """A new model field or DataModule argument must get a schema entry (with its bounds), or configs
    that set it fail as unknown keys."""
    ours = get_type_hints(section)
    ours.pop("_target_", None)
    theirs = {k: v for k, v in get_type_hints(target).items() if k not in DERIVED | {"return"}}
    assert ours == theirs


def test_scheduler_schema_is_build_optimizers_keywords():
    hints = get_type_hints(build_optimizer)
    keywords = [n for n, p in inspect.signature(build_optimizer).parameters.items() if p.kind is p.KEYWORD_ONLY]
    assert get_type_hints(schema.Scheduler) == {n: hints[n] for n in keywords}


def test_model_file_holds_no_code(tmp_path):
    from layerdrop.models.checkpoint import load_model

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"format": "layerdrop-model/1", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
