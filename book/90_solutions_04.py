# %% [markdown]
# # Chapter 4
#
# The solutions import the two position encodings that chapter 4 exported
# to `mlxllm.model`.

# %%
import math

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.model import rope, sinusoidal_positions

mx.random.seed(4)

# %% [markdown]
# ## Exercise 4.1
#
# The halves layout computes the same angles and concatenates the sines and
# the cosines instead of interleaving them.

# %%
def sinusoidal_halves(context: int, dims: int,
                      base: float = 10000.0) -> mx.array:
    freqs = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    angles = mx.arange(context, dtype=mx.float32)[:, None] * freqs
    return mx.concatenate([mx.sin(angles), mx.cos(angles)], axis=-1)


paper = sinusoidal_positions(64, 32)
halves = sinusoidal_halves(64, 32)
order = mx.concatenate([mx.arange(0, 32, 2), mx.arange(1, 32, 2)])
print(halves[1, :3], paper[1, 0:6:2])
assert mx.array_equal(halves, paper[:, order]).item()
assert mx.allclose(halves @ halves.T, paper @ paper.T,
                   atol=1e-4).item()

# %% [markdown]
# Column $i$ of the halves layout is column `order[i]` of the paper's,
# so the two matrices hold the same numbers in a different column order.
# A dot product is a sum over columns and does not care about their order,
# so every dot product between positions is the same. The model does not
# care either: the next layer is a matrix product, and a learned matrix
# absorbs any fixed permutation of its inputs. The layout only matters when
# two pieces of code must agree, say a checkpoint and the code loading it.
#
# ## Exercise 4.2
#
# Reshape the last axis into $D/2$ pairs, rotate each pair, and flatten
# back. Pair $i$ is features $(2i, 2i + 1)$ and turns at
# $\theta_i = \text{base}^{-2i/D}$.

# %%
def rope_traditional(x: mx.array, base: float = 10000.0,
                     offset: int = 0) -> mx.array:
    steps, dims = x.shape[-2], x.shape[-1]
    freqs = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    positions = mx.arange(offset, offset + steps, dtype=mx.float32)
    angles = positions[:, None] * freqs
    cos, sin = mx.cos(angles), mx.sin(angles)
    pairs = x.reshape(*x.shape[:-1], dims // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = mx.stack([even * cos - odd * sin, even * sin + odd * cos],
                       axis=-1)
    return rotated.reshape(x.shape)


for shape, base, offset in [((1, 9, 8), 10000.0, 0),
                            ((2, 4, 33, 64), 10000.0, 21),
                            ((3, 16, 16), 100.0, 7)]:
    x = mx.random.normal(shape)
    fused = mx.fast.rope(x, shape[-1], traditional=True,
                         base=base, scale=1.0, offset=offset)
    mine = rope_traditional(x, base, offset)
    print(shape, f"{mx.abs(mine - fused).max().item():.1e}")
    assert mx.allclose(mine, fused, atol=1e-4).item()

# %% [markdown]
# The reshape turns the last axis of length $D$ into $D/2$ rows of two, so
# `pairs[..., 0]` holds the even features and `pairs[..., 1]` the odd ones,
# each of shape (..., T, D/2), which broadcasts against the angles exactly
# as the two halves do in `rope`. The stack on a new last axis interleaves
# them again. It matches `mx.fast.rope` with `traditional=True` to float32
# rounding.
#
# ## Exercise 4.3
#
# Rebuild the chapter's bare attention with an option to rotate the queries
# and keys, and compare the output for *bites* in the two sentences. The
# embeddings here are drawn with a standard deviation of one, so that the
# attention weights are far from even and the effect is easy to see.

# %%
dims = 16
w_q, w_k, w_v = (
    mx.random.normal((dims, dims)) / math.sqrt(dims)
    for _ in range(3)
)
words = {"dog": 0, "bites": 1, "man": 2}
word_vectors = mx.random.normal((len(words), dims))


