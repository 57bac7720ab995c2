# %% [markdown]
# # From text to tokens
#
# A language model only does arithmetic, so before it can read a line of
# Shakespeare the line must become a list of integers. The piece of code that
# decides which integers is the *tokenizer*, and its choices follow you through
# the whole book: they fix how many rows the embedding table has, how much text
# fits in the model's context, and what the model can and cannot write.
#
# Chapter 1 used the simplest tokenizer there is, one integer per character.
# It has two flaws. It cannot encode a character it never saw, so a prompt
# with an accent or a euro sign stops it cold; and every character costs a
# position in the context and a step of the model. This chapter builds the
# tokenizer GPT-2 made standard, *byte-level byte pair encoding* (BPE), in
# four steps: characters, Unicode code points, UTF-8 bytes, and merges of
# frequent byte pairs, each step motivated by what the previous one gets
# wrong.
#
# You write the training algorithm twice. The plain version fits in one
# listing and is easy to trust; the fast version learns exactly the same
# merges, {{ speedup_1024:.0f }} times faster at a vocabulary of
# {{ speed_sizes[-1]:, }}, and trains a vocabulary of {{ vocab_size:, }} on
# all of Tiny Shakespeare in {{ fast_4096_seconds:.1f }} seconds. Then you
# give it a library face: encoding with a cache, decoding that never fails,
# special tokens that cannot be smuggled in through ordinary text, and a
# file format you can read.
# You compare the result with SentencePiece, choose a vocabulary size with
# numbers rather than folklore, and finish with the data pipeline the
# training chapters use: the corpus encoded once, cached on disk, and served
# as random batches from a seed.
#
# On the map of chapter 1 this is the first box, the one where text stops
# being text. The chapter writes a new module, `mlxllm.tokenizer`, and adds
# the tokenized dataset to `mlxllm.data`.

# %%
#| default_exp tokenizer
import math
import sys
import tempfile
import time
import unicodedata
from collections import Counter
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np
import sentencepiece as spm
from matplotlib.patches import Rectangle

from mlxllm.book import Table, pick
from mlxllm.data import load_corpus, split_train_val

# %% [markdown]
# ## Characters, code points and bytes
#
# ### One token per character
#
# Start where chapter 1 ended: the vocabulary is the set of characters of the
# training text. Ask it to encode a short modern phrase.

# %%
text = load_corpus()
train_text, val_text = split_train_val(text)
train_chars = sorted(set(train_text))
modern = "a naïve café, 5 €"
unseen = sorted(set(modern) - set(train_chars))
print(len(train_chars), "characters:", repr("".join(train_chars)))
print("not in the vocabulary:", unseen)
assert text.isascii()

# %% [markdown]
# Shakespeare needs only {{ len(train_chars) }} symbols, and {{ len(unseen) }}
# characters of a phrase you could find on any menu are not among them, the
# digit included. A character tokenizer has no id to give them: it must either
# fail or map them all to one "unknown" id, and then the model cannot tell
# them apart or ever write them. Training on more text only moves the problem;
# somebody will always type a character your corpus lacked.
#
# ### Code points
#
# Unicode gives every character a number, its *code point*, which Python's
# `ord` returns. @tbl-utf8 shows four characters, from plain ASCII to a
# mathematical letter far outside it.

# %%
#| label: tbl-utf8
#| tbl-cap: Four characters, their Unicode code points and UTF-8 bytes.
Table(
    [(char, unicodedata.name(char).lower(), f"U+{ord(char):04X}",
      " ".join(f"{byte:02X}" for byte in char.encode("utf-8")))
     for char in "Aé€𝔸"],
    ["character", "Unicode name", "code point", "UTF-8 bytes (hex)"],
)

# %% [markdown]
# Using the code point itself as the token id would solve the unknown
# character: every character has one. But count how many there are.

# %%
n_code_points = sys.maxunicode + 1
n_assigned = sum(
    unicodedata.category(chr(point)) not in ("Cn", "Co", "Cs")
    for point in range(n_code_points)
)
print(f"{n_code_points:,} code points, {n_assigned:,} assigned "
      f"(Unicode {unicodedata.unidata_version})")

# %% [markdown]
# A vocabulary of {{ n_code_points:, }} ids, {{ n_assigned:, }} of them
# assigned to characters, means an embedding table with that many rows, and
# almost all of them would belong to characters that never occur in the
# training text: rows that training never updates, waiting to produce
# nonsense the day they are used. And the sequences are still one token per
# character.
#
# ### Bytes
#
# UTF-8 stores each code point as one to four bytes, as the last column of
# @tbl-utf8 shows: ASCII characters take one byte, so ASCII text is unchanged,
# and everything else takes more. Tokenize the bytes instead of the characters
# and the vocabulary has exactly 256 ids, whatever the text: no character is
# ever unknown, because every string is some sequence of bytes. The price is
# length. Tiny Shakespeare is pure ASCII (the first listing checks it), so its
# bytes are its characters, but the phrase above has {{ len(modern) }}
# characters and {{ len(modern.encode("utf-8")) }} bytes.
#
# Byte pair encoding buys the length back. Start from the bytes, find the
# pair of neighbouring tokens that occurs most often, make it a new token,
# and repeat. Each merge adds one id to the vocabulary and shortens every
# sequence that contains the pair. The idea began as a data compression
# scheme (Gage, 1994), was used to split rare words into known pieces for
# machine translation (Sennrich et al., 2016), and was run on bytes rather
# than characters for GPT-2, so that one vocabulary covers every string
# (Radford et al., 2019). You choose the vocabulary size, and with it the
# trade-off between a small embedding table and short sequences.
#
# ## Byte pair encoding, the plain way
#
# Everything BPE does rests on one operation: replace a pair of neighbouring
# ids with a new id. The first exported cell holds it, with the imports the
# whole module needs.

# %%
#| export
import functools
import hashlib
import heapq
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TypeVar

import regex


def merge_pair(
    ids: list[int], pair: tuple[int, int], new_id: int
) -> list[int]:
    """`ids` with every `pair`, scanned left to right, replaced by `new_id`."""
    merged, i = [], 0
    while i < len(ids):
        if ids[i] == pair[0] and i + 1 < len(ids) and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged

# %% [markdown]
# Notice the scan from the left, which settles overlaps: in `a a a`, the
# pair `a a` is replaced once, at the start, and the last `a` stays. Training
# repeats three steps: count every pair of neighbours, pick the most frequent,
# merge it everywhere. New ids start at 256, right after the bytes.

# %%
#| export
def most_frequent(counts: Counter) -> tuple[int, int]:
    """The pair with the highest count; among equal counts, the smallest."""
    return min(counts, key=lambda pair: (-counts[pair], pair))


def train_bpe_plain(
    chunks: list[bytes], num_merges: int
) -> list[tuple[int, int]]:
    """Learn merges by recounting every pair of every chunk before each one."""
    words = [list(chunk) for chunk in chunks]
    merges = []
    for new_id in range(256, 256 + num_merges):
        counts = Counter()
        for word in words:
            counts.update(zip(word, word[1:]))
        if not counts:
            break  # every chunk is a single token: nothing left to merge
        pair = most_frequent(counts)
        words = [merge_pair(word, pair, new_id) for word in words]
        merges.append(pair)
    return merges

# %% [markdown]
# The trainer works on a list of *chunks*, pieces of text that merges never
# cross; the next section says where they come from. It returns the merges in
# the order it learned them, and that list is the whole tokenizer: merge $k$
# creates id $256 + k$.
#
# Look at `most_frequent`. When two pairs share the highest count, something
# has to choose, and "whichever the counter saw first" would tie the result to
# the order of the text and of the code that counts. Here the smallest pair
# wins, compared as tuples of ids. That makes training deterministic: the same
# text gives the same merges on every machine, so a tokenizer file can be
# identified by its contents, and the fast trainer below can be checked
# against this one merge for merge.
#
# Gage's own example is the string `aaabdaaabac`. Train three merges and name
# the new tokens Z, Y and X, as the usual textbook telling does.

# %%
example = b"aaabdaaabac"
gage_merges = train_bpe_plain([example], 3)
names = {256: "Z", 257: "Y", 258: "X"}
gage_ids = list(example)
for new_id, pair in enumerate(gage_merges, start=256):
    gage_ids = merge_pair(gage_ids, pair, new_id)
    shown = [names.get(i, chr(i)) for i in pair]
    print(f"{names[new_id]} = {'+'.join(shown)}: "
          + "".join(names.get(i, chr(i)) for i in gage_ids))
assert gage_merges == [(97, 97), (97, 98), (256, 257)]

