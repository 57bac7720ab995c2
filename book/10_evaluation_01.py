# %% [markdown]
# # Baselines
#
# A validation loss means little on its own. A model that reaches 1.5
# nats per character has done well or badly only next to what simpler
# methods reach on the same text, in the same unit. This section builds
# those simpler methods, from a blind guess to the best model that does
# nothing but count, and scores each on the split the book uses
# everywhere: fitted on the first 90% of Tiny Shakespeare, scored on the
# last 10%. A network that cannot beat them has learned nothing that
# counting could not, and the gap between the best of them and the
# network is what the network buys.
#
# There are three families. The first ignores context or looks one
# character back: the uniform guess, character frequencies, and pairs of
# characters. The second looks up to {{ max_order - 1 }} characters back:
# n-gram models with Witten-Bell smoothing (Witten & Bell, 1991) and
# interpolated Kneser-Ney smoothing (Kneser & Ney, 1995; Chen & Goodman,
# 1998). The third is the compressors in Python's standard library, which
# are language models in disguise. The best of all of them,
# {{ smoothing_names[best_smoothing] }} at order {{ best_order }}, scores
# {{ scores[best_smoothing]:.3f }} nats per character; @tbl-baselines at
# the end lists them all.

# %%
#| echo: false
#| default_exp evaluate
import json
import math
import time

import matplotlib.pyplot as plt
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.data import load_corpus, split_train_val

started = time.perf_counter()
train, val = split_train_val(load_corpus())
max_order = pick(smoke=7, book=10)
print(f"{len(train):,} training and {len(val):,} validation characters")

# %% [markdown]
# The longest models below look {{ max_order - 1 }} characters back.
# (The book's smaller test build lowers `max_order`, so that the section
# runs in seconds there.) Every number below is computed from these two
# strings.
#
# ## No context
#
# Every model here works on characters as integers, indices into the
# sorted set of characters the training text contains, as chapter 3's
# `CharTokenizer` does. A character that the training text never
# contains has no count, so every model below would give it probability
# zero and an infinite loss. You could reserve a little probability for
# an "unknown" character instead, but then the score would depend on how
# much you reserve, and a character-level network has no embedding for
# it either. So `char_ids`, which turns a text into those integers,
# refuses such a character, with a message that says which and what to
# do. (The section's plumbing, such as `char_ids` and the count tables
# below, is in `mlxllm/evaluate.py` and not printed here; the listings
# show the models.)

# %%
#| echo: false
#| export
import bz2
import lzma
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Self

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from mlxllm.data import split_train_val


def vocabulary(text: str) -> str:
    """The distinct characters of text, sorted: index i is character i."""
    return "".join(sorted(set(text)))


