"""Every experiment composes at both scales; typos and bad values fail before any work."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError

from layerdrop.config import CONF_DIR, load_config
from layerdrop.params import count_for
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
    with pytest.raises(ValueError, match=r"layerdrop rate|per-layer rates"):
        train(cfg)
    assert not (tmp_path / "runs").exists()  # failed before any work


def test_model_file_holds_no_code(tmp_path):
    from layerdrop.models.checkpoint import load_model

    class Evil:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"format": "layerdrop-model/1", "payload": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        load_model(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()
