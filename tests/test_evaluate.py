"""mlxllm.evaluate: n-gram baselines checked by hand, compressors, the loss and its
interval, where the loss is, calibration and matching statistics."""

from __future__ import annotations

import math
import random

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxllm.evaluate import (
    CHAR_CLASSES,
    NGramCounts,
    NGramModel,
    baselines,
    bootstrap_interval,
    calibration_table,
    char_classes,
    char_ids,
    compressor_bits_per_char,
    expected_calibration_error,
    longest_match,
    match_lengths,
    score_text,
    seen_ngram_share,
    speech_openers,
    token_losses,
    top_predictions,
)
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import BPETokenizer

TOY = "aabab"
SENTENCE = "the cat sat on the mat; the dog sat on the log."


def prob(model: NGramModel, context: str, char: str) -> float:
    return float(model.distribution(context)[model.vocab.index(char)])


def toy_model(smoothing: str, order: int, k: float = 1.0) -> NGramModel:
    return NGramModel(NGramCounts(TOY, order), order, smoothing, k)


@pytest.mark.parametrize("smoothing", ["add_k", "witten_bell", "kneser_ney"])
def test_every_distribution_sums_to_one(smoothing: str) -> None:
    counts = NGramCounts(SENTENCE, 4)
    seen = {SENTENCE[i:i + n] for n in range(4) for i in range(len(SENTENCE) - n + 1)}
    for order in range(1, 5):
        model = NGramModel(counts, order, smoothing, k=0.5)
        for context in seen | {"ggg", "gg.", "."}:  # "ggg" never occurs
            probs = model.distribution(context)
            assert probs.shape == (len(counts.vocab),)
            assert (probs > 0).all()
            assert abs(probs.sum() - 1) < 1e-12, (order, context)


def test_kneser_ney_by_hand() -> None:
    # "aabab": bigrams aa 1, ab 2, ba 1, so D2 = n1 / (n1 + 2 n2) = 2 / (2 + 2) = 1/2.
    # Continuation counts of unigrams (distinct characters before): a after a and b -> 2,
    # b after a -> 1; total 3, two types; D1 = 1 / (1 + 2 * 1) = 1/3.
    # p1(a) = (2 - 1/3 + 1/3 * 2 * 1/2) / 3 = 2/3 and p1(b) = 1/3.
    # p(a | b) = (max(1 - 1/2, 0) + 1/2 * 1 * 2/3) / 1 = 5/6.
    # p(b | a) = (2 - 1/2 + 1/2 * 2 * 1/3) / 3 = 11/18; p(a | a) = (1/2 + 2/3) / 3 = 7/18.
    model = toy_model("kneser_ney", 2)
    assert prob(model, "b", "a") == pytest.approx(5 / 6, abs=1e-12)
    assert prob(model, "b", "b") == pytest.approx(1 / 6, abs=1e-12)
    assert prob(model, "a", "b") == pytest.approx(11 / 18, abs=1e-12)
    assert prob(model, "a", "a") == pytest.approx(7 / 18, abs=1e-12)


def test_kneser_ney_uses_continuation_counts_below_the_top() -> None:
    # Order 3 on "aabab": trigrams aab, aba, bab, each once: D3 = 1 / (1 + 0) = 1.
    # The middle order counts bigrams by distinct predecessors: ab (after a, b) 2, ba 1,
    # aa 0 (it starts the text); D = 1 / (1 + 2) = 1/3. Lowest order as in the bigram test.
    # p2(b | a) = (2 - 1/3 + 1/3 * 1 * 1/3) / 2 = 8/9; context aa: c = 1, T = 1, so
    # p(b | aa) = (max(1 - 1, 0) + 1 * 1 * 8/9) / 1 = 8/9 (raw middle counts give 11/18).
    model = toy_model("kneser_ney", 3)
    assert prob(model, "aa", "b") == pytest.approx(8 / 9, abs=1e-12)
    assert prob(model, "aa", "a") == pytest.approx(1 / 9, abs=1e-12)


def test_kneser_ney_discount_without_singletons() -> None:
    # Unigram counts a 3, b 2: no count of 1, so D falls back to 1/2.
    # p(a) = (3 - 1/2 + 1/2 * 2 * 1/2) / 5 = 3/5.
    assert prob(toy_model("kneser_ney", 1), "", "a") == pytest.approx(3 / 5, abs=1e-12)