# %% [markdown]
# First `aa` becomes Z (counting the overlapping pairs inside `aaa`, it is
# the commonest pair), then `ab` becomes Y, then ZY becomes X:
# {{ len(example) }} bytes in {{ len(gage_ids) }} tokens. In the second
# step `ab` and `Za` both occur twice; the tie goes to `ab` because its ids,
# (97, 98), are the smaller pair.
#
# ## Chunks: splitting the text first
#
# Run BPE over raw text and it will happily merge across word boundaries:
# `e t` from "the tide", `d.` and `d,` and `d!` glued to the end of every word
# that ends a clause. A vocabulary full of "dog." and "dog!" and "dog?" spends
# many ids on one word. GPT-2 avoids this by splitting the text with a regular
# expression into words, numbers, runs of punctuation and runs of whitespace,
# and learning merges only inside those chunks (Radford et al., 2019). Its
# pattern needs the `regex` package, because Python's `re` does not know
# Unicode classes such as `\p{L}`, "any letter in any script".

# %%
#| export
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
    r"""|\s+(?!\S)|\s+"""
)


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Split text into the chunks BPE works inside; merges never cross them."""
    return regex.findall(pattern, text)

# %% [markdown]
# Read the alternatives left to right; the first that matches wins. English
# contractions (`'s`, `'ll`, ...) are chunks of their own. Then come letters,
# digits and other symbols, each run allowed one leading space, so that
# `" the"` is one chunk and the space belongs to the word after it. Whitespace
# that is not followed by a non-space comes last (`\s+(?!\S)`), which leaves
# the final space of a run for the next word. Here is the start of the
# corpus, chunk by chunk:

# %%
print("|".join(pretokenize(train_text[:80])))

# %% [markdown]
# Notice the space at the start of most chunks and the newlines on their
# own. One quirk is worth knowing: the contractions are lowercase only, so
# `'S` in a shouted line splits differently from `'s`. Later tokenizers fix
# that, which exercise 3.1 explores.
#
# ### The first merges on Shakespeare
#
# Now train on real text. The plain trainer is slow, as you will measure in
# a moment, so it gets a slice of the training text. The chunks go in as
# UTF-8 bytes.

# %%
plain_slice = train_text[:pick(smoke=3_000, book=100_000)]
slice_chunks = [chunk.encode("utf-8") for chunk in pretokenize(plain_slice)]
first_merges = train_bpe_plain(slice_chunks, 12)

# %% [markdown]
# To read merges you need the bytes each id stands for: the 256 bytes, then,
# for each merge in order, its two pieces joined. A merge may only use ids
# that exist already, which the function checks, since this is also how a
# tokenizer file is rebuilt.

# %%
#| export
def merged_pieces(merges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of every id: the 256 bytes, then each merge's two joined."""
    pieces = [bytes([byte]) for byte in range(256)]
    for a, b in merges:
        if not (0 <= a < len(pieces) and 0 <= b < len(pieces)):
            raise ValueError(f"merge ({a}, {b}) for id {len(pieces)} "
                             "uses an id that does not exist yet")
        pieces.append(pieces[a] + pieces[b])
    return pieces

# %%
def show(piece: bytes) -> str:
    """A token as visible text: ␣ for a space, ↵ for a newline, <hex> for
    bytes that are not text on their own."""
    try:
        text = piece.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(f"<{byte:02X}>" for byte in piece)
    return text.replace(" ", "␣").replace("\n", "↵")


first_pieces = merged_pieces(first_merges)

# %%
#| echo: false
#| label: tbl-first-merges
#| tbl-cap: The first merges learned from the start of Tiny Shakespeare.
Table(
    [(256 + rank, f"({a}, {b})", show(first_pieces[a]),
      show(first_pieces[b]), show(first_pieces[256 + rank]))
     for rank, (a, b) in enumerate(first_merges)],
    ["new id", "pair", "left", "right", "token"],
)

# %% [markdown]
# @tbl-first-merges lists them, with ␣ standing for a space. The first merges
# join the commonest letter pairs of English and glue spaces to the front of
# words; within a dozen merges, whole short words such as `␣the` appear,
# built from tokens made a few merges earlier.
#
# ## A fast trainer
#
# The plain trainer recounts every pair of every chunk before each merge, so
# its work grows with the number of merges times the length of the text.
# Three observations make training fast.
#
# 1. **Words repeat.** The training text splits into
#    {{ n_train_chunks:, }} chunks but only {{ n_distinct_chunks:, }}
#    distinct ones. Count each distinct chunk once, with its frequency, and
#    weight its pairs by that frequency.
# 2. **A merge touches few chunks.** Keep the pair counts between merges,
#    and an index from each pair to the chunks that contain it. After a
#    merge, only those chunks change: subtract their old pairs, add their
#    new ones.
# 3. **The best pair can wait in a heap.** A heap of `(-count, pair)` entries
#    pops the highest count first and, since tuples compare element by
#    element, the smallest pair among equal counts: the very tie rule of
#    `most_frequent`. When a count changes you push a new entry rather than
#    find the old one; an entry whose count no longer matches is stale, and is
#    thrown away when it surfaces.
#
# Two helpers build the counts and index, and pop the best live entry.

# %%
#| export
def index_pairs(
    words: list[list[int]], weights: list[int]
) -> tuple[Counter, defaultdict]:
    """Pair counts, weighted by chunk frequency, and pair -> chunk indices."""
    counts: Counter = Counter()
    where: defaultdict = defaultdict(set)
    for index, word in enumerate(words):
        for pair in zip(word, word[1:]):
            counts[pair] += weights[index]
            where[pair].add(index)
    return counts, where


def pop_best(heap: list, counts: Counter) -> tuple[int, int] | None:
    """Pop entries until one matches its pair's current count, or None."""
    while heap:
        negative_count, pair = heapq.heappop(heap)
        if counts.get(pair) == -negative_count:
            return pair
    return None

# %% [markdown]
# The trainer itself keeps the shape of the plain one: pick a pair, merge
# it, record it. Only the bookkeeping differs.

# %%
#| export
def train_bpe_fast(
    chunks: Iterable[bytes], num_merges: int
) -> list[tuple[int, int]]:
    """train_bpe_plain's merges, updating only the chunks a merge touches."""
    frequency = Counter(chunks)
    words = [list(chunk) for chunk in frequency]
    weights = list(frequency.values())
    counts, where = index_pairs(words, weights)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges = []
    for new_id in range(256, 256 + num_merges):
        pair = pop_best(heap, counts)
        if pair is None:
            break  # every chunk is a single token: nothing left to merge
        changed = set()
        for index in where.pop(pair):
            old, weight = words[index], weights[index]
            new = merge_pair(old, pair, new_id)
            if len(new) == len(old):
                continue  # a stale index entry: an earlier merge took the pair
            words[index] = new
            for gone in zip(old, old[1:]):
                counts[gone] -= weight
                changed.add(gone)
            for made in zip(new, new[1:]):
                counts[made] += weight
                changed.add(made)
                where[made].add(index)
        for changed_pair in changed:
            if counts[changed_pair] > 0:
                heapq.heappush(heap, (-counts[changed_pair], changed_pair))
            else:
                del counts[changed_pair]
        merges.append(pair)
    return merges

# %% [markdown]
# Notice what is *not* kept exact: when a merge takes a pair apart inside a
# chunk, that chunk stays listed under the pair. Keeping the index exact
# would cost work on every merge; a stale entry costs one `merge_pair` call
# that changes nothing, which the length check spots. The merged pair itself
# loses its whole count on the way and is deleted, so it never comes back.
#
# Now the claim that matters: both trainers learn the same merges from the
# same chunks, and the fast one is much faster. Run both at a few vocabulary
# sizes on the slice of text from before.

# %%
speed_sizes = pick(smoke=[264, 288, 320], book=[320, 512, 768, 1024])
speed_rows = []
for size in speed_sizes:
    start = time.perf_counter()
    plain = train_bpe_plain(slice_chunks, size - 256)
    plain_seconds = time.perf_counter() - start
    fast_seconds = math.inf
    for _ in range(3):  # the fast trainer is quick: keep its best of three
        start = time.perf_counter()
        fast = train_bpe_fast(slice_chunks, size - 256)
        fast_seconds = min(fast_seconds, time.perf_counter() - start)
    assert fast == plain, f"the trainers disagree at vocabulary {size}"
    speed_rows.append((size, plain_seconds, fast_seconds,
                       plain_seconds / fast_seconds))
