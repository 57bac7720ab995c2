"""mlxllm.generate as `mlxllm generate` uses it: ids stream one at a time, and the command
prints them as text that never splits a character."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlx.utils import tree_flatten

from mlxllm.cli import stream_text
from mlxllm.generate import (
    KVCache,
    Sampler,
    SpeculationStats,
    accept_draft,
    apply_repetition_penalty,
    decode_step,
    forward_cached,
    generate,
    generate_stream,
    generate_tokens,
    make_caches,
    min_p_filter,
    prefill,
    speculative_tokens,
    top_k_filter,
    top_p_filter,
)
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import BPETokenizer

# Bytes-level BPE on ASCII text: every byte of é (2 bytes) and ☃ (3 bytes) is a token of its own.
TOKENIZER = BPETokenizer.train("the cat sat on the mat; the rat ate the hat " * 20, 270)
MIXED_TEXT = "Thé café ☃ at the hat"


def tiny_model() -> GPT:
    mx.random.seed(0)
    return GPT(GPTConfig(TOKENIZER.vocab_size, context=16, n_layer=1, n_head=2, n_embd=32))


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (0.8, 5), (1.0, None)])
def test_the_stream_yields_what_generate_returns(temperature: float, top_k: int | None) -> None:
    model, prompt = tiny_model(), TOKENIZER.encode("the cat")
    streamed = list(generate_stream(model, prompt, 20, temperature, top_k, seed=4))
    assert len(streamed) == 20
    assert generate(model, prompt, 20, temperature, top_k, seed=4) == prompt + streamed


def test_a_stream_stopped_early_puts_the_model_back_in_training_mode() -> None:
    model = tiny_model()
    stream = generate_stream(model, TOKENIZER.encode("the"), 1000)
    next(stream)
    assert not model.training
    stream.close()
    assert model.training


def test_streamed_text_holds_back_a_character_until_its_last_byte() -> None:
    ids = TOKENIZER.encode(MIXED_TEXT)
    assert "\ufffd" in TOKENIZER.decode(ids[2:3])  # é's first byte alone is not text
    pieces = list(stream_text(TOKENIZER, ids))
    assert "".join(pieces) == MIXED_TEXT
    assert not any("\ufffd" in piece for piece in pieces), pieces
    assert "é" in pieces and "☃" in pieces


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, TOKENIZER.vocab_size - 1), max_size=40))
def test_streamed_text_is_the_decoded_text(ids: list[int]) -> None:
    assert "".join(stream_text(TOKENIZER, ids)) == TOKENIZER.decode(ids)


# --- chapter 9: the decoding rules ---------------------------------------------------------

LOGITS = mx.array([3.0, -1.0, 2.0, 2.0, 0.5, -4.0, 1.0, 2.0])


def kept_ids(filtered: mx.array) -> set[int]:
    return {i for i, alive in enumerate(np.isfinite(np.array(filtered))) if alive}


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8])
def test_top_k_keeps_exactly_k_even_with_ties(k: int) -> None:
    kept = kept_ids(top_k_filter(LOGITS, k))
    assert len(kept) == k
    values = np.array(LOGITS)
    assert values[list(kept)].min() >= np.delete(values, list(kept)).max(initial=-np.inf)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-8, 8), min_size=2, max_size=30), st.floats(0.01, 1.0))
def test_top_p_keeps_at_least_p_and_no_more_tokens_than_needed(values: list[float],
                                                               p: float) -> None:
    logits = mx.array(values)
    probs = np.array(mx.softmax(logits, precise=True), dtype=np.float64)
    kept = kept_ids(top_p_filter(logits, p))
    assert probs[list(kept)].sum() >= p - 1e-5
    smallest = min(kept, key=lambda i: (probs[i], -i))
    assert probs[list(kept - {smallest})].sum() < p + 1e-5
    assert probs[list(kept)].min() >= np.delete(probs, list(kept)).max(initial=0)


def test_min_p_keeps_tokens_at_least_min_p_times_the_top_one() -> None:
    probs = np.array(mx.softmax(LOGITS, precise=True))
    for min_p in (0.05, 0.2, 0.5, 1.0):
        kept = kept_ids(min_p_filter(LOGITS, min_p))
        assert kept == {i for i, q in enumerate(probs) if q >= min_p * probs.max() - 1e-7}


def test_repetition_penalty_lowers_positive_and_negative_logits() -> None:
    logits = mx.array([2.0, -2.0, 1.0, -1.0])
    penalized = np.array(apply_repetition_penalty(logits, [0, 1, 1], 2.0))
    assert penalized.tolist() == [1.0, -4.0, 1.0, -1.0]
    assert apply_repetition_penalty(logits, [0], 1.0) is logits


def test_a_sampler_rejects_bad_settings_when_made() -> None:
    for bad in (dict(temperature=-1), dict(top_k=0), dict(top_p=1.5), dict(min_p=0),
                dict(repetition_penalty=0.5)):
        with pytest.raises(ValueError):
            Sampler(**bad)


def test_a_sampler_draws_only_kept_tokens_and_reproduces_its_draws() -> None:
    sampler = Sampler(temperature=1.5, top_k=3)
    keys = mx.random.split(mx.random.key(1), 50)
    draws = [sampler(LOGITS, [], key) for key in keys]
    assert set(draws) <= {0, 2, 3}
    assert draws == [sampler(LOGITS, [], key) for key in keys]
    assert Sampler(temperature=0)(LOGITS, [], keys[0]) == 0
    assert Sampler(temperature=0, repetition_penalty=2.0)(LOGITS, [0], keys[0]) == 2


# --- chapter 9: the KV cache and generate_tokens -------------------------------------------

def preset_model(preset: str) -> GPT:
    """An untrained model of a preset's shape, narrowed and shortened to keep the test fast."""
    mx.random.seed(1)
    config = getattr(GPTConfig, preset)(TOKENIZER.vocab_size)
    narrow = dict(baby=dict(context=24), full=dict(context=40, n_layer=2, n_embd=96))
    return GPT(GPTConfig(**{**config.__dict__, **narrow[preset]}))


