# %% [markdown]
# # Chapter 5
#
# The solutions import the attention that chapter 5 exported to
# `mlxllm.model`.

# %%
import math

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.book import pick
from mlxllm.model import (
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)

mx.random.seed(5)

# %% [markdown]
# ## Exercise 5.1
#
# With as many queries as keys, the string `"causal"` and the boolean lower
# triangle are the same mask.

# %%
q, k, v = (mx.random.normal((1, 2, 8, 16)) for _ in range(3))
scale = 1 / math.sqrt(16)
square = mx.fast.scaled_dot_product_attention(
    q, k, v, scale=scale, mask="causal")
assert mx.allclose(square, scaled_dot_product_attention(
    q, k, v, causal_mask(8)), atol=1e-5).item()

# %% [markdown]
# With 3 queries and 8 keys, MLX aligns the *last* query with the *last*
# key ("lower-right"): the queries are the three newest positions of an
# 8-token text, so query $i$ sees keys $j \le i + 5$. `causal_mask(3)`
# would be the wrong shape, and its upper-left alignment would hide the
# keys the new tokens must see.

# %%
new_q = q[:, :, -3:]
offset = k.shape[2] - new_q.shape[2]
sees = (mx.arange(8)[None, :]
        <= mx.arange(3)[:, None] + offset)
print(np.array(sees).astype(int))
rect = mx.fast.scaled_dot_product_attention(
    new_q, k, v, scale=scale, mask="causal")
assert mx.allclose(rect, scaled_dot_product_attention(
    new_q, k, v, sees), atol=1e-5).item()
assert mx.allclose(rect, square[:, :, -3:], atol=1e-5).item()

# %% [markdown]
# The last check is the reason for the convention: the three new queries
# get exactly the outputs they had as the last three rows of the full
# square, which is what generation with a cache of keys and values needs.
#
# ## Exercise 5.2
#
# Multiply the queries by $c$ and the scaled scores are multiplied by $c$:
# $c$ is an inverse temperature. The target is the entropy of unscaled
# scores at $d_k = 1024$, whose spread is $\sqrt{1024} = 32$ times that of
# scaled ones.

# %%
def softmax_entropy(scores: mx.array) -> float:
    weights = mx.softmax(scores, axis=-1, precise=True)
    return -(weights * mx.log(weights + 1e-30)).sum(-1).mean().item()


keys = mx.random.normal((64, 64))
queries = mx.random.normal((pick(smoke=16, book=256), 64))
wide = mx.random.normal((queries.shape[0], 1024))
target = softmax_entropy(wide @ mx.random.normal((64, 1024)).T)
factors = [1, 2, 4, 8, 16, 32, 64]
entropies = [softmax_entropy(c * queries @ keys.T / 8)
             for c in factors]
for c, entropy in zip(factors, entropies):
    print(f"c = {c:>2}: entropy {entropy:.2f} nats")
match = min(factors,
            key=lambda c: abs(entropies[factors.index(c)]
                              - target))
print(f"unscaled d_k = 1024: {target:.2f} nats, closest c = {match}")
assert match in (16, 32, 64)

# %% [markdown]
# The entropy falls steadily with $c$, and the unscaled width-1,024 scores,
# at {{ target:.2f }} nats, sit closest to $c$ = {{ match }}.
# Near $\sqrt{1024} = 32$, as expected: leaving out the scale is the same
# as running every head at a temperature of $1/\sqrt{d_k}$. A learned head
# can sharpen itself by growing its queries, as the hand-built heads of
# the chapter did, but it starts from a sensible temperature.
#
# ## Exercise 5.3
#
# Cross-attention changes only where the keys and values come from, so it
# can inherit everything else from `MultiHeadAttention`.

# %%
class CrossAttention(MultiHeadAttention):
    """Queries from x, keys and values from another sequence, `source`."""

    def __call__(self, x: mx.array, source: mx.array,
                 mask: mx.array | None = None) -> mx.array:
        batch, length, dims = x.shape
        q = self.split_heads(self.query_proj(x))
        k = self.split_heads(self.key_proj(source))
        v = self.split_heads(self.value_proj(source))
        out = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(0, 2, 1, 3).reshape(batch, length, dims)
        return self.out_proj(out)


cross = CrossAttention(32, 4, bias=True)
reference = nn.MultiHeadAttention(32, 4, bias=True)
reference.update(cross.parameters())
x = mx.random.normal((2, 5, 32))
source = mx.random.normal((2, 9, 32))
out = cross(x, source)
print(out.shape)
assert mx.allclose(out, reference(x, source, source),
                   atol=1e-5).item()

