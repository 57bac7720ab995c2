# %% [markdown]
# # Initialisation
#
# Chapter 6 initialised the model as GPT-2 does: every weight drawn from
# a normal distribution with standard deviation 0.02, and the two
# projections that write into the residual stream in each block scaled
# down further, by $1/\sqrt{2 n_\text{layer}}$ (Radford et al., 2019).
# Each choice guards against a failure you can now provoke.
#
# ## All zeros
#
# Zero is the first value that comes to mind for a weight, and for a
# network it is a trap. With every weight zero, every token's vector is
# zero, every normalization returns zero, the logits are all zero, and
# the gradient of every weight, being a product with one of those zeros,
# is zero as well. The optimizer has nothing to follow.

# %%
#| echo: false
import dataclasses
import math

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.book import artifact_path, pick
from mlxllm.diagnose import character_lab, plot_runs, read_run
from mlxllm.diagnose import residual_stream
from mlxllm.model import GPT, GPTConfig

lab = character_lab(artifact_path("11_troubleshooting_05/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))
control = read_run(artifact_path("11_troubleshooting/runs/control"))

# %%


def initialised(config: GPTConfig, std: float | None) -> GPT:
    """Chapter 6's GPT with every matrix drawn from normal(0, std)
    instead (std 0: all zeros); None keeps chapter 6's initialisation."""
    model = GPT(config)
    if std is not None:
        for _, module in model.named_modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight = std * mx.random.normal(module.weight.shape)
    return model


mx.random.seed(lab.base.seed)
lab.run("zeros", model=initialised(lab.model_config, 0.0))
zeros = read_run(lab.root / "zeros")
uniform = math.log(lab.tokenizer.vocab_size)
print(f"loss at the first and last step: {zeros.history['loss'][0]:.4f}, "
      f"{zeros.history['loss'][-1]:.4f}; ln {lab.tokenizer.vocab_size} = "
      f"{uniform:.4f}")
print(f"largest gradient norm: {max(zeros.history['grad_norm']):.1e}")

# %% [markdown]
# The loss sits at $\ln {{ lab.tokenizer.vocab_size }}$, a uniform
# guess, from the first step to the last, and the gradient norm is
# exactly zero throughout. A loss that does not move at all, not even by
# noise, means the gradient does not reach the weights: all-zero
# weights, a learning rate of zero, parameters frozen by mistake, or a
# loss computed on something detached from the model. Random weights
# break the symmetry that keeps every unit identical, which is why
# every network starts from them.
#
# ## Too large
#
# Random, but too large, fails differently. With a standard deviation of
# {{ large_std }} instead of 0.02, the tied embedding that produces the
# logits is fifty times too large, and so are the logits: the model
# starts out certain of a random answer for every position.

# %%
large_std = 1.0
mx.random.seed(lab.base.seed)
lab.run("large-init", model=initialised(lab.model_config, large_std))
large = read_run(lab.root / "large-init")
print(f"first loss {large.history['loss'][0]:.1f} (ln V = {uniform:.2f}), "
      f"last validation {large.history['val_loss'][-1]:.2f} nats/char")

# %%
#| echo: false
#| label: fig-init
#| fig-cap: All-zero weights, weights fifty times too large, and chapter 6's initialisation (the control). The zero run never leaves the uniform guess (its gradient norm is exactly zero, which a logarithmic axis cannot draw); the large one starts far above it.
plot_runs({"control": control, "all zeros": zeros,
           f"std {large_std:g}": large})

# %% [markdown]
# The first loss is the check: a freshly initialised language model
# should score close to $\ln V$ = {{ uniform:.2f }}, because it knows
# nothing and should say so with flat probabilities. This one starts at
# {{ large.history['loss'][0]:.0f }}, and after {{ lab.base.steps }}
# steps it is still at {{ large.history['val_loss'][-1]:.2f }} against
# the control's {{ control.history['val_loss'][-1]:.2f }}: the run spent
# its budget unlearning its confidence. Check the first loss of every
# new model before anything else; it costs one forward pass.
#
# ## Depth and the residual stream
#
# The scaled residual projections matter more as the model deepens.
# Each block adds its attention and feed-forward outputs to the
# residual stream, so the stream's size grows with the number of
# blocks; scaling each addition by $1/\sqrt{2 n_\text{layer}}$ keeps
# the sum at about the size of one term. @fig-residual measures the
# standard deviation of the residual stream after each block of a fresh
# {{ deep_layers }}-layer model, with and without the scaling.

# %%
deep_layers = 24


def stream_sizes(model: GPT, ids: mx.array) -> list[float]:
    """Standard deviation of the residual stream after each block."""
    return [x.std().item() for x in residual_stream(model, ids)[1:]]


def stream_with_and_without(layers: int) -> tuple[list[float], list[float]]:
    """stream_sizes of a fresh model of `layers` blocks, with GPT-2's
    scaled residual projections and with the scaling undone."""
    config = dataclasses.replace(lab.model_config, n_layer=layers)
    sizes = []
    for undo in (False, True):
        mx.random.seed(0)
        model = GPT(config)
        for path, module in model.named_modules():
            if undo and path.endswith(("out_proj", "down_proj")):
                module.weight = module.weight * math.sqrt(2 * layers)
        sizes.append(stream_sizes(model, ids))
    return sizes[0], sizes[1]


ids = mx.array(lab.val_ids[:8 * 64].reshape(8, 64))
scaled, unscaled = stream_with_and_without(deep_layers)
baby_scaled, baby_unscaled = stream_with_and_without(lab.model_config.n_layer)
print(f"after the last block: {scaled[-1]:.3f} scaled, "
      f"{unscaled[-1]:.3f} unscaled ({deep_layers} blocks); "
      f"{baby_scaled[-1]:.3f} and {baby_unscaled[-1]:.3f} (baby)")

# %%
#| echo: false
#| label: fig-residual
#| fig-cap: Standard deviation of the residual stream after each block of a freshly initialised deep model, with GPT-2's scaled residual projections and without the scaling.
plt.figure(figsize=(6, 2.6))
layers = np.arange(1, deep_layers + 1)
plt.plot(layers, scaled, "o-", markersize=3, label="scaled by 1/√(2L)")
plt.plot(layers, unscaled, "s-", markersize=3, label="unscaled")
plt.xlabel("block")
plt.ylabel("residual stream std")
plt.legend(fontsize="small")

# %% [markdown]
# Without the scaling, the stream after the last block is
# {{ unscaled[-1] / scaled[-1]:.1f }} times larger, and it is still
# growing with every block. The normalization at the entrance of each
# block hides that from the block itself, but the stream is what the
# final normalization and the head read, and what every block's update
# is added to: in a stream that grows with depth, each block's update
# counts for less. In the baby model's
# {{ lab.model_config.n_layer }} blocks the ratio is
# {{ baby_unscaled[-1] / baby_scaled[-1]:.1f }}; GPT-2 introduced the
# scaling for its 12 to 48 (Radford et al., 2019).
