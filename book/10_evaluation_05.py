# %% [markdown]
# # What it has memorised
#
# A validation loss cannot be won by memorising: the validation text is
# text the model never saw. But the loss says nothing about what the
# model writes. A model may score well on new text and still, when it
# samples, reproduce stretches of its training text word for word. Large
# models do: Carlini et al. (2021) pulled hundreds of verbatim training
# sequences out of GPT-2 by sampling from it, and Carlini et al. (2023)
# found that the share a model reproduces grows with its size, with how
# often a passage repeats in the training data and with how much of it
# the prompt gives away. This section asks the same question of the small
# model, by the most direct means there is: look up every piece of every
# sample in the training text.
#
# ## The longest match at every position
#
# For a sample $s$ and the training text $C$, let $m_i$ be the length of
# the longest substring of $s$ that starts at position $i$ and occurs
# somewhere in $C$. The sequence $m_0, m_1, \ldots$ is called the
# *matching statistics* of $s$ against $C$ (Chang & Lawler, 1994), and
# its largest value is the sample's longest copy. A sample that quotes
# a line of Shakespeare has a run of large $m_i$ there; a sample that
# only uses Shakespeare's words has $m_i$ about as long as a word or two.
#
# The naive way to compute $m_i$ tries lengths 1, 2, 3, ... at every
# position, each try a search through the training text. One property
# saves most of that work: if $s_i \ldots s_{i+L-1}$ occurs in $C$, so
# does its tail $s_{i+1} \ldots s_{i+L-1}$, so
# $m_{i+1} \geq m_i - 1$. The search at position $i + 1$ can start at
# length $m_i - 1$ instead of at 1.

# %%
#| echo: false
#| default_exp evaluate
import textwrap
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.cli import load_model
from mlxllm.data import load_corpus, split_train_val
from mlxllm.evaluate import bootstrap_ratios
from mlxllm.generate import generate_tokens

train_text, val_text = split_train_val(load_corpus())

# %%
#| export
from collections.abc import Sequence

import numpy as np


def match_lengths(sample: str, corpus: str) -> np.ndarray:
    """For each position of `sample`, the length of the longest substring
    starting there that occurs in `corpus` (its matching statistics)."""
    lengths = np.zeros(len(sample), dtype=np.int64)
    length = 0
    for start in range(len(sample)):
        length = max(length - 1, 0)  # the tail of the last match occurs
        while (start + length < len(sample)
               and corpus.find(sample[start:start + length + 1]) >= 0):
            length += 1
        lengths[start] = length
    return lengths


def longest_match(sample: str, corpus: str) -> tuple[int, int, int]:
    """(length, position in sample, position in corpus) of the longest
    substring of `sample` that occurs in `corpus`; the first of each."""
    if not sample:
        return 0, 0, 0
    lengths = match_lengths(sample, corpus)
    start = int(np.argmax(lengths))
    length = int(lengths[start])
    return length, start, corpus.find(sample[start:start + length])

# %% [markdown]
# `match_lengths` keeps one running `length`. At each new position it
# drops the first character of the last match, which is known to occur,
# and grows the match one character at a time while `corpus.find` still
# finds it. Every search either grows `length` or ends the position, and
# over the whole sample `length` grows at most one more than it drops, so
# a sample of $n$ characters costs at most $2n + 1$ searches, whatever
# its matches.
# Each search is CPython's `str.find`, a scan in C through the
# {{ len(train_text) / 1e6:.1f }} million characters of training text.
# `longest_match` reads the largest entry and looks up where in the
# training text it occurs.
#
# Before trusting it, check it against the naive version, which tries
# every length at every position, on a stretch of validation text:

# %%
def match_lengths_naive(sample: str, corpus: str) -> np.ndarray:
    """Matching statistics the slow way: lengths 1, 2, ... everywhere."""
    lengths = []
    for start in range(len(sample)):
        length = 0
        while (start + length < len(sample)
               and sample[start:start + length + 1] in corpus):
            length += 1
        lengths.append(length)
    return np.array(lengths, dtype=np.int64)


probe = val_text[:pick(smoke=40, book=200)]
seconds, found = {}, {}
for name, method in (("naive", match_lengths_naive),
                     ("greedy", match_lengths)):
    started = time.perf_counter()
    found[name] = method(probe, train_text)
    seconds[name] = time.perf_counter() - started
    print(f"{name}: {seconds[name]:.3f} s, longest {found[name].max()}")
assert np.array_equal(found["naive"], found["greedy"])

