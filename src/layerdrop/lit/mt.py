"""The translation module's old import path: ``task.lit_module=layerdrop.lit.mt.MTLitModule`` overrides and
scripts importing from here keep working. The module is ``lit/seq2seq.py``, shared by every seq2seq task."""

from layerdrop.lit.seq2seq import IGNORE, label_smoothed_nll
from layerdrop.lit.seq2seq import Seq2SeqLitModule as MTLitModule

__all__ = ["IGNORE", "MTLitModule", "label_smoothed_nll"]
