# %% [markdown]
# # The transformer block and the GPT model
#
# Chapter 5 gave you attention, the layer where positions talk. A language
# model needs more around it: a small network that thinks about what each
# position has just heard, a normalization that keeps numbers in range,
# and a residual path that lets a stack of such blocks train at all. In
# this chapter you assemble those parts into a *transformer block*, stack
# the blocks into a GPT, and take its measure before it has learned
# anything: how many parameters it has (the baby model of this book has
# {{ baby_parameters:, }}), how much memory they take, how much arithmetic
# one training step costs, and how long that arithmetic takes on this
# machine.
#
# You start from the block as the original paper drew it (Vaswani et al.,
# 2017), then move the normalization to where GPT-2 put it (Radford et
# al., 2019) and train both at a depth of {{ depth_layers }} blocks to see
# why. You write LayerNorm and RMSNorm from scratch and check them against
# MLX, time three feed-forward activations, and save and reload a model bit
# for bit. On the map of chapter 1 this chapter is the whole middle: the
# boxes between the embeddings and the output probabilities. Chapter 7
# trains what you build here.

# %%
#| default_exp model
import math
import tempfile
import time
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, pick
from mlxllm.data import BatchSampler, load_corpus, split_train_val
from mlxllm.hardware import matmul_gflops, median_seconds
from mlxllm.model import MultiHeadAttention, causal_mask
from mlxllm.tokenizer import CharTokenizer

text = load_corpus()
tokenizer = CharTokenizer.train(text)
train_text, val_text = split_train_val(text)
train_ids = np.array(tokenizer.encode(train_text), dtype=np.int32)
val_ids = np.array(tokenizer.encode(val_text), dtype=np.int32)
print(f"{tokenizer.vocab_size} characters, {len(train_ids):,} training ids")

# %% [markdown]
# ## Normalization from scratch
#
# A deep network multiplies its input by one matrix after another, and the
# size of the numbers drifts: up or down by a factor at every layer, until
# activations overflow or gradients vanish. *Layer normalization* (Ba et
# al., 2016) resets the scale at every block. For each position it takes
# the vector $x$ of $d$ features, removes their mean $\mu$, divides by
# their standard deviation $\sigma$, and then lets the model choose a scale
# $\gamma$ and a shift $\beta$ of its own:
#
# $$\text{LayerNorm}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 +
# \epsilon}} + \beta$$ {#eq-layernorm}
#
# *RMSNorm* (Zhang & Sennrich, 2019) drops the mean and the shift and
# divides by the root mean square alone. It is cheaper, and the authors
# found that the re-centring did not matter; LLaMA and most recent models
# use it. The first exported cell of this chapter brings its own imports,
# because it is appended to `mlxllm/model.py` after chapter 5.

# %%
#| export
from dataclasses import dataclass
import functools
import math

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from mlxllm.hardware import median_seconds