# %% [markdown]
# The two agree at every one of the {{ len(probe) }} positions (the
# assertion), and the greedy version is
# {{ seconds['naive'] / seconds['greedy']:.1f }} times faster: the
# naive one pays about $m_i + 1$ searches at each position, the greedy
# one about two on average (at most $2n + 1$ for a sample of $n$). A
# search that fails scans the whole training text, so the cost grows with the corpus: here it comes to
# {{ 1000 * match_seconds / positions:.2f }} milliseconds per character
# of sample (measured below). For a web-scale corpus you would index it
# first: Lee et al. (2022) find repeated substrings in hundreds of
# gigabytes of training text with a suffix array.
#
# ## Samples against held-out Shakespeare
#
# A long match is not yet evidence of memorising. Shakespeare repeats
# himself: a speaker's name opens every speech, and "my lord" alone
# occurs {{ train_text.count('my lord'):, }} times in the training text.
# Any text in his style matches the training text in places, by chance.
# The measure means something only next to text that shares the style
# but cannot have been copied: the validation split, which the model
# never trained on.
# McCoy et al. (2023) compare generated text with held-out human text in
# just this way, n-gram by n-gram.
#
# So load the small model of the previous sections and let it write
# {{ sample_count }} samples of {{ sample_length }} characters at each of
# two temperatures, each after a newline, with the same seeds at both;
# then cut as many excerpts of the same length from the validation
# text, each starting at the beginning of a line, spread evenly over
# the split. (That code is not printed: it loads the model as the
# earlier sections do, samples with chapter 9's `generate_tokens`, and
# keeps the texts of each kind in a dict, `texts`.)

# %%
#| echo: false
small, tokenizer = load_model(
    artifact_path("10_evaluation_02/small/tokenizer.txt").parent)
context = small.config.context
sample_count = pick(smoke=2, book=16)
sample_length = pick(smoke=48, book=400)
temperatures = (1.0, 0.8)


def write_samples(temperature: float) -> list[str]:
    """`sample_count` samples after a newline, seeds 0, 1, ..."""
    prompt_ids = tokenizer.encode("\n")
    return [tokenizer.decode(list(generate_tokens(
                small, prompt_ids, sample_length,
                temperature=temperature, seed=seed)))
            for seed in range(sample_count)]


started = time.perf_counter()
texts = {f"T = {t}": write_samples(t) for t in temperatures}
stride = len(val_text) // sample_count
line_starts = [val_text.index("\n", k * stride) + 1
               for k in range(sample_count)]
texts["validation"] = [val_text[start:start + sample_length]
                       for start in line_starts]
generate_seconds = time.perf_counter() - started

# %% [markdown]
# The samples took {{ generate_seconds:.0f }} seconds to write. Now
# the statistic, for every text of each kind:

# %%
started = time.perf_counter()
lengths = {kind: [match_lengths(text, train_text) for text in group]
           for kind, group in texts.items()}
match_seconds = time.perf_counter() - started
positions = sum(len(text) for group in texts.values() for text in group)
print(f"{positions:,} positions in {match_seconds:.1f} s: "
      f"{1000 * match_seconds / positions:.2f} ms each")
longest = {kind: np.array([row.max() for row in rows])
           for kind, rows in lengths.items()}
for kind, values in longest.items():
    print(f"{kind:>10}: longest match per text {sorted(values.tolist())}")

# %% [markdown]
# Each line lists the longest match of every text of one kind, sorted.
# @tbl-memorised sums them up, and @fig-memorised draws two views: the
# share of each text's n-grams, its substrings of n characters, that
# occur somewhere in the training text, for every n (the complement of
# what McCoy et al. call novelty), and the longest match of every text.
# The n-gram starting at position $i$ occurs in the training text exactly
# when $m_i \geq n$, so both come from the same matching statistics.

# %%
#| echo: false
#| export
def seen_ngram_share(lengths: Sequence[np.ndarray], n: int) -> float:
    """The share of the n-grams of some texts that occur in the corpus,
    from their `match_lengths`: the n-gram at i occurs iff m_i >= n."""
    starts = [row[:max(len(row) - n + 1, 0)] for row in lengths]
    counted = np.concatenate([np.asarray(row) for row in starts])
    if counted.size == 0:
        raise ValueError(f"no text is {n} characters long")
    return float(np.mean(counted >= n))

