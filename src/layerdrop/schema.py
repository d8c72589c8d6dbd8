"""Typed schemas of the config groups users override, checked before any work.

Hydra composes whatever YAML and overrides say: `data.vocab_size=abc` would reach the tokenizer as a
string and `model.n_layers=0` would train a model with no layers. ``check_config`` reads the resolved
values against the dataclasses below and raises one ``ValueError`` listing every problem, each naming
the full key, the bad value and what is allowed:

    data.vocab_size='abc': expected an int
    model.n_layers=0: must be >= 1

A field's annotation gives its type (an int is accepted for a float); ``rule`` gives its constraints
(bounds and choices, applied to each element of a list). The dataclasses are schemas only, never
instantiated; a section rejects keys it does not list unless it sets ``open_keys`` (the optimizer
takes whatever its class takes; the root holds groups other code checks: trainer, logger, paths).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from omegaconf import DictConfig, ListConfig, OmegaConf

from layerdrop.data import lm as lm_data
from layerdrop.data import mlm as mlm_data
from layerdrop.data import mt as mt_data
from layerdrop.data import text_pairs
from layerdrop.data.mt_corpus import DIRECTIONS
from layerdrop.models import encoder as encoder_model
from layerdrop.models.pruning import SEARCHED, STRATEGIES
from layerdrop.tasks.base import SPLITS, TASKS, Task
from layerdrop.utils.machine import slow_bf16_warning, use_fp32_gemm
from layerdrop.utils.typed_schema import check_section, rule

log = logging.getLogger("layerdrop")
_WARNED: set[str] = set()


def _drop_targets() -> tuple[str, ...]:
    from layerdrop.train import DROP_TARGETS  # train imports this module: look the names up late

    return tuple(DROP_TARGETS)


RATE = {"ge": 0, "lt": 1}  # a drop probability


# --- model: the shape keys of conf/model/*.yaml. The LayerDrop fields of LMConfig / Seq2SeqConfig
# (layerdrop, head_drop, ...) are not here: train.model_config sets them from the layerdrop group.

@dataclass
class _Shape:
    vocab_size: int = rule(required=True, ge=1)
    d_model: int = rule(ge=1)
    n_heads: int = rule(ge=1)
    d_ff: int = rule(ge=1)
    max_len: int = rule(ge=1)
    dropout: float = rule(**RATE)
    attn_dropout: float = rule(**RATE)
    act_dropout: float = rule(**RATE)
    pre_norm: bool = rule()


@dataclass
class LMModel(_Shape):
    n_layers: int = rule(ge=1)
    final_norm: bool = rule()
    adaptive: bool = rule()
    cutoffs: list[int] = rule(ge=1)
    adaptive_factor: float = rule(ge=1)
    adaptive_dropout: float = rule(**RATE)


@dataclass
class MTModel(_Shape):
    encoder_layers: int = rule(ge=1)
    decoder_layers: int = rule(ge=1)
    pad_id: int = rule(ge=0)


@dataclass
class EncoderModel(_Shape):
    n_layers: int = rule(ge=1)
    activation: str = rule(choices=("relu", "gelu"))
    positions: str = rule(choices=encoder_model.POSITIONS)
    pad_id: int = rule(ge=0)


# --- data: the DataModule's constructor arguments (conf/data/*.yaml)

@dataclass
class LMData:
    _target_: str = rule(required=True, choices=("layerdrop.data.lm.LMDataModule",))
    source: str = rule(required=True, choices=lm_data.SOURCES)
    data_dir: str = rule()
    tokenizer: str = rule(choices=lm_data.TOKENIZERS)
    vocab_size: int = rule(ge=1)
    block_size: int = rule(ge=1)
    batch_size: int = rule(ge=1)
    eval_batch_size: int | None = rule(ge=1)
    num_workers: int = rule(ge=0)
    split_seed: int = rule()
    hub_path: str | None = rule()
    hub_name: str | None = rule()
    hub_data_files: dict | None = rule()
    max_train_tokens: int | None = rule(ge=1)
    raw_dir: str | None = rule()
    shuffle_seed: int | None = rule()
    context_window: int = rule(ge=0)
    frequency_order: bool = rule()


@dataclass
class MLMData(LMData):
    """The masked LM's data: one source (``LMDataModule``: the news, or the hub at paper scale) or the cpu
    union of English sources (``UnionTextDataModule``: ``sources``, no ``source``)."""
    _target_: str = rule(required=True, choices=("layerdrop.data.lm.LMDataModule",
                                                 "layerdrop.data.mlm.UnionTextDataModule"))
    source: str = rule(choices=lm_data.SOURCES)
    sources: list[str] = rule(choices=mlm_data.SOURCES)


def mlm_data_errors(data: dict) -> list[str]:
    """Which of ``source`` / ``sources`` the masked LM's data module takes."""
    union = data["_target_"].endswith("UnionTextDataModule")
    own, other = ("sources", "source") if union else ("source", "sources")
    errors = [f"data.{other}={data[other]!r}: {data['_target_']} takes data.{own}, not data.{other}"]  \
        if other in data else []
    if own not in data:
        errors.append(f"data.{own}: missing; {data['_target_']} needs it"
                      + (f" (a list of {', '.join(mlm_data.SOURCES)})" if union else ""))
    elif union:
        errors += [f"data.{key}={data[key]!r}: {data['_target_']} reads data.sources, not the hub"
                   for key in ("hub_path", "hub_name", "hub_data_files") if data.get(key) is not None]
        try:
            mlm_data.check_sources(data[own])
        except ValueError as err:
            errors.append(f"data.{err}")
    return errors


