"""mlxllm.model attention: shapes, causality, and agreement with MLX's own."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import pytest

from mlxllm.model import (
    MultiHeadAttention,
    attention_weights,
    causal_mask,
    scaled_dot_product_attention,
)


def random_qkv(shape: tuple[int, ...], seed: int = 0) -> list[mx.array]:
    mx.random.seed(seed)
    return [mx.random.normal(shape) for _ in range(3)]


def test_causal_mask_is_lower_triangle() -> None:
    mask = causal_mask(6)
    assert mask.dtype == mx.bool_ and mask.shape == (6, 6)
    assert mx.array_equal(mask, mx.tril(mx.ones((6, 6))).astype(mx.bool_))


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 3, 7, 8), (1, 4, 16, 32)])
def test_attention_shape_and_weights(shape: tuple[int, ...]) -> None:
    q, k, v = random_qkv(shape)
    assert scaled_dot_product_attention(q, k, v).shape == shape
    weights = attention_weights(q, k, causal_mask(shape[2]))
    assert mx.allclose(weights.sum(-1), mx.ones(shape[:3]), atol=1e-5)
    upper = mx.triu(mx.ones((shape[2], shape[2])), k=1).astype(mx.bool_)
    assert (mx.where(upper, weights, 0.0) == 0).all().item()


@pytest.mark.parametrize("kind", ["none", "causal", "boolean", "additive"])
def test_matches_fused_kernel(kind: str) -> None:
    q, k, v = random_qkv((2, 4, 9, 16), seed=1)
    allowed = mx.random.uniform(shape=(9, 9)) < 0.6
    allowed = allowed | mx.eye(9, dtype=mx.bool_)
    mask = {
        "none": None,
        "causal": causal_mask(9),
        "boolean": allowed,
        "additive": mx.where(allowed, 0.0, -1e9),
    }[kind]
    mine = scaled_dot_product_attention(q, k, v, mask)
    fused = mx.fast.scaled_dot_product_attention(
        q, k, v, scale=1 / math.sqrt(16), mask=mask
    )
    assert mx.allclose(mine, fused, atol=1e-5).item()


def test_fully_masked_row_is_uniform_not_nan() -> None:
    q, k, v = random_qkv((1, 1, 3, 4), seed=2)
    mask = mx.array([[False, False, False], [True, True, False],
                     [True, True, True]])
    weights = attention_weights(q, k, mask)
    assert not mx.isnan(weights).any().item()
    assert mx.allclose(weights[0, 0, 0], mx.full((3,), 1 / 3)).item()


def test_multi_head_shape_and_names() -> None:
    attention = MultiHeadAttention(32, 4)
    x = mx.random.normal((3, 5, 32))
    assert attention(x).shape == (3, 5, 32)
    assert attention(x, causal_mask(5)).shape == (3, 5, 32)
    for name in ("query_proj", "key_proj", "value_proj", "out_proj"):
        assert isinstance(getattr(attention, name), nn.Linear)
    assert "bias" not in attention.query_proj
    assert "bias" in MultiHeadAttention(32, 4, bias=True).out_proj


def test_multi_head_is_causal() -> None:
    mx.random.seed(3)
    attention = MultiHeadAttention(48, 6)
    x = mx.random.normal((2, 10, 48))
    changed = x.at[:, 6:].add(mx.random.normal((2, 4, 48)) * 5)
    before = attention(x, causal_mask(10))
    after = attention(changed, causal_mask(10))
    assert mx.allclose(before[:, :6], after[:, :6], atol=1e-6).item()
    assert not mx.allclose(before[:, 6:], after[:, 6:]).item()


@pytest.mark.parametrize("bias", [False, True])
def test_matches_mlx_multi_head_attention(bias: bool) -> None:
    mx.random.seed(4)
    attention = MultiHeadAttention(64, 8, bias=bias)
    reference = nn.MultiHeadAttention(64, 8, bias=bias)
    reference.update(attention.parameters())
    x = mx.random.normal((2, 11, 64))
    for mask, additive in (
        (None, None),
        (causal_mask(11),
         nn.MultiHeadAttention.create_additive_causal_mask(11)),
    ):
        mine = attention(x, mask)
        theirs = reference(x, x, x, additive)
        assert mx.allclose(mine, theirs, atol=1e-5).item()


def test_heads_must_divide_dims() -> None:
    with pytest.raises(ValueError, match="heads=6 does not divide") as info:
        MultiHeadAttention(64, 6)
    assert "choose heads from [1, 2, 4, 8, 16, 32, 64]" in str(info.value)
