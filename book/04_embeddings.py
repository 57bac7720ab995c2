# %% [markdown]
# # Embeddings and positions
#
# The tokenizer of chapter 3 turns text into integers, but a neural network
# computes with vectors. The first layer of every GPT is therefore a table:
# one learned row of numbers per token id, the token's *embedding*. This
# chapter starts there and shows that the table is a matrix product in
# disguise, one that a lookup computes
# {{ lookup_speedup:.0f }} times faster on this machine.
#
# Then it turns to a gap that the table leaves open. Attention, the layer
# that chapter 5 builds, compares every token with every other token, and
# that comparison has no notion of where a token stands: you will see
# "dog bites man" and "man bites dog" give the word *bites* exactly the same
# vector. The model has to be told the order. You build the three answers
# that GPTs have used: a learned table of positions, as in GPT-2; the fixed
# sine waves of the original transformer; and rotary embeddings (RoPE),
# which rotate queries and keys so that attention sees only how far apart
# two tokens are. Each one is checked numerically, and RoPE is checked
# against MLX's own fused kernel.
#
# On the map of chapter 1 this is the box between the token ids and the
# transformer blocks. The chapter starts the module `mlxllm.model`; chapter 6
# assembles the GPT from the pieces exported here and in chapter 5.

# %%
#| default_exp model
import math

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, pick
from mlxllm.hardware import median_seconds

mx.random.seed(0)

# %% [markdown]
# ## An embedding is a lookup
#
# ### One-hot times a matrix
#
# A token id is a name, not a quantity: id 7 is not "more" than id 6, so
# feeding the number itself to a layer would invent an order that the
# vocabulary does not have. The honest encoding of an id among $V$ is a
# *one-hot* vector: $V$ zeros with a single one at the id. Multiply it by a
# matrix $W$ of shape $V \times D$ and the product is row `id` of $W$, a
# vector of $D$ numbers that training is free to move. Try it with a
# vocabulary of six ids and vectors of four numbers.

# %%
vocab_size, dims = 6, 4
weight = mx.random.normal((vocab_size, dims))
ids = mx.array([3, 0, 3, 5])
one_hot = (ids[:, None] == mx.arange(vocab_size)).astype(mx.float32)
print(one_hot)
print(one_hot @ weight)

# %% [markdown]
# Each row of `one_hot` selects one row of `weight`, and token 3, which
# occurs twice, gets the same vector twice. `nn.Embedding` is that product
# without the product: it stores the matrix as its `weight` and indexes it.
# Give it the same matrix and compare.

# %%
embedding = nn.Embedding(vocab_size, dims)
embedding.weight = weight
print(embedding(ids))
assert mx.array_equal(embedding(ids), one_hot @ weight).item()
assert mx.array_equal(embedding(ids), weight[ids]).item()

# %% [markdown]
# The two agree to the last bit, because every sum in the product adds a
# single nonzero term. The gradients agree too: the gradient of the product
# with respect to $W$ is zero on every row that no token selected, so
# training an embedding only ever updates the rows of the ids in the batch.
#
# ### Why the lookup is cheaper
#
# The product pays for all the zeros. For $T$ tokens it builds a $T \times V$
# one-hot matrix and does $T \cdot V \cdot D$ multiply-adds, while the lookup
# copies $T \cdot D$ numbers. Time both at the size of a real model: the
# 4,096-id vocabulary of chapter 3 and vectors of 384 numbers.

# %%
big_vocab, big_dims = 4096, 384
n_tokens = pick(smoke=256, book=2048)
table = mx.random.normal((big_vocab, big_dims))
token_ids = mx.random.randint(0, big_vocab, (n_tokens,))


def embed_by_product() -> mx.array:
    hot = token_ids[:, None] == mx.arange(big_vocab)
    return hot.astype(mx.float32) @ table


product_ms = 1e3 * median_seconds(embed_by_product)
lookup_ms = 1e3 * median_seconds(lambda: table[token_ids])
lookup_speedup = product_ms / lookup_ms
print(f"{n_tokens} tokens: product {product_ms:.2f} ms, "
      f"lookup {lookup_ms:.3f} ms")
assert mx.array_equal(embed_by_product(), table[token_ids]).item()

