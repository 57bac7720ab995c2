# %% [markdown]
# # Where the loss is
#
# A validation loss is the mean of one prediction per character of the
# split, and a mean hides where the nats go. This section takes the
# small model's {{ losses.size:, }} predictions on the validation split
# apart four ways. By position in the window: the first character a
# window predicts costs {{ position_loss[0]:.2f }} nats and a character
# in its second half {{ tail_loss:.2f }}, so the standard evaluation
# reports a model with less context than the one you use. By kind of
# character:
# {{ costliest_class }} cost the most per character, and
# {{ heaviest_class }} carry the largest share of the total. By line: the
# hardest lines of the split are the ones full of words the training
# text rarely or never contains. And last, whether the model's
# probabilities mean what they say: when it gives its favourite
# character 70%, is that character right 70% of the time?

# %%
#| echo: false
#| default_exp evaluate
import re
from collections import Counter

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.cli import load_model
from mlxllm.data import load_corpus, split_train_val
from mlxllm.evaluate import NGramCounts, by_order, token_losses
from mlxllm.evaluate import whole_windows

train_text, val_text = split_train_val(load_corpus())
val_text = val_text[:pick(smoke=8192, book=None)]  # smoke: seconds
folder = artifact_path("10_evaluation_02/small/tokenizer.txt").parent
model, tokenizer = load_model(folder)
val_ids = np.array(tokenizer.encode(val_text))
assert len(val_ids) == len(val_text)  # one id per character
context = model.config.context
losses = token_losses(model, val_ids)
print(f"{losses.shape[0]:,} windows of "
      f"{context}, {losses.mean():.4f} nats/char")

# %% [markdown]
# That is the small model from the last checkpoint of its run and the
# previous section's `token_losses` on the validation split: one loss per
# predicted character, one row per window. Every measurement below is an
# average over some subset of this array, so each adds up to the
# validation loss when its subsets are weighted by their sizes.
#
# ## How much context helps
#
# Chapter 7's evaluation cuts the split into windows of the model's
# context, {{ context }} characters, and scores every position of each.
# The prediction at position $i$ of a window (counting from 0) sees the
# $i + 1$ characters before it and no more, so the first positions
# predict nearly blind and the last ones with the whole context. The mean
# of each column of `losses` is the loss as a function of the context the
# model had.