@dataclass
class _PairData:
    """What translation, summarisation and QA data share (data/mt.py, data/text_pairs.py)."""
    source: str = rule(required=True, choices=mt_data.SOURCES)
    data_dir: str = rule()
    vocab_size: int = rule(ge=1)
    max_tokens: int = rule(ge=1)
    max_source_len: int = rule(ge=2)  # a token and <eos>
    max_target_len: int = rule(ge=2)
    split_seed: int = rule()
    hub_path: str = rule()
    hub_name: str | None = rule()
    hub_data_files: dict | None = rule()
    max_train_pairs: int | None = rule(ge=1)
    num_workers: int = rule(ge=0)
    raw_dir: str | None = rule()
    eval_max_tokens: int | None = rule(ge=1)
    shuffle_seed: int | None = rule()


@dataclass
class MTData(_PairData):
    _target_: str = rule(required=True, choices=("layerdrop.data.mt.MTDataModule",))
    direction: str = rule(choices=DIRECTIONS)


@dataclass
class TextPairData(_PairData):
    _target_: str = rule(required=True, choices=("layerdrop.data.text_pairs.TextPairDataModule",))
    task: str = rule(required=True, choices=tuple(text_pairs.PAIR_TASKS))
    hub_source_field: str = rule()
    hub_target_field: str = rule()


# --- the groups both tasks share

@dataclass
class Optimizer:
    open_keys: ClassVar[bool] = True  # betas, momentum, ...: whatever the optimizer class takes
    lr: float = rule(required=True, gt=0)


@dataclass
class Scheduler:  # layerdrop.optim.build_optimizer's keyword arguments
    warmup_steps: int = rule(required=True, ge=0)
    total_steps: int = rule(required=True, ge=1)
    min_lr_ratio: float = rule(ge=0, le=1)
    warmup_init_ratio: float = rule(ge=0, le=1)
    decay: str = rule(choices=("cosine", "linear"))


@dataclass
class Average:
    last: int = rule(required=True, ge=1)  # checkpoints averaged into the final model
    every: int = rule(required=True, ge=1)  # steps between them


@dataclass
class Optim:
    optimizer: Optimizer = rule(required=True)
    scheduler: Scheduler = rule(required=True)
    average: Average | None = rule()


@dataclass
class LayerDrop:
    p: float = rule(required=True, **RATE)
    encoder_p: float | None = rule(**RATE)
    decoder_p: float | None = rule(**RATE)
    target: str = rule(required=True, choices=_drop_targets)
    rates: list[float] | None = rule(**RATE)
    learned: bool = rule()


@dataclass
class Prune:
    stack: str = rule()  # one of the model's layer stacks: checked against the model below
    strategies: list[str] = rule(required=True, choices=STRATEGIES + SEARCHED)
    depths: list[int] | None = rule(ge=1)
    layers: list[int] | None = rule(ge=0)
    samples: int = rule(ge=1)
    seed: int = rule()
    max_exhaustive: int = rule(ge=1)
    beam: int = rule(ge=1)
    splits: list[str] = rule(required=True, choices=tuple(SPLITS))
    precision: str | int = rule()  # Lightning's precision: "32-true", "bf16-mixed", 32, ...


@dataclass
class Generate:
    beam: int = rule(required=True, ge=1)
    lenpen: float = rule(required=True, ge=0)
    max_len_a: float = rule(required=True, ge=0)
    max_len_b: int = rule(required=True, ge=0)
    min_len: int = rule(ge=1)
    no_repeat_ngram: int = rule(ge=0)
    max_sentences: int | None = rule(ge=1)
    valid_sentences: int | None = rule(ge=1)  # the text metric's learning curve (seq2seq tasks)
    seed: int = rule()


@dataclass
class _Run:
    open_keys: ClassVar[bool] = True  # trainer (Lightning checks it), logger, paths, tags, ...
    optim: Optim = rule(required=True)
    layerdrop: LayerDrop = rule(required=True)
    prune: Prune = rule(required=True)
    generate: Generate = rule(required=True)
    seed: int = rule(required=True)
    checkpoint_every: int = rule(required=True, ge=1)
    select: str = rule(required=True, choices=("final", "best"))
    early_stop_patience: int | None = rule(ge=1)
    need_weights: bool = rule(required=True)
    role: str | None = rule()


@dataclass
class LMRun(_Run):
    model: LMModel = rule(required=True)
    data: LMData = rule(required=True)


@dataclass
class MLMRun(_Run):
    model: EncoderModel = rule(required=True)
    data: MLMData = rule(required=True)


@dataclass
class MTRun(_Run):
    model: MTModel = rule(required=True)
    data: MTData = rule(required=True)


