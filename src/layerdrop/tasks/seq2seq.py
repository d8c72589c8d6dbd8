"""Sequence to sequence: translation (paper Table 1), summarisation and long-form QA (Table 3) are one task
with another metric, other data and other generation settings, not new modules.

One LightningModule (``lit/seq2seq.py``) and one beam-search ``Generator`` serve every such task. The
metric comes from ``task.metric`` (a name in ``TEXT_METRICS``), the generation settings from
``generate.*``. The data module holds text pairs and provides ``bos_id``, ``eos_id``,
``references(split)`` (the target texts, indexed by the batches' ``ids``) and ``decode(token_ids)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytorch_lightning as pl

from layerdrop.data.pair_batches import sample_batches
from layerdrop.lit.seq2seq import GenerationCurve
from layerdrop.metrics.bleu import detok_bleu, tokenized_bleu
from layerdrop.metrics.rouge import ROUGE_TYPES, rouge
from layerdrop.models.generate import Generator
from layerdrop.schema import MTRun, TextPairRun
from layerdrop.tasks.base import Task, register_task


@dataclass(frozen=True)
class TextMetric:
    """A corpus-level text metric: ``score(hypotheses, references)`` gives every name in ``names``."""

    score: Callable[[Sequence[str], Sequence[str]], dict[str, float]]
    names: tuple[str, ...]
    search: str  # the one a layer search maximises


def bleu_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacreBLEU on detokenized text, and fairseq's tokenized BLEU with compound splitting (the paper's)."""
    return {"bleu": detok_bleu(hypotheses, references), "bleu_tok": tokenized_bleu(hypotheses, references)}


#: task.metric -> how hypotheses are scored (every one is higher-is-better)
TEXT_METRICS = {
    "bleu": TextMetric(bleu_scores, ("bleu", "bleu_tok"), search="bleu"),
    "rouge": TextMetric(rouge, ROUGE_TYPES, search="rougeL"),
}
GENERATOR_SETTINGS = ("beam", "lenpen", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram")  # generate.* keys
#: ... and their values when a config leaves them out (a row records them only when they differ, so rows made
#: before they existed still match)
GENERATOR_DEFAULTS = {"min_len": 1, "no_repeat_ngram": 0}


class Seq2SeqTask(Task):
    """An encoder-decoder task scored by teacher-forced loss and perplexity, and by generating every
    evaluated sentence (or a seeded subset, ``generate.max_sentences``) and scoring it with ``task.metric``."""

    arch = "mt"
    default_metric: ClassVar[str] = "bleu"
    higher_is_better = True
    sweep_metric = "valid_loss"
    settings_key = "generate"
    generates = True

    @property
    def metric_name(self) -> str:
        return str(self.cfg.task.get("metric") or self.default_metric)

    @property
    def metric(self) -> TextMetric:
        if self.metric_name not in TEXT_METRICS:
            raise ValueError(f"task.metric={self.metric_name!r}: expected one of {', '.join(TEXT_METRICS)}")
        return TEXT_METRICS[self.metric_name]

    @property
    def eval_metrics(self) -> tuple[str, ...]:
        return (*self.metric.names, "loss", "ppl")

    @property
    def search_metric(self) -> str:
        return self.metric.search

    def eval_settings(self) -> dict[str, Any]:
        """The generation settings; ``max_sentences`` (with its seed) and a non-default metric only when set,
        so rows made before they existed still match."""
        generate = self.cfg.generate
        settings = {k: generate.get(k, GENERATOR_DEFAULTS.get(k)) for k in GENERATOR_SETTINGS}
        settings = {k: v for k, v in settings.items() if k not in GENERATOR_DEFAULTS or v != GENERATOR_DEFAULTS[k]}
        if generate.get("max_sentences") is not None:
            settings.update(max_sentences=int(generate.max_sentences), seed=int(generate.seed))
        if self.metric_name != self.default_metric:
            settings["metric"] = self.metric_name
        return settings

    def generator(self, datamodule) -> Generator:
        """The beam search of the configured ``generate.*`` settings, with the data's special tokens."""
        settings = self.eval_settings()
        return Generator(bos=datamodule.bos_id, eos=datamodule.eos_id,
                         **{k: settings[k] for k in GENERATOR_SETTINGS if k in settings})

    def evaluate(self, lit: pl.LightningModule, datamodule, split: str, trainer: pl.Trainer) -> dict[str, Any]:
        settings = self.eval_settings()
        lit.set_generation(self.generator(datamodule), references=datamodule.references(split), decode=datamodule.decode,
                           score=self.metric.score, max_sentences=settings.get("max_sentences"),
                           seed=settings.get("seed", 0))
        row = super().evaluate(lit, datamodule, split, trainer)
        sentences, seconds = len(lit.hypotheses), lit.generate_seconds
        row[f"{split}_sentences"] = sentences
        row[f"{split}_generate_s"] = round(seconds, 2)
        row[f"{split}_sentences_per_s"] = round(sentences / max(seconds, 1e-9), 2)
        return row

    def fit_callbacks(self, datamodule) -> list[pl.Callback]:
        """With ``generate.valid_sentences``: the text metric on a seeded subset of valid at every validation."""
        count = self.cfg.generate.get("valid_sentences")
        if count is None:
            return []
        batches = sample_batches(datamodule.datasets["valid"], int(count), datamodule.pad_id, datamodule.bos_id,
                                 datamodule.eos_id, seed=int(self.cfg.generate.get("seed", 0)))
        return [GenerationCurve(self.generator(datamodule), batches, datamodule.references("valid"), datamodule.decode,
                                self.metric.score)]

    def config_errors(self, run: dict) -> list[str]:
        data, errors = run["data"], []
        if self.metric_name not in TEXT_METRICS:
            errors.append(f"task.metric={self.metric_name!r}: expected one of {', '.join(TEXT_METRICS)}")
        longest = data.get("max_source_len", 0) + data.get("max_target_len", 0)
        for name in ("max_tokens", "eval_max_tokens"):
            if data.get(name) is not None and data[name] < longest:
                errors.append(f"data.{name}={data[name]}: must be >= data.max_source_len + "
                              f"data.max_target_len = {longest} (the longest pair must fit in a batch)")
        return errors


@register_task("mt")
class TranslationTask(Seq2SeqTask):
    """English-German translation (WMT16 at paper scale, Debian pairs at cpu scale), scored by BLEU."""

    schema = MTRun


@register_task("sum")
class SummarizationTask(Seq2SeqTask):
    """Summarisation (CNN/DailyMail at paper scale, Debian descriptions -> synopses at cpu scale), scored by
    ROUGE on summaries generated with the task's generation settings (conf/task_generate)."""

    schema = TextPairRun
    default_metric = "rouge"


@register_task("qa")
class QATask(Seq2SeqTask):
    """Long-form question answering (ELI5 at paper scale, dictionary definitions at cpu scale), scored by
    ROUGE on generated answers."""

    schema = TextPairRun
    default_metric = "rouge"
