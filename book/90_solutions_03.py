# %% [markdown]
# # Chapter 3
#
# The solutions share one setup: the corpus split as in the chapter, and a
# `BPETokenizer` of 2,048 ids trained on the training split.

# %%
import heapq
import tempfile
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import numpy as np
import regex
import sentencepiece as spm

from mlxllm.book import Table, pick
from mlxllm.data import load_corpus, split_train_val
from mlxllm.tokenizer import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    encode_chunk,
    merge_pair,
    pretokenize,
)

train_text, val_text = split_train_val(load_corpus())
bpe_2048 = BPETokenizer.train(train_text, 2048)

# %% [markdown]
# ## Exercise 3.1
#
# GPT-4's pattern (the `cl100k_base` encoding of `tiktoken`) matches
# contractions in any case (`(?i:...)`), lets a letter run start with one
# character that is not a letter, digit or newline, cuts digit runs into
# groups of at most three, and keeps newlines out of the chunks of spaces
# that follow them. Its `?+` and `++` are possessive quantifiers, which the
# `regex` package supports.

# %%
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
sample = "KING RICHARD'S horse:\n\n  cost 12345 crowns!"
for name, pattern in [("GPT-2", GPT2_SPLIT_PATTERN),
                      ("GPT-4", GPT4_SPLIT_PATTERN)]:
    print(f"{name}:", "|".join(pretokenize(sample, pattern)).replace(
        "\n", "↵"))

# %%
#| label: tbl-solution-3-1
#| tbl-cap: GPT-2's and GPT-4's pre-tokenizer patterns on the validation text.
split_rows = []
for name, pattern in [("GPT-2", GPT2_SPLIT_PATTERN),
                      ("GPT-4", GPT4_SPLIT_PATTERN)]:
    tokenizer = BPETokenizer.train(train_text, 2048, pattern=pattern)
    val_chunks = pretokenize(val_text, pattern)
    split_rows.append((name, len(val_chunks), len(set(val_chunks)),
                       len(val_text) / len(tokenizer.encode(val_text))))
    assert tokenizer.decode(tokenizer.encode(val_text)) == val_text
gpt4_gain = split_rows[1][3] / split_rows[0][3] - 1
gpt4_chunks = pretokenize(val_text, GPT4_SPLIT_PATTERN)
line_ends = sum(regex.fullmatch(r" ?[^\s\p{L}\p{N}]+\n+", chunk)
                is not None for chunk in gpt4_chunks) / len(gpt4_chunks)
Table(split_rows, ["pattern", "validation chunks", "distinct chunks",
                   "characters per token"])

# %% [markdown]
# The sample shows the differences: GPT-4's pattern keeps `'S` together as a
# contraction, gives the colon and the newlines after it one chunk, and
# cuts `12345` into `123` and `45`. On Shakespeare the new pattern improves
# compression by {{ gpt4_gain:.1%}}, and the digits have nothing to do
# with it: verse ends most lines with punctuation, and with GPT-4's pattern
# the punctuation takes its newline along. Such chunks are
# {{ line_ends:.0%}} of the validation chunks, and BPE learns `,↵` or
# `:↵` as one token where GPT-2's pattern forces two.
#
# ## Exercise 3.2
#
# A subclass reserves 256 ids after the characters for bytes, and registers
# the special tokens only after those, so that they keep coming last. It
# gets its own magic word, because its file means something different from a
# plain character tokenizer's.

# %%
class ByteFallbackCharTokenizer(CharTokenizer):
    """Known characters as themselves; any other as its UTF-8 bytes."""

    magic = "mlxllm-char-bytes"

    def __init__(self, chars, special_tokens=()) -> None:
        super().__init__(chars)
        self.byte_offset = len(self.pieces)
        self.pieces += [bytes([byte]) for byte in range(256)]
        self.register_special_tokens(special_tokens)

    def _encode_ordinary(self, text: str) -> list[int]:
        ids = []
        for char in text:
            if char in self.char_ids:
                ids.append(self.char_ids[char])
            else:
                ids.extend(self.byte_offset + byte for byte in char.encode())
        return ids


fallback = ByteFallbackCharTokenizer.train(train_text)
phrase = "a naïve café, 5 €"
phrase_ids = fallback.encode(phrase)
print(fallback.vocab_size, phrase_ids)
assert fallback.decode(phrase_ids) == phrase

# %% [markdown]
# The known characters keep their ids; "ï", "é", "€" and "5" become their
# bytes, ids from the byte offset upwards. Decoding joins the bytes of all
# ids, so the bytes of one character reassemble it.
#
# ## Exercise 3.3
#
# Replay `encode_chunk`, recording the pieces after each merge.

# %%
def merge_steps(tokenizer: BPETokenizer, chunk: str) -> list[list[int]]:
    """The ids of `chunk` before any merge and after each merge applied."""
    ids = list(chunk.encode())
    steps = [ids]
    while True:
        pairs = set(zip(ids, ids[1:])) & tokenizer.merge_ids.keys()
        if not pairs:
            return steps
        pair = min(pairs, key=tokenizer.merge_ids.__getitem__)
        ids = merge_pair(ids, pair, tokenizer.merge_ids[pair])
        steps.append(ids)