@pytest.mark.parametrize("preset", ["baby", "full"])
def test_cached_logits_equal_the_plain_models(preset: str) -> None:
    model = preset_model(preset)
    model.eval()
    ids = mx.array([[i % TOKENIZER.vocab_size for i in range(7, 7 + model.config.context)]])
    reference = model(ids)
    logits, caches = prefill(model, ids[0, :5].tolist())
    steps = [logits] + [decode_step(model, t, caches) for t in ids[0, 5:-1].tolist()]
    assert mx.allclose(mx.stack(steps), reference[0, 4:-1], atol=1e-4).item()
    assert mx.allclose(forward_cached(model, ids, make_caches(model)), reference,
                       atol=1e-4).item()


@pytest.mark.parametrize("preset", ["baby", "full"])
def test_cached_greedy_equals_uncached_past_the_window(preset: str) -> None:
    model, prompt = preset_model(preset), TOKENIZER.encode("the cat")
    new = 3 * model.config.context
    cached = list(generate_tokens(model, prompt, new, temperature=0))
    assert len(cached) == new
    assert cached == list(generate_tokens(model, prompt, new, temperature=0, cache=False))
    sliding = list(generate_tokens(model, prompt, new, temperature=0,
                                   keep=model.config.context))
    assert prompt + sliding == generate(model, prompt, new, temperature=0)


def test_seeds_reproduce_a_sample_and_differ_from_each_other() -> None:
    model, prompt = preset_model("baby"), TOKENIZER.encode("the")
    options = dict(temperature=1.2, top_p=0.95, min_p=0.01, repetition_penalty=1.2)
    first = list(generate_tokens(model, prompt, 60, seed=5, **options))
    assert first == list(generate_tokens(model, prompt, 60, seed=5, **options))
    assert first == list(generate_tokens(model, prompt, 60, seed=5, cache=False, **options))
    assert first != list(generate_tokens(model, prompt, 60, seed=6, **options))
    sampler = Sampler(**options)
    assert first == list(generate_tokens(model, prompt, 60, seed=5, sampler=sampler))
    with pytest.raises(ValueError, match="not both"):
        list(generate_tokens(model, prompt, 60, temperature=0.5, sampler=sampler))