# %%
#| echo: false
assert lookup_speedup > 1

# %% [markdown]
# For {{ n_tokens:, }} tokens the product takes {{ product_ms:.1f }} ms and
# the lookup {{ lookup_ms:.2f }} ms, and both give the same array, as the
# assertion checks. The ratio grows with the vocabulary: the product's work is
# proportional to $V$, the lookup's does not depend on it at all. So the
# one-hot product is how you *think* about an embedding, as a linear layer
# whose input happens to be one-hot, and the lookup is how you compute it.
# The view pays off at the other end of the model, where a matrix of the
# same shape, used the other way round, turns the last vectors back into
# scores over the vocabulary.
#
# ## Attention cannot see order
#
# An embedding depends on the token and on nothing else: *dog* gets the same
# vector at the start of a sentence and at its end. The layer after it,
# self-attention, mixes those vectors, and chapter 5 builds it properly. Here
# a bare version is enough to show its blind spot: each token makes a query,
# a key and a value from its vector, scores every key against its query, and
# takes the softmax-weighted average of the values.

# %%
attn_dims = 16
w_query, w_key, w_value = (
    mx.random.normal((attn_dims, attn_dims)) / math.sqrt(attn_dims)
    for _ in range(3)
)


def self_attention(x: mx.array) -> mx.array:
    """Unmasked single-head attention: every token attends to every token."""
    queries, keys, values = x @ w_query, x @ w_key, x @ w_value
    scores = queries @ keys.T / math.sqrt(x.shape[-1])
    return mx.softmax(scores, axis=-1) @ values

# %% [markdown]
# Now feed it the two sentences. Both use the same three embeddings, only in
# a different order.

# %%
words = {"dog": 0, "bites": 1, "man": 2}
word_table = nn.Embedding(len(words), attn_dims)


def sentence(text: str) -> mx.array:
    return mx.array([words[word] for word in text.split()])


dog_first = self_attention(word_table(sentence("dog bites man")))
man_first = self_attention(word_table(sentence("man bites dog")))
bites_gap = mx.abs(dog_first[1] - man_first[1]).max().item()
print("bites, dog first:", dog_first[1, :4])
print("bites, man first:", man_first[1, :4])
print(f"largest difference: {bites_gap:.1e}")

# %% [markdown]
# The output for *bites* is the same in both sentences, up to rounding
# ({{ bites_gap:.0e }}). Nothing downstream can learn who bit whom from it.
# This is not an accident of three words. Swapping inputs swaps the rows of
# the scores and of the values together, and the softmax-weighted average
# does not care in which order it adds its terms: permute the input tokens
# and the output is permuted in the same way, and otherwise unchanged.
# Attention is *permutation equivariant*. Check it on twelve random tokens
# and a random shuffle.

# %%
shuffle_tokens = mx.random.normal((12, attn_dims))
shuffle = mx.random.permutation(12)
after_shuffle = self_attention(shuffle_tokens[shuffle])
shuffled_after = self_attention(shuffle_tokens)[shuffle]
shuffle_gap = mx.abs(after_shuffle - shuffled_after).max().item()
print(f"shuffle {shuffle.tolist()}: largest difference {shuffle_gap:.1e}")
assert mx.allclose(after_shuffle, shuffled_after, atol=1e-5).item()

# %% [markdown]
# Shuffling before attention or after it gives the same rows. Whatever order
# information the model needs, it must be written into the vectors
# themselves. (The causal mask of a GPT does break the symmetry a little, as
# chapter 5 shows, because a token sees only what comes before it; but a
# mask tells a token *how many* tokens precede it, not which is where, and
# every GPT adds positions anyway.)
#
# ## Learned absolute positions
#
# The most direct fix treats positions like tokens: a second table with one
# learned row per position, added to the token embedding. GPT-2 does exactly
# this, with 1,024 positions (Radford et al., 2019). In MLX it is one more
# `nn.Embedding`, indexed by `0, 1, ..., T - 1` instead of by the ids.

# %%
context = 8
position_table = nn.Embedding(context, attn_dims)


def embed_with_positions(ids: mx.array) -> mx.array:
    positions = mx.arange(ids.shape[-1])
    return word_table(ids) + position_table(positions)