def shown(tokenizer: BPETokenizer, ids: list[int]) -> str:
    """The pieces of `ids` between bars, with ␣ for a space."""
    pieces = [tokenizer.pieces[i].decode() for i in ids]
    return "|".join(pieces).replace(" ", "␣")


for step, ids in enumerate(merge_steps(bpe_2048, " whoreson")):
    print(f"{step:>2} {shown(bpe_2048, ids)}")

# %%
distinct = set(pretokenize(val_text))
depth = {chunk: len(merge_steps(bpe_2048, chunk)) - 1 for chunk in distinct}
deepest = sorted(distinct, key=lambda chunk: (-depth[chunk], chunk))[:5]
for chunk in deepest:
    steps = merge_steps(bpe_2048, chunk)
    assert steps[-1] == encode_chunk(chunk.encode(), bpe_2048.merge_ids)
    print(f"{depth[chunk]:>2} merges: {shown(bpe_2048, steps[-1])}")
most_merges = depth[deepest[0]]

# %% [markdown]
# Each merge removes one token, so a chunk takes as many merges as it has
# bytes minus the tokens it ends with. The deepest chunks, with up to
# {{ most_merges }} merges, are therefore long words that end as a few
# pieces, each piece assembled byte by byte before the pieces could meet.
#
# ## Exercise 3.4
#
# Train once at the largest size and take prefixes of the merges, as the
# chapter did. A unigram model is the token frequencies of the training ids,
# with one added to every count so that no token gets probability zero.

# %%
#| label: tbl-solution-3-4
#| tbl-cap: A unigram model's loss per character for each vocabulary size: the part of the gain that frequencies alone explain.
def unigram_nats_per_char(train_ids: list[int], val_ids: list[int],
                          size: int) -> float:
    counts = np.bincount(train_ids, minlength=size) + 1.0
    log_probs = np.log(counts / counts.sum())
    loss_per_token = -log_probs[val_ids].mean()
    return loss_per_token * len(val_ids) / len(val_text)


characters = CharTokenizer.train(train_text)
unigram_rows = [("characters", characters.vocab_size, unigram_nats_per_char(
    characters.encode(train_text), characters.encode(val_text),
    characters.vocab_size))]
sizes = pick(smoke=[256, 512, 1024], book=[256, 512, 1024, 2048, 4096])
largest = BPETokenizer.train(train_text, sizes[-1])
for size in sizes:
    prefix = BPETokenizer(largest.merges[:size - 256])
    unigram_rows.append(("BPE", size, unigram_nats_per_char(
        prefix.encode(train_text), prefix.encode(val_text), size)))
unigram_char = unigram_rows[0][2]
unigram_best = min(row[2] for row in unigram_rows)
Table(unigram_rows, ["tokenizer", "ids", "unigram nats per character"])

# %% [markdown]
# A larger vocabulary helps even a model without context, from
# {{ unigram_char:.2f }} nats per character with characters down to
# {{ unigram_best:.2f }}. The tokens themselves carry context: a token
# such as `␣the` says in one guess what a character model needs four
# guesses, each conditioned on nothing, to say. Some of what a
# character-level transformer must learn with attention, BPE hands over
# for free.
#
# ## Exercise 3.5
#
# Train both SentencePiece models with the chapter's lossless settings.

# %%
#| label: tbl-solution-3-5
#| tbl-cap: Characters per token of SentencePiece's BPE and unigram models against ours, all with 2,048 ids.
sp_models = {}
with tempfile.TemporaryDirectory() as sp_dir:
    for model_type in ("bpe", "unigram"):
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(train_text.splitlines()),
            model_prefix=f"{sp_dir}/{model_type}", model_type=model_type,
            vocab_size=2048, byte_fallback=True, character_coverage=1.0,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False, add_dummy_prefix=False,
            split_digits=True, num_threads=2, minloglevel=2)
        sp_models[model_type] = spm.SentencePieceProcessor(
            model_file=f"{sp_dir}/{model_type}.model")
sp_rows = [("ours, BPE", len(val_text) / len(bpe_2048.encode(val_text)))]
for model_type, model in sp_models.items():
    val_ids = model.encode(val_text)
    assert model.decode(val_ids) == val_text
    sp_rows.append((f"SentencePiece, {model_type}",
                    len(val_text) / len(val_ids)))
sp_unigram = sp_rows[2][1]
Table(sp_rows, ["tokenizer (2,048 ids)", "characters per token"])

# %%
for line in ["Good morrow, neighbour Gremio.", "Unmannerly wenches!"]:
    for model_type, model in sp_models.items():
        print(f"{model_type:>8}:", "|".join(model.encode(line, out_type=str)))

