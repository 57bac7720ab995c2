# %% [markdown]
# # Fitting on a laptop
#
# Chapter 7 trained a model of {{ baby_parameters:, }} parameters, and its
# log reported a peak memory that any laptop can spare; its training step
# alone needs {{ memory_rows[0][2]:.0f }} MiB, as this chapter measures,
# and its evaluations more. Make the model larger,
# or the batch, and that number grows fast: nanoGPT's full Shakespeare
# model (Karpathy, 2022) with its batch of 64 windows needs about
# {{ full_estimate_gb:.1f }} GB in float32 by this chapter's count, and a
# single window of 1,024 tokens through GPT-2 small needs
# {{ gpt2_window / 1024:.1f }} GB of activations on its own. This chapter
# accounts for the bytes of a training step and then removes bytes in
# three ways, each implemented, checked against what it replaces, and
# measured.
#
# *Gradient accumulation* computes one large batch as several small ones
# and gives the same update, here at {{ accumulation_saving:.0%}} of the
# peak memory. *Activation checkpointing* forgets what the forward pass
# computed and recomputes it when the backward pass needs it: the
# {{ depths[-1] }}-block model's peak drops from {{ deep_plain_mib:.0f }} to
# {{ deep_checkpointed_mib:.0f }} MiB for about a third more arithmetic.
# *bfloat16* stores numbers in half the bits, which halves the activations
# and, on a Mac's GPU, should speed up the arithmetic too (this book, built
# on a CPU, could not measure that); you will see where it
# loses precision and how float32 master weights save it. On the map of
# chapter 1 nothing new is drawn: the same model and the same loop,
# made to fit. Everything lands in a new module, `mlxllm.laptop`, and
# comes together in `MemorySavingConfig` and `MemorySavingTrainer`, which
# the `mlxllm train` command uses.
#
# The chapter builds on chapter 7's library: the trainer, the optimizer
# and the step from `mlxllm.train`, checkpoints from `mlxllm.checkpoint`,
# the model's pieces from `mlxllm.model` (the chapter file's first cell
# imports them all). The data are chapter 7's characters:

# %%
#| default_exp laptop
#| echo: false
import gc
import tempfile
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, artifact_path, pick
from mlxllm.data import encode_splits, load_corpus, split_train_val
from mlxllm.hardware import matmul_gflops, median_seconds
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint, resume
from mlxllm.model import GPT, Block, GPTConfig, causal_mask
from mlxllm.model import count_parameters, language_model_loss
from mlxllm.tokenizer import CharTokenizer
from mlxllm.train import (
    StepFn,
    Trainer,
    TrainConfig,
    clip_by_global_norm,
    evaluate,
    make_optimizer,
    make_step,
)

# %%
text = load_corpus()
char_tokenizer = CharTokenizer.train(text)
vocab = char_tokenizer.vocab_size
char_train, char_val = encode_splits(char_tokenizer, text,
                                     artifact_path("08_laptop/tokens"))
chars_per_token = len(split_train_val(text)[1]) / len(char_val)
baby_parameters = count_parameters(GPTConfig.baby(vocab))

# %% [markdown]
# ## Where the memory goes
#
# A training step holds four kinds of arrays. The *parameters*, $N$
# numbers. Their *gradients*, $N$ more, computed by the backward pass. The
# optimizer's *state*: AdamW keeps two moments per parameter, $2N$. In
# float32, 4 bytes each, that is $16N$ bytes whatever the batch: 16 bytes
# per parameter before a single token is seen.
#
# The fourth kind, the *activations*, grows with the batch. The backward
# pass needs, for every operation, some of the arrays the forward pass
# computed: a matrix product $y = xW$ needs $x$ to compute the gradient of
# $W$; a softmax needs its output; GELU needs its input. All of them stay
# in memory from the moment the forward pass makes them until the
# backward pass is done with them. Counting what our code keeps, per
# token and per block, in units of $d$ = `n_embd` numbers:

# %%
#| echo: false
#| label: tbl-saved
#| tbl-cap: What one block keeps for the backward pass, per token, for the GELU block of chapter 6 (d = n_embd, H heads, T positions of context). The feed-forward width is 4d.
gelu_saved = 2  # up_proj output (GELU's input) and GELU output
saved_d = 6 + 3 + 1 + gelu_saved * 4
Table([("2 LayerNorms", "centred input, normalized, output", "6d"),
       ("attention", "scaled queries, keys, values", "3d"),
       ("attention", "softmax probabilities, H rows of T", "H·T"),
       ("attention", "merged heads (input of out_proj)", "d"),
       ("feed-forward", "up_proj output (GELU's input), GELU output",
        f"{gelu_saved} × 4d"),
       ("total", "", f"{saved_d}d + H·T")],
      ["part", "arrays kept", "numbers per token"])

# %% [markdown]
# The attention probabilities are the one term that grows with the
# context: every token keeps a row of $T$ weights per head, the
# quadratic cost of attention in memory. Two more things join the
# per-block count. The backward pass itself needs room: while it works
# through the last block, the gradients flowing back through it are as
# large as that block's activations, so the peak holds about one block
# more than the blocks store. And the head stores the embeddings, the
# final norm and the logits with their gradient, $4d + 2V$ numbers per
# token. In code:

# %%
#| export
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_map

from mlxllm.model import GPT, Block, GPTConfig, count_parameters
from mlxllm.model import language_model_loss
from mlxllm.train import StepFn, Trainer, TrainConfig, clip_by_global_norm

FFN_SAVED = {"relu": 2, "gelu": 2, "swiglu": 5}
PRECISIONS = ("float32", "mixed", "bfloat16")


def layer_floats_per_token(config: GPTConfig) -> int:
    """Numbers one block keeps per token for its backward pass: the
    norms 6d, attention 4d + H·T, the feed-forward k·hidden."""
    d = config.n_embd
    attention = 4 * d + config.n_head * config.context
    return 6 * d + attention + FFN_SAVED[config.activation] * config.hidden


def memory_estimate(config: GPTConfig, batch_size: int,
                    accumulation: int = 1, checkpointing: bool = False,
                    precision: str = "float32") -> dict[str, int]:
    """Bytes of a training step with AdamW, per kind of array; a step
    takes batch_size windows in `accumulation` micro-batches."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of "
                         f"{', '.join(PRECISIONS)}")
    n = count_parameters(config)
    weight = 2 if precision == "bfloat16" else 4
    copy = 2 if precision == "mixed" else 0
    layer = layer_floats_per_token(config)
    if checkpointing:
        per_token = config.n_layer * config.n_embd + 2 * layer
    else:
        per_token = (config.n_layer + 1) * layer
    per_token += 4 * config.n_embd + 2 * config.vocab_size
    tokens = math.ceil(batch_size / accumulation) * config.context
    return {"parameters": n * (weight + copy),
            "gradients": n * weight * (2 if accumulation > 1 else 1),
            "optimizer": 2 * n * weight,
            "activations": tokens * per_token * (4 if precision == "float32"
                                                 else 2)}

# %% [markdown]
# The arguments `accumulation`, `checkpointing` and `precision` are the
# three techniques of this chapter, explained in their sections; for
# now they keep their defaults. To check the estimate you need a
# measurement. MLX counts every byte it allocates for arrays:
# `mx.get_active_memory()` is what is allocated now,
# `mx.get_peak_memory()` the most since `mx.reset_peak_memory()`. The
# helper below builds a model, lets a `setup` function prepare it and
# return its step, runs the step once (compiling it), then measures.
# The floor it subtracts is whatever the chapter held before, so only
# the step's own arrays count.

# %%
def measure_step(model_config: GPTConfig, batch_size: int,
                 setup: Callable[[GPT], StepFn],
                 repeats: int = 1) -> tuple[int, float]:
    """Peak bytes and median seconds of a step on random windows;
    `setup(model)` prepares the model and returns its step."""
    gc.collect()
    floor = mx.get_active_memory()
    mx.random.seed(0)
    model = GPT(model_config)
    step = setup(model)
    ids = mx.random.randint(0, model_config.vocab_size,
                            (batch_size, model_config.context + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    mx.eval(inputs, targets)
    mx.eval(step(inputs, targets), model.parameters())  # compiles
    mx.reset_peak_memory()
    seconds = median_seconds(lambda: (step(inputs, targets),
                                      model.parameters()), repeats)
    return mx.get_peak_memory() - floor, seconds


def plain_step(model: GPT) -> StepFn:
    """Chapter 7's compiled step, with its defaults."""
    config = TrainConfig()
    return make_step(model, make_optimizer(config), config)