dog_first = self_attention(embed_with_positions(sentence("dog bites man")))
man_first = self_attention(embed_with_positions(sentence("man bites dog")))
learned_gap = mx.abs(dog_first[1] - man_first[1]).max().item()
learned_change = (mx.linalg.norm(dog_first[1] - man_first[1])
                  / mx.linalg.norm(dog_first[1])).item()
print(f"bites: largest difference {learned_gap:.3f}, "
      f"{learned_change:.1%} of the vector's length")
assert learned_change > 1e-2

# %% [markdown]
# With positions added, *bites* comes out different in the two sentences,
# because *dog* at position 0 is no longer the same vector as *dog* at
# position 2. The change, {{ learned_change:.0%}} of the vector's length, is
# modest only because this attention is untrained: its random weights spread
# each token's attention almost evenly, and an even average of the same
# values is the same in any order. Training sharpens the weights. The table
# costs `context × dims` parameters and learns whatever positional pattern
# helps the loss, which is its strength.
#
# Its limit is just as plain: there is no row for position `context`. A
# model trained on windows of 256 tokens has nothing to say about token 257,
# and the rows for late positions are trained only as often as sequences
# reach them. And MLX does not check the index of a lookup. Ask the table
# for the row after its last:

# %%
past_the_end = position_table(mx.array([context]))  # rows 0 .. context - 1
mx.eval(past_the_end)  # no IndexError: numbers from the memory that follows
assert past_the_end.shape == (1, attn_dims)

# %% [markdown]
# The lookup returns a row of whatever memory follows the table, without an
# error, so the model code must stop the context itself.
#
# ## Sinusoidal positions
#
# The original transformer used no table at all (Vaswani et al., 2017).
# Position $p$ gets a fixed vector of sines and cosines at $D/2$
# frequencies, from one turn per $2\pi$ positions down to one turn per
# $2\pi \cdot 10000$ positions:
#
# $$PE_{p,\,2i} = \sin(p\,\omega_i), \quad PE_{p,\,2i+1} = \cos(p\,\omega_i),
# \quad \omega_i = \text{base}^{-2i/D}$$ {#eq-sinusoidal}
#
# with base 10,000. This book follows the paper's layout: sines in the even
# columns, cosines in the odd ones, so columns $2i$ and $2i + 1$ form a pair
# at the same frequency. (Some code concatenates all the sines and then all
# the cosines; that is the same matrix with its columns permuted, and
# exercise 4.1 checks that nothing of substance changes.) The function below is
# the first export of `mlxllm.model`, so its cell carries the module's
# imports.

# %%
#| export
import mlx.core as mx


def sinusoidal_positions(
    context: int, dims: int, base: float = 10000.0
) -> mx.array:
    """Fixed position vectors (context, dims) of Vaswani et al. (2017):
    sin(p·ω_i) in column 2i, cos(p·ω_i) in column 2i + 1."""
    if dims % 2:
        raise ValueError(f"dims must be even, got {dims}")
    freqs = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    angles = mx.arange(context, dtype=mx.float32)[:, None] * freqs
    waves = mx.stack([mx.sin(angles), mx.cos(angles)], axis=-1)
    return waves.reshape(context, dims)

# %% [markdown]
# `angles` has one row per position and one column per frequency; stacking
# sines and cosines on a new last axis and flattening it interleaves them.
# @fig-sinusoidal shows the matrix for 128 positions of 128 numbers each.

# %%
sinusoidal = sinusoidal_positions(128, 128)
print(sinusoidal.shape)
print(sinusoidal[:3, :6])

# %%
#| echo: false
assert sinusoidal.shape == (128, 128)
assert mx.array_equal(sinusoidal[0, 0::2], mx.zeros(64)).item()
assert mx.array_equal(sinusoidal[0, 1::2], mx.ones(64)).item()
assert abs(sinusoidal[1, 0].item() - math.sin(1.0)) < 1e-6

