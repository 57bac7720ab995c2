"""mlxllm.model's GPT: shapes, causality, norms, parameter counts, the training
loss, checkpoints and the messages of invalid configurations."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlxllm.model import (
    GPT,
    Block,
    FeedForward,
    GPTConfig,
    LayerNorm,
    RMSNorm,
    causal_mask,
    count_parameters,
    erf,
    gelu,
    language_model_loss,
    time_train_step,
)


def small_config(**changes: object) -> GPTConfig:
    sizes = dict(vocab_size=11, context=16, n_layer=2, n_head=2, n_embd=32)
    return GPTConfig(**{**sizes, **changes})


def random_ids(config: GPTConfig, batch: int = 2, length: int = 12,
               seed: int = 0) -> mx.array:
    mx.random.seed(seed)
    return mx.random.randint(0, config.vocab_size, (batch, length))


@pytest.mark.parametrize("norm", [LayerNorm, RMSNorm])
def test_norms_keep_shape(norm: type) -> None:
    x = mx.random.normal((3, 5, 24))
    assert norm(24)(x).shape == (3, 5, 24)


@pytest.mark.parametrize("mine, theirs", [(LayerNorm, nn.LayerNorm),
                                          (RMSNorm, nn.RMSNorm)])
def test_norms_match_mlx(mine: type, theirs: type) -> None:
    mx.random.seed(1)
    x = 2.0 + 3.0 * mx.random.normal((4, 7, 48))
    a, b = mine(48), theirs(48, eps=1e-5)
    weights = {"weight": mx.random.normal((48,))}
    if "bias" in a:
        weights["bias"] = mx.random.normal((48,))
    a.update(weights)
    b.update(weights)
    assert mx.allclose(a(x), b(x), atol=1e-5, rtol=1e-5).item()


@pytest.mark.parametrize("activation", ["relu", "gelu", "swiglu"])
def test_feed_forward_shape(activation: str) -> None:
    ffn = FeedForward(16, 40, activation)
    assert ffn(mx.zeros((2, 3, 16))).shape == (2, 3, 16)


def test_block_and_gpt_shapes() -> None:
    config = small_config()
    x = mx.random.normal((2, 9, config.n_embd))
    assert Block(config)(x, causal_mask(9)).shape == x.shape
    ids = random_ids(config, length=config.context)
    assert GPT(config)(ids).shape == (2, config.context, config.vocab_size)


@pytest.mark.parametrize("activation", ["gelu", "swiglu"])
def test_gpt_is_causal(activation: str) -> None:
    config = small_config(activation=activation)
    model = GPT(config)
    ids = random_ids(config, length=14)
    for cut in (1, 6, 13):
        changed = mx.array(ids)
        changed[:, cut:] = (changed[:, cut:] + 3) % config.vocab_size
        before, after = model(ids), model(changed)
        assert mx.array_equal(before[:, :cut], after[:, :cut]).item()


@pytest.mark.parametrize("changes", [
    {}, {"bias": True}, {"norm": "rms"}, {"activation": "swiglu"},
    {"activation": "relu", "bias": True, "norm": "rms"}, {"n_layer": 5},
])
def test_count_parameters_matches_module(changes: dict) -> None:
    config = small_config(**changes)
    counted = sum(v.size for _, v in tree_flatten(GPT(config).parameters()))
    assert count_parameters(config) == counted


def test_presets() -> None:
    baby, full = GPTConfig.baby(65), GPTConfig.full(65)
    assert (baby.n_layer, baby.n_head, baby.n_embd, baby.context) == (
        4, 4, 128, 64)
    assert (full.n_layer, full.n_head, full.n_embd, full.context) == (
        6, 6, 384, 256)
    assert count_parameters(baby) == 805_248
    assert count_parameters(full) == 10_750_080
    assert GPTConfig.baby(65, n_layer=2).n_layer == 2


def test_head_is_tied_to_token_embedding() -> None:
    model = GPT(small_config())
    names = [name for name, _ in tree_flatten(model.parameters())]
    assert not any("head" in name for name in names)


def test_save_and_load_reproduce_logits(tmp_path) -> None:
    config = small_config()
    mx.random.seed(0)
    model = GPT(config)
    ids = random_ids(config)
    path = tmp_path / "model.safetensors"
    model.save_weights(str(path))
    mx.random.seed(1)
    other = GPT(config)
    other.load_weights(str(path))
    assert mx.array_equal(model(ids), other(ids)).item()


@pytest.mark.parametrize("changes, words", [
    ({"n_head": 5}, "multiple of n_head"),
    ({"activation": "tanh"}, "use one of relu, gelu, swiglu"),
    ({"norm": "batch"}, "use one of layer, rms"),
    ({"n_layer": 0}, "must be positive"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_invalid_config_says_what_to_change(changes: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        small_config(**changes)


def test_unknown_feed_forward_activation() -> None:
    with pytest.raises(ValueError, match="use one of"):
        FeedForward(8, 16, "sigmoid")


def test_too_long_input_says_what_to_change() -> None:
    config = small_config()
    ids = random_ids(config, length=config.context + 1)
    with pytest.raises(ValueError, match="crop the input"):
        GPT(config)(ids)


def test_time_train_step_times_a_real_update() -> None:
    config = small_config()
    mx.random.seed(0)
    model = GPT(config)
    before = [value for _, value in tree_flatten(model.parameters())]
    ids = random_ids(config)
    seconds = time_train_step(model, ids, ids, repeats=2)
    after = [value for _, value in tree_flatten(model.parameters())]
    assert 0 < seconds < 60
    assert not all(mx.array_equal(a, b).item() for a, b in zip(before, after))


def test_rational_erf_is_float32_accurate() -> None:
    grid = np.linspace(-8, 8, 40001, dtype=np.float32)
    exact = np.array([math.erf(value) for value in grid.tolist()])
    assert np.abs(np.array(erf(mx.array(grid))) - exact).max() < 1e-6


def test_gelu_matches_mlx_in_value_and_gradient() -> None:
    mx.random.seed(0)
    x = 3 * mx.random.normal((64, 33))
    weights = mx.random.normal((64, 33))  # a cotangent that is not all ones
    assert mx.allclose(gelu(x), nn.gelu(x), atol=2e-6).item()
    mine = mx.grad(lambda x: (gelu(x) * weights).sum())(x)
    theirs = mx.grad(lambda x: (nn.gelu(x) * weights).sum())(x)
    assert mx.allclose(mine, theirs, atol=2e-6).item()
    compiled = mx.compile(mx.grad(lambda x: (gelu(x) * weights).sum()))(x)
    assert mx.allclose(compiled, theirs, atol=2e-6).item()


def test_gelu_keeps_bfloat16() -> None:
    x = mx.linspace(-5, 5, 101).astype(mx.bfloat16)
    out = gelu(x)
    assert out.dtype == mx.bfloat16
    assert mx.allclose(out.astype(mx.float32),
                       nn.gelu(x.astype(mx.float32)), atol=0.05).item()


def test_language_model_loss_is_the_float32_cross_entropy_of_the_next_ids() -> None:
    config = small_config()
    mx.random.seed(0)
    model = GPT(config)
    ids = random_ids(config, length=13)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    logits = np.array(model(inputs), dtype=np.float64)
    log_normalizer = np.log(np.exp(logits).sum(axis=-1))
    picked = np.take_along_axis(logits, np.array(targets)[..., None], axis=-1)[..., 0]
    expected = float(np.mean(log_normalizer - picked))
    assert language_model_loss(model, inputs, targets).item() == pytest.approx(expected,
                                                                               rel=1e-5)
    model.set_dtype(mx.bfloat16)
    assert language_model_loss(model, inputs, targets).dtype == mx.float32