speedup_1024 = speed_rows[-1][3]
plain_total_seconds = sum(row[1] for row in speed_rows)
plain_4096_minutes = (plain_seconds / (speed_sizes[-1] - 256) * (4096 - 256)
                      * len(train_text) / len(plain_slice) / 60)

# %%
#| echo: false
#| label: tbl-speed
#| tbl-cap: Training time of the two trainers on the same slice of text.
Table(
    [(size, plain_s, fast_s, f"{ratio:.0f}×", "yes")
     for size, plain_s, fast_s, ratio in speed_rows],
    ["vocabulary", "plain (s)", "fast (s)", "speed-up", "same merges"],
    digits=3,
)

# %% [markdown]
# @tbl-speed shows the result on {{ len(plain_slice):, }} characters. The
# assertion in the loop checked every merge list for equality, so "same
# merges" is not a hope but a check. The plain trainer needed
# {{ plain_total_seconds:.0f }} seconds for the whole table; the fast one is
# {{ speedup_1024:.0f }} times faster at the largest vocabulary, and the gap
# widens as the vocabulary grows, because each plain merge costs a full pass
# over the text while a fast merge costs only the chunks it touches. Scaled up
# from the last row to {{ len(train_text) / len(plain_slice):.0f }} times the
# text and {{ (4096 - 256) / (speed_sizes[-1] - 256):.0f }} times the merges,
# the plain trainer would need roughly {{ plain_4096_minutes:.0f }} minutes
# for a vocabulary of {{ vocab_size:, }} on the whole training split: an
# extrapolation, not a measurement, and the reason not to run it.
#
# With the fast trainer, the full training split is no longer a wait.

# %%
start = time.perf_counter()
train_chunks = [chunk.encode("utf-8") for chunk in pretokenize(train_text)]
vocab_size = 4096
shakespeare_merges = train_bpe_fast(train_chunks, vocab_size - 256)
fast_4096_seconds = time.perf_counter() - start
n_train_chunks, n_distinct_chunks = len(train_chunks), len(set(train_chunks))
print(f"{len(shakespeare_merges):,} merges in {fast_4096_seconds:.2f} s")

# %% [markdown]
# That is a vocabulary of {{ vocab_size:, }} from {{ len(train_text):, }}
# characters in {{ fast_4096_seconds:.1f }} seconds, splitting included.
#
# ## Encoding and decoding
#
# ### Encoding: merges in the order they were learned
#
# To encode new text, split it into chunks as in training, then replay the
# merges on each chunk. The order matters: `␣the` was made from `␣t` and
# `he`, so both must exist before it can; applied in another order, the
# merges could cut the same word differently from training. Since merge $k$
# made id $256 + k$, the id *is* the rank: at each step, among the pairs
# present in the chunk that have a merge, apply the one with the smallest new
# id.

# %%
#| export
def encode_chunk(
    chunk: bytes, merge_ids: dict[tuple[int, int], int]
) -> list[int]:
    """Token ids of one chunk: its bytes, merged in the order of training."""
    ids = list(chunk)
    while len(ids) > 1:
        pairs = set(zip(ids, ids[1:])) & merge_ids.keys()
        if not pairs:
            break
        pair = min(pairs, key=merge_ids.__getitem__)
        ids = merge_pair(ids, pair, merge_ids[pair])
    return ids

# %% [markdown]
# Try it on a few chunks of the validation text with the merges you just
# learned; `pieces` maps each id back to its bytes.

# %%
merge_ids = {pair: 256 + rank for rank, pair in enumerate(shakespeare_merges)}
pieces = merged_pieces(shakespeare_merges)
for word in [" king", " Baptista", " neighbour", " whoreson"]:
    word_ids = encode_chunk(word.encode("utf-8"), merge_ids)
    shown = "|".join(show(pieces[i]) for i in word_ids)
    print(f"{word!r:12} {str(word_ids):22} {shown}")

# %%
#| echo: false
#| label: fig-bpe-merges
#| fig-cap: The steps of `encode_chunk` on the chunk ` neighbour` with the 4,096-id tokenizer trained above, one merge per row. Each step merges the pair with the smallest id among those present (shaded: the new token); a box is as wide as the bytes its token covers. The last row is the split the listing printed.
merge_word = " neighbour"
merge_states = [(list(merge_word.encode("utf-8")), None)]
while True:  # encode_chunk's loop, keeping every step
    word_state = merge_states[-1][0]
    present = set(zip(word_state, word_state[1:])) & merge_ids.keys()
    if not present:
        break
    merged = min(present, key=merge_ids.__getitem__)
    merge_states.append((merge_pair(word_state, merged, merge_ids[merged]),
                         merged))
assert merge_states[-1][0] == encode_chunk(merge_word.encode("utf-8"),
                                           merge_ids)
merged_split = "|".join(show(pieces[i]) for i in merge_states[-1][0])

width = len(merge_word.encode("utf-8"))
fig, ax = plt.subplots(figsize=(5.2, 0.32 * len(merge_states) + 0.3))
for row, (word_state, merged) in enumerate(merge_states):
    new_id = merge_ids[merged] if merged else None
    x = 0
    for token in word_state:
        span = len(pieces[token])
        ax.barh(row + 0.4, span, 0.8, x, edgecolor="black", linewidth=0.7,
                color="#E69F00" if token == new_id else "#eeeeee")
        ax.text(x + span / 2, row + 0.4, show(pieces[token]), ha="center",
                va="center", fontsize=8.5, family="DejaVu Sans Mono")
        x += span
    step = ("bytes" if merged is None else f"id {new_id:,} = "
            f"{show(pieces[merged[0]])} + {show(pieces[merged[1]])}")
    ax.text(width + 0.6, row + 0.4, step, va="center", fontsize=8,
            family="DejaVu Sans Mono")
ax.set_xlim(-0.2, width + 8.5)
ax.set_ylim(len(merge_states), -0.2)
ax.set_axis_off()

# %% [markdown]
# Frequent words are one token, and so is a name the plays repeat often
# enough; rarer words split into pieces that are themselves frequent, and
# the pieces need not be syllables. Nothing is ever unknown: in the worst
# case a chunk stays as its bytes. In @fig-bpe-merges, common pairs such
# as `ou` and `␣n` have small ids and merge first; longer pieces are built
# from them, and the word ends as {{ merged_split }}, where no learned
# merge joins what is left.
#
# ### Decoding never fails
#
# Decoding is the easy direction: look up each id's bytes, join them, and
# decode the bytes as UTF-8. But not every list of ids is valid UTF-8. A
# model picks ids one at a time and may pick the first byte of a three-byte
# character and then something else; or you may cut a sequence in the middle
# of a character. The euro sign is three bytes, so cut the phrase from the
# start of the chapter inside it:

# %%
price_ids = list(" 5 €".encode())
for cut in range(len(price_ids) - 2, len(price_ids) + 1):
    data = b"".join(pieces[i] for i in price_ids[:cut])
    print(price_ids[:cut], repr(data.decode("utf-8", errors="replace")))
try:
    b"".join(pieces[i] for i in price_ids[:-1]).decode("utf-8")
except UnicodeDecodeError as error:
    strict_error = str(error)
print(strict_error)

# %% [markdown]
# A strict decode raises, and a crash in the middle of generating text is the
# wrong reaction to a model's mistake. With `errors="replace"`, the
# incomplete character becomes the replacement character U+FFFD, shown as �,
# and everything around it survives. The tokenizer's `decode` does exactly
# this, so it never fails on ids from its vocabulary. The flip side is for
# streaming: a program that prints tokens as they arrive must hold back an
# incomplete character until its last byte comes, or it prints � for a
# character that was about to be fine.
#
# ## Special tokens
#
# Some ids stand for no text at all: `<|endoftext|>` marks where one document
# ends and the next begins, and chat models add tokens for who is speaking.
# They get ids after the merges, and they come with a danger: if encoding
# turned the characters `<|endoftext|>` in a user's text into the special id,
# the user could end a document, or pose as another speaker, just by typing.
# So `encode` takes `allowed_special`: the set of special tokens that may
# become their ids (empty by default), `"all"`, or `"none"` to encode every
# one as ordinary text. Text that holds a special token which is not
# allowed, unless you said `"none"`, raises `SpecialTokenError` with the
# token and the fix. The error is the safe default: nobody gets the special
# id when they meant the text, or the text when they meant the id.

# %%
#| export
class SpecialTokenError(ValueError):
    """Text held a special token that encode was not allowed to emit."""