# %%
#| echo: false
#| label: fig-sinusoidal
#| fig-cap: Sinusoidal position vectors, one row per position. The first columns oscillate fast and tell close positions apart; the last ones barely change over 128 positions and say roughly where in a long text a token is.
plt.figure(figsize=(5.2, 3.2))
plt.imshow(np.array(sinusoidal), aspect="auto", cmap="RdBu_r",
           vmin=-1, vmax=1, interpolation="nearest")
plt.colorbar(label="value")
plt.grid(False)
plt.xlabel("column of the position vector")
plt.ylabel("position")

# %% [markdown]
# Read a row of @fig-sinusoidal as a number written in many clocks at
# once: the hands of the fast clocks on the left tell neighbours apart, the
# slow ones on the right tell the start of a long text from its end, and no
# two positions show the same time on all of them. Because every value lies
# in $[-1, 1]$, the vector has the same scale at position 5 and at position
# 5,000, unlike the raw number $p$.
#
# ### Dot products depend on the offset
#
# The property that made the authors pick sines is in the dot product of two
# position vectors. Each pair of columns contributes
#
# $$\sin(i\omega)\sin(j\omega) + \cos(i\omega)\cos(j\omega) =
# \cos\big((j - i)\,\omega\big),$$
#
# so their sum over the $D/2$ pairs is
#
# $$PE_i \cdot PE_j = \sum_{k=0}^{D/2-1} \cos\big((j - i)\,\omega_k\big),$$
#
# a function of the offset $j - i$ alone. Check it: take the dot products
# from several starting positions $i$ and line them up by offset.

# %%
positions_256 = sinusoidal_positions(256, 128)
gram = np.array(positions_256 @ positions_256.T)
offsets = np.arange(-64, 128)
starts = [64, 96, 128]
curves = {i: gram[i, i + offsets] for i in starts}
offset_gap = max(np.abs(curves[i] - curves[starts[0]]).max()
                 for i in starts)
print(f"dot products at offsets -64..127 from positions {starts}:")
print(f"largest difference between the curves {offset_gap:.1e}")
assert offset_gap < 1e-3

# %%
#| echo: false
#| label: fig-sinusoidal-offsets
#| fig-cap: Dot products of sinusoidal position vectors (128 numbers each) against the offset j − i, from three starting positions i. The three curves lie on top of each other; the peak at offset 0 is the squared length of a vector, D/2.
for i, style in zip(starts, ["-", "--", ":"]):
    plt.plot(offsets, curves[i], style, label=f"i = {i}")
plt.xlabel("offset j − i (positions)")
plt.ylabel("dot product PE_i · PE_j")
plt.legend()

# %% [markdown]
# @fig-sinusoidal-offsets shows one curve where there are three: the curves
# differ by at most {{ offset_gap:.0e }}, float32 rounding of the sines. The
# dot product also falls off, roughly, as the offset grows, so nearby
# positions look alike. Moving from position $i$ to $i + k$ is even a fixed
# linear map, a rotation of every pair of columns by $k\,\omega$, which the
# paper hoped would let attention learn relative offsets.
#
# Hope is the operative word. The model *adds* these vectors to the token
# embeddings and then projects the sum into queries and keys, so a score
# mixes content with content, content with position and position with
# position, and only the last term is purely relative. The scheme also has
# no parameters and a value for every position, yet a model trained on 256
# positions has never *seen* position 300, and nothing makes it behave
# sensibly there. Rotary embeddings take the good idea, rotation
# by position, and put it exactly where attention needs it.
#
# ## Rotary position embeddings
#
# ### Rotate, do not add
#
# Rotary position embeddings, RoPE (Su et al., 2021), leave the token
# embeddings alone. Instead, inside attention, they rotate each query and
# each key by an angle proportional to its position. Take one pair of
# numbers $(x_1, x_2)$ of a query at position $m$ and rotate it by
# $m\theta$:
#
# $$\begin{pmatrix} x_1' \\ x_2' \end{pmatrix} =
# \begin{pmatrix} \cos m\theta & -\sin m\theta \\
# \sin m\theta & \cos m\theta \end{pmatrix}
# \begin{pmatrix} x_1 \\ x_2 \end{pmatrix}$$ {#eq-rotation}
#
# Rotate a key pair at position $n$ by $n\theta$ the same way. A dot product
# only sees the angle *between* two vectors, so the score of the pair
# depends on the content and on $(m - n)\theta$, the difference of the
# positions, and on nothing else. RoPE splits the $D$ features of a query
# into $D/2$ pairs and rotates pair $i$ at the frequency
# $\theta_i = \text{base}^{-2i/D}$, the same ladder of frequencies as
# @eq-sinusoidal.
#
# ### Which features form a pair
#
# There are two conventions for the pairs. The paper pairs neighbours,
# features $(0, 1), (2, 3), \ldots$; MLX calls this layout *traditional*.
# The other, common in today's open-source model code, pairs
# feature $i$ with feature $i + D/2$: the first half of the features
# rotates against the second half, and the code needs two slices instead of
# a reshape into pairs. This book uses the half layout.

