"""BLEU, two ways (both case-sensitive, corpus-level, through sacrebleu):

- ``detok_bleu``: sacrebleu's standard score on detokenized text (its ``13a`` tokenizer); the
  number to compare across papers. Equal to ``sacrebleu REF -i HYP``.
- ``tokenized_bleu``: the paper's Table 1 variant, "tokenized BLEU with compound splitting"
  (fairseq's ``compound_split_bleu.sh``): hyphenated compounds are split as
  ``a ##AT##-##AT## b`` in hypotheses and references before scoring. fairseq applies this to
  Moses-tokenized text; Moses is not installable offline here, so the text is tokenized with
  sacrebleu's ``13a`` tokenizer (mteval's rules) first. Scores are comparable in kind, not equal
  to the paper's to the decimal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sacrebleu.metrics import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

_COMPOUND = re.compile(r"(\S)-(\S)")


def _check(hyps: Sequence[str], refs: Sequence[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"BLEU needs one reference per hypothesis: got {len(hyps)} hypotheses, {len(refs)} references")
    if not refs:
        raise ValueError("BLEU of an empty corpus is undefined")


def detok_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    _check(hyps, refs)
    return BLEU().corpus_score(list(hyps), [list(refs)]).score


def compound_split(line: str) -> str:
    """fairseq's ``perl -ple 's{(\\S)-(\\S)}{$1 ##AT##-##AT## $2}g'``."""
    return _COMPOUND.sub(r"\1 ##AT##-##AT## \2", line)


def tokenized_bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    _check(hyps, refs)
    tok = Tokenizer13a()
    h = [compound_split(tok(x.strip())) for x in hyps]
    r = [compound_split(tok(x.strip())) for x in refs]
    return BLEU(tokenize="none", force=True).corpus_score(h, [r]).score