# %% [markdown]
# Five queries attend over nine positions of another sequence and produce
# five outputs; the score matrix of each head is 5 × 9, no longer square.
# This is the layer an encoder-decoder translator uses to read the source
# sentence; a GPT has no second sequence and needs only self-attention.
#
# ## Exercise 5.4
#
# Each chunk of queries needs all the keys, but only its own rows of the
# mask and of the scores.

# %%
def chunked(q: mx.array, k: mx.array, v: mx.array, mask: mx.array,
            chunk: int) -> mx.array:
    """Attention computed `chunk` queries at a time."""
    outputs = []
    for start in range(0, q.shape[2], chunk):
        piece = scaled_dot_product_attention(
            q[:, :, start:start + chunk], k, v, mask[start:start + chunk])
        mx.eval(piece)
        outputs.append(piece)
    return mx.concatenate(outputs, axis=2)


length = pick(smoke=512, book=2048)
long = [mx.random.normal((1, 4, length, 32)) for _ in range(3)]
mask = causal_mask(length)
mx.eval(long, mask)
full = scaled_dot_product_attention(*long, mask)
mx.eval(full)
peaks = {}
for chunk in (length, length // 4, length // 16):
    mx.reset_peak_memory()
    before = mx.get_active_memory()  # arrays earlier solutions still hold
    out = chunked(*long, mask, chunk)
    peaks[chunk] = (mx.get_peak_memory() - before) / 2**20
    assert mx.allclose(out, full, atol=1e-5).item()
    print(f"chunk {chunk:>5}: peak {peaks[chunk]:.1f} MB")
assert peaks[length // 16] < peaks[length] / 2

# %% [markdown]
# Every chunk size gives the same output, and the peak memory it adds falls with
# the chunk, from {{ peaks[length]:.1f }} MB for the whole
# sequence at once to {{ peaks[length // 16]:.1f }} MB for chunks
# of {{ length // 16 }} queries. The `mx.eval` inside the loop
# matters: without it MLX builds the whole graph lazily and may hold every
# chunk's scores at once. The work is unchanged, $O(T^2)$; only the memory
# drops, to $O(\text{chunk} \times T)$.
#
# ## Exercise 5.5
#
# The online softmax keeps three running quantities per query: the largest
# score so far $m$, the sum of $e^{s - m}$ so far $\ell$, and the sum of
# $e^{s - m} v$ so far. When a block raises the maximum from $m$ to $m'$,
# the old sums are multiplied by $e^{m - m'}$, which restates them relative
# to the new maximum; at the end, the output is the weighted sum over
# $\ell$.

# %%
def online(q: mx.array, k: mx.array, v: mx.array, mask: mx.array,
           block: int) -> mx.array:
    """Attention over blocks of keys with a running (online) softmax."""
    q = q * (1 / math.sqrt(q.shape[-1]))
    lowest = mx.finfo(q.dtype).min
    best = mx.full((*q.shape[:-1], 1), lowest)
    total = mx.zeros((*q.shape[:-1], 1))
    acc = mx.zeros(q.shape)
    for start in range(0, k.shape[2], block):
        keys = slice(start, start + block)
        scores = q @ k[:, :, keys].swapaxes(-1, -2)
        scores = mx.where(mask[:, keys], scores, lowest)
        new_best = mx.maximum(best, scores.max(-1, keepdims=True))
        rescale = mx.exp(best - new_best)
        weights = mx.exp(scores - new_best)
        total = total * rescale + weights.sum(-1, keepdims=True)
        acc = acc * rescale + weights @ v[:, :, keys]
        best = new_best
        mx.eval(best, total, acc)
    return acc / total


mx.reset_peak_memory()
online_before = mx.get_active_memory()
flash = online(*long, mask, block=length // 16)
online_peak = (mx.get_peak_memory() - online_before) / 2**20
print(f"online softmax: peak {online_peak:.1f} MB, max difference "
      f"{mx.abs(flash - full).max().item():.1e}")
assert mx.allclose(flash, full, atol=1e-5).item()
assert online_peak < peaks[length] / 2

# %% [markdown]
# The result equals `scaled_dot_product_attention` to float32 rounding,
# causal mask included, and the peak memory is
# {{ online_peak:.1f }} MB against {{ peaks[length]:.1f }} MB:
# no array of size $T \times T$ ever exists, only blocks of $T \times$
# {{ length // 16 }}. This is the idea of FlashAttention, which also
# splits the queries into blocks and keeps each block's running sums in
# the GPU's fast on-chip memory, so that the scores never travel to main
# memory at all. Causal attention can go one step further and skip the
# blocks of keys that a block of queries cannot see, which halves the work.
