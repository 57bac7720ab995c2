# %% [markdown]
# # Chapter 9
#
# The solutions decode with what chapter 9 exported to `mlxllm.generate`
# and read chapter 7's trained baby character model from its last
# checkpoint, as the chapter does.

# %%
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.data import encode_splits, load_corpus
from mlxllm.generate import (KVCache, cached_attention, decode_step,
                             forward_cached, generate_tokens, prefill,
                             top_p_filter)
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import load_tokenizer

char_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
tokenizer = load_tokenizer(char_dir / "tokenizer.txt")
record, weights, _ = read_checkpoint(latest_checkpoint(char_dir),
                                     optimizer=False)
model = GPT(GPTConfig(**record["model"]))
model.load_weights(list(weights.items()))
model.eval()
context = model.config.context
prompt_ids = tokenizer.encode("ROMEO:\nWhat light through yonder window br")


def log_probs(ids: list[list[int]]) -> mx.array:
    """Next-token log-probabilities after each row of `ids` (one length)."""
    logits = model(mx.array([row[-context:] for row in ids]))[:, -1]
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)

# %% [markdown]
# ## Exercise 9.1
#
# Each step runs the model on all beams at once, adds every token's
# log-probability to its beam's score and keeps the best `width` of the
# `width × vocab` candidates. Width 1 is greedy decoding.

