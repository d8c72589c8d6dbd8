"""ROUGE for summarization and long-form QA, through Google's ``rouge-score`` package.

``rouge`` gives ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F1, x100, with the Porter stemmer on (as
the paper's CNN/DailyMail and ELI5 numbers and most summarization papers report them):

- ROUGE-L is the longest common subsequence of the two texts taken whole.
- ROUGE-Lsum is the summary-level LCS (Lin 2004, section 3.2): for each reference sentence, the union
  of its LCS with every hypothesis sentence. ``rouge-score`` reads sentences as lines, so both texts
  are first split one sentence a line by ``split_sentences``, as the summarization papers' scripts do.

The corpus score is the plain mean of the per-pair F1 values. It is deterministic, unlike
``rouge_score.scoring.BootstrapAggregator``, whose ``mid`` is the median of resampled means and
differs from this mean only by resampling noise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rouge_score.rouge_scorer import RougeScorer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at . ! or ?, optionally followed by closing quotes or brackets, then whitespace.
# Abbreviations ("e.g. this") split too; for ROUGE-Lsum that only moves an LCS boundary.
_SENTENCE_END = re.compile(r"([.!?][\"'”’)\]]*)\s+")


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`: split after . ! ? (and closing quotes) before whitespace, and at newlines."""
    marked = _SENTENCE_END.sub("\\1\n", text.strip())
    return [line.strip() for line in marked.split("\n") if line.strip()]


def rouge(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean per-pair F1 x100 of ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum, one reference per hypothesis.

    An empty hypothesis scores 0 against any reference.
    """
    if len(hypotheses) != len(references):
        raise ValueError(
            f"ROUGE needs one reference per hypothesis: got {len(hypotheses)} hypotheses, "
            f"{len(references)} references"
        )
    if not references:
        raise ValueError("ROUGE of an empty corpus is undefined")
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hyp, ref in zip(hypotheses, references):
        # rouge-score splits Lsum at newlines, and elsewhere treats newlines as spaces.
        target, prediction = "\n".join(split_sentences(ref)), "\n".join(split_sentences(hyp))
        scores = scorer.score(target, prediction)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: 100 * total / len(references) for name, total in totals.items()}