def allowed_specials(
    text: str, specials: Collection[str], allowed: str | Collection[str]
) -> set[str]:
    """The specials encode may emit for `text`; raise if it holds another."""
    if allowed == "none":
        return set()
    if allowed == "all":
        return set(specials)
    if isinstance(allowed, str):
        raise ValueError(f"allowed_special must be 'all', 'none' or a set of "
                         f"special tokens, not {allowed!r}")
    if unknown := set(allowed) - set(specials):
        raise ValueError(f"not special tokens here: {sorted(unknown)}")
    for token in set(specials) - set(allowed):
        if token in text:
            raise SpecialTokenError(
                f"the text contains the special token {token!r}; pass "
                f"allowed_special={{{token!r}}} (or 'all') to encode it as "
                "its id, or allowed_special='none' to encode it as ordinary "
                "text")
    return set(allowed)


def split_on_specials(text: str, specials: Collection[str]) -> list[str]:
    """`text` cut around the special tokens, which land at odd positions."""
    if not specials:
        return [text]
    longest_first = sorted(specials, key=len, reverse=True)
    separator = "(" + "|".join(map(regex.escape, longest_first)) + ")"
    return regex.split(separator, text)

# %% [markdown]
# Notice that an allowed set naming a token the tokenizer does not have is
# an error too: a typo should not silently allow nothing. `split_on_specials`
# does the cutting for `encode`: thanks to the capture group in its pattern,
# `regex.split` keeps the separators, so the special tokens sit at the odd
# positions of the result and the ordinary text between them at the even
# ones. Longer tokens are tried first, in case one special token starts with
# another.
#
# ## A file you can read
#
# A model is useless without the exact tokenizer it was trained with, so the
# file that holds the merges, the split pattern and the special tokens
# matters more than its size suggests. This one is plain text, one fact per
# line, so that you can open it and see what it holds:
#
# - a first line with a *magic* word and a version, `mlxllm-bpe 1`, so that a
#   reader knows at once whether this is a file it understands;
# - sections, each a line `name: N` followed by its N lines: the `pattern`,
#   the `specials` (one per line) and the `merges` (two ids per line);
# - a last line, `end`.
#
# The counts and the last line catch truncation: a file cut short anywhere,
# even inside the last merge, does not have its `end` where the counts say.
# The version lets a later format be refused with a clear message instead
# of misread. Every problem raises `TokenizerFileError`, which names the
# file and what is wrong with it.

# %%
#| export
FILE_VERSION = 1


class TokenizerFileError(ValueError):
    """A tokenizer file that is damaged, truncated or of another kind."""


def read_sections(path: str | Path, magic: str) -> dict[str, list[str]]:
    """The sections of a tokenizer file, after checking its frame."""
    try:
        lines = Path(path).read_bytes().decode("utf-8").split("\n")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(f"{path}: not UTF-8 text ({error})") from None
    if lines[0] != f"{magic} {FILE_VERSION}":
        raise TokenizerFileError(
            f"{path}: line 1 is {lines[0][:40]!r}, not '{magic} "
            f"{FILE_VERSION}': another kind of file, or another version")
    sections, number = {}, 1
    while number < len(lines) and lines[number] != "end":
        name, _, count = lines[number].partition(": ")
        if not (count.isascii() and count.isdigit()):
            raise TokenizerFileError(
                f"{path}: line {number + 1} is {lines[number][:40]!r}, "
                "not a section header 'name: count' or 'end'")
        sections[name] = lines[number + 1:number + 1 + int(count)]
        number += 1 + int(count)
    if lines[number:] != ["end", ""]:
        raise TokenizerFileError(
            f"{path}: no 'end' line where the counts put it: the file is "
            "truncated, or has more after its end")
    return sections

# %% [markdown]
# Notice the bytes are decoded by hand: text mode would quietly turn a `\r`
# inside a special token into a newline, and a file that is not text at all,
# a zip archive say, fails with a message that says so. A file that does not
# exist raises Python's usual `FileNotFoundError`. The final `split("\n")`
# leaves an empty string after the last newline, which is why the frame ends
# with `["end", ""]`: a file that lost only its final newline fails too.
#
# Any tokenizer that can list its sections (`_sections`) and rebuild itself
# from them (`_from_sections`) gets `save`, `load` and `fingerprint` from a
# small base class.

# %%
#| export
TokenizerT = TypeVar("TokenizerT", bound="SavedTokenizer")


class SavedTokenizer(ABC):
    """save, load and fingerprint, for a tokenizer that lists its sections."""

    magic = "mlxllm-tokenizer"

    def file_text(self) -> str:
        """The saved form: magic line, `name: N` + N lines per section, end."""
        lines = [f"{self.magic} {FILE_VERSION}"]
        for name, section in self._sections().items():
            lines += [f"{name}: {len(section)}", *section]
        return "\n".join([*lines, "end"]) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as the small text file of file_text."""
        Path(path).write_text(self.file_text(), encoding="utf-8", newline="\n")

    def fingerprint(self) -> str:
        """SHA-256 of the saved form: same fingerprint, same tokenizer."""
        return hashlib.sha256(self.file_text().encode("utf-8")).hexdigest()

    @classmethod
    def load(cls: type[TokenizerT], path: str | Path) -> TokenizerT:
        """Read a file written by save; TokenizerFileError if it is damaged."""
        sections = read_sections(path, cls.magic)
        try:
            return cls._from_sections(sections)
        except KeyError as error:
            raise TokenizerFileError(f"{path}: no section {error}") from None
        except (ValueError, regex.error) as error:
            raise TokenizerFileError(f"{path}: {error}") from None

    @abstractmethod
    def _sections(self) -> dict[str, list[str]]: ...

    @classmethod
    @abstractmethod
    def _from_sections(cls: type[TokenizerT],
                       sections: dict[str, list[str]]) -> TokenizerT: ...

# %% [markdown]
# `load` lets `read_sections` check the frame, then turns any complaint of
# the tokenizer about the contents (a section missing, a merge that is not
# two numbers or uses an id not made yet, a pattern that is not a regular
# expression) into a `TokenizerFileError` that names the file.
# `fingerprint` hashes the saved form, so two tokenizers with the same
# fingerprint encode every text the same way, and a cache of encoded text
# can trust it as a key.
#
# ## The library face
#
# The library wraps the functions of this chapter in two classes with one
# interface, `CharTokenizer` and `BPETokenizer`, so that a training script
# can take either. What they share lives in one more base class: the table
# from id to bytes, the special tokens, `encode`'s checks and `decode`. Each
# subclass supplies how to encode ordinary text, and its sections.

# %%
#| export
class Tokenizer(SavedTokenizer):
    """What both tokenizers share: ids to bytes, special tokens, decoding."""

    def __init__(self, pieces: list[bytes],
                 special_tokens: Iterable[str] = ()) -> None:
        self.pieces = list(pieces)  # token id -> the bytes it stands for
        self.special_tokens: dict[str, int] = {}
        self.register_special_tokens(special_tokens)

    @property
    def vocab_size(self) -> int:
        """How many ids the tokenizer uses, special tokens included."""
        return len(self.pieces)

    def register_special_tokens(self, tokens: Iterable[str]) -> None:
        """Give each new special token the next free id."""
        for token in tokens:
            if not token or "\n" in token:
                raise ValueError(f"a special token is one line: {token!r}")
            if token not in self.special_tokens:
                self.special_tokens[token] = len(self.pieces)
                self.pieces.append(token.encode("utf-8"))

    def encode(self, text: str,
               allowed_special: str | Collection[str] = frozenset()
               ) -> list[int]:
        """Token ids of `text`; specials only as allowed_special allows."""
        allowed = allowed_specials(text, self.special_tokens, allowed_special)
        parts = split_on_specials(text, allowed)
        ids = self._encode_ordinary(parts[0])
        for special, ordinary in zip(parts[1::2], parts[2::2]):
            ids.append(self.special_tokens[special])
            ids += self._encode_ordinary(ordinary)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; bytes that are not valid UTF-8 become U+FFFD."""
        ids = list(ids)
        if ids and not 0 <= min(ids) <= max(ids) < len(self.pieces):
            raise ValueError(f"token ids run from 0 to {len(self.pieces) - 1}")
        data = b"".join([self.pieces[i] for i in ids])
        return data.decode("utf-8", errors="replace")

    @abstractmethod
    def _encode_ordinary(self, text: str) -> list[int]: ...

# %% [markdown]
# `register_special_tokens` appends each new special token to the id table,
# which is why specials always come after the merges, whether you register
# them at training or later. `encode` asks `allowed_specials` what it may
# emit and cuts the text around those tokens: the first part is ordinary
# text, then come pairs of a special token and the text after it. `decode`
# checks the ids first (a negative id would otherwise index from the end of
# the list) and then does what you saw above.
#
# `BPETokenizer` adds the merges, the pattern and a cache.

