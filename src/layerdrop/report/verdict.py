"""Held, not held or inconclusive: one stated noise rule for every claim an artefact tests.

A claim compares a *claimed* row (say, the LayerDrop model pruned to 3 layers) with an *other* row
(the baseline pruned the same way), each measured over seeds. Differences are relative to the other
row's mean and signed so that positive means "the claimed row is better" (lower perplexity, higher
BLEU). With d the mean relative difference and se its standard error (Welch: the two rows' seed
variances added, each over its seed count):

- kind ``better`` (C1, C7, ...): **held** if d > 2 se, **not held** if d < -2 se;
- kind ``matches`` ("matches or beats", C2): **held** if d - 2 se > -tolerance (confidently no more than
  ``tolerance`` worse), **not held** if d + 2 se < -tolerance (confidently worse by more);
- otherwise, or with fewer than ``MIN_SEEDS`` seeds on either side, **inconclusive**.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

MIN_SEEDS = 3
Z = 2.0
MATCH_TOLERANCE = 0.01  # "matches": within 1% of the other row
#: text scores (BLEU, ROUGE) are read to 0.01 points: a smaller difference of means is no difference (a
#: translator pruned to one decoder layer at 0.00001 BLEU does not beat one at 0 by 200%)
SCORE_RESOLUTION = 0.01
KINDS = ("better", "matches")
RULE = (f"held when the mean relative difference exceeds {Z:g} standard errors (Welch) in the claimed "
        f"direction, not held when it exceeds them the other way, otherwise inconclusive; \"matches\" claims "
        f"allow {100 * MATCH_TOLERANCE:g}%; at least {MIN_SEEDS} seeds per row")


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "held" | "not held" | "inconclusive"
    diff: float | None  # mean relative difference, positive = the claimed row is better
    se: float | None
    seeds: tuple[int, int]
    reason: str

    def describe(self) -> str:
        if self.diff is None:
            return f"{self.outcome} ({self.reason})"
        if self.se is None or math.isnan(self.se):
            return f"{self.outcome}: {100 * self.diff:+.1f}% ({self.reason})"
        return (f"{self.outcome}: {100 * self.diff:+.1f}% +- {100 * self.se:.1f}% (seeds {self.seeds[0]} vs "
                f"{self.seeds[1]})")


def _scale(claimed: list[float], other: list[float]) -> float:
    """What a difference is relative to: the other row's mean; where that is 0 (a pruned translator that
    scores 0 BLEU), the mean of the two rows; 1 when both are 0 (no difference to scale)."""
    base = abs(statistics.mean(other))
    return base or abs(statistics.mean(claimed) + statistics.mean(other)) / 2 or 1.0


def resolution(metric: str) -> float:
    """The smallest difference of means that counts for ``metric`` (a column name such as ``test_bleu``)."""
    return SCORE_RESOLUTION if "bleu" in metric or "rouge" in metric else 0.0


def _difference(claimed: list[float], other: list[float], sign: float, resolution: float) -> float:
    """The signed mean relative difference; 0 when the means differ by less than ``resolution``."""
    delta = statistics.mean(claimed) - statistics.mean(other)
    return 0.0 if abs(delta) < resolution else sign * delta / _scale(claimed, other)


def judge(claimed: list[float], other: list[float], higher_is_better: bool, kind: str = "better",
          tolerance: float = MATCH_TOLERANCE, resolution: float = 0.0) -> Verdict:
    """The verdict on "``claimed`` is better than (or, kind="matches", at least as good as) ``other``";
    means closer than ``resolution`` (see ``resolution()``) count as equal."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: must be one of {KINDS}")
    seeds = (len(claimed), len(other))
    sign = 1.0 if higher_is_better else -1.0
    if min(seeds) < MIN_SEEDS:
        diff = _difference(claimed, other, sign, resolution) if claimed and other else None
        return Verdict("inconclusive", diff, None if diff is None else math.nan, seeds,
                       f"{min(seeds)} seed(s); the rule needs {MIN_SEEDS}")
    scale = _scale(claimed, other)
    diff = _difference(claimed, other, sign, resolution)
    se = math.sqrt(statistics.variance(claimed) / len(claimed) + statistics.variance(other) / len(other)) / scale
    if kind == "better":
        held, not_held = diff > Z * se, diff < -Z * se
    else:
        held, not_held = diff - Z * se > -tolerance, diff + Z * se < -tolerance
    outcome = "held" if held else "not held" if not_held else "inconclusive"
    reason = "beyond the noise" if outcome != "inconclusive" else "within the noise"
    return Verdict(outcome, diff, se, seeds, reason)