def attention(x: mx.array, rotate: bool = False,
              offset: int = 0) -> mx.array:
    queries, keys, values = x @ w_q, x @ w_k, x @ w_v
    if rotate:
        queries = rope(queries, offset=offset)
        keys = rope(keys, offset=offset)
    scores = queries @ keys.T / math.sqrt(dims)
    return mx.softmax(scores, axis=-1) @ values


def embed(text: str) -> mx.array:
    return word_vectors[mx.array([words[w] for w in text.split()])]

# %%
def bites_change(first: mx.array, second: mx.array) -> float:
    gap = mx.linalg.norm(first[1] - second[1]) / mx.linalg.norm(first[1])
    return gap.item()


dbm, mbd = embed("dog bites man"), embed("man bites dog")
sines = sinusoidal_positions(8, dims)
changes = {
    "none": bites_change(attention(dbm),
                         attention(mbd)),
    "added sinusoidal": bites_change(
        attention(dbm + sines[:3]),
        attention(mbd + sines[:3])),
    "RoPE": bites_change(attention(dbm, rotate=True),
                         attention(mbd, rotate=True)),
}
rope_shift = bites_change(
    attention(dbm, rotate=True),
    attention(dbm, rotate=True, offset=5))
sines_shift = bites_change(
    attention(dbm + sines[:3]),
    attention(dbm + sines[5:8]))
for name, change in changes.items():
    print(f"{name:>16}: bites changes by {change:.1%}")
print(f"shifted by 5, RoPE {rope_shift:.1e}, "
      f"sinusoidal {sines_shift:.1%}")
assert changes["none"] < 1e-5 < changes["RoPE"]
assert rope_shift < 1e-4 < sines_shift

# %% [markdown]
# Without positions *bites* does not change at all; with either scheme it
# does, by {{ changes["added sinusoidal"]:.0%}} with added sines and
# {{ changes["RoPE"]:.0%}} with RoPE. Shifting the whole sentence by
# five positions separates the two: with RoPE the output is unchanged (a
# difference of {{ rope_shift:.0e }}, rounding), because every score
# depends only on the distances between the words, which the shift keeps;
# with added sines it moves by {{ sines_shift:.0%}}, because the
# content-position terms of the scores see the absolute positions. A RoPE
# model reads "dog bites man" the same way at the start of a text and in
# its middle.
#
# ## Exercise 4.4
#
# With a query and a key of all ones, every pair $(1, 1)$ rotated by
# $m\theta_i$ and $n\theta_i$ contributes $2\cos((m - n)\theta_i)$, so the
# score at offset $d$ is $2\sum_i \cos(d\,\theta_i)$: the sum of the
# frequencies' cosines, peaking at $D$ for $d = 0$.

# %%
head_dims, span = 64, 512
ones = mx.ones((1, span, head_dims))
decay = {}
for base in (100.0, 1000.0, 10000.0):
    rotated = rope(ones, base=base)[0]
    decay[base] = np.array(rotated @ rotated[0])
half_distance = {
    base: int(np.argmax(scores < scores[0] / 2))
    for base, scores in decay.items()
}
print("first offset below half the peak:", half_distance)
assert (half_distance[100.0] < half_distance[1000.0]
        < half_distance[10000.0])

# %%
#| echo: false
#| label: fig-ch4-rope-decay
#| fig-cap: The RoPE score of an all-ones query and key (64 numbers each) against their distance, for three bases. A larger base keeps the score high over longer distances.
for base, style in zip(decay, ["-", "--", ":"]):
    plt.plot(decay[base], style,
             label=f"base {base:,.0f}")
plt.xscale("symlog", linthresh=10)
plt.xlabel("offset m − n (positions)")
plt.ylabel("score q · k")
plt.legend()

