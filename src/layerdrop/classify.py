"""Fine-tune a pretrained (and optionally pruned) encoder on a sentence-classification stand-in (paper
Tables 4 and 7: LayerDrop kept while fine-tuning full-depth LayerDrop models, off for pruned ones).

    python -m layerdrop.classify experiment=pretrain_mlm seed=1 [classify.depth=3 classify.lr=1e-4 ...]

The overrides name a pretraining run exactly as when it was trained (they resolve to its run folder);
its ``model.pt`` is pruned to ``classify.depth`` layers (``classify.strategy``; null keeps every layer),
given RoBERTa's classification head, and fine-tuned on ``classify.dataset`` (tokenized with the
pretraining corpus' tokenizer) with AdamW, 6% warmup and linear decay, keeping the best-on-valid
weights, which are then scored on valid and test (accuracy). A Hydra multirun over ``classify.lr`` and
``classify.batch_size`` is the paper's sweep; the best on valid is the one to report.

The record goes to ``runs/<task>_classify/<key>/metrics.json``, keyed by the pretraining run (its run
key: a new parent is a new child), the fine-tuning settings, the seed and the code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from layerdrop.data.classify import ClassificationDataModule
from layerdrop.data.classify_sources import DATASETS
from layerdrop.lit.classify import ClassifierLitModule
from layerdrop.models.checkpoint import load_model
from layerdrop.models.classifier import POOLS, EncoderClassifier
from layerdrop.models.pruning import layers_to_keep, prune_model
from layerdrop.train import LearningCurve, validate
from layerdrop.utils import runs

log = logging.getLogger("layerdrop")
STRATEGIES = ("every_other", "first", "last")
#: where the encoder's weights come from: the pretraining run's model.pt, or a fresh initialisation of the
#: same architecture (the control that says how much pretraining transfers to a stand-in)
INITS = ("pretrained", "scratch")


def check(cfg: DictConfig) -> None:
    """Bad settings fail before any work, naming the value and what is allowed."""
    c = cfg.classify
    if cfg.task.name != "mlm":
        raise ValueError(f"task={cfg.task.name!r}: classification fine-tunes a masked-LM encoder (task mlm)")
    if c.dataset not in DATASETS:
        raise ValueError(f"classify.dataset={c.dataset!r}: must be one of {', '.join(DATASETS)}")
    if c.init not in INITS:
        raise ValueError(f"classify.init={c.init!r}: must be one of {', '.join(INITS)}")
    if c.pool not in POOLS:
        raise ValueError(f"classify.pool={c.pool!r}: must be one of {', '.join(POOLS)}")
    if c.strategy not in STRATEGIES:
        raise ValueError(f"classify.strategy={c.strategy!r}: must be one of {', '.join(STRATEGIES)}")
    if c.depth is not None and not 1 <= int(c.depth) <= int(cfg.model.n_layers):
        raise ValueError(f"classify.depth={c.depth}: must be null or in [1, model.n_layers={cfg.model.n_layers}]")
    if c.layerdrop != "auto" and not (isinstance(c.layerdrop, int | float) and 0 <= c.layerdrop < 1):
        raise ValueError(f"classify.layerdrop={c.layerdrop!r}: must be 'auto' or a rate in [0, 1)")
    for key in ("steps", "batch_size", "max_len", "val_check_interval"):
        if int(c[key]) < 1:
            raise ValueError(f"classify.{key}={c[key]}: must be >= 1")
    if int(c.max_len) > int(cfg.model.max_len):
        raise ValueError(f"classify.max_len={c.max_len}: must be <= model.max_len={cfg.model.max_len} (the "
                         "encoder's positions)")
    if not float(c.lr) > 0:
        raise ValueError(f"classify.lr={c.lr}: must be > 0")
    if not 0 <= float(c.warmup_frac) < 1:
        raise ValueError(f"classify.warmup_frac={c.warmup_frac}: must be in [0, 1)")


def classify_key(source_key: str, cfg: DictConfig) -> str:
    blob = json.dumps({"source": source_key, "classify": OmegaConf.to_container(cfg.classify, resolve=True),
                       "seed": cfg.seed, "code": runs.code_version(("layerdrop.classify",))}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def layerdrop_rate(cfg: DictConfig, source_rate: float | list[float], pruned: bool) -> float | list[float]:
    """The paper's rule (``auto``): the pretraining rate stays on for a full-depth model, off once pruned."""
    if cfg.classify.layerdrop == "auto":
        return 0.0 if pruned else source_rate
    return float(cfg.classify.layerdrop)


def _optim(cfg: DictConfig) -> dict:
    c = cfg.classify
    return {"optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": float(c.lr),
                          "betas": [0.9, 0.98], "eps": 1e-6, "weight_decay": float(c.weight_decay)},
            "scheduler": {"warmup_steps": int(float(c.warmup_frac) * int(c.steps)), "total_steps": int(c.steps),
                          "min_lr_ratio": 0.0, "decay": "linear"}}