def test_the_cache_grows_in_blocks_up_to_its_limit() -> None:
    cache = KVCache(limit=10, step=4)
    for filled in range(1, 11):
        keys, values = cache.update(mx.full((1, 2, 1, 3), filled), mx.full((1, 2, 1, 3), -filled))
        assert keys.shape[2] == filled and cache.keys.shape[2] == min(10, -(-filled // 4) * 4)
    assert keys[0, 0, :, 0].tolist() == list(range(1, 11))
    assert values[0, 1, :, 2].tolist() == [-v for v in range(1, 11)]
    with pytest.raises(ValueError):
        cache.update(mx.zeros((1, 2, 1, 3)), mx.zeros((1, 2, 1, 3)))


def test_generate_tokens_restores_the_models_mode() -> None:
    model = preset_model("baby")
    model.eval()
    list(generate_tokens(model, [1, 2], 3))
    assert not model.training
    model.train()
    stream = generate_tokens(model, [1, 2], 100)
    next(stream)
    stream.close()
    assert model.training


# --- speculative decoding ---------------------------------------------------------------------

def draft_for(model: GPT, noise: float = 0.5) -> GPT:
    """The model with noise on every weight: a draft that agrees with it often, not always."""
    mx.random.seed(1)
    draft = GPT(model.config)
    draft.load_weights([(name, value + noise * value.std() * mx.random.normal(value.shape))
                        for name, value in tree_flatten(model.parameters())])
    return draft


@pytest.mark.parametrize("preset", ["baby", "full"])
@pytest.mark.parametrize("draft_tokens", [1, 3, 7])
def test_speculative_greedy_writes_the_models_own_greedy_text(preset: str,
                                                              draft_tokens: int) -> None:
    model, prompt = preset_model(preset), TOKENIZER.encode("the cat")
    new = 3 * model.config.context
    stats = SpeculationStats()
    fast = list(speculative_tokens(model, draft_for(model), prompt, new,
                                   sampler=Sampler(temperature=0, repetition_penalty=1.3),
                                   draft_tokens=draft_tokens, stats=stats))
    assert fast == list(generate_tokens(model, prompt, new, temperature=0,
                                        repetition_penalty=1.3))
    assert 0 < stats.accepted < stats.drafted  # some drafts kept, some rolled back
    assert stats.rounds + stats.accepted == new  # each round: what it kept, plus one


def test_the_model_as_its_own_draft_is_always_accepted() -> None:
    model = preset_model("baby")
    stats = SpeculationStats()
    list(speculative_tokens(model, model, [1, 2, 3], 50, sampler=Sampler(temperature=0.8),
                            draft_tokens=4, stats=stats))
    assert stats.accepted == stats.drafted > 0


def test_accepting_drafts_keeps_the_targets_distribution() -> None:
    p = mx.array([0.5, 0.3, 0.15, 0.05, 0.0])
    q = mx.array([0.1, 0.1, 0.2, 0.3, 0.3])
    trials, key = 6000, mx.random.key(0)
    counts, kept = np.zeros(5), 0
    for _ in range(trials):
        key, guess_key, round_key = mx.random.split(key, 3)
        guess = int(mx.random.categorical(mx.log(q), key=guess_key).item())
        first = accept_draft([p, p], [q], [guess], round_key)
        counts[first[0]] += 1
        kept += len(first) == 2
    assert np.abs(counts / trials - np.array(p)).max() < 0.025
    assert counts[4] == 0  # a token the target gives no mass never comes out
    assert abs(kept / trials - float(mx.minimum(p, q).sum())) < 0.03  # 0.45 predicted


def test_speculative_decoding_refuses_a_draft_that_cannot_draft() -> None:
    model = preset_model("baby")
    other = GPT(GPTConfig(model.config.vocab_size + 1, model.config.context, 1, 1, 16))
    short = GPT(GPTConfig(model.config.vocab_size, model.config.context - 1, 1, 1, 16))
    for draft, message in ((other, "they need one tokenizer"), (short, "is shorter than")):
        with pytest.raises(ValueError, match=message):
            next(speculative_tokens(model, draft, [1, 2], 5))
    with pytest.raises(ValueError, match="draft_tokens >= 1"):
        next(speculative_tokens(model, draft_for(model), [1, 2], 5, draft_tokens=0))