def test_witten_bell_by_hand() -> None:
    # Unigrams a 3, b 2 (total 5, two types), over uniform 1/2:
    # p1(a) = (3 + 2 * 1/2) / (5 + 2) = 4/7, p1(b) = 3/7.
    # Context b: c = 1 (ba), T = 1: p(a | b) = (1 + 1 * 4/7) / (1 + 1) = 11/14.
    # Context a: c = 3 (aa, ab, ab), T = 2: p(b | a) = (2 + 2 * 3/7) / (3 + 2) = 4/7.
    model = toy_model("witten_bell", 2)
    assert prob(model, "", "a") == pytest.approx(4 / 7, abs=1e-12)
    assert prob(model, "b", "a") == pytest.approx(11 / 14, abs=1e-12)
    assert prob(model, "a", "b") == pytest.approx(4 / 7, abs=1e-12)
    assert prob(model, "a", "a") == pytest.approx(3 / 7, abs=1e-12)


def test_add_k_bigram_by_hand() -> None:
    # (c(vw) + k) / (c(v) + k V) with V = 2: p(b | a) = (2 + 1) / (3 + 2) = 3/5,
    # p(a | b) = (1 + 1) / (1 + 2) = 2/3; with k = 1/2, p(b | a) = 2.5 / 4 = 5/8.
    assert prob(toy_model("add_k", 2), "a", "b") == pytest.approx(3 / 5, abs=1e-12)
    assert prob(toy_model("add_k", 2), "b", "a") == pytest.approx(2 / 3, abs=1e-12)
    assert prob(toy_model("add_k", 2, k=0.5), "a", "b") == pytest.approx(5 / 8, abs=1e-12)
    # "ab": the first character has no context, so order 1: (3 + 1) / (5 + 2) = 4/7.
    expected = -(math.log(4 / 7) + math.log(3 / 5)) / 2
    assert toy_model("add_k", 2).nats_per_char("ab") == pytest.approx(expected, abs=1e-12)


def test_add_k_with_zero_k_is_the_frequencies() -> None:
    model = toy_model("add_k", 1, k=0.0)
    assert model.distribution("anything ab") == pytest.approx([3 / 5, 2 / 5], abs=1e-12)


@pytest.mark.parametrize("smoothing", ["add_k", "witten_bell", "kneser_ney"])
def test_batched_scoring_matches_one_context_at_a_time(smoothing: str) -> None:
    model = NGramModel(NGramCounts(SENTENCE, 5), 5, smoothing)
    text = "the log sat on the cat."
    ids = char_ids(text, model.vocab)
    one_by_one = -np.mean([np.log(model.distribution(text[:i])[ids[i]])
                           for i in range(len(text))])
    assert model.nats_per_char(text) == pytest.approx(one_by_one, abs=1e-12)


def test_an_unseen_character_is_refused_by_name() -> None:
    model = NGramModel(NGramCounts(SENTENCE, 3), 3, "kneser_ney")
    with pytest.raises(ValueError, match=r"'é' \(U\+00E9, first at position 4\) never occurs"):
        model.nats_per_char("the é")
    with pytest.raises(ValueError, match="'Z'"):
        model.distribution("oZ")  # only the last two characters are read


def test_counts_refuse_orders_beyond_64_bit_codes_and_too_short_texts() -> None:
    wide = "".join(chr(0x100 + i) for i in range(100))
    with pytest.raises(ValueError, match="64-bit"):
        NGramCounts(wide * 2, 10)
    with pytest.raises(ValueError, match="fit on more text"):
        NGramCounts("abc", 3)
    with pytest.raises(ValueError, match="an order from 1 to 3"):
        NGramModel(NGramCounts(SENTENCE, 3), 4, "kneser_ney")


def test_compressors_spend_fewer_bits_on_repetitive_text() -> None:
    rng = random.Random(0)
    noise = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(20_000))
    repeated = "to be or not to be, " * 1_000
    random_bits = compressor_bits_per_char(noise[:10_000], noise[10_000:])
    repeated_bits = compressor_bits_per_char(repeated[:10_000], repeated[10_000:])
    assert set(random_bits) == set(repeated_bits) == {"zlib", "bz2", "lzma"}
    for name in random_bits:  # 27 equally likely letters need log2(27) = 4.75 bits
        assert repeated_bits[name] < 0.5 and random_bits[name] > 4, name


