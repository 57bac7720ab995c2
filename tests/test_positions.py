"""mlxllm.model's position encodings: sinusoidal vectors, RoPE, embeddings."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from mlxllm.model import rope, sinusoidal_positions


def test_sinusoidal_shape_and_known_entries() -> None:
    table = sinusoidal_positions(50, 16)
    assert table.shape == (50, 16) and table.dtype == mx.float32
    assert mx.array_equal(table[0, 0::2], mx.zeros(8)).item()
    assert mx.array_equal(table[0, 1::2], mx.ones(8)).item()
    assert table[3, 0].item() == pytest.approx(math.sin(3.0), abs=1e-6)
    assert table[3, 1].item() == pytest.approx(math.cos(3.0), abs=1e-6)
    omega = 10000.0 ** (-2 * 2 / 16)
    assert table[7, 4].item() == pytest.approx(math.sin(7 * omega), abs=1e-6)
    other_base = sinusoidal_positions(50, 16, base=100.0)
    assert other_base[7, 4].item() == pytest.approx(
        math.sin(7 * 100.0 ** (-4 / 16)), abs=1e-6)


def test_sinusoidal_values_bounded_and_odd_dims_rejected() -> None:
    table = sinusoidal_positions(300, 32)
    assert mx.abs(table).max().item() <= 1.0
    with pytest.raises(ValueError):
        sinusoidal_positions(10, 7)


def test_sinusoidal_dot_product_depends_only_on_offset() -> None:
    table = sinusoidal_positions(200, 64)
    gram = np.array(table @ table.T)
    offsets = np.arange(-30, 60)
    reference = gram[40, 40 + offsets]
    for start in (50, 90, 130):
        np.testing.assert_allclose(gram[start, start + offsets], reference,
                                   atol=1e-3)
    assert gram[40, 40] == pytest.approx(32.0, abs=1e-4)


@pytest.mark.parametrize("shape", [(1, 5, 8), (2, 3, 7, 16), (1, 64, 128),
                                   (3, 1, 2)])
@pytest.mark.parametrize("base", [10000.0, 500.0])
@pytest.mark.parametrize("offset", [0, 3, 100])
def test_rope_matches_mlx_fast_rope(shape, base, offset) -> None:
    x = mx.random.normal(shape, key=mx.random.key(sum(shape)))
    mine = rope(x, base=base, offset=offset)
    fused = mx.fast.rope(x, shape[-1], traditional=False, base=base,
                         scale=1.0, offset=offset)
    assert mine.shape == x.shape and mine.dtype == x.dtype
    assert mx.allclose(mine, fused, rtol=1e-4, atol=1e-4).item()


def test_rope_keeps_dtype_norm_and_rejects_odd_dims() -> None:
    x = mx.random.normal((2, 10, 8), key=mx.random.key(1))
    assert rope(x.astype(mx.float16)).dtype == mx.float16
    norms = mx.linalg.norm(x, axis=-1)
    assert mx.allclose(mx.linalg.norm(rope(x), axis=-1), norms,
                       atol=1e-5).item()
    assert mx.array_equal(rope(x)[:, 0], x[:, 0]).item()
    with pytest.raises(ValueError):
        rope(mx.zeros((1, 4, 5)))


def test_rope_offset_equals_slicing_a_longer_sequence() -> None:
    x = mx.random.normal((2, 20, 16), key=mx.random.key(2))
    assert mx.allclose(rope(x)[:, 7:], rope(x[:, 7:], offset=7),
                       atol=1e-5).item()


def test_rope_scores_depend_only_on_relative_position() -> None:
    dims, steps = 32, 120
    query = mx.random.normal((dims,), key=mx.random.key(3))
    key = mx.random.normal((dims,), key=mx.random.key(4))
    rotated_q = rope(mx.broadcast_to(query, (1, steps, dims)))[0]
    rotated_k = rope(mx.broadcast_to(key, (1, steps, dims)))[0]
    scores = np.array(rotated_q @ rotated_k.T)
    for distance in (-9, 0, 1, 25):
        diagonal = np.diagonal(scores, offset=distance)
        np.testing.assert_allclose(diagonal, diagonal[0], atol=1e-3)
    assert scores[0, 0] == pytest.approx((query @ key).item(), abs=1e-4)


def test_embedding_is_one_hot_times_weight() -> None:
    vocab_size, dims = 11, 6
    embedding = nn.Embedding(vocab_size, dims)
    ids = mx.array([[0, 10, 3], [3, 3, 7]])
    one_hot = (ids[..., None] == mx.arange(vocab_size)).astype(mx.float32)
    assert mx.array_equal(embedding(ids), one_hot @ embedding.weight).item()
