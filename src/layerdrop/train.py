"""Train one configuration (or reuse it from the run cache), then evaluate its pruned sub-networks.

    python -m layerdrop.train experiment=table2_lm layerdrop.p=0.2
    python -m layerdrop.train -m experiment=table2_lm layerdrop.p=0,0.2,0.5     # a sweep
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from layerdrop.evaluate import done_keys, evaluate_grid, merge_rows, prune_grid
from layerdrop.models.checkpoint import average_into, checkpoint_step, load_model, save_model
from layerdrop.models.layerdrop import check_rates
from layerdrop.models.pruning import count_parameters
from layerdrop.schema import check_config
from layerdrop.tasks import Task, get_task
from layerdrop.utils import runs
from layerdrop.utils.loggers import build_logger, log_prune_curve

log = logging.getLogger("layerdrop")


#: drop targets of Figure 4 -> which model rates the budget p goes to (combinations split it evenly)
DROP_TARGETS = {
    "layers": {"layerdrop": 1.0},
    "sublayers": {"sublayer_drop": 1.0},
    "heads": {"head_drop": 1.0},
    "heads+layers": {"head_drop": 0.5, "layerdrop": 0.5},
    "heads+sublayers": {"head_drop": 0.5, "sublayer_drop": 0.5},
}


def side_rate(cfg: DictConfig, stack: str) -> float:
    """The LayerDrop budget of one stack: ``layerdrop.<stack>_p`` if set, else ``layerdrop.p``."""
    side = cfg.layerdrop.get(f"{stack}_p")
    return float(cfg.layerdrop.p if side is None else side)


def validate(cfg: DictConfig) -> None:
    """Fail before any work on values Hydra's structure checks cannot see."""
    check_config(cfg)  # types, bounds and choices of every key, prune.stack, layerdrop.target (layerdrop.schema)
    depths = get_task(cfg).stacks
    if cfg.layerdrop.rates is not None:
        if len(depths) > 1:
            raise ValueError("layerdrop.rates (one rate per layer) is for single-stack models; an encoder-decoder "
                             "takes layerdrop.encoder_p and layerdrop.decoder_p")
        (depth,) = depths.values()
        check_rates(cfg.layerdrop.rates, depth)
    for stack, n in depths.items():
        check_rates(side_rate(cfg, stack), n)
    if cfg.layerdrop.learned and (cfg.layerdrop.target != "layers" or cfg.layerdrop.rates is not None):
        raise ValueError("layerdrop.learned needs layerdrop.target=layers and one mean rate p (no rates list)")
    clip = cfg.trainer.get("gradient_clip_val") or 0
    if cfg.optim.optimizer.get("fused") and str(cfg.trainer.get("precision")) in ("16", "16-mixed") and clip > 0:
        raise ValueError(f"optim.optimizer.fused=true with trainer.precision={cfg.trainer.precision} and "
                         f"trainer.gradient_clip_val={clip}: a fused optimizer unscales fp16's gradients inside its "
                         "step, after clipping would have to; set optim.optimizer.fused=false, use bf16-mixed, or "
                         "trainer.gradient_clip_val=null")
    if cfg.scale.name not in ("cpu", "paper"):
        raise ValueError(f"scale must be cpu or paper, got {cfg.scale.name!r}")


def model_config(cfg: DictConfig) -> dict:
    """The model's constructor arguments: its shape config plus the structured-dropout rates."""
    model = OmegaConf.to_container(cfg.model, resolve=True)
    ld = cfg.layerdrop
    depths = get_task(cfg).stacks
    if ld.rates is not None:
        model["layerdrop"] = [float(r) for r in ld.rates]
    else:
        for field, share in DROP_TARGETS[ld.target].items():
            if field == "layerdrop" and len(depths) > 1:  # one rate per stack: encoder_layerdrop, ...
                for stack in depths:
                    model[f"{stack}_layerdrop"] = side_rate(cfg, stack) * share
            else:
                model[field] = float(ld.p) * share
    model["layerdrop_learned"] = bool(ld.learned)
    model["layerdrop_seed"] = int(cfg.seed)
    return model