class LayerNorm(nn.Module):
    """Normalize each vector to mean 0 and variance 1 over its last axis,
    then scale and shift it by learned `weight` and `bias` (Ba et al.)."""

    def __init__(self, dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        mean = x.mean(axis=-1, keepdims=True)
        variance = mx.square(x - mean).mean(axis=-1, keepdims=True)
        return (x - mean) * mx.rsqrt(variance + self.eps) * self.weight \
            + self.bias


class RMSNorm(nn.Module):
    """Divide each vector by its root mean square and scale it by a
    learned `weight`: LayerNorm without centring (Zhang & Sennrich)."""

    def __init__(self, dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = mx.ones((dims,))

    def __call__(self, x: mx.array) -> mx.array:
        mean_square = (x * x).mean(axis=-1, keepdims=True)
        return x * mx.rsqrt(mean_square + self.eps) * self.weight

# %% [markdown]
# Notice that both work on the last axis only: every position of every
# sequence is normalized on its own, so nothing leaks between positions
# and the causal mask of chapter 5 stays intact. The variance is the
# biased one (divide by $d$, not $d - 1$), which is what the library
# versions compute. Check that claim: give the MLX layers and yours the
# same random weights and inputs far from mean 0 and variance 1.

# %%
mx.random.seed(0)
x_norm = 3.0 + 5.0 * mx.random.normal((4, 10, 64))
pairs = [(LayerNorm(64), nn.LayerNorm(64, eps=1e-5)),
         (RMSNorm(64), nn.RMSNorm(64, eps=1e-5))]
for mine, theirs in pairs:
    weights = {"weight": mx.random.normal((64,))}
    if "bias" in mine:
        weights["bias"] = mx.random.normal((64,))
    mine.update(weights)
    theirs.update(weights)
    difference = mx.abs(mine(x_norm) - theirs(x_norm)).max().item()
    assert mx.allclose(mine(x_norm), theirs(x_norm), atol=1e-5).item()
    print(f"{type(mine).__name__}: max difference {difference:.1e}")
normalized = LayerNorm(64)(x_norm)
print(f"input mean {x_norm.mean().item():.2f}, "
      f"std {x_norm.std().item():.2f}; after LayerNorm mean "
      f"{normalized.mean().item():.2f}, std {normalized.std().item():.2f}")

# %% [markdown]
# Both agree with MLX to float32 rounding, and the input, centred near 3
# with a spread of 5, comes out centred at 0 with a spread of 1.
#
# ## The feed-forward network
#
# Attention mixes positions; the *feed-forward network* works on each
# position alone. It widens the vector to `hidden` features (four times
# the width in GPT-2), applies a nonlinearity, and projects back. Most of a
# transformer's parameters live here. The original transformer used ReLU,
# GPT-2 the smoother GELU. *SwiGLU* (Shazeer, 2020) uses two projections
# up: one passes through the SiLU function and *gates* the other by an
# element-wise product. Three matrices instead of two, so models that use
# it shrink `hidden` to two thirds to keep the parameter count.
#
# ### An erf the CPU can afford
#
# GELU (Hendrycks & Gimpel, 2016) multiplies its input by the probability
# that a standard normal variable falls below it, $\Phi(x)$, which is
# written with the error function:
#
# $$\text{GELU}(x) = x\,\Phi(x) = \frac{x}{2}\left(1 +
# \operatorname{erf}\frac{x}{\sqrt{2}}\right)$$ {#eq-gelu}
#
# `nn.gelu` computes exactly that. How much does the erf cost? Time it on
# an array the size of the baby model's hidden layer for a batch of 12
# windows of 64 characters, next to a multiply-add on the same array:

# %%
erf_x = mx.random.normal((768, 512))
mx.eval(erf_x)
repeats_erf = pick(smoke=3, book=21)
erf_ns = 1e9 * median_seconds(lambda: mx.erf(erf_x), repeats_erf) \
    / erf_x.size
madd_ns = 1e9 * median_seconds(lambda: erf_x * 1.5 + 0.5, repeats_erf) \
    / erf_x.size
print(f"mx.erf {erf_ns:.2f} ns per number, multiply-add {madd_ns:.2f} ns")

# %% [markdown]
# On this machine's CPU one erf costs {{ erf_ns / madd_ns:.0f }} times a
# multiply-add. A *rational function*, one polynomial divided by another,
# needs nothing but multiply-adds and one division, and it can follow
# erf closely: erf is odd, so write
# $\operatorname{erf}(x) \approx x\,P(x^2)/Q(x^2)$, and past $|x| = 4$
# float32's erf is $\pm 1$, so clamp $x$ there and fit on $[0, 4]$.
# `erf_coefficients` fits $P$ and $Q$ by least squares, repeated a few
# times with weights that make it minimize the error itself (Sanathanan
# & Koerner, 1963); exercise 6.6 derives the method.

# %%
#| export
ERF_CLAMP = 4.0  # float32 erf is ±1 beyond this


@functools.cache
def erf_coefficients(numerator: int = 6, denominator: int = 5,
                     rounds: int = 20) -> tuple[tuple[float, ...], ...]:
    """P and Q, highest power first, with erf(x) ≈ x P(x²) / Q(x²) on
    [0, ERF_CLAMP] and Q(0) = 1: least squares on the linear equations
    x P(x²) - erf(x) (Q(x²) - 1) = erf(x), each divided by the previous
    round's Q(x²) (Sanathanan & Koerner, 1963)."""
    x = np.linspace(0.0, ERF_CLAMP, 4001)
    erf_x = np.array([math.erf(value) for value in x])
    t = x[:, None] ** 2
    p_columns = x[:, None] * t ** np.arange(numerator + 1)
    q_columns = -erf_x[:, None] * t ** np.arange(1, denominator + 1)
    columns = np.hstack([p_columns, q_columns])
    weight = np.ones_like(x)
    for _ in range(rounds):
        solution = np.linalg.lstsq(columns * weight[:, None],
                                   erf_x * weight, rcond=None)[0]
        q = np.concatenate([[1.0], solution[numerator + 1:]])
        weight = 1.0 / np.polyval(q[::-1], x**2)
    p = solution[:numerator + 1]
    return tuple(p[::-1].tolist()), tuple(q[::-1].tolist())


def horner(coefficients: tuple[float, ...], t: mx.array) -> mx.array:
    """The polynomial with `coefficients`, highest power first, at t."""
    result = coefficients[0]
    for coefficient in coefficients[1:]:
        result = result * t + coefficient
    return result


def erf(x: mx.array) -> mx.array:
    """The error function from multiply-adds and one division, computed
    in float32 (its coefficients are too large for bfloat16)."""
    numerator, denominator = erf_coefficients()
    x32 = mx.clip(x.astype(mx.float32), -ERF_CLAMP, ERF_CLAMP)
    t = x32 * x32
    ratio = horner(numerator, t) / horner(denominator, t)
    return (x32 * ratio).astype(x.dtype)


@mx.custom_function
def gelu(x: mx.array) -> mx.array:
    """GELU, x (1 + erf(x / √2)) / 2, with the rational erf."""
    return 0.5 * x * (1 + erf(x * math.sqrt(0.5)))


@gelu.vjp
def gelu_vjp(x: mx.array, cotangent: mx.array,
             output: mx.array) -> mx.array:
    """GELU'(x) = Φ(x) + x φ(x): the backward pass needs only x (MLX
    passes a single primal as itself, not in a tuple)."""
    cdf = 0.5 * (1 + erf(x * math.sqrt(0.5)))
    pdf = mx.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return cotangent * (cdf + x * pdf)

# %% [markdown]
# `gelu` brings its own backward pass. Left to automatic
# differentiation, the Horner loop would keep every intermediate
# polynomial for the backward pass, a dozen arrays the size of the hidden
# layer; the derivative written out needs only $x$, at the price of a
# second erf and one exponential. The checks: the rational erf against Python's `math.erf`
# in double precision, at the float32 numbers of a fine grid, with MLX's
# own erf beside it; the GELU and its gradient against `nn.gelu`; and the
# time per number.

# %%
erf_grid = np.linspace(-6, 6, pick(smoke=2000, book=60000),
                       dtype=np.float32)
erf_exact = np.array([math.erf(value) for value in erf_grid.tolist()])
erf_errors = {
    "mx.erf": np.abs(np.array(mx.erf(mx.array(erf_grid))) - erf_exact),
    "rational erf": np.abs(np.array(erf(mx.array(erf_grid))) - erf_exact),
}
assert erf_errors["rational erf"].max() < 1e-6
gelu_x = mx.array(erf_grid)
gelu_gap = mx.abs(gelu(gelu_x) - nn.gelu(gelu_x)).max().item()
slope_gap = mx.abs(mx.grad(lambda x: gelu(x).sum())(gelu_x)
                   - mx.grad(lambda x: nn.gelu(x).sum())(gelu_x)).max()
assert gelu_gap < 5e-6 and slope_gap.item() < 5e-6
rational_ns = 1e9 * median_seconds(lambda: erf(erf_x), repeats_erf) \
    / erf_x.size
for name, error in erf_errors.items():
    print(f"{name}: largest error {error.max():.1e}")
print(f"GELU against nn.gelu: values within {gelu_gap:.1e}, "
      f"gradients within {slope_gap.item():.1e}")
print(f"rational erf {rational_ns:.2f} ns per number")

# %% [markdown]
# Both erfs are close to the exact one in absolute terms: the rational
# one within {{ erf_errors["rational erf"].max():.1e }}, MLX's within
# {{ erf_errors["mx.erf"].max():.1e }}; float32 numbers just below 1 lie
# $2^{-24} \approx 6 \times 10^{-8}$ apart. The GELU built on it agrees
# with `nn.gelu` to within {{ gelu_gap:.1e }} in value and
# {{ slope_gap.item():.1e }} in slope, and its erf costs
# {{ rational_ns:.2f }} ns per number against {{ erf_ns:.2f }}. The
# feed-forward network uses it.

# %%
#| export
ACTIVATIONS = ("relu", "gelu", "swiglu")


class FeedForward(nn.Module):
    """Position-wise MLP: dims -> hidden -> dims with ReLU or GELU, or the
    gated SwiGLU, silu(x W_gate) * (x W_up) then down (Shazeer, 2020)."""

    def __init__(self, dims: int, hidden: int, activation: str,
                 bias: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; "
                             f"use one of {', '.join(ACTIVATIONS)}")
        self.activation = activation
        self.up_proj = nn.Linear(dims, hidden, bias=bias)
        if activation == "swiglu":
            self.gate_proj = nn.Linear(dims, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dims, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        up = self.up_proj(x)
        if self.activation == "relu":
            hidden = nn.relu(up)
        elif self.activation == "gelu":
            hidden = gelu(up)
        else:
            hidden = nn.silu(self.gate_proj(x)) * up
        return self.down_proj(hidden)

# %% [markdown]
# Notice that the names `up_proj`, `gate_proj` and `down_proj` are those of
# the LLaMA family in `mlx-lm`, so weights can later be copied by name.
# Which activation to use is partly a matter of speed. Time each one on a
# batch the size of the full preset's, with the width fixed at 384 and
# `hidden` at four times that (two thirds of it for SwiGLU).

# %%
ffn_dims = 384
ffn_x = mx.random.normal((pick(smoke=2, book=16), 256, ffn_dims))
ffn_rows = []
for activation in (*ACTIVATIONS, "nn.gelu"):
    hidden = 4 * ffn_dims if activation != "swiglu" else 8 * ffn_dims // 3
    ffn = FeedForward(ffn_dims, hidden, activation.removeprefix("nn."))
    mx.eval(ffn.parameters())
    if activation == "nn.gelu":  # the same layer with MLX's GELU
        def forward() -> mx.array:
            return ffn.down_proj(nn.gelu(ffn.up_proj(ffn_x)))
    else:
        def forward() -> mx.array:
            return ffn(ffn_x)
    seconds = median_seconds(forward, pick(smoke=1, book=5))
    count = sum(v.size for _, v in tree_flatten(ffn.parameters()))
    ffn_rows.append([activation, hidden, count, seconds * 1e3])
ffn_ms = {row[0]: row[3] for row in ffn_rows}

# %%
#| echo: false
#| label: tbl-ffn
#| tbl-cap: Forward time of one feed-forward layer (width 384) on a batch of 256-token sequences on this machine, median of several runs. SwiGLU has three matrices of two-thirds width, so the same parameter count; the last row is the GELU layer with MLX's nn.gelu instead of the rational erf.
Table(ffn_rows, ["activation", "hidden", "parameters", "forward (ms)"])

# %% [markdown]
# @tbl-ffn shows the three at equal parameter counts. On this machine
# the GELU layer takes {{ ffn_ms["gelu"] / ffn_ms["relu"]:.1f }} times as
# long as the ReLU one, and
# {{ ffn_ms["nn.gelu"] / ffn_ms["relu"]:.1f }} times with `nn.gelu`: the
# matrix products cost the same, and the rest is the elementwise work.
# SwiGLU pays for a SiLU, which needs an exponential, on two-thirds as
# many elements. This book did not measure an Apple GPU; there we expect
# the differences to shrink, because what is slow here is MLX's CPU code
# for element-wise functions, while a GPU spreads element-wise work over
# thousands of lanes. Quality, not speed, is why large models choose
# SwiGLU (Shazeer, 2020).
#
# ## Two ways to build a block
#
# A block is attention followed by the feed-forward network, each wrapped
# in a *residual connection*: the sublayer's output is added to its input
# rather than replacing it. The sum is called the *residual stream*, and
# every sublayer reads from it and writes a correction into it. Where the
# normalization goes is the question. The original transformer (Vaswani et
# al., 2017) normalizes *after* the addition, so the stream itself is
# normalized at every step (post-norm):
#
# $$x \leftarrow \text{Norm}(x + \text{Attn}(x)), \qquad
# x \leftarrow \text{Norm}(x + \text{FFN}(x))$$
#
# GPT-2 (Radford et al., 2019) normalizes only the *input* of each
# sublayer and leaves the stream alone (pre-norm):
#
# $$x \leftarrow x + \text{Attn}(\text{Norm}(x)), \qquad
# x \leftarrow x + \text{FFN}(\text{Norm}(x))$$
#
# In pre-norm there is a clean path from the output back to the
# embeddings, a sum with nothing in its way, and the gradient flows along
# it undisturbed. Xiong et al. (2020) showed that post-norm instead puts
# large gradients on the last layers at initialization, which is why it
# needs a learning-rate warm-up to train at all. Before the block, its
# configuration: every size of the model in one place, checked when it is
# made, so that a wrong number fails with a message rather than with a
# shape error deep in a matrix product.

# %%
#| export
NORMS = ("layer", "rms")


@dataclass
class GPTConfig:
    """Every size of a GPT; checked on creation."""

    vocab_size: int
    """Token ids the model reads and predicts: the tokenizer's size."""
    context: int
    """Most tokens the model sees at once: its number of positions."""
    n_layer: int
    """Transformer blocks, one after the other."""
    n_head: int
    """Attention heads per block; must divide n_embd."""
    n_embd: int
    """Width of the residual stream: each token's vector."""
    dropout: float = 0.0
    """Share of activations zeroed at random in training (0: off)."""
    bias: bool = False
    """Bias vectors in the attention and feed-forward layers."""
    activation: str = "gelu"
    """Feed-forward nonlinearity: "relu", "gelu" or "swiglu"."""
    norm: str = "layer"
    """Normalization: "layer" (LayerNorm) or "rms" (RMSNorm)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got "
                                 f"{getattr(self, name)}; set it to >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_head={self.n_head} does not divide n_embd={self.n_embd}"
                f"; make n_embd a multiple of n_head, e.g. "
                f"{self.n_head * max(1, self.n_embd // self.n_head)}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; "
                             f"use one of {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; "
                             f"use one of {', '.join(NORMS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden(self) -> int:
        """Feed-forward width: 4·n_embd, two thirds of it for SwiGLU."""
        if self.activation == "swiglu":
            return 8 * self.n_embd // 3
        return 4 * self.n_embd

    @classmethod
    def baby(cls, vocab_size: int, **changes: object) -> "GPTConfig":
        """4 layers, 4 heads, 128 dims, 64 positions: trains in minutes."""
        sizes = dict(context=64, n_layer=4, n_head=4, n_embd=128)
        return cls(vocab_size=vocab_size, **{**sizes, **changes})

    @classmethod
    def full(cls, vocab_size: int, **changes: object) -> "GPTConfig":
        """6 layers, 6 heads, 384 dims, 256 positions: nanoGPT's
        Shakespeare model."""
        sizes = dict(context=256, n_layer=6, n_head=6, n_embd=384)
        return cls(vocab_size=vocab_size, **{**sizes, **changes})


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalization layer the configuration asks for."""
    if config.norm == "rms":
        return RMSNorm(config.n_embd)
    return LayerNorm(config.n_embd)

# %% [markdown]
# Notice that the messages say what to change, not only what is wrong, and
# that the presets take the vocabulary from the caller: it belongs to the
# tokenizer, not to the model. The string under each field is its
# documentation: editors show it beside the name, and `mlxllm train
# --help` prints it next to the field's flag. The block itself is short.

# %%
#| export
class Block(nn.Module):
    """Pre-norm transformer block (GPT-2): x + attn(norm(x)), then
    x + ffn(norm(x)), with dropout on what each sublayer adds."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm1 = make_norm(config)
        self.attention = MultiHeadAttention(config.n_embd, config.n_head,
                                            bias=config.bias)
        self.norm2 = make_norm(config)
        self.feed_forward = FeedForward(config.n_embd, config.hidden,
                                        config.activation, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.feed_forward(self.norm2(x)))

# %% [markdown]
# The post-norm block of the original paper has the same parts in a
# different order, so it can inherit them and replace only `__call__`.
# It is not exported: it exists for the experiment below.

# %%
class PostNormBlock(Block):
    """The block of Vaswani et al. (2017): norm(x + sublayer(x))."""

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        x = self.norm1(x + self.dropout(self.attention(x, mask)))
        return self.norm2(x + self.dropout(self.feed_forward(x)))


block_config = GPTConfig.baby(tokenizer.vocab_size)
x_block = mx.random.normal((2, 16, block_config.n_embd))
for block in (Block(block_config), PostNormBlock(block_config)):
    assert block(x_block, causal_mask(16)).shape == x_block.shape
print(Block(block_config)(x_block, causal_mask(16)).shape)

# %%
#| echo: false
#| label: fig-block-norms
#| fig-cap: The two blocks as their `__call__` methods compute them, boxes named as the modules in the code; the thick line is the residual stream. Pre-norm (top) normalizes only what each branch reads, so the stream runs from input to output through additions alone; post-norm (bottom) puts `norm1` and `norm2` on the stream itself. Dropout on each branch's output, when configured, is not drawn.
from matplotlib.patches import Circle, FancyBboxPatch

sublayer_colors = {"norm": "#F0E442", "attention": "#56B4E9",
                   "feed_forward": "#CC79A7"}


def sublayer(ax, x, y, name):
    """A box for one of the block's modules, named as in the code; returns
    its right edge."""
    width = 0.42 * len(name) + 0.9
    color = sublayer_colors["norm" if name.startswith("norm") else name]
    ax.add_patch(FancyBboxPatch((x, y - 0.45), width, 0.9,
                                boxstyle="round,pad=0,rounding_size=0.15",
                                facecolor=color, edgecolor="black",
                                linewidth=0.7, zorder=3))
    ax.text(x + width / 2, y, name, ha="center", va="center", fontsize=8,
            family="DejaVu Sans Mono", zorder=4)
    return x + width


def line(ax, xs, ys, arrow=False, width=0.9):
    """A polyline, with an arrowhead on its last stretch when `arrow`."""
    if arrow:
        ax.annotate("", xy=(xs[-1], ys[-1]), xytext=(xs[-2], ys[-2]),
                    arrowprops=dict(arrowstyle="->", linewidth=width,
                                    shrinkA=0, shrinkB=0))
        xs, ys = xs[:-1], ys[:-1]
    ax.plot(xs, ys, color="black", linewidth=width, zorder=1)


def block_row(ax, y, parts, title):
    """One block drawn along its residual stream at height y. `parts`
    lists, in order, branches (a tuple of sublayers that read the stream
    and add to it) and names of modules that sit on the stream itself."""
    stream = 1.8  # the residual stream is drawn thicker than the branches
    ax.text(-0.6, y + 2.3, title, fontsize=9, ha="left")
    ax.text(-0.3, y, "x", ha="right", va="center", fontsize=9)
    x = 0.0
    for part in parts:
        if isinstance(part, tuple):  # a residual branch
            fork, rise = x + 0.6, y + 1.3
            ax.plot(fork, y, "o", color="black", markersize=3.5, zorder=3)
            line(ax, [x, fork + 0.4], [y, y], width=stream)
            line(ax, [fork, fork, fork + 0.5], [y, rise, rise], arrow=True)
            x = fork + 0.5
            for name in part:
                x = sublayer(ax, x, rise, name)
                line(ax, [x, x + 0.5], [rise, rise], arrow=True)
                x += 0.5
            plus = x + 0.2
            line(ax, [x - 0.5, plus, plus], [rise, rise, y + 0.32], arrow=True)
            line(ax, [fork + 0.4, plus - 0.32], [y, y], arrow=True,
                 width=stream)
            ax.add_patch(Circle((plus, y), 0.32, facecolor="white",
                                edgecolor="black", linewidth=1, zorder=3))
            ax.text(plus, y, "+", ha="center", va="center", fontsize=9,
                    zorder=4)
            x = plus + 0.32
        else:  # a module on the stream
            line(ax, [x, x + 0.6], [y, y], arrow=True, width=stream)
            x = sublayer(ax, x + 0.6, y, part)
    line(ax, [x, x + 0.8], [y, y], arrow=True, width=stream)
    ax.text(x + 1.0, y, "next block", va="center", fontsize=7.5)


fig, ax = plt.subplots(figsize=(5.6, 2.6))
block_row(ax, 4.4, [("norm1", "attention"), ("norm2", "feed_forward")],
          "pre-norm: Block (GPT-2)")
block_row(ax, 0, [("attention",), "norm1", ("feed_forward",), "norm2"],
          "post-norm: PostNormBlock (Vaswani et al., 2017)")
ax.set_xlim(-0.8, 25.5)
ax.set_ylim(-0.7, 7.2)
ax.set_aspect("equal")
ax.set_axis_off()

# %% [markdown]
# A block maps (batch, positions, width) to the same shape, which is what
# lets you stack as many as you like. @fig-block-norms draws the two
# orders: in `Block` nothing but additions lies on the residual stream,
# while `PostNormBlock` sends the whole stream through a normalization
# after every sublayer.
#
# ## The GPT
#
# The model is now a short list. Token ids become vectors through a
# learned *token embedding*; a learned *position embedding*, one vector per
# position up to `context`, is added, as GPT-2 does (chapter 4 compared it
# with sinusoids and RoPE). The sum runs through `n_layer` blocks and a
# final normalization. The output head maps each vector back to one score
# (logit) per token of the vocabulary, and it reuses the token embedding
# matrix instead of owning one: *weight tying* (Press & Wolf, 2017). The
# same matrix then says both how to read a token and how to recognize
# that it should come next, and a vocabulary-sized matrix is saved.
#
# Initialization follows GPT-2: every matrix drawn from a normal
# distribution with standard deviation 0.02, and the two projections that
# write into the residual stream (`out_proj` of attention, `down_proj` of
# the feed-forward network) scaled down by $1/\sqrt{2 \cdot n_\text{layer}}$.
# Each block adds two such writes to the stream; scaling them keeps the
# stream's variance from growing with depth.

# %%
#| export
class GPT(nn.Module):
    """Decoder-only transformer: (B, T) token ids -> (B, T, vocab) logits."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.context, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = [Block(config) for _ in range(config.n_layer)]
        self.norm = make_norm(config)
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2: normal(0, 0.02) weights, zero biases, and the residual
        output projections scaled by 1/sqrt(2·n_layer)."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for path, module in self.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                std = 0.02
                if path.endswith(("out_proj", "down_proj")):
                    std = residual_std
                module.weight = nn.init.normal(std=std)(module.weight)
                if "bias" in module:
                    module.bias = mx.zeros_like(module.bias)

    def __call__(self, ids: mx.array) -> mx.array:
        length = ids.shape[1]
        if length > self.config.context:
            raise ValueError(
                f"{length} tokens do not fit the context of "
                f"{self.config.context} positions; crop the input to its "
                f"last {self.config.context} tokens or build the model "
                f"with a larger GPTConfig.context")
        positions = self.position_embedding(mx.arange(length))
        x = self.dropout(self.token_embedding(ids) + positions)
        mask = causal_mask(length)
        for block in self.blocks:
            x = block(x, mask)
        return self.token_embedding.as_linear(self.norm(x))

# %% [markdown]
# Notice `as_linear`: it multiplies by the transpose of the embedding
# matrix, so the head has no parameters of its own. The check of the
# context length comes first, because the position table simply has no row
# for position `context` and the error MLX would give there says nothing
# about why.
#
# A model that has never seen data should not prefer any character.
# With small weights its logits are close to zero, all probabilities near
# $1/V$, and the cross-entropy near $\ln V$. That is the first thing to
# check of any new model, and a test of the initialization.

# %%
baby_config = GPTConfig.baby(tokenizer.vocab_size)
mx.random.seed(0)
baby = GPT(baby_config)
sampler = BatchSampler(train_ids, 16, baby_config.context, seed=0)
x_batch, y_batch = sampler.sample()
logits = baby(x_batch)
initial_loss = nn.losses.cross_entropy(logits, y_batch).mean().item()
uniform_loss = math.log(tokenizer.vocab_size)
assert abs(initial_loss - uniform_loss) < 0.05
print(logits.shape, f"loss {initial_loss:.3f}, ln V = {uniform_loss:.3f}")

# %% [markdown]
# The untrained model's loss, {{ initial_loss:.3f }}, is within a few
# hundredths of $\ln {{ tokenizer.vocab_size }} = {{ uniform_loss:.3f }}$.
# Had the initialization been ten times larger, the logits would start
# confident and wrong, and the first hundred steps of training would be
# spent unlearning that. Causality is the other property to prove: the
# logits at position $t$ must not change when any later token does.

# %%
changed = mx.array(x_batch)
changed[:, 40:] = (changed[:, 40:] + 1) % tokenizer.vocab_size
before, after = baby(x_batch), baby(changed)
assert mx.array_equal(before[:, :40], after[:, :40]).item()
assert not mx.allclose(before[:, 40:], after[:, 40:]).item()
try:
    baby(mx.zeros((1, baby_config.context + 1), dtype=mx.int32))
except ValueError as error:
    print(error)

# %% [markdown]
# ## Why pre-norm: a deep experiment
#
# Now the question of the previous section, measured. Train two models of
# {{ depth_layers }} blocks, narrow enough to run in this build, on the
# characters of Tiny Shakespeare: one with pre-norm blocks, one with
# post-norm blocks, the same seed, the same batches, the same learning
# rate and no warm-up. Both use ReLU, the original paper's activation,
# which is also the fast one here; the only difference is where the
# normalization sits. The post-norm model is the GPT with its blocks
# swapped.

# %%
class PostNormGPT(GPT):
    """The GPT with the post-norm blocks of Vaswani et al. (2017)."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.blocks = [PostNormBlock(config) for _ in range(config.n_layer)]
        self.init_weights()


depth_layers = pick(smoke=4, book=8)
depth_steps = pick(smoke=10, book=400)
depth_config = GPTConfig(tokenizer.vocab_size, context=32,
                         n_layer=depth_layers, n_head=4, n_embd=64,
                         activation="relu")

# %% [markdown]
# Both train on the mean next-character cross-entropy, computed by MLX's
# `nn.losses.cross_entropy` (chapter 7 opens it up). The logits are cast
# to float32 first: a no-op for these float32 models, and the one place
# where precision matters most when chapter 8 runs a model in bfloat16.
# Every later chapter trains with this loss.

# %%
#| export
def language_model_loss(model: nn.Module, inputs: mx.array,
                        targets: mx.array) -> mx.array:
    """The training objective: mean next-token cross-entropy in nats,
    computed in float32 whatever the model's precision."""
    logits = model(inputs).astype(mx.float32)
    return nn.losses.cross_entropy(logits, targets, reduction="mean")

# %% [markdown]
# Before training, look at the gradient each block receives on the same
# batch: the norm of the gradient of all of a block's weights, for the
# freshly initialized models.

# %%
def block_gradient_norms(model: GPT, x: mx.array, y: mx.array) -> list:
    """The L2 norm of the loss gradient over each block's parameters."""
    _, grads = nn.value_and_grad(model, language_model_loss)(model, x, y)
    return [math.sqrt(sum((g * g).sum().item()
                          for _, g in tree_flatten(block)))
            for block in grads["blocks"]]


gradient_norms = {}
for name, model_class in (("pre-norm", GPT), ("post-norm", PostNormGPT)):
    mx.random.seed(1)
    gradient_norms[name] = block_gradient_norms(
        model_class(depth_config), x_batch[:, :depth_config.context],
        y_batch[:, :depth_config.context])
gradient_spread = {name: max(norms) / min(norms)
                   for name, norms in gradient_norms.items()}
gradient_ratio = np.mean(gradient_norms["pre-norm"]) / np.mean(
    gradient_norms["post-norm"])

# %%
#| echo: false
#| label: fig-grad-norms
#| fig-cap: Gradient norm of each block's weights at initialization, on one batch, for the two placements of the normalization (log scale). At this depth both are nearly flat across blocks, but at very different levels.
fig, ax = plt.subplots(figsize=(4.5, 2.6))
for (name, norms), style in zip(gradient_norms.items(), ("o-", "s--")):
    ax.plot(range(1, depth_layers + 1), norms, style, label=name)
ax.set_xlabel("block")
ax.set_ylabel("gradient norm")
ax.set_yscale("log")
ax.legend()
fig.tight_layout()

# %% [markdown]
# @fig-grad-norms is not quite the picture Xiong et al. (2020) draw, and
# the difference is instructive. They show that post-norm puts the largest
# gradients on the last layers, with their initialization and at their
# depths. Here, with GPT-2's small initialization and {{ depth_layers }}
# blocks, the gradients of both models vary across blocks by a factor of
# at most {{ max(gradient_spread.values()):.1f }}; what differs is the
# level. The pre-norm blocks receive {{ gradient_ratio:.0f }} times the
# gradient of the post-norm ones. In the post-norm model the stream is
# renormalized to unit size after every sublayer, while each sublayer,
# with weights of size 0.02, writes a correction far smaller than that:
# every block is a small change to a large signal, squashed again by every
# normalization that follows, so changing its weights barely moves the
# output. In the pre-norm model every sublayer reads a normalized input
# and adds its output straight to a stream that starts at the size of
# the embeddings, and nothing stands between that sum and the final
# normalization. Now train both and see what the loss makes of it.

# %%
def train_curve(model: GPT, steps: int, seed: int) -> list[float]:
    """Train with AdamW at a fixed rate; the loss of every step."""
    optimizer = optim.AdamW(learning_rate=2e-3)
    loss_and_grad = nn.value_and_grad(model, language_model_loss)
    batches = BatchSampler(train_ids, 16, model.config.context, seed)
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grad(model, *batches.sample())
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses


curves, depth_seconds = {}, time.perf_counter()
for name, model_class in (("pre-norm", GPT), ("post-norm", PostNormGPT)):
    mx.random.seed(1)
    curves[name] = train_curve(model_class(depth_config), depth_steps, 2)
depth_seconds = time.perf_counter() - depth_seconds
tail = max(1, depth_steps // 10)
final_losses = {name: float(np.mean(c[-tail:])) for name, c in curves.items()}
print({name: round(loss, 3) for name, loss in final_losses.items()},
      f"{depth_seconds:.0f} s")
assert all(c[-1] < uniform_loss for c in curves.values())

# %%
#| echo: false
#| label: fig-norm-loss
#| fig-cap: Training loss of two GPTs that differ only in where the normalization sits, same seed, same batches, no warm-up. Thin lines are single steps, thick lines a moving average over 20 steps.
fig, ax = plt.subplots(figsize=(5.0, 2.8))
window = min(20, depth_steps)
for (name, losses), color in zip(curves.items(), ("#0072B2", "#D55E00")):
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(losses, color=color, alpha=0.25, linewidth=0.7)
    ax.plot(np.arange(window - 1, len(losses)), smooth, color=color,
            label=name)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# After {{ depth_steps }} steps the pre-norm model's loss, averaged over
# the last tenth of the run, is {{ final_losses["pre-norm"]:.3f }} nats per
# character, the post-norm model's {{ final_losses["post-norm"]:.3f }}
# (@fig-norm-loss). Read the figure with care: this is one seed, one
# learning rate and a short run, at a depth where post-norm still trains.
# The gap you see is the early part of the story; the failures Xiong et
# al. (2020) report, losses that plateau or diverge, come with more layers,
# larger learning rates and no warm-up together. What pre-norm buys is
# robustness: it trains at depth with a plain schedule, which is why GPT-2
# and nearly every model since use it, and why `Block` is pre-norm. The
# price is the final normalization that the GPT needs after the last
# block, since the stream itself is never normalized.
#
# ## Counting parameters
#
# How big is the model? Every matrix is determined by the configuration,
# so the count is a formula. With $V$ the vocabulary, $T$ the context, $d$
# the width, $h$ the feed-forward width and $L$ the number of blocks,
# and without biases:
#
# $$N = Vd + Td + L\,(4d^2 + k\,dh + 2n) + n$$ {#eq-params}
#
# where $k$ is 2 for ReLU and GELU and 3 for SwiGLU, and $n$, the size of
# one normalization, is $2d$ for LayerNorm and $d$ for RMSNorm. The head
# adds nothing: it is tied. With the usual $h = 4d$ the blocks hold
# $12d^2$ each, the number you will meet in every scaling paper.

# %%
#| export
def count_parameters(config: GPTConfig) -> int:
    """The number of parameters of GPT(config), from the formula."""
    d, h = config.n_embd, config.hidden
    norm = 2 * d if config.norm == "layer" else d
    attention = 4 * d * d + (4 * d if config.bias else 0)
    if config.activation == "swiglu":
        ffn = 3 * d * h + (2 * h + d if config.bias else 0)
    else:
        ffn = 2 * d * h + (h + d if config.bias else 0)
    embeddings = (config.vocab_size + config.context) * d
    return embeddings + config.n_layer * (attention + ffn + 2 * norm) + norm

# %% [markdown]
# Notice that the biases, when `bias=True`, add one vector per matrix:
# the formula follows the layer definitions term by term. Check it against
# the model itself by counting what `tree_flatten` finds, for the two
# presets and for every combination of options.

# %%
def module_parameters(model: nn.Module) -> int:
    """Count what the model really holds."""
    return sum(v.size for _, v in tree_flatten(model.parameters()))


vocab = tokenizer.vocab_size
checked = [GPTConfig.baby(vocab), GPTConfig.full(vocab)]
checked += [GPTConfig(vocab, 32, 2, 2, 48, bias=bias, activation=a, norm=n)
            for bias in (False, True) for a in ACTIVATIONS for n in NORMS]
for config in checked:
    assert count_parameters(config) == module_parameters(GPT(config))
baby_parameters = count_parameters(GPTConfig.baby(vocab))
full_parameters = count_parameters(GPTConfig.full(vocab))
print(f"{len(checked)} configurations agree; baby {baby_parameters:,}, "
      f"full {full_parameters:,}")

# %% [markdown]
# The formula and the modules agree on all {{ len(checked) }}
# configurations. The baby preset has {{ baby_parameters:, }} parameters,
# the full one {{ full_parameters:, }}, about
# {{ full_parameters / baby_parameters:.0f }} times as many: three times
# the width costs nine times per matrix, and there are more blocks.
#
# ## Memory
#
# A parameter is a number, and a number has a type: four bytes in float32,
# two in bfloat16. Training needs more than the weights: AdamW keeps two
# running averages per parameter, and the backward pass a gradient, so
# float32 training holds about four copies, sixteen bytes a parameter,
# before any activations. Measure the weights rather than trust the
# arithmetic: convert a model and add up the bytes of its arrays.

# %%
memory_rows = []
for name, config in (("baby", GPTConfig.baby(vocab)),
                     ("full", GPTConfig.full(vocab))):
    model = GPT(config)
    sizes = []
    for dtype in (mx.float32, mx.bfloat16):
        model.set_dtype(dtype)
        sizes.append(sum(v.nbytes for _, v in
                         tree_flatten(model.parameters())) / 2**20)
    count = count_parameters(config)
    assert sizes[0] == 4 * count / 2**20 and sizes[1] == 2 * count / 2**20
    memory_rows.append([name, count, *sizes, 16 * count / 2**20])
seven_billion_training_gb = 16 * 7e9 / 1e9

# %%
#| echo: false
#| label: tbl-memory
#| tbl-cap: Memory of the two presets, in MiB. The weight columns are measured from the arrays; the last column is weights, gradients and AdamW's two moments in float32, before activations.
Table(memory_rows, ["preset", "parameters", "float32", "bfloat16",
                    "AdamW training"])

# %% [markdown]
# @tbl-memory makes the point that matters at scale: these models fit
# anywhere, but the same sixteen bytes a parameter mean that a
# seven-billion-parameter model needs {{ seven_billion_training_gb:.0f }}
# GB to train naively. Lower precision is the obvious remedy, and chapter
# 8 measures what it buys: its mixed precision keeps these sixteen bytes in
# float32 and adds a bfloat16 copy of the weights, eighteen bytes a
# parameter, and saves its memory on the activations instead; only
# training wholly in bfloat16 halves the sixteen bytes, and chapter 8 shows
# what that costs in accuracy.
#
# ## Arithmetic and time
#
# Memory says whether a model fits; arithmetic says how long it takes.
# Kaplan et al. (2020) count about $2N$ floating-point operations per token
# for a forward pass through $N$ weights (one multiply and one add each),
# and twice that for the backward pass, which computes gradients both for
# the weights and for the activations. Attention adds the products of
# queries with keys and of weights with values, which involve no weights:
# $2 \cdot 2 L T d$ per token forward for a full $T \times T$ score
# matrix. Training per token therefore costs about
#
# $$C \approx 6N' + 12\,L\,T\,d$$ {#eq-flops}
#
# where $N'$ counts the weights every token is multiplied by: those of the
# blocks and of the head, $Vd$, but not the position table or the
# normalization, which cost next to nothing. (Kaplan et al. write the
# attention term as $6LTd$ because they count a causal model's half of the
# score matrix; your implementation computes it all.) Divide by the speed
# of this machine's matrix products and you have a prediction for one
# step. Then measure one with `time_train_step`: forward, backward and an
# AdamW update, timed as the median of several steps on one batch.

# %%
#| export
def train_flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token: 6 N' plus the attention products."""
    d, T = config.n_embd, config.context
    norms = (2 if config.norm == "layer" else 1) * d * (2 * config.n_layer
                                                        + 1)
    weights = count_parameters(config) - T * d - norms
    return 6 * weights + 12 * config.n_layer * T * d


def time_train_step(model: GPT, x: mx.array, y: mx.array,
                    repeats: int) -> float:
    """Median seconds of one plain training step of `model` on the batch
    (x, y): the loss, its gradients and an AdamW update (which change the
    model's weights)."""
    loss_and_grad = nn.value_and_grad(model, language_model_loss)
    optimizer = optim.AdamW(learning_rate=1e-3)

    def step() -> tuple:
        loss, grads = loss_and_grad(model, x, y)
        optimizer.update(model, grads)
        return loss, model.parameters(), optimizer.state

    return median_seconds(step, repeats)

# %%
step_batch = 16
machine_gflops = matmul_gflops()
baby_flops = train_flops_per_token(baby_config) * step_batch \
    * baby_config.context
predicted_ms = baby_flops / (machine_gflops * 1e9) * 1e3

mx.random.seed(0)
measured_ms = 1e3 * time_train_step(GPT(baby_config), x_batch, y_batch,
                                    pick(smoke=2, book=10))
print(f"{baby_flops / 1e9:.2f} GFLOP per step at {machine_gflops:.0f} "
      f"GFLOP/s: predicted {predicted_ms:.1f} ms, measured "
      f"{measured_ms:.1f} ms")

# %% [markdown]
# One step of the baby model on a batch of {{ step_batch }} sequences of
# {{ baby_config.context }} characters is {{ baby_flops / 1e9:.2f }}
# GFLOP. At the {{ machine_gflops:.0f }} GFLOP/s that `matmul_gflops()`
# measured for a 1024 × 1024 float32 product just before the step (a
# figure that moves between measurements, as chapter 2 showed), that
# predicts
# {{ predicted_ms:.1f }} ms; the measured step takes
# {{ measured_ms:.1f }} ms, {{ measured_ms / predicted_ms:.1f }} times the
# prediction. The formula counts only multiply-adds in matrix products.
# It leaves out everything else a step does: the softmax, GELU and
# normalizations, which are elementwise and were slow in @tbl-ffn; the
# optimizer update, a handful of operations per parameter; and the
# overhead of launching many small operations, large when the matrices
# are as small as the baby's. Small models run far below the machine's
# peak; the ratio shrinks as the matrices grow, which is one reason
# large models use their hardware better.
#
# ## Saving and loading
#
# Training takes minutes to weeks; its result must outlive the process.
# `save_weights` writes every parameter, by its dotted name, to a
# safetensors file, a flat format that stores the raw bytes of each array
# with a small header. `load_weights` reads it into a model of the same
# configuration, and checks that every name and shape matches.

# %%
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "baby.safetensors"
    baby.save_weights(str(path))
    mx.random.seed(123)
    reloaded = GPT(baby_config)
    assert not mx.array_equal(reloaded(x_batch), baby(x_batch)).item()
    reloaded.load_weights(str(path))
    saved_kib = path.stat().st_size / 1024
assert mx.array_equal(reloaded(x_batch), baby(x_batch)).item()
print(f"{saved_kib:,.0f} KiB; logits reproduced exactly")

# %% [markdown]
# A differently seeded model gives different logits until it loads the
# file, and then exactly the same ones, bit for bit: the file holds
# {{ saved_kib:,.0f }} KiB, four bytes per parameter and a small header.
# The configuration is not in the file; chapter 7 stores it next to the
# weights so that a checkpoint can rebuild its own model.
#
# ## What an untrained model says
#
# Chapter 7 writes a proper `generate` and chapter 9 makes it fast,
# but the simplest version takes four lines: feed the text so far, take
# the logits of the last position, draw a character from their softmax,
# append it, repeat.

# %%
mx.random.seed(0)
ids = mx.array([tokenizer.encode("ROMEO:")])
for _ in range(pick(smoke=20, book=120)):
    next_logits = baby(ids[:, -baby_config.context:])[:, -1]
    next_id = mx.random.categorical(next_logits)
    ids = mx.concatenate([ids, next_id[:, None]], axis=1)
untrained_sample = tokenizer.decode(ids[0].tolist())
print(untrained_sample)

# %% [markdown]
# Noise: every character about as likely as every other, capital letters
# and punctuation as often as `e`, no words, no line breaks where they
# belong. The machinery is complete, a correct causal model with
# {{ baby_parameters:, }} parameters, and it knows nothing. Chapter 7
# changes that.
#
# ## Summary
#
# You built a transformer block and a GPT. You wrote LayerNorm and
# RMSNorm and matched MLX's; fitted a rational function to erf so that
# GELU costs a CPU a few multiply-adds instead of a slow library call;
# built a feed-forward network with ReLU, GELU and SwiGLU and timed
# them; wrote the post-norm block of the original paper and the
# pre-norm block of GPT-2, and measured on a
# {{ depth_layers }}-block model how they distribute gradients and train.
# You stacked blocks into a GPT with tied embeddings and GPT-2's
# initialization, checked that it starts at a loss of $\ln V$ and never
# looks ahead, counted its parameters by formula and by module, predicted
# its memory and the time of a training step, and saved and reloaded it
# exactly.
#
# `mlxllm.model` now also exports:
#
# - `LayerNorm(dims, eps=1e-5)` and `RMSNorm(dims, eps=1e-5)`;
# - `erf(x)`, with the coefficients of `erf_coefficients()` and
#   `horner(coefficients, t)`, and `gelu(x)` with its own backward pass;
# - `FeedForward(dims, hidden, activation, bias=False)`, with
#   `activation` one of `ACTIVATIONS` ("relu", "gelu", "swiglu");
# - `GPTConfig(vocab_size, context, n_layer, n_head, n_embd, dropout=0.0,
#   bias=False, activation="gelu", norm="layer")`, with the presets
#   `GPTConfig.baby(vocab_size)` and `GPTConfig.full(vocab_size)` and the
#   property `hidden`; `make_norm(config)`;
# - `Block(config)`, called as `block(x, mask)`;
# - `GPT(config)`, called on (B, T) ids, and `count_parameters(config)`;
# - `language_model_loss(model, inputs, targets)`, the mean next-token
#   cross-entropy in float32, the loss every later chapter trains with;
# - `train_flops_per_token(config)` and `time_train_step(model, x, y,
#   repeats)`.
#
# ## Exercises
#
# 1. ★ A parameter budget. Using only `count_parameters`, find the width
#    `n_embd` (a multiple of 64) of a 6-layer, 256-position character
#    model that comes closest to 5 million parameters.
# 2. ★ What tying saves. Write a GPT whose head is its own `nn.Linear`
#    and check that it has exactly $Vd$ more parameters. What fraction of
#    the baby model is that, and what fraction of GPT-2 small
#    ($V = 50{,}257$, $d = 768$, 12 layers, 1,024 positions)?
# 3. ★★ RMSNorm in the GPT. Train the baby preset with `norm="layer"`
#    and with `norm="rms"` for the same steps and seed. Compare the loss
#    curves and the time per step.
# 4. ★★ Does warm-up rescue post-norm? Repeat the depth experiment with
#    a learning rate that rises linearly from zero over the first part of
#    the run (Xiong et al., 2020). Does the gap close?
# 5. ★★★ Check @eq-flops across sizes. Measure the training step of
#    models of several widths and plot measured against predicted time.
#    Where does the ratio settle, and why does it fall as the width grows?
# 6. ★★ Fit the rational erf yourself. Write the fit of
#    $\operatorname{erf}(x) \approx x\,P(x^2)/Q(x^2)$ with $Q(0) = 1$ as
#    equations linear in the coefficients, solve them by least squares,
#    then repeat with each equation divided by the previous round's $Q$.
#    How much does the repetition gain? Plot the error of `mx.erf` and of
#    the rational erf against `math.erf`, and say how much of the
#    rational erf's error is float32 rounding rather than the fit.