# %%
#| export
class BPETokenizer(Tokenizer):
    """Byte-level BPE: UTF-8 bytes, merged in learned order inside chunks."""

    magic = "mlxllm-bpe"

    def __init__(self, merges: list[tuple[int, int]],
                 pattern: str = GPT2_SPLIT_PATTERN,
                 special_tokens: Iterable[str] = ()) -> None:
        super().__init__(merged_pieces(merges), special_tokens)
        self.merges = [(a, b) for a, b in merges]
        self.merge_ids = {pair: 256 + k for k, pair in enumerate(self.merges)}
        self.pattern, self.splitter = pattern, regex.compile(pattern)
        self.chunk_ids = functools.lru_cache(maxsize=1 << 16)(
            lambda chunk: tuple(encode_chunk(chunk.encode(), self.merge_ids)))

    @classmethod
    def train(cls, text: str, vocab_size: int,
              pattern: str = GPT2_SPLIT_PATTERN,
              special_tokens: Iterable[str] = ()) -> "BPETokenizer":
        """Learn vocab_size - 256 - len(special_tokens) merges from `text`."""
        special_tokens = list(special_tokens)
        num_merges = vocab_size - 256 - len(special_tokens)
        if num_merges < 0:
            raise ValueError(f"vocab_size {vocab_size} leaves no room for 256 "
                             f"bytes and {len(special_tokens)} special tokens")
        chunks = [chunk.encode("utf-8")
                  for part in split_on_specials(text, special_tokens)[::2]
                  for chunk in pretokenize(part, pattern)]
        return cls(train_bpe_fast(chunks, num_merges), pattern, special_tokens)

    def _encode_ordinary(self, text: str) -> list[int]:
        return [i for chunk in self.splitter.findall(text)
                for i in self.chunk_ids(chunk)]

    def _sections(self) -> dict[str, list[str]]:
        return {"pattern": [self.pattern],
                "specials": list(self.special_tokens),
                "merges": [f"{a} {b}" for a, b in self.merges]}

    @classmethod
    def _from_sections(cls, sections: dict[str, list[str]]) -> "BPETokenizer":
        (pattern,) = sections["pattern"]
        merges = [line.split(" ") for line in sections["merges"]]
        return cls([(int(a), int(b)) for a, b in merges], pattern,
                   sections["specials"])

# %% [markdown]
# `train` is `pretokenize` and `train_bpe_fast` with the vocabulary
# arithmetic done for you: `vocab_size` counts everything, the 256 bytes and
# the special tokens included, because that is the number the model's
# embedding table needs. Special tokens in the training text are cut out
# first (the even positions of `split_on_specials` are the text between
# them), so no merge learns half of one.
#
# The cache is where encoding gets its speed. Text repeats its chunks,
# `" the"` thousands of times in Shakespeare, so `encode` runs `encode_chunk`
# once per *distinct* chunk and looks the rest up in an `lru_cache` of the
# 65,536 chunks used most recently, which a stream of chunks that never
# repeat cannot grow past. The cached ids are tuples, which no caller can
# change by accident.
#
# `CharTokenizer` is chapter 1's tokenizer with the same face. Its ids are
# the sorted characters of the training text; `vocab_size`, if you give it,
# keeps only the most frequent characters.

# %%
#| export
class CharTokenizer(Tokenizer):
    """One token per character: chapter 1's tokenizer, as a library class."""

    magic = "mlxllm-char"

    def __init__(self, chars: Iterable[str],
                 special_tokens: Iterable[str] = ()) -> None:
        self.chars = list(chars)
        self.char_ids = {char: i for i, char in enumerate(self.chars)}
        if len(self.char_ids) < len(self.chars):
            raise ValueError("the characters must be distinct")
        pieces = [char.encode("utf-8") for char in self.chars]
        super().__init__(pieces, special_tokens)

    @classmethod
    def train(cls, text: str, vocab_size: int | None = None,
              special_tokens: Iterable[str] = ()) -> "CharTokenizer":
        """The sorted characters of `text`; with vocab_size, the commonest."""
        special_tokens = list(special_tokens)
        counts = Counter(text)
        keep = None if vocab_size is None else vocab_size - len(special_tokens)
        if keep is not None and keep < 1:
            raise ValueError(f"vocab_size {vocab_size} leaves no room")
        kept = sorted(counts, key=lambda char: (-counts[char], char))[:keep]
        return cls(sorted(kept), special_tokens)

    def _encode_ordinary(self, text: str) -> list[int]:
        try:
            return [self.char_ids[char] for char in text]
        except KeyError as error:
            (char,) = error.args
            raise ValueError(f"the character {char!r} (U+{ord(char):04X}) is "
                             "not in the vocabulary; BPETokenizer encodes any "
                             "text") from None

    def _sections(self) -> dict[str, list[str]]:
        return {"specials": list(self.special_tokens),
                "chars": [str(ord(char)) for char in self.chars]}

    @classmethod
    def _from_sections(cls, sections: dict[str, list[str]]) -> "CharTokenizer":
        chars = [chr(int(point)) for point in sections["chars"]]
        return cls(chars, sections["specials"])

# %% [markdown]
# Its file stores each character as its code point in decimal, one per line,
# because a newline or a space would be invisible written as itself.
#
# ## Using the tokenizers
#
# The merges you trained on the full training split become a tokenizer
# without training again.

# %%
tokenizer = BPETokenizer(shakespeare_merges)
text_bytes = len(text.encode("utf-8"))
start = time.perf_counter()
text_ids = tokenizer.encode(text)
cold_seconds = time.perf_counter() - start
start = time.perf_counter()
tokenizer.encode(text)
warm_seconds = time.perf_counter() - start
start = time.perf_counter()
tokenizer.splitter.findall(text)
split_share = (time.perf_counter() - start) / warm_seconds
encode_mb_per_s = text_bytes / cold_seconds / 1e6
warm_mb_per_s = text_bytes / warm_seconds / 1e6
print(f"{len(text_ids):,} tokens, {len(text) / len(text_ids):.2f} "
      f"characters per token")
print(f"encode: {encode_mb_per_s:.1f} MB/s with an empty cache, "
      f"{warm_mb_per_s:.1f} MB/s with a full one")
print(f"splitting alone takes {split_share:.0%} of the time with a full cache")
assert tokenizer.decode(text_ids) == text
assert tokenizer.decode(tokenizer.encode(modern)) == modern

# %% [markdown]
# The whole corpus, {{ text_bytes / 1e6:.1f }} MB, encodes at
# {{ encode_mb_per_s:.1f }} MB/s the first time and {{ warm_mb_per_s:.1f }}
# MB/s once every chunk is in the cache. At that point BPE costs little:
# timed alone, the regular expression that splits the text takes
# {{ split_share:.0% }} of the encoding time. The assertions show that
# decoding gives back the corpus exactly, and the modern phrase too, accents
# and euro sign included, though Shakespeare never used them: they simply
# stay bytes.
#
# ### Special tokens at work
#
# Register `<|endoftext|>` and encode a text that contains it, once with each
# setting.

# %%
tokenizer.register_special_tokens(["<|endoftext|>"])
documents = "Exeunt.<|endoftext|>ACT I"
assert tokenizer.special_tokens["<|endoftext|>"] == vocab_size
for setting in ({"<|endoftext|>"}, "none"):
    special_ids = tokenizer.encode(documents, allowed_special=setting)
    assert tokenizer.decode(special_ids) == documents
    print(special_ids)
try:
    tokenizer.encode(documents)
except SpecialTokenError as error:
    special_message = str(error)
print(special_message)

# %% [markdown]
# The special token got id {{ tokenizer.special_tokens["<|endoftext|>"] }},
# the first after the merges. Encoded as ordinary text it takes several
# tokens; either way the ids decode to the same characters. Without a
# choice, encoding refuses and tells you both ways out.
#
# ### Saving, loading and fingerprints
#
# Save the tokenizer and look at the first lines of its file.

# %%
work_dir = Path(tempfile.mkdtemp())
tokenizer_path = work_dir / "shakespeare.bpe"
tokenizer.save(tokenizer_path)
file_lines = tokenizer_path.read_text(encoding="utf-8").split("\n")
print("\n".join(file_lines[:8]))
loaded = BPETokenizer.load(tokenizer_path)
assert loaded.fingerprint() == tokenizer.fingerprint()
assert loaded.encode(documents, allowed_special="all") == tokenizer.encode(
    documents, allowed_special="all")
print("fingerprint", tokenizer.fingerprint()[:16], "...")