# %% [markdown]
# Now predict and measure a few configurations: the baby model at
# chapter 7's batch of 12 and a larger one, with byte-pair tokens,
# deeper, and nanoGPT's full model with a small batch.

# %%
mib = 2 ** 20
check_configs = pick(
    smoke=[("baby, batch 2", GPTConfig.baby(vocab), 2),
           ("2 blocks, batch 4", GPTConfig.baby(vocab, n_layer=2), 4)],
    book=[("baby, batch 12", GPTConfig.baby(vocab), 12),
          ("baby, batch 48", GPTConfig.baby(vocab), 48),
          ("baby, 1,024 ids", GPTConfig.baby(1024), 12),
          ("baby, 8 blocks", GPTConfig.baby(vocab, n_layer=8), 12),
          ("full, batch 4", GPTConfig.full(vocab), 4)])
baby_shape = GPTConfig.baby(vocab)  # the code counts what the table says
assert layer_floats_per_token(baby_shape) == (
    saved_d * baby_shape.n_embd + baby_shape.n_head * baby_shape.context)
memory_rows, predicted_terms = [], []
for name, model_config, batch_size in check_configs:
    terms = memory_estimate(model_config, batch_size)
    measured, _ = measure_step(model_config, batch_size, plain_step)
    predicted_terms.append(terms)
    memory_rows.append((name, sum(terms.values()) / mib, measured / mib,
                        measured / sum(terms.values())))
memory_spread = max(abs(row[3] - 1) for row in memory_rows)
memory_margin = max(row[3] for row in memory_rows)
under_everywhere = all(row[3] > 1 for row in memory_rows)
baby_activation_share = (predicted_terms[0]["activations"]
                         / sum(predicted_terms[0].values()))
for row in memory_rows:
    print(f"{row[0]:<18} predicted {row[1]:7.1f} MiB  "
          f"measured {row[2]:7.1f} MiB")

# %%
#| echo: false
#| label: fig-memory-check
#| fig-cap: Peak memory of one compiled training step in float32. Left bar of each pair, the estimate by term; right bar, what MLX measured.
figure, axis = plt.subplots(figsize=(5, 3))
positions = np.arange(len(memory_rows))
bottom = np.zeros(len(memory_rows))
for term in ("parameters", "gradients", "optimizer", "activations"):
    heights = np.array([t[term] for t in predicted_terms]) / mib
    axis.bar(positions - 0.2, heights, 0.38, bottom=bottom, label=term)
    bottom += heights
axis.bar(positions + 0.2, [row[2] for row in memory_rows], 0.38,
         color="0.35", label="measured")
axis.set_xticks(positions, [row[0].replace(", ", "\n")
                            for row in memory_rows], fontsize=7)
axis.set_ylabel("peak memory (MiB)")
axis.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))

# %%
#| echo: false
#| label: tbl-memory-check
#| tbl-cap: The estimate against MLX's measured peak, for the configurations of the figure.
Table(memory_rows, ["configuration", "estimate (MiB)", "measured (MiB)",
                    "measured / estimate"])

# %% [markdown]
# The estimate lands within {{ memory_spread:.0%}} of the measurement for
# every configuration here, and the measured peak is at most
# {{ memory_margin:.2f }} times the estimate. It is not exact, and for
# good reasons. The formula counts what the backward pass needs; which
# arrays are alive at the same moment depends on the order in which MLX
# evaluates the graph, and on what `mx.compile` fuses, which removes some
# intermediates and keeps others. Those are details
# of the framework and its version, not of the model. The parameters,
# gradients and optimizer state, on the other hand, follow from $N$
# alone and leave no room for interpretation. What matters for planning
# is that the estimate grows the way the measurement grows, linearly in
# the batch and the depth, and that the measured ratio gives a margin:
# the table at the end of the chapter multiplies the activations by
# {{ memory_margin:.2f }}.
#
# For the baby model the activations dominate:
# {{ baby_activation_share:.0%}} of the estimate at a batch of
# {{ check_configs[0][2] }}. The parameters are so few that their 16
# bytes each hardly count. For large models the balance turns
# around, as the table at the end of the chapter shows. Each of the
# three techniques below attacks a different term.
#
# One number needs reconciling first: the peak in chapter 7's log is
# larger than the step's {{ memory_rows[0][2]:.0f }} MiB measured here. The
# log shows the most MLX held at any moment since the run began, so it
# counts every other array the process keeps alive and the evaluations,
# which `evaluate` runs 64 windows at a time. Measure an evaluation the
# way `measure_step` measures a step:

# %%
def measure_evaluation(model_config: GPTConfig, windows: int) -> int:
    """Peak bytes, above what the chapter held before, of chapter 7's
    `evaluate` on one batch of `windows` windows of validation text."""
    gc.collect()
    floor = mx.get_active_memory()
    model = GPT(model_config)
    mx.eval(model.parameters())
    tokens = char_val[:windows * model_config.context + 1]
    mx.reset_peak_memory()
    evaluate(model, tokens, model_config.context, batch_size=windows)
    return mx.get_peak_memory() - floor


evaluation_mib = measure_evaluation(GPTConfig.baby(vocab), 64) / mib
print(f"step, {check_configs[0][0]}: {memory_rows[0][2]:.1f} MiB; "
      f"evaluation, 64 windows: {evaluation_mib:.1f} MiB")
assert evaluation_mib > memory_rows[0][2]

# %% [markdown]
# The evaluation keeps nothing for a backward pass, but it pushes
# {{ 64 / check_configs[0][2]:.1f }} times the windows of a training step
# through the model at once, and its peak,
# {{ evaluation_mib:.0f }} MiB, is above the step's. That moment, on top
# of the chapter's other arrays, is what chapter 7's log reports. The
# estimates of this chapter are for the training step; the evaluation's
# peak is set by its own batch, the `batch_size` of `evaluate`.
#
# ## Gradient accumulation
#
# The loss of a batch is the mean of the losses of its windows, and the
# gradient of a mean is the mean of the gradients. Split a batch of $B$
# windows into $k$ micro-batches of $B/k$; the gradient of the whole
# batch is the average of the $k$ micro-batch gradients. Compute them one
# at a time, add each to a running sum and throw its activations away,
# and the step needs the activations of one micro-batch only, plus one
# array the size of the gradients for the sum. The optimizer then takes
# one step with the average, exactly as if the batch had been processed
# at once. @fig-accumulation draws the two ways through one step.

# %%
#| echo: false
#| label: fig-accumulation
#| fig-cap: One optimizer step of the baby model on 12 windows, as one batch (top) and as 4 micro-batches (bottom), in the order `make_accumulating_step` runs it below. F and B are a micro-batch's forward and backward passes, U the one update. Heights are the terms of `memory_estimate`; time is schematic, a backward pass taken as twice a forward one. Accumulating holds a second gradient-sized array, the running sum, and a quarter of the activations.
def schematic_trace(phases):
    """Times and activation bytes of a schematic step from its phases,
    (label, duration, bytes kept at its end); linear within a phase."""
    times, kept, labels = [0.0], [0.0], []
    for label, duration, end in phases:
        labels.append((times[-1] + duration / 2, label))
        times.append(times[-1] + duration)
        kept.append(end)
    return np.array(times), np.array(kept), labels


