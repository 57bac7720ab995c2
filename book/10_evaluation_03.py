# %% [markdown]
# # How sure is the number?
#
# A validation loss printed to three decimals looks exact. It is not: it
# is one model scored on one sample of text, and the model itself is one
# draw from a training run whose batches and initial weights came from a
# seed. Each of the two can move the number, and before you call one
# model better than another you need to know by how much. This section
# measures both, on the model you just trained and on chapter 7's baby.
#
# ## The text: a bootstrap over windows
#
# The validation split is scored window by window, in non-overlapping
# windows of the model's context, as chapter 7's `evaluate` does. Keep
# the loss of every token instead of only their mean, and you have the
# raw material for an interval: each window is one observation of how
# well the model predicts a stretch of Shakespeare.

# %%
#| default_exp evaluate
import json

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.cli import load_model
from mlxllm.data import encode_splits, load_corpus, split_train_val
from mlxllm.model import GPT, GPTConfig
from mlxllm.train import TrainConfig, Trainer, evaluate

text = load_corpus()
train_text, val_text = split_train_val(text)
val_text = val_text[:pick(smoke=8192, book=None)]  # smoke: seconds
small_dir = artifact_path("10_evaluation_02/small/tokenizer.txt").parent
baby_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
small, tokenizer = load_model(small_dir)
baby, _ = load_model(baby_dir)
baby_record, _, _ = read_checkpoint(latest_checkpoint(baby_dir),
                                    optimizer=False)
val_ids = np.array(tokenizer.encode(val_text))
print(f"{len(val_ids):,} validation ids; the baby model trained "
      f"{baby_record['step']:,} steps with seed {baby_record['train']['seed']}")

# %%
#| export
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.model import GPT


def whole_windows(ids: np.ndarray,
                  context: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of every whole non-overlapping window of
    `context` tokens: two (windows, context) arrays."""
    windows = (len(ids) - 1) // context
    if windows < 1:
        raise ValueError(f"{len(ids)} tokens are too few to score: the "
                         f"model needs at least {context + 1} (its context "
                         "plus one)")
    ids = np.asarray(ids[:windows * context + 1], dtype=np.int32)
    return (ids[:-1].reshape(windows, context),
            ids[1:].reshape(windows, context))


def token_losses(model: GPT, ids: np.ndarray,
                 batch_size: int = 32) -> np.ndarray:
    """The loss in nats of every predicted token, one row per whole
    non-overlapping window of the model's context: (windows, context)."""
    inputs, targets = whole_windows(ids, model.config.context)
    rows = []
    for start in range(0, len(inputs), batch_size):
        logits = model(mx.array(inputs[start:start + batch_size]))
        rows.append(np.array(nn.losses.cross_entropy(
            logits.astype(mx.float32),
            mx.array(targets[start:start + batch_size]))))
    return np.concatenate(rows)

# %% [markdown]
# `token_losses` is chapter 7's `evaluate` without the final mean: its
# mean over every entry is the validation loss per token, the number the
# training logs print.

# %%
baby_losses = token_losses(baby, val_ids)
small_losses = token_losses(small, val_ids)
assert abs(baby_losses.mean() - evaluate(baby, val_ids, 64)) < 1e-5
print(f"baby: {baby_losses.shape[0]:,} windows of {baby_losses.shape[1]}, "
      f"mean {baby_losses.mean():.4f}")
print(f"small: {small_losses.shape[0]:,} windows of "
      f"{small_losses.shape[1]}, mean {small_losses.mean():.4f}")

# %% [markdown]
# The mean agrees with chapter 7's `evaluate` (the assertion). Now
# resample: draw as many windows as there are, with replacement, and
# score the draw; do it a few thousand times. The spread of those scores
# is the *bootstrap* estimate of how much the number would move on
# another sample of text like this one (Efron, 1979), and the middle 95%
# of them is an interval. The ratio is total nats over total characters
# of the drawn windows, so the same code serves a BPE model, whose
# windows hold different numbers of characters.

# %%
#| export
def bootstrap_ratios(window_nats: np.ndarray, window_chars: np.ndarray,
                     samples: int = 2000, seed: int = 0) -> np.ndarray:
    """Nats per character of `samples` draws of as many windows as there
    are, with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(window_nats), (samples, len(window_nats)))
    return window_nats[draws].sum(axis=1) / window_chars[draws].sum(axis=1)


def bootstrap_interval(window_nats: np.ndarray, window_chars: np.ndarray,
                       samples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """The middle `level` of the bootstrap's nats per character."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    ratios = bootstrap_ratios(window_nats, window_chars, samples, seed)
    tail = (1 - level) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


@dataclass
class Estimate:
    """Nats per character of a text under a model, with an interval."""

    nats_per_char: float
    low: float
    high: float
    tokens: int
    chars: int

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / np.log(2)


def score_text(model: GPT, tokenizer: object, text: str,
               samples: int = 2000, seed: int = 0) -> Estimate:
    """The model's loss on `text` in nats per character, with a 95%
    bootstrap interval over its windows."""
    ids = np.array(tokenizer.encode(text))
    losses = token_losses(model, ids)
    targets = ids[1:1 + losses.size].reshape(losses.shape)
    window_chars = np.array([len(tokenizer.decode(row.tolist()))
                             for row in targets], dtype=np.float64)
    window_nats = losses.sum(axis=1, dtype=np.float64)
    low, high = bootstrap_interval(window_nats, window_chars, samples,
                                   seed=seed)
    return Estimate(float(window_nats.sum() / window_chars.sum()), low,
                    high, tokens=losses.size, chars=int(window_chars.sum()))

# %%
baby_estimate = score_text(baby, tokenizer, val_text)
small_estimate = score_text(small, tokenizer, val_text)
bz2_nats = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())["bz2"]
for name, estimate in (("baby", baby_estimate), ("small", small_estimate)):
    print(f"{name}: {estimate.nats_per_char:.3f} nats/char, 95% interval "
          f"{estimate.low:.3f} to {estimate.high:.3f}")
