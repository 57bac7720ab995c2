# %% [markdown]
# # Chapter 6
#
# The solutions import the GPT that chapter 6 exported to `mlxllm.model`
# and rebuild the character data of the chapter.

# %%
import math
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, pick
from mlxllm.data import BatchSampler, load_corpus, split_train_val
from mlxllm.hardware import matmul_gflops
from mlxllm.model import (
    ERF_CLAMP,
    GPT,
    Block,
    GPTConfig,
    causal_mask,
    count_parameters,
    erf,
    erf_coefficients,
    language_model_loss,
)
from mlxllm.tokenizer import CharTokenizer

text = load_corpus()
tokenizer = CharTokenizer.train(text)
vocab = tokenizer.vocab_size
train_ids = np.array(
    tokenizer.encode(split_train_val(text)[0]), dtype=np.int32)


def train(model: GPT, steps: int, learning_rate: object) -> list[float]:
    """AdamW on fixed-seed batches of 16; the loss of every step."""
    optimizer = optim.AdamW(learning_rate=learning_rate)
    loss_and_grad = nn.value_and_grad(model, language_model_loss)
    batches = BatchSampler(train_ids, 16, model.config.context, seed=2)
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grad(model, *batches.sample())
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses

# %% [markdown]
# ## Exercise 6.1
#
# The count grows with the square of the width, so a scan over multiples
# of 64 finds the closest in a few lines. Each width must also be divisible
# by the number of heads; six heads of 64 dimensions fix the head count to
# the width.

