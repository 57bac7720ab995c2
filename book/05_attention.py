# %% [markdown]
# # Attention from scratch
#
# Chapter 4 turned every token into a vector that knows what it is and where
# it sits. Each vector still knows nothing about its neighbours. Attention is
# the step where they talk: every position asks a question, every position
# offers an answer, and each one leaves with a weighted average of what the
# others had to say. It is the one part of a transformer that mixes
# information across positions (Vaswani et al., 2017), so it decides what
# the model can use from its context, and it is where the cost of a long
# context comes from.
#
# In this chapter you write attention out in full in MLX, from the dot
# products to the softmax, and check it against MLX's fused kernel. You read
# queries, keys and values on a real line of Shakespeare, measure why the
# scores are divided by $\sqrt{d_k}$, build the causal mask and find out
# what the two usual ways of writing it do at the edges of floating point.
# Then you split attention into heads, check your layer against
# `nn.MultiHeadAttention` weight for weight, measure how time and memory
# grow with the length of the sequence (at {{ cost_lengths[-1]:, }}
# positions the attention scores alone take
# {{ score_megabytes[-1]:.0f }} MB), and watch the attention patterns of a
# small model form while it learns.
#
# On the map of chapter 1 this is the attention box inside each block. The
# code goes to `mlxllm.model`, next to chapter 4's positions, and chapter 6
# assembles the GPT from it.

# %%
#| default_exp model
import math
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from matplotlib.patches import Rectangle

from mlxllm.book import Table, pick
from mlxllm.data import BatchSampler, load_corpus, split_train_val

# %% [markdown]
# ## Scaled dot-product attention
#
# Picture one position of a sequence, say the last letter of a word. It
# needs information from earlier positions, but which ones depends on the
# text, so the choice cannot be a fixed set of weights. Attention computes
# the choice from the data. Each position $i$ has a *query* vector $q_i$
# ("what am I looking for?"), each position $j$ a *key* $k_j$ ("what do I
# contain?") and a *value* $v_j$ ("what do I pass on if chosen?"). The
# score of $j$ for $i$ is the dot product $q_i \cdot k_j$, large when the
# two point the same way. A softmax over $j$ turns the scores into weights
# that are positive and sum to one, and the output at $i$ is the weighted
# average of the values. Stacked into matrices, with $d_k$ the length of a
# query:
#
# $$\text{Attention}(Q, K, V) =
# \text{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V$$ {#eq-attention}
#
# $M$ is a mask, zero where a query may look and $-\infty$ where it may not;
# the division by $\sqrt{d_k}$ gets its own section below. The idea of
# letting a network choose what to read by a softmax over scores comes from
# machine translation (Bahdanau et al., 2015); @eq-attention is the form of
# the transformer (Vaswani et al., 2017).
#
# The first exported cell carries the imports of the module. It splits the
# computation in two: `attention_weights` stops after the softmax, so that
# this chapter can draw the weights, and `scaled_dot_product_attention`
# multiplies them by the values.

# %%
#| export
import math

import mlx.core as mx
import mlx.nn as nn


def attention_weights(
    q: mx.array, k: mx.array, mask: mx.array | None = None
) -> mx.array:
    """softmax(q kᵀ / √d_k) over the keys; `mask` is boolean (True: may
    attend) or additive (added to the scores)."""
    scores = (q * (1 / math.sqrt(q.shape[-1]))) @ k.swapaxes(-1, -2)
    if mask is not None:
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, mx.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    return mx.softmax(scores, axis=-1, precise=True)


def scaled_dot_product_attention(
    q: mx.array, k: mx.array, v: mx.array, mask: mx.array | None = None
) -> mx.array:
    """Attention of (B, H, T, D) queries over keys and values: (B, H, T, D)."""
    return attention_weights(q, k, mask) @ v

# %% [markdown]
# Notice three choices. The scale multiplies the queries, a $T \times d_k$
# array, before the product, rather than the $T \times T$ scores after it:
# the same result for less work. A boolean mask puts the most negative
# number of the scores' type where attention is forbidden, which the
# softmax turns into a weight of zero; the section on masks shows why not
# $-\infty$. And `precise=True` makes the softmax add up in float32 even
# when the scores are bfloat16, as MLX's fused kernel does.
#
# That kernel, `mx.fast.scaled_dot_product_attention`, computes the same
# function in one pass. Yours must agree with it, with no mask, with a
# boolean mask and with an additive one.

# %%
mx.random.seed(0)
q, k, v = (mx.random.normal((2, 3, 10, 16)) for _ in range(3))
bool_mask = mx.random.uniform(shape=(10, 10)) < 0.7
bool_mask = bool_mask | mx.eye(10, dtype=mx.bool_)  # every row sees itself
additive_mask = mx.where(bool_mask, 0.0, -1e9)
scale = 1 / math.sqrt(q.shape[-1])
for mask in (None, bool_mask, additive_mask):
    mine = scaled_dot_product_attention(q, k, v, mask)
    fused = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale,
                                                 mask=mask)
    assert mx.allclose(mine, fused, atol=1e-5).item()
    print(mine.shape,
          f"max difference {mx.abs(mine - fused).max().item():.1e}")

# %% [markdown]
# The three pairs agree to float32 rounding. The shapes are
# (batch, heads, positions, dimensions), the layout both functions expect;
# where the heads come from is the subject of the multi-head section.
#
# ## Queries, keys and values
#
# Where do $Q$, $K$ and $V$ come from? From the same input. Each position's
# vector $x_i$ goes through three learned linear maps:
#
# $$q_i = x_i W_Q, \qquad k_i = x_i W_K, \qquad v_i = x_i W_V$$
#
# Three maps rather than one because the three roles differ. A query says
# what a position wants, a key says what it offers, and the two need not be
# alike: a letter at the end of a word may want the space that began it,
# which is not a letter at all. With one shared map the score
# $x_i W W^\top x_j^\top$ would be symmetric, so $i$ would like $j$ exactly
# as much
# as $j$ likes $i$. The value is separate again because what a position is
# *found by* need not be what it *passes on*. @fig-qkv-shapes draws the
# shapes for one sequence.

# %%
#| echo: false
#| label: fig-qkv-shapes
#| fig-cap: The shapes of single-head attention for one sequence of T positions. Three projections of the same input give Q, K and V; the scores and weights are T × T, one row per query; the output has one row per position again.
def box(ax, x, y, width, height, label, shape, color, shape_right=False):
    """A matrix drawn as a rectangle with its name and, below it or to
    its right, its shape."""
    ax.add_patch(Rectangle((x, y), width, height, facecolor=color,
                           edgecolor="black", linewidth=0.8))
    ax.text(x + width / 2, y + height / 2, label, ha="center",
            va="center", fontsize=8.5)
    if shape_right:
        ax.text(x + width + 0.3, y + height / 2 - 0.4, shape, ha="left",
                va="center", fontsize=7.5)
    else:
        ax.text(x + width / 2, y - 0.3, shape, ha="center", va="top",
                fontsize=7.5)