# %% [markdown]
# The unigram model compresses to {{ sp_unigram:.2f }} characters per
# token, about as much as both BPE models. It does not merge pairs: it
# starts from a large set of candidate pieces, repeatedly drops the ones
# whose removal costs the training text the least likelihood, and encodes
# each sentence with its most likely split under a unigram language model
# over pieces (Kudo, 2018). The splits above show the effect: the same
# vocabulary size, different pieces (`▁neighbour` whole, `▁` split from
# `morrow`), because the choice is made per sentence by probability rather
# than by replaying merges.
#
# ## Exercise 3.6
#
# A long chunk of letters, built from the validation text with the spaces
# and punctuation removed, shows what `encode_chunk` costs: each distinct
# merge it applies scans the whole chunk again, so its time grows with the
# length times the number of merges the chunk uses.

# %%
def encode_chunk_heap(chunk: bytes, merge_ids: dict) -> list[int]:
    """encode_chunk's ids, with a heap of pairs and a linked list of tokens."""
    ids = list(chunk)
    after = list(range(1, len(ids) + 1))  # index of the next live token
    before = list(range(-1, len(ids) - 1))
    alive = [True] * len(ids)
    heap = [(merge_ids[pair], i) for i, pair in enumerate(zip(ids, ids[1:]))
            if pair in merge_ids]
    heapq.heapify(heap)

    def push(i: int) -> None:
        if 0 <= i and after[i] < len(ids):
            pair = (ids[i], ids[after[i]])
            if pair in merge_ids:
                heapq.heappush(heap, (merge_ids[pair], i))

    while heap:
        new_id, i = heapq.heappop(heap)
        j = after[i] if alive[i] else len(ids)
        if j == len(ids) or merge_ids.get((ids[i], ids[j])) != new_id:
            continue  # stale: a token of this pair has changed
        ids[i], alive[j] = new_id, False
        after[i] = after[j]
        if after[j] < len(ids):
            before[after[j]] = i
        push(before[i])
        push(i)
    return [token for token, live in zip(ids, alive) if live]

# %% [markdown]
# Entries pop in order of the merge's id and, for equal ids, of position,
# which is the order in which `encode_chunk` applies merges: the smallest
# id first, left to right. A merged token takes the place of the left one
# and kills the right one; only the two pairs around it can be new, so only
# they are pushed. Entries that no longer match their pair are skipped.

# %%
#| label: tbl-solution-3-6
#| tbl-cap: `encode_chunk` against the heap encoder as chunks grow: merges used and time per character per merge.
letters = regex.sub(r"[^a-z]", "", val_text.lower())


def merges_used(ids: list[int], merges: list[tuple[int, int]]) -> int:
    """Distinct merges behind the tokens `ids`, each one loop (one scan of
    the chunk) of encode_chunk."""
    seen, todo = set(), [i for i in ids if i >= 256]
    while todo:
        token = todo.pop()
        if token not in seen:
            seen.add(token)
            todo.extend(part for part in merges[token - 256] if part >= 256)
    return len(seen)


heap_rows = []
for length in pick(smoke=[250, 500, 1000], book=[1000, 2000, 4000, 8000]):
    chunk = letters[:length].encode()
    start = time.perf_counter()
    reference = encode_chunk(chunk, bpe_2048.merge_ids)
    scan_seconds = time.perf_counter() - start
    start = time.perf_counter()
    assert encode_chunk_heap(chunk, bpe_2048.merge_ids) == reference
    heap_seconds = time.perf_counter() - start
    used = merges_used(reference, bpe_2048.merges)
    heap_rows.append((length, used, scan_seconds,
                      1e9 * scan_seconds / (length * used), heap_seconds))
heap_speedup = heap_rows[-1][2] / heap_rows[-1][4]
(shortest, short_used, short_scan, _, short_heap) = heap_rows[0]
(longest, long_used, long_scan, _, long_heap) = heap_rows[-1]
scan_growth = (long_scan / longest) / (short_scan / shortest)
heap_growth = (long_heap / longest) / (short_heap / shortest)
per_merge_ns = [row[3] for row in heap_rows]
Table(heap_rows, ["chunk length", "merges used", "encode_chunk (s)",
                  "ns per character per merge", "heap (s)"], digits=4)

# %% [markdown]
# From the shortest chunk to the longest, the time per character of
# `encode_chunk` grows {{ scan_growth:.1f }} times, and the number of
# merges the chunk uses grows {{ long_used / short_used:.1f }} times: a
# longer chunk uses more distinct merges, and each one rescans it. The
# cost is not quadratic in the length, though: it is bounded by the
# length times the {{ len(bpe_2048.merges):,}} merges of the vocabulary,
# and the growth stops once a chunk uses most of them. The time per
# character per merge, the column that the product predicts to be
# constant, stays between {{ min(per_merge_ns):.0f }} and
# {{ max(per_merge_ns):.0f }} ns. The heap version's time per
# character changes {{ heap_growth:.1f }} times over the same range; at
# the longest chunk it is {{ heap_speedup:.0f }} times faster, with
# identical ids. For ordinary text the chunks are words and the per-chunk
# cache hides the difference; for long runs without spaces it decides how
# long encoding takes.
