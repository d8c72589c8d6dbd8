"""Table 8: fine-tune a pruned LayerDrop LM, and measure whether it helps (claim C11).

    python -m layerdrop.finetune experiment=table2_lm layerdrop.p=0.2 seed=1 [finetune.steps=500 ...]
    make reproduce-table8

The overrides name a trained run exactly as when it was trained (they resolve to its run folder);
its ``model.pt`` is pruned (``finetune.strategy``, to ``finetune.depth`` layers, default half) and
scored on the valid and test splits; then the pruned model trains ``finetune.steps`` more steps on
the same training data, without LayerDrop, with the run's optimizer at ``finetune.lr_scale`` times
its peak learning rate (linear warmup, cosine decay), keeping the best-on-valid weights, and is
scored again. The paper gives no fine-tuning settings (only 20.78 -> 20.56 valid perplexity, and
that the settings "depended on depth and were hard to tune"); ours are in ``conf/finetune/``.

The record goes to ``runs/<task>_finetune/<key>/metrics.json``, keyed by the source run, the
fine-tuning settings and the code (the training code's fingerprint and this file's).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from layerdrop.evaluate import evaluate_grid
from layerdrop.models.checkpoint import load_model
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.train import LearningCurve, validate
from layerdrop.utils import runs

log = logging.getLogger("layerdrop")
STRATEGIES = ("every_other", "first", "last")


def check(cfg: DictConfig) -> None:
    """Bad fine-tuning settings fail before any work, naming the value and what is allowed."""
    ft = cfg.finetune
    if ft.strategy not in STRATEGIES:
        raise ValueError(f"finetune.strategy={ft.strategy!r}: must be one of {', '.join(STRATEGIES)}")
    if int(ft.steps) < 1:
        raise ValueError(f"finetune.steps={ft.steps}: must be >= 1")
    if not 0 <= int(ft.warmup_steps) < int(ft.steps):
        raise ValueError(f"finetune.warmup_steps={ft.warmup_steps}: must be in [0, finetune.steps={ft.steps})")
    if not float(ft.lr_scale) > 0:
        raise ValueError(f"finetune.lr_scale={ft.lr_scale}: must be > 0")
    if cfg.task.name != "lm":
        raise ValueError(f"task={cfg.task.name!r}: fine-tuning a pruned model is built for the LM (Table 8) only")


def _own_code() -> str:
    return runs._code_of(Path(__file__).read_text())


def finetune_key(source_key: str, cfg: DictConfig) -> str:
    blob = json.dumps({"source": source_key, "finetune": OmegaConf.to_container(cfg.finetune, resolve=True),
                       "seed": cfg.seed, "code": runs.run_code_version(cfg),
                       "finetune_code": hashlib.sha256(_own_code().encode()).hexdigest()[:12]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _score(model, datamodule, cfg: DictConfig) -> dict:
    """The full-model row of ``model`` (valid and test), as every other evaluation is made."""
    eval_cfg = copy.deepcopy(cfg)
    eval_cfg.prune.strategies = []
    return evaluate_grid(model, datamodule, eval_cfg)[0]


def _optim(cfg: DictConfig) -> dict:
    optim = OmegaConf.to_container(cfg.optim, resolve=True)
    optim["optimizer"]["lr"] = float(optim["optimizer"]["lr"]) * float(cfg.finetune.lr_scale)
    optim["scheduler"].update(warmup_steps=int(cfg.finetune.warmup_steps), total_steps=int(cfg.finetune.steps))
    optim.pop("average", None)
    return optim


def finetune(cfg: DictConfig) -> dict:
    """Returns the fine-tuning record (what its ``metrics.json`` holds)."""
    validate(cfg)
    check(cfg)
    source, store = runs.run_dir(cfg), runs.record_store(cfg)
    out = Path(cfg.paths.runs_dir) / f"{cfg.task.name}_finetune" / finetune_key(source.name, cfg)
    with runs.locked(out):
        record = runs.read_record(out, store)
        if record and "after" in record:
            log.info("fine-tuning %s already done: %s", out.name, out / "metrics.json")
            return record
        if not (source / "model.pt").exists():
            raise FileNotFoundError(f"no trained model at {source / 'model.pt'}: train the run first (the same "
                                    "overrides with python -m layerdrop.train need_weights=true, or make "
                                    "reproduce-table8)")
        source_record = runs.read_record(source, store) or {}
        pl.seed_everything(cfg.seed, workers=True)
        datamodule = instantiate(cfg.data)
        datamodule.prepare_data()
        datamodule.setup("fit")
        model, _ = load_model(source / "model.pt")
        n = model.config.n_layers
        depth = int(cfg.finetune.depth or n // 2)
        keep = layers_to_keep(cfg.finetune.strategy, n, depth)
        pruned = prune_model(model, {"decoder": keep}).eval()
        record = {"run_key": out.name, "source_run_key": source.name, "task": cfg.task.name, "scale": cfg.scale.name,
                  "artefacts": ["table8"], "seed": cfg.seed, "source_config": source_record.get("config"),
                  "finetune": OmegaConf.to_container(cfg.finetune, resolve=True), "kept_layers": keep,
                  "code_version": runs.run_code_version(cfg), "machine": runs.machine_info(), "git_sha": runs.git_sha(),
                  "before": {**_score(pruned, datamodule, cfg), "strategy": cfg.finetune.strategy}}
        runs.write_record(out, store, record)  # the pruned score survives an interrupted fine-tuning
        record["train"] = _fit(pruned, datamodule, cfg, out)
        best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        lit = get_class(cfg.task.lit_module)(model={**asdict(pruned.config), "layerdrop": 0.0})
        lit.load_state_dict(best["state_dict"])
        record["train"]["selected"] = {"rule": "best", "step": int(best["global_step"])}
        record["after"] = {**_score(lit.model.eval(), datamodule, cfg), "strategy": cfg.finetune.strategy}
        runs.write_record(out, store, record)
        log.info("fine-tuned %s: valid ppl %.2f -> %.2f", out.name, record["before"]["valid_ppl"],
                 record["after"]["valid_ppl"])
        return record


def _fit(pruned, datamodule, cfg: DictConfig, out: Path) -> dict:
    """Train the pruned model without LayerDrop; the best-on-valid weights are kept in checkpoints/."""
    lit = get_class(cfg.task.lit_module)(model={**asdict(pruned.config), "layerdrop": 0.0}, optim=_optim(cfg),
                                         seed=cfg.seed)
    lit.model.load_state_dict(pruned.state_dict())
    curve = LearningCurve()
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=cfg.task.monitor, mode=cfg.task.mode,
                           save_top_k=1, enable_version_counter=False)
    trainer_args = OmegaConf.to_container(cfg.trainer, resolve=True)
    trainer_args.update(max_steps=int(cfg.finetune.steps), val_check_interval=int(cfg.finetune.val_check_interval),
                        use_distributed_sampler=False, devices=1, strategy="auto", num_nodes=1)
    trainer = pl.Trainer(**trainer_args, logger=False, callbacks=[best, curve], default_root_dir=str(out),
                         enable_model_summary=False)
    start = time.time()
    trainer.fit(lit, datamodule=datamodule)
    return {"steps": trainer.global_step, "tokens_seen": int(lit.tokens_seen), "wall_s": round(time.time() - start, 1),
            "curve": curve.points}


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    record = finetune(cfg)
    return record["after"]["valid_ppl"]


if __name__ == "__main__":
    main()