def run_name(cfg: DictConfig, task: Task) -> str:
    depth = "-".join(f"{s[0].upper()}{n}" for s, n in task.stacks.items())  # D6 (LM), E6-D6 (MT)
    return f"{cfg.task.name}-{cfg.scale.name}-{depth}-ld{cfg.layerdrop.p}-{runs.run_key(cfg)}"


class TrainThroughput(pl.Callback):
    """Training tokens/s over the training batches alone (forward, backward, optimizer step). The tokens
    are what the module counts in ``tokens_seen`` (target tokens of every rank), whatever its batches hold."""

    def __init__(self):
        self.seconds, self.tokens, self._start, self._seen = 0.0, 0, 0.0, 0

    def on_train_batch_start(self, trainer, lit, batch, batch_idx):
        self._seen = int(lit.tokens_seen)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, lit, outputs, batch, batch_idx):
        self.seconds += time.perf_counter() - self._start
        self.tokens += int(lit.tokens_seen) - self._seen

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class LearningCurve(pl.Callback):
    """The validation metrics after every validation, with the step and training tokens they were
    measured at: the run record's ``train.curve``. Kept in checkpoints, so a resumed run's curve
    starts where the interrupted one stopped (points past the resumed step are measured again)."""

    def __init__(self):
        self.points: list[dict] = []

    def on_validation_end(self, trainer, lit):
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        point = {"step": trainer.global_step, "tokens_seen": int(getattr(lit, "tokens_seen", 0)), **metrics}
        self.points = [p for p in self.points if p["step"] != point["step"]] + [point]

    def state_dict(self) -> dict:
        return {"points": self.points}

    def load_state_dict(self, state: dict) -> None:
        self.points = list(state.get("points", []))

    def on_train_start(self, trainer, lit):
        self.points = [p for p in self.points if p["step"] <= trainer.global_step]


def min_or_max(curve: LearningCurve, metric: str, mode: str) -> float | None:
    values = [p[metric] for p in curve.points if metric in p]
    return (min if mode == "min" else max)(values) if values else None


