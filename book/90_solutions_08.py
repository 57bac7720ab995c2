# %% [markdown]
# # Chapter 8
#
# The solutions use what chapter 8 exported to `mlxllm.laptop`: the memory
# estimate, the accumulating step, `CheckpointedBlock` and the trainer's
# pieces. Models are built from a fixed seed on random token windows,
# since none of the answers depends on the text.

# %%
import gc

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlxllm.book import Table, pick
from mlxllm.hardware import median_seconds
from mlxllm.laptop import (
    CheckpointedBlock,
    make_accumulating_step,
    memory_estimate,
)
from mlxllm.model import (
    GPT,
    Block,
    GPTConfig,
    causal_mask,
    language_model_loss,
)
from mlxllm.train import StepFn, TrainConfig, make_optimizer

vocab = 65
budget = 0.75 * 16 * 2 ** 30


def batch(config: GPTConfig, size: int) -> tuple[mx.array, mx.array]:
    """Random windows and their next tokens, from a fixed seed."""
    ids = np.random.default_rng(0).integers(
        0, config.vocab_size, (size, config.context + 1)).astype(np.int32)
    return mx.array(ids[:, :-1]), mx.array(ids[:, 1:])

# %% [markdown]
# ## Exercise 8.1
#
# Add blocks until the estimate no longer fits the chapter's budget for
# a 16 GB Mac, three quarters of the memory.

# %%
def deepest(accumulation: int) -> int:
    """The most blocks of the full model's width whose float32 step with
    batches of 64 fits the 16 GB budget."""
    depth = 0
    while True:
        config = GPTConfig.full(vocab, n_layer=depth + 1)
        estimate = memory_estimate(config, 64, accumulation=accumulation)
        if sum(estimate.values()) > budget:
            return depth
        depth += 1


deepest_plain, deepest_split = deepest(1), deepest(8)
print(f"batch of 64: {deepest_plain} blocks; in 8 micro-batches: "
      f"{deepest_split} blocks")

# %% [markdown]
# {{ deepest_plain }} blocks fit with the whole batch at once, and
# {{ deepest_split }} with 8 micro-batches of 8. With accumulation the
# activations shrink eightfold and the limit moves to where the 16 (here
# 20, with the running sum) bytes per parameter and the remaining
# activations meet; each block adds $12d^2$ parameters, 1.8 million at
# this width, so both terms grow linearly with depth.
#
# ## Exercise 8.2
#
# Forgetting the division is the same as multiplying the mean gradient
# by $k$, which a `loss_and_grad` can do. One AdamW step with the right
# gradient and one with $k$ times it, from the same weights:

# %%
def scaled_loss_and_grad(model: GPT, factor: float):
    """The model's loss and its gradients multiplied by `factor`."""
    value_and_grad = nn.value_and_grad(model, language_model_loss)

    def loss_and_grad(inputs: mx.array, targets: mx.array):
        loss, grads = value_and_grad(model, inputs, targets)
        return loss, tree_map(lambda g: factor * g, grads)

    return loss_and_grad


parts = 4
small = GPTConfig.baby(vocab, n_layer=2)
config = TrainConfig(compile=False, warmup_steps=0)
after, norms = [], []
for factor in (1.0, parts):
    mx.random.seed(0)
    model = GPT(small)
    step = make_accumulating_step(
        model, make_optimizer(config), config, parts,
        scaled_loss_and_grad(model, factor))
    _, norm = step(*batch(small, 8))
    mx.eval(model.parameters())
    after.append(dict(tree_flatten(model.parameters())))
    norms.append(norm.item())
weight_gap = max(mx.abs(w - after[1][name]).max().item()
                 for name, w in after[0].items())
print(f"gradient norm {norms[0]:.3f} vs {norms[1]:.3f}; largest "
      f"weight difference {weight_gap:.1e}")

# %% [markdown]
# The weights after the step differ by {{ weight_gap:.0e}}: nothing.
# Adam divides the first moment by the square root of the second, so
# multiplying every gradient by the same factor cancels, except against
# the tiny $\epsilon$. What notices is everything that reads the
# gradient's size: the logged norm is {{ norms[1]:.2f }} instead of
# {{ norms[0]:.2f }}, and clipping at 1.0 now triggers on gradients
# $k$ times smaller than intended, which changes the relative weight of
# steps within Adam's averages. With plain SGD the step would simply be
# $k$ times too large.
#
# ## Exercise 8.3
#
# Only the blocks at even positions change class; the chapter's
# `measure_step` idea is repeated here in a few lines.

# %%
#| label: tbl-solution-8-3
#| tbl-cap: Checkpointing every block against every other one: peak memory and time of a step.
def measure(config: GPTConfig, batch_size: int,
            every: int | None) -> tuple[float, float]:
    """Peak MiB and median ms of a compiled step with every `every`-th
    block checkpointed (None: no block)."""
    gc.collect()
    floor = mx.get_active_memory()
    mx.random.seed(0)
    model = GPT(config)
    if every is not None:
        for block in model.blocks[::every]:
            block.__class__ = CheckpointedBlock
    train = TrainConfig()
    step: StepFn = make_accumulating_step(model, make_optimizer(train),
                                          train, 1)
    inputs, targets = batch(config, batch_size)
    mx.eval(step(inputs, targets), model.parameters())
    mx.reset_peak_memory()
    seconds = median_seconds(lambda: (step(inputs, targets),
                                      model.parameters()),
                             pick(smoke=1, book=3))
    return (mx.get_peak_memory() - floor) / 2 ** 20, 1000 * seconds