@dataclass
class TextPairRun(_Run):
    model: MTModel = rule(required=True)
    data: TextPairData = rule(required=True)



# --- the checker (the per-field mechanism: utils/typed_schema.py)


def _cross_checks(run: dict, task: Task) -> list[str]:
    """Constraints between keys (run only once every key has a valid type); the task adds its own."""
    model, errors = run["model"], []
    if model.get("d_model", 0) % model.get("n_heads", 1):
        errors.append(f"model.n_heads={model['n_heads']}: must divide model.d_model={model['d_model']}")
    depths = {stack: model.get(task.depth_key(stack)) for stack in task.model_class.stacks}
    errors += task.config_errors(run)
    if task.schema is MLMRun:
        errors += mlm_data_errors(run["data"])
    if run.get("select") == "best" and int((run["optim"].get("average") or {}).get("last", 1)) > 1:
        errors.append(f"select=best: the run would report its best checkpoint, but optim.average.last="
                      f"{run['optim']['average']['last']} averages the last ones; choose one (optim.average.last=1)")
    curve = (run.get("generate") or {}).get("valid_sentences")
    if curve is not None and not task.generates:
        errors.append(f"generate.valid_sentences={curve}: task {task.name!r} generates no text; it is for the "
                      "sequence-to-sequence tasks (null here)")
    sched = run["optim"]["scheduler"]
    if sched["warmup_steps"] >= sched["total_steps"]:
        errors.append(f"optim.scheduler.warmup_steps={sched['warmup_steps']}: must be < "
                      f"optim.scheduler.total_steps={sched['total_steps']}")
    prune = run["prune"]
    stack = prune.get("stack") or "decoder"
    if stack not in depths:
        errors.append(f"prune.stack={stack!r}: expected one of {', '.join(depths)} "
                      "(the model's layer stacks)")
    elif depths[stack] is not None:
        n = depths[stack]
        errors += [f"prune.depths[{i}]={d}: must be <= {n} (the {stack}'s layers)"
                   for i, d in enumerate(prune.get("depths") or []) if d > n]
        errors += [f"prune.layers[{i}]={k}: must be < {n} (the {stack}'s layers)"
                   for i, k in enumerate(prune.get("layers") or []) if k >= n]
    return errors


def _validation_errors(cfg: DictConfig) -> list[str]:
    """select=best reads the best validated checkpoint: a run must validate at least once (the trainer
    section is Lightning's own, outside the schema; a fractional interval validates within an epoch)."""
    trainer = cfg.get("trainer") or {}
    steps, every = trainer.get("max_steps"), trainer.get("val_check_interval")
    if cfg.get("select") != "best" or not isinstance(steps, int) or not isinstance(every, int) or steps < 0:
        return []
    if steps < every:
        return [f"trainer.max_steps={steps}: select=best keeps the best validated checkpoint, but the run ends "
                f"before its first validation (trainer.val_check_interval={every}); train at least {every} steps, "
                "validate more often, or select=final"]
    return []


def _resolved(cfg: DictConfig, key: str) -> Any:
    value = cfg[key]  # a scalar resolves on access; a group through to_container
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def check_config(cfg: DictConfig) -> None:
    """Raise one ValueError listing every bad key of ``cfg`` (resolved values), or return. The schema and
    the task's own cross-checks come from the task ``task.name`` names."""
    name = cfg.task.name
    if name not in TASKS:
        raise ValueError(f"invalid config:\n  task.name={name!r}: expected one of {', '.join(TASKS.names())}")
    task = TASKS[name](cfg)
    schema, run, errors, failed = task.schema, {}, [], set()
    for f in fields(schema):
        if f.name in cfg:
            try:
                run[f.name] = _resolved(cfg, f.name)
            except Exception as e:  # an interpolation to a missing key, a failing resolver
                errors.append(f"{f.name}: cannot resolve its interpolations: {str(e).splitlines()[0]}")
                failed.add(f.name)
    errors += [e for e in check_section(run, schema) if e.split(":")[0] not in failed]  # not "missing" too
    if not errors:
        errors = _cross_checks(run, task) + _validation_errors(cfg)
    if errors:
        count = f"{len(errors)} error{'s' * (len(errors) > 1)}"
        raise ValueError(f"invalid config ({count}):\n  " + "\n  ".join(errors))
    warn_about_machine(cfg)


def warn_about_machine(cfg: DictConfig) -> None:
    """Adapt to this machine a valid config that it would otherwise run many times slower than it should:
    bf16 autocast on a CPU that emulates bf16 gets fp32 GEMMs (``utils.machine.use_fp32_gemm``, the same
    run), or, where the user turned that off, a warning. Said once per process; the run goes on."""
    trainer = cfg.get("trainer") or {}
    accelerator, precision = str(trainer.get("accelerator", "auto")), str(trainer.get("precision", "32-true"))
    for say, message in ((log.info, use_fp32_gemm(accelerator, precision)),
                         (log.warning, slow_bf16_warning(accelerator, precision))):
        if message and message not in _WARNED:
            _WARNED.add(message)
            say(message)