def fit(cfg: DictConfig, task: Task, datamodule, run_dir: Path, logger) -> tuple[torch.nn.Module, dict]:
    """Train (resuming from the run's last checkpoint if there is one) and save the model."""
    lit = task.build_module(model_config(cfg), optim=OmegaConf.to_container(cfg.optim, resolve=True), seed=cfg.seed)
    if lit.model.config.vocab_size < datamodule.vocab_size:
        raise ValueError(f"model.vocab_size={lit.model.config.vocab_size} is smaller than the tokenizer's "
                         f"{datamodule.vocab_size} tokens")
    model_pad, data_pad = getattr(lit.model.config, "pad_id", None), getattr(datamodule, "pad_id", None)
    if model_pad is not None and data_pad is not None and model_pad != data_pad:
        raise ValueError(f"model.pad_id={model_pad} but the data's <pad> is token {data_pad}")
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0,
                                 every_n_train_steps=cfg.checkpoint_every)
    throughput, curve = TrainThroughput(), LearningCurve()
    callbacks = [checkpoint, throughput, curve, *task.fit_callbacks(datamodule)]
    monitor, mode = cfg.task.monitor, cfg.task.mode
    if cfg.select == "best":  # the best validation so far, kept as it happens (and across a resume)
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir / "best", filename="best", monitor=monitor, mode=mode,
                                         save_top_k=1, enable_version_counter=False))
    if cfg.early_stop_patience:
        callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=int(cfg.early_stop_patience)))
    average = cfg.optim.get("average") or {}
    averaging = int(average.get("last", 1)) > 1
    if averaging:  # keep the last k checkpoints, `every` steps apart, to average at the end
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir / "average", filename="{step}", monitor="step", mode="max",
                                         save_top_k=int(average["last"]),
                                         every_n_train_steps=int(average["every"])))
    # every train loader shards itself by rank (data/batches.py); evaluation loaders are never padded
    trainer_args = {**OmegaConf.to_container(cfg.trainer, resolve=True), "use_distributed_sampler": False}
    trainer = pl.Trainer(**trainer_args, logger=logger, callbacks=list(callbacks), default_root_dir=str(run_dir),
                         enable_model_summary=False)
    resumed = last.exists()
    if resumed:
        log.info("resuming %s from %s", run_dir.name, last)
    start = time.time()
    trainer.fit(lit, datamodule=datamodule, ckpt_path=str(last) if resumed else None)
    summary = {
        "steps": trainer.global_step, "tokens_seen": int(lit.tokens_seen), "wall_s": round(time.time() - start, 1),
        "resumed": resumed, "n_params": count_parameters(lit.model),
        "train_tokens_per_s": round(throughput.tokens_per_s, 1),  # this session's steps only
        "final": {k: float(v) for k, v in trainer.callback_metrics.items()}, "world_size": trainer.world_size,
        "curve": curve.points,
    }
    end_distributed()
    if rank_zero_only.rank != 0:
        return lit.model, summary
    if averaging:
        paths = sorted((ckpt_dir / "average").glob("step=*.ckpt"), key=checkpoint_step)
        average_into(lit.model, paths)
        summary["averaged_checkpoints"] = [checkpoint_step(p) for p in paths]
    summary["selected"] = {"rule": cfg.select, "step": trainer.global_step}
    if cfg.select == "best":
        best = torch.load(ckpt_dir / "best" / "best.ckpt", map_location="cpu", weights_only=True)
        lit.load_state_dict(best["state_dict"])
        summary["selected"] = {"rule": "best", "step": int(best["global_step"]), monitor: min_or_max(curve, monitor, mode)}
    save_model(run_dir / "model.pt", lit.model, meta=summary)
    return lit.model, summary


def unevaluated(cfg: DictConfig, task: Task, record: dict) -> str | None:
    """What of the evaluation grid ``record`` lacks, in words (None: nothing), told without the weights:
    the grid comes from a weightless (meta-device) copy of the model. Learned-rate pruning needs the
    trained rates, so it always counts as missing."""
    if "data_driven" in cfg.prune.strategies:
        return "the data_driven pruning (it reads the trained rates)"
    with torch.device("meta"):
        model = task.build_module(model_config(cfg), seed=cfg.seed).model
    skip = done_keys(record["eval"], cfg.prune.get("stack", "decoder"), task.eval_settings())
    keys = [(s, t if isinstance(t, int) else tuple(t)) for s, t in prune_grid(cfg, model)]
    missing = [f"{s} {list(t) if isinstance(t, tuple) else t}" for s, t in keys if (s, t) not in skip]
    return ", ".join(missing) or None


def end_distributed() -> None:
    """After a distributed fit, rank 0 alone averages, saves and evaluates, with single-process
    trainers: the process group is closed first (every rank waits for the others), so no metric of
    the evaluation tries to synchronise with ranks that have left (which hangs on NCCL)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def train(cfg: DictConfig) -> dict:
    """Returns the run's record (what ``metrics.json`` holds). One process at a time per run folder."""
    validate(cfg)
    with runs.locked(runs.run_dir(cfg)):
        return train_locked(cfg)


