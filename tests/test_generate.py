"""mlxllm.generate as `mlxllm generate` uses it: ids stream one at a time, and the command
prints them as text that never splits a character."""

from __future__ import annotations

import mlx.core as mx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlxllm.cli import stream_text
from mlxllm.generate import generate, generate_stream
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
