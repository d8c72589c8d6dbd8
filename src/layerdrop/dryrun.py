"""Dry run of every paper-scale experiment, on CPU, in minutes (`make paper-dryrun`).

For each ``conf/experiment/*.yaml`` composed with ``scale=paper`` it checks that
(a) the config composes, (b) the full-size model builds on the meta device (its parameter count, as
``python -m layerdrop.params`` prints it), and (c) a width-shrunk copy trains two steps and evaluates
through ``layerdrop.train.train(cfg)``: the paper's task module, architecture flags, optimizer,
scheduler, accumulation, checkpoint averaging and its ``source=hub`` data module, reading small local
files in the hub's layout (``dryrun_hub.py``: Wikitext-style parquet built from the news articles; WMT-style JSON lines
built from the Debian en-de pairs; CNN/DailyMail- and ELI5-style JSON lines built from the Debian
summarisation and QA pairs) instead of the hub.

    python -m layerdrop.dryrun
    python -m layerdrop.dryrun --experiments table2_lm table1_mt --out /tmp/dryrun

Only sizes change (see ``shrink_overrides``). Depth stays the paper's (16/40 LM layers, 6/12
encoder layers). Precision is bf16-mixed: the paper's 16-mixed has no CPU kernel in Lightning.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from layerdrop.config import CONF_DIR, load_config
from layerdrop.dryrun_hub import lm_files, mt_files, qa_files, reuse, sum_files
from layerdrop.params import count_for
from layerdrop.tasks import get_task
from layerdrop.train import train

EXPERIMENTS = tuple(sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
#: sweep axes of experiments/<name>.sh that reach code the experiment file alone does not
#: (Figure 4's learned rates and data-driven pruning, Figure 5's random sub-networks)
SWEEP_AXES = {
    "figure4_lm": ["layerdrop.learned=true", "prune.strategies=[data_driven,every_other]"],
    "figure5_lm": ["prune.strategies=[random]", "prune.samples=2", "prune.splits=[valid]"],
}
STEPS = 2  # optimizer steps of the shrunk copy (warmup 1 < 2)
MAX_ACCUMULATE = 3  # the LM keeps the paper's 3; translation's 16 becomes 3
LM_BLOCK = 64  # tokens per block (paper: 3072)
MT_VOCAB = 512  # joint BPE size (paper: 32768)
MT_TOKENS = 512  # padded tokens per batch (paper: 3584), sentences cut at 64 (paper: 1024)
GENERATE_SENTENCES = 4  # beam search + BLEU on this many test sentences
WIDTH = ["model.d_model=32", "model.n_heads=2", "model.d_ff=64"]
GPU = ["trainer.accelerator=gpu", "trainer.precision=16-mixed"]  # the paper's precision, on one GPU


@contextmanager
def datasets_cache(path: Path):
    """Point `datasets` at a cache of our own while the local files load (keeps ~/.cache clean)."""
    import datasets

    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = path
    try:
        yield
    finally:
        datasets.config.HF_DATASETS_CACHE = old


@contextmanager
def quiet(verbose: bool):
    """Lightning's per-Trainer banners and the data set progress bars, hidden unless --verbose."""
    import datasets

    loggers = [
        logging.getLogger(name) for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")
    ]
    levels = [logger.level for logger in loggers]
    bars = datasets.utils.logging.is_progress_bar_enabled()
    if not verbose:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


@contextmanager
def one_thread():
    """Width-32 tensors gain nothing from intra-op threads, and on a busy machine their spinning
    made beam search 15x slower (2 threads against 1, measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------------
# The shrunk copy


def hub_files_override(files: dict[str, str]) -> str:
    """``data.hub_data_files={train:'...',...}`` in Hydra's override grammar (quoted paths)."""
    for path in files.values():
        if "'" in path:
            raise ValueError(f"a path with a quote cannot be passed to Hydra: {path!r}")
    return "data.hub_data_files={" + ",".join(f"{split}:'{path}'" for split, path in files.items()) + "}"