# %% [markdown]
# The score starts at the same peak for every base and falls as the offset
# grows; it first drops below half the peak at offset
# {{ half_distance[100.0] }} with base 100,
# {{ half_distance[1000.0] }} with base 1,000 and
# {{ half_distance[10000.0] }} with base 10,000. The reason is the
# ladder of frequencies $\theta_i = \text{base}^{-2i/D}$: the cosines stay
# near one while $d\,\theta_i$ is small, and a larger base makes more of
# the frequencies slow, so more terms stay in phase for longer. The decay is
# not a clean envelope, though: past the half-way point the fast terms
# cancel each other only on average, and the curve wobbles. That is why
# models meant for long contexts raise the base: with base 100 the score
# has halved {{ half_distance[100.0] }} positions away.
#
# ## Exercise 4.5
#
# A `scale` multiplies the positions, offset included; `mx.fast.rope` takes
# the same argument.

# %%
def rope_scaled(x: mx.array, base: float = 10000.0, offset: int = 0,
                scale: float = 1.0) -> mx.array:
    steps, dims = x.shape[-2], x.shape[-1]
    half = dims // 2
    freqs = base ** (-mx.arange(half, dtype=mx.float32) / half)
    positions = mx.arange(offset, offset + steps, dtype=mx.float32) * scale
    angles = positions[:, None] * freqs
    cos, sin = mx.cos(angles), mx.sin(angles)
    first, second = x[..., :half], x[..., half:]
    return mx.concatenate([first * cos - second * sin,
                           first * sin + second * cos], axis=-1)


x = mx.random.normal((2, 256, 32))
for scale, offset in [(1.0, 0), (0.25, 0), (0.25, 64)]:
    fused = mx.fast.rope(x, 32, traditional=False, base=10000.0,
                         scale=scale, offset=offset)
    assert mx.allclose(rope_scaled(x, offset=offset,
                                   scale=scale),
                       fused, atol=1e-4).item()

# %% [markdown]
# Now stretch a context of 256 into a model trained on 64. With
# `scale = 64 / 256` the largest position is $255/4$, inside the span of
# 64 positions the model trained on, so every angle is one it could have
# seen; extrapolation (scale one) cannot promise that. The price is
# resolution. Measure it with a random query and key of 64 numbers: score
# the query at offsets 0 to 255 from the key, with and without the stretch.

# %%
trained, long = 64, 256
scale = trained / long
q = mx.broadcast_to(mx.random.normal((64,)), (1, long, 64))
k = mx.broadcast_to(mx.random.normal((64,)), (1, long, 64))


def offset_scores(scale: float) -> np.ndarray:
    rotated_q = rope_scaled(q, scale=scale)[0]
    rotated_k = rope_scaled(k, scale=scale)[0]
    return np.array(rotated_q @ rotated_k[0])


plain = offset_scores(1.0)
stretched = offset_scores(scale)
max_position = (long - 1) * scale
near_change = (np.abs(plain[:16] - stretched[:16]).mean()
               / np.abs(plain[:16]).mean())
print(f"largest stretched position {max_position}")
print(f"scores at offsets 0..15 change by {near_change:.0%}")
assert max_position < trained
assert np.allclose(stretched[::4], plain[:64], atol=1e-3)

# %% [markdown]
# The stretched scores at offsets 0, 4, 8, ... are exactly the plain
# scores at offsets 0, 1, 2, ... (a check in the listing): every attention
# pattern the model learned at some distance now fires at four times that
# distance, and nothing is out of range, so a stretched model runs at
# once. But it reads every distance four times too short. At the short
# offsets 0 to 15, where a language model does most of its attending, the
# scores change by {{ near_change:.0%}} on average, and offsets 1, 2
# and 3 become the fractional offsets 0.25, 0.5 and 0.75, which training
# never produced and which all look much like offset 0. So the model needs
# fine-tuning on long texts to relearn fine distances; Chen et al. (2023)
# report that a short fine-tuning is enough, far shorter than training a
# long-context model from scratch. Showing that here would take a model
# trained with RoPE, and the GPT that chapter 7 trains learns a table of
# absolute positions instead (chapter 6's `position_embedding`). Putting
# `rope` into its attention, training it with chapter 7's loop and then
# stretching and fine-tuning it is the project this exercise leads to.