def test_baselines_on_a_markov_text() -> None:
    rng = random.Random(1)
    follow = {c: rng.sample("abcdefgh ", 3) for c in "abcdefgh "}
    chars = ["a"]
    for _ in range(30_000):
        chars.append(rng.choice(follow[chars[-1]]))
    text = "".join(chars)
    scores = baselines(text[:27_000], text[27_000:], max_order=4)
    assert set(scores) == {"uniform", "unigram", "bigram", "witten_bell", "kneser_ney",
                           "zlib", "bz2", "lzma"}
    assert scores["uniform"] == pytest.approx(math.log(9))
    assert scores["bigram"] < scores["unigram"] < scores["uniform"]
    assert scores["bigram"] == pytest.approx(math.log(3), abs=0.02)  # three followers each


# What it has memorised (book/10_evaluation_05.py): matching statistics against a corpus.


def brute_match_lengths(sample: str, corpus: str) -> list[int]:
    """Every length at every position, assuming nothing about neighbours."""
    return [max(length for length in range(len(sample) - start + 1)
                if sample[start:start + length] in corpus)
            for start in range(len(sample))]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="abc", max_size=14), st.text(alphabet="abcd", max_size=30))
def test_match_lengths_agree_with_brute_force(sample: str, corpus: str) -> None:
    lengths = match_lengths(sample, corpus)
    assert lengths.dtype == np.int64
    assert lengths.tolist() == brute_match_lengths(sample, corpus)
    length, at, where = longest_match(sample, corpus)
    assert length == max(lengths, default=0)
    assert sample[at:at + length] == corpus[where:where + length]
    assert where == corpus.find(sample[at:at + length])
    if sample:
        assert at == int(np.argmax(lengths))  # the first of the longest


def test_longest_match_by_hand() -> None:
    corpus = "to be, or not to be: that is the question"
    assert match_lengths("not that", corpus).tolist() == [5, 4, 3, 5, 4, 3, 2, 1]
    assert longest_match("so be, or not", corpus) == (12, 1, 1)  # "o be, or not"
    assert longest_match("it is, or not", corpus) == (8, 5, 5)  # ", or not"
    assert longest_match("", corpus) == (0, 0, 0)
    assert longest_match("xyz", corpus) == (0, 0, 0)
    assert longest_match(corpus, corpus) == (len(corpus), 0, 0)


def test_seen_ngram_share_by_hand() -> None:
    lengths = [match_lengths("abcx", "abcab"), match_lengths("ca", "abcab")]
    # m = [3, 2, 1, 0] and [2, 1]: 1-grams 5 of 6 seen; 2-grams 3 of 4; 3-grams 1 of 2
    assert seen_ngram_share(lengths, 1) == pytest.approx(5 / 6)
    assert seen_ngram_share(lengths, 2) == pytest.approx(3 / 4)
    assert seen_ngram_share(lengths, 3) == pytest.approx(1 / 2)
    assert seen_ngram_share(lengths, 4) == 0.0  # "abcx" is the only 4-gram
    with pytest.raises(ValueError, match="no text is 5 characters long"):
        seen_ngram_share(lengths, 5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet="ab", max_size=10), min_size=1, max_size=4),
       st.text(alphabet="ab", max_size=20), st.integers(1, 4))
def test_seen_ngram_share_counts_ngrams(samples: list[str], corpus: str, n: int) -> None:
    grams = [text[i:i + n] for text in samples for i in range(len(text) - n + 1)]
    lengths = [match_lengths(text, corpus) for text in samples]
    if not grams:
        with pytest.raises(ValueError):
            seen_ngram_share(lengths, n)
    else:
        expected = sum(gram in corpus for gram in grams) / len(grams)
        assert seen_ngram_share(lengths, n) == pytest.approx(expected)


# Where the loss is (book/10_evaluation_04.py): character classes, calibration


def test_char_classes_by_hand() -> None:
    text = "ROMEO:\nO'er it.\n\nNurse:\nAy me!\nSo:"
    letter = {"S": "speaker name", "W": "word start", "L": "later letter",
              "_": "space", "N": "newline", "P": "punctuation"}
    expected = "SSSSSS" "N" "WPWL_WLP" "NN" "SSSSSS" "N" "WL_WLP" "N" "WLP"
    assert len(expected) == len(text)
    codes = [CHAR_CLASSES.index(letter[key]) for key in expected]
    assert char_classes(text).tolist() == codes
    # "So:" ends in a colon but follows a line of speech, so it opens nothing
    assert speech_openers(text) == [(0, "ROMEO:"), (17, "Nurse:")]
    assert char_classes("").tolist() == []