def char_ids(text: str, vocab: str) -> np.ndarray:
    """The text as indices into vocab; ValueError for a character outside
    it, which no model fitted on that vocabulary can score."""
    index = {char: i for i, char in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        char = unknown[0]
        raise ValueError(
            f"{char!r} (U+{ord(char):04X}, first at position "
            f"{text.index(char):,}) never occurs in the training text, so "
            "every model here gives it probability 0; replace it, or fit "
            "on a text that contains it")
    return np.fromiter(map(index.__getitem__, text), np.int64, len(text))

# %%
vocab = vocabulary(train)
V = len(vocab)
train_ids, val_ids = char_ids(train, vocab), char_ids(val, vocab)
try:
    char_ids("Wherefore art thou, Roméo?", vocab)
except ValueError as error:
    print(error)
uniform_nats = math.log(V)
print(f"{V} characters; uniform: {uniform_nats:.3f} nats/char")

# %% [markdown]
# The training text has {{ V }} distinct characters, and "é" is not
# among them. The first baseline knows only that: it gives each of the
# {{ V }} characters probability $1/V$, so every character costs
# $\ln V$ = {{ uniform_nats:.3f }} nats. An untrained network whose logits
# are all equal scores exactly that.
#
# The *unigram* model knows how often each character occurs in training
# and predicts those frequencies everywhere, whatever came before.

# %%
frequencies = np.bincount(train_ids, minlength=V) / len(train_ids)
unigram_nats = float(-np.log(frequencies[val_ids]).mean())
space_share = frequencies[vocab.index(" ")]
print(f"unigram: {unigram_nats:.3f} nats/char")

# %% [markdown]
# The loss of a model on a text is the mean of $-\ln p$ over the text's
# characters, here the frequency of each validation character in
# training. The space alone is {{ space_share:.1%}} of the training text.
# Knowing the frequencies saves {{ uniform_nats - unigram_nats:.2f }}
# nats per character over the uniform guess and brings the loss to
# {{ unigram_nats:.3f }}.
#
# ## One character of context
#
# A *bigram* model predicts each character from the one before it:
# $p(w \mid v) = c(vw) / c(v)$, where $c(vw)$ counts the pair $vw$ in
# training and $c(v)$ counts $v$ followed by anything. For $V$
# characters that is a $V \times V$ matrix of counts, each row divided by
# its sum. A pair that never occurs in training gets probability zero,
# and one such pair in the scored text makes its loss infinite. *Add-k*
# smoothing adds $k$ to every count before dividing:
#
# $$p(w \mid v) = \frac{c(vw) + k}{c(v) + kV}.$$

# %%
def bigram_probs(ids: np.ndarray, size: int, k: float) -> np.ndarray:
    """p(next | previous) as a (size, size) matrix, k added to each count."""
    counts = np.full((size, size), k)
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def bigram_nats(probs: np.ndarray, ids: np.ndarray) -> float:
    """Mean -ln p(next | previous) over the pairs of characters of ids."""
    return float(-np.log(probs[ids[:-1], ids[1:]]).mean())

# %% [markdown]
# `np.add.at` adds 1 at every (previous, next) pair of the text, repeats
# included; plain indexing, `counts[a, b] += 1`, would add 1 once per
# distinct pair. What should $k$ be? Not whatever scores best on the
# validation text: a setting chosen there makes the validation score an
# optimistic one, since it has then been fitted to that text too. So the
# training text is split once more, the same way, into a part to count
# (its first 90%) and a held-out part (its last 10%), and $k$ is chosen
# on the held-out part. The same rule chooses every setting in this
# section.

# %%
#| export
ADD_K = (0.01, 0.1, 0.3, 1.0, 3.0, 10.0)  # the k values the bigram tries

# %%
#| echo: false
fit, held_out = split_train_val(train)
fit_ids, held_ids = char_ids(fit, vocab), char_ids(held_out, vocab)
seen_pairs = np.zeros((V, V), dtype=bool)
seen_pairs[fit_ids[:-1], fit_ids[1:]] = True
unseen_pairs = int((~seen_pairs[held_ids[:-1], held_ids[1:]]).sum())
held_bigram = {k: bigram_nats(bigram_probs(fit_ids, V, k), held_ids)
               for k in ADD_K}
bigram_k = min(held_bigram, key=held_bigram.get)
bigram_matrix = bigram_probs(train_ids, V, bigram_k)
bigram_val_nats = bigram_nats(bigram_matrix, val_ids)
assert unseen_pairs > 0
add_k_spread = np.ptp([held_bigram[k] for k in ADD_K if k <= 1])
assert uniform_nats - unigram_nats < unigram_nats - bigram_val_nats
print(f"k = {bigram_k}: {bigram_val_nats:.4f} nats/char on validation")

# %%
#| echo: false
#| label: tbl-add-k
#| tbl-cap: The add-k bigram counted on the first 90% of the training text and scored on the rest, for each k tried.
Table([(f"{k:g}", held_bigram[k]) for k in ADD_K],
      ["k", "held-out nats/char"], digits=4)

# %% [markdown]
# With $k = 0$ the bigram would fail on the held-out part outright:
# {{ unseen_pairs }} of its character pairs (occurrences, not distinct
# pairs) never occur in the part counted, and
# each would cost infinitely many nats. @tbl-add-k shows the rest: from
# $k$ = 0.01 to 1 the held-out loss moves by {{ add_k_spread:.4f }}
# nats, because {{ len(fit):,}} characters of counts dwarf a few added
# units in most rows; only a large $k$ hurts. The best is
# $k$ = {{ bigram_k }}, and counted on the whole training text with it
# the bigram scores
# {{ bigram_val_nats:.3f }} nats per character on validation (over its
# {{ len(val) - 1:,}} pairs; the first character has nothing before it).
# One character of context is worth
# {{ unigram_nats - bigram_val_nats:.2f }} nats, more than the
# frequencies were worth over the blind guess.
#
# ## Longer contexts
#
# An order-$n$ model, or *n-gram* model, predicts a character from the
# $n - 1$ before it. Its table has $V^n$ cells, and training fills few of
# them: the bigram matrix has {{ V**2:,}} cells and
# {{ int(seen_pairs.sum()):,}} pairs occur in the part counted, but at order
# 5 there are {{ V**5:,}} cells for {{ len(train):,}} training positions.
# Only the n-grams that occur need storing. A string of $n$ ids is a number
# written in base $V$ ("abc" is $a V^2 + b V + c$), so an order's counts are
# two arrays, the numbers of the distinct n-grams in sorted order and their
# counts, and looking up a batch of n-grams is one binary search,
# `np.searchsorted`. A 64-bit integer holds $V^n$ up to order
# {{ int(63 / math.log2(V)) }} for {{ V }} characters. Two facts about
# these codes come back below: the context of an n-gram, its first
# $n - 1$ characters, is its code divided by $V$ (integer division drops
# the last digit), and its last $n - 1$ characters are the code modulo
# $V^{n-1}$.

# %%
#| echo: false
#| export
def gram_codes(windows: np.ndarray, base: int) -> np.ndarray:
    """Each row of ids read as one number in the given base."""
    codes = np.zeros(len(windows), dtype=np.int64)
    for column in windows.T:
        codes = codes * base + column
    return codes


class CountTable:
    """Counts of distinct codes, sorted for binary search; absent is 0."""

    def __init__(self, codes: np.ndarray, counts: np.ndarray) -> None:
        self.codes, self.counts = codes, counts

    @classmethod
    def tally(cls, codes: np.ndarray) -> Self:
        """How often each distinct code occurs in codes."""
        return cls(*np.unique(codes, return_counts=True))

    def __getitem__(self, query: np.ndarray) -> np.ndarray:
        """The count of each code in query."""
        at = np.searchsorted(self.codes, query).clip(max=len(self.codes) - 1)
        return np.where(self.codes[at] == query, self.counts[at], 0)

# %% [markdown]
# ### Smoothing by interpolation
#
# Long contexts are rare. At order {{ max_order }}, the context of
# {{ 1 - context_seen:.0%}} of the validation characters never occurs in
# training, and {{ context_narrow:.0%}} of those that do occur were followed
# by at most two different characters. A smoothed model mixes what the
# counts after the full context $h$ say with what the shorter context $h'$
# ($h$ without its first character) predicts, recursively, down to the
# uniform distribution at order 0. The two methods here differ in how much
# they trust the counts.
#
# *Witten-Bell* smoothing (Witten & Bell, 1991) reads the trust off the
# counts themselves. Let $c(h)$ be how often $h$ occurs followed by some
# character and $T(h)$ how many different characters follow it:
#
# $$p(w \mid h) = \frac{c(hw) + T(h)\, p(w \mid h')}{c(h) + T(h)}.$$
# {#eq-witten-bell}
#
# Each of the $T(h)$ different followers was once a character never seen
# after $h$ before, so $T(h) / (c(h) + T(h))$ estimates the chance that
# the next one is new too, and that is the weight the shorter context
# gets. A context seen twice, followed by two different characters,
# keeps half its trust for the shorter context; a context seen a thousand
# times with five followers keeps 0.5%.
#
# *Kneser-Ney* smoothing (Kneser & Ney, 1995), in the interpolated form
# of Chen & Goodman (1998), whose comparison of smoothing methods found
# the Kneser-Ney variants best, subtracts a fixed discount $D$ from every
# count seen and gives what it collects to the shorter context:
#
# $$p(w \mid h) = \frac{\max(c(hw) - D, 0) + D\, T(h)\, p(w \mid h')}
# {c(h)}.$$ {#eq-kneser-ney}
#
# Its second idea is what makes it Kneser-Ney. The shorter context's
# estimate matters mostly where the longer one has no count, so it should
# say how likely $w$ is to follow a context it has not followed yet, and
# that is better judged by how many different contexts $w$ follows than
# by how often it occurs. So every order below the top counts an n-gram
# $g$ by $N_{1+}(\cdot g)$, the number of different characters seen
# before it, its *continuation count*, in place of $c(g)$. The discount
# of each order comes from its counts of counts, $D = n_1 / (n_1 + 2
# n_2)$, where $n_1$ and $n_2$ are how many n-grams of that order have
# count 1 and 2 (Chen & Goodman, 1998). `NGramCounts` builds every
# order from one pass over the text per order. A continuation count needs
# no second pass: each distinct $(n+1)$-gram is one (preceding character,
# n-gram) pair, and its code modulo $V^n$ is that n-gram, so tallying
# those codes over the distinct $(n+1)$-grams counts, for each n-gram,
# the different characters seen before it.


# %%
#| echo: false
#| export
@dataclass
class Level:
    """One order's counts c(hw), their sums c(h) and follower counts T(h),
    keyed by code, and its Kneser-Ney discount D."""

    grams: CountTable
    totals: CountTable
    types: CountTable
    discount: float
    base: int

    @classmethod
    def of(cls, grams: CountTable, base: int) -> Self:
        """The level of these n-gram counts; contexts are codes // base."""
        contexts, starts = np.unique(grams.codes // base, return_index=True)
        totals = np.add.reduceat(grams.counts, starts)
        types = np.diff(starts, append=len(grams.codes))
        n1, n2 = np.sum(grams.counts == 1), np.sum(grams.counts == 2)
        discount = n1 / (n1 + 2 * n2) if n1 else 0.5
        return cls(grams, CountTable(contexts, totals),
                   CountTable(contexts, types), float(discount), base)

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        """c(hw), c(h) and T(h) for each n-gram code."""
        contexts = codes // self.base
        return self.grams[codes], self.totals[contexts], self.types[contexts]

# %%
#| echo: false
#| export
class NGramCounts:
    """A text's n-gram counts at every order up to max_order, and the
    continuation counts of the orders below it."""

    def __init__(self, text: str, max_order: int,
                 vocab: str | None = None) -> None:
        self.vocab = vocab or vocabulary(text)
        self.max_order, base = max_order, len(self.vocab)
        if base ** max_order >= 2 ** 63:
            raise ValueError(f"order {max_order} over {base} characters "
                             "does not fit in 64-bit codes; lower it")
        if len(text) <= max_order:
            raise ValueError(f"{len(text)} characters hold no "
                             f"{max_order + 1}-grams; fit on more text")
        ids = char_ids(text, self.vocab)
        grams = {n: CountTable.tally(
                     gram_codes(sliding_window_view(ids, n), base))
                 for n in range(1, max_order + 1)}
        self.raw = {n: Level.of(table, base) for n, table in grams.items()}
        self.continuation = {
            n: Level.of(CountTable.tally(grams[n + 1].codes % base**n), base)
            for n in range(1, max_order)}

# %% [markdown]
# The three smoothings are one function each, from an order's counts, a
# batch of n-gram codes and the next order down's probabilities `lower`
# to this order's probabilities. A context that training never saw has no
# counts at all, and every smoothing then passes `lower` on unchanged.
# Add-k uses only its own order's counts, so the bigram above is an
# add-k model of order 2.

# %%
#| export
def add_k(level: Level, codes: np.ndarray, lower: np.ndarray,
          k: float) -> np.ndarray:
    """(c(hw) + k) / (c(h) + k V): k added to every count."""
    count, total, _ = level.lookup(codes)
    probs = (count + k) / (np.maximum(total, 1) + k * level.base)
    return np.where(total > 0, probs, lower)


def witten_bell(level: Level, codes: np.ndarray,
                lower: np.ndarray) -> np.ndarray:
    """Witten-Bell: the shorter context weighs T(h) / (c(h) + T(h))."""
    count, total, types = level.lookup(codes)
    probs = (count + types * lower) / np.maximum(total + types, 1)
    return np.where(total > 0, probs, lower)


def kneser_ney(level: Level, codes: np.ndarray,
               lower: np.ndarray) -> np.ndarray:
    """Interpolated Kneser-Ney: D off every count, D T(h) / c(h) to lower."""
    count, total, types = level.lookup(codes)
    discount = level.discount
    probs = (np.maximum(count - discount, 0)
             + discount * types * lower) / np.maximum(total, 1)
    return np.where(total > 0, probs, lower)


Smoothing = Callable[[Level, np.ndarray, np.ndarray], np.ndarray]
SMOOTHINGS = {"add_k": add_k, "witten_bell": witten_bell,
              "kneser_ney": kneser_ney}

# %% [markdown]
# `np.where` computes both branches for every row, so the divisions
# guard against a zero denominator in the rows whose result it then
# throws away. A model climbs the orders: for each character it starts
# from the uniform distribution and applies its smoothing once per order,
# from order 1 up to its own, with Kneser-Ney's continuation counts at
# every order but the top.

# %%
#| export
def interpolated(counts: NGramCounts, windows: np.ndarray,
                 step: Smoothing, kneser_ney: bool) -> np.ndarray:
    """p(last id of each row | the ids before it): `step` applied at each
    order in turn, from the uniform distribution up to the row's width."""
    probs = np.full(len(windows), 1 / len(counts.vocab))
    width = windows.shape[1]
    for n in range(1, width + 1):
        below_top = kneser_ney and n < width
        level = (counts.continuation if below_top else counts.raw)[n]
        probs = step(level, gram_codes(windows[:, -n:], level.base), probs)
    return probs

# %% [markdown]
# A row of `windows` is a context followed by the character to score, so
# one call scores a whole batch, one order at a time: all hundred thousand
# validation characters at once. `NGramModel` wraps it with what a user
# needs: given an order and a smoothing, `nats_per_char` scores a text
# with each character conditioned on the characters before it in that
# text, and `distribution` gives the probabilities of every next
# character after a context.

# %%
#| echo: false
#| export
class NGramModel:
    """p(next character | the order - 1 characters before it), smoothed
    with add-k, Witten-Bell or interpolated Kneser-Ney."""

    def __init__(self, counts: NGramCounts, order: int, smoothing: str,
                 k: float = 1.0) -> None:
        if smoothing not in SMOOTHINGS or not 1 <= order <= counts.max_order:
            raise ValueError(f"need a smoothing in {list(SMOOTHINGS)} and "
                             f"an order from 1 to {counts.max_order}")
        self.counts, self.order, self.smoothing = counts, order, smoothing
        self.vocab = counts.vocab
        self.step = (partial(add_k, k=k) if smoothing == "add_k"
                     else SMOOTHINGS[smoothing])

    def probabilities(self, windows: np.ndarray) -> np.ndarray:
        """p(last id of each row | the ids before it in that row)."""
        return interpolated(self.counts, windows, self.step,
                            self.smoothing == "kneser_ney")

    def distribution(self, context: str) -> np.ndarray:
        """p(c | context) for every character c of the vocabulary."""
        kept = context[max(0, len(context) - self.order + 1):]
        rows = np.tile(char_ids(kept, self.vocab), (len(self.vocab), 1))
        return self.probabilities(
            np.column_stack([rows, np.arange(len(self.vocab))]))

    def nats_per_char(self, text: str) -> float:
        """Mean -ln p of each character of text given those before it."""
        ids = char_ids(text, self.vocab)
        width = min(self.order, len(ids))
        first = [self.probabilities(ids[None, :i + 1])
                 for i in range(width - 1)]
        rest = self.probabilities(sliding_window_view(ids, width))
        return float(-np.log(np.concatenate([*first, rest])).mean())

# %% [markdown]
# Before trusting any number from `NGramModel`, check that every
# distribution sums to 1, for a context seen in training and for
# nonsense, and that the order-2 add-k model is the bigram matrix from
# before, row by row.

# %%
counts = NGramCounts(train, max_order)
prompt = "ROMEO:\nWhat light through yonder window br"
for smoothing in SMOOTHINGS:
    model = NGramModel(counts, max_order, smoothing, k=bigram_k)
    for context in ("", prompt, "zqzqzqzqz"):
        assert abs(model.distribution(context).sum() - 1) < 1e-9
bigram = NGramModel(counts, 2, "add_k", k=bigram_k)
rows = np.array([bigram.distribution(char) for char in vocab])
assert np.abs(rows - bigram_matrix).max() < 1e-12
unigram = NGramModel(counts, 1, "add_k", k=0)
assert abs(unigram.nats_per_char(val) - unigram_nats) < 1e-12
after_prompt = NGramModel(counts, max_order, "kneser_ney").distribution(prompt)
print("  ".join(f"{vocab[i]!r} {after_prompt[i]:.3f}"
                for i in np.argsort(-after_prompt)[:5]))

# %% [markdown]
# The checks pass. After chapter 9's prompt, the Kneser-Ney model of order
# {{ max_order }} gives {{ repr(vocab[int(np.argmax(after_prompt))]) }}
# probability {{ after_prompt.max():.2f }}; its context, the last
# {{ max_order - 1 }} characters, "{{ prompt_context }}",
# {{ prompt_context_seen }} in training.
#
# Add-k, the bigram's rule, carries over to longer contexts badly. At
# order 5 with the same $k$ it scores {{ add_k_order_5:.3f }} nats per
# character: the context helps, but Witten-Bell at the same order does
# {{ add_k_order_5 - val_curves['witten_bell'][4]:.2f }} nats better.
# Adding {{ bigram_k }} to each of the {{ V }} cells of a context seen
# three times gives most of its mass to characters that never followed
# it.

# %%
#| echo: false
add_k_order_5 = NGramModel(counts, 5, "add_k", k=bigram_k).nats_per_char(val)
space_code = np.array([vocab.index(" ")])
space_continuation = counts.continuation[1]
space_after = space_continuation.grams[space_code][0]
space_share_kn = space_after / space_continuation.grams.counts.sum()
print(f"add-k, order 5: {add_k_order_5:.3f}; the space follows "
      f"{space_after} characters ({space_share_kn:.1%} of the order-1 "
      "continuation mass)")

# %% [markdown]
# Continuation counts change the lowest level's picture. The space is
# {{ space_share:.1%}} of the training characters but follows only
# {{ space_after }} of the {{ V }} different characters, so Kneser-Ney's
# order-1 level gives it {{ space_share_kn:.1%}}. That level is consulted
# for characters a longer context has not been seen followed by, and
# there a character's share of the whole text overstates its chances.
#
# ### Which order?
#
# Longer contexts see further, and their counts get sparser. To see
# where the two effects balance, score both smoothings at every order,
# on the held-out part of the training text, with counts from the rest,
# and on the validation text, with counts from all of it.

# %%
#| export
def by_order(counts: NGramCounts, text: str, smoothing: str) -> list[float]:
    """Nats per character of text at each order from 1 to max_order."""
    return [NGramModel(counts, order, smoothing).nats_per_char(text)
            for order in range(1, counts.max_order + 1)]

# %%
#| echo: false
smoothing_names = {"witten_bell": "Witten-Bell", "kneser_ney": "Kneser-Ney"}
fit_counts = NGramCounts(fit, max_order, vocab)
held_curves = {s: by_order(fit_counts, held_out, s) for s in smoothing_names}
val_curves = {s: by_order(counts, val, s) for s in smoothing_names}
orders = {s: 1 + int(np.argmin(held_curves[s])) for s in smoothing_names}
best_smoothing = min(orders, key=lambda s: held_curves[s][orders[s] - 1])
best_order = orders[best_smoothing]
print("chosen on held-out text:", orders, "best:", best_smoothing)

# %%
#| echo: false
#| label: fig-ngram-order
#| fig-cap: Loss of character n-gram models against their order. Solid, counted on the training text and scored on validation; dashed, counted on the first 90% of the training text and scored on the rest, where each smoothing's order is chosen (ringed).
order_axis = np.arange(1, max_order + 1)
fig, ax = plt.subplots()
for (smoothing, name), marker in zip(smoothing_names.items(), "os"):
    (line,) = ax.plot(order_axis, val_curves[smoothing], marker=marker,
                      label=f"{name}, validation")
    ax.plot(order_axis, held_curves[smoothing], "--", marker=marker,
            color=line.get_color(), markerfacecolor="none",
            label=f"{name}, held-out")
    chosen = orders[smoothing]
    ax.plot(chosen, held_curves[smoothing][chosen - 1], "o", markersize=13,
            color="black", markerfacecolor="none")
ax.set_xticks(order_axis)
ax.set_xlabel("order n (the context is n - 1 characters)")
ax.set_ylabel("nats per character")
ax.legend()
fig.tight_layout()

# %%
#| echo: false
wb_val, kn_val = val_curves["witten_bell"], val_curves["kneser_ney"]
wb_val_best = 1 + int(np.argmin(wb_val))
kn_val_best = 1 + int(np.argmin(kn_val))
assert wb_val_best < max_order - 1 and wb_val[-1] > wb_val[wb_val_best - 1]
gaps = np.array(wb_val[2:]) - np.array(kn_val[2:])
assert np.all(gaps > 0) and np.all(np.diff(gaps) > 0)
top_codes = gram_codes(sliding_window_view(val_ids, max_order), V)
_, top_totals, top_types = counts.raw[max_order].lookup(top_codes)
context_seen = float(np.mean(top_totals > 0))
context_rare = float(np.mean(top_totals[top_totals > 0] < 5))
context_narrow = float(np.mean(top_types[top_totals > 0] <= 2))
discounts = [counts.raw[n].discount for n in range(2, max_order + 1)]
top_singletons = float(np.mean(counts.raw[max_order].grams.counts == 1))
assert bigram_k * V > 3  # add-k gives most of a 3-count context away
prompt_context = prompt[-(max_order - 1):]
prompt_context_count = int(counts.raw[max_order].totals[
    gram_codes(char_ids(prompt_context, vocab)[None], V)][0])
prompt_context_seen = {0: "never occurs", 1: "occurs once"}.get(
    prompt_context_count, f"occurs {prompt_context_count} times")
choice_words = {True: "the same orders validation would pick",
                False: "not exactly the orders validation would pick"}
same_choice = orders == {"witten_bell": wb_val_best,
                         "kneser_ney": kn_val_best}

# %% [markdown]
# @fig-ngram-order shows both effects. Every order up to {{ wb_val_best }}
# helps Witten-Bell, down to {{ wb_val[wb_val_best - 1]:.3f }} nats per
# character on validation; past it the loss climbs, to {{ wb_val[-1]:.3f }}
# at order {{ max_order }}. Kneser-Ney is better at every order from 3 on,
# and the gap widens: its best is {{ kn_val[kn_val_best - 1]:.3f }} at order
# {{ kn_val_best }}, and it gives back only
# {{ kn_val[-1] - kn_val[kn_val_best - 1]:.3f }} nats by order
# {{ max_order }}. The held-out text chose orders
# {{ orders['witten_bell'] }} and {{ orders['kneser_ney'] }},
# {{ choice_words[same_choice] }}; its curves score a different stretch of
# the play with fewer counts, but have the same shape.
#
# Why the two part ways: at order {{ max_order }}, of the validation's
# contexts that training contains at all, {{ context_rare:.0%}} occur there
# fewer than five times. Witten-Bell keeps half of a context seen once for
# the one character that followed it, however rare such contexts are at that
# order. Kneser-Ney's discount is estimated per order from the counts of
# counts and grows from {{ discounts[0]:.2f }} at order 2 to
# {{ discounts[-1]:.2f }} at order {{ max_order }}, where
# {{ top_singletons:.0%}} of the distinct n-grams are seen once: it learns
# from the data that a single sighting of a long context is weak evidence,
# and passes most of its mass down.
#
# ## Compressors
#
# A compressor is a model too. A lossless code that
# spends $\ell$ bits on a text implicitly gives that text probability
# $2^{-\ell}$, and an arithmetic coder turns a model's probability $p$
# for each symbol into $-\log_2 p$ bits. So a compressed size, in bits
# per character, is a loss like the models', counted in bits (the
# Units section's conversion), plus a little overhead.
#
# To score a compressor on the same task as the models, it must see the
# training text first. Compress the training text, then the training text
# followed by the validation text; the difference is what the validation
# text costs once the compressor has read the training text. With
# $|C(x)|$ the size in bytes of $x$ compressed,
#
# $$\text{bits per character} = \frac{8\,(|C(\text{train} +
# \text{val})| - |C(\text{train})|)}{\text{len(val)}}.$$

# %%
#| export
COMPRESSORS = {
    "zlib": partial(zlib.compress, level=9),
    "bz2": partial(bz2.compress, compresslevel=9),
    "lzma": partial(lzma.compress, preset=9 | lzma.PRESET_EXTREME),
}


def compressor_bits_per_char(train: str, text: str) -> dict[str, float]:
    """Bits each compressor spends per character of text once it has read
    train: the growth of the compressed size when text is appended."""
    before, after = train.encode(), (train + text).encode()
    return {name: 8 * (len(squeeze(after)) - len(squeeze(before)))
            / len(text) for name, squeeze in COMPRESSORS.items()}

# %%
primed = compressor_bits_per_char(train, val)
alone = compressor_bits_per_char("", val)
for name in COMPRESSORS:
    print(f"{name:4}  alone {alone[name]:.3f}  after the training text "
          f"{primed[name]:.3f} bits/char")

# %%
#| echo: false
best_compressor = min(primed, key=primed.get)
best_compressor_nats = primed[best_compressor] * math.log(2)
bz2_seen = len(train.encode()) % 900_000
bz2_tail = 750_000
tail, squeeze = train[-bz2_tail:].encode(), COMPRESSORS["bz2"]
bz2_tail_bits = 8 * (len(squeeze(tail + val.encode()))
                     - len(squeeze(tail))) / len(val)
kn_beats = 1 + int(np.argmax(np.array(kn_val) < best_compressor_nats))
gains = {name: alone[name] - primed[name] for name in COMPRESSORS}
assert 0 < gains["zlib"] < gains["bz2"] < gains["lzma"]
assert kn_val[kn_beats - 1] < best_compressor_nats < bigram_val_nats

# %% [markdown]
# Each of them does better after reading the training text, by very
# different amounts. zlib's DEFLATE (Deutsch, 1996) refers back at most
# 32 KiB, so all but the last 32 KiB of the training text is out of its
# sight: reading it saves only {{ gains['zlib']:.3f }} bits per
# character. bz2 compresses blocks of about 900 kB independently, so it
# sees only the part of the training text that falls in the validation
# text's block, here its last {{ bz2_seen:,}} characters, and gains
# {{ gains['bz2']:.3f }} bits. lzma at preset 9 keeps a 64 MiB
# dictionary and sees it all, and gains most, {{ gains['lzma']:.3f }}
# bits.
#
# The best of them, {{ best_compressor }}, spends
# {{ primed[best_compressor]:.3f }} bits per character, which is
# {{ best_compressor_nats:.3f }} nats: better than the bigram, worse than
# Kneser-Ney from order {{ kn_beats }} on. bz2 is held back by its
# blocks, not by its model: given only the last {{ bz2_tail:,}}
# characters of the training text, so that they share one block with the
# validation text, it spends {{ bz2_tail_bits:.3f }} bits, or
# {{ bz2_tail_bits * math.log(2):.3f }} nats, per character, against
# {{ kn_val[kn_val_best - 1]:.3f }} for the best Kneser-Ney model. Its
# Burrows-Wheeler transform (Burrows & Wheeler, 1994) sorts the
# characters of a block by the text that follows each one, which puts
# characters that come before the same text side by side: a context
# model of no fixed order, in all but name, whose context is the text
# after a character instead of before it.
#
# ## All the baselines
#
# The exported `baselines` (in the module, not printed) repeats the
# whole section for any pair of texts, for the command `mlxllm eval`: it
# chooses $k$ and the orders on the last 10% of the training text, refits
# on all of it, and scores the text.

# %%
#| echo: false
#| export
def held_out_choices(train: str,
                     max_order: int) -> tuple[float, dict[str, int]]:
    """The bigram's k and each smoothing's best order, counted on the first
    90% of train and scored on the rest, never on the text to score."""
    fit, held_out = split_train_val(train)
    counts = NGramCounts(fit, max_order, vocabulary(train))
    held_k = min(ADD_K, key=lambda k: NGramModel(
        counts, 2, "add_k", k).nats_per_char(held_out))
    orders = {s: 1 + int(np.argmin(by_order(counts, held_out, s)))
              for s in ("witten_bell", "kneser_ney")}
    return held_k, orders


def baselines(train: str, text: str, max_order: int) -> dict[str, float]:
    """Nats per character of text for every baseline fitted on train."""
    k, orders = held_out_choices(train, max_order)
    counts = NGramCounts(train, max_order)
    models = {"unigram": NGramModel(counts, 1, "add_k", k=0.0),
              "bigram": NGramModel(counts, 2, "add_k", k)}
    models |= {s: NGramModel(counts, n, s) for s, n in orders.items()}
    scores = {"uniform": math.log(len(counts.vocab))}
    scores |= {name: m.nats_per_char(text) for name, m in models.items()}
    bits = compressor_bits_per_char(train, text)
    return scores | {name: b * math.log(2) for name, b in bits.items()}

# %%
scores = baselines(train, val, max_order)
checked = {"uniform": uniform_nats, "unigram": unigram_nats,
           "bigram": bigram.nats_per_char(val),
           **{s: val_curves[s][orders[s] - 1] for s in orders},
           **{name: bits * math.log(2) for name, bits in primed.items()}}
assert all(abs(scores[name] - checked[name]) < 1e-12 for name in checked)
settings = {"uniform": f"V = {V}", "unigram": "frequencies",
            "bigram": f"add-k, k = {bigram_k}",
            "witten_bell": f"order {orders['witten_bell']}",
            "kneser_ney": f"order {orders['kneser_ney']}",
            "zlib": "level 9", "bz2": "level 9", "lzma": "preset 9e"}
record = {**scores, "orders": orders, "bigram_k": bigram_k,
          "best_ngram": {"smoothing": best_smoothing, "order": best_order}}
baselines_file = artifact_path("10_evaluation_01/baselines.json")
baselines_file.write_text(json.dumps(record, indent=2))
print(f"wrote {baselines_file.name} for the next section")

# %%
#| echo: false
#| label: tbl-baselines
#| tbl-cap: Every baseline on the validation text, fitted on the training text. Settings chosen on held-out training text; compressors primed with the training text.
names = {"uniform": "uniform", "unigram": "unigram", "bigram": "bigram",
         **smoothing_names, "zlib": "zlib", "bz2": "bz2", "lzma": "lzma"}
Table([(names[key], settings[key], nats, nats / math.log(2))
       for key, nats in scores.items()],
      ["baseline", "setting", "nats/char", "bits/char"], digits=3)

# %% [markdown]
# @tbl-baselines is what the network must beat. The assertion before it
# checks that `baselines` reproduces every number of the section, and the
# same numbers go to `baselines.json`, for a later section to draw under
# the network's own curve. The whole section ran in {{ elapsed:.0f }}
# seconds, the call to `baselines` included: the n-gram counts of a
# megabyte of text are a few arrays, and scoring is a binary search per
# character and order.

# %%
#| echo: false
elapsed = time.perf_counter() - started