assert baby_estimate.low < baby_estimate.nats_per_char < baby_estimate.high

# %%
#| echo: false
bz2_side = "below" if small_estimate.nats_per_char < bz2_nats else "above"
within = small_estimate.low <= bz2_nats <= small_estimate.high
bz2_inside = "inside" if within else "outside"
bz2_verdict = ("the model's edge is smaller than the uncertainty of its own "
               "number, and the split cannot rank the two" if within
               else f"the model is {bz2_side} bz2 by more than the "
               "uncertainty of its own number")

# %% [markdown]
# Each interval is about {{ baby_estimate.high - baby_estimate.low:.3f }}
# nats wide for the baby and {{ small_estimate.high - small_estimate.low:.3f }}
# for the small model ({{ small_losses.shape[0]:, }} windows of
# {{ small.config.context }} characters: fewer windows, and the
# characters within a window are not independent draws). That puts
# the previous section's last crossing in proportion. The small model
# ended {{ abs(small_estimate.nats_per_char - bz2_nats):.3f }} nats
# {{ bz2_side }} bz2's {{ bz2_nats:.3f }}; bz2's figure lies
# {{ bz2_inside }} the model's interval, so {{ bz2_verdict }}. (bz2 has
# no per-window losses, so the tighter paired comparison, window by
# window, that the part on seeds below describes is not available for
# it.)
#
# Compare the interval with the estimate
# nanoGPT prints, the mean loss of 20 random batches of 12 windows,
# whose scatter chapter 7 measured on the same baby model by drawing it
# {{ len(nanogpt_estimates) }} times. @fig-bootstrap puts the two side
# by side.

# %%
#| echo: false
#| label: fig-bootstrap
#| fig-cap: Two answers to how far the baby's validation loss would move on other text like it. Filled, the bootstrap over all the split's windows; outlined, chapter 7's repeated nanoGPT-style estimates, each from 20 batches of 12 windows. The dashed line is the loss over the whole split.
nanogpt_estimates = np.load(artifact_path("07_training/nanogpt_estimates.npy"))
baby_ratios = bootstrap_ratios(baby_losses.sum(axis=1),
                               np.full(len(baby_losses), 64.0))
plt.figure(figsize=(6, 2.6))
bins = np.linspace(min(baby_ratios.min(), nanogpt_estimates.min()),
                   max(baby_ratios.max(), nanogpt_estimates.max()), 40)
plt.hist(baby_ratios, bins=bins, density=True, alpha=0.6,
         label=f"bootstrap, {len(baby_losses):,} windows")
plt.hist(nanogpt_estimates, bins=bins, density=True, histtype="step",
         linewidth=1.5, label="20 batches of 12 windows")
plt.axvline(baby_estimate.nats_per_char, color="0.2", linestyle="--",
            linewidth=0.9)
plt.xlabel("validation loss (nats/char)")
plt.ylabel("density")
plt.legend(fontsize=8)

# %% [markdown]
# The bootstrap's standard deviation is {{ baby_ratios.std():.4f }}; one
# 20-batch estimate's is {{ nanogpt_estimates.std():.4f }},
# {{ nanogpt_estimates.std() / baby_ratios.std():.1f }} times larger,
# close to what the square root of the ratio of windows predicts,
# $\sqrt{ {{ len(baby_losses) }} / 240} \approx
# {{ (len(baby_losses) / 240) ** 0.5:.1f }}$. Scoring the whole split
# costs a few seconds for these models and buys an error bar that much
# narrower; when two runs differ by less than a 20-batch estimate's
# scatter, only the whole split can tell them apart.
#
# ## The run: seeds
#
# The interval says how the number moves with the text; it says nothing
# about how it moves with the run. Train chapter 7's baby model again
# with other seeds (other initial weights, other batches, other dropout
# masks; the text and the recipe unchanged) and score each on the whole
# split:

# %%
char_train, char_val = encode_splits(
    tokenizer, text, artifact_path("10_evaluation_03/tokens"))
baby_steps = pick(smoke=8, book=TrainConfig().steps)
seed_vals = {baby_record["train"]["seed"]: baby_estimate.nats_per_char}
for seed in (1338, 1339):
    mx.random.seed(seed)
    run = TrainConfig(steps=baby_steps, seed=seed, eval_every=baby_steps,
                      warmup_steps=pick(smoke=4, book=100))
    trainer = Trainer(GPT(GPTConfig.baby(tokenizer.vocab_size)), run,
                      char_train, char_val, 1.0, log=None)
    trainer.run()
    trainer.model.eval()
    seed_vals[seed] = score_text(trainer.model, tokenizer,
                                 val_text).nats_per_char
seed_spread = max(seed_vals.values()) - min(seed_vals.values())
for seed, value in seed_vals.items():
    print(f"seed {seed}: {value:.4f} nats/char")

# %% [markdown]
# Three seeds land {{ seed_spread:.3f }} nats apart from lowest to
# highest, against a bootstrap interval {{ baby_estimate.high - baby_estimate.low:.3f }}
# wide. The two answer different questions. The interval is about the
# text: how far another sample of Shakespeare would move this model's
# number. When two models are scored on the same split, most of that
# cancels, because a window that is hard for one is hard for the other,
# and a paired comparison (the difference window by window) is much
# tighter. The seed spread does not cancel: it is how far the same
# recipe lands from itself. A difference between two training recipes
# no larger than that spread, measured from one run of each, is not yet
# a difference; run several seeds of each and compare the means.