def combine(verdicts: list[Verdict]) -> str:
    """One outcome for a claim made "at every depth": held if held at every depth, not held if not held at
    any depth, otherwise inconclusive."""
    outcomes = [v.outcome for v in verdicts]
    if outcomes and all(o == "held" for o in outcomes):
        return "held"
    return "not held" if "not held" in outcomes else "inconclusive"


#: the paper's claims (../shared/PAPER.md section 7), in our words
CLAIMS = {
    "C1": "pruned without fine-tuning, a LayerDrop model beats the baseline pruned the same way, at every depth",
    "C2": "the pruned LayerDrop model matches or beats models of that depth trained from scratch",
    "C3": "every-other pruning is hard to beat; first or last half only is much worse",
    "C4": "sub-layers and whole layers are about equal LayerDrop targets; heads alone are worst",
    "C5": "layers near the input and the output matter most",
    "C6": "the more you will prune, the higher the training drop rate should be",
    "C7": "LayerDrop improves the full model",
    "C8": "LayerDrop lets deeper models train stably and do better; the 12-encoder MT baseline diverges",
    "C9": "training at p = 0.5 is almost 2x faster",
    "C10": "a pruned, fine-tuned LayerDrop encoder beats BERT / DistilBERT of that depth",
    "C11": "fine-tuning a pruned model helps only marginally",
}


@dataclass(frozen=True)
class ClaimResult:
    """One claim as one artefact tests it: the outcome under the noise rule and the numbers behind it."""
    claim: str  # "C1" ... "C11", or "precondition"
    artefact: str
    statement: str
    outcome: str  # held | not held | inconclusive
    detail: str

    @classmethod
    def of(cls, claim: str, artefact: str, statement: str, outcome: Verdict | str, detail: str) -> ClaimResult:
        """A claim result from a ``Verdict`` (its outcome) or an outcome already decided."""
        return cls(claim, artefact, statement, outcome if isinstance(outcome, str) else outcome.outcome, detail)

    def line(self) -> str:
        return f"- **{self.outcome}** ({self.claim}): {self.statement}. {self.detail}"


def _noise(diff: float, se: float, seeds: tuple[int, int], held: bool, not_held: bool) -> Verdict:
    outcome = "held" if held else "not held" if not_held else "inconclusive"
    return Verdict(outcome, diff, se, seeds, "beyond the noise" if outcome != "inconclusive" else "within the noise")


def judge_equal(a: list[float], b: list[float], tolerance: float) -> Verdict:
    """"``a`` and ``b`` are about equal": held if the relative difference is confidently within
    ``tolerance`` (|d| + 2 se < tolerance), not held if confidently outside (|d| - 2 se > tolerance)."""
    v = judge(a, b, higher_is_better=True)
    if v.se is None or math.isnan(v.se):
        return v
    d = abs(v.diff)
    return _noise(v.diff, v.se, v.seeds, d + Z * v.se < tolerance, d - Z * v.se > tolerance)


def judge_small_gain(claimed: list[float], other: list[float], higher_is_better: bool, tolerance: float) -> Verdict:
    """"``claimed`` gains little over ``other``": held if its relative gain is confidently under
    ``tolerance`` (a loss counts as little), not held if confidently over."""
    v = judge(claimed, other, higher_is_better)
    if v.se is None or math.isnan(v.se):
        return v
    return _noise(v.diff, v.se, v.seeds, v.diff + Z * v.se < tolerance, v.diff - Z * v.se > tolerance)


def judge_threshold(samples: list[float], threshold: float) -> Verdict:
    """"the quantity exceeds ``threshold``" from one sample per seed (say, a speed-up): held if the mean
    is confidently above (mean - 2 se > threshold), not held if confidently below. ``diff`` is the mean
    relative to the threshold."""
    n = len(samples)
    if n < MIN_SEEDS:
        diff = statistics.mean(samples) / threshold - 1 if samples else None
        return Verdict("inconclusive", diff, math.nan if samples else None, (n, n),
                       f"{n} seed(s); the rule needs {MIN_SEEDS}")
    mean, se = statistics.mean(samples), statistics.stdev(samples) / math.sqrt(n)
    return _noise(mean / threshold - 1, se / threshold, (n, n), mean - Z * se > threshold, mean + Z * se < threshold)