# %%
position_loss = losses.mean(axis=0)
position_error = 1.96 * losses.std(axis=0) / np.sqrt(len(losses))
tail_loss = losses[:, context // 2:].mean()
assert np.isclose(position_loss.mean(), losses.mean())
counts = NGramCounts(train_text, 8)
counted = by_order(counts, val_text, "kneser_ney")[1:]  # 1 to 7 chars
print(f"1 character of context:     {position_loss[0]:.3f} nats/char")
print(f"{context} characters of context: {position_loss[-1]:.3f}")
print(f"second half of the window:  {tail_loss:.3f}")
print(f"whole windows (chapter 7):  {losses.mean():.3f}")

# %% [markdown]
# What to notice:
#
# - The assertion: the position means average back to the validation
#   loss, because every window has the same {{ context }} positions.
# - `position_error` is a 95% interval for each position's mean: with
#   {{ len(losses):, }} windows, one position's mean is known to about
#   ±{{ np.median(position_error):.2f }} nats, so wiggles smaller than
#   that between neighbouring positions are noise.
# - `counted` scores the interpolated Kneser-Ney models of the Baselines
#   section at orders 2 to 8, that is with 1 to 7 characters of context:
#   what counting does with exactly the context the network has at its
#   first positions.
#
# @fig-loss-by-position draws the curve.

# %%
#| echo: false
#| label: fig-loss-by-position
#| fig-cap: Mean loss of the small model at each position of its windows, against the characters of context it had there (logarithmic), with a 95% band for each mean. Squares, Kneser-Ney n-grams given the same number of characters (orders 2 to 8); dashed, the mean over whole windows that chapter 7's evaluation reports.
chars = np.arange(1, context + 1)
fig, ax = plt.subplots(figsize=(5.2, 2.8))
ax.fill_between(chars, position_loss - position_error,
                position_loss + position_error, color="C0", alpha=0.3,
                linewidth=0)
ax.plot(chars, position_loss, color="C0", label="small model")
ax.plot(np.arange(1, len(counted) + 1), counted, "s", color="C1",
        markersize=4, label="Kneser-Ney, same context")
ax.axhline(losses.mean(), color="0.3", linestyle="--", linewidth=0.9,
           label="mean over whole windows")
ax.set_xscale("log", base=2)
ticks = 2 ** np.arange(int(np.log2(context)) + 1)
ax.set_xticks(ticks, [str(tick) for tick in ticks])
ax.set_xlabel("characters of context")
ax.set_ylabel("loss (nats/char)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# To read off how much context buys most of the gain, group the
# positions in doubling bands and measure each band's share of the way
# from the first position's loss down to the second half's:

# %%
#| echo: false
starts = [1, 2] + [2 ** k + 1 for k in range(1, int(np.log2(context)))]
ends = [start - 1 for start in starts[1:]] + [context]
gain = position_loss[0] - tail_loss
band_share = {}
for first, last in zip(starts, ends):
    band_loss = position_loss[first - 1:last].mean()
    band_share[first, last] = (position_loss[0] - band_loss) / gain
    print(f"{first:3d} to {last:3d} characters: {band_loss:.3f} nats/char, "
          f"{band_share[first, last]:4.0%} of the gain")

# %%
#| echo: false
most_gain = next((band for band, share in band_share.items()
                  if share >= 0.9), (starts[-1], context))
two_chars_share = band_share[2, 2]
network_wins = int(np.sum(position_loss[:len(counted)] < counted))
if network_wins == 0:
    short_contexts = (
        "At every one of those short contexts the Kneser-Ney model beats "
        "the network: with one to seven characters, counting a megabyte "
        "of text gives a better guess than this network makes with the "
        "same characters")
elif network_wins == len(counted):
    short_contexts = (
        "The network beats the Kneser-Ney model at every one of those "
        "short contexts, where counting a megabyte of text is at its "
        "strongest")
else:
    short_contexts = (
        f"The network beats the Kneser-Ney model at {network_wins} of "
        f"those {len(counted)} short contexts and loses at the others, "
        "where counting a megabyte of text gives the better guess from "
        "the same handful of characters")
best_counted = min(counted)
if tail_loss < best_counted:
    long_contexts = (
        f"With more context than any n-gram can count, the network "
        f"goes on to {tail_loss:.2f} in the second half of its windows, "
        f"below the best n-gram's {best_counted:.2f}: that is where it "
        "earns its keep")
else:
    long_contexts = (
        f"Even with its whole window the network stays above the best "
        f"n-gram ({tail_loss:.2f} in the second half of its windows "
        f"against {best_counted:.2f}): it has not yet learned to use a "
        "long context as well as counting uses a short one")
versus_counting = f"{short_contexts}. {long_contexts}"
overstated = losses.mean() - tail_loss
last_bands = (losses[:, starts[-1] - 1:].mean(axis=1)
              - losses[:, starts[-2] - 1:ends[-2]].mean(axis=1))
late_drop = -last_bands.mean()
late_error = 1.96 * last_bands.std() / np.sqrt(len(last_bands))
if late_drop > late_error:
    late_gain = (
        f"The rest of the window adds less, but the model still finds "
        f"use for all of it: the last band, {starts[-1]} to {context} "
        f"characters, is {late_drop:.3f} nats below the band before it "
        f"(± {late_error:.3f}, a 95% interval over windows)")
else:
    late_gain = (
        f"Beyond that the window adds little: between the last two "
        f"bands the loss changes by {-late_drop:+.3f} nats, inside its "
        f"95% interval of ± {late_error:.3f}")

# %% [markdown]
# With one character of context the model pays
# {{ position_loss[0]:.2f }} nats; with two it has already come
# {{ two_chars_share:.0%}} of the way to the second half's
# {{ tail_loss:.2f }}, and in the band of {{ most_gain[0] }} to
# {{ most_gain[1] }} characters at least 90%. The first few characters
# settle most of what a character-level model needs: which word it is
# inside, and how far through it. {{ late_gain }}. {{ versus_counting }}.
#
# This is the *early token curse* (Press et al., 2021): evaluation in
# non-overlapping windows scores every window's first characters almost
# without context. A model in use never works that way. When chapter 9's
# `generate_tokens` fills its window it keeps the latest half of it
# (`keep`, half the context by default) and goes on, so once a text is
# longer than the window, every character it writes is predicted from
# between half a window and a whole window of history, like the second
# halves measured here. The whole-window number, the mean over every
# position, {{ losses.mean():.3f }}, is therefore
# {{ abs(overstated):.3f }} nats per character
# ({{ abs(overstated) / tail_loss:.1%}})
# {{ "above" if overstated > 0 else "below" }} the loss of the model in
# use, estimated by the mean over the second halves of the windows. The
# honest fix costs compute: slide the windows by less than
# a context and score only each window's last positions, so that every
# character is predicted with a long history. The non-overlapping number
# remains the right one to compare runs with each other and with
# nanoGPT, which also averages over every position of its windows; just
# do not read it as the loss of the model in use.
#
# ## Which characters are hard
#
# The second cut is by what is predicted. `char_classes` (in
# `mlxllm/evaluate.py`; its code is not printed) sorts every
# character of a text into one of six classes: the lines that open a
# speech ("ROMEO:", and the odd "Pedant:"), first letters of words, the
# later letters of words, spaces, newlines, and everything else
# (punctuation). In this corpus every speech starts after an empty line
# with the speaker's name and a colon, which is how the function finds
# the names.

# %%
#| export
#| echo: false
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from mlxllm.model import GPT

CHAR_CLASSES = ("speaker name", "word start", "later letter", "space",
                "newline", "punctuation")


def speech_openers(text: str) -> list[tuple[int, str]]:
    """(offset, line) of each line that opens a speech, like "ROMEO:":
    a line ending in ':' that starts the text or follows an empty line."""
    openers, start, previous = [], 0, ""
    for line in text.split("\n"):
        if line.endswith(":") and not previous:
            openers.append((start, line))
        start, previous = start + len(line) + 1, line
    return openers


def char_classes(text: str) -> np.ndarray:
    """Each character's class, an index into CHAR_CLASSES: a word start is
    a letter after a non-letter; the speaker class covers the whole line
    of a speech opener, colon included."""
    chars = np.array(list(text), dtype="<U1")
    letters = np.char.isalpha(chars)
    after_letter = np.zeros_like(letters)
    after_letter[1:] = letters[:-1]
    classes = np.full(len(text), CHAR_CLASSES.index("punctuation"))
    classes[letters & ~after_letter] = CHAR_CLASSES.index("word start")
    classes[letters & after_letter] = CHAR_CLASSES.index("later letter")
    classes[chars == " "] = CHAR_CLASSES.index("space")
    classes[chars == "\n"] = CHAR_CLASSES.index("newline")
    for start, line in speech_openers(text):
        classes[start:start + len(line)] = CHAR_CLASSES.index("speaker name")
    return classes

# %% [markdown]
# What to notice: the classes are decided from the text alone, never from
# the model, so the same function sorts the losses of any character-level
# model, or of the n-gram baselines. An apostrophe counts as punctuation,
# so in "o'er" the "e" starts a word; every definition of a word has such
# corners, and this one is easy to state.
#
# The loss of predicting character $t$ goes to character $t$'s class: a
# space's loss is the model's uncertainty about where a word ends, a word
# start's is its uncertainty about which word comes next.

# %%
#| label: tbl-loss-by-class
#| tbl-cap: The small model's validation loss by the class of the character predicted; each class's share of the scored characters, its mean loss, and its share of the total loss. Sorted by share of the loss.
unscored = np.full(len(val_text) - 1 - losses.size, np.nan)
char_loss = np.concatenate([[np.nan], losses.ravel(), unscored])
scored = ~np.isnan(char_loss)
scored_class = char_classes(val_text)[scored]
scored_loss = char_loss[scored]
class_rows = []
for index, name in enumerate(CHAR_CLASSES):
    chosen = scored_class == index
    class_rows.append((name, chosen.mean(), scored_loss[chosen].mean(),
                       scored_loss[chosen].sum() / scored_loss.sum()))
class_rows.sort(key=lambda row: -row[3])
assert np.isclose(sum(row[1] * row[2] for row in class_rows), losses.mean())
Table([(name, f"{chars:.1%}", nats, f"{loss:.1%}")
       for name, chars, nats, loss in class_rows],
      ["class", "characters", "nats/char", "loss"], digits=2)

# %%
#| echo: false
class_nats = {row[0]: row[2] for row in class_rows}
word_start_nats = class_nats["word start"]
later_letter_nats = class_nats["later letter"]
_, later_letter_chars, _, later_letter_loss = next(
    row for row in class_rows if row[0] == "later letter")
plural = {"speaker name": "speaker names", "word start": "word starts",
          "later letter": "later letters", "space": "spaces",
          "newline": "newlines", "punctuation": "punctuation marks"}
costliest = max(class_nats, key=class_nats.get)
costliest_class = plural[costliest]
heaviest_class = plural[class_rows[0][0]]
letter_ratio = word_start_nats / later_letter_nats
if class_rows[0][0] == "later letter":
    heaviest_share = (
        f"so they carry the largest share of the loss, "
        f"{later_letter_loss:.0%}: cheaper than most, but many")
else:
    heaviest_share = (
        f"so they still carry {later_letter_loss:.0%} of the loss, and "
        f"{heaviest_class} carry the most of all, {class_rows[0][3]:.0%}")

# %% [markdown]
# The assertion checks that the classes cover every scored character
# exactly once: their means, weighted by their shares of the characters,
# give back the validation loss. The class mean (the table's middle
# column) and the class share tell different stories. Per character, {{ costliest_class }} cost the most,
# {{ class_nats[costliest]:.2f }} nats. A letter that starts a
# word costs {{ word_start_nats:.2f }} nats,
# {{ letter_ratio:.1f }} times a later letter of a word
# ({{ later_letter_nats:.2f }}): once a word has begun, its
# spelling mostly follows, and the real choice, which word, is made at
# its first letter. But later letters are
# {{ later_letter_chars:.0%}} of the text, {{ heaviest_share }}.
#
# Speaker names hold a lesson of their own. The validation split is the
# end of the corpus: the end of *The Taming of the Shrew*, then *The
# Tempest*. The training text holds the rest of *The Shrew* and none of
# *The Tempest*, so many of the names that open speeches here (Prospero,
# Miranda, Ariel) never open one in training. Split the speaker lines by
# whether their name does, and each line into its first letter and the
# rest:

# %%
#| echo: false
seen_speakers = {line for _, line in speech_openers(train_text)}
name_parts = {True: ([], []), False: ([], [])}
for start, line in speech_openers(val_text):
    span = char_loss[start:start + len(line)]
    if not np.isnan(span).any():
        first_letters, rest = name_parts[line in seen_speakers]
        first_letters.append(span[0])
        rest.extend(span[1:])
name_nats = {}
for seen, (first_letters, rest) in name_parts.items():
    name_nats[seen] = ((np.mean(first_letters), np.mean(rest))
                       if first_letters else (np.nan, np.nan))
    print(f"{'known' if seen else 'new':5} names: {len(first_letters):4} "
          f"lines; first letter {name_nats[seen][0]:.2f}, the rest "
          f"{name_nats[seen][1]:.2f} nats/char")

# %%
#| echo: false
openers = speech_openers(val_text)
new_speakers = len({line for _, line in openers} - seen_speakers)
new_name, new_name_lines = (Counter(
    line for _, line in openers if line not in seen_speakers).most_common(1)
    or [("", 0)])[0]
window_starts = [(start - 1) // context * context for start, _ in openers]
in_window = np.mean([line in val_text[window_start:start]
                     for window_start, (start, line)
                     in zip(window_starts, openers)])
first_gap = name_nats[False][0] - name_nats[True][0]
rest_gap = name_nats[False][1] - name_nats[True][1]
known_first, known_rest = name_nats[True]
new_first, new_rest = name_nats[False]
if abs(first_gap) < abs(rest_gap) / 2:
    name_story = (
        f"The first letter costs about the same either way "
        f"({known_first:.2f} and {new_first:.2f} nats): known name or "
        "not, the model has to guess who speaks next. The difference is "
        f"in the rest of the line: {known_rest:.2f} nats per character "
        f"once a known name has begun, {new_rest:.2f} for a new one")
else:
    name_story = (
        f"The first letter of a new name costs {new_first:.2f} nats "
        f"against {known_first:.2f} for a known one, and the rest of the "
        f"line {new_rest:.2f} nats per character against {known_rest:.2f}")

# %% [markdown]
# {{ new_speakers }} of the speaker names in the split are new.
# {{ name_story }}. A new name the model has to spell out like any rare
# word, even after {{ new_name.rstrip(':').title() }} has opened
# {{ new_name_lines }} speeches of the split. The model does not learn
# as it reads: it only looks back within its window, and only
# {{ in_window:.0%}} of the speaker lines find their name earlier in
# theirs.
#
# ## The hardest and easiest lines
#
# Averaging `char_loss` over each line of the split (lines of at least 20
# characters, not counting the newline, so that speaker names and short
# exclamations drop out) ranks the lines from easiest to hardest:

# %%
#| echo: false
line_rows = []
start = 0
for line in val_text.split("\n"):
    span = char_loss[start:start + len(line)]
    if len(line) >= 20 and not np.isnan(span).any():
        line_rows.append((float(span.mean()), line))
    start += len(line) + 1
line_rows.sort()
for loss, line in line_rows[:4]:
    print(f"{loss:.2f}  {line}")
print("...")
for loss, line in line_rows[-4:]:
    print(f"{loss:.2f}  {line}")

# %% [markdown]
# The lines at the top of the list, the easiest, are plain words in a
# common order; those at the bottom, the hardest, are heavy with names
# and, where the split has some, Latin. (A line that straddles the start of a window also pays a little
# extra, the early token curse again, but the two ends of the list are
# far apart.) To check the pattern beyond eight lines, count for each
# line the share of its words that occur fewer than five times in the
# training text, and compare the easiest twentieth of the lines with the
# hardest:

# %%
#| echo: false
train_words = Counter(re.findall(r"[a-z]+", train_text.lower()))


def rare_share(line: str, below: int = 5) -> float:
    """Share of a line's words seen fewer than `below` times in training."""
    words = re.findall(r"[a-z]+", line.lower())
    if not words:
        return 0.0
    return float(np.mean([train_words[word] < below for word in words]))


twentieth = max(1, len(line_rows) // 20)
rare = {name: np.mean([rare_share(line) for _, line in rows])
        for name, rows in (("easiest", line_rows[:twentieth]),
                           ("all", line_rows),
                           ("hardest", line_rows[-twentieth:]))}
for name, share in rare.items():
    print(f"{name:8} {share:6.1%} of words rare in training")

# %% [markdown]
# In the hardest {{ twentieth }} lines {{ rare['hardest']:.0%}} of the
# words are rare in the training text, against {{ rare['all']:.0%}} over
# all {{ len(line_rows):, }} lines and {{ rare['easiest']:.0%}} in the
# easiest {{ twentieth }}. A character model can spell a word it has
# seen often from its first few letters; a word it has seen a few times
# or never, it must spell out letter by letter, and it pays for each.
# This is the cheapest way to find what a model has not learned: sort
# its text by loss and read the costliest lines.
#
# ## Does it know when it is right?
#
# A model that predicts "e" with probability 0.7 makes a claim that can
# be checked: among all the times it says 0.7, the character should be
# right about 70% of the time. A model whose claims hold is *calibrated*.
# The loss rewards calibration, since the expected log-loss is lowest
# when the predicted distribution is the true one, but a model trained
# to a finite loss need not be calibrated, and Guo et al. (2017) found
# that modern image classifiers were, systematically, overconfident.
#
# The check needs the model's top choice at every position and whether
# it was right, so `top_predictions` runs the same windows as
# `token_losses` and keeps the probability of the likeliest token
# instead of the loss of the true one.

# %%
#| echo: false
#| export
def top_predictions(model: GPT, ids: np.ndarray,
                    batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The probability of the model's likeliest next token, and whether
    it was the true one, at every position token_losses scores: two
    (windows, context) arrays."""
    inputs, targets = whole_windows(ids, model.config.context)
    top_prob, correct = [], []
    for start in range(0, len(inputs), batch_size):
        logits = model(mx.array(inputs[start:start + batch_size]))
        logits = logits.astype(mx.float32)
        best = logits.max(axis=-1)
        top_prob.append(np.array(mx.exp(best - mx.logsumexp(logits, -1))))
        guess = np.array(mx.argmax(logits, axis=-1))
        correct.append(guess == targets[start:start + batch_size])
    return np.concatenate(top_prob), np.concatenate(correct)

# %% [markdown]
# The top probability is $e^{z_{\max} - \log\sum_j e^{z_j}}$, computed
# without materialising the softmax. Then the predictions go into ten
# equal bins of confidence, $(0, 0.1], (0.1, 0.2], \ldots$, and each bin
# compares its mean confidence with its share of right answers. The
# *expected calibration error* (ECE) is the mean gap, each bin weighted
# by its count (Naeini et al., 2015; Guo et al., 2017):
#
# $$\mathrm{ECE} = \sum_{b} \frac{n_b}{N}\,
#   \bigl|\mathrm{acc}_b - \mathrm{conf}_b\bigr|$$

# %%
#| export
#| echo: false
@dataclass
class Calibration:
    """Predictions binned by confidence: per bin, how many there are,
    their mean confidence and the share that was right (NaN if empty)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray


def calibration_table(confidence: np.ndarray, correct: np.ndarray,
                      bins: int = 10) -> Calibration:
    """Bin predictions into `bins` equal intervals (low, high] of [0, 1]
    by their confidence; 0 goes to the first bin."""
    confidence = np.ravel(confidence).astype(np.float64)
    correct = np.ravel(correct).astype(np.float64)
    if confidence.shape != correct.shape or not len(confidence):
        raise ValueError("need one `correct` per confidence, and at least "
                         f"one; got {len(confidence)} and {len(correct)}")
    if confidence.min() < 0 or confidence.max() > 1:
        raise ValueError("confidences are probabilities: keep them in "
                         "[0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence) - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, confidence, bins) / counts
        accuracy = np.bincount(which, correct, bins) / counts
    return Calibration(edges, counts, mean_confidence, accuracy)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray,
                               bins: int = 10) -> float:
    """The count-weighted mean |accuracy - confidence| over the bins."""
    table = calibration_table(confidence, correct, bins)
    filled = table.counts > 0
    gaps = np.abs(table.accuracy[filled] - table.confidence[filled])
    return float(np.sum(table.counts[filled] * gaps) / table.counts.sum())

# %% [markdown]
# `calibration_table` and `expected_calibration_error`, in the module,
# do exactly that: a confidence of exactly 0.1 falls in the first bin, as
# Guo et al.'s intervals have it, and an empty bin gets NaN rather than a
# made-up zero. On the small model:

# %%
top_prob, correct = top_predictions(model, val_ids)
assert np.allclose(losses[correct], -np.log(top_prob[correct]), atol=1e-4)
calibration = calibration_table(top_prob, correct)
ece = expected_calibration_error(top_prob, correct)
ece_15 = expected_calibration_error(top_prob, correct, bins=15)
print(f"top choice right: {correct.mean():.1%}; "
      f"mean confidence: {top_prob.mean():.1%}")
print(f"ECE, 10 bins: {ece:.4f}; 15 bins: {ece_15:.4f}")

# %% [markdown]
# The assertion ties the two passes together: where the top choice was
# right, the loss `token_losses` computed is minus the log of the top
# probability, so both functions scored the same windows in the same
# order. @fig-reliability is the *reliability diagram*: accuracy against
# confidence, bin by bin.

# %%
#| echo: false
#| label: fig-reliability
#| fig-cap: Reliability diagram of the small model's top choices on the validation split. Top: in each bin of confidence, the share of top choices that were right (bars), the bin's mean confidence (dots) and the diagonal where the two agree; a bar below its dot is overconfidence. Bottom: how many predictions fall in each bin, in thousands.
fig, (top, bottom) = plt.subplots(
    2, 1, figsize=(5.2, 3.8), sharex=True,
    gridspec_kw={"height_ratios": [3, 1]})
centres = (calibration.edges[:-1] + calibration.edges[1:]) / 2
width = 0.9 * np.diff(calibration.edges)
top.bar(centres, calibration.accuracy, width, color="C0",
        label="share right")
top.plot(centres, calibration.confidence, "o", color="C5",
         markersize=4, label="mean confidence")
top.plot([0, 1], [0, 1], "--", color="0.3", linewidth=0.9)
top.set_ylabel("share right")
top.set_ylim(0, 1)
top.legend(loc="upper left")
bottom.bar(centres, calibration.counts / 1000, width, color="0.6")
bottom.set_ylabel("thousands")
bottom.set_xlabel("confidence of the top choice")
bottom.set_xlim(0, 1)
fig.tight_layout()

# %%
#| echo: false
gaps = calibration.confidence - calibration.accuracy
populated = calibration.counts >= 100
over_bins = int(np.sum(gaps[populated] > 0))
worst_bin = int(np.nanargmax(np.where(populated, np.abs(gaps), np.nan)))
overall_gap = top_prob.mean() - correct.mean()
leaning = "over" if overall_gap > 0 else "under"
worst_low, worst_high = calibration.edges[worst_bin:worst_bin + 2]
binning_note = (
    "when every bin leans the same way, the ECE is just the overall gap, "
    "whatever the binning" if over_bins in (0, populated.sum()) else
    "in general the number depends on the binning, so compare ECEs only "
    "at the same one")
if over_bins in (0, populated.sum()):
    bin_pattern = (f"{'above' if over_bins else 'below'} the share right "
                   f"in every one of the {populated.sum()} bins")
else:
    bin_pattern = (f"above the share right in {over_bins} of the "
                   f"{populated.sum()} bins and below it in the others")

# %% [markdown]
# The model's first guess is right {{ correct.mean():.1%}} of the time,
# and on average it claims {{ top_prob.mean():.1%}}: taken as a whole it
# is {{ leaning }}confident, by {{ abs(overall_gap) * 100:.1f }}
# percentage points. Bin by bin, among the bins that hold at least 100
# predictions, the mean confidence lies {{ bin_pattern }}. The widest gap is in the bin from
# {{ worst_low:.1f }} to {{ worst_high:.1f }}, where the model claims
# {{ calibration.confidence[worst_bin]:.1%}} and is right
# {{ calibration.accuracy[worst_bin]:.1%}} of the time. The expected
# calibration error is {{ ece:.3f }}: on average, a stated confidence is
# off by {{ ece * 100:.1f }} percentage points. With Guo et al.'s 15
# bins instead of 10 the same predictions give {{ ece_15:.3f }};
# {{ binning_note }}.
#
# Why should a language model be calibrated at all? Cross-entropy is a
# *proper scoring rule*: its expected value is lowest when the predicted
# probabilities are the true ones, so training pulls the model towards
# honest probabilities on text like its training text. Among the causes
# Guo et al. found for their networks' overconfidence is training on
# after the validation log-loss has stopped improving, while the error
# rate still falls: the model's probabilities sharpen beyond what new
# data bears out. A validation loss that has turned up while the
# training loss still falls is therefore a warning about calibration as
# well as about fit.
#
# Calibration matters for what comes later in the book. Chapter 9's
# temperature rescales exactly these probabilities, and its min-p and
# top-p samplers cut the tail where the probabilities say it is thin
# (min-p below a fraction of the top probability, top-p beyond a share
# of the mass), which is only as good as the probabilities.
# And the top choice is only one of {{ tokenizer.vocab_size }}
# probabilities at each position: the same check over every entry of the
# distribution, or on text unlike the training text, can tell a
# different story.
#
# In this section the `evaluate` module gained `char_classes` and
# `speech_openers`, which sort a text's characters so that any model's
# losses can be broken down by class, and `top_predictions`,
# `calibration_table` and `expected_calibration_error`, which check
# whether a model's probabilities can be taken at their word.