def arrow(ax, start, end, label="", elbow=False):
    """An arrow from start to end, labelled above its first stretch; an
    elbow arrow runs across, then up or down."""
    style = "angle,angleA=0,angleB=90,rad=0" if elbow else "arc3"
    ax.annotate("", xy=end, xytext=start,
                arrowprops=dict(arrowstyle="->", linewidth=0.8, shrinkA=0,
                                shrinkB=0, connectionstyle=style))
    ax.text((start[0] + end[0]) / 2, start[1] + 0.2, label, ha="center",
            va="bottom", fontsize=7.5)


fig, ax = plt.subplots(figsize=(5.5, 2.9))
box(ax, 0, -1.2, 1.6, 2.4, "$X$", r"$T \times d$", "#dddddd")
ax.plot([1.6, 2.6, 2.6, 2.6], [0, 0, -4.2, 4.2], color="black",
        linewidth=0.8)
for y, name, width, color in ((4.2, "Q", "k", "#56B4E9"),
                              (0, "K", "k", "#E69F00"),
                              (-4.2, "V", "v", "#009E73")):
    box(ax, 5.0, y - 1.2, 0.8, 2.4, f"${name}$", rf"$T \times d_{width}$",
        color)
    arrow(ax, (2.6, y), (5.0, y), rf"$\times W_{name}$")
box(ax, 8.4, 0.9, 3.6, 2.4, r"$QK^{\top}\!/\sqrt{d_k}$", r"$T \times T$",
    "#CC79A7")
ax.text(10.2, 3.55, "scores", ha="center", va="bottom", fontsize=7.5)
arrow(ax, (5.8, 4.2), (8.4, 2.9))
arrow(ax, (5.8, 0), (8.4, 1.3))
box(ax, 15.0, 0.9, 2.4, 2.4, "$A$", r"$T \times T$", "#F0E442")
ax.text(16.2, 3.55, "weights", ha="center", va="bottom", fontsize=7.5)
arrow(ax, (12.0, 2.1), (15.0, 2.1), "softmax")
box(ax, 19.4, -2.4, 1.2, 2.4, "$AV$", r"$T \times d_v$", "#56B4E9",
    shape_right=True)
ax.text(20.9, -0.6, "output", ha="left", va="center", fontsize=7.5)
arrow(ax, (17.4, 2.1), (20.0, 0.0), elbow=True)
arrow(ax, (5.8, -4.2), (20.0, -2.4), "values", elbow=True)
ax.set_xlim(-0.3, 23.0)
ax.set_ylim(-5.6, 5.8)
ax.set_aspect("equal")
ax.set_axis_off()

# %% [markdown]
# ### A line of Shakespeare, by hand
#
# Learned projections are hard to read, so build one whose meaning you
# choose. Take a line of the corpus and represent each character by a
# *one-hot* vector: $d = V$ dimensions, a one at the character's id. Then a
# projection is a table that says, for each character, what it asks for or
# offers.

# %%
text = load_corpus()
train_text, val_text = split_train_val(text)
chars = sorted(set(text))
char_ids = {char: i for i, char in enumerate(chars)}
line = text[text.index("Now is the winter"):][:17]
one_hot = mx.eye(len(chars))[mx.array([char_ids[c] for c in line])]
print(repr(line), one_hot.shape)

# %% [markdown]
# Give the head two jobs in turn. The first, "find earlier copies of my own
# letter", needs keys that say which letter a position holds and queries
# that ask for the same one: $W_K$ is the identity and $W_Q$ is the identity
# times a *sharpness* $s$. The score of key $j$ for query $i$ is then $s$
# when the two letters match and zero when they do not. Follow it step by
# step: raw scores, scaled and masked scores, weights.

# %%
d_k = len(chars)
sharpness = 4 * math.sqrt(d_k)
w_key = mx.eye(d_k)
w_query = sharpness * mx.eye(d_k)
queries, keys = one_hot @ w_query, one_hot @ w_key
raw_scores = queries @ keys.T
positions = mx.arange(len(line))
sees = positions[:, None] >= positions[None, :]  # key j <= query i
masked_scores = mx.where(sees, raw_scores / math.sqrt(d_k), -mx.inf)
same_letter = attention_weights(queries, keys, sees)
print(f"a match scores {raw_scores.max().item():.1f}, "
      f"{masked_scores.max().item():.1f} after scaling")

# %% [markdown]
# The query's length is the head's confidence: with $s = 4\sqrt{d_k}$, a
# match scores {{ masked_scores.max().item():.0f }} after the scaling and a
# mismatch zero, so a matching key gets $e^{4} \approx 55$ times the weight
# of any other. Training sets such lengths itself; here you chose them.
# The mask `sees` lets position $i$ look only at keys $j \le i$, itself
# included, which is the causal mask of a later section.

# %%
#| echo: false
#| label: fig-qkv-steps
#| fig-cap: One head that looks for earlier copies of its own letter, step by step on a line of Richard III. Left, the raw scores; middle, scaled, with the future masked (white); right, the softmax weights, from 0 (dark) to 1 (bright). Each row is a query, each column a key; rows sum to one on the right.
from matplotlib.transforms import offset_copy