# %% [markdown]
# The merges are stored as ids, not as text, because the bytes of a token
# need not be valid text on their own: a merge may join half of a character
# to something else. Ids are what encoding needs anyway, and
# `merged_pieces` turns them back into bytes. The loaded tokenizer has the
# same fingerprint and encodes identically. Now cut the file in half, as an
# interrupted copy would, and load what is left.

# %%
truncated_path = work_dir / "truncated.bpe"
truncated_path.write_text("\n".join(file_lines[: len(file_lines) // 2]))
try:
    BPETokenizer.load(truncated_path)
except TokenizerFileError as error:
    print(str(error).replace(str(work_dir), "..."))

# %% [markdown]
# The message names the file (its folder shortened here to `...`) and what
# is wrong. Other damage, from a newer format version to a JSON file, gets
# a message of its own; the library's tests try a dozen kinds.
#
# The character tokenizer, for comparison, refuses the modern phrase by
# naming the first character it does not know.

# %%
char_tokenizer = CharTokenizer.train(train_text)
try:
    char_tokenizer.encode(modern)
except ValueError as error:
    char_message = str(error)
print(char_tokenizer.vocab_size, "ids;", char_message)
assert char_tokenizer.decode(char_tokenizer.encode(val_text)) == val_text

# %% [markdown]
# ## What the tokenizer learned
#
# ### Compression against vocabulary size
#
# Training is greedy and deterministic, so the first $k$ merges of a large
# vocabulary are exactly the merges of a smaller one. Train once at
# {{ sweep_sizes[-1]:, }} and every smaller tokenizer is a prefix of its
# merges (the listing checks it for {{ vocab_size:, }}). The measure
# that matters is *compression*, characters per token, and it must be
# measured on text the tokenizer did not train on: like a model, a
# tokenizer can fit its training text better than text it has never seen.

# %%
sweep_sizes = [256, 512, 1024, 2048, 4096, 8192]
largest = BPETokenizer.train(train_text, sweep_sizes[-1])
assert largest.merges[:vocab_size - 256] == shakespeare_merges
sweep = {size: BPETokenizer(largest.merges[:size - 256])
         for size in sweep_sizes}
n_train_tokens = {size: len(sweep[size].encode(train_text))
                  for size in sweep_sizes}
val_tokens = {size: len(sweep[size].encode(val_text)) for size in sweep_sizes}
train_compression = {s: len(train_text) / n for s, n in n_train_tokens.items()}
val_compression = {s: len(val_text) / n for s, n in val_tokens.items()}
assert all(train_compression[s] >= val_compression[s] for s in sweep_sizes)

# %%
#| label: fig-compression
#| fig-cap: Characters per token against vocabulary size, on the training text and on the validation text the tokenizer never saw.
plt.plot(sweep_sizes, list(train_compression.values()), marker="o",
         label="BPE, training text")
plt.plot(sweep_sizes, list(val_compression.values()), marker="s",
         label="BPE, validation text")
plt.plot([char_tokenizer.vocab_size], [1.0], marker="D", linestyle="none",
         label="characters")
plt.xscale("log", base=2)
size_ticks = [char_tokenizer.vocab_size, *sweep_sizes]
plt.xticks(size_ticks, [f"{n:,}" for n in size_ticks])
plt.minorticks_off()
plt.xlabel("vocabulary size (ids)")
plt.ylabel("characters per token")
plt.legend()

# %% [markdown]
# @fig-compression shows diminishing returns. The first 256 merges nearly
# double the characters per token on the validation text, to
# {{ val_compression[512]:.2f }}; going from {{ vocab_size:, }} to
# {{ sweep_sizes[-1]:, }} ids buys only
# {{ val_compression[8192] - val_compression[4096]:.2f }} more. Meanwhile
# the gap between the two curves widens: at {{ sweep_sizes[-1]:, }} the
# tokenizer compresses its training text {{ train_compression[8192]:.2f }}
# characters per token but new text only {{ val_compression[8192]:.2f }}.
# The later merges spell out ever rarer words of the training text, names
# and all, and new text contains fewer of them.
#
# ### How long the tokens are
#
# @fig-token-lengths counts token lengths two ways: over the
# {{ vocab_size:, }} entries of the vocabulary, and over the tokens that
# actually occur when the validation text is encoded.

# %%
#| label: fig-token-lengths
#| fig-cap: Token lengths in bytes, over the vocabulary of 4,096 ids and over the tokens of the encoded validation text.
vocab_lengths = Counter(len(piece) for piece in sweep[vocab_size].pieces)
used_lengths = Counter(len(sweep[vocab_size].pieces[i])
                       for i in sweep[vocab_size].encode(val_text))
lengths = np.arange(1, max(vocab_lengths) + 1)
for offset, (label, counts) in zip(
        (-0.2, 0.2), [("vocabulary", vocab_lengths),
                      ("validation text", used_lengths)]):
    total = sum(counts.values())
    plt.bar(lengths + offset, [100 * counts[n] / total for n in lengths],
            width=0.4, label=label)
plt.xticks(lengths)
plt.xlabel("token length (bytes)")
plt.ylabel("share (%)")
plt.legend()
commonest_vocab_length = vocab_lengths.most_common(1)[0][0]
one_byte_share = used_lengths[1] / sum(used_lengths.values())

# %% [markdown]
# The commonest length in the vocabulary is {{ commonest_vocab_length }}
# bytes, but running text is dominated by short tokens:
# {{ one_byte_share:.0% }} of the validation tokens are a single byte.
# Punctuation, newlines and small words such as `␣I` and `␣a` are frequent
# in any text, and each of them stays one or two bytes however large the
# vocabulary grows. That is why compression flattens out.
#
# ### One line at six vocabulary sizes
#
# @fig-splits encodes one line from the validation text with each
# tokenizer of the sweep. Each box is a token.

# %%
#| echo: false
#| label: fig-splits
#| fig-cap: One line of the validation text, tokenized with vocabularies of 256 to 8,192 ids; shaded and white boxes alternate, one box per token.
line = "A whoreson beetle-headed, flap-ear'd knave!"
split_tokens = {size: [sweep[size].pieces[i] for i in sweep[size].encode(line)]
                for size in sweep_sizes}
fig, ax = plt.subplots(figsize=(5.5, 2.4))
for row, (size, tokens) in enumerate(split_tokens.items()):
    x = 0
    for position, token in enumerate(tokens):
        piece = show(token)
        ax.add_patch(Rectangle(
            (x, -row - 0.38), len(piece), 0.76, linewidth=0.5,
            edgecolor="black",
            facecolor="lightgray" if position % 2 else "white"))
        ax.text(x + len(piece) / 2, -row, piece, ha="center", va="center",
                family="monospace", fontsize=8)
        x += len(piece)
    ax.text(-1, -row, f"{size:,}", ha="right", va="center", fontsize=8)
    ax.text(x + 1, -row, f"{len(tokens)} tokens", va="center", fontsize=8)
ax.text(-1, 0.8, "vocabulary", ha="right", va="center", fontsize=8)
ax.set(xlim=(-7, len(line) + 9), ylim=(-len(sweep_sizes) + 0.5, 1.1))
ax.set_axis_off()
assert b" knave" in split_tokens[4096] and b"headed" in split_tokens[8192]
assert b" be" in split_tokens[8192] and b"le" in split_tokens[8192]

# %% [markdown]
# With 256 ids every byte is a token, {{ len(line) }} of them. A few hundred
# merges join the commonest pairs and endings, and the count of tokens
# drops fastest there. By {{ vocab_size:, }} ids `␣knave` is a single
# token, and at {{ sweep_sizes[-1]:, }} `headed` is one too; the line takes
# {{ len(split_tokens[8192]) }} tokens. The words that stay in pieces
# are the rare ones, and their pieces are reusable: few lines mention a
# beetle, but many contain `␣be` and `le`.
#
# ## SentencePiece side by side
#
# SentencePiece is the tokenizer library behind T5, LLaMA and many others
# (Kudo & Richardson, 2018). It also offers BPE, so you can train one on the
# same text with the same vocabulary size and compare. Its defaults are
# tuned for sentences of natural language, and several of them change the
# text: it normalizes Unicode (NFKC, which turns "x²" into "x2"), collapses
# runs of spaces, and adds a space at the start of every sentence. The
# settings below turn all of that off, so that decoding gives back the
# input exactly.

# %%
sp_dir = Path(tempfile.mkdtemp())
start = time.perf_counter()
spm.SentencePieceTrainer.train(
    sentence_iterator=iter(train_text.splitlines()),
    model_prefix=str(sp_dir / "shakespeare"), model_type="bpe",
    vocab_size=vocab_size, byte_fallback=True, character_coverage=1.0,
    normalization_rule_name="identity", remove_extra_whitespaces=False,
    add_dummy_prefix=False, split_digits=True, num_threads=2, minloglevel=2,
)
sp_seconds = time.perf_counter() - start
sp = spm.SentencePieceProcessor(model_file=str(sp_dir / "shakespeare.model"))
sp_val_ids = sp.encode(val_text)
sp_compression = len(val_text) / len(sp_val_ids)
sp_byte_pieces = sum(sp.is_byte(i) for i in range(sp.get_piece_size()))
sp_control_pieces = sum(sp.is_control(i) or sp.is_unknown(i)
                        for i in range(sp.get_piece_size()))
assert sp.decode(sp_val_ids) == val_text and sp.get_piece_size() == vocab_size

# %%
#| echo: false
#| label: tbl-sentencepiece
#| tbl-cap: This chapter's BPE and SentencePiece's, both with 4,096 ids and trained on the training split; compression measured on the validation text.
Table(
    [("this chapter (Python)", vocab_size, fast_4096_seconds,
      val_compression[vocab_size], "yes"),
     ("SentencePiece BPE (C++)", sp.get_piece_size(), sp_seconds,
      sp_compression, "yes")],
    ["tokenizer", "ids", "training (s)", "characters per token",
     "lossless"],
)

# %% [markdown]
# @tbl-sentencepiece puts them side by side. The two compress the validation
# text almost equally, {{ val_compression[vocab_size]:.2f }} and
# {{ sp_compression:.2f }} characters per token, and SentencePiece, written
# in C++, trains in {{ sp_seconds:.2f }} seconds against
# {{ fast_4096_seconds:.1f }}. The listing's last line checks that its round
# trip on the validation text is exact. Now look at how each splits the same
# lines, ours with ␣ for a space:

# %%
for sample_line in ["BAPTISTA:\nGood morrow, neighbour Gremio.", modern]:
    ours = [show(tokenizer.pieces[i]) for i in tokenizer.encode(sample_line)]
    print("ours:", "|".join(ours))
    print("  sp:", "|".join(sp.encode(sample_line, out_type=str)))
    assert sp.decode(sp.encode(sample_line)) == sample_line
newlines = val_text.count("\n")
assert tokenizer.encode(val_text).count(10) == newlines
assert sp_val_ids.count(sp.piece_to_id("<0x0A>")) == newlines

# %% [markdown]
# The splits differ in three ways, and each comes from a design choice.
#
# - **Whitespace.** SentencePiece has no split pattern. It replaces each
#   space with the visible symbol ▁ and treats the text as one stream, in
#   which a piece may start with ▁ but not contain one in the middle. The
#   effect is close to GPT-2's leading-space chunks, which is why the two
#   split the first sample into the same pieces, token for token; only the
#   way they write the space and the newline differs.
# - **Newlines.** SentencePiece trains on lines, so it never sees a newline,
#   and in new text each one falls back to its byte, `<0x0A>`. Ours sees
#   newlines, but GPT-2's pattern makes each one a chunk of its own here, so
#   it stays byte 10 as well: the last lines of the listing check that both
#   spend one token per newline. Ours could learn line breaks with another
#   pattern (exercise 1 finds GPT-4's doing so); SentencePiece cannot.
# - **Bytes.** SentencePiece's vocabulary is built from characters. With
#   `byte_fallback=True`, a character it has no piece for is spelled as its
#   UTF-8 bytes: `<0xC3>` `<0xAF>` for "ï", and even `<0x35>` for the digit
#   5, which the training lines never use. That reserves
#   {{ sp_byte_pieces }} of its ids for bytes, plus
#   {{ sp_control_pieces }} for "unknown" and the start and end of a
#   sentence. Ours is bytes all the way down: its first 256 ids are the
#   bytes, every merge builds on them, and the accents come out the same
#   way, as two bytes each.
#
# Neither is better in general. SentencePiece is faster and more flexible
# (it also has a *unigram* model, exercise 5), and it is what you meet in
# many open models; byte-level BPE is simpler, never changes the text, and
# you now know every line of it.
#
# ## Choosing a vocabulary size
#
# A larger vocabulary shortens sequences, and sequence length is what
# attention pays for: the same context of tokens covers more text, and a
# given text needs fewer steps. But each id is a row of the embedding table
# (and of the output head, unless the two share weights), and each row is
# trained only by the tokens that use it. @tbl-vocab computes both sides for
# the two model widths this book uses: $d_\text{model} = 128$ for the baby
# model and 384 for the full one.

# %%
#| echo: false
#| label: tbl-vocab
#| tbl-cap: The cost of a vocabulary: embedding parameters against sequence length, and how many training tokens each id gets.
id_counts_8192 = Counter(sweep[8192].encode(train_text))
rare_ids_8192 = sum(id_counts_8192[i] < 10 for i in range(8192))
vocab_rows = [(f"{char_tokenizer.vocab_size} (chars)", 1000.0,
               len(train_text) / char_tokenizer.vocab_size,
               char_tokenizer.vocab_size)]
vocab_rows += [(f"{size:,}", 1000 * val_tokens[size] / len(val_text),
                n_train_tokens[size] / size, size) for size in sweep_sizes]
Table(
    [(ids, per_1000, per_id, size * 128, size * 384)
     for ids, per_1000, per_id, size in vocab_rows],
    ["ids", "tokens per 1,000 chars", "training tokens per id",
     "embedding, d=128", "embedding, d=384"],
    digits=0,
)

# %% [markdown]
# Read the table from both ends. With characters, a context of 256 tokens
# holds 256 characters, the embedding table is tiny, and every row sees
# thousands of examples. At {{ sweep_sizes[-1]:, }} ids the same context
# holds {{ val_compression[8192]:.1f }} times as much text, but the embedding
# table of the baby model alone has {{ 8192 * 128:, }} parameters, each id
# occurs on average only {{ n_train_tokens[8192] / 8192:.0f }} times in the
# training text, and {{ rare_ids_8192:, }} ids occur fewer than ten times.
# A model learns little about an id it sees a handful of times.
#
# For a corpus of one megabyte, the middle of the table is the reasonable
# range. At {{ sweep_sizes[2]:, }} to {{ vocab_size:, }} ids, a text takes
# {{ 1 / val_compression[1024]:.0% }} to {{ 1 / val_compression[4096]:.0% }}
# as many tokens as characters, and each id still appears
# {{ n_train_tokens[1024] / 1024:.0f }} to
# {{ n_train_tokens[4096] / 4096:.0f }} times on average. GPT-2, trained on
# vastly more text, uses 50,257 ids (Radford et al., 2019): the same
# reasoning in reverse, since with that much data every row gets trained.
#
# ## The tokenized dataset
#
# Training reads the corpus as token ids, millions of times over, so it
# should not encode it each time. The last part of the chapter adds three
# things to `mlxllm.data`: the corpus encoded once and cached on disk, random
# batches drawn reproducibly from it, and the conversion that keeps losses
# comparable across tokenizers.
#
# The cache must never serve ids made by a different tokenizer or from a
# different text, so its folder is named after both: the tokenizer's
# fingerprint and the text's SHA-256. The ids are stored as `uint16`, two
# bytes each, which holds any vocabulary of up to 65,536 ids; a larger one is
# refused rather than silently wrapped around. Anything with a `vocab_size`,
# an `encode` and a `fingerprint` will do as the tokenizer, which the
# `Protocol` spells out.

# %%
#| export: data
import hashlib
from os import getpid
from pathlib import Path
from typing import Protocol

import mlx.core as mx
import numpy as np


class TextEncoder(Protocol):
    """What encode_splits needs from a tokenizer; both of mlxllm's qualify."""

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def fingerprint(self) -> str: ...

# %% [markdown]
# A `Protocol` is only a description: a class qualifies by having these
# members, without inheriting from anything, and a type checker can verify
# it. Here is the function that uses it.

# %%
#| export: data
def encode_splits(
    tokenizer: TextEncoder, text: str, cache_root: Path
) -> tuple[np.ndarray, np.ndarray]:
    """The 90/10 split of `text` as uint16 token ids, encoded once, cached."""
    if tokenizer.vocab_size > 1 << 16:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit "
                         "in uint16 (at most 65,536 ids)")
    text_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = f"{tokenizer.fingerprint()[:16]}-{text_hash[:16]}"
    folder = Path(cache_root) / key
    paths = [folder / "train.npy", folder / "val.npy"]
    if all(path.exists() for path in paths):
        return np.load(paths[0]), np.load(paths[1])
    folder.mkdir(parents=True, exist_ok=True)
    splits = []
    for path, part in zip(paths, split_train_val(text)):
        ids = np.array(tokenizer.encode(part), dtype=np.uint16)
        partial = path.with_suffix(f".{getpid()}.npy")
        np.save(partial, ids)
        partial.replace(path)  # atomic: readers see no file or all of it
        splits.append(ids)
    return splits[0], splits[1]

# %% [markdown]
# The text is split into training and validation *before* encoding, at the
# same character as chapter 1's split, so that the validation text is the
# same whatever the tokenizer; only then can their losses be compared. As in
# chapter 1's download, each file is written under a temporary name and
# renamed, so an interrupted run leaves no half-written cache behind.

# %%
cache_dir = Path(tempfile.mkdtemp())
start = time.perf_counter()
train_ids, val_ids = encode_splits(loaded, text, cache_dir)
first_call_seconds = time.perf_counter() - start
start = time.perf_counter()
cached_train_ids, _ = encode_splits(loaded, text, cache_dir)
cached_call_seconds = time.perf_counter() - start
print(train_ids.dtype, train_ids.shape, val_ids.shape)
print(f"encoding: {first_call_seconds:.2f} s, from the cache: "
      f"{cached_call_seconds * 1000:.1f} ms")
for path in sorted(cache_dir.rglob("*.npy")):
    print(path.relative_to(cache_dir))
assert np.array_equal(train_ids, cached_train_ids)
assert tokenizer.decode(val_ids.tolist()) == val_text

# %% [markdown]
# The tokenizer loaded from its file a moment ago starts with an empty
# cache, so the first call does all the work of encoding. The second finds
# both files under the key of tokenizer and text, and reads
# {{ (train_ids.nbytes + val_ids.nbytes) / 1e6:.2f }} MB from disk instead,
# {{ first_call_seconds / cached_call_seconds:.0f }} times faster. Change the
# tokenizer or the text, even by one merge or one character, and the key
# changes with it.
#
# ### Batches from a seed
#
# Chapter 1 drew batches with `mx.random`, whose state is global: any other
# code that draws a random number changes which batches come next. The
# sampler below owns its own generator, NumPy's `default_rng`, so the same
# seed gives the same batches whatever else the program does, and a
# training run can be repeated, or resumed, batch for batch.

# %%
#| export: data
class BatchSampler:
    """Random windows of token ids and their next tokens, from a seed."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int,
                 seed: int) -> None:
        if len(tokens) <= context:
            raise ValueError(f"{len(tokens)} tokens cannot fill a window of "
                             f"{context} plus one target")
        self.tokens, self.context = tokens, context
        self.batch_size = batch_size
        self.rng = np.random.default_rng(seed)
        self.offsets = np.arange(context + 1)

    def sample(self) -> tuple[mx.array, mx.array]:
        """Inputs (batch_size, context) and targets, the inputs moved by 1."""
        starts = self.rng.integers(0, len(self.tokens) - self.context,
                                   self.batch_size)
        windows = self.tokens[starts[:, None] + self.offsets]
        windows = mx.array(windows.astype(np.int32))
        return windows[:, :-1], windows[:, 1:]

# %% [markdown]
# Each batch is one gather of windows of `context + 1` tokens; the inputs
# are the first `context`, the targets the last `context`. The ids leave
# `uint16` for `int32` on the way into MLX, because arithmetic on unsigned
# 16-bit ids (a subtraction, an offset) wraps around silently.

# %%
sampler = BatchSampler(train_ids, batch_size=4, context=16, seed=0)
x, y = sampler.sample()
twin_x, twin_y = BatchSampler(train_ids, batch_size=4, context=16,
                              seed=0).sample()
print(x.shape, x.dtype)
print(repr(tokenizer.decode(x[0].tolist())))
print(repr(tokenizer.decode(y[0].tolist())))
assert mx.array_equal(x, twin_x).item() and mx.array_equal(y, twin_y).item()
assert mx.array_equal(x[:, 1:], y[:, :-1]).item()

# %% [markdown]
# Two samplers with the same seed gave the same batch, and the targets are
# the inputs moved one token to the left: the two assertions check both.
#
# ### Loss per character
#
# A loss in nats per token depends on the tokenizer: a token of BPE carries
# several characters, so predicting it is harder than predicting one
# character, and its loss is higher even when the model is better. To compare
# models with different tokenizers, or with nanoGPT's character-level
# results, convert the total loss of a text to nats per character:
#
# $$\text{nats per character} = \text{loss per token} \times
# \frac{\text{tokens}}{\text{characters}}$$
#
# Both models then pay for the same validation text, measured in the same
# unit. The total is the same quantity either way: the number of nats it
# takes to encode the text, which is why this is fair.

# %%
#| export: data
def nats_per_char(loss_per_token: float, n_tokens: int, n_chars: int) -> float:
    """A mean loss in nats per token, restated per character of the text."""
    return loss_per_token * n_tokens / n_chars

# %% [markdown]
# The uniform guess of chapter 1, $\ln V$ nats per token, shows what the
# conversion does.

# %%
uniform_char = math.log(char_tokenizer.vocab_size)
uniform_bpe = math.log(tokenizer.vocab_size)
uniform_bpe_per_char = nats_per_char(uniform_bpe, len(val_ids), len(val_text))
print(f"characters: {uniform_char:.2f} nats per token = per character")
print(f"BPE: {uniform_bpe:.2f} nats per token = "
      f"{uniform_bpe_per_char:.2f} per character")

# %% [markdown]
# Per token, the uniform BPE model looks much worse,
# {{ uniform_bpe:.2f }} nats against {{ uniform_char:.2f }}. Per character it
# is better, {{ uniform_bpe_per_char:.2f }}, because each of its guesses
# covers {{ len(val_text) / len(val_ids):.1f }} characters at once. Only the
# per-character figure says which model would compress the validation text
# more, and that is the number this book reports.
#
# ## Summary
#
# You built a tokenizer from the bottom up. Characters fail on text they did
# not see; code points would need a vocabulary of {{ n_code_points:, }}; UTF-8
# bytes cover everything with 256 ids; byte pair encoding then merges
# frequent pairs until sequences are short again. You wrote the training
# twice, once to read and once to run, and checked that both learn the same
# merges, with the fast one {{ speedup_1024:.0f }} times faster. You saw that
# decoding must survive ids that split a character, that special tokens must
# be asked for, and that a tokenizer file must say what it is.
#
# The new module `mlxllm.tokenizer` exports `CharTokenizer` and
# `BPETokenizer` (`train`, `encode`, `decode`, `register_special_tokens`,
# `save`, `load`, `fingerprint`), their errors `SpecialTokenError` and
# `TokenizerFileError`, and the pieces they are made of (its `__all__` lists
# every name). `mlxllm.data` gained `encode_splits`, the seeded
# `BatchSampler` and `nats_per_char`.
#
# The next chapter turns these ids into vectors.
#
# ## Exercises
#
# 1. ★ GPT-4's split pattern. The tokenizer of GPT-4 splits with a different
#    pattern: contractions in any case, numbers in groups of at most three
#    digits, and newlines kept apart from the spaces that follow them. Find
#    it (in the `tiktoken` source, for example), train a `BPETokenizer` of
#    2,048 ids with it, and compare chunks and compression with GPT-2's.
# 2. ★ Byte fallback for characters. Give `CharTokenizer` a fallback: a
#    subclass that reserves 256 extra ids for bytes and spells any unknown
#    character as its UTF-8 bytes, as SentencePiece does. Check that it
#    encodes the modern phrase of this chapter and decodes it back.
# 3. ★★ A merge visualizer. @fig-bpe-merges follows one word. Write a
#    function that records, for any chunk, the pieces after each merge of
#    `encode_chunk` and the id of the merge just applied. Which words of
#    the validation text take the most steps?
# 4. ★★ A vocabulary sweep for a model without context. For each vocabulary
#    of the sweep, compute the loss of a unigram model (token frequencies
#    counted on the training ids) on the validation ids, and convert it to
#    nats per character. Does a larger vocabulary help even a model that
#    ignores context?
# 5. ★★ SentencePiece's other model. Train SentencePiece with
#    `model_type="unigram"` and the same lossless settings, and compare its
#    compression and its splits of a few lines with its BPE model and yours.
# 6. ★★★ Encoding long chunks. `encode_chunk` scans the whole chunk once
#    per distinct merge it applies, so a long chunk (a long run of letters
#    without spaces, as in base64 data or DNA) costs its length times the
#    number of merges it uses. Measure it, then write a version that keeps
#    the pairs in a heap and the tokens in a linked list, and check that it
#    gives identical ids.