def shrink_overrides(full: DictConfig, files: dict[str, str], run_root: Path, data_dir: Path) -> list[str]:
    """Size, device and path overrides that turn a composed paper config into its CPU dry run.
    The model's vocabulary is set later, once the tokenizer exists (`vocab_overrides`)."""
    accumulate = min(int(full.trainer.accumulate_grad_batches), MAX_ACCUMULATE)
    half = max(1, get_task(full).stacks[full.prune.get("stack", "decoder")] // 2)
    out = [
        *WIDTH,
        "logger=none",
        f"paths.runs_dir={run_root / 'runs'}",
        "paths.records_dir=null",  # a dry run's records are not results
        f"paths.log_dir={run_root / 'logs'}",
        f"paths.data_dir={data_dir}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.strategy=auto",
        "trainer.precision=bf16-mixed",
        f"trainer.max_steps={STEPS}",
        f"trainer.accumulate_grad_batches={accumulate}",
        f"trainer.val_check_interval={STEPS * accumulate}",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "optim.scheduler.warmup_steps=1",
        "checkpoint_every=1",
        "data.num_workers=0",
        "data.hub_name=null",
        hub_files_override(files),
        f"generate.max_sentences={GENERATE_SENTENCES}",
        f"prune.depths=[{', '.join(str(d) for d in sorted({half, max(1, half // 2)}))}]",
    ]
    if full.optim.get("average"):
        out += ["optim.average.last=2", "optim.average.every=1"]
    if full.task.name == "mlm":  # a BPE as small as the translation dry run's; <mask> after it
        out += ["data.hub_path=parquet", f"data.block_size={LM_BLOCK}", f"data.vocab_size={MT_VOCAB}",
                f"model.vocab_size={MT_VOCAB + 1}", f"model.max_len={LM_BLOCK}"]
    elif full.task.name == "lm":
        out += ["data.hub_path=parquet", f"data.block_size={LM_BLOCK}"]
        if full.data.get("context_window") is not None:  # the same share of the block as the paper's
            context = int(full.data.context_window) * LM_BLOCK // int(full.data.block_size)
            out.append(f"data.context_window={context}")
    else:
        out += [
            "data.hub_path=json",
            f"data.vocab_size={MT_VOCAB}",
            f"data.max_tokens={MT_TOKENS}",
            "data.max_source_len=64",
            f"data.max_target_len={64 if full.task.name == 'mt' else 128}",  # answers and summaries run longer
            "generate.valid_sentences=2",  # the valid BLEU/ROUGE curve's generation runs in the dry run too
        ]
    return out


def vocab_overrides(full: DictConfig, cfg: DictConfig) -> list[str]:
    """The LM's word vocabulary is every train word, known once the corpus is built: size the model
    to it (padded to a multiple of 8, as fairseq's dictionary) and scale the adaptive cutoffs in the
    paper's proportion. Translation sizes its model from ``data.vocab_size`` already."""
    if "cutoffs" not in cfg.model:
        return []
    datamodule = get_task(cfg).build_data()
    datamodule.prepare_data()
    datamodule.setup("fit")
    vocab = -(-datamodule.vocab_size // 8) * 8
    cutoffs = [max(1, round(c * vocab / full.model.vocab_size)) for c in full.model.cutoffs]
    if any(b <= a for a, b in zip([0, *cutoffs], [*cutoffs, vocab], strict=True)):
        raise ValueError(
            f"a word vocabulary of {vocab} is too small for cutoffs scaled from {list(full.model.cutoffs)}"
        )
    return [f"model.vocab_size={vocab}", f"model.cutoffs={cutoffs}"]


@dataclass
class DryRun:
    experiment: str
    full_params: int | None = None
    shrunk_params: int | None = None
    steps: int | None = None
    seconds: float | None = None
    summary: str = ""
    error: str | None = None

    def line(self) -> str:
        if self.full_params is None:
            return f"{self.experiment:<18} compose/meta FAILED"
        head = f"{self.experiment:<18} composed OK  full-size {self.full_params:>12,} params"
        if self.error is not None:
            return f"{head}  shrunk step FAILED"
        return (
            f"{head}  shrunk step OK ({self.shrunk_params:,} params, {self.steps} steps, {self.summary}) "
            f"{self.seconds:.1f} s"
        )


def check_record(record: dict, task: str) -> str:
    """What the dry run must have produced: the steps, and a finite score for every evaluated row."""
    if record["train"]["steps"] != STEPS:
        raise RuntimeError(f"trained {record['train']['steps']} steps, expected {STEPS}")
    if not record["eval"]:
        raise RuntimeError("no evaluation rows in the record")
    metric = "ppl" if task in ("lm", "mlm") else "loss"
    for row in record["eval"]:
        for key in (k for k in row if k.endswith(f"_{metric}")):
            if not math.isfinite(row[key]):
                raise RuntimeError(f"{row['strategy']} {row['layers']}: {key} = {row[key]}")
    full = next(r for r in record["eval"] if r["strategy"] == "none")
    split = "valid" if "valid_loss" in full else "test"
    scores = ", ".join(
        f"{split} {m} {full[f'{split}_{m}']:.4g}" for m in ("ppl", "bleu", "rougeL") if f"{split}_{m}" in full
    )
    curve = ""
    if task not in ("lm", "mlm"):  # the valid BLEU/ROUGE curve (generate.valid_sentences) must have been drawn
        text = {k for point in record["train"]["curve"] for k in point} & {"val/bleu", "val/rougeL"}
        if not text:
            raise RuntimeError(f"no valid BLEU/ROUGE point in the learning curve {record['train']['curve']}")
        curve = f", valid {'/'.join(sorted(k[4:] for k in text))} curve"
    return f"{len(record['eval'])} eval rows, full model {scores}{curve}"


def dry_run(result: DryRun, out: Path, files: dict[str, dict[str, str]], extra: list[str]) -> None:
    """Fills ``result`` stage by stage, so a failure still shows how far the experiment got."""
    experiment = result.experiment
    paper = [f"experiment={experiment}", "scale=paper", *SWEEP_AXES.get(experiment, [])]
    full = load_config(paper)  # (a)
    result.full_params = count_for(paper)  # (b)
    start = time.perf_counter()
    run_root = out / "runs" / experiment
    shutil.rmtree(run_root, ignore_errors=True)  # a fresh run each time, never a reuse of an earlier one
    shrunk = [*paper, *shrink_overrides(full, files[full.task.name], run_root, out / "data")]
    cfg = load_config([*shrunk, *extra])
    cfg = load_config([*shrunk, *vocab_overrides(full, cfg), *extra])
    record = train(cfg)  # (c)
    result.summary = check_record(record, full.task.name)
    result.seconds = time.perf_counter() - start
    result.steps, result.shrunk_params = record["train"]["steps"], record["train"]["n_params"]


def run_all(
    experiments: list[str], out: Path, extra: list[str] | None = None, verbose: bool = False,
    hub: Path | None = None,
) -> list[DryRun]:
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown:
        raise ValueError(f"unknown experiments {unknown}; allowed: {', '.join(EXPERIMENTS)}")
    raw_dir = Path(load_config([]).paths.data_dir) / "raw"  # where make data-lm / data-mt keep the sources
    for folder in ("data", "hf"):  # corpora are keyed by file names, not contents: never reuse them
        shutil.rmtree(out / folder, ignore_errors=True)
    tasks = {load_config([f"experiment={e}"]).task.name for e in experiments}
    files = {}
    hub = hub or out / "hub"
    if tasks & {"lm", "mlm"}:  # the masked LM pretrains on the LM's text
        files["lm"] = files["mlm"] = reuse(hub / "wikitext", ".parquet") or lm_files(raw_dir, hub / "wikitext")
    if "mt" in tasks:
        files["mt"] = reuse(hub / "wmt", ".jsonl") or mt_files(raw_dir, hub / "wmt")
    if "sum" in tasks:
        files["sum"] = reuse(hub / "cnn_dailymail", ".jsonl") or sum_files(raw_dir, hub / "cnn_dailymail")
    if "qa" in tasks:
        files["qa"] = reuse(hub / "eli5", ".jsonl") or qa_files(raw_dir, hub / "eli5")
    results = []
    with datasets_cache(out / "hf"), one_thread(), quiet(verbose):
        for experiment in experiments:
            result = DryRun(experiment)
            try:
                dry_run(result, out, files, list(extra or []))
            except Exception as error:  # report it, then go on to the next experiment
                result.error = "".join(traceback.format_exception(error))
            print(result.line(), flush=True)
            results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compose, size and dry-run every paper-scale experiment on CPU."
    )
    parser.add_argument(
        "--experiments",
        nargs="+",
        default=list(EXPERIMENTS),
        choices=EXPERIMENTS,
        metavar="NAME",
        help=f"default: all of {', '.join(EXPERIMENTS)}",
    )
    parser.add_argument(
        "--out", default=None, help="keep the files, runs and logs here (default: a temp folder)"
    )
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra Hydra override applied to every shrunk run (repeatable)",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="keep Lightning's and datasets' progress output"
    )
    parser.add_argument(
        "--hub", default=None, metavar="DIR",
        help="write the hub-layout files here, or reuse the ones an earlier run wrote (default: under --out)",
    )
    parser.add_argument(
        "--gpu", action="store_true",
        help="train on CUDA in the paper's precision (16-mixed, with a loss scaler) instead of CPU bf16",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="layerdrop-dryrun-") as tmp:
        extra = [*(GPU if args.gpu else []), *args.override]
        hub = Path(args.hub).resolve() if args.hub else None
        results = run_all(args.experiments, Path(args.out or tmp), extra, args.verbose, hub)
    failed = [r for r in results if r.error is not None]
    for r in failed:
        print(f"\n--- {r.experiment} failed ---\n{r.error}", file=sys.stderr)
    print(f"{len(results) - len(failed)}/{len(results)} paper experiments passed the dry run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