# %%
#| export
def rope(
    x: mx.array, base: float = 10000.0, offset: int = 0
) -> mx.array:
    """Rotary embedding of x (..., T, D), half layout: feature i rotates
    with feature i + D/2 by angle (offset + t)·base^(-2i/D) at position t."""
    steps, dims = x.shape[-2], x.shape[-1]
    if dims % 2:
        raise ValueError(f"the last dimension must be even, got {dims}")
    half = dims // 2
    freqs = base ** (-mx.arange(half, dtype=mx.float32) / half)
    positions = mx.arange(offset, offset + steps, dtype=mx.float32)
    angles = positions[:, None] * freqs
    cos, sin = mx.cos(angles), mx.sin(angles)
    first, second = x[..., :half], x[..., half:]
    rotated = [first * cos - second * sin, first * sin + second * cos]
    return mx.concatenate(rotated, axis=-1).astype(x.dtype)

# %% [markdown]
# `angles` is (T, D/2) and broadcasts against the leading axes of `x`, so
# one call rotates a whole batch of heads. The `offset` shifts every
# position: when text is generated with a cache of earlier keys, which
# chapter 9 adds, the model sees one new token at position `offset`
# and must rotate it as if the whole sequence had been there. The last
# line keeps the input's dtype, since the angles are computed in float32
# whatever `x` is.
#
# MLX ships the same operation as a fused kernel, `mx.fast.rope`, which
# takes the number of features to rotate, the layout, the base, a scale for
# the positions and the offset. Compare on queries shaped like a real
# attention layer's, (batch, heads, T, head dims).

# %%
queries = mx.random.normal((2, 4, 64, 32))
for base, offset in [(10000.0, 0), (10000.0, 37), (500.0, 5)]:
    mine = rope(queries, base=base, offset=offset)
    fused = mx.fast.rope(queries, 32, traditional=False, base=base,
                         scale=1.0, offset=offset)
    gap = mx.abs(mine - fused).max().item()
    print(f"base {base:>7}, offset {offset:>2}: largest difference "
          f"{gap:.1e}")
    assert mx.allclose(mine, fused, rtol=1e-4, atol=1e-4).item()

# %% [markdown]
# The two agree to float32 rounding for every base and offset. The
# difference grows a little with the position, because a large angle
# $p\theta$ carries a larger absolute rounding error than a small one; it
# stays far below anything training would notice.
#
# The layouts differ only by the order of the features. Put the even
# features first and the odd ones after, and the traditional rotation of
# `x` becomes the half rotation of the reordered `x`; the check below shows
# it, and also that an offset equals cutting the front off a longer
# sequence.

# %%
half_order = mx.concatenate([mx.arange(0, 32, 2), mx.arange(1, 32, 2)])
traditional = mx.fast.rope(queries, 32, traditional=True, base=10000.0,
                           scale=1.0, offset=0)
assert mx.allclose(rope(queries[..., half_order]),
                   traditional[..., half_order], atol=1e-4).item()
assert mx.allclose(rope(queries)[..., 10:, :],
                   rope(queries[..., 10:, :], offset=10), atol=1e-4).item()

# %% [markdown]
# That permutation is the trap to watch for when you load weights trained
# elsewhere. A checkpoint trained with one layout and run with the other
# still produces fluent-looking numbers, because nothing fails, but every
# query and key is rotated in the wrong planes and the model's output is
# garbage. The fix is to reorder the rows of the query and key projections,
# or to pass the right `traditional` flag.
#
# ### Scores depend only on the offset
#
# The claim of @eq-rotation is that after RoPE a query at position $m$ and
# a key at position $n$ score $q_m \cdot k_n$ as a function of $m - n$.
# Test it the direct way: one query vector and one key vector, copied to
# every position of a sequence, rotated, and scored against each other.