# %%
budget_rows = []
for width in range(64, 1024 + 1, 64):
    config = GPTConfig(vocab, context=256, n_layer=6,
                       n_head=width // 64, n_embd=width)
    budget_rows.append([width, count_parameters(config)])
best_width, best_count = min(
    budget_rows, key=lambda row: abs(row[1] - 5_000_000))
print(f"n_embd={best_width}: {best_count:,} parameters")

# %% [markdown]
# A width of {{ best_width }} gives {{ best_count:, }} parameters.
# Almost all of them sit in the blocks, $12d^2$ each, so the best width is
# close to $\sqrt{5 \times 10^6 / 72}$.
#
# ## Exercise 6.2
#
# An untied model replaces `as_linear` by a head of its own. Subclassing
# keeps everything else, initialization included.

# %%
class UntiedGPT(GPT):
    """The GPT with an output head that does not share the embedding."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.init_weights()

    def __call__(self, ids: mx.array) -> mx.array:
        positions = self.position_embedding(mx.arange(ids.shape[1]))
        x = self.token_embedding(ids) + positions
        mask = causal_mask(ids.shape[1])
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


def count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


baby = GPTConfig.baby(vocab)
extra = count(UntiedGPT(baby)) - count(GPT(baby))
assert extra == vocab * baby.n_embd
gpt2 = GPTConfig(50257, context=1024, n_layer=12, n_head=12,
                 n_embd=768)
tying_rows = [
    [name, count_parameters(c), c.vocab_size * c.n_embd,
     100 * c.vocab_size * c.n_embd / (count_parameters(c)
                                      + c.vocab_size * c.n_embd)]
    for name, c in (("baby", baby), ("GPT-2 small", gpt2))]

# %%
#| echo: false
#| label: tbl-ch6-tying
#| tbl-cap: What weight tying saves. The last column is the untied head's share of the untied model.
Table(tying_rows, ["model", "tied parameters", "head V·d",
                   "share untied (%)"], digits=1)

# %% [markdown]
# For a character vocabulary an untied head would be
# {{ tying_rows[0][3]:.1f }}% of the model, a rounding error; for
# GPT-2's vocabulary it would be {{ tying_rows[1][3]:.0f }}%, which is
# why GPT-2 ties it.
#
# ## Exercise 6.3
#
# Two baby models, two blocks deep to keep the appendix quick, the same
# seed and batches; only the normalization differs.

# %%
norm_steps = pick(smoke=3, book=150)
norm_curves, norm_ms = {}, {}
for norm in ("layer", "rms"):
    mx.random.seed(0)
    model = GPT(GPTConfig.baby(vocab, n_layer=2, norm=norm))
    start = time.perf_counter()
    norm_curves[norm] = train(model, norm_steps, 2e-3)
    norm_ms[norm] = (time.perf_counter() - start) \
        / norm_steps * 1e3
norm_final = {name: np.mean(c[-max(1, norm_steps // 10):])
              for name, c in norm_curves.items()}
print(norm_final, norm_ms)

# %% [markdown]
# After {{ norm_steps }} steps LayerNorm reaches
# {{ norm_final["layer"]:.3f }} nats and RMSNorm
# {{ norm_final["rms"]:.3f }}, at {{ norm_ms["layer"]:.0f }} and
# {{ norm_ms["rms"]:.0f }} ms a step. The curves are close, as Zhang &
# Sennrich (2019) found; any difference in time is small because the
# normalizations are a small part of the work next to the matrix products.
#
# ## Exercise 6.4
#
# The post-norm model of the chapter, trained once at the fixed rate and
# once with a linear warm-up over the first quarter of the run.

# %%
class PostNormBlock(Block):
    """norm(x + sublayer(x)), as in Vaswani et al. (2017)."""

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.feed_forward(x))


class PostNormGPT(GPT):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.blocks = [PostNormBlock(config)
                       for _ in range(config.n_layer)]
        self.init_weights()


depth_steps = pick(smoke=4, book=200)
depth = GPTConfig(vocab, context=32, n_layer=pick(smoke=4, book=8),
                  n_head=4, n_embd=64, activation="relu")
warmup = optim.join_schedules(
    [optim.linear_schedule(1e-5, 2e-3, depth_steps // 4),
     lambda step: 2e-3], [depth_steps // 4])
warm_curves = {}
for name, rate in (("fixed", 2e-3), ("warm-up", warmup)):
    mx.random.seed(1)
    warm_curves[name] = train(PostNormGPT(depth),
                              depth_steps, rate)
warm_ends = {name: float(np.mean(losses[-20:]))
             for name, losses in warm_curves.items()}
frequencies = np.bincount(train_ids) / len(train_ids)
unigram = float(-(frequencies * np.log(frequencies.clip(min=1e-12))).sum())
print({name: round(end, 3) for name, end in warm_ends.items()},
      f"character frequencies alone: {unigram:.3f}")

# %%
#| echo: false
#| label: fig-ch6-warmup
#| fig-cap: The post-norm model of the chapter's depth experiment, with and without a linear warm-up of the learning rate (moving average over 20 steps).
fig, ax = plt.subplots(figsize=(4.5, 2.6))
window = min(20, depth_steps)
for name, losses in warm_curves.items():
    ax.plot(np.convolve(losses, np.ones(window) / window,
                        mode="valid"), label=name)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.legend()
fig.tight_layout()

# %%
#| echo: false
if depth_steps >= 200:  # the book profile's runs, as described below
    assert all(abs(end - unigram) < 0.05 for end in warm_ends.values())

# %% [markdown]
# Not here. At this depth and rate the curves end at
# {{ warm_ends["fixed"]:.3f }} (fixed) and {{ warm_ends["warm-up"]:.3f }}
# (warm-up) nats per character, and both sit next to
# {{ unigram:.3f }}, the entropy of the character frequencies: the loss of
# a model that knows how often each character occurs and nothing about
# context. With or without warm-up, this post-norm model stalls at that
# loss, so the gap to the pre-norm model of the chapter does not close.
# Warm-up tames the large updates of the first steps (Xiong et al.,
# 2020); whatever stops this model, it outlasts them. Trying other depths
# and rates, to find where warm-up does make the difference, is the
# natural next step.
#
# ## Exercise 6.5
#
# The prediction is the chapter's: $6N' + 12LTd$ FLOPs per token, at the
# speed that `matmul_gflops()` measures for a 1024 × 1024 float32 product
# in the same run.

# %%
from mlxllm.model import time_train_step, train_flops_per_token

gflops = matmul_gflops()
x = mx.random.randint(0, vocab, (16, 64))
rows = []
for width in pick(smoke=[64], book=[64, 128, 256, 384]):
    config = GPTConfig.baby(vocab, n_embd=width)
    predicted = train_flops_per_token(config) * x.size \
        / (gflops * 1e9) * 1e3
    measured = 1e3 * time_train_step(GPT(config), x, x,
                                     pick(smoke=1, book=5))
    rows.append([width, predicted, measured,
                 measured / predicted])

# %%
#| echo: false
#| label: fig-ch6-flops
#| fig-cap: Measured against predicted time of one training step (batch 16 × 64 characters) for baby models of several widths; the dashed line is a perfect prediction.
fig, ax = plt.subplots(figsize=(4.0, 2.8))
pred = [row[1] for row in rows]
ax.loglog(pred, [row[2] for row in rows], "o-", label="measured")
ax.loglog(pred, pred, "k--", label="predicted")
for row in rows:
    ax.annotate(f"d={row[0]}", (row[1], row[2]), fontsize=7)
ax.set_xlabel("predicted step time (ms)")
ax.set_ylabel("measured step time (ms)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# The ratio of measured to predicted time goes from
# {{ rows[0][3]:.1f }} at width {{ rows[0][0] }} to
# {{ rows[-1][3]:.1f }} at width {{ rows[-1][0] }}. The fixed costs
# of a step (elementwise work, the optimizer, launching operations) grow
# like the number of parameters or slower, while the matrix products grow
# with the square of the width, so the products, which the formula counts,
# take a larger share as the model widens.

# %% [markdown]
# ## Exercise 6.6
#
# Multiply $\operatorname{erf}(x) \approx x\,P(x^2)/Q(x^2)$ through by $Q$
# and move what holds $Q$'s unknown coefficients to the left:
# $x P(x^2) - \operatorname{erf}(x)\,(Q(x^2) - 1) = \operatorname{erf}(x)$.
# With $Q$'s constant term fixed at 1, that is linear in the coefficients
# of $P$ and in the rest of $Q$'s, one equation per point of a grid on
# $[0, 4]$, and least squares solves it. It minimizes the error times
# $Q(x^2)$, though, not the error. Dividing each equation by the $Q$ of
# the previous solution and solving again removes the factor as the
# solutions settle (Sanathanan & Koerner, 1963). `erf_coefficients` in
# chapter 6 is this fit; with `rounds=1` it is plain least squares. The
# fit's own error is measured in float64, on float32 inputs from $-6$
# to 6, clamped at 4 as `erf` clamps them:

# %%
erf_grid = np.linspace(-6, 6, pick(smoke=2000, book=60000),
                       dtype=np.float32)
erf_exact = np.array([math.erf(value) for value in erf_grid.tolist()])
clamped = np.clip(erf_grid.astype(np.float64), -ERF_CLAMP, ERF_CLAMP)


def fit_error(rounds: int) -> float:
    """Largest error of the fit after `rounds` rounds, in float64."""
    p, q = erf_coefficients(rounds=rounds)
    ratio = np.polyval(p, clamped**2) / np.polyval(q, clamped**2)
    return float(np.abs(clamped * ratio - erf_exact).max())


fit_errors = {rounds: fit_error(rounds) for rounds in (1, 2, 5, 20)}
assert fit_errors[20] < fit_errors[1]
erf_errors = {
    "mx.erf": np.abs(np.array(mx.erf(mx.array(erf_grid))) - erf_exact),
    "rational erf": np.abs(np.array(erf(mx.array(erf_grid))) - erf_exact),
}

# %%
#| echo: false
#| label: tbl-erf-rounds
#| tbl-cap: Largest error of the rational fit, evaluated in float64, after each number of rounds.
Table([[rounds, f"{error:.1e}"] for rounds, error in fit_errors.items()],
      ["rounds", "largest error in float64"])

# %% [markdown]
# One round of plain least squares is within {{ fit_errors[1]:.1e }}
# (@tbl-erf-rounds); the first reweighted round brings it to
# {{ fit_errors[2]:.1e }}, {{ fit_errors[1] / fit_errors[2]:.0f }} times
# closer, and the rounds after it settle at {{ fit_errors[20]:.1e }}.
# They settle near the smallest sum of squared errors over the grid,
# which need not be the smallest largest error, so a round can end a
# little better than where they settle. Evaluated in float32, as `erf` runs, the same function
# is within {{ erf_errors['rational erf'].max():.1e }}, and MLX's erf
# within {{ erf_errors['mx.erf'].max():.1e }}: nearly all of the
# rational erf's float32 error is the rounding of float32 arithmetic, a
# few steps of $2^{-24}$ near $|x| = 3$ to 4, where erf is close to 1
# (@fig-erf-error).

# %%
#| echo: false
#| label: fig-erf-error
#| fig-cap: Largest absolute error of MLX's erf and of the rational erf, both in float32, against double-precision math.erf, in bins of 200 neighbouring float32 inputs. The dotted line is the gap between 1 and the float32 number below it.
float32_step = 2.0**-24  # the gap between 1 and the float32 below it
bin_x = erf_grid.reshape(-1, 200).mean(axis=1)
plt.figure(figsize=(6, 2.6))
for name, error in erf_errors.items():
    plt.plot(bin_x, error.reshape(-1, 200).max(axis=1), label=name)
plt.axhline(float32_step, color="0.3", linestyle=":")
plt.xlabel("x")
plt.ylabel("largest |error|")
plt.legend()
