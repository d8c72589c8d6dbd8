"""The noise rule on constructed seed values: held, not held and inconclusive, for both kinds of claim."""

import pytest

from layerdrop.report.verdict import judge


def test_a_clear_improvement_is_held_and_its_reverse_not_held():
    baseline = [100.0, 101.0, 99.0]
    better = [90.0, 91.0, 89.0]  # perplexity: lower is better
    v = judge(better, baseline, higher_is_better=False)
    assert v.outcome == "held" and v.diff == pytest.approx(0.10)
    assert judge(baseline, better, higher_is_better=False).outcome == "not held"
    assert judge([30.0, 31.0, 29.5], [25.0, 25.5, 24.5], higher_is_better=True).outcome == "held"  # BLEU


def test_a_difference_within_twice_its_standard_error_is_inconclusive():
    # mean difference 2 (2%), seed std 3 on each side: se = sqrt(9/3 + 9/3) = 2.45 -> 2 < 4.9
    v = judge([97.0, 100.0, 97.0 + 3.0 * 2], [99.0, 102.0, 99.0 + 3.0 * 2], higher_is_better=False)
    assert v.outcome == "inconclusive" and v.diff > 0


def test_fewer_than_three_seeds_is_inconclusive_however_large_the_gap():
    v = judge([50.0, 51.0], [100.0, 100.0, 100.0], higher_is_better=False)
    assert v.outcome == "inconclusive" and "2 seed(s)" in v.reason and v.diff == pytest.approx(0.495)


def test_matches_holds_within_the_tolerance_and_fails_when_confidently_worse():
    other = [100.0, 100.2, 99.8]
    assert judge([100.6, 100.8, 100.4], other, higher_is_better=False, kind="matches").outcome == "held"
    assert judge([100.6, 100.8, 100.4], other, higher_is_better=False, kind="better").outcome == "not held"
    assert judge([105.0, 105.2, 104.8], other, higher_is_better=False, kind="matches").outcome == "not held"
    assert judge([101.0, 104.0, 98.0], other, higher_is_better=False, kind="matches").outcome == "inconclusive"


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind='same'"):
        judge([1.0] * 3, [1.0] * 3, True, kind="same")


def test_a_zero_baseline_is_judged_relative_to_the_pair_not_divided_by_zero():
    # a baseline pruned to one decoder layer can score exactly 0 BLEU
    v = judge([0.10, 0.12, 0.11], [0.0, 0.0, 0.0], higher_is_better=True)
    assert v.outcome == "held" and v.diff == pytest.approx(2.0)
    assert judge([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], higher_is_better=True).outcome == "inconclusive"
    assert judge([0.1], [0.0], higher_is_better=True).diff == pytest.approx(2.0)


def test_text_scores_closer_than_their_printed_resolution_are_no_difference():
    # Table 1's decoders pruned to one layer: 0.00001 BLEU against 0 printed "0.00 vs 0.00, +200%" before
    from layerdrop.report.verdict import SCORE_RESOLUTION, resolution

    assert resolution("test_bleu") == resolution("test_rougeL") == SCORE_RESOLUTION and resolution("test_ppl") == 0
    one_seed = judge([1e-5], [0.0], higher_is_better=True, resolution=SCORE_RESOLUTION)
    assert one_seed.outcome == "inconclusive" and one_seed.diff == 0.0
    seeds = judge([1e-5, 2e-5, 0.0], [0.0, 0.0, 0.0], higher_is_better=True, resolution=SCORE_RESOLUTION)
    assert seeds.outcome == "inconclusive" and seeds.diff == 0.0
    # without a resolution the same scores are a 200% win, and a real gap still counts with one
    assert judge([1e-5, 2e-5, 1e-5], [0.0] * 3, higher_is_better=True).outcome == "held"
    assert judge([0.10, 0.12, 0.11], [0.0] * 3, True, resolution=SCORE_RESOLUTION).diff == pytest.approx(2.0)


def test_the_pruned_curve_claims_read_bleu_at_its_resolution():
    from layerdrop.report.collect import depth_verdicts

    row = {1: {"test_bleu": 1e-5, "test_bleu_values": [1e-5, 2e-5, 1e-5]}}
    zero = {1: {"test_bleu": 0.0, "test_bleu_values": [0.0, 0.0, 0.0]}}
    outcome, detail = depth_verdicts(row, zero, "test_bleu", True, "decoder layers")
    assert outcome == "inconclusive" and "+0.0%" in detail