timeline_config = GPTConfig.baby(vocab)
timeline_batch, timeline_parts = TrainConfig().batch_size, 4
fig, axes = plt.subplots(2, 1, figsize=(5.6, 3.0), sharex=True, sharey=True)
for ax, parts in zip(axes, (1, timeline_parts)):
    estimate = memory_estimate(timeline_config, timeline_batch,
                               accumulation=parts)
    forward = timeline_parts // parts  # in micro-batch forward passes
    phases = [("forward" if parts == 1 else "F", forward,
               estimate["activations"]),
              ("backward" if parts == 1 else "B", 2 * forward, 0.0)]
    times, kept, labels = schematic_trace(phases * parts + [("U", 0.6, 0)])
    fixed = (estimate["parameters"] + estimate["optimizer"]) / mib
    grads = fixed + estimate["gradients"] / mib
    ax.fill_between(times, 0, fixed, color="#e6e6e6",
                    label="parameters, optimizer")
    ax.fill_between(times, fixed, grads, color="#777777",
                    label="gradients")
    ax.fill_between(times, grads, grads + kept / mib, color="#56B4E9",
                    label="activations")
    for x, label in labels:
        ax.text(x, fixed / 2, label, ha="center", va="center", fontsize=7.5)
    for x in times[1:-1]:
        ax.axvline(x, color="white", linewidth=0.8)
    ax.set_title(f"{timeline_batch} windows in one batch" if parts == 1
                 else f"in {parts} micro-batches of {timeline_batch // parts}",
                 loc="left", fontsize=8.5)
    ax.set_ylabel("memory (MiB)")
    ax.grid(False)
axes[-1].set_xlabel("time, in forward passes of one micro-batch (schematic)")
axes[1].legend(loc="upper right", ncol=3, fontsize=7.5)
fig.tight_layout()

# %%
#| export
LossAndGrad = Callable[[mx.array, mx.array], tuple[mx.array, dict]]


def make_accumulating_step(model: nn.Module, optimizer: optim.Optimizer,
                           config: TrainConfig, accumulation: int,
                           loss_and_grad: LossAndGrad | None = None,
                           average: Callable[[dict], dict] | None = None
                           ) -> StepFn:
    """A step that splits its batch into `accumulation` micro-batches,
    sums their gradients, then clips and updates once with the mean
    (passed through `average` first, when given)."""
    if loss_and_grad is None:
        loss_and_grad = partial(nn.value_and_grad(model,
                                                  language_model_loss), model)

    def accumulate(inputs: mx.array, targets: mx.array, loss_sum: mx.array,
                   grad_sum: dict) -> tuple[mx.array, dict]:
        loss, grads = loss_and_grad(inputs, targets)
        return loss_sum + loss, tree_map(mx.add, grad_sum, grads)

    def update(loss_sum: mx.array, grad_sum: dict) -> tuple[mx.array,
                                                           mx.array]:
        grads = tree_map(lambda g: g / accumulation, grad_sum)
        if average is not None:
            grads = average(grads)
        grads, norm = clip_by_global_norm(grads, config.grad_clip)
        optimizer.update(model, grads)
        return loss_sum / accumulation, norm

    if config.compile:
        optimizer.init(model.trainable_parameters())
        state = [model.state, optimizer.state, mx.random.state]
        accumulate = mx.compile(accumulate, inputs=state, outputs=state)
        update = mx.compile(update, inputs=state, outputs=state)

    def step(inputs: mx.array, targets: mx.array) -> tuple[mx.array,
                                                           mx.array]:
        loss_sum = mx.array(0.0)
        grad_sum = tree_map(mx.zeros_like, model.trainable_parameters())
        for part in zip(mx.split(inputs, accumulation),
                        mx.split(targets, accumulation)):
            loss_sum, grad_sum = accumulate(*part, loss_sum, grad_sum)
            mx.eval(loss_sum, grad_sum)
        return update(loss_sum, grad_sum)

    return step

# %% [markdown]
# Three things to notice. The `mx.eval` inside the loop is the whole
# trick: MLX is lazy, and without it the graph of all $k$ micro-batches
# would be built first and evaluated at once, holding all their
# activations together, which is the memory you meant to save. The step
# is therefore two compiled functions, `accumulate` and `update`, with an
# evaluation between micro-batches. And `loss_and_grad` is a parameter,
# so that the bfloat16 section can swap in another way of computing the
# gradient without touching the rest. So is `average`, a function the
# mean gradient passes through before clipping: chapter 12 gives it one
# that averages the gradient over several processes.
#
# Now the proof. Two copies of the same model take one step on the same
# {{ proof_batch }} windows, one in a single batch, one in
# {{ proof_parts }} micro-batches; their updated weights must agree. The
# step uses plain gradient descent, whose update is proportional to the
# gradient. (Adam's first step divides each gradient by its own size,
# so a gradient within rounding of zero becomes a full step up or down,
# and the comparison would measure that amplified rounding.)

# %%
proof_batch, proof_parts = pick(smoke=4, book=16), 4
proof_config = TrainConfig(compile=False, warmup_steps=0)
proof_inputs = mx.array(char_train[:proof_batch * 65].reshape(
    proof_batch, 65).astype(np.int32))
updated = []
for parts in (1, proof_parts):
    mx.random.seed(0)
    model = GPT(GPTConfig.baby(vocab))
    step = make_accumulating_step(model, optim.SGD(learning_rate=0.1),
                                  proof_config, parts)
    mx.eval(step(proof_inputs[:, :-1], proof_inputs[:, 1:]))
    updated.append(dict(tree_flatten(model.parameters())))
update_gap = max(mx.abs(updated[0][name] - updated[1][name]).max().item()
                 for name in updated[0])
assert all(mx.allclose(updated[0][name], updated[1][name], atol=1e-6)
           for name in updated[0])
print(f"largest difference between the updated weights: {update_gap:.1e}")

# %% [markdown]
# The weights differ by at most {{ update_gap:.0e}}: rounding, because
# float32 additions in a different order give different last bits. Two
# conditions make the equality exact in exact arithmetic: the
# micro-batches have the same number of tokens (otherwise their means
# would need weights), and nothing random happens (with dropout, each
# micro-batch draws its own masks; the update is then equal in
# distribution, not in value). `MemorySavingConfig`, at the end of the
# chapter, therefore insists that the batch size be a multiple of the
# accumulation.
#
# The memory is what the method is for. One optimizer step of
# {{ accumulation_batch }} windows of the baby model, in 1 to
# {{ accumulation_counts[-1] }} micro-batches:

# %%
#| label: tbl-accumulation-memory
#| tbl-cap: One optimizer step split into micro-batches: the peak memory estimated and measured, and the time of a step.
accumulation_batch = pick(smoke=8, book=32)
accumulation_counts = pick(smoke=[1, 4], book=[1, 2, 4, 8])
accumulation_rows = []
for parts in accumulation_counts:
    def accumulating(model: GPT, parts: int = parts) -> StepFn:
        config = TrainConfig()
        return make_accumulating_step(model, make_optimizer(config), config,
                                      parts)

    peak, seconds = measure_step(GPTConfig.baby(vocab), accumulation_batch,
                                 accumulating, repeats=pick(smoke=1, book=2))
    estimate = memory_estimate(GPTConfig.baby(vocab), accumulation_batch,
                               accumulation=parts)
    accumulation_rows.append((parts, accumulation_batch // parts,
                              sum(estimate.values()) / mib, peak / mib,
                              1000 * seconds))
accumulation_saving = accumulation_rows[-1][3] / accumulation_rows[0][3]
accumulation_ms = [row[4] for row in accumulation_rows]
Table(accumulation_rows, ["micro-batches", "windows each", "estimate (MiB)",
                          "measured (MiB)", "ms per step"], digits=1)

# %% [markdown]
# The peak falls from {{ accumulation_rows[0][3]:.0f }} to
# {{ accumulation_rows[-1][3]:.0f }} MiB, to
# {{ accumulation_saving:.0%}} of what one batch needed, and it cannot
# fall below the fixed $16N$ plus the running sum of the gradients, an
# extra $4N$. The arithmetic is the same in $k$ pieces as in one, but
# not its cost: smaller micro-batches multiply smaller matrices, which
# keep the processor less busy, and every operation's fixed cost is paid
# $k$ times. Here a step took {{ accumulation_ms[0]:,.0f }} ms in one
# piece and {{ accumulation_ms[-1]:,.0f }} ms in
# {{ accumulation_rows[-1][0] }},
# {{ accumulation_ms[-1] / accumulation_ms[0]:.2f }} times as long, on a
# 2-core machine whose clock other jobs also move.
# Accumulation is the first thing to reach for: it costs nothing in
# quality and little in time, and it lets a laptop run the batch size
# that a recipe was tuned for.
#
# ## Activation checkpointing
#
# Accumulation cannot help when a single window is already too large:
# the activations of one long sequence through many blocks. Activation
# checkpointing (Chen et al., 2016) trades arithmetic for memory. The
# forward pass keeps only the input of each block and throws its
# intermediates away; when the backward pass reaches a block, it runs
# that block's forward pass again from the saved input, and then its
# backward pass. Of @tbl-saved's ${{ saved_d }}d + H·T$ numbers per token and
# block, only $d$ stay; the rest exist for one block at a time. The cost
# is a second forward pass through every block, about a third more
# arithmetic, since a backward pass costs about twice a forward one.
# @fig-checkpointing-timeline draws both schedules for the baby model.