def train_locked(cfg: DictConfig) -> dict:
    """``train`` inside the run folder's lock."""
    run_dir, store = runs.run_dir(cfg), runs.record_store(cfg)
    record = runs.read_record(run_dir, store) or {
        "run_key": run_dir.name, "task": cfg.task.name, "scale": cfg.scale.name, "code_version": runs.run_code_version(cfg),
        "config": runs.training_config(cfg), "artefacts": [], "roles": {}, "eval": [],
    }
    before = (list(record["artefacts"]), dict(record.get("roles", {})))
    runs.tag(record, cfg.artefact, cfg.role)
    task = get_task(cfg)
    if "train" in record and not (run_dir / "model.pt").exists() and not cfg.need_weights:
        missing = unevaluated(cfg, task, record)
        if not missing:  # a fresh clone: the record store holds the run, the weights are not needed
            log.info("run %s: its stored record holds every evaluation asked for; nothing to train "
                     "(need_weights=true trains it again for its weights)", run_dir.name)
            if (record["artefacts"], record["roles"]) != before:
                runs.write_record(run_dir, store, record)
            return record
        log.info("run %s: stored record found, but its weights are not here and %s are not evaluated: "
                 "training it again", run_dir.name, missing)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = task.build_data()
    with runs.file_lock(Path(cfg.paths.data_dir) / ".prepare.lock"):  # ranks of one node build a corpus once
        datamodule.prepare_data()
    datamodule.setup("fit")
    logger = build_logger(cfg, run_name(cfg, task))
    try:
        if (run_dir / "model.pt").exists():
            if rank_zero_only.rank != 0:  # a distributed launch of a trained run: rank 0 alone evaluates
                return record
            log.info("run %s already trained; reusing %s", run_dir.name, run_dir / "model.pt")
            model, meta = load_model(run_dir / "model.pt")
            if "train" not in record:  # stopped after saving the model, before writing its record
                record.update(train=meta, machine=runs.machine_info(), git_sha=runs.git_sha(),
                              data=getattr(datamodule, "corpus_manifest", None))
        else:
            model, record["train"] = fit(cfg, task, datamodule, run_dir, logger)
            if rank_zero_only.rank != 0:  # under DDP, rank 0 alone evaluates and writes
                return record
            record.update(machine=runs.machine_info(), git_sha=runs.git_sha(),
                          data=getattr(datamodule, "corpus_manifest", None))
        skip = done_keys(record["eval"], cfg.prune.get("stack", "decoder"), task.eval_settings())
        new = evaluate_grid(model, datamodule, cfg, skip=skip, task=task)
        record["eval"] = sorted(merge_rows(record["eval"], new),
                                key=lambda e: (e.get("stack", "decoder"), e["strategy"], e["depth"]))
        runs.write_record(run_dir, store, record)
        log_prune_curve(logger, record["eval"])
        log.info("wrote %s", run_dir / "metrics.json")
    finally:
        if logger and hasattr(logger, "experiment") and cfg.logger.kind == "wandb":
            import wandb

            wandb.finish()  # a multirun must not stall on an open run
    return record


def check_launch(cfg: DictConfig) -> None:
    """Lightning's DDP launcher re-executes the command line in every rank: inside a Hydra multirun
    every rank would run the whole sweep. Such sweeps go through ``python -m layerdrop.launch``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    devices = cfg.trainer.get("devices", 1)
    many = (isinstance(devices, int) and devices > 1) or int(cfg.trainer.get("num_nodes", 1) or 1) > 1
    external = any(k in os.environ for k in ("TORCHELASTIC_RUN_ID", "SLURM_PROCID", "LOCAL_RANK"))
    if many and not external and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ValueError(f"trainer.devices={devices} inside a Hydra multirun (-m) would run the whole sweep in "
                         "every rank: run the sweep with `python -m layerdrop.launch <same overrides, no -m>` "
                         "(torchrun per run), or with a cluster launcher (hydra/launcher=submitit_slurm)")


@hydra.main(config_path="../../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    check_launch(cfg)
    record = train(cfg)
    full = [e for e in record["eval"] if e["strategy"] == "none"]
    return full[0].get(get_task(cfg).sweep_metric) if full else None


if __name__ == "__main__":
    main()