# %%
#| label: tbl-beam-widths
#| tbl-cap: Beam search at several widths: the log-probability of the best continuation each finds, and its text.
def beam_search(prompt: list[int], length: int,
                width: int) -> tuple[list[int], float]:
    """The likeliest continuation beam search finds, and its log-prob."""
    beams, scores = [list(prompt)], mx.zeros((1,))
    for _ in range(length):
        candidates = (scores[:, None] + log_probs(beams)).reshape(-1)
        best = mx.argsort(-candidates)[:width].tolist()
        vocab = tokenizer.vocab_size
        beams = [beams[i // vocab] + [i % vocab] for i in best]
        scores = candidates[mx.array(best)]
    return beams[0][len(prompt):], scores[0].item()


beam_length = pick(smoke=12, book=40)
beam_rows, beam_ids = [], {}
for width in (1, 2, 4, 8):
    beam_ids[width], score = beam_search(prompt_ids, beam_length, width)
    beam_rows.append([width, score, repr(tokenizer.decode(beam_ids[width]))])
assert beam_ids[1] == list(generate_tokens(model, prompt_ids, beam_length,
                                           temperature=0, keep=context))
assert all(row[1] >= beam_rows[0][1] - 1e-4 for row in beam_rows)
Table(beam_rows, ["width", "log-prob (nats)", "continuation"])

# %% [markdown]
# Width 1 writes exactly what `generate_tokens` writes at temperature 0
# with the sliding window that `log_probs` uses (checked), and every wider beam finds a continuation at least as
# likely: from {{ beam_rows[0][1]:.1f }} nats at width 1 to
# {{ beam_rows[-1][1]:.1f }} at width 8. The likeliest text is not the
# best to read: the gain comes from short, common, repeated words, the
# degeneration Holtzman et al. (2020) describe, which is why open-ended
# generation samples instead.
#
# ## Exercise 9.2

# %%
topp_length = pick(smoke=60, book=300)
topp_ids = list(prompt_ids)
kept_sizes = []
for token in generate_tokens(model, prompt_ids, topp_length,
                             temperature=0):
    logits = model(mx.array([topp_ids[-context:]]))[0, -1]
    kept_sizes.append(int(mx.isfinite(top_p_filter(logits, 0.9)).sum()))
    topp_ids.append(token)
kept_sizes = np.array(kept_sizes)
single_share = np.mean(kept_sizes == 1)
print(f"kept: {kept_sizes.min()} to {kept_sizes.max()}, median "
      f"{np.median(kept_sizes):.0f}; one alone at {single_share:.0%} of steps")

# %% [markdown]
# Over {{ topp_length }} greedy characters, top-p with $p = 0.9$ keeps
# between {{ kept_sizes.min() }} and {{ kept_sizes.max() }} characters,
# {{ np.median(kept_sizes):.0f }} at the median, and a single one at
# {{ single_share:.0%}} of the steps. The nucleus follows the model's
# confidence from step to step, over a range that no fixed top-k can
# match: any k is too wide at one end of it or too narrow at the other.
#
# ## Exercise 9.3
#
# A prefill of 100 positions on the full preset, with caches of three
# block sizes; the allocator's count before and after, against the bytes
# the 100 positions need.

# %%
#| label: tbl-cache-blocks
#| tbl-cap: A 100-position prefill of the full preset into caches grown in blocks of three sizes: positions allocated, MiB the allocator counted, and the share of it the 100 positions need.
full = GPT(GPTConfig.full(tokenizer.vocab_size))
full.eval()
mx.eval(full.parameters())
hundred = mx.array([list(range(100))]) % tokenizer.vocab_size
config = full.config
used = 2 * config.n_layer * 100 * config.n_embd * 4
memory_rows = []
for step in (256, 64, 16):
    before = mx.get_active_memory()
    caches = [KVCache(config.context, step) for _ in full.blocks]
    mx.eval(forward_cached(full, hundred, caches)[0, -1])
    allocated = mx.get_active_memory() - before
    room = caches[0].keys.shape[2]
    memory_rows.append([step, room, allocated / 2**20, used / allocated])
    del caches
Table(memory_rows, ["block", "positions allocated", "MiB", "share used"])

# %% [markdown]
# One 256-position block holds room for the whole window, so 100
# positions use {{ memory_rows[0][3]:.0%}} of it; with blocks of 16 the
# cache is {{ memory_rows[-1][3]:.0%}} full. Smaller blocks waste less
# and grow more often, each growth a copy of the whole cache; at this
# size, with at most 256 positions, a single block is the sensible
# choice, which is what the chapter's default amounts to.
#
# ## Exercise 9.4
#
# Scoring with a schedule is decoding without sampling: the next token is
# the text's own. The function below keeps the cache exactly as
# `generate_tokens` does and adds up the loss of every character after
# the first.

# %%
#| label: tbl-keep
#| tbl-cap: The positions kept at each re-prefill (keep) against greedy decoding speed and the loss of validation text scored with the same schedule.
def schedule_loss(ids: list[int], keep: int) -> float:
    """Mean next-token loss (nats) of ids, the model seeing the windows
    generate_tokens would show it with this `keep`."""
    start, caches, total = 0, None, 0.0
    for t in range(1, len(ids)):
        if t - start > context:
            start, caches = t - keep, None
        if caches is None:
            logits, caches = prefill(model, ids[start:t])
        else:
            logits = decode_step(model, ids[t - 1], caches)
        total -= (logits - mx.logsumexp(logits)).tolist()[ids[t]]
    return total / (len(ids) - 1)


text = load_corpus()
_, val_ids = encode_splits(tokenizer, text,
                           artifact_path("07_training/tokens"))
scored = val_ids[:pick(smoke=200, book=1000)].tolist()
keep_rows = []
for keep in (16, 32, 48, 64):
    begin = time.perf_counter()
    written = list(generate_tokens(model, prompt_ids, pick(smoke=80,
                                                           book=256),
                                   temperature=0, keep=keep))
    rate = len(written) / (time.perf_counter() - begin)
    keep_rows.append([keep, rate, schedule_loss(scored, keep)])
keep_rate = {row[0]: row[1] for row in keep_rows}
keep_loss = {row[0]: row[2] for row in keep_rows}
fastest_keep = max(keep_rate, key=keep_rate.get)
keep_spread = max(keep_loss.values()) - min(keep_loss.values())
Table(keep_rows, ["keep", "tokens/s", "loss (nats/char)"], digits=3)

# %% [markdown]
# A short `keep` re-prefills less at a time but more often, and the
# sliding window (`keep` = {{ context }}) re-prefills the whole window
# for every token; here the fastest was `keep` = {{ fastest_keep }}, at
# {{ keep_rate[fastest_keep]:.0f }} tokens per second against
# {{ keep_rate[context]:.0f }} for the sliding window; the shorter
# settings lie close together, within what separate runs on a shared
# machine differ by, and only the sliding window is clearly slow. A short `keep`
# shows the model less context after each restart, yet on these
# {{ len(scored):, }} characters the losses lie within
# {{ keep_spread:.3f }} nats per character of each other
# ({{ keep_loss[16]:.3f }} at 16, {{ keep_loss[context // 2]:.3f }} at
# the default half window, {{ keep_loss[context]:.3f }} for the sliding
# window): a baby model with a 64-character window draws little from its
# farthest characters, and a sample this size cannot tell such small
# differences apart. Speed, not quality, decides `keep` here.
#
# ## Exercise 9.5
#
# Left padding puts every prompt's last token in the last column, so one
# decode step serves all rows. Each row needs its own positions (a
# padded row's first real token is at position 0) and its own mask (no
# query may see the pads). The blocks are chapter 6's, called as in
# chapter 9's `forward_cached`; only the positions and the mask change.

# %%
def batched_forward(ids: mx.array, caches: list[KVCache],
                    pads: mx.array) -> mx.array:
    """Logits (B, T, vocab) of left-padded rows; pads (B,) per row."""
    offset, length = caches[0].offset, ids.shape[1]
    columns = mx.arange(offset, offset + length)
    positions = mx.maximum(columns[None] - pads[:, None], 0)
    x = model.token_embedding(ids) + model.position_embedding(positions)
    keys = mx.arange(offset + length)
    mask = (columns[:, None] >= keys[None])[None] \
        & (keys[None, None] >= pads[:, None, None])
    for block, cache in zip(model.blocks, caches):
        x = x + cached_attention(block.attention, block.norm1(x), cache,
                                 mask[:, None])
        x = x + block.feed_forward(block.norm2(x))
    return model.token_embedding.as_linear(model.norm(x))


def batched_greedy(prompts: list[list[int]], new_tokens: int) -> list:
    """Greedy continuations of prompts of any lengths, in one batch."""
    width = max(map(len, prompts))
    pads = mx.array([width - len(p) for p in prompts])
    rows = mx.array([[0] * (width - len(p)) + p for p in prompts])
    caches = [KVCache(context) for _ in model.blocks]
    out = [[] for _ in prompts]
    logits = batched_forward(rows, caches, pads)[:, -1]
    for _ in range(new_tokens):
        tokens = mx.argmax(logits, axis=-1)
        for row, token in zip(out, tokens.tolist()):
            row.append(token)
        logits = batched_forward(tokens[:, None], caches, pads)[:, -1]
    return out

# %%
#| label: tbl-batched
#| tbl-cap: Greedy decoding of left-padded batches: tokens per second, all sequences together, against the batch size.
lines = [line for line in text[:20000].split("\n") if len(line) > 8]
batch_prompts = [tokenizer.encode(line[:8 + i % 17])
                 for i, line in enumerate(lines[:16])]
batch_new = pick(smoke=8, book=24)
alone = [list(generate_tokens(model, p, batch_new, temperature=0))
         for p in batch_prompts[:4]]
assert batched_greedy(batch_prompts[:4], batch_new) == alone
batch_rows = []
for size in (1, 4, 16):
    begin = time.perf_counter()
    batched_greedy(batch_prompts[:size], batch_new)
    seconds = time.perf_counter() - begin
    batch_rows.append([size, size * batch_new / seconds])
Table(batch_rows, ["batch", "tokens/s"], digits=0)

# %% [markdown]
# Four prompts of different lengths, decoded together, give each exactly
# the tokens it gets alone (checked; the new tokens stay inside the
# window here, so no row needs a re-prefill, which a batch would have to
# do for all rows at once). A batch of 16 writes
# {{ batch_rows[-1][1] / batch_rows[0][1]:.1f }} times as many tokens
# per second as a single prompt: a decode step reads every weight once
# whatever the batch, so the extra rows come nearly free until the
# matrix products, not the reads, set the pace.