# %%
#| echo: false
#| label: fig-checkpointing-timeline
#| fig-cap: The activations kept for the backward pass during one step of the baby model (12 windows, 4 blocks), without and with checkpointing. F is a block's forward pass, B its backward pass, R (hatched) the block's forward pass run again from its saved input just before B. A whole block keeps `layer_floats_per_token` numbers per token, a saved input `n_embd`; time is schematic, a backward pass taken as twice a forward one; the head's arrays are left out.
timeline_config = GPTConfig.baby(vocab)
timeline_batch = TrainConfig().batch_size
tokens = timeline_batch * timeline_config.context
block_bytes = 4 * tokens * layer_floats_per_token(timeline_config)
input_bytes = 4 * tokens * timeline_config.n_embd
blocks = range(1, timeline_config.n_layer + 1)
plain = ([(f"F{i}", 1, i * block_bytes) for i in blocks]
         + [(f"B{i}", 2, (i - 1) * block_bytes) for i in reversed(blocks)])
checkpointed = [(f"F{i}", 1, i * input_bytes) for i in blocks]
for i in reversed(blocks):
    checkpointed += [(f"R{i}", 1, i * input_bytes + block_bytes),
                     (f"B{i}", 2, (i - 1) * input_bytes)]
fig, axes = plt.subplots(2, 1, figsize=(5.6, 2.9), sharex=True, sharey=True)
for ax, (title, phases) in zip(axes, (("plain", plain),
                                      ("checkpointed", checkpointed))):
    times, kept, labels = schematic_trace(phases)
    for start, (label, _, _) in enumerate(phases):
        span = slice(start, start + 2)
        recomputed = label[0] == "R"
        ax.fill_between(times[span], 0, kept[span] / mib,
                        facecolor="#D55E00" if recomputed else "#56B4E9",
                        hatch="////" if recomputed else None,
                        edgecolor="white", linewidth=0.8)
    for x, label in labels:
        ax.text(x, -0.1, label, ha="center", va="top", fontsize=7.5,
                transform=ax.get_xaxis_transform())
    ax.set_title(title, loc="left", fontsize=8.5)
    ax.set_ylabel("kept (MiB)")
    ax.set_xticks([])
    ax.grid(False)
axes[0].axvline(schematic_trace(plain)[0][-1], color="black",
                linestyle=":", linewidth=0.8)
axes[0].text(schematic_trace(plain)[0][-1] + 0.2, 0.5, "step done",
             transform=axes[0].get_xaxis_transform(), fontsize=7.5)
axes[-1].set_xlabel("time, in forward passes of one block (schematic)",
                    labelpad=16)
fig.tight_layout()

# %% [markdown]
# MLX offers `mx.checkpoint(fn)`, which wraps a function so that its
# intermediates are recomputed. The obvious use has a trap.

# %%
mx.random.seed(0)
trap_block = Block(GPTConfig.baby(vocab))
trap_x = mx.random.normal((2, 16, 128))
trap_mask = causal_mask(16)


def block_loss(params: dict, wrap: Callable) -> mx.array:
    """Sum of the block's output, computed through `wrap`."""
    trap_block.update(params)
    return wrap(lambda x: trap_block(x, trap_mask))(trap_x).sum()


gradients = {}
for name, wrap in (("no checkpoint", lambda fn: fn),
                   ("mx.checkpoint", mx.checkpoint),
                   ("nn.utils.checkpoint",
                    lambda fn: nn.utils.checkpoint(trap_block, fn))):
    grad = mx.grad(block_loss)(trap_block.trainable_parameters(), wrap)
    gradients[name] = dict(tree_flatten(grad))
    total = sum(mx.abs(g).sum().item() for g in gradients[name].values())
    print(f"{name:<20} sum of |parameter gradients| = {total:,.1f}")
reference = gradients["no checkpoint"]
assert all(mx.all(g == 0).item()
           for g in gradients["mx.checkpoint"].values())
assert all(mx.allclose(g, reference[name], atol=1e-5) for name, g in
           gradients["nn.utils.checkpoint"].items())

# %% [markdown]
# The bare `mx.checkpoint(lambda x: block(x, mask))` runs, gives the
# right output, and silently gives every parameter a gradient of zero:
# the model would never learn, with no error anywhere. `mx.checkpoint`
# differentiates with respect to the arguments of the function it wraps,
# and the parameters are not arguments: the lambda reads them from the
# block. `nn.utils.checkpoint(module, fn)` passes the module's parameters
# in as arguments and puts them back inside, so their gradients flow,
# and they equal the gradients without checkpointing.
#
# To checkpoint the whole model, every block should go through
# `nn.utils.checkpoint`. A subclass of `Block` does it without renaming
# anything: a model whose blocks are `CheckpointedBlock`s has the same
# parameters under the same names, so its checkpoints load into a plain
# `GPT` and the other way round.

# %%
#| export
class CheckpointedBlock(Block):
    """A Block that keeps only its input for the backward pass and
    recomputes the rest (Chen et al., 2016); same parameters as Block."""

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        return nn.utils.checkpoint(self, super().__call__)(x, mask)


def use_checkpointing(model: GPT) -> GPT:
    """Make every block of `model` a CheckpointedBlock, in place; the
    parameters and their names stay, so saved weights still load."""
    if model.config.dropout > 0:
        raise ValueError(
            f"activation checkpointing with dropout={model.config.dropout}"
            " would recompute each block with new dropout masks and give "
            "wrong gradients; build the model with dropout=0 or train "
            "without checkpointing")
    for block in model.blocks:
        block.__class__ = CheckpointedBlock
    return model

# %% [markdown]
# Changing an object's `__class__` is unusual Python, and here it is
# exactly right: the block keeps its arrays and its training flag, and
# only its `__call__` changes. `use_checkpointing` also refuses a model
# with dropout, for a reason that is easy to miss. The backward pass
# reruns each block, and MLX's dropout draws a fresh random mask on every
# call, so the rerun drops different numbers than the forward pass did,
# and the gradients belong to a network that never ran:

# %%
mx.random.seed(0)
dropout_block = Block(GPTConfig.baby(vocab, dropout=0.2))
weights = mx.random.normal(trap_x.shape)
dropout_gradients = []
for wrap in (lambda fn: fn, lambda fn: nn.utils.checkpoint(dropout_block,
                                                           fn)):
    def weighted_sum(params: dict) -> mx.array:
        dropout_block.update(params)
        out = wrap(lambda x: dropout_block(x, trap_mask))(trap_x)
        return (out * weights).sum()

    mx.random.seed(7)
    grad = mx.grad(weighted_sum)(dropout_block.trainable_parameters())
    dropout_gradients.append(dict(tree_flatten(grad)))
dropout_gap = max(mx.abs(g - dropout_gradients[0][name]).max().item()
                  for name, g in dropout_gradients[1].items())
assert dropout_gap > 1e-3
print(f"largest gradient difference with dropout 0.2: {dropout_gap:.2f}")

# %% [markdown]
# A difference of {{ dropout_gap:.1f }} is not rounding. Exercise 5 fixes
# it by drawing the masks outside the checkpointed function. The baby
# model has no dropout, so the measurements below are unaffected.
# Memory and time, with and without checkpointing, first over depth and
# then over batch size:

# %%
def checkpointing_setup(enabled: bool) -> Callable[[GPT], StepFn]:
    """A setup for measure_step: the plain step, on checkpointed
    blocks when `enabled`."""
    def setup(model: GPT) -> StepFn:
        return plain_step(use_checkpointing(model) if enabled else model)
    return setup


