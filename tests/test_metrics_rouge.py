"""ROUGE: agreement with rouge-score used directly, a hand-computed case, Lsum's sentence splitting."""

from __future__ import annotations

import pytest
from rouge_score.rouge_scorer import RougeScorer

from layerdrop.metrics.rouge import ROUGE_TYPES, rouge, split_sentences

PAIRS = [  # (hypothesis, reference)
    ("the cat sat on the mat", "a cat was sitting on the mat"),
    ("Real-time strategy game of ancient warfare.", "real-time strategy game"),
    ("Library for parsing JSON. Fast and small.", "fast JSON parsing library"),
    ("", "an empty hypothesis scores zero"),
]


def test_rouge_matches_rouge_score_mean_f1():
    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    hyps, refs = zip(*PAIRS)
    got = rouge(list(hyps), list(refs))
    for name in ("rouge1", "rouge2", "rougeL"):
        direct = [scorer.score(ref, hyp)[name].fmeasure for hyp, ref in PAIRS]
        assert got[name] == pytest.approx(100 * sum(direct) / len(direct))
    # Lsum with the texts split one sentence a line, as rouge() does
    direct = [
        scorer.score("\n".join(split_sentences(ref)), "\n".join(split_sentences(hyp)))["rougeLsum"].fmeasure
        for hyp, ref in PAIRS
    ]
    assert got["rougeLsum"] == pytest.approx(100 * sum(direct) / len(direct))
    assert set(got) == set(ROUGE_TYPES)


def test_rouge_by_hand():
    # hyp "the cat sat", ref "the cat sat on the mat" (lower-cased, punctuation-free tokens):
    # ROUGE-1: 3 shared unigrams; P = 3/3, R = 3/6, F = 2PR/(P+R) = 2 * 0.5 / 1.5 = 2/3.
    # ROUGE-2: hyp bigrams {the cat, cat sat} both in ref's 5; P = 2/2, R = 2/5, F = 0.8/1.4 = 4/7.
    # ROUGE-L: LCS "the cat sat" = 3, the same P and R as ROUGE-1.
    got = rouge(["The cat sat."], ["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(100 * 2 / 3)
    assert got["rouge2"] == pytest.approx(100 * 4 / 7)
    assert got["rougeL"] == pytest.approx(100 * 2 / 3)


def test_rouge_stems():
    # Porter stemming makes "cats running" and "cat runs" the same two tokens.
    assert rouge(["cats running"], ["cat runs"])["rouge1"] == pytest.approx(100.0)


def test_rouge_lsum_scores_sentences_separately():
    # Sentences swapped: the whole-text LCS is one sentence (3 of 6 tokens), but each reference
    # sentence finds itself among the hypothesis sentences, so Lsum is perfect.
    got = rouge(["d e f. a b c."], ["a b c. d e f."])
    assert got["rougeL"] == pytest.approx(50.0)
    assert got["rougeLsum"] == pytest.approx(100.0)


def test_split_sentences():
    text = 'It works. Does it? Yes! He said "done." Then\nnew line e.g. here'
    assert split_sentences(text) == [
        "It works.",
        "Does it?",
        "Yes!",
        'He said "done."',
        "Then",
        "new line e.g.",
        "here",
    ]
    assert split_sentences("  ") == []


def test_rouge_mismatched_counts_name_both():
    with pytest.raises(ValueError, match="got 2 hypotheses, 1 references"):
        rouge(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty corpus"):
        rouge([], [])