deep = GPTConfig.baby(vocab, n_layer=pick(smoke=2, book=8))
policy_rows = [(name, *measure(deep, pick(smoke=2, book=16),
                               every))
               for name, every in (("none", None), ("every other", 2),
                                   ("all", 1))]
Table(policy_rows, ["checkpointed blocks", "peak MiB", "ms per step"],
      digits=1)

# %% [markdown]
# Checkpointing half the blocks lands between the two, at
# {{ policy_rows[1][1]:.0f }} MiB against
# {{ policy_rows[0][1]:.0f }} and {{ policy_rows[2][1]:.0f }}: the
# plain blocks keep their activations, the checkpointed ones only their
# input, so the saving is about half. The time follows the recomputed
# share, with this machine's noise on top. The policy is a dial between
# memory and time, and the right setting is the cheapest one that fits.
#
# ## Exercise 8.4
#
# bfloat16 is the upper half of float32, so rounding is a question about
# the lower 16 bits. Add a random number below $2^{16}$ to them and cut
# them off: the value rounds up with probability equal to the part that
# is cut, which makes the rounding unbiased (Gupta et al., 2015, trained
# networks in 16-bit fixed point this way).

# %%
def stochastic_round(x: mx.array, key: mx.array) -> mx.array:
    """float32 -> bfloat16, rounding up or down at random so that the
    expected result equals x."""
    bits = x.astype(mx.float32).view(mx.uint32)
    noise = mx.random.randint(0, 1 << 16, x.shape, key=key).astype(
        mx.uint32)
    return ((bits + noise) & 0xFFFF0000).view(mx.float32).astype(
        mx.bfloat16)


steps, update = pick(smoke=200, book=1000), 1e-4
nearest = mx.ones((1000,), dtype=mx.bfloat16)
stochastic = mx.ones((1000,), dtype=mx.bfloat16)
key = mx.random.key(0)
for _ in range(steps):
    key, draw = mx.random.split(key)
    nearest = (nearest.astype(mx.float32) + update).astype(
        mx.bfloat16)
    stochastic = stochastic_round(
        stochastic.astype(mx.float32) + update, draw)
    mx.eval(nearest, stochastic)
expected = 1 + steps * update
mean = mx.mean(stochastic.astype(mx.float32)).item()
assert mx.all(nearest == 1).item()
assert abs(mean - expected) < 0.01
print(f"nearest: {nearest[0].item()}, stochastic: mean {mean:.4f}"
      f" (exact {expected:.4f})")

# %% [markdown]
# After {{ steps }} updates of $10^{-4}$, round-to-nearest leaves all
# 1,000 weights at exactly 1, while stochastic rounding brings their mean
# to {{ mean:.4f }}, against the exact {{ expected:.4f }}. Each
# weight moves in jumps of $2^{-7}$, now and then, but on average
# correctly; this is how fully bfloat16 training can keep learning
# without float32 master weights.
#
# ## Exercise 8.5
#
# The trouble was that the recomputation drew new masks. Draw both masks
# before the checkpointed function and pass them in as arguments: then
# the forward pass and its rerun multiply by the same numbers, and the
# masks are saved like any input, as booleans, one byte per number.

# %%
class MaskedBlock(Block):
    """A checkpointed Block whose dropout masks are drawn outside the
    recomputed function and passed in."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.keep = 1 - config.dropout

    def forward(self, x: mx.array, mask: mx.array | None,
                keep_attention: mx.array, keep_ffn: mx.array) -> mx.array:
        scale = 1 / self.keep
        x = x + (keep_attention * self.attention(self.norm1(x), mask)) * scale
        return x + (keep_ffn * self.feed_forward(self.norm2(x))) * scale

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        if not self.training or self.keep == 1:
            return Block.__call__(self, x, mask)
        masks = [mx.random.bernoulli(self.keep, x.shape) for _ in range(2)]
        return nn.utils.checkpoint(self, self.forward)(x, mask, *masks)


mx.random.seed(0)
dropout_config = GPTConfig.baby(vocab, dropout=0.2)
masked = MaskedBlock(dropout_config)
x = mx.random.normal((2, 16, 128))
weights = mx.random.normal(x.shape)


def block_grads(call) -> dict:
    """Gradients of a weighted sum of the block's output, seed 7."""
    def loss(params: dict) -> mx.array:
        masked.update(params)
        return (call(x, causal_mask(16)) * weights).sum()

    mx.random.seed(7)
    return dict(tree_flatten(mx.grad(loss)(
        masked.trainable_parameters())))


plain_grads = block_grads(lambda x, m: Block.__call__(masked, x, m))
fixed_grads = block_grads(masked)
mask_gap = max(mx.abs(g - plain_grads[name]).max().item()
               for name, g in fixed_grads.items())
assert mask_gap < 1e-4
print(f"largest gradient difference with dropout 0.2: {mask_gap:.1e}")

# %% [markdown]
# Against the plain block, with the same seed and therefore the same
# masks, the largest gradient difference is now {{ mask_gap:.0e}},
# rounding, where the chapter's version was off by whole units. The
# masks cost $2d$ bytes per token and block, next to the float32
# activations, four bytes per number, that checkpointing saves. For
# `use_checkpointing` to accept dropout, `CheckpointedBlock` would adopt
# this `__call__`.
