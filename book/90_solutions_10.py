# %% [markdown]
# # Chapter 10
#
# The solutions score the small model of "The book's Shakespeare model",
# read from the last checkpoint of its run, with what chapter 10 exported
# to `mlxllm.evaluate`, and reuse the baselines that "Baselines" left in
# `baselines.json`. Three of them need the model's logits on the
# validation split, so those are computed once, here: `window_logits`
# runs the model on windows of its context that start anywhere, and
# `nats` turns logits into the loss of each target.

# %%
import bisect
import json
import math
import os
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.cli import load_model
from mlxllm.data import load_corpus, split_train_val
from mlxllm.evaluate import (COMPRESSORS, CountTable, Level, NGramCounts,
                             NGramModel, Smoothing, bootstrap_ratios,
                             by_order, expected_calibration_error,
                             match_lengths, speech_openers, token_losses,
                             vocabulary)
from mlxllm.generate import forward_cached, generate_tokens, make_caches
from mlxllm.model import count_parameters

started = time.perf_counter()
train_text, val_text = split_train_val(load_corpus())
val_text = val_text[:pick(smoke=8192, book=None)]  # smoke: seconds
model, tokenizer = load_model(
    artifact_path("10_evaluation_02/small/tokenizer.txt").parent)
context = model.config.context
val_ids = np.array(tokenizer.encode(val_text))
baselines = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())


def window_logits(ids: np.ndarray, starts: range,
                  batch_size: int = 32) -> np.ndarray:
    """Logits (windows, context, vocab) of the windows of `context` ids
    that begin at each of `starts`."""
    batches = []
    for first in range(0, len(starts), batch_size):
        rows = [ids[start:start + context]
                for start in starts[first:first + batch_size]]
        logits = model(mx.array(np.stack(rows).astype(np.int32)))
        batches.append(np.array(logits.astype(mx.float32)))
    return np.concatenate(batches)