# %%
head_dims, steps = 64, 160
query = mx.random.normal((head_dims,))
key = mx.random.normal((head_dims,))
rotated_q = rope(mx.broadcast_to(query, (1, steps, head_dims)))[0]
rotated_k = rope(mx.broadcast_to(key, (1, steps, head_dims)))[0]
rope_scores = np.array(rotated_q @ rotated_k.T)
query_positions = [40, 80, 120]
key_offsets = np.arange(-40, 40)
rope_curves = {m: rope_scores[m, m + key_offsets] for m in query_positions}
rope_gap = max(np.abs(rope_curves[m] - rope_curves[40]).max()
               for m in query_positions)
print(f"scores at offsets n - m in -40..39, from m = {query_positions}")
print(f"largest difference between the curves: {rope_gap:.1e}")
assert rope_gap < 1e-3

# %% [markdown]
# The same query and key give the same score whenever they are the same
# distance apart, wherever the pair sits in the sequence: the curves from
# three query positions differ by at most {{ rope_gap:.0e }}. For contrast,
# do what the original transformer does, add sinusoidal positions to both
# vectors, and score again.

# %%
added = sinusoidal_positions(steps, head_dims)
added_scores = np.array((query + added) @ (key + added).T)
added_curves = {m: added_scores[m, m + key_offsets]
                for m in query_positions}
added_gap = max(np.abs(added_curves[m] - added_curves[40]).max()
                for m in query_positions)
print(f"added positions: largest difference {added_gap:.1f}")
assert added_gap > 100 * rope_gap

# %%
#| echo: false
#| label: fig-rope-scores
#| fig-cap: The score of one query and one key, 64 numbers each, placed at positions m and n, against n − m, for three query positions m. With RoPE (left) the three curves coincide; with sinusoidal positions added to the vectors (right) the score also depends on where the pair sits.
fig, axes = plt.subplots(1, 2, figsize=(5.5, 2.75), sharex=True)
panels = [(axes[0], rope_curves, "RoPE"),
          (axes[1], added_curves, "added sinusoidal")]
for ax, panel_curves, title in panels:
    for m, style in zip(query_positions, ["-", "--", ":"]):
        ax.plot(key_offsets, panel_curves[m], style, label=f"m = {m}")
    ax.set_title(title)
    ax.set_xlabel("offset n − m (positions)")
axes[0].set_ylabel("score q · k")
fig.tight_layout(rect=(0, 0, 1, 0.91))  # the legend goes above the panels
fig.legend(*axes[1].get_legend_handles_labels(), loc="upper center",
           ncol=len(query_positions), bbox_to_anchor=(0.5, 1.0))

# %% [markdown]
# In @fig-rope-scores the left panel is one curve drawn three times; the
# right one is three curves, apart by up to {{ added_gap:.1f }}, because
# the cross terms between content and absolute position change as the pair
# moves. That is the property RoPE buys: attention patterns that depend on
# "three tokens back" transfer unchanged to every place in the text, with
# no parameters at all. Positions beyond the trained context are still
# defined, but the model has only seen offsets up to its context, so RoPE
# alone does not make a model work on longer texts; it makes the extension
# easier, because only the unseen offsets are new.
#
# ## What each scheme costs
#
# The three schemes differ in parameters, in what they store, and in what
# they do past the context they were trained on. @tbl-position-costs counts
# them at the two sizes this book trains: a context of 64 tokens with
# vectors of 128 numbers, and 256 tokens with 384. The token table of
# chapter 3's 4,096-id vocabulary is there for scale.

# %%
#| echo: false
#| label: tbl-position-costs
#| tbl-cap: Parameters and stored numbers of each way to encode positions, at the book's two model sizes, with a 4,096-id token table for scale.
sizes = [(64, 128), (256, 384)]


def count_parameters(module: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(module.parameters()))


