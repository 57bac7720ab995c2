# %% [markdown]
# # NaN, and losses that explode
#
# The second row of the table says that NaN values call for gradient
# clipping. A NaN, "not a number", is what floating point gives for
# $0/0$, $\infty - \infty$ or $0 \cdot \infty$, and once one enters a
# weight it spreads to every number that weight touches: the next loss,
# every gradient, every other weight after one update. It arrives by
# three roads. Training diverges, and the numbers grow until they
# overflow. A number format too narrow for the values overflows sooner.
# Or a formula takes the logarithm of zero. This section walks each road
# on purpose.
#
# ## Divergence
#
# Take the laboratory's recipe, raise the peak learning rate to
# {{ explode_lr:g }}, and switch off both guards: no warm-up, and a
# clipping threshold so large that it never acts.

# %%
#| echo: false
#| default_exp diagnose
import json

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.diagnose import character_lab, plot_runs, read_run
from mlxllm.model import GPT
from mlxllm.train import Trainer, clip_by_global_norm

lab = character_lab(artifact_path("11_troubleshooting_02/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))
control = read_run(artifact_path("11_troubleshooting/runs/control"))
baselines = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())

# %%
explode_lr, unguarded = 1.0, dict(warmup_steps=0, grad_clip=1e9)
exploded = lab.run("explode", learning_rate=explode_lr, **unguarded)
explode = read_run(lab.root / "explode")
peak_loss = max(explode.history["loss"])
peak_step = int(explode.history["step"][int(np.argmax(
    explode.history["loss"]))])
print(f"highest loss {peak_loss:.1f} at step {peak_step}, last validation "
      f"{explode.history['val_loss'][-1]:.2f} nats/char")

# %%
#| echo: false
#| label: fig-explode
#| fig-cap: The control beside a run at a far too high learning rate with no warm-up and no clipping, on a logarithmic loss axis. The loss leaps to hundreds of nats in the first steps, comes down, and settles near the unigram model's loss, which it never leaves.
explode_figure = plot_runs({"control": control,
                            f"lr {explode_lr:g}, unguarded": explode})
explode_figure.axes[0].set_yscale("log")

# %% [markdown]
# The loss reached {{ peak_loss:.0f }} nats per character at step
# {{ peak_step }}, which means the model gave the right character a
# probability near $e^{-{{ peak_loss:.0f }}}$: its logits had grown to
# hundreds. Yet nothing became NaN. The loss is computed from logits in
# float32 through `logsumexp`, which never exponentiates a large number
# (chapter 7), and each block's normalization divides the growing
# activations back to unit size. What the run lost instead is the
# model: after the explosion it settles at
# {{ explode.history['val_loss'][-1]:.2f }} nats per character, close to
# the {{ baselines['unigram']:.2f }} of chapter 10's unigram model, and
# stays there. A diverged run need not end in NaN; a loss that jumps by
# orders of magnitude and then sits at the level of a model that ignores
# its context is the same failure without the warning.
#
# ## Where to look first
#
# When a loss goes wrong, three numbers say where: the gradient norm,
# which the trainer already records at every step; the largest weight;
# and the largest activation on the way through the model, which
# `largest_activations` measures for one batch, after the embeddings,
# after each block and at the logits.

# %%
#| export
from mlx.utils import tree_flatten

from mlxllm.model import causal_mask


def residual_stream(model: GPT, ids: mx.array) -> list[mx.array]:
    """The residual stream of a batch of ids: after the embeddings, then
    after each block (what GPT.__call__ computes on the way)."""
    x = (model.token_embedding(ids)
         + model.position_embedding(mx.arange(ids.shape[1])))
    stream, mask = [x], causal_mask(ids.shape[1])
    for block in model.blocks:
        stream.append(block(stream[-1], mask))
    return stream


def largest_activations(model: GPT, ids: mx.array) -> dict[str, float]:
    """The largest absolute value after the embeddings, after each block
    and at the logits, for a batch of ids; and the largest weight."""
    stream = residual_stream(model, ids)
    names = ["embeddings"] + [f"block {i}" for i in range(1, len(stream))]
    sizes = {name: mx.abs(x).max().item() for name, x in zip(names, stream)}
    logits = model.token_embedding.as_linear(model.norm(stream[-1]))
    sizes["logits"] = mx.abs(logits).max().item()
    sizes["largest weight"] = max(mx.abs(weight).max().item() for _, weight
                                  in tree_flatten(model.parameters()))
    return sizes


# %%
#| label: tbl-activations
#| tbl-cap: The largest absolute value at each stage of the model, for the same validation batch, after the control run and after the unguarded one.
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint

control_model = GPT(lab.model_config)
_, control_weights, _ = read_checkpoint(
    latest_checkpoint(artifact_path("11_troubleshooting/runs/control")),
    optimizer=False)
control_model.load_weights(list(control_weights.items()))
context = lab.model_config.context
batch = mx.array(lab.val_ids[:8 * context].reshape(8, context))
sizes = {name: largest_activations(model.eval(), batch) for name, model
         in (("control", control_model), ("unguarded", exploded.model))}
Table([(stage, sizes["control"][stage], sizes["unguarded"][stage])
       for stage in sizes["control"]],
      ["stage", "control", "unguarded"], digits=1)

# %% [markdown]
# The logits of the unguarded model are ordinary,
# {{ sizes['unguarded']['logits']:.0f }} against
# {{ sizes['control']['logits']:.0f }}, because the final normalization
# rescales whatever reaches it. Everything before it is not. Reading
# the table from the top, the first stage out of line is the first
# block, and by the last one the residual stream holds values as large
# as {{ sizes['unguarded']['block 4']:,.0f }}, about
# {{ round(sizes['unguarded']['block 4'] / sizes['control']['block 4'], -3):,.0f }}
# times the control's: the optimizer blew up the blocks' weights (the
# largest is {{ sizes['unguarded']['largest weight']:.0f }}), and the
# normalizations have hidden it from the loss ever since. That number
# fits float32, and even float16; its square, which each normalization
# computes for its variance, does not fit float16, as the next section
# shows.
#
# ## A logarithm of zero
#
# Written the way the formula reads, the loss takes the softmax, picks
# the probability of the right token and takes its logarithm. Chapter 7
# explained why `language_model_loss` does not: a probability below
# about $10^{-45}$ is zero in float32, and $\ln 0 = -\infty$. Here is
# that formula in a trainer, at the same unguarded recipe:

# %%
def naive_loss(model: GPT, inputs: mx.array,
               targets: mx.array) -> mx.array:
    """Cross-entropy as the formula reads: softmax, pick, logarithm."""
    probabilities = mx.softmax(model(inputs).astype(mx.float32), axis=-1)
    picked = mx.take_along_axis(probabilities, targets[..., None], axis=-1)
    return -mx.log(picked).mean()


class NaiveLossTrainer(Trainer):
    """Chapter 7's trainer with naive_loss in its (uncompiled) step."""

    def build_step(self):
        loss_and_grad = nn.value_and_grad(self.model, naive_loss)

        def step(inputs: mx.array, targets: mx.array):
            loss, grads = loss_and_grad(self.model, inputs, targets)
            grads, norm = clip_by_global_norm(grads, self.config.grad_clip)
            self.optimizer.update(self.model, grads)
            return loss, norm

        return step


lab.run("log-zero", trainer_class=NaiveLossTrainer,
        learning_rate=explode_lr, **unguarded)
log_zero = read_run(lab.root / "log-zero")
print(f"failure.json: {log_zero.failure}; "
      f"{len(log_zero.history['step'])} finite step(s) recorded before it")

# %% [markdown]
# The second step's loss is infinite, and its gradient NaN: the first
# update at this learning rate made some logit gaps larger than float32
# can exponentiate back from, a probability underflowed to zero, and its
# logarithm is $-\infty$. The trainer stopped before the NaN reached a
# checkpoint, and `record_failure` kept the evidence in the run
# directory, where `read_run` finds it. The same update with
# `language_model_loss` gave the large but finite losses of
# @fig-explode; the two runs differ only in how the loss is computed.
#
# ## Narrow number formats
#
# Chapter 8 trains in bfloat16 to save memory. A 16-bit float has to
# give up either range or precision, and the two 16-bit formats give up
# different things: float16 keeps 10 bits of precision and overflows
# above 65,504; bfloat16 keeps float32's range and only 7 bits.
# @tbl-narrow-formats computes a few values that occur in training in each.

# %%
#| echo: false
#| label: tbl-narrow-formats
#| tbl-cap: A few values that occur in training, computed in each format. float16 overflows where bfloat16 does not; bfloat16 cannot add 1 to 256.
formats = {"float32": mx.float32, "bfloat16": mx.bfloat16,
           "float16": mx.float16}
float16_max = mx.finfo(mx.float16).max
cases = {"largest finite": lambda d: mx.array(mx.finfo(d).max, d),
         "exp(12), a softmax term": lambda d: mx.exp(mx.array(12.0, d)),
         "300², in a sum of squares": lambda d: mx.square(mx.array(300.0, d)),
         "256 + 1, a running count": lambda d: mx.array(256.0, d) + 1}
Table([(case, *(f"{make(dtype).astype(mx.float32).item():.6g}"
                for dtype in formats.values()))
       for case, make in cases.items()], ["value", *formats])

# %% [markdown]
# A float16 model overflows as soon as an exponential or a square passes
# 65,504. Mixed-precision training in float16 guards the other end too:
# it scales the loss up so that small gradients do not underflow to
# zero, and skips any step whose gradients overflowed (Micikevicius et
# al., 2018). The unguarded model's residual stream, at
# {{ sizes['unguarded']['block 4']:,.0f }}, is
# {{ sizes['unguarded']['block 4'] / float16_max:.0%}} of that limit,
# and the variance its normalization computes squares it. bfloat16 does not
# overflow there, but it cannot count: $256 + 1 = 256$. Chapter 8 keeps
# the loss, the softmax and the optimizer's state in float32 for both
# reasons, and so does `language_model_loss`, which casts the logits up
# before the cross-entropy. If a bfloat16 run produces NaN where the
# float32 run did not, look for a sum or an exponential computed in the
# narrow format.
#
# ## What clipping and warm-up fix
#
# The table's advice for NaN is gradient clipping. Here is the
# unguarded recipe of @fig-explode with both guards back on, a warm-up
# of {{ lab.base.warmup_steps }} steps and clipping at
# {{ lab.base.grad_clip }}, still at a peak learning rate of
# {{ explode_lr:g }}.

# %%
lab.run("guarded", learning_rate=explode_lr)
guarded = read_run(lab.root / "guarded")
guarded_peak_step = int(np.argmax(guarded.history["loss"])) + 1
print(f"highest loss {max(guarded.history['loss']):.1f} at step "
      f"{guarded_peak_step}, last validation "
      f"{guarded.history['val_loss'][-1]:.2f} nats/char")

# %%
#| echo: false
#| label: fig-guarded
#| fig-cap: The unguarded run's learning rate with a warm-up and clipping, beside the unguarded run and the control, on a logarithmic loss axis. The explosion comes later and lower, but it comes.
guarded_figure = plot_runs({"control": control,
                            f"lr {explode_lr:g}, unguarded": explode,
                            f"lr {explode_lr:g}, guarded": guarded})
guarded_figure.axes[0].set_yscale("log")

# %% [markdown]
# The guards slowed the explosion down and did not stop it: the loss
# still leaps, to {{ max(guarded.history['loss']):.0f }} nats at step
# {{ guarded_peak_step }} against {{ peak_loss:.0f }} at step
# {{ peak_step }} without them, and the run ends at
# {{ guarded.history['val_loss'][-1]:.2f }} nats per character, no better
# than the unguarded one. That is a property of Adam. Clipping scales
# the gradient down, but Adam divides the gradient by its own running
# size, so a clipped gradient moves each weight by about as much as an
# unclipped one: about the learning rate, every step. The warm-up only
# postpones the steps at the full rate. The guards are for a sensible
# learning rate: the warm-up for the first steps, as in "Warm-up", and
# clipping for the odd batch whose gradient is far larger than the
# rest. For a learning rate that is simply too high, the fix is a lower
# one, and the range test of the previous section finds it.