depths = pick(smoke=[1, 2], book=[2, 4, 8])
batch_sizes = pick(smoke=[2, 4], book=[8, 16, 32])
fixed_batch, fixed_depth = pick(smoke=2, book=16), pick(smoke=2, book=4)
sweeps = {"depth": [], "batch": []}
for enabled in (False, True):
    for depth in depths:
        sweeps["depth"].append((enabled, depth, *measure_step(
            GPTConfig.baby(vocab, n_layer=depth), fixed_batch,
            checkpointing_setup(enabled), repeats=pick(smoke=1, book=2))))
    for batch_size in batch_sizes:
        sweeps["batch"].append((enabled, batch_size, *measure_step(
            GPTConfig.baby(vocab, n_layer=fixed_depth), batch_size,
            checkpointing_setup(enabled), repeats=pick(smoke=1, book=2))))
deep_plain_mib, deep_checkpointed_mib = (
    row[2] / mib for row in sweeps["depth"] if row[1] == depths[-1])
time_ratios = [checked[3] / plain[3] for sweep in sweeps.values()
               for plain, checked in zip(sweep[:len(sweep) // 2],
                                         sweep[len(sweep) // 2:])]
checkpoint_time_low, checkpoint_time_high = min(time_ratios), max(time_ratios)

# %%
#| echo: false
#| label: fig-checkpointing
#| fig-cap: Peak memory of a compiled baby-model step with and without activation checkpointing. Left, growing depth at a fixed batch; right, growing batch at a fixed depth. Dashed, the estimate.
figure, axes = plt.subplots(1, 2, figsize=(6, 2.8), sharey=True)
for axis, (sweep, label) in zip(axes, (("depth", "blocks"),
                                       ("batch", "windows per batch"))):
    for enabled, style in ((False, "o-"), (True, "s-")):
        rows = [row for row in sweeps[sweep] if row[0] == enabled]
        xs = [row[1] for row in rows]
        line, = axis.plot(xs, [row[2] / mib for row in rows], style,
                          label="checkpointed" if enabled else "plain")
        configs = [GPTConfig.baby(vocab, n_layer=x) if sweep == "depth"
                   else GPTConfig.baby(vocab, n_layer=fixed_depth)
                   for x in xs]
        batches = [fixed_batch] * len(xs) if sweep == "depth" else xs
        axis.plot(xs, [sum(memory_estimate(c, b, checkpointing=enabled)
                           .values()) / mib
                       for c, b in zip(configs, batches)], "--",
                  color=line.get_color(), linewidth=1)
    axis.set_xlabel(label)
    axis.set_xticks(xs)
axes[0].set_ylabel("peak memory (MiB)")
axes[0].legend()

# %%
#| echo: false
#| label: tbl-checkpointing
#| tbl-cap: The same runs: peak memory and median time of a step, with and without checkpointing.
sweep_rows = []
for sweep, label in (("depth", "blocks"), ("batch", "windows")):
    plain_rows = [row for row in sweeps[sweep] if not row[0]]
    checked_rows = [row for row in sweeps[sweep] if row[0]]
    for plain, checked in zip(plain_rows, checked_rows):
        sweep_rows.append((f"{plain[1]} {label}", plain[2] / mib,
                           checked[2] / mib, 1000 * plain[3],
                           1000 * checked[3], checked[3] / plain[3]))
Table(sweep_rows, ["run", "plain MiB", "checkpointed MiB", "plain ms",
                   "checkpointed ms", "time ratio"], digits=1)

# %% [markdown]
# Without checkpointing the peak climbs by one block's activations with
# every block; with it, the line rises much more slowly, because a
# stored block costs only its input, $d$ numbers per token, plus its
# share of the fixed 16 bytes per parameter. At
# {{ depths[-1] }} blocks the peak falls from {{ deep_plain_mib:.0f }} to
# {{ deep_checkpointed_mib:.0f }} MiB. Against the batch, both lines grow,
# the checkpointed one more slowly. The measured checkpointed peak sits
# above the dashed estimate, which counts one recomputed block plus one
# block of gradients: MLX's scheduler evidently keeps more than that
# alive at once, roughly another block or two, so treat the estimate as a
# lower bound when you plan with checkpointing. The price is time: the
# steps took {{ checkpoint_time_low:.2f }} to
# {{ checkpoint_time_high:.2f }} times as long here. The arithmetic
# predicts about 4/3, one more forward pass on top of a forward and a
# backward pass that costs two; on a machine shared with other jobs,
# and with blocks this small, where fixed costs per operation weigh
# more, the measurement strays from it.
#
# Checkpointing every block is the simplest policy; Chen et al. (2016)
# checkpoint every $\sqrt{L}$-th block to get memory growing like
# $\sqrt{L}$, and Korthikanti et al. (2022) recompute only the cheap,
# bulky parts, such as the attention probabilities. Exercise 3 tries
# checkpointing half the blocks.
#
# ## bfloat16
#
# Every number so far had 32 bits. A float has a sign, an *exponent*
# that sets its scale (the range of numbers it can hold), and a
# *mantissa* that sets its precision (how many numbers exist between two
# powers of two). Two 16-bit formats split their bits differently
# (@fig-formats). IEEE float16 gives up most of float32's range for the
# more precise mantissa of the two: 5 exponent bits and 10 fraction bits.
# bfloat16, from Google Brain and studied for training by Kalamkar et
# al. (2019), keeps float32's 8-bit exponent and therefore all of its
# range, and only 7 fraction bits (8 bits of precision, counting the
# leading 1 that a float does not store). Both are far coarser than
# float32, whose fraction has 23 bits.

# %%
#| echo: false
#| label: fig-formats
#| fig-cap: The bits of the three formats: sign, exponent (range) and mantissa (precision). bfloat16 is float32 with the last 16 bits cut off.
formats = [("float32", 8, 23), ("float16", 5, 10), ("bfloat16", 8, 7)]
figure, axis = plt.subplots(figsize=(6, 1.9))
colours = {"sign": "#D55E00", "exponent": "#0072B2", "mantissa": "#E69F00"}
for row, (_, exponent_bits, mantissa_bits) in enumerate(formats):
    fields = [("sign", 1), ("exponent", exponent_bits),
              ("mantissa", mantissa_bits)]
    start = 0
    for field, width in fields:
        axis.barh(row, width, left=start, color=colours[field],
                  edgecolor="white", linewidth=0.8,
                  label=field if row == 0 else None)
        if width > 1:
            axis.text(start + width / 2, row, str(width), ha="center",
                      va="center", color="white", fontsize=8)
        start += width
axis.set_yticks(range(len(formats)), [f[0] for f in formats])
axis.invert_yaxis()
axis.set_xlim(0, 32)
axis.set_xlabel("bits")
axis.grid(False)
axis.legend(ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))

# %%
#| echo: false
#| label: tbl-formats
#| tbl-cap: What the bits buy, from mx.finfo. The gap above 1 is the smallest number that, added to 1, changes it.
format_rows = []
for dtype in (mx.float32, mx.float16, mx.bfloat16):
    info = mx.finfo(dtype)
    format_rows.append((str(dtype).split(".")[-1], info.bits,
                        f"{info.max:.3g}", f"{info.smallest_normal:.3g}",
                        f"{info.eps:.3g}"))
Table(format_rows, ["format", "bits", "largest", "smallest normal",
                    "gap above 1"])

# %% [markdown]
# The range is why bfloat16 trains where float16 struggles: gradients of
# $10^{-8}$ are ordinary in float32 and in bfloat16, and zero in float16,
# which is why float16 training needs *loss scaling*, multiplying the
# loss by a large factor so that the gradients stay representable
# (Micikevicius et al., 2018). The price of bfloat16 is precision: the
# gap above 1 is $2^{-7} \approx 0.008$, so every number is stored to
# about two and a half decimal digits. Where does that hurt?
#
# **Sums and exponentials.** A softmax over thousands of logits, a mean
# over a long vector, a loss accumulated over a batch: each addition
# rounds to 8 significant bits, and the errors pile up. This is why
# chapter 6's `language_model_loss` casts the logits to float32 before
# the cross-entropy, and why chapter 5's softmax asks for
# `precise=True`, which computes it in float32 whatever the input type.
#
# **Small updates.** A training step changes a weight by about the
# learning rate, $10^{-3}$ at the peak and $10^{-4}$ at the end of
# chapter 7's schedule, while the weights themselves are around 0.02
# to 1. Adding a small number to a large one in bfloat16 rounds the sum
# back to where it started:

# %%
#| label: tbl-bfloat16-updates
#| tbl-cap: How many weights a small update leaves unchanged when the weights are kept in bfloat16.
one = mx.array(1.0, dtype=mx.bfloat16)
print("1 + 0.001 in bfloat16 =", (one + 1e-3).item())
mx.random.seed(0)
weights_f32 = GPT(GPTConfig.baby(vocab)).blocks[0].feed_forward \
    .up_proj.weight
weights_bf16 = weights_f32.astype(mx.bfloat16)
update_rows = []
for size in (1e-3, 1e-4, 1e-5):
    moved = weights_bf16 - mx.array(size, dtype=mx.bfloat16)
    lost = mx.mean(moved == weights_bf16).item()
    update_rows.append((f"{size:g}", lost))
Table(update_rows, ["update", "share of weights that did not move"])

# %% [markdown]
# The weights of a fresh baby model's feed-forward layer have a standard
# deviation of 0.02. An update of $10^{-4}$, a typical late step, leaves
# {{ update_rows[1][1]:.0%}} of them exactly where they were, and an
# update of $10^{-5}$ {{ update_rows[2][1]:.0%}}. A model whose weights are
# stored in bfloat16 stops learning in the parameters that are large
# compared to their updates, silently: the loss flattens and looks like
# convergence.
#
# **The optimizer's memory.** Adam's second moment is an average with
# factor $\beta_2$: each step adds $(1 - \beta_2)\,g^2$ to
# $\beta_2 v$. With $\beta_2 = 0.999$ the new term is a thousandth of the
# total, below bfloat16's resolution, so the average stops moving
# before it reaches its value. @fig-bf16-moment feeds a constant
# $g^2 = 1$ to the average in both formats.

# %%
#| echo: false
#| label: fig-bf16-moment
#| fig-cap: Adam's second moment fed a constant squared gradient of 1 (bias correction off). In float32 it climbs to 1; in bfloat16 it stalls where each step's increment falls below the format's resolution.
figure, axis = plt.subplots(figsize=(6, 2.6))
moment_steps = 3000
stalled = {}
for beta2, style in ((0.99, "-"), (0.999, "--")):
    for dtype in (mx.float32, mx.bfloat16):
        moment, history = mx.array(0.0, dtype=dtype), []
        for _ in range(moment_steps):
            moment = beta2 * moment + (1 - beta2) * mx.array(1.0, dtype=dtype)
            history.append(moment)
        values = np.array(mx.stack(history).astype(mx.float32))
        stalled[(beta2, str(dtype))] = float(values[-1])
        axis.plot(values, style, label=f"{str(dtype).split('.')[-1]}, "
                  f"beta2 = {beta2}")
axis.set_xlabel("step")
axis.set_ylabel("second moment v")
axis.legend(ncol=2)

# %% [markdown]
# With $\beta_2 = 0.999$ the bfloat16 average stops at
# {{ stalled[(0.999, "mlx.core.bfloat16")]:.2f }} instead of 1, and with
# 0.99 at {{ stalled[(0.99, "mlx.core.bfloat16")]:.2f }}. Adam divides by
# $\sqrt{v}$, so an underestimated $v$ inflates every step. The first
# moment, with $\beta_1 = 0.9$, suffers less.
#
# ### Mixed precision
#
# The remedy is *mixed precision* (Micikevicius et al., 2018): keep a
# float32 *master copy* of the weights, which the optimizer updates and
# whose small updates therefore survive, and the optimizer's moments in
# float32 too; run the forward and backward passes on a bfloat16 copy,
# so that the activations, the bulk of the memory for a small model,
# take half the bytes and the matrix products run at bfloat16 speed. In
# MLX it is a change to how the gradient is computed: the loss takes the
# float32 weights, casts them to bfloat16 and runs the model;
# differentiating through the cast brings the gradients back as
# float32.

# %%
#| export
def mixed_precision_loss_and_grad(model: nn.Module,
                                  dtype: mx.Dtype = mx.bfloat16
                                  ) -> LossAndGrad:
    """Loss and float32 gradients of the model's float32 weights, with
    the passes computed on a `dtype` copy (Micikevicius et al., 2018)."""
    def loss(weights: dict, inputs: mx.array, targets: mx.array) -> mx.array:
        model.update(tree_map(lambda w: w.astype(dtype), weights))
        return language_model_loss(model, inputs, targets)

    value_and_grad = mx.value_and_grad(loss)

    def loss_and_grad(inputs: mx.array,
                      targets: mx.array) -> tuple[mx.array, dict]:
        master = model.trainable_parameters()
        value, grads = value_and_grad(master, inputs, targets)
        model.update(master)
        return value, grads

    return loss_and_grad

# %% [markdown]
# After the passes, `model.update(master)` puts the float32 weights back,
# so the model between steps is an ordinary float32 model: it evaluates,
# samples and saves as before. Check the gradient against float32 on a
# real batch: bfloat16 changes its digits, but it should point the same
# way.

# %%
mx.random.seed(0)
gradient_model = GPT(GPTConfig.baby(vocab))
window = char_train[:8 * 65].reshape(8, 65).astype(np.int32)
batch = (mx.array(window[:, :-1]), mx.array(window[:, 1:]))
f32_loss, f32_grads = nn.value_and_grad(gradient_model,
                                        language_model_loss)(
    gradient_model, *batch)
mixed_loss, mixed_grads = mixed_precision_loss_and_grad(gradient_model)(
    *batch)
assert all(g.dtype == mx.float32 for _, g in tree_flatten(mixed_grads))
flat_f32, flat_mixed = (
    np.concatenate([np.array(g, dtype=np.float64).ravel()
                    for _, g in tree_flatten(grads)])
    for grads in (f32_grads, mixed_grads))
gradient_cosine = float(flat_f32 @ flat_mixed / np.linalg.norm(flat_f32)
                        / np.linalg.norm(flat_mixed))
assert gradient_cosine > 0.99
assert all(w.dtype == mx.float32
           for _, w in tree_flatten(gradient_model.parameters()))
print(f"loss {f32_loss.item():.4f} (float32) {mixed_loss.item():.4f} "
      f"(mixed); cosine of the gradients {gradient_cosine:.5f}")

# %% [markdown]
# The losses agree to about three digits and the gradients have a cosine
# similarity of {{ gradient_cosine:.5f }}: the same direction, with
# bfloat16's rounding on top. The gradients arrive in float32 and the
# model still holds float32 weights.
#
# Mixed precision saves activation memory, not parameter memory: it
# stores the master weights (4 bytes), their bfloat16 copy (2), float32
# gradients (4) and moments (8), 18 bytes per parameter instead of 16.
# The other choice, *fully bfloat16*, casts the model itself
# (`model.set_dtype(mx.bfloat16)`): weights, gradients and moments all
# in 2 bytes, 8 per parameter, with every problem shown above. It is
# worth it only when the parameters are what does not fit, and then
# with care (stochastic rounding, exercise 4; or optimizer states kept
# in float32).
#
# ## Putting it together
#
# `MemorySavingConfig` adds the three settings to chapter 7's
# `TrainConfig`, and `MemorySavingTrainer` honours them. `batch_size` stays the number of
# windows per optimizer step, so changing the accumulation changes only
# how a step is computed: the sampler draws the same windows, the
# learning rate schedule is the same, and a run with accumulation 4
# sees the same windows in the same order as one without.

# %%
#| export
@dataclass
class MemorySavingConfig(TrainConfig):
    """A TrainConfig with chapter 8's memory savers: batch_size windows
    per step in `accumulation` micro-batches, checkpointing, precision."""

    accumulation: int = 1
    """Micro-batches a step's batch is split into: same update, less memory."""
    checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory."""
    precision: str = "float32"
    """"float32", "mixed" (float32 weights, bfloat16 passes) or "bfloat16"."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.accumulation < 1:
            raise ValueError(f"accumulation must be at least 1, got "
                             f"{self.accumulation}")
        if self.batch_size % self.accumulation:
            fitting = self.accumulation * max(1, round(self.batch_size
                                                       / self.accumulation))
            raise ValueError(
                f"batch_size={self.batch_size} is not a multiple of "
                f"accumulation={self.accumulation}: a step splits its "
                "batch_size windows into equal micro-batches; use e.g. "
                f"batch_size={fitting}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; use "
                             f"one of {', '.join(PRECISIONS)}")


class MemorySavingTrainer(Trainer):
    """A Trainer that honours a MemorySavingConfig: it converts the model
    (checkpointed blocks, bfloat16 weights) and builds the matching step."""

    config: MemorySavingConfig

    def __init__(self, model: GPT, config: MemorySavingConfig, *args: Any,
                 **kwargs: Any) -> None:
        if config.checkpointing:
            use_checkpointing(model)
        if config.precision == "bfloat16":
            model.set_dtype(mx.bfloat16)
        super().__init__(model, config, *args, **kwargs)

    def build_step(self) -> StepFn:
        """The accumulating step, with mixed precision if asked for."""
        loss_and_grad = None
        if self.config.precision == "mixed":
            loss_and_grad = mixed_precision_loss_and_grad(self.model)
        return make_accumulating_step(self.model, self.optimizer, self.config,
                                      self.config.accumulation, loss_and_grad)

# %% [markdown]
# The constructor converts the model before chapter 7's constructor
# builds the step, and `build_step` picks the gradient function. That is
# all: evaluation, logging, checkpoints and `resume` are inherited. Does
# a resumed run still match an uninterrupted one, with all three settings
# on at once? Train a two-block model straight through, and again with a
# stop in the middle and a resume from the checkpoint:

# %%
laptop_steps = pick(smoke=4, book=12)
resume_settings = dict(accumulation=2, checkpointing=True,
                       precision="mixed")
laptop_model = pick(smoke=GPTConfig(vocab, 32, n_layer=2, n_head=2,
                                    n_embd=32),
                    book=GPTConfig.baby(vocab, n_layer=2))
laptop_val = char_val[:pick(smoke=512, book=4096)]


def new_laptop_trainer(run_dir: Path | None, steps: int = laptop_steps,
                       model_config: GPTConfig | None = None,
                       **settings: object) -> MemorySavingTrainer:
    """A MemorySavingTrainer on characters with a fixed seed."""
    mx.random.seed(1)
    config = MemorySavingConfig(steps=steps, batch_size=8, warmup_steps=2,
                                eval_every=steps // 2,
                                checkpoint_every=steps // 2, **settings)
    model = GPT(model_config or laptop_model)
    return MemorySavingTrainer(model, config, char_train, laptop_val,
                               chars_per_token, char_tokenizer.fingerprint(),
                               run_dir=run_dir, log=None)


straight = new_laptop_trainer(None, **resume_settings).run()
laptop_dir = Path(tempfile.mkdtemp())
new_laptop_trainer(laptop_dir, **resume_settings).run(
    until=laptop_steps // 2)
resumed_trainer = new_laptop_trainer(laptop_dir, **resume_settings)
resume(resumed_trainer)
resumed = resumed_trainer.run()
laptop_gap = max(abs(a - b) for a, b in zip(straight["loss"],
                                            resumed["loss"]))
assert laptop_gap <= 1e-5 and straight["step"] == resumed["step"]
print(f"largest difference in {laptop_steps} losses: {laptop_gap}")

# %% [markdown]
# The difference is {{ laptop_gap }}. The checkpoint it resumed from was
# written by a model with checkpointed blocks, and because
# `use_checkpointing` changes no names, a plain `GPT` loads it as it is:

# %%
record, saved_weights, _ = read_checkpoint(latest_checkpoint(laptop_dir))
plain_model = GPT(GPTConfig(**record["model"]))
plain_model.load_weights(list(saved_weights.items()), strict=True)
print(record["train_class"], {key: record["train"][key]
                              for key in resume_settings})

# %% [markdown]
# Now the three precisions side by side on the baby model, chapter 7's
# batch of 12: the peak memory and the time of a step, measured with
# the trainer's own step.

# %%
#| label: tbl-precisions
#| tbl-cap: The three precisions on the baby model: peak memory estimated and measured, and the time of a step.
def trainer_step(precision: str) -> Callable[[GPT], StepFn]:
    """A setup for measure_step: the step a MemorySavingTrainer builds."""
    def setup(model: GPT) -> StepFn:
        config = MemorySavingConfig(precision=precision)
        return MemorySavingTrainer(model, config, char_train, char_val,
                                   chars_per_token, log=None).train_step
    return setup


precision_batch = pick(smoke=2, book=12)
precision_rows = []
for precision in PRECISIONS:
    peak, seconds = measure_step(GPTConfig.baby(vocab), precision_batch,
                                 trainer_step(precision))
    estimate = memory_estimate(GPTConfig.baby(vocab), precision_batch,
                               precision=precision)
    precision_rows.append((precision, sum(estimate.values()) / mib,
                           peak / mib, 1000 * seconds))
bf16_slowdowns = [row[3] / precision_rows[0][3]
                  for row in precision_rows[1:]]
gflops = {str(dtype).split(".")[-1]: matmul_gflops(512, dtype, repeats=2)
          for dtype in (mx.float32, mx.bfloat16)}
Table(precision_rows, ["precision", "estimate (MiB)", "measured (MiB)",
                       "ms per step"], digits=1)

# %% [markdown]
# Mixed precision cuts the peak to
# {{ precision_rows[1][2] / precision_rows[0][2]:.0%}} of float32's, close
# to the estimate's {{ precision_rows[1][1] / precision_rows[0][1]:.0%}};
# fully bfloat16 cuts it to
# {{ precision_rows[2][2] / precision_rows[0][2]:.0%}}, short of the
# estimate's {{ precision_rows[2][1] / precision_rows[0][1]:.0%}}. For the
# baby model the activations are most of the memory, and halving them is
# most of the saving; but the fully bfloat16 step keeps more than the
# formula counts, {{ precision_rows[2][2] / precision_rows[2][1]:.2f }}
# times its estimate against
# {{ precision_rows[0][2] / precision_rows[0][1]:.2f }} in float32. The
# time is another story, and it depends on the machine. This book is
# built on a Linux CPU, where MLX multiplies float32 matrices through
# OpenBLAS, {{ gflops["float32"]:.0f }} GFLOP/s for a 512 × 512 product
# measured in the cell above, but has no BLAS routine for bfloat16 and
# falls back to its own loops, {{ gflops["bfloat16"]:.1f }} GFLOP/s at
# the same size. Here the 16-bit steps are therefore
# {{ min(bf16_slowdowns):.1f }} to {{ max(bf16_slowdowns):.1f }} times
# *slower*. On a Mac, MLX runs bfloat16 on the GPU, and there we expect
# the same step to be faster than in float32, because the GPU computes
# 16-bit products natively and moves half the bytes; this book, built on
# a CPU, could not measure it. Measure it on yours:
# `matmul_gflops(dtype=mx.bfloat16)` from chapter 2 and this table's
# code. What holds everywhere is the memory.
#
# Finally, does it learn the same? A short run of a small model
# ({{ curve_config.n_layer }} blocks of {{ curve_config.n_embd }}
# dimensions) in each precision:

# %%
curve_steps = pick(smoke=4, book=80)
curve_config = pick(smoke=laptop_model,
                    book=GPTConfig(vocab, 64, n_layer=2, n_head=4,
                                   n_embd=64))
curves = {}
for precision in PRECISIONS:
    trainer = new_laptop_trainer(None, steps=curve_steps,
                                 model_config=curve_config,
                                 precision=precision)
    curves[precision] = trainer.run()
final_val = {name: history["val_loss"][-1]
             for name, history in curves.items()}
print({name: round(value, 3) for name, value in final_val.items()})

# %%
#| echo: false
#| label: fig-precision-curves
#| fig-cap: Training loss of the same small model, seed and batches in three precisions (10-step moving average).
figure, axis = plt.subplots(figsize=(6, 2.8))
smoothing = min(10, curve_steps)
for precision, style in zip(PRECISIONS, ("-", "--", ":")):
    losses = curves[precision]["loss"]
    axis.plot(np.arange(smoothing, len(losses) + 1),
              np.convolve(losses, np.ones(smoothing) / smoothing, "valid"),
              style, label=precision)
axis.set_xlabel("step")
axis.set_ylabel("training loss (nats/char)")
axis.legend()

# %% [markdown]
# After {{ curve_steps }} steps the validation losses are
# {{ final_val["float32"]:.3f }} (float32), {{ final_val["mixed"]:.3f }}
# (mixed) and {{ final_val["bfloat16"]:.3f }} (bfloat16) nats per
# character, within {{ max(final_val.values()) - min(final_val.values()):.3f }}
# of each other. Early in training, while the updates are large against
# the weights, the three follow each other; the losses of the previous
# pages, small updates rounded away and a stalled second moment, show
# up late, when the learning rate is small, which a run this short does
# not reach. Mixed precision is the safe choice wherever bfloat16 is
# fast, as we expect it to be on a Mac's GPU; fully bfloat16 is a tool
# for the day the parameters themselves do not fit.
#
# ## What fits on a MacBook
#
# A MacBook shares its memory between the CPU and the GPU (Hannun et
# al., 2023), so the model's arrays come out of the same memory as
# everything else, and macOS and your other programs need some of it.
# The table assumes three quarters of the memory is yours, a budget
# chosen for this estimate and not measured on a Mac (GB here are
# $2^{30}$ bytes), and asks, for each configuration, how many
# windows a micro-batch can hold. Accumulation then makes any batch out
# of those, for one more gradient-sized buffer.

# %%
gib = 2 ** 30
fit_models = [("baby", GPTConfig.baby(vocab)),
              ("full", GPTConfig.full(vocab)),
              ("GPT-2 small", GPTConfig(50257, context=1024, n_layer=12,
                                        n_head=12, n_embd=768)),
              ("GPT-2 medium", GPTConfig(50257, context=1024, n_layer=24,
                                         n_head=16, n_embd=1024))]
fit_setups = [("float32", False), ("mixed", True), ("bfloat16", True)]


def largest_batch(config: GPTConfig, budget: float, precision: str,
                  checkpointing: bool) -> int:
    """The most windows whose estimated step fits in `budget` bytes, with
    the activations multiplied by the margin measured above."""
    fixed = sum(memory_estimate(config, 0, precision=precision,
                                checkpointing=checkpointing).values())
    per_window = memory_estimate(config, 1, precision=precision,
                                 checkpointing=checkpointing)["activations"]
    return max(0, int((budget - fixed) // (memory_margin * per_window)))


fit_rows = []
for name, config in fit_models:
    for precision, checkpointing in fit_setups:
        fixed = sum(memory_estimate(config, 0, precision=precision)
                    .values())
        per_window = memory_estimate(config, 1, precision=precision,
                                     checkpointing=checkpointing)
        fit_rows.append((
            name, {"float32": "fp32", "mixed": "mixed",
                   "bfloat16": "bf16"}[precision]
            + ("+ckpt" if checkpointing else ""),
            count_parameters(config) / 1e6, fixed / gib,
            per_window["activations"] / mib,
            *[largest_batch(config, 0.75 * ram * gib, precision,
                            checkpointing) for ram in (8, 16, 24)]))
full_estimate_gb = sum(memory_estimate(GPTConfig.full(vocab), 64)
                       .values()) / gib
full_fits_8 = largest_batch(GPTConfig.full(vocab), 0.75 * 8 * gib,
                            "float32", False)
gpt2_fixed, gpt2_medium_fixed = (
    sum(memory_estimate(config, 0).values()) / gib
    for _, config in fit_models[2:])
gpt2 = fit_models[2][1]
gpt2_window = memory_estimate(gpt2, 1)["activations"] / mib
gpt2_per_token = gpt2_window * mib / 4 / gpt2.context
gpt2_attention_share = ((gpt2.n_layer + 1) * gpt2.n_head * gpt2.context
                        / gpt2_per_token)
gpt2_logit_share = 2 * gpt2.vocab_size / gpt2_per_token

# %%
#| echo: false
#| label: tbl-fits
#| tbl-cap: Estimated largest micro-batch, in windows of the model's context, on MacBooks with 8, 16 and 24 GB, budgeting three quarters of the memory and multiplying the activations by the largest ratio of measured to estimated peak found earlier in the chapter. Fixed is parameters, gradients and optimizer state; MiB/window is the estimated activations of one window; fp32 is float32, bf16 bfloat16, ckpt activation checkpointing; 0 means not even one window fits.
Table(fit_rows, ["model", "setup", "M params", "fixed GB", "MiB/window",
                 "8 GB", "16 GB", "24 GB"], digits=2)

# %% [markdown]
# Read the table by rows; every entry is the estimate, not a run on a
# Mac. The baby model fits every budget at any batch anyone would use.
# The full model's recipe, 64 windows in float32, needs
# {{ full_estimate_gb:.1f }} GB by the estimate: it fits even the 8 GB
# budget, which holds {{ full_fits_8 }} windows, and the 16 GB budget
# holds it with room to spare. (With mixed precision and
# checkpointing it would hold many more, but checkpointing needs the
# recipe's dropout turned off.) For GPT-2 small the picture changes:
# the {{ gpt2_fixed:.1f }} GB of fixed state is affordable, but one window
# of 1,024 tokens costs {{ gpt2_window:,.0f }} MiB of activations in
# float32, {{ gpt2_attention_share:.0%}} of it attention probabilities,
# which grow with the square of the context, and
# {{ gpt2_logit_share:.0%}} the logits over 50,257 tokens and their
# gradient. Batches of GPT-2's size are for accumulation, and
# checkpointing with mixed precision multiplies the micro-batch several
# times. GPT-2 medium spends {{ gpt2_medium_fixed:.1f }} GB before it
# sees a token: at that size the 16 bytes per parameter are the
# problem, and only fully bfloat16 state, or an optimizer with less
# state, brings it within reach of the smallest Mac. Remember from
# @tbl-checkpointing that the checkpointed rows are optimistic: measured
# peaks with checkpointing were above the estimate.
#
# ## Summary
#
# A training step's memory is parameters, gradients and two Adam
# moments, 16 bytes per parameter in float32, plus the activations,
# ${{ saved_d }}d + H·T$ numbers per token per block for our GELU
# block, which the
# estimate predicted within {{ memory_spread:.0%}} of MLX's measured peak.
# Gradient accumulation gives the same update as a large batch at the
# memory of a micro-batch. Activation checkpointing keeps only the input
# of each block and recomputes the rest, so that memory grows far more
# slowly with depth, for about a third more arithmetic. It goes through
# `nn.utils.checkpoint`, because a bare `mx.checkpoint` silently zeroes
# the parameter gradients, and it needs the model without dropout,
# whose masks the recomputation would redraw. bfloat16 keeps float32's
# range with 7 fraction bits: mixed precision, with float32 master
# weights and moments, halves the activations and is safe, while fully
# bfloat16 state loses small updates and stalls Adam's second moment.
# On this CPU bfloat16 is slow; on a Mac's GPU we expect it to be the
# fast format, which is a number to measure on yours.
#
# `mlxllm.laptop` exports:
#
# - `memory_estimate(config, batch_size, accumulation, checkpointing,
#   precision)`, bytes per term, and `layer_floats_per_token(config)`;
# - `make_accumulating_step(model, optimizer, config, accumulation,
#   loss_and_grad, average)`;
# - `CheckpointedBlock` and `use_checkpointing(model)`;
# - `mixed_precision_loss_and_grad(model, dtype)`;
# - `MemorySavingConfig(TrainConfig)` with `accumulation`,
#   `checkpointing` and `precision`, and `MemorySavingTrainer(Trainer)`,
#   which `mlxllm train` uses.
#
# ## Exercises
#
# 1. ★ With `memory_estimate`, find the deepest model of the full
#    model's width (384, 6 heads, context 256) that trains with batches
#    of 64 windows on a 16 GB Mac in float32, without and with
#    accumulation 8.
# 2. ★ Forget to divide the summed gradients by the number of
#    micro-batches (pass a `loss_and_grad` that multiplies them by $k$).
#    Why does AdamW's update hardly change, and which part of the step
#    does notice?
# 3. ★★ Checkpoint only every other block of the 8-block baby model.
#    Where do its peak memory and step time fall between none and all?
# 4. ★★ Stochastic rounding: round a float32 number to bfloat16 up or
#    down at random, with the probabilities that make the rounding
#    unbiased. Show that 1,000 updates of $10^{-4}$ to a weight of 1
#    vanish with round-to-nearest and survive on average with stochastic
#    rounding.
# 5. ★★★ Make activation checkpointing work with dropout: draw the
#    dropout masks outside the checkpointed function and pass them in,
#    and show that the gradients equal those of the plain block with the
#    same masks.