# %%
#| echo: false
#| label: tbl-memorised
#| tbl-cap: The longest substring of each text that occurs in the training text, in characters, for the small model's samples at two temperatures and for as many excerpts of held-out validation text of the same length. The last column is the mean of the match lengths $m_i$ over all positions.
def mean_difference(first: np.ndarray,
                    second: np.ndarray) -> tuple[float, float, float]:
    """The difference of two means, with a 95% bootstrap interval."""
    ones = np.ones(len(first)), np.ones(len(second))
    draws = (bootstrap_ratios(first, ones[0], seed=1)
             - bootstrap_ratios(second, ones[1], seed=2))
    low, high = np.quantile(draws, [0.025, 0.975])
    return float(first.mean() - second.mean()), float(low), float(high)


memorised_rows = [
    (kind, len(values), np.median(values), values.mean(), values.max(),
     np.concatenate(lengths[kind]).mean())
    for kind, values in longest.items()]
Table(memorised_rows, ["text", "texts", "median longest",
                       "mean longest", "max", "mean match"], digits=1)

# %%
#| echo: false
#| label: fig-memorised
#| fig-cap: Left, the share of each kind of text's n-grams that occur somewhere in the training text, against n. Right, the longest such match in each text (one dot per text, the bar at the median). Model samples ($T$ = 1.0 and 0.8) and held-out validation text of the same length.
orders = np.arange(1, max(values.max() for values in longest.values()) + 3)
styles = {"T = 1.0": ("C0", "o", "-"), "T = 0.8": ("C1", "s", "--"),
          "validation": ("C2", "^", ":")}
fig, (left, right) = plt.subplots(1, 2, figsize=(5.5, 2.7),
                                  gridspec_kw={"width_ratios": [3, 2]})
for kind, (color, marker, line) in styles.items():
    shares = [seen_ngram_share(lengths[kind], int(n)) for n in orders]
    left.plot(orders, shares, linestyle=line, color=color, marker=marker,
              markersize=3, markevery=3, label=kind)
left.set_xlabel("n (characters)")
left.set_ylabel("share seen in training text")
left.legend()
jitter = np.random.default_rng(0)
for index, (kind, (color, marker, _)) in enumerate(styles.items()):
    values = longest[kind]
    right.scatter(index + jitter.uniform(-0.15, 0.15, len(values)), values,
                  s=12, marker=marker, color=color, alpha=0.8)
    right.hlines(np.median(values), index - 0.3, index + 0.3, color="0.2")
right.set_xticks(range(len(styles)), list(styles))
right.set_ylabel("longest match (characters)")
fig.tight_layout()

# %%
#| echo: false
differences = {kind: mean_difference(longest[kind], longest["validation"])
               for kind in texts if kind != "validation"}
cooling = mean_difference(longest["T = 0.8"], longest["T = 1.0"])


def compared(difference: tuple[float, float, float]) -> str:
    """A difference of means in words: longer, shorter or no clear
    difference, by whether its 95% interval excludes zero."""
    value, low, high = difference
    span = (f"{value:+.1f} characters, 95% interval {low:+.1f} to "
            f"{high:+.1f}").replace("-", "\u2212")  # minus signs
    if low > 0:
        return f"longer ({span})"
    if high < 0:
        return f"shorter ({span})"
    return f"not clearly different ({span})"


verdicts = {kind: compared(difference)
            for kind, difference in differences.items()}
cooling_words = compared(cooling)
if any(low > 0 for _, low, _ in differences.values()):
    memorised_summary = (
        "So at that temperature the samples' longest matches run longer "
        "than held-out Shakespeare's. Read that with two cautions: the "
        "held-out text is mostly a play the training text does not hold, "
        "with speaker names it never saw, which shortens its matches; and "
        "the two temperatures share seeds, which the bootstrap ignores. "
        "The near-copies below show what the long matches are")
elif all(high < 0 for _, _, high in differences.values()):
    memorised_summary = (
        "So the model copies less than held-out Shakespeare shares with "
        "the training text by chance. That is no virtue in itself: its "
        "words and phrases are less often real ones, strung together less "
        "faithfully than Shakespeare’s own unseen lines")
else:
    memorised_summary = (
        "So by this measure the model copies no more than held-out "
        "Shakespeare matches by chance: it pieces its text together from "
        "words and short phrases of the training text, as Shakespeare’s "
        "own unseen lines do")
seen_at = {kind: {n: seen_ngram_share(lengths[kind], n) for n in (4, 8)}
           for kind in texts}
above = [kind for kind in differences
         if seen_at[kind][4] > seen_at["validation"][4]]
mccoy = ("McCoy et al. found that large word-level models’ short n-grams "
         "are less novel than human text’s")
if len(above) == len(differences):
    mccoy_sentence = f"That is what {mccoy}"
elif above:
    mccoy_sentence = (f"At {', '.join(above)} the 4-grams lean the way "
                      f"{mccoy}; at the other temperature they do not")