def heatmap(ax, values, title, labels=None, vmax=None, label_rows=True):
    """One attention matrix, queries down, keys across; `labels` names
    the positions below and, when `label_rows`, on the left."""
    image = ax.imshow(np.array(values), cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(title)
    ax.grid(False)
    ax.set_xticks([])
    ax.set_yticks([])
    if labels is not None:
        shown = ["␣" if c == " " else c for c in labels]
        ax.set_xticks(range(len(shown)), shown, fontsize=7)
        ax.tick_params(length=0, pad=1.5)
        if label_rows:  # ␣ sits below the baseline: raised, it faces its row
            ax.set_yticks(range(len(shown)),
                          ["" if c == "␣" else c for c in shown], fontsize=7)
            raised = offset_copy(ax.get_yaxis_transform(), ax.figure,
                                 x=-1.5, y=2, units="points")
            for row in [i for i, c in enumerate(shown) if c == "␣"]:
                ax.text(0, row, "␣", transform=raised, ha="right",
                        va="center_baseline", fontsize=7)
    return image


fig, axes = plt.subplots(1, 3, figsize=(5.8, 2.4))
heatmap(axes[0], raw_scores, "QKᵀ", line)
heatmap(axes[1], mx.where(sees, masked_scores, mx.nan), "scaled, masked",
        line, label_rows=False)
heatmap(axes[2], same_letter, "softmax", line, vmax=1, label_rows=False)
axes[0].set_ylabel("query")
axes[1].set_xlabel("key")
fig.tight_layout(w_pad=0.6)

# %% [markdown]
# In @fig-qkv-steps the raw scores are a pattern of matching letters, the
# same above the diagonal as below. The mask blanks the future, and the
# softmax turns each row into a distribution. Read the last row, the final
# `r`: no earlier `r` exists, so its only match is itself, and it keeps
# most of its weight; the rest leaks evenly over the keys it can see, the
# softmax's default where no score stands out. The `i` of "winter" splits
# its weight between itself and the `i` of "is".
#
# Now the second job, "find the spaces", with the same keys. Only the
# queries change: every character asks for a space, so every row of $W_Q$
# is $s$ times the one-hot of the space.

# %%
w_query_space = mx.zeros((d_k, d_k))
w_query_space[:, char_ids[" "]] = sharpness
find_space = attention_weights(one_hot @ w_query_space, keys, sees)
values = one_hot  # W_V = identity: a value is the letter itself
found = find_space @ values
top = [chars[i] for i in mx.argmax(found, axis=-1).tolist()]
print("".join("␣" if c == " " else c for c in top))
assert all(c == " " for c in top[line.index(" "):])
own = mx.argmax(same_letter @ values, axis=-1).tolist()
assert [chars[i] for i in own] == list(line)  # the first head, same values

# %% [markdown]
# The printout is, for each position, the letter that dominates its output.
# From the first space on, every position comes back with a space: the
# values carried letters, so the output says *what* was found, while the
# queries and keys decided *where* to look. (The last assertion runs the
# first head with the same values: it hands every position its own letter
# back.) @fig-qkv-heads puts the two patterns side by side.

# %%
#| echo: false
#| label: fig-qkv-heads
#| fig-cap: The same keys queried two ways. Left, queries ask for their own letter; right, every query asks for a space, so the weight lands on the spaces seen so far. Rows are queries, columns keys.
fig, axes = plt.subplots(1, 2, figsize=(5.4, 2.75), layout="constrained")
heatmap(axes[0], same_letter, "same letter", line, vmax=1)
image = heatmap(axes[1], find_space, "spaces", line, vmax=1)
axes[0].set_ylabel("query")
for ax in axes:
    ax.set_xlabel("key")
fig.colorbar(image, ax=axes, shrink=0.8, label="weight").ax.grid(False)

# %% [markdown]
# Three lessons carry over to the learned heads at the end of the chapter.
# The pattern of a head lives in $W_Q$ and $W_K$ together; changing only
# the queries sent the same keys to different places. How peaked a row is
# depends on the lengths of the vectors, not just their directions. And a
# query that matches nothing still has to put its weight somewhere: a
# softmax cannot say "none of the above", so heads learn to park spare
# weight on a harmless position.
#
# ## Why divide by $\sqrt{d_k}$
#
# If the entries of $q$ and $k$ are independent with mean zero and variance
# one, their dot product is a sum of $d_k$ such products and has variance
# $d_k$. The wider the head, the larger the scores, and a softmax of large
# scores puts nearly all its weight on the single largest one. A saturated
# softmax learns slowly, since its gradient with respect to the scores
# vanishes, and it can no longer average. Dividing by $\sqrt{d_k}$ brings
# the variance back to one whatever the width (Vaswani et al., 2017).
# Measure it: random queries and keys, 64 keys per query, widths from 4 to
# 1,024.

# %%
def softmax_stats(scores: mx.array) -> tuple[float, float]:
    """Mean largest weight and mean entropy (nats) of rows of scores."""
    weights = mx.softmax(scores, axis=-1, precise=True)
    entropy = -(weights * mx.log(weights + 1e-30)).sum(-1)
    return weights.max(-1).mean().item(), entropy.mean().item()


widths = [4, 16, 64, 256, 1024]
n_keys = 64
saturation = {"unscaled": [], "scaled": []}
for width in widths:
    q_rand = mx.random.normal((pick(smoke=16, book=256), width))
    k_rand = mx.random.normal((n_keys, width))
    dots = q_rand @ k_rand.T
    saturation["unscaled"].append((dots.std().item(), *softmax_stats(dots)))
    scaled = dots / math.sqrt(width)
    saturation["scaled"].append((scaled.std().item(), *softmax_stats(scaled)))

# %%
#| echo: false
#| label: tbl-saturation
#| tbl-cap: Softmax over 64 random keys, with and without the division by $\sqrt{d_k}$. Spread is the standard deviation of the scores; a uniform row has largest weight 1/64 and entropy ln 64 = 4.16 nats.
Table(
    [(width, *saturation["unscaled"][i], *saturation["scaled"][i])
     for i, width in enumerate(widths)],
    ["d<sub>k</sub>", "spread", "max weight", "entropy",
     "spread ÷√d<sub>k</sub>", "max weight ÷√d<sub>k</sub>",
     "entropy ÷√d<sub>k</sub>"],
    digits=3,
)

# %%
#| echo: false
#| label: fig-saturation
#| fig-cap: Entropy of the attention weights over 64 random keys against the width of the head. Unscaled scores saturate the softmax as $d_k$ grows; scaled ones keep the same spread at every width.
plt.figure(figsize=(5.2, 2.6))
for name, marker in (("unscaled", "o"), ("scaled", "s")):
    plt.plot(widths, [row[2] for row in saturation[name]], marker=marker,
             label=f"{name} scores")
plt.axhline(math.log(n_keys), color="black", linestyle="--", linewidth=0.8,
            label="uniform, ln 64")
plt.xscale("log", base=2)
plt.xticks(widths, [f"{width:,}" for width in widths])
plt.minorticks_off()
plt.xlabel("head width $d_k$")
plt.ylabel("entropy of weights (nats)")
plt.legend()

# %%
#| echo: false
unscaled_max_1024 = saturation["unscaled"][-1][1]
scaled_max_1024 = saturation["scaled"][-1][1]
assert unscaled_max_1024 > 0.5 > scaled_max_1024
spreads = [row[0] for row in saturation["scaled"]]
assert max(spreads) / min(spreads) < 1.3

# %% [markdown]
# @tbl-saturation shows the spread of the raw scores growing like
# $\sqrt{d_k}$, and @fig-saturation what that does to the weights. At
# $d_k = 1024$ the unscaled softmax gives its top key
# {{ unscaled_max_1024:.0%}} of the weight on average: one key takes almost
# everything, though the keys are pure noise. Scaled, the top key gets
# {{ scaled_max_1024:.0%}} at every width and the entropy stays put. A
# typical head of a GPT is 64 or 128 wide, where the unscaled scores would
# already be far too sharp at initialization.
#
# ## Causal masking
#
# A language model predicts the next token from the tokens before it. In
# training it makes that prediction at every position of a sequence at
# once, so position $i$ must not see positions after $i$, or it would read
# the answer. The mask is a $T \times T$ table, true where query $i$ may
# look at key $j$, that is where $j \le i$: the lower triangle.

# %%
#| export
def causal_mask(length: int) -> mx.array:
    """(length, length) booleans: True where query i may see key j <= i."""
    positions = mx.arange(length)
    return positions[:, None] >= positions[None, :]

# %%
print(causal_mask(5).astype(mx.int32))
assert mx.array_equal(causal_mask(5), mx.tril(mx.ones((5, 5)))).item()
assert mx.array_equal(causal_mask(len(line)), sees).item()

# %%
#| echo: false
#| label: fig-causal-mask
#| fig-cap: The causal mask, `causal_mask(10)`, on the first ten characters of the line: row i is a query, column j a key. Filled cells (j ≤ i) may be attended to; hatched cells are masked. Each row is trained to predict the next character (right), which is the key just past the diagonal (outlined): the first key the mask hides.
def glyph(ax, x, y, char, **options):
    """A character as text; a space is shown as ␣, raised to the middle
    of its line (the glyph sits below the baseline)."""
    if char == " ":
        char, y = "␣", y - 0.12  # the y axis points down
    ax.text(x, y, char, ha="center", va="center", fontsize=8, **options)


mask_text = line[:10]
size = len(mask_text)
allowed = np.array(causal_mask(size))
fig, ax = plt.subplots(figsize=(3.4, 2.8))
for i in range(size):
    for j in range(size):
        ax.add_patch(Rectangle(
            (j, i), 1, 1, edgecolor="#999999", linewidth=0.5,
            facecolor="#56B4E9" if allowed[i, j] else "white",
            hatch=None if allowed[i, j] else "////"))
    if i + 1 < size:  # the key that holds row i's answer
        ax.add_patch(Rectangle((i + 1, i), 1, 1, fill=False,
                               edgecolor="black", linewidth=1.6))
    glyph(ax, -0.5, i + 0.5, mask_text[i])
    glyph(ax, i + 0.5, -0.5, mask_text[i])
    glyph(ax, size + 1.5, i + 0.5, line[i + 1])
ax.text(size / 2, -1.2, "key j", ha="center", va="bottom")
ax.text(-1.2, size / 2, "query i", ha="right", va="center", rotation=90)
ax.text(size + 1.5, -0.5, "next\ncharacter", ha="center", va="bottom",
        fontsize=7.5)
ax.set_xlim(-1.5, size + 2.6)
ax.set_ylim(size, -1.3)
ax.set_aspect("equal")
ax.set_axis_off()

# %% [markdown]
# Row $i$ has $i + 1$ ones. The mask broadcasts over batch and heads, so
# one $T \times T$ array serves every sequence of a batch.
# @fig-causal-mask shows what it protects: the character that row $i$ is
# trained to predict is the input at position $i + 1$, the first key the
# mask hides from it.
#
# ### $-\infty$ or $-10^9$?
#
# Many codebases write the mask as an additive array instead, zero where
# attention is allowed and a huge negative number where it is not. Which
# number matters where a query may see *nothing*, a row that is masked
# entirely; that happens with padding, or when two masks are combined.

# %%
row_scores = mx.array([[2.0, 1.0, 0.5, -1.0]])
for fill in (-mx.inf, -1e9):
    partly = mx.softmax(row_scores + mx.array([[0, 0, fill, fill]]), -1)
    fully = mx.softmax(row_scores + fill, axis=-1)
    print(f"fill {fill:.0e}\n  partly masked {np.array(partly[0]).round(3)}"
          f"\n  fully masked  {np.array(fully[0])}")

# %%
#| echo: false
fully_inf = mx.softmax(row_scores - mx.inf, axis=-1)
assert mx.isnan(fully_inf).all().item()
assert mx.allclose(mx.softmax(row_scores - 1e9, -1), mx.array(0.25)).item()

# %% [markdown]
# With some keys left, the two fills agree exactly. With none, $-\infty$
# gives NaN: the softmax subtracts the row's maximum, and
# $-\infty - (-\infty)$ is not a number. The NaN then spreads through the
# rest of the network on the next matrix product, and the loss becomes NaN
# a step later. $-10^9$ instead gives a uniform row, an average over keys
# the query was not supposed to see, but a finite one that a later mask
# (say, on the loss of padding tokens) can discard. That is why your
# `attention_weights` fills boolean masks with the most negative finite
# number of the type.
#
# The fill also has to survive the type of the scores. Training in lower
# precision computes them in bfloat16 or float16 (chapter 8 trains that
# way), and @tbl-mask-dtypes shows what
# becomes of $-10^9$ and of the type's most negative number in each.

# %%
def mask_in(dtype: mx.Dtype) -> tuple:
    """What -1e9 and finfo.min become in dtype, and masked rows' weights."""
    billion = mx.array(-1e9, dtype=dtype)
    lowest = mx.array(mx.finfo(dtype).min, dtype=dtype)
    scores = row_scores.astype(dtype)
    fully = mx.softmax(scores + billion, axis=-1, precise=True)
    twice = mx.softmax(scores + lowest + lowest, axis=-1, precise=True)
    return (str(dtype).split(".")[-1], f"{billion.item():.4g}",
            f"{lowest.item():.3g}", f"{(lowest + lowest).item():.3g}",
            f"{fully[0, 0].item():.3g}", f"{twice[0, 0].item():.3g}")


dtype_rows = [mask_in(dtype)
              for dtype in (mx.float32, mx.bfloat16, mx.float16)]

# %%
#| echo: false
#| label: tbl-mask-dtypes
#| tbl-cap: Mask fills in three types. Weight is the first weight of a fully masked row of four, 0.25 when the row comes out uniform, nan when it breaks.
Table(dtype_rows, ["type", "−1e9 stored as", "finfo.min", "min + min",
                   "weight, −1e9", "weight, min + min"])

# %%
#| echo: false
assert dtype_rows[2][1] == "-inf" and dtype_rows[2][4] == "nan"
assert dtype_rows[1][1] != "-1e+09" and dtype_rows[1][4] == "0.25"
assert all(row[3] == "-inf" and row[5] == "nan" for row in dtype_rows)

# %% [markdown]
# Three traps show up. In float16, whose largest magnitude is 65,504,
# $-10^9$ overflows to $-\infty$, and a fully masked row is NaN again: a
# mask written for float32 breaks silently when you switch to half
# precision. In bfloat16, $-10^9$ survives but is rounded to
# {{ dtype_rows[1][1] }}, because bfloat16 keeps float32's range but only
# 7 fraction bits; any score added to it is lost in the rounding, which is
# harmless since that weight is zero anyway. And in every type, adding two
# masks that each hold the most negative number, a causal mask plus a
# padding mask, overflows to $-\infty$. Boolean masks avoid all three:
# they are combined with `&`, and the fill is chosen once, in the type of
# the scores, at the last moment.
#
# ## Multi-head attention
#
# One head computes one pattern per query: @fig-qkv-heads needed two heads
# for two questions. A transformer runs several heads side by side, each
# with its own slice of the projections, and concatenates what they find.
# With `dims` model dimensions and `heads` heads, each head works in
# `dims // heads` dimensions, so the cost of the projections is the same
# as for one wide head. The layer keeps MLX's names for its four linear
# maps, so its weights can be copied to and from `nn.MultiHeadAttention`.

# %%
#| export
class MultiHeadAttention(nn.Module):
    """Self-attention with `heads` heads of `dims // heads` dimensions each,
    named like `nn.MultiHeadAttention` so that weights can be swapped."""

    def __init__(self, dims: int, heads: int, bias: bool = False) -> None:
        super().__init__()
        if dims % heads != 0:
            divisors = [h for h in range(1, dims + 1) if dims % h == 0]
            raise ValueError(
                f"heads={heads} does not divide dims={dims}: every head needs "
                f"dims // heads dimensions; choose heads from {divisors} or "
                f"make dims a multiple of {heads}"
            )
        self.heads = heads
        self.query_proj = nn.Linear(dims, dims, bias=bias)
        self.key_proj = nn.Linear(dims, dims, bias=bias)
        self.value_proj = nn.Linear(dims, dims, bias=bias)
        self.out_proj = nn.Linear(dims, dims, bias=bias)

    def split_heads(self, x: mx.array) -> mx.array:
        """(B, T, dims) -> (B, heads, T, dims // heads)."""
        batch, length, _ = x.shape
        return x.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        """Attend over the T positions of x, (B, T, dims) -> (B, T, dims)."""
        batch, length, dims = x.shape
        q = self.split_heads(self.query_proj(x))
        k = self.split_heads(self.key_proj(x))
        v = self.split_heads(self.value_proj(x))
        out = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(0, 2, 1, 3).reshape(batch, length, dims)
        return self.out_proj(out)

# %% [markdown]
# The projections stay `dims` wide: one matrix product computes the
# queries of all heads at once. `split_heads` then cuts the last axis into
# `heads` slices of `dims // heads` and moves the head axis in front of the
# positions, so the attention of the previous sections runs on every head
# of every sequence in one call. On the way out, the inverse transpose and
# reshape lay the heads' outputs side by side again, and `out_proj` mixes
# them. @fig-heads draws the round trip.

# %%
#| echo: false
#| label: fig-heads
#| fig-cap: How one sequence is split into heads. Left, the (T, dims) queries after the projection, columns coloured by the head they belong to; reshape and transpose give (heads, T, D) with D = dims // heads, one matrix per head, head 0 in front; after attention the inverse transpose and reshape put the heads back side by side.
head_colors = ["#0072B2", "#E69F00", "#009E73", "#CC79A7"]
T_cells, D_cells, H_cells = 6, 3, 4
fig, ax = plt.subplots(figsize=(5.5, 2.7))
for col in range(D_cells * H_cells):
    for row in range(T_cells):
        ax.add_patch(Rectangle((col * 0.5, -row * 0.5), 0.5, 0.5,
                               facecolor=head_colors[col // D_cells],
                               edgecolor="white", linewidth=0.6))
ax.text(3.0, 0.8, "(B, T, dims)", ha="center", fontsize=8)
for head in reversed(range(H_cells)):  # head 0 in front
    x0, y0 = 9.4 + head * 0.45, -0.4 + head * 0.45
    for col in range(D_cells):
        for row in range(T_cells):
            ax.add_patch(Rectangle((x0 + col * 0.5, y0 - row * 0.5), 0.5,
                                   0.5, facecolor=head_colors[head],
                                   edgecolor="white", linewidth=0.6))
ax.text(11.2, 1.9, "(B, heads, T, D)", ha="center", fontsize=8)
ax.annotate("", xy=(9.1, -0.8), xytext=(6.3, -0.8),
            arrowprops=dict(arrowstyle="->", linewidth=0.8))
ax.text(7.7, -0.6, "reshape to\n(B, T, heads, D),\ntranspose",
        ha="center", va="bottom", fontsize=7)
ax.annotate("", xy=(6.3, -2.2), xytext=(9.1, -2.2),
            arrowprops=dict(arrowstyle="->", linewidth=0.8))
ax.text(7.7, -2.4, "after attention:\ntranspose, reshape", ha="center",
        va="top", fontsize=7)
ax.text(-0.3, -1.25, "T", ha="right", va="center", fontsize=8)
ax.set_xlim(-0.8, 13.4)
ax.set_ylim(-3.8, 2.4)
ax.set_aspect("equal")
ax.set_axis_off()

# %% [markdown]
# Now check the layer. Build yours and MLX's with the same sizes, copy
# every weight from yours into MLX's, and compare outputs with a causal
# mask: the boolean one for yours, the additive one MLX documents for its
# own. Try it with and without biases.

# %%
dims, heads = 64, 4
x_batch = mx.random.normal((2, 12, dims))
for bias in (False, True):
    attention = MultiHeadAttention(dims, heads, bias=bias)
    reference = nn.MultiHeadAttention(dims, heads, bias=bias)
    reference.update(attention.parameters())
    mine = attention(x_batch, causal_mask(12))
    theirs = reference(x_batch, x_batch, x_batch,
                       nn.MultiHeadAttention.create_additive_causal_mask(12))
    assert mine.shape == x_batch.shape
    assert mx.allclose(mine, theirs, atol=1e-5).item()
    print(f"bias={bias}: {mine.shape}, "
          f"max difference {mx.abs(mine - theirs).max().item():.1e}")

# %% [markdown]
# `update` accepted your parameters unchanged because the names match,
# `query_proj.weight` and so on, and the outputs agree to float32 rounding.
# The one difference is the interface: MLX's layer takes queries, keys and
# values as three inputs, so it also serves cross-attention between two
# sequences, while yours takes one `x`, the self-attention a GPT needs
# (exercise 5.3 adds the other). Asking for a head count that does not divide
# the width fails early, with a message that says what to change:

# %%
try:
    MultiHeadAttention(64, 6)
except ValueError as error:
    print(error)

# %% [markdown]
# ## What attention costs
#
# Every query scores every key, so the scores of one head are a
# $T \times T$ array: doubling the context quadruples them. The
# projections, by contrast, cost $O(T \cdot d^2)$, linear in $T$. Measure
# time and peak memory of one attention call, four heads of 32 dimensions,
# as the sequence grows, for your version and for MLX's fused one.

# %%
def measure(attend, length: int, repeats: int = 3) -> tuple[float, float]:
    """Best time (ms) and peak memory (MB) of attend(q, k, v, mask)."""
    q, k, v = (mx.random.normal((1, 4, length, 32)) for _ in range(3))
    mask = causal_mask(length)
    mx.eval(q, k, v, mask)
    best = math.inf
    mx.reset_peak_memory()
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(attend(q, k, v, mask))
        best = min(best, time.perf_counter() - start)
    return 1000 * best, mx.get_peak_memory() / 2**20


def fused(q, k, v, mask):
    scale = 1 / math.sqrt(q.shape[-1])
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale,
                                                mask=mask)


cost_lengths = pick(smoke=[128, 256, 512], book=[128, 256, 512, 1024, 2048])
costs = {name: [measure(attend, n) for n in cost_lengths]
         for name, attend in (("yours", scaled_dot_product_attention),
                              ("fused", fused))}
score_megabytes = [4 * n * n * 4 / 2**20 for n in cost_lengths]

# %%
#| echo: false
#| label: fig-cost
#| fig-cap: Time (left) and peak memory (right) of one attention call with four heads of 32 dimensions, against the sequence length, both axes logarithmic. The dashed line is the size of the float32 scores, 4 × T² × 4 bytes; a slope of 2 on these axes is growth like T².
from matplotlib.ticker import FuncFormatter

fig, axes = plt.subplots(1, 2, figsize=(5.6, 2.6))
styles = {"yours": dict(marker="o", markersize=4),  # fused: open, on top
          "fused": dict(marker="s", markersize=8, fillstyle="none",
                        linestyle=":")}
for name, style in styles.items():
    for panel, ax in enumerate(axes):
        ax.plot(cost_lengths, [c[panel] for c in costs[name]], label=name,
                **style)
axes[1].plot(cost_lengths, score_megabytes, linestyle="--", color="black",
             linewidth=0.8, label="scores")
axes[0].set_ylabel("time (ms)")
axes[1].set_ylabel("peak memory (MB)")
for ax in axes:
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(cost_lengths, [f"{n:,}" for n in cost_lengths])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.minorticks_off()
    ax.set_xlabel("sequence length T")
axes[1].legend()
fig.tight_layout()

# %%
#| echo: false
memory_growth = costs["yours"][-1][1] / costs["yours"][-2][1]
time_growth = costs["yours"][-1][0] / costs["yours"][-2][0]
assert memory_growth > 2.5
assert costs["yours"][-1][1] > score_megabytes[-1]

# %% [markdown]
# @fig-cost shows both curves bending towards the slope of $T^2$. From
# {{ cost_lengths[-2]:, }} to {{ cost_lengths[-1]:, }} positions, the peak
# memory of your version grows {{ memory_growth:.1f }} times and its time
# {{ time_growth:.1f }} times, for twice the length. The memory follows the
# dashed line because your function materializes the
# $B \times H \times T \times T$ scores, and then the weights (MLX reuses the scores' buffer for
# them when it can): at {{ cost_lengths[-1]:, }} positions that is
# {{ score_megabytes[-1]:.0f }} MB for a single layer and a single sequence,
# out of a peak of {{ costs["yours"][-1][1]:.0f }} MB, and training keeps
# such arrays for the backward pass, layer after layer. This $O(T^2)$ term
# is what limits context length. A fused kernel can compute the softmax
# block by block without ever storing the whole score matrix, the idea of
# FlashAttention (Dao et al., 2022), which exercise 5 writes. Whether MLX's
# kernel does so depends on the device and the shapes; on this build
# machine's CPU its peak memory is close to yours, as the figure shows.
#
# ## Attention patterns while a model learns
#
# The hand-built heads had patterns you designed. Learned heads find their
# own. To watch them appear, train a small causal language model on the
# characters of Tiny Shakespeare: an embedding for characters and one for
# positions, two blocks of your attention and a ReLU MLP, each with a
# residual connection, and a linear head. Chapter 6 builds the real GPT
# from the same parts; this one exists to be looked at.

# %%
class Block(nn.Module):
    """Pre-norm block: your attention, then a ReLU MLP, each residual."""

    def __init__(self, dims: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attention = MultiHeadAttention(dims, heads)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = nn.Sequential(nn.Linear(dims, 4 * dims), nn.ReLU(),
                                 nn.Linear(4 * dims, dims))

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp(self.norm2(x))


class Watched(nn.Module):
    """A two-block character model whose attention is drawn below."""

    def __init__(self, vocab: int, context: int, dims: int, heads: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dims)
        self.position_embedding = nn.Embedding(context, dims)
        self.blocks = [Block(dims, heads), Block(dims, heads)]
        self.norm = nn.LayerNorm(dims)
        self.head = nn.Linear(dims, vocab)

    def __call__(self, ids: mx.array) -> mx.array:
        x = self.token_embedding(ids)
        x = x + self.position_embedding(mx.arange(ids.shape[1]))
        for block in self.blocks:
            x = block(x, causal_mask(ids.shape[1]))
        return self.head(self.norm(x))

# %% [markdown]
# To draw a head you need its weights, which the layer does not return.
# The helper below runs the model's layers one by one and recomputes each
# layer's weights from its own projections with `attention_weights`, the
# function the layer itself calls.

# %%
def patterns(model: Watched, ids: mx.array) -> list[mx.array]:
    """The (heads, T, T) attention weights of each block for one sequence."""
    x = model.token_embedding(ids) + model.position_embedding(
        mx.arange(ids.shape[1]))
    mask = causal_mask(ids.shape[1])
    weights = []
    for block in model.blocks:
        h = block.norm1(x)
        attention = block.attention
        weights.append(attention_weights(
            attention.split_heads(attention.query_proj(h)),
            attention.split_heads(attention.key_proj(h)), mask)[0])
        x = block(x, mask)
    return weights

# %% [markdown]
# The training loop is the one of chapter 1: random windows of 64
# characters from the training text, cross-entropy on the next character,
# AdamW. At a few chosen steps it stores the weights of both blocks on a
# line of the validation text and the loss on a few validation batches.

# %%
context, batch_size = 64, 16
train_ids = np.array([char_ids[c] for c in train_text], dtype=np.int32)
val_ids = np.array([char_ids[c] for c in val_text], dtype=np.int32)
watched_line = "Good morrow, neighbour Baptista."
watched_ids = mx.array([[char_ids[c] for c in watched_line]])
snapshot_steps = pick(smoke=[0, 5, 20], book=[0, 200, 1000])

mx.random.seed(0)
model = Watched(len(chars), context, dims=64, heads=4)
optimizer = optim.AdamW(learning_rate=3e-3)
sampler = BatchSampler(train_ids, batch_size, context, seed=0)
val_batches = [BatchSampler(val_ids, 32, context, seed=1).sample()
               for _ in range(4)]


def loss_fn(model: Watched, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


loss_and_grad = nn.value_and_grad(model, loss_fn)
snapshots, val_losses = {}, {}
start = time.perf_counter()
for step in range(snapshot_steps[-1] + 1):
    if step in snapshot_steps:
        snapshots[step] = patterns(model, watched_ids)
        val_losses[step] = np.mean(
            [loss_fn(model, x, y).item() for x, y in val_batches])
    x, y = sampler.sample()
    loss, grads = loss_and_grad(model, x, y)
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
train_seconds = time.perf_counter() - start
print(f"{snapshot_steps[-1]} steps in {train_seconds:.0f} s; validation "
      f"loss {val_losses[0]:.2f} -> {val_losses[snapshot_steps[-1]]:.2f}")

# %% [markdown]
# Two numbers summarize a pattern. Its *entropy*, averaged over heads and
# positions, says how spread out the weights are; at the start, when all
# scores are near zero, each query spreads its weight evenly over what it
# can see. The *previous-character weight*, the mean weight a query puts
# on the key just before it, picks out one pattern that character models
# are known to learn early. Why that key? Count, in the training text, how
# much one character tells about the next from each distance back:

# %%
def next_char_entropy(ids: np.ndarray, back: int) -> float:
    """Entropy (nats) of a character given the one `back` places before."""
    vocab = len(chars)
    pairs = np.bincount(ids[:-back] * vocab + ids[back:],
                        minlength=vocab * vocab).reshape(vocab, vocab)
    joint = pairs / pairs.sum()
    given = pairs / pairs.sum(axis=1, keepdims=True).clip(min=1)
    seen = pairs > 0
    return float(-(joint[seen] * np.log(given[seen])).sum())


clues = {back: next_char_entropy(train_ids, back) for back in (1, 2, 3, 4)}
print({f"{back} back": round(nats, 2) for back, nats in clues.items()})
assert clues[1] < clues[2] < clues[3] < clues[4]

# %% [markdown]
# Knowing the character one place back, the current one, leaves
# {{ clues[1]:.2f }} nats of uncertainty about the next; two places back,
# {{ clues[2]:.2f }}; and each step further back tells less. The current
# character is the best single clue, and every position already holds it:
# it is the query's own input. The character before it is the next best,
# and a position can only get it through attention, from the key just
# before its own. That is the pattern the previous-character weight looks
# for.

# %%
def summarize(weights: mx.array) -> tuple[float, float]:
    """Mean entropy (nats) and the largest mean previous-key weight over
    the heads of one block's (heads, T, T) weights."""
    entropy = -(weights * mx.log(weights + 1e-30)).sum(-1).mean().item()
    previous = mx.diagonal(weights, offset=-1, axis1=1, axis2=2)
    return entropy, previous.mean(-1).max().item()


pattern_rows = [(step, val_losses[step], *summarize(snapshots[step][0]),
                 *summarize(snapshots[step][1])) for step in snapshot_steps]
uniform_entropy = np.mean(np.log(np.arange(1, len(watched_line) + 1)))

# %%
#| echo: false
#| label: tbl-patterns
#| tbl-cap: The watched model at three steps of training. Entropy is averaged over the heads and positions of a block; previous is the largest, over heads, of the mean weight on the key just before the query.
Table(pattern_rows, ["step", "val loss", "entropy 1", "previous 1",
                     "entropy 2", "previous 2"])

# %%
#| echo: false
final_step = snapshot_steps[-1]
assert val_losses[final_step] < val_losses[0] - 0.5
assert abs(pattern_rows[0][2] - uniform_entropy) < 0.05
assert pattern_rows[-1][2] < pattern_rows[0][2]

# %% [markdown]
# At step 0 the entropy of block 1 is {{ pattern_rows[0][2]:.2f }} nats,
# against {{ uniform_entropy:.2f }} for perfectly even weights over the
# visible keys: the untrained model averages everything, so every position
# of a sequence receives much the same blur. By step {{ final_step:, }} the
# validation loss has fallen from {{ val_losses[0]:.2f }} to
# {{ val_losses[final_step]:.2f }} nats per character, and block 1's
# entropy to {{ pattern_rows[-1][2]:.2f }}. It did not fall steadily: at
# step {{ snapshot_steps[1]:, }} it was {{ pattern_rows[1][2]:.2f }}. A low
# entropy says only that a row is peaked, not that it looks in the right
# place, so ask where block 1's weight goes:

# %%
def where_weight_goes(weights: mx.array) -> tuple[float, float]:
    """Mean largest weight of a row, and mean weight on the query's own
    key plus the key before it, over a block's (heads, T, T) weights."""
    own = mx.diagonal(weights, axis1=1, axis2=2).mean()
    before = mx.diagonal(weights, offset=-1, axis1=1, axis2=2).mean()
    return weights.max(axis=-1).mean().item(), (own + before).item()


weight_goes = {step: where_weight_goes(snapshots[step][0])
               for step in snapshot_steps}
for step, (largest, near) in weight_goes.items():
    print(f"step {step:>5,}: largest weight {largest:.2f}, "
          f"on own + previous key {near:.2f}")

# %%
#| echo: false
if snapshot_steps == [0, 200, 1000]:  # the book profile's run, described
    assert pattern_rows[1][2] < pattern_rows[2][2]
    assert weight_goes[200][0] > weight_goes[1000][0]
    assert weight_goes[200][1] < 0.5 < weight_goes[1000][1]

# %% [markdown]
# At step {{ snapshot_steps[1]:, }} block 1's heads put most of a row on a
# single key (the largest weight averages
# {{ weight_goes[snapshot_steps[1]][0]:.2f }}), but only
# {{ weight_goes[snapshot_steps[1]][1]:.0%}} of it on the query's own key
# and the one before. By step {{ final_step:, }} the rows are a little
# flatter (largest weight {{ weight_goes[final_step][0]:.2f }}) and
# {{ weight_goes[final_step][1]:.0%}} of the weight sits on those two keys,
# the two best clues of the counts above. The entropy rose because the
# heads now split their weight between two keys, and those are the keys
# that help. Read @fig-patterns row by row.

# %%
#| echo: false
#| label: fig-patterns
#| fig-cap: Attention weights of the watched model on one validation line, at three steps of training (rows), for every head of both blocks, the heads the table summarises; in each panel queries run down and keys across, one row and one column per character of the line. Uniform smears become diagonals (the previous characters) and vertical stripes (keys many queries share).
n_heads = snapshots[0][0].shape[0]
fig = plt.figure(figsize=(5.8, 2.7))
outer = fig.add_gridspec(1, 3, width_ratios=[n_heads, n_heads, 0.2],
                         wspace=0.08, left=0.06, right=0.92, bottom=0.02,
                         top=0.82)
for block in range(2):
    grid = outer[block].subgridspec(len(snapshot_steps), n_heads,
                                    wspace=0.12, hspace=0.12)
    for row, step in enumerate(snapshot_steps):
        for head in range(n_heads):
            ax = fig.add_subplot(grid[row, head])
            image = heatmap(ax, snapshots[step][block][head],
                            f"head {head}" if row == 0 else "", vmax=1)
            if block == 0 and head == 0:
                ax.set_ylabel(f"step {step:,}")
    over_block = fig.add_subplot(grid[0, :], frame_on=False)
    over_block.set_axis_off()
    over_block.set_title(f"block {block + 1}", pad=16)
fig.colorbar(image, cax=fig.add_subplot(outer[2]),
             label="weight").ax.grid(False)

# %% [markdown]
# At step 0 every head of @fig-patterns looks the same. Within a row the
# weights are nearly even, about $1/(i+1)$ on each of the $i + 1$ keys that
# query $i$ sees, so the picture fades from top to bottom: bright in the
# first rows, where a query sees few keys, dark below. After a few hundred
# steps heads specialize. Some grow a
# bright band just below the diagonal, the previous character or two; in
# @tbl-patterns the largest previous-character weight of block 1 goes from
# {{ pattern_rows[0][3]:.2f }} to {{ pattern_rows[-1][3]:.2f }}. Others
# draw vertical stripes: many queries reading the same few keys, as your
# hand-built "spaces" head did. Block 2 reads block 1's outputs, so its
# patterns can depend on context that block 1 has already gathered. None
# of this was designed; the loss asked for better next-character
# predictions, and these patterns were the cheapest way to get them.

# %%
#| echo: false
#| label: fig-patterns-read
#| fig-cap: Two heads of the watched model at the last step of the previous figure, with the line's characters on both axes, weights from 0 (dark) to 1 (bright). Left, the head of block 1 with the largest previous-character weight; right, the head of block 2 that puts the most weight on spaces.
final_weights = snapshots[final_step]
previous_head = int(mx.argmax(mx.diagonal(
    final_weights[0], offset=-1, axis1=1, axis2=2).mean(-1)).item())
is_space = mx.array([c == " " for c in watched_line])
after_first_space = watched_line.index(" ")
space_weight = (final_weights[1] * is_space).sum(-1)[:, after_first_space:]
space_head = int(mx.argmax(space_weight.mean(-1)).item())
space_share = space_weight[space_head].mean().item()
reader = final_weights[0][previous_head]
near_share = (mx.diagonal(reader).sum() + mx.diagonal(reader, -1).sum()
              ).item() / len(watched_line)
fig, axes = plt.subplots(1, 2, figsize=(5.8, 3.1), layout="constrained")
heatmap(axes[0], reader, f"block 1, head {previous_head}", watched_line,
        vmax=1)
heatmap(axes[1], final_weights[1][space_head], f"block 2, head {space_head}",
        watched_line, vmax=1, label_rows=False)
axes[0].set_ylabel("query")
for ax in axes:
    ax.set_xlabel("key")

# %% [markdown]
# @fig-patterns-read spells out two heads of step {{ final_step:, }}.
# Head {{ previous_head }} of block 1, the one with the largest
# previous-character weight, puts {{ near_share:.0%}} of its weight on
# the query's own character and the one before it. Head
# {{ space_head }} of block 2 gives the spaces of the line
# {{ space_share:.0%}} of its weight, averaged over the queries that can
# see one: the pattern you built by hand at the start of the chapter,
# found by training.
#
# ## Summary
#
# You wrote attention out in full: scores from queries and keys, scaled by
# $\sqrt{d_k}$, masked, passed through a softmax and used to average the
# values, and you showed it equal to MLX's fused kernel. You read queries,
# keys and values on a real line, and saw that queries and keys decide
# where to look and values what comes back. You measured the softmax
# saturating without the scale, saw $-\infty$ turn a fully masked row into
# NaN and $-10^9$ overflow in float16, split attention into heads and
# matched `nn.MultiHeadAttention` weight for weight, measured the $O(T^2)$
# cost in time and memory, and watched a small model's heads specialize in
# {{ train_seconds:.0f }} seconds of training.
#
# `mlxllm.model` now exports, next to chapter 4's positions:
#
# - `scaled_dot_product_attention(q, k, v, mask=None)` for (B, H, T, D)
#   arrays, with a boolean (True: may attend) or additive mask, and
#   `attention_weights(q, k, mask=None)`, the softmax it is built on;
# - `causal_mask(length)`, the boolean lower triangle;
# - `MultiHeadAttention(dims, heads, bias=False)`, called as
#   `attention(x, mask)`, with `query_proj`, `key_proj`, `value_proj` and
#   `out_proj` named as in MLX, and `split_heads`.
#
# Chapter 6 puts these into a block with normalization and an MLP, stacks
# the blocks and trains the GPT.
#
# ## Exercises
#
# 1. ★ MLX's causal string. `mx.fast.scaled_dot_product_attention` accepts
#    `mask="causal"`. Check that it matches `causal_mask` when there are as
#    many queries as keys. Then use 3 queries and 8 keys, as when a model
#    generates the next tokens of a longer text, and find out which keys
#    each query sees; build the boolean mask that reproduces it.
# 2. ★ The temperature of a head. Scale the random queries of the
#    saturation section by a factor $c$ before the (scaled) product and
#    plot the entropy against $c$ for $d_k = 64$. Which $c$ makes the
#    weights as sharp as the unscaled scores of $d_k = 1024$?
# 3. ★★ Cross-attention. Add a `CrossAttention` layer whose queries come
#    from one sequence and whose keys and values come from another, of a
#    different length. Copy its weights into `nn.MultiHeadAttention` and
#    check that the two agree when called with the two sequences.
# 4. ★★ Queries in chunks. Compute attention for blocks of queries at a
#    time, so that only a (chunk × T) slice of scores exists at once.
#    Check that the result equals `scaled_dot_product_attention` and
#    measure the peak memory against the chunk size.
# 5. ★★★ Online softmax. Go further and split the *keys* into blocks too:
#    keep, for each query, a running maximum, a running sum of
#    exponentials and a running weighted sum of values, and rescale them
#    when a new block raises the maximum. This is the algorithm of
#    FlashAttention. Check it against your function, causal mask included,
#    and measure its peak memory as T grows.