def classify(cfg: DictConfig) -> dict:
    """Returns the fine-tuning record (what its ``metrics.json`` holds)."""
    validate(cfg)
    check(cfg)
    source, store = runs.run_dir(cfg), runs.record_store(cfg)
    scratch = cfg.classify.init == "scratch"
    out = Path(cfg.paths.runs_dir) / f"{cfg.task.name}_classify" / classify_key(source.name, cfg)
    with runs.locked(out):
        record = runs.read_record(out, store)
        if record and "test_acc" in record:
            log.info("fine-tuning %s already done: %s", out.name, out / "metrics.json")
            before = (list(record.get("artefacts", [])), dict(record.get("roles", {})))
            runs.tag(record, cfg.artefact, cfg.role)  # one fine-tuning serves every artefact that needs it
            if (record["artefacts"], record["roles"]) != before:
                runs.write_record(out, store, record)
            return record
        if not scratch and not (source / "model.pt").exists():
            raise FileNotFoundError(f"no pretrained model at {source / 'model.pt'}: pretrain it first (the same "
                                    "overrides with python -m layerdrop.train need_weights=true; a run whose "
                                    "record came from the record store has no weights until then)")
        pl.seed_everything(cfg.seed, workers=True)
        pretraining = instantiate(cfg.data)
        c = cfg.classify
        datamodule = ClassificationDataModule(
            c.dataset, cfg.paths.data_dir, str(pretraining.corpus_dir), max_len=int(c.max_len),
            batch_size=int(c.batch_size), split_seed=int(cfg.data.split_seed), shuffle_seed=int(cfg.seed))
        datamodule.prepare_data()
        datamodule.setup("fit")
        encoder = _scratch_encoder(cfg) if scratch else load_model(source / "model.pt")[0]
        if encoder.config.vocab_size != datamodule.vocab_size + 1:
            raise ValueError(f"the pretrained encoder has {encoder.config.vocab_size} ids, the tokenizer "
                             f"{datamodule.vocab_size} (+1 for <mask>): not the pretraining corpus' tokenizer")
        n = encoder.config.n_layers
        depth = int(c.depth or n)
        keep = layers_to_keep(c.strategy, n, depth) if depth < n else list(range(n))
        if depth < n:
            encoder = prune_model(encoder, {"encoder": keep})
        rate = layerdrop_rate(cfg, encoder.config.layerdrop, pruned=depth < n)
        model = EncoderClassifier.from_pretrained(encoder, datamodule.n_classes, layerdrop=rate,
                                                  pooler_dropout=float(c.pooler_dropout), pool=str(c.pool))
        record = {"run_key": out.name, "source_run_key": source.name, "task": f"{cfg.task.name}_classify",
                  "scale": cfg.scale.name, "seed": cfg.seed, "dataset": c.dataset,
                  "stand_in_for": datamodule.stand_in_for, "data": datamodule.stats,
                  "classify": OmegaConf.to_container(c, resolve=True), "kept_layers": keep,
                  "layerdrop": rate, "source_layerdrop": asdict(encoder.config)["layerdrop"],
                  "code_version": runs.code_version(("layerdrop.classify",)), "machine": runs.machine_info(),
                  "git_sha": runs.git_sha(), "artefacts": [], "roles": {}}
        runs.tag(record, cfg.artefact, cfg.role)
        record["train"] = _fit(model, datamodule, cfg, out)
        best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
        lit = ClassifierLitModule(model=asdict(model.config))
        lit.load_state_dict(best["state_dict"])
        record["train"]["selected"] = {"rule": "best", "step": int(best["global_step"])}
        record.update(_score(lit.eval(), datamodule, cfg))
        runs.write_record(out, store, record)
        log.info("fine-tuned %s on %s (a %s stand-in), %d layers: valid acc %.4f, test acc %.4f", source.name,
                 c.dataset, datamodule.stand_in_for, depth, record["valid_acc"], record["test_acc"])
        return record


def _scratch_encoder(cfg: DictConfig):
    """The pretraining run's architecture (and LayerDrop rate), freshly initialised with the run's seed."""
    from layerdrop.tasks import get_task
    from layerdrop.train import model_config

    torch.manual_seed(int(cfg.seed))
    return get_task(cfg).build_module(model_config(cfg), seed=int(cfg.seed)).model


def _trainer(cfg: DictConfig, out: Path, **extra) -> pl.Trainer:
    args = OmegaConf.to_container(cfg.trainer, resolve=True)
    args.update(devices=1, strategy="auto", num_nodes=1, accumulate_grad_batches=1, limit_val_batches=1.0,
                val_check_interval=int(cfg.classify.val_check_interval), max_steps=int(cfg.classify.steps), **extra)
    return pl.Trainer(**args, logger=False, default_root_dir=str(out), enable_model_summary=False)


def _fit(model: EncoderClassifier, datamodule, cfg: DictConfig, out: Path) -> dict:
    lit = ClassifierLitModule(model=asdict(model.config), optim=_optim(cfg), seed=int(cfg.seed))
    lit.model.load_state_dict(model.state_dict())
    curve = LearningCurve()
    best = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val/acc", mode="max",
                           save_top_k=1, enable_version_counter=False)
    trainer = _trainer(cfg, out, callbacks=[best, curve])
    start = time.time()
    trainer.fit(lit, datamodule=datamodule)
    return {"steps": trainer.global_step, "tokens_seen": int(lit.tokens_seen),
            "wall_s": round(time.time() - start, 1), "curve": curve.points}


def _score(lit: ClassifierLitModule, datamodule, cfg: DictConfig) -> dict:
    trainer = _trainer(cfg, Path(cfg.paths.runs_dir), enable_progress_bar=False)
    row = {}
    for split, loader in (("valid", datamodule.val_dataloader()), ("test", datamodule.test_dataloader())):
        result = trainer.test(lit, dataloaders=loader, verbose=False)[0]
        row.update({f"{split}_acc": result["test/acc"], f"{split}_loss": result["test/loss"],
                    f"{split}_examples": int(lit.eval_tokens)})
    return row


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return classify(cfg)["valid_acc"]


if __name__ == "__main__":
    main()