else:
    mccoy_sentence = (
        f"{mccoy}; a model of this size has not yet learned all of "
        "Shakespeare’s spellings and short phrases, so its short n-grams "
        "are more often new")

# %% [markdown]
# Read the table against its last row. Held-out Shakespeare, which
# cannot have been copied, still finds a median longest match of
# {{ np.median(longest['validation']):.1f }} characters in the training
# text, and {{ seen_ngram_share(lengths['validation'], 10):.0%}} of its
# 10-grams occur there: speaker names, stock phrases and common words
# run together. Against that yardstick, the mean longest match of the
# samples at $T = 1.0$ is {{ verdicts['T = 1.0'] }}, and at $T = 0.8$
# it is {{ verdicts['T = 0.8'] }}, each interval from a bootstrap over
# texts as in "How sure is the number?". {{ memorised_summary }}.
#
# You would expect a cooler temperature to copy more: a cooler draw
# stays on the likeliest continuations, and the likeliest continuation of
# a familiar phrase is the way it goes in the training text. Here,
# cooling from 1.0 to 0.8 makes the mean longest match
# {{ cooling_words }}. The left panel of @fig-memorised compares the
# three kinds of text at every length: of the 8-grams of the samples,
# {{ seen_at['T = 1.0'][8]:.0%}} at $T = 1.0$ and
# {{ seen_at['T = 0.8'][8]:.0%}} at $T = 0.8$ occur in the training
# text, against {{ seen_at['validation'][8]:.0%}} of held-out text's;
# of the 4-grams, {{ seen_at['T = 1.0'][4]:.0%}},
# {{ seen_at['T = 0.8'][4]:.0%}} and {{ seen_at['validation'][4]:.0%}}.
# {{ mccoy_sentence }}.
#
# ## The near-copies
#
# Numbers hide what the matches are. Here are the three longest
# matches among all samples, each with a few characters on
# either side, first as the model wrote it and then where it occurs in
# the training text; a `/` stands for a line break.

# %%
#| echo: false
def excerpt(text: str, start: int, length: int, margin: int = 10) -> str:
    """text[start:start + length] in brackets with `margin` characters of
    context either side, line breaks shown as /."""
    left = text[max(start - margin, 0):start]
    right = text[start + length:start + length + margin]
    shown = f"{left}[{text[start:start + length]}]{right}"
    return shown.replace("\n", "/")


def show_match(label: str, text: str) -> None:
    """Print the longest match of `text` in the training text."""
    length, at, where = longest_match(text, train_text)
    assert text[at:at + length] == train_text[where:where + length]
    print(f"{label}: {length} characters, at {where:,} in the training text")
    for name, source, start in (("sample", text, at),
                                ("train", train_text, where)):
        print(textwrap.fill(excerpt(source, start, length), width=76,
                            initial_indent=f"  {name:<7}",
                            subsequent_indent=" " * 9))


ranked = sorted(((longest[kind][index], kind, index)
                 for kind in differences for index in range(sample_count)),
                reverse=True)
for _, kind, index in ranked[:3]:
    show_match(f"{kind}, seed {index}", texts[kind][index])
held_out = int(np.argmax(longest["validation"]))
show_match(f"validation, excerpt {held_out}", texts["validation"][held_out])

# %%
#| echo: false
validation_longest = int(longest["validation"].max())
all_longest = int(max(longest[kind].max() for kind in differences))
if all_longest <= validation_longest:
    recital = (
        "What it does rule out, for this model, is the failure that makes "
        "memorising a problem for large models, reciting long passages of "
        "training text when asked for something new: no sample’s longest "
        f"match ({all_longest} characters) is longer than the longest that "
        f"held-out text finds by chance ({validation_longest})")
else:
    recital = (
        f"The samples’ longest match, {all_longest} characters, is longer "
        "than any that held-out text finds by chance "
        f"({validation_longest}); whether it is a recited passage or a "
        "stock phrase the model has seen many times, the listing shows, "
        "and a search of the training text for how often it occurs "
        "(`train_text.count`) tells you")

# %% [markdown]
# Each pair shows the same bracketed text, once in the sample and once in
# the training text; what surrounds it differs, which is where the copy
# ends. The last pair is the held-out text's longest match, for
# comparison: the sort of thing Shakespeare repeats. An exact match is a
# strict test: a sample that copies a line but changes one letter counts
# as two shorter matches, and a paraphrase counts as none, so the longest
# match is a floor on what the model has taken from its training text,
# not a ceiling. {{ recital }}.