def nats(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-ln softmax(logits)[target] at every position."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    picked = np.take_along_axis(shifted, targets[..., None], -1)[..., 0]
    return np.log(np.exp(shifted).sum(axis=-1)) - picked


def targets_of(ids: np.ndarray, starts: range) -> np.ndarray:
    """The ids each window predicts: the next `context` after its start."""
    return np.stack([ids[start + 1:start + context + 1] for start in starts])


whole = range(0, (len(val_ids) - 1) // context * context, context)
whole_logits = window_logits(val_ids, whole)
whole_targets = targets_of(val_ids, whole)
whole_losses = nats(whole_logits, whole_targets)
assert np.allclose(whole_losses[:4], token_losses(
    model, val_ids[:4 * context + 1]), atol=1e-4)
print(f"{len(whole)} windows of {context}: "
      f"{whole_losses.mean():.4f} nats/char")

# %% [markdown]
# The windows in `whole` are chapter 7's, end to end, and the assertion
# checks the first four against the chapter's `token_losses`.
#
# ## Exercise 10.1
#
# A model that gives the next character probability $p$ can drive an
# arithmetic coder that spends $-\log_2 p$ bits on it, so the model's loss
# in bits per character, times the characters, is the size of the coded
# file, give or take a few bytes. The compressors write real files,
# alone and, as in "Baselines", after reading the training text.

# %%
#| label: tbl-ch10-coded-size
#| tbl-cap: The validation split coded several ways. The small model's row is its loss in bits per character times the characters; the compressors' are the files they write, alone or after reading the training text (primed).
val_bytes = val_text.encode()
train_bytes = train_text.encode()
coded = {"the text itself": len(val_bytes)}
for name, squeeze in COMPRESSORS.items():
    coded[f"{name}, alone"] = len(squeeze(val_bytes))
for name, squeeze in COMPRESSORS.items():
    coded[f"{name}, primed"] = (len(squeeze(train_bytes + val_bytes))
                                - len(squeeze(train_bytes)))
model_bits = whole_losses.mean() / math.log(2)
coded["small model"] = round(model_bits * len(val_text) / 8)
Table([(name, size, 8 * size / len(val_text), f"{size / len(val_bytes):.1%}")
       for name, size in coded.items()],
      ["coded with", "bytes", "bits/char", "of the text"])

# %%
#| echo: false
compressed = {name: size for name, size in coded.items()
              if name not in ("the text itself", "small model")}
best_coder = min(compressed, key=compressed.get)
model_saving = 1 - coded["small model"] / compressed[best_coder]
byte_gap = compressed[best_coder] - coded["small model"]
best_file = (f"the best compressor's file ({best_coder}: "
             f"{compressed[best_coder]:,} bytes)")
if abs(model_saving) < 0.01:
    coded_verdict = (f"{abs(byte_gap):,} bytes "
                     f"{'fewer' if byte_gap > 0 else 'more'} than "
                     f"{best_file}, a tie")
elif model_saving > 0:
    coded_verdict = f"{model_saving:.0%} smaller than {best_file}"
else:
    coded_verdict = (f"{-model_saving:.0%} larger than {best_file}: the "
                     "model has not caught up with it")
weight_bytes = 4 * count_parameters(model.config)
best_alone = min(coded[f"{name}, alone"] for name in COMPRESSORS)

# %% [markdown]
# At {{ model_bits:.3f }} bits per character the small model would code
# the {{ len(val_text):, }} characters of the split in
# {{ coded['small model']:, }} bytes (an arithmetic coder driven by the
# model gets within a few bytes of that; Witten et al., 1987),
# {{ coded_verdict }}. Alone, the
# compressors learn only from the text they are compressing, and the
# best of them needs {{ best_alone:, }} bytes.
#
# The comparison is fair in one way and not in another. The decoder of a
# primed compressor needs the training text, {{ len(train_bytes):, }}
# bytes, before it can decode anything; the model's decoder needs the
# model, {{ weight_bytes / 1e6:.1f }} MB of 32-bit weights. Neither is
# counted in the table. Counted, both would lose to the text itself,
# which is why such comparisons hold the shared knowledge fixed and
# compare only what each coder adds for the new text.
#
# ## Exercise 10.2
#
# Modified Kneser-Ney keeps everything of @eq-kneser-ney but the
# discount. An n-gram seen once loses $D_1$, twice $D_2$, three times or
# more $D_{3+}$, each estimated from the counts of counts $n_1, \ldots,
# n_4$ of its order (Chen & Goodman, 1998): with
# $Y = n_1 / (n_1 + 2 n_2)$,
#
# $$D_1 = 1 - 2Y\frac{n_2}{n_1},\quad D_2 = 2 - 3Y\frac{n_3}{n_2},\quad
# D_{3+} = 3 - 4Y\frac{n_4}{n_3}.$$
#
# What a context gives to the shorter one is what its discounts
# collected, $\sum_w D(c(hw))$, over $c(h)$. `NGramModel` takes its
# smoothing as a step function, so the new smoothing is one more step:
# the function below computes each level's three discounts and each
# context's collected mass once, and returns the step.

# %%
def modified_discounts(level: Level) -> np.ndarray:
    """D1, D2, D3+ of one order from its counts of counts; the order's
    single discount three times where they cannot be estimated (a count
    of counts is zero, or a discount falls outside 0 to its count)."""
    n1, n2, n3, n4 = (int(np.sum(level.grams.counts == count))
                      for count in (1, 2, 3, 4))
    if n1 and n2 and n3:
        y = n1 / (n1 + 2 * n2)
        discounts = np.array([1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2,
                              3 - 4 * y * n4 / n3])
        if np.all((discounts >= 0) & (discounts <= [1, 2, 3])):
            return discounts
    return np.full(3, level.discount)


def modified_kneser_ney(counts: NGramCounts) -> Smoothing:
    """The step function of modified Kneser-Ney for these counts."""
    tables = {}
    for level in [*counts.raw.values(), *counts.continuation.values()]:
        discounts = modified_discounts(level)
        taken = discounts[np.minimum(level.grams.counts, 3) - 1]
        contexts, starts = np.unique(level.grams.codes // level.base,
                                     return_index=True)
        freed = CountTable(contexts, np.add.reduceat(taken, starts))
        tables[id(level)] = discounts, freed

    def step(level: Level, codes: np.ndarray,
             lower: np.ndarray) -> np.ndarray:
        discounts, freed = tables[id(level)]
        count, total, _ = level.lookup(codes)
        kept = count - discounts[np.clip(count, 1, 3) - 1] * (count > 0)
        probs = ((kept + freed[codes // level.base] * lower)
                 / np.maximum(total, 1))
        return np.where(total > 0, probs, lower)

    return step


class ModifiedKneserNey(NGramModel):
    """Kneser-Ney with three discounts (Chen & Goodman, 1998)."""

    def __init__(self, counts: NGramCounts, order: int,
                 step: Smoothing) -> None:
        super().__init__(counts, order, "kneser_ney")
        self.step = step

# %% [markdown]
# What to notice: the step is called with a level and nothing else, so
# the tables are found by the level's identity, `id(level)`; an n-gram
# never seen (`count` 0) has nothing to discount; and since no $D_k$
# exceeds $k$, no count goes below zero. The subclass keeps
# `NGramModel`'s continuation counts below the top order (it is a
# Kneser-Ney model) and swaps only the step. Every distribution must
# still sum to 1, for a context seen in training and for nonsense:

# %%
max_order = pick(smoke=6, book=10)
counts = NGramCounts(train_text, max_order)
modified_step = modified_kneser_ney(counts)
for order in (2, max_order):
    for text in ("", "ROMEO:\nWhat light through yonder", "zqzqzqzqz"):
        distribution = ModifiedKneserNey(counts, order,
                                         modified_step).distribution(text)
        assert abs(distribution.sum() - 1) < 1e-9
top_level = counts.raw[max_order]
top_discounts = modified_discounts(top_level)
assert np.isclose(top_discounts[0], top_level.discount)  # D1 = Y = D
print(f"order {max_order}: D = {top_level.discount:.3f}; "
      "D1, D2, D3+ = " + ", ".join(f"{d:.3f}" for d in top_discounts))

# %%
#| echo: false
#| label: fig-ch10-modified-kn
#| fig-cap: Interpolated Kneser-Ney with one discount and modified Kneser-Ney with three, counted on the training text and scored on validation, by order (left, from order 3, where the gap becomes visible at this scale), and the second's loss minus the first's at every order (right).
curves = {"interpolated": by_order(counts, val_text, "kneser_ney"),
          "modified": [ModifiedKneserNey(counts, order, modified_step)
                       .nats_per_char(val_text)
                       for order in range(1, max_order + 1)]}
orders = np.arange(1, max_order + 1)
gain = np.array(curves["modified"]) - np.array(curves["interpolated"])
fig, (by_n, gap_axes) = plt.subplots(1, 2, figsize=(6.2, 2.7))
for (name, curve), marker in zip(curves.items(), "os"):
    by_n.plot(orders[2:], curve[2:], marker=marker, markersize=4,
              label=f"{name} Kneser-Ney")
by_n.set_xlabel("order n")
by_n.set_ylabel("nats per character")
by_n.legend(fontsize=8)
gap_axes.bar(orders, gain, color="C2")
gap_axes.axhline(0, color="0.3", linewidth=0.8)
gap_axes.set_xlabel("order n")
gap_axes.set_ylabel("difference (nats/char)")
by_n.set_xticks(orders[2:])
gap_axes.set_xticks(orders)
fig.tight_layout()

# %%
#| echo: false
best = {name: 1 + int(np.argmin(curve)) for name, curve in curves.items()}
best_loss = {name: min(curve) for name, curve in curves.items()}
better = [int(n) for n in orders[gain < -1e-12]]
if better == list(range(2, max_order + 1)):
    modified_where = f"at every order from 2 to {max_order}"
    if np.all(np.diff(gain[1:]) < 0):
        modified_where += ", and by more the longer the context"
elif better:
    modified_where = ("at orders " + ", ".join(map(str, better))
                      + f" of the {max_order}")
else:
    modified_where = "at no order"
if np.all(np.diff(top_discounts) > 0):
    discount_story = (
        "an n-gram seen twice or more gives up more of its count than "
        "the single discount takes, and the extra goes to the shorter "
        "context")
else:
    discount_story = "the three do not grow with the count here"
rise = {name: curve[-1] - min(curve) for name, curve in curves.items()}
network_gap = whole_losses.mean() - best_loss["modified"]
if network_gap > 0:
    network_words = (
        " It also moves the bar for the network: the small model's "
        f"{whole_losses.mean():.3f} is {network_gap:.3f} nats per "
        "character above modified Kneser-Ney at its best order (an order "
        "read off the validation curve itself, so a little optimistic)")
else:
    network_words = (
        " The small model, at "
        f"{whole_losses.mean():.3f}, stays {-network_gap:.3f} nats per "
        "character below even this counting model")
if max(best.values()) < max_order:
    rise_words = (f", and past its best order it gives back only "
                  f"{rise['modified']:.3f} by order {max_order}, against "
                  f"{rise['interpolated']:.3f}")
else:
    rise_words = ""
single = sorted({n for levels in (counts.raw, counts.continuation)
                 for n, level in levels.items()
                 if np.all(modified_discounts(level) == level.discount)})
if single == [1]:
    fallback_words = (
        f"that happens only at order 1, among the {len(counts.vocab)} "
        "single characters, where the two smoothings are the same model")
else:
    fallback_words = ("that happens at orders "
                      + ", ".join(map(str, single)))

# %% [markdown]
# $D_1$ is always the single discount, since $1 - 2Y n_2/n_1 = Y$ (the
# assertion); the other two are new. At order {{ max_order }} they are
# {{ top_discounts[0]:.2f }}, {{ top_discounts[1]:.2f }} and
# {{ top_discounts[2]:.2f }}: {{ discount_story }}. Where the counts of
# counts cannot support three estimates, because one of $n_1$ to $n_3$
# is zero or a discount comes out negative or above its count, all
# three fall back to $D$; {{ fallback_words }}.
#
# Modified Kneser-Ney scores better {{ modified_where }}
# (@fig-ch10-modified-kn). Its best, {{ best_loss['modified']:.3f }}
# nats per character at order {{ best['modified'] }}, is
# {{ best_loss['interpolated'] - best_loss['modified']:.3f }} below
# interpolated Kneser-Ney's best, {{ best_loss['interpolated']:.3f }}
# at order {{ best['interpolated'] }}{{ rise_words }}. The long
# contexts are where most
# n-grams are seen a few times, and where one discount fits them worst.
# Chen & Goodman (1998) found modified Kneser-Ney the best of the
# smoothings they compared on word n-grams; it holds for characters
# too.{{ network_words }}.
#
# ## Exercise 10.3
#
# The best Kneser-Ney order is the one "Baselines" chose on held-out
# training text, kept fixed here so that only the amount of text
# changes; bz2 is primed with the same prefix of the training text.

# %%
#| label: tbl-ch10-data-size
#| tbl-cap: The best Kneser-Ney n-gram and bz2, fitted on (primed with) the first part of the training text and scored on the validation split, in nats per character.
kn_order = baselines["orders"]["kneser_ney"]
vocab = vocabulary(train_text)
size_rows = []
for share in (0.1, 0.25, 0.5, 0.75, 1.0):
    prefix = train_text[:int(share * len(train_text))]
    kn = NGramModel(NGramCounts(prefix, kn_order, vocab), kn_order,
                    "kneser_ney").nats_per_char(val_text)
    squeeze = COMPRESSORS["bz2"]
    bz2_bits = 8 * (len(squeeze((prefix + val_text).encode()))
                    - len(squeeze(prefix.encode()))) / len(val_text)
    size_rows.append((f"{share:.0%}", len(prefix), kn,
                      bz2_bits * math.log(2)))
Table(size_rows, ["share", "characters", f"Kneser-Ney, order {kn_order}",
                  "bz2"], digits=3)

# %%
#| echo: false
kn_losses = np.array([row[2] for row in size_rows])
bz2_losses = np.array([row[3] for row in size_rows])
shares = [row[0] for row in size_rows]
block_seen = (len(train_text) + len(val_text)) % 900_000 - len(val_text)
whole_prefix = [row[1] + len(val_text) <= 900_000 for row in size_rows]
fair = max(i for i, seen in enumerate(whole_prefix) if seen)
kn_gain = kn_losses[0] - kn_losses[fair]
bz2_gain = bz2_losses[0] - bz2_losses[fair]
needs_more = ("the n-gram model needs more text" if kn_gain > bz2_gain
              else "bz2 gains more from more text")
ahead = kn_losses < bz2_losses
if ahead.all() or not ahead.any():
    crossing = (f"{'Kneser-Ney' if ahead[0] else 'bz2'} is ahead at every "
                "size, so the two do not cross in this range")
else:
    switch = int(np.argmax(ahead != ahead[0]))
    crossing = (f"{'Kneser-Ney' if ahead[0] else 'bz2'} is ahead up to "
                f"{shares[switch - 1]} of the text, and the two cross "
                f"between {shares[switch - 1]} and {shares[switch]}")
    if not whole_prefix[switch]:
        crossing += (
            f". In the {shares[switch]} row, though, bz2 no longer sees "
            "its whole prefix: its 900 kB blocks put the validation split "
            f"with only about the last {block_seen:,} characters of it "
            "(the block effect of \"Baselines\"), and bz2 scores "
            f"{bz2_losses[switch] - bz2_losses[fair]:.3f} nats worse than "
            f"with {shares[fair]}. Part of the crossing is the blocks; a "
            "bz2 that saw everything would cross later, if at all")
openers = speech_openers(train_text)
known = {line for _, line in openers} & {
    line for _, line in speech_openers(val_text)}
first_spoken = {line: min(start for start, other in openers
                          if other == line) for line in known}
late_share = shares[-2]
late_names = {line for line, start in first_spoken.items()
              if start >= size_rows[-2][1]}
late_speeches = sum(line in late_names
                    for _, line in speech_openers(val_text))
last_step = kn_losses[-2] - kn_losses[-1]
step_before = kn_losses[-3] - kn_losses[-2]
if last_step > step_before:
    late_text = (
        f" Kneser-Ney's last step, from {late_share} to all of the text, "
        f"is worth {last_step:.3f} nats, more than the step before it "
        f"({step_before:.3f}), and not for the amount alone: the last "
        "part of the training text opens the play that the validation "
        f"split continues. Of the {len(known)} speakers of the split "
        f"whom the training text knows, {len(late_names)} first speak "
        f"after its first {late_share}, and they open {late_speeches:,} "
        f"of the split's {len(speech_openers(val_text)):,} speeches. "
        "Which text a model has seen matters as well as how much.")
else:
    late_text = ""

# %% [markdown]
# From a tenth of the training text to {{ shares[fair] }} of it (the
# largest prefix that bz2 still sees whole), Kneser-Ney improves by
# {{ kn_gain:.3f }} nats per character and bz2 by {{ bz2_gain:.3f }}:
# {{ needs_more }}. A context of {{ kn_order - 1 }} characters must have
# been seen several times before its counts say much, while bz2 models
# each block afresh and gets much of what it can from the text it is
# coding. {{ crossing }}.{{ late_text }} More text helps a compressor
# only as far as its window or block reaches; it helps the n-gram model
# all the way.
#
# ## Exercise 10.4
#
# Start a second set of windows half a context after each of chapter 7's,
# and keep only the second half of the losses of both sets. Together the
# second halves cover all but the first {{ half + 1 }} characters of the
# split (and a tail shorter than a window), each exactly once (the
# assertion).

# %%
half = context // 2
shifted = range(half, len(val_ids) - context, context)
shifted_losses = nats(window_logits(val_ids, shifted),
                      targets_of(val_ids, shifted))
sliding = np.concatenate([whole_losses[:, half:], shifted_losses[:, half:]])
scored = np.concatenate([np.arange(start + half + 1, start + context + 1)
                         for start in [*whole, *shifted]])
assert np.array_equal(np.sort(scored), half + 1 + np.arange(len(scored)))
non_overlapping = whole_losses.mean()
last_half = whole_losses[:, half:].mean()  # chapter 7's windows
print(f"non-overlapping windows:        {non_overlapping:.4f} nats/char")
print(f"sliding by half, second halves: {sliding.mean():.4f}")
print(f"last half of positions only:    {last_half:.4f}")

# %%
#| echo: false
shifted_half = shifted_losses[:, half:].mean(axis=1)
whole_half = whole_losses[:, half:].mean(axis=1)
half_gap = shifted_half.mean() - whole_half.mean()
signed_gap = f"{half_gap:+.4f}".replace("-", "\u2212")
half_error = 1.96 * math.sqrt(shifted_half.var() / len(shifted_half)
                              + whole_half.var() / len(whole_half))
if abs(half_gap) < half_error:
    half_agreement = (
        "The two sets of second halves differ by "
        f"{signed_gap} nats, inside a 95% interval of "
        f"± {half_error:.3f}, as they should: they are the same kind of "
        "prediction on different characters")
else:
    half_agreement = (
        "The two sets of second halves differ by "
        f"{signed_gap} nats, more than a 95% interval of "
        f"± {half_error:.3f} allows, so the characters that fall in the "
        "first halves of chapter 7's windows are harder or easier than "
        "the rest")
sliding_gap = non_overlapping - sliding.mean()
sliding_side = "below" if sliding_gap > 0 else "above"
tail_gap = abs(sliding.mean() - last_half)
tail_words = f"within {tail_gap:.4f} of"

# %% [markdown]
# Scored with at least half a context, the model's loss is
# {{ sliding.mean():.4f }} nats per character,
# {{ abs(sliding_gap):.4f }} {{ sliding_side }} the non-overlapping
# {{ non_overlapping:.4f }}, and {{ tail_words }} the mean over the last
# half of positions in @fig-loss-by-position, {{ last_half:.4f }}. That
# agreement is expected: both numbers average predictions made with
# {{ half + 1 }} to {{ context }} characters of context, and half of the
# sliding number's characters are the other's. {{ half_agreement }}.
# So the mean over the last half of positions, which costs nothing
# beyond the standard evaluation, already estimates the loss of the
# model in use; the sliding evaluation costs
# twice the forward passes and buys a number from every character, with
# an interval about $\sqrt 2$ narrower.
#
# ## Exercise 10.5
#
# The loss as a function of $\beta = 1/T$ is convex (a log-sum-exp of
# $\beta z$ minus the linear $\beta z_y$), so a golden-section search on
# $\beta$ finds its minimum. The temperature is fitted on the first half
# of chapter 7's windows and judged on the second.

# %%
def best_temperature(logits: np.ndarray, targets: np.ndarray,
                     steps: int = 30) -> float:
    """The T that minimises the mean loss of logits / T, searched as
    beta = 1/T in [0.25, 4] by golden section."""
    def loss(beta: float) -> float:
        return nats(beta * logits, targets).mean()

    low, high, ratio = 0.25, 4.0, (math.sqrt(5) - 1) / 2
    for _ in range(steps):
        left = high - ratio * (high - low)
        right = low + ratio * (high - low)
        if loss(left) < loss(right):
            high = right
        else:
            low = left
    return 2 / (low + high)


def confidence(logits: np.ndarray) -> np.ndarray:
    """The probability of the likeliest id at every position."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return 1 / np.exp(shifted).sum(axis=-1)


split = len(whole_logits) // 2
fitted_temperature = best_temperature(whole_logits[:split],
                                      whole_targets[:split])
test_logits, test_targets = whole_logits[split:], whole_targets[split:]
top_right = test_logits.argmax(axis=-1) == test_targets
print(f"T = {fitted_temperature:.3f}, fitted on {split} windows")

# %%
#| label: tbl-ch10-temperature
#| tbl-cap: The small model on the second half of the validation windows, as trained (T = 1) and with the temperature fitted on the first half. Top-1 accuracy cannot change; the loss and the calibration can.
temperature_rows = []
for temperature in (1.0, fitted_temperature):
    scaled = test_logits / temperature
    top = confidence(scaled)
    temperature_rows.append((
        f"{temperature:.3f}", float(nats(scaled, test_targets).mean()),
        expected_calibration_error(top, top_right), float(top.mean()),
        float(top_right.mean())))
Table(temperature_rows, ["T", "loss (nats/char)", "ECE (10 bins)",
                         "mean confidence", "accuracy"], digits=4)

# %%
#| echo: false
loss_change = temperature_rows[1][1] - temperature_rows[0][1]
signed_change = f"{loss_change:+.4f}".replace("-", "\u2212")
ece_before, ece_after = temperature_rows[0][2], temperature_rows[1][2]
temperature_direction = ("softens" if fitted_temperature > 1
                         else "sharpens")
confident_before = temperature_rows[0][3]
if confident_before > top_right.mean():
    leaning = (f"; as trained it is overconfident, claiming "
               f"{confident_before:.1%} on average and right "
               f"{top_right.mean():.1%} of the time")
else:
    leaning = (f"; as trained it is underconfident, claiming "
               f"{confident_before:.1%} on average and right "
               f"{top_right.mean():.1%} of the time")
if ece_after < ece_before / 2:
    ece_story = (f"falls from {ece_before:.4f} to {ece_after:.4f}, to "
                 "less than half, as one temperature did for the "
                 "networks of Guo et al. (2017)")
elif ece_after < ece_before:
    ece_story = (f"falls from {ece_before:.4f} to {ece_after:.4f}, less "
                 "than the several-fold cut Guo et al. (2017) saw for "
                 "their networks: there was little to fix")
else:
    ece_story = (f"rises from {ece_before:.4f} to {ece_after:.4f}: the "
                 "temperature minimises the loss, not a binned error, and "
                 "the model was close to calibrated already")

# %% [markdown]
# The fitted temperature is {{ fitted_temperature:.3f }}: it
# {{ temperature_direction }} the model's distributions{{ leaning }}.
# On the held-out half the loss changes by {{ signed_change }} nats
# per character, and the expected calibration error {{ ece_story }}.
# One parameter fitted on a loss the model was already trained to
# minimise can only move it a little; what it can fix is a confidence
# that is off by the same factor everywhere. Scaling cannot change which
# character is likeliest, so the accuracy stays at
# {{ top_right.mean():.1%}} either way.
#
# ## Exercise 10.6
#
# Carlini et al. (2023) call a training sequence extractable when the
# model, given the text before it, continues it exactly. To change only
# the amount of prompt, the {{ target_length }} characters to recite
# are the same for
# every prompt length: each passage is {{ span }} characters, the last
# {{ target_length }} are the target, and the prompt is the 16, 64 or
# 128 characters before them (so the longest prompt is the passage's
# first 128). All passages of one prompt length are decoded together,
# with
# `generate_tokens`' schedule (a full window restarts from its last
# half), which the assertion checks row by row.

# %%
def greedy_batch(prompts: np.ndarray, new_tokens: int) -> np.ndarray:
    """Greedy continuations (rows, new_tokens) of equal-length prompts,
    decoded together as generate_tokens decodes each."""
    ids, keep = prompts.astype(np.int32), context // 2
    start, caches = max(0, ids.shape[1] - context), None
    for _ in range(new_tokens):
        if ids.shape[1] - start > context:  # the window is full
            start, caches = ids.shape[1] - keep, None
        if caches is None:
            caches = make_caches(model)
            logits = forward_cached(model, mx.array(ids[:, start:]), caches)
        else:
            logits = forward_cached(model, mx.array(ids[:, -1:]), caches)
        chosen = np.array(mx.argmax(logits[:, -1], axis=-1))
        ids = np.column_stack([ids, chosen.astype(np.int32)])
    return ids[:, prompts.shape[1]:]


passage_count, target_length = pick(smoke=6, book=50), 50
prompt_lengths = (16, 64, 128)
span = max(prompt_lengths) + target_length
passages = {}
for name, source in (("training", train_text), ("validation", val_text)):
    starts = np.linspace(0, len(source) - span, passage_count).astype(int)
    passages[name] = np.array([tokenizer.encode(source[s:s + span])
                               for s in starts])
recited = {}
for name, rows in passages.items():
    for length in prompt_lengths:
        prompts = rows[:, span - target_length - length:-target_length]
        recited[name, length] = greedy_batch(prompts, target_length)
        if name == "training":
            for row in (0, passage_count - 1):
                assert recited[name, length][row].tolist() == list(
                    generate_tokens(model, prompts[row].tolist(),
                                    target_length, temperature=0))

# %%
#| label: tbl-ch10-extraction
#| tbl-cap: Greedy continuations of 50 characters after prompts of three lengths, for passages of the training text and of the validation text. Exact, how many of the passages come back character for character; right, the mean number of characters before the first miss.
def characters_right(name: str, length: int) -> np.ndarray:
    """How many characters of each continuation match before a miss."""
    truth = passages[name][:, -target_length:]
    hits = recited[name, length] == truth
    return np.cumprod(hits, axis=1).sum(axis=1)


right_counts = {key: characters_right(*key) for key in recited}
exact = {key: int(np.sum(value == target_length))
         for key, value in right_counts.items()}
Table([(length, exact["training", length], exact["validation", length],
        right_counts["training", length].mean(),
        right_counts["validation", length].mean())
       for length in prompt_lengths],
      ["prompt", "exact, training", "exact, validation",
       "right, training", "right, validation"], digits=1)

# %%
best_row = int(np.argmax(right_counts["training", 128]))
print("prompt ends " + repr(tokenizer.decode(
    passages["training"][best_row, -target_length - 40:-target_length])))
print("model:      " + repr(tokenizer.decode(
    recited["training", 128][best_row])))
print("training:   " + repr(tokenizer.decode(
    passages["training"][best_row, -target_length:])))

# %%
#| echo: false
train_right = right_counts["training", 128].mean()
val_right = right_counts["validation", 128].mean()
extraction_exact = sum(exact["training", n] for n in prompt_lengths)
validation_exact = sum(exact["validation", n] for n in prompt_lengths)
if extraction_exact == 0:
    extraction_words = (
        "No training passage comes back exactly at any prompt length: "
        "by Carlini et al.'s definition, nothing here is extractable")
else:
    extraction_words = (
        f"{extraction_exact} of the "
        f"{passage_count * len(prompt_lengths)} prompted training "
        f"continuations come back exactly, against {validation_exact} "
        "for validation passages")
ones = np.ones(passage_count)
draws = (bootstrap_ratios(right_counts["training", 128], ones, seed=1)
         - bootstrap_ratios(right_counts["validation", 128], ones, seed=2))
low, high = np.quantile(draws, [0.025, 0.975])
recital_gap = (f"{train_right - val_right:+.1f} characters, 95% interval "
               f"{low:+.1f} to {high:+.1f}").replace("-", "\u2212")
if low > 0:
    recital_words = (
        f"The model recites text it trained on further ({recital_gap}, "
        "a bootstrap over passages): a trace of memorisation")
elif high < 0:
    recital_words = (
        "If anything the model continues validation passages further "
        f"({recital_gap}, a bootstrap over passages), so it shows no "
        "sign of reciting its training text")
else:
    recital_words = (
        f"The difference, {recital_gap} (a bootstrap over passages), is "
        "no evidence either way: what the model gets right is what any "
        "passage of Shakespeare makes predictable, not what it learned "
        "by heart")
record, _, _ = read_checkpoint(latest_checkpoint(
    artifact_path("10_evaluation_02/small/tokenizer.txt").parent),
    optimizer=False)
passes = (record["step"] * record["train"]["batch_size"] * context
          / len(train_text))

# %% [markdown]
# {{ extraction_words }}. After a 128-character prompt the model matches
# {{ train_right:.1f }} characters of a training passage's continuation
# before its first miss, on average, and {{ val_right:.1f }} of a
# validation passage's. {{ recital_words }}. The best recital, printed
# above, runs {{ right_counts['training', 128][best_row] }} characters.
# Carlini et al. found that extraction grows with the model's size,
# with how often a sequence repeats in the training data and with the
# length of the prompt. This model has
# {{ count_parameters(model.config) / 1e6:.1f }} million parameters and
# saw each passage about {{ passes:.0f }} times in training: small on
# the first two counts.
#
# ## Exercise 10.7
#
# Prefix doubling (Manber & Myers, 1993) sorts the suffixes by their
# first character, then by their first 2, 4, 8, ... characters: the rank
# of a suffix by its first $2k$ characters is the pair of ranks, by $k$
# characters, of itself and of the suffix $k$ further on. Each round is
# one `np.argsort` of pairs packed into one integer, and the rounds stop
# when every suffix has its own rank.

# %%
def suffix_array(text: str) -> tuple[np.ndarray, int]:
    """The starts of text's suffixes in sorted order, by prefix doubling,
    and the number of rounds it took."""
    chars = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    rank = np.unique(chars, return_inverse=True)[1].astype(np.int64) + 1
    size, width, rounds = len(rank), 1, 0
    while True:
        rounds += 1
        after = np.zeros(size, dtype=np.int64)  # 0: past the end
        after[:size - width] = rank[width:]
        keys = rank * (size + 1) + after
        order = np.argsort(keys)
        new = np.r_[True, keys[order][1:] != keys[order][:-1]]
        rank[order] = np.cumsum(new)
        if rank[order[-1]] == size:
            return order, rounds
        width *= 2


word = "mississippi"
assert suffix_array(word)[0].tolist() == sorted(range(len(word)),
                                                key=lambda i: word[i:])

# %% [markdown]
# The sorted order puts suffixes with a long common prefix next to each
# other, so the training suffix that shares the most with `sample[i:]`
# is a neighbour of the place where `sample[i:]` would be inserted:
# one binary search per position, comparing only as many characters as
# the query has.

# %%
def shared(first: str, second: str) -> int:
    """The length of the common prefix of two strings."""
    return len(os.path.commonprefix([first, second]))


def suffix_match_lengths(sample: str, corpus: str,
                         suffixes: list[int]) -> np.ndarray:
    """match_lengths by binary search in corpus's suffix array."""
    lengths = np.zeros(len(sample), dtype=np.int64)
    for i in range(len(sample)):
        query = sample[i:]
        at = bisect.bisect_left(
            suffixes, query, key=lambda s: corpus[s:s + len(query)])
        lengths[i] = max(shared(query, corpus[s:s + len(query)])
                         for s in suffixes[max(at - 1, 0):at + 1])
    return lengths

# %%
#| label: tbl-ch10-suffix-array
#| tbl-cap: Matching statistics of the greedy continuations of exercise 10.6 against the training text, with chapter 10's match_lengths (a str.find per step) and with a suffix array; the same answers (checked), different costs.
corpus = train_text[:pick(smoke=100_000, book=None)]  # smoke: seconds
samples = [tokenizer.decode(row.tolist())
           for key in (("training", 128), ("validation", 128))
           for row in recited[key]]
positions = sum(map(len, samples))
begin = time.perf_counter()
reference = [match_lengths(sample, corpus) for sample in samples]
find_seconds = time.perf_counter() - begin
begin = time.perf_counter()
suffixes, rounds = suffix_array(corpus)
suffix_list = suffixes.tolist()
build_seconds = time.perf_counter() - begin
begin = time.perf_counter()
found = [suffix_match_lengths(sample, corpus, suffix_list)
         for sample in samples]
search_seconds = time.perf_counter() - begin
assert all(map(np.array_equal, found, reference))
Table([("match_lengths", 0.0, "", 1e6 * find_seconds / positions),
       ("suffix array", build_seconds, f"{suffixes.nbytes / 1e6:.1f}",
        1e6 * search_seconds / positions)],
      ["method", "build (s)", "index (MB)", "µs per position"], digits=2)

# %%
#| echo: false
per_find = find_seconds / positions
per_suffix = search_seconds / positions
break_even = build_seconds / (per_find - per_suffix)
elapsed = time.perf_counter() - started

# %% [markdown]
# On the {{ positions:, }} positions of the {{ len(samples) }}
# continuations the two methods agree everywhere (the assertion). The
# suffix array of the {{ len(corpus):, }} training characters took
# {{ rounds }} rounds and {{ build_seconds:.1f }} seconds to build and
# holds {{ suffixes.nbytes / 1e6:.0f }} MB, 8 bytes a character (32-bit
# starts would halve it). After $r$ rounds the ranks order the suffixes
# by their first $2^r$ characters, and the rounds stop when those tell
# every suffix apart; so {{ rounds }} rounds also say that the longest
# substring the training text holds twice is {{ 2 ** (rounds - 1) }} to
# {{ 2 ** rounds - 1 }} characters long. Once built, the array answers a
# position in {{ 1e6 * per_suffix:.0f }} µs, against
# {{ 1e6 * per_find:.0f }} µs for `str.find`, which scans the training
# text on every miss: it pays for itself after about
# {{ break_even:,.0f }} positions. For a corpus a thousand times larger,
# `str.find` would cost a thousand times more per position, and the
# binary search ten more steps. The whole part ran in {{ elapsed:.0f }} seconds.