def test_calibration_bins_by_hand() -> None:
    confidence = [0.05, 0.1, 0.15, 0.95, 0.95, 1.0]
    correct = [False, True, True, True, False, True]
    table = calibration_table(confidence, correct, bins=10)
    assert table.counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 3]  # 0.1 is in (0, 0.1]
    assert table.confidence[[0, 1, 9]] == pytest.approx([0.075, 0.15, 2.9 / 3])
    assert table.accuracy[[0, 1, 9]] == pytest.approx([0.5, 1.0, 2 / 3])
    assert np.isnan(table.accuracy[2:9]).all()
    gaps = 2 * (0.5 - 0.075) + 1 * (1 - 0.15) + 3 * (2.9 / 3 - 2 / 3)
    assert expected_calibration_error(confidence, correct) == pytest.approx(gaps / 6)
    assert calibration_table([0.0], [False]).counts[0] == 1  # 0 joins the first bin


def test_calibration_refuses_what_it_cannot_bin() -> None:
    with pytest.raises(ValueError, match="one `correct` per confidence"):
        calibration_table([0.5, 0.6], [True])
    with pytest.raises(ValueError, match="at least"):
        calibration_table([], [])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration_table([1.2], [True])


def test_expected_calibration_error_of_honest_and_overconfident_sets() -> None:
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0, 1, 200_000)
    honest = rng.uniform(0, 1, confidence.size) < confidence
    assert expected_calibration_error(confidence, honest) < 0.01
    # right with probability c^2 when claiming c: the gap averages 1/2 - 1/3
    boastful = rng.uniform(0, 1, confidence.size) < confidence**2
    assert expected_calibration_error(confidence, boastful) == pytest.approx(1 / 6, abs=0.01)


def test_top_predictions_agree_with_argmax_and_token_losses() -> None:
    mx.random.seed(0)
    model = GPT(GPTConfig(vocab_size=11, context=8, n_layer=1, n_head=2, n_embd=16))
    ids = np.random.default_rng(1).integers(0, 11, 5 * 8 + 3)
    top_prob, correct = top_predictions(model, ids, batch_size=2)
    assert top_prob.shape == correct.shape == (5, 8)
    inputs = mx.array(ids[:40].reshape(5, 8).astype(np.int32))
    probs = np.array(mx.softmax(model(inputs).astype(mx.float32), axis=-1))
    targets = ids[1:41].reshape(5, 8)
    assert top_prob == pytest.approx(probs.max(axis=-1), abs=1e-6)
    assert (correct == (probs.argmax(axis=-1) == targets)).all()
    assert 0 < correct.sum() < correct.size  # the check below is not vacuous
    losses = token_losses(model, ids)
    assert losses[correct] == pytest.approx(-np.log(top_prob[correct]), abs=1e-5)
    with pytest.raises(ValueError, match="too few"):
        top_predictions(model, ids[:8])


def test_score_text_restates_the_token_losses_per_character() -> None:
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 6
    tokenizer = BPETokenizer.train(text, 300)
    mx.random.seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context=8, n_layer=1,
                          n_head=2, n_embd=16))
    model.eval()
    estimate = score_text(model, tokenizer, text, samples=200)
    ids = tokenizer.encode(text)
    losses = token_losses(model, np.array(ids))
    scored = ids[1:1 + losses.size]  # the predicted tokens, window by window
    chars = len(tokenizer.decode(scored))
    assert estimate.tokens == losses.size and estimate.chars == chars
    assert estimate.nats_per_char == pytest.approx(losses.sum() / chars, rel=1e-5)
    assert estimate.low <= estimate.nats_per_char <= estimate.high
    assert estimate.bits_per_char == pytest.approx(estimate.nats_per_char / math.log(2))


def test_the_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_text() -> None:
    rng = np.random.default_rng(0)
    nats = rng.gamma(2.0, 1.0, 4000)
    chars = np.full(4000, 64.0)
    widths = []
    for windows in (100, 400, 1600):
        low, high = bootstrap_interval(nats[:windows], chars[:windows], seed=1)
        assert low < nats[:windows].sum() / chars[:windows].sum() < high
        widths.append(high - low)
    assert widths[0] > 1.5 * widths[1] > 2.25 * widths[2]  # about 1/sqrt(windows)
    with pytest.raises(ValueError, match="level"):
        bootstrap_interval(nats, chars, level=1.0)