learned_counts = [count_parameters(nn.Embedding(c, d)) for c, d in sizes]
sinusoidal_counts = [sinusoidal_positions(c, d).size for c, d in sizes]
rope_counts = [d // 2 for _, d in sizes]
token_counts = [count_parameters(nn.Embedding(4096, d)) for _, d in sizes]
cost_rows = [
    ("learned table", *learned_counts, "the parameters", "no row"),
    ("sinusoidal", 0, 0, f"{sinusoidal_counts[0]:,} / "
     f"{sinusoidal_counts[1]:,} values", "computed, never trained"),
    ("RoPE", 0, 0, f"{rope_counts[0]} / {rope_counts[1]} frequencies",
     "computed, offsets unseen"),
    ("token table, 4,096 ids", *token_counts, "the parameters", "—"),
]
Table(cost_rows, ["scheme", "params 64 × 128", "params 256 × 384",
                  "stored", "past the context"])

# %% [markdown]
# The learned table costs {{ learned_counts[1]:, }} parameters at the larger
# size, a small fraction of the {{ token_counts[1]:, }} of the token table,
# so parameters are not what decides between the schemes. What decides is
# behaviour: the learned table and the added sines put position into the
# vectors once, at the bottom of the model, where every later layer has to
# carry it along; RoPE puts it into every attention score, in the form
# attention can use, and costs almost nothing to store. That is why RoPE
# has become the common choice of open models.
#
# ## Summary
#
# You saw that an embedding is a one-hot vector times a matrix, computed as
# a lookup that was {{ lookup_speedup:.0f }} times faster here, and that
# attention without positions is blind to order: permute the tokens and its
# output is permuted the same way, so *dog bites man* and *man bites dog*
# give *bites* the same vector. You built three fixes: a learned table,
# which stops at its last row; sinusoidal vectors, whose dot products depend
# only on the offset; and rotary embeddings, which make the attention score
# itself depend only on the offset, and which you checked against
# `mx.fast.rope` in both layouts.
#
# The new module `mlxllm.model` exports:
#
# - `sinusoidal_positions(context, dims, base=10000.0)`, the fixed
#   (context, dims) position vectors, sines in even columns and cosines in
#   odd ones;
# - `rope(x, base=10000.0, offset=0)`, the rotary embedding of `x` shaped
#   (..., T, D) in the half layout, equal to
#   `mx.fast.rope(x, D, traditional=False, base=base, scale=1.0,
#   offset=offset)`.
#
# Token and learned position tables need no code of their own:
# `nn.Embedding` is both. Chapter 5 builds attention and its mask, and
# chapter 6 assembles the GPT from these pieces.
#
# ## Exercises
#
# 1. ★ Concatenated halves. Write a variant of `sinusoidal_positions` with
#    all the sines in the first half of the columns and all the cosines in
#    the second. Show that it is the paper's matrix with its columns
#    permuted, and that the dot products between positions are identical.
# 2. ★ The traditional layout from scratch. Write `rope_traditional(x,
#    base, offset)` that rotates neighbouring pairs $(2i, 2i + 1)$, with a
#    reshape into pairs rather than a permutation, and check it against
#    `mx.fast.rope(..., traditional=True)`.
# 3. ★★ Order restored. Repeat the *dog bites man* experiment with
#    sinusoidal positions added to the embeddings, and with RoPE applied to
#    the queries and keys inside `self_attention`. Does *bites* now differ?
#    With RoPE, what happens when both sentences are shifted by the same
#    offset?
# 4. ★★ Long-range decay. Su et al. (2021) argue that RoPE scores decay as
#    the offset grows. Plot the score of a query and a key that are both
#    all ones against the offset, for bases 100, 1,000 and 10,000. How does
#    the base change the distance at which the score first drops below half
#    its peak, and why?
# 5. ★★★ Stretching the context. Add a `scale` argument to `rope` that
#    multiplies the positions, check it against `mx.fast.rope(...,
#    scale=scale)`, and use it to fit a sequence four times longer than a
#    trained context of 64 into the positions the model saw in training
#    (*position interpolation*, Chen et al., 2023). Measure how the scores
#    at short offsets change under the stretch, and argue whether a model
#    would need fine-tuning afterwards.
