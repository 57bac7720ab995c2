# %% [markdown]
# # Generating text
#
# Chapter 7 left you a model that writes Shakespeare, after a fashion,
# and a `generate` that asks it for one character at a time. Each time,
# `generate` feeds the whole window, the prompt and everything written
# so far, back through every layer, although only the last position's
# logits are used and every earlier position computes exactly what it
# computed the step before. And it turns those logits into a token in
# only two ways, a temperature and a top-k cut.
#
# This chapter fixes both. First the decoding rules: greedy, temperature,
# top-k, nucleus (top-p) and min-p sampling and a repetition penalty, each
# a few lines of MLX, each shown on the trained baby model's real
# distribution after a real prompt, then combined into one `Sampler`.
# Then the key-value cache, which stores what each layer computed for the
# positions already seen, so that a new token costs one position's work
# instead of the whole window's. You check that the cache changes the
# cost and never the text: with it and without it, greedy decoding writes
# the same {{ same_tokens }} tokens. Then you measure what it buys on this
# machine: over {{ speed_tokens }} new tokens the full preset writes
# {{ full_speedup:.1f }} times faster with the cache. Last comes
# speculative decoding, in which a small draft model guesses a few tokens
# and the model checks them all in one pass, without changing what it
# would have written. On the map of chapter 1 this is the last box, the
# loop that turns a model into a writer; it all goes to
# `mlxllm.generate`, behind one iterator, `generate_tokens`, and its
# speculative twin.

# %%
#| default_exp generate
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.generate import generate
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import load_tokenizer

char_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
tokenizer = load_tokenizer(char_dir / "tokenizer.txt")
record, weights, _ = read_checkpoint(latest_checkpoint(char_dir),
                                     optimizer=False)
model = GPT(GPTConfig(**record["model"]))
model.load_weights(list(weights.items()))
model.eval()
prompt = "ROMEO:\nWhat light through yonder window br"
prompt_ids = tokenizer.encode(prompt)
logits = model(mx.array([prompt_ids]))[0, -1]
print(f"step {record['step']}, {logits.shape[0]} logits after "
      f"{len(prompt_ids)} prompt characters")

# %% [markdown]
# That is chapter 7's baby character model, read from the last
# checkpoint its run left (step {{ record['step'] }}), and the logits it
# gives for the character after the prompt. Every rule in the next
# section is a function from such a vector of {{ logits.shape[0] }}
# logits to a token, or to a new vector of logits.
#
# ## Decoding from logits
#
# The model's own distribution is the softmax of its logits. The simplest
# rule ignores the randomness altogether: *greedy* decoding takes the
# likeliest token every time.

# %%
#| export
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import mlx.core as mx
import numpy as np

from mlxllm.model import GPT, MultiHeadAttention
from mlxllm.model import scaled_dot_product_attention


def greedy(logits: mx.array) -> int:
    """The id of the largest logit."""
    return int(mx.argmax(logits).item())

# %%
def show(logits: mx.array, count: int = 6) -> str:
    """The `count` likeliest characters and their probabilities."""
    probs = np.array(mx.softmax(logits.astype(mx.float32), precise=True))
    order = np.argsort(-probs)[:count]
    return "  ".join(f"{tokenizer.decode([int(i)])!r} {probs[i]:.3f}"
                     for i in order)


greedy_char = tokenizer.decode([greedy(logits)])
top_prob = mx.softmax(logits, precise=True).max().item()
print(show(logits))

# %% [markdown]
# `show` prints the six likeliest next characters. After "window br" the
# model puts {{ top_prob:.0%}} of its mass on
# {{ repr(greedy_char) }}, and greedy decoding takes it every time. That
# is greedy decoding's strength and its failure: the same prompt always
# gives the same text, and a small model taken at its word falls into
# loops (you will see one below).
#
# ### Temperature
#
# Dividing the logits by a *temperature* $T$ before the softmax reshapes
# the distribution without reordering it: $p_i \propto e^{z_i / T}$. At
# $T < 1$ the gaps between logits grow and the mass gathers on the
# likeliest tokens; at $T > 1$ it spreads into the tail; as $T \to 0$ the
# draw becomes greedy. @fig-temperature shows the model's distribution
# after the prompt at three temperatures.

# %%
#| export
def apply_temperature(logits: mx.array, temperature: float) -> mx.array:
    """Logits divided by a temperature > 0, in float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}; "
                         "use greedy() for temperature 0")
    return logits.astype(mx.float32) / temperature

# %%
#| echo: false
#| label: fig-temperature
#| fig-cap: The baby model's probabilities for the character after the prompt, its 12 likeliest characters in the model's order, at three temperatures. Cooler sharpens, warmer flattens; the order never changes.
temperatures = (0.5, 1.0, 2.0)
order = np.argsort(-np.array(logits))[:12]
labels = [repr(tokenizer.decode([int(i)]))[1:-1] or " " for i in order]
labels = [label.replace(" ", "␣") for label in labels]
fig, ax = plt.subplots(figsize=(6, 2.6))
width = 0.27
for index, (temperature, hatch) in enumerate(zip(temperatures,
                                                 ("", "//", ".."))):
    probs = np.array(mx.softmax(apply_temperature(logits, temperature),
                                precise=True))[order]
    ax.bar(np.arange(12) + (index - 1) * width, probs, width,
           hatch=hatch, edgecolor="white", label=f"T = {temperature}")
ax.set_xticks(np.arange(12), labels)
ax.set_xlabel("next character")
ax.set_ylabel("probability")
ax.legend()
fig.tight_layout()
tempered_top = {t: mx.softmax(apply_temperature(logits, t),
                              precise=True).max().item()
                for t in temperatures}

# %% [markdown]
# The likeliest character's share moves from {{ tempered_top[1.0]:.0%}}
# at $T = 1$ to {{ tempered_top[0.5]:.0%}} at $T = 0.5$ and
# {{ tempered_top[2.0]:.0%}} at $T = 2$. Temperature is a single knob
# over the whole distribution, and it cannot tell a plausible second
# choice from the junk in the tail: warming the distribution to get
# variety also lifts every character that makes no sense. The next three
# rules cut the tail off instead, and differ in where they cut.
#
# ### Top-k, top-p and min-p
#
# *Top-k* keeps the $k$ largest logits and sets the rest to $-\infty$,
# so that they get probability 0 (Fan et al., 2018, used it for stories).
# Its weakness is that $k$ is fixed: where the model is sure, $k = 10$
# keeps nine tokens it should never draw; where it is unsure, it cuts off
# good ones. *Nucleus* or *top-p* sampling (Holtzman et al., 2020) keeps
# instead the smallest set of likeliest tokens whose probabilities add up
# to at least $p$, so the set shrinks where the model is sure and grows
# where it is not. *Min-p* (Nguyen et al., 2024) keeps every token whose
# probability is at least `min_p` times the likeliest token's: a cut
# that scales with the model's confidence and needs no sort.

# %%
#| export
def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """The logits with all but the k largest set to -inf (ties broken by
    position, so exactly k survive)."""
    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    dropped = mx.argsort(-logits, axis=-1)[..., k:]
    return mx.put_along_axis(logits, dropped,
                             mx.array(-mx.inf, logits.dtype), axis=-1)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """The logits of the smallest set of likeliest tokens whose
    probabilities sum to at least p; -inf elsewhere."""
    if not 0 < p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    order = mx.argsort(-logits, axis=-1)
    ranked = mx.take_along_axis(logits, order, axis=-1)
    probs = mx.softmax(ranked.astype(mx.float32), axis=-1, precise=True)
    before = mx.cumsum(probs, axis=-1, inclusive=False)
    kept = mx.where(before < p, ranked, -mx.inf)
    return mx.take_along_axis(kept, mx.argsort(order, axis=-1), axis=-1)


def min_p_filter(logits: mx.array, min_p: float) -> mx.array:
    """The logits of tokens at least min_p times as likely as the
    likeliest one; -inf elsewhere."""
    if not 0 < min_p <= 1:
        raise ValueError(f"min_p must be in (0, 1], got {min_p}")
    floor = logits.max(axis=-1, keepdims=True) + math.log(min_p)
    return mx.where(logits >= floor, logits, -mx.inf)

# %% [markdown]
# What to notice:
#
# - `top_p_filter` sorts, and a token survives if the mass of the tokens
#   ranked above it is still short of $p$ (`inclusive=False` makes the
#   cumulative sum exclude the token itself). That keeps the token that
#   crosses $p$, so the kept mass is at least $p$, and nothing after it,
#   so the set is the smallest such one. Then `argsort(order)` puts the
#   logits back in vocabulary order.
# - `min_p_filter` works on logits, not probabilities: $p_i \ge m\,
#   p_{\max}$ is $z_i \ge z_{\max} + \log m$, because the softmax's
#   normalizer cancels from the ratio.
# - All three return logits, so they compose: a filter's output is the
#   next filter's input, and the draw at the end is
#   `mx.random.categorical` as in chapter 7.
#
# Applied to the distribution after the prompt:

# %%
def kept(filtered: mx.array) -> str:
    """How many tokens a filter kept, and their share of the mass."""
    alive = np.isfinite(np.array(filtered))
    mass = np.array(mx.softmax(logits, precise=True))[alive].sum()
    return f"{alive.sum():2d} tokens, {mass:.3f} of the mass"


filters = {"top-k, k = 10": top_k_filter(logits, 10),
           "top-p, p = 0.9": top_p_filter(logits, 0.9),
           "min-p, min_p = 0.1": min_p_filter(logits, 0.1)}
for name, filtered in filters.items():
    print(f"{name:19} {kept(filtered)}")
kept_counts = {name: int(np.isfinite(np.array(f)).sum())
               for name, f in filters.items()}
assert kept_counts["top-k, k = 10"] == 10

# %% [markdown]
# Here top-p with $p = 0.9$ keeps {{ kept_counts['top-p, p = 0.9'] }}
# characters and min-p with 0.1 keeps
# {{ kept_counts['min-p, min_p = 0.1'] }}. Where the model is sure, say
# its favourite alone holds 95% of the mass, both keep that one token
# and nothing else, while top-k keeps ten whatever happens.
#
# ### Temperature before or after the filter
#
# Top-k does not care when the temperature is applied: dividing by $T$
# keeps the order of the logits, so the same $k$ survive. Top-p and min-p
# do care, because they read probabilities, and temperature changes
# those. A four-token example makes it plain:

# %%
toy = mx.array([2.0, 1.0, 0.0, -1.0])
for temperature in (0.5, 1.0, 2.0):
    first = min_p_filter(apply_temperature(toy, temperature), 0.2)
    last = min_p_filter(toy, 0.2)
    print(f"T = {temperature}: temperature first keeps "
          f"{int(mx.isfinite(first).sum())}, filter first keeps "
          f"{int(mx.isfinite(last).sum())}")
toy_kept = int(mx.isfinite(min_p_filter(apply_temperature(toy, 2.0),
                                        0.2)).sum())

# %% [markdown]
# Filtering the raw logits keeps two tokens at every temperature; divide
# by $T = 2$ first and min-p keeps {{ toy_kept }}, because warming the
# distribution raised the tail above the threshold. Projects choose
# differently. nanoGPT's `generate` divides the logits by the temperature
# first and then crops to the top k (Karpathy, 2022), an order that
# cannot matter for top-k. MLX-LM's `make_sampler` applies its top-k,
# top-p and min-p filters to the untempered log-probabilities and divides
# by the temperature only in the final categorical draw (Hannun et al.,
# 2023, the `mlx-lm` package). This book follows MLX-LM: the filters
# decide which tokens are plausible from the model's own distribution,
# and the temperature then only reshapes the odds among those. With that
# order, a high temperature adds variety without letting the tail back in.
#
# ### A repetition penalty
#
# Small models repeat themselves. The CTRL paper (Keskar et al., 2019)
# discounts the logits of tokens that already occur in the text by a
# factor $\theta > 1$. The factor must respect the sign: dividing a
# positive logit by $\theta$ lowers it, but dividing a negative one
# raises it towards zero and makes the repeated token *more* likely. So
# positive logits are divided and negative ones multiplied, as MLX-LM
# and Hugging Face do. MLX-LM looks back at the last 20 tokens by
# default (`repetition_context_size` in `mlx_lm/sample_utils.py`); that
# is the window here too.

# %%
#| export
def apply_repetition_penalty(logits: mx.array, previous: list[int],
                             penalty: float) -> mx.array:
    """Logits of the ids in `previous` pushed down by `penalty` >= 1:
    positive ones divided, negative ones multiplied (CTRL)."""
    if penalty < 1:
        raise ValueError(f"repetition_penalty must be >= 1, got {penalty}")
    if penalty == 1 or not previous:
        return logits
    seen = np.zeros(logits.shape[-1], dtype=bool)
    seen[previous] = True
    lowered = mx.where(logits > 0, logits / penalty, logits * penalty)
    return mx.where(mx.array(seen), lowered, logits)

# %%
pair = mx.array([2.0, -2.0, 1.5])
print("penalized:", apply_repetition_penalty(pair, [0, 1], 2.0))
naive = mx.where(mx.array([True, True, False]), pair / 2, pair)
print("naive:    ", naive)

# %% [markdown]
# Both repeated tokens (ids 0 and 1) lose ground to the fresh one with
# the sign-aware rule; the naive division raises $-2$ to $-1$ and so
# rewards the repetition it meant to punish.
#
# ### One sampler from settings
#
# The rules combine in a fixed order: the repetition penalty on the raw
# logits, then greedy if the temperature is 0, else the filters, then the
# tempered draw. A frozen dataclass holds the settings, checks them once,
# and is called once per token.

# %%
#| export
@dataclass(frozen=True)
class Sampler:
    """Decoding settings, checked on creation; calling it on one
    position's logits draws the next id."""

    temperature: float = 1.0
    """0: greedy; else the logits are divided by it at the draw."""
    top_k: int | None = None
    """Keep the k likeliest tokens (None: all)."""
    top_p: float | None = None
    """Keep the smallest set holding this much mass (None: all)."""
    min_p: float | None = None
    """Keep tokens this share as likely as the top one (None: all)."""
    repetition_penalty: float = 1.0
    """CTRL's penalty on recent ids (1: off)."""
    repetition_window: int = 20
    """How many of the latest ids the penalty looks at."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got "
                             f"{self.temperature}")
        probe = mx.zeros((2,))
        for value, check in ((self.top_k, top_k_filter),
                             (self.top_p, top_p_filter),
                             (self.min_p, min_p_filter)):
            if value is not None:
                check(probe, value)
        apply_repetition_penalty(probe, [], self.repetition_penalty)

    def prepare(self, logits: mx.array, ids: list[int]) -> mx.array:
        """One position's logits as the draw sees them: penalized and,
        unless greedy, filtered and tempered."""
        recent = ids[-self.repetition_window:]
        logits = apply_repetition_penalty(logits.astype(mx.float32),
                                          recent, self.repetition_penalty)
        if self.temperature == 0:
            return logits
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        if self.min_p is not None:
            logits = min_p_filter(logits, self.min_p)
        return apply_temperature(logits, self.temperature)

    def __call__(self, logits: mx.array, ids: list[int],
                 key: mx.array) -> int:
        """The next id after `ids`, drawn with `key`."""
        prepared = self.prepare(logits, ids)
        if self.temperature == 0:
            return greedy(prepared)
        return int(mx.random.categorical(prepared, key=key).item())

    def probabilities(self, logits: mx.array, ids: list[int]) -> mx.array:
        """The distribution the draw follows (greedy: all on one id)."""
        prepared = self.prepare(logits, ids)
        if self.temperature == 0:
            winner = mx.arange(prepared.shape[-1]) == mx.argmax(prepared)
            return winner.astype(mx.float32)
        return mx.softmax(prepared)

# %% [markdown]
# `__post_init__` runs each filter once on a dummy vector, so that a bad
# setting (`top_p=1.5`) fails when the sampler is made, with the
# filter's own message, not halfway through a generation. Each draw uses
# a key it is given, so a sample depends only on its seed, as in
# chapter 7. `probabilities` gives the distribution a draw follows as a
# vector; speculative decoding, at the end of the chapter, needs it.
#
# To see the settings at work, a plain loop, chapter 7's way (the whole
# window through the model for every character), writes {{ len(samples["T = 1"]) }} characters
# after the prompt with four samplers:

# %%
def write(sampler: Sampler, length: int = pick(smoke=80, book=160),
          seed: int = 0) -> str:
    """`length` characters after the prompt, uncached, seeded."""
    ids, key = list(prompt_ids), mx.random.key(seed)
    context = model.config.context
    for _ in range(length):
        key, draw = mx.random.split(key)
        step_logits = model(mx.array([ids[-context:]]))[0, -1]
        ids.append(sampler(step_logits, ids, draw))
    return tokenizer.decode(ids[len(prompt_ids):])


samplers = {"greedy": Sampler(temperature=0),
            "greedy, penalty 1.3": Sampler(temperature=0,
                                           repetition_penalty=1.3),
            "T = 1": Sampler(),
            "T = 0.8, min-p 0.1": Sampler(temperature=0.8, min_p=0.1)}
samples = {name: write(sampler) for name, sampler in samplers.items()}
for name, sample in samples.items():
    print(f"--- {name}\n{sample}")
greedy_words = samples["greedy"].split()

# %% [markdown]
# Greedy decoding settles into a loop: its {{ len(greedy_words) }} words
# are only {{ len(set(greedy_words)) }} different ones. The penalty
# changes the text but not, or not for long, the habit: its window is
# {{ samplers['greedy, penalty 1.3'].repetition_window }} tokens, a few
# words of characters, and a loop longer than that is out of its sight
# by the time it comes round again. A longer window would see the loop,
# but on characters it would also penalize every common letter, which
# is nearly every letter. Plain sampling at $T = 1$ does not loop, but
# draws from the tail now and then, which reads as misspellings; min-p
# with a slightly cooler temperature keeps the variety and fewer of
# those. Which
# sample reads best is a matter of taste, and the baby model's loss,
# {{ record['history']['val_loss'][-1]:.2f }} nats per character, limits
# all four.
#
# Beam search, which keeps the several likeliest partial texts instead of
# one, is the classic alternative to sampling for translation; it is
# exercise 9.1.

# %% [markdown]
# ## The key-value cache
#
# ### Why recomputation is quadratic
#
# A forward pass over $t$ positions multiplies each position's vector by
# every weight matrix, 2 FLOPs per weight per position, and in each of
# the $L$ layers it forms $QK^\top$ and the weighted sum of values,
# $2 t^2 d$ FLOPs each. Chapter 7's `generate` makes such a pass for
# every new token, over a window that grows by one each time, so writing
# $n$ tokens after a prompt of $P$ costs
#
# $$\sum_{i=0}^{n-1} \Big( 2 W (P + i) + 4 L d\,(P + i)^2 \Big),$$
#
# with $W$ the weights a position passes through ($12 L d^2$ in the
# blocks plus the $V d$ of the tied head). The sum grows with $n^2$, and
# its attention part with $n^3$. Yet the keys and values of every earlier
# position are the same as at the previous step: position $j$ sees only
# positions up to $j$, so nothing that comes later changes them. Keep
# them, the idea of the *KV cache* (Pope et al., 2022, analyse it at
# scale), and each new token needs only its own pass: $2W + 4Ld(P+i)$
# FLOPs. The weights' part of the sum is then linear in $n$, $2Wn$, and
# the attention part quadratic instead of cubic.

# %%
def forward_flops(config: GPTConfig, new: int, cached: int = 0) -> float:
    """FLOPs of a pass over `new` positions that also attend to `cached`
    earlier ones: 2 per weight and position, plus QKᵀ and AV."""
    d, layers = config.n_embd, config.n_layer
    weights = layers * (4 * d * d + 2 * d * config.hidden) \
        + config.vocab_size * d
    return 2 * weights * new + 4 * layers * d * new * (cached + new)


def generation_flops(config: GPTConfig, prompt: int, new_tokens: int,
                     cached: bool) -> float:
    """FLOPs of writing new_tokens after a prompt, inside one window."""
    if not cached:
        return sum(forward_flops(config, prompt + i)
                   for i in range(new_tokens))
    return forward_flops(config, prompt) + sum(
        forward_flops(config, 1, prompt + i) for i in range(new_tokens - 1))


vocab = tokenizer.vocab_size
presets = {"baby": GPTConfig.baby(vocab), "full": GPTConfig.full(vocab)}
flop_rows = []
for name, config in presets.items():
    fill = config.context - 8
    plain = generation_flops(config, 8, fill, cached=False)
    cached_flops = generation_flops(config, 8, fill, cached=True)
    flop_rows.append([name, fill, plain / 1e9, cached_flops / 1e9,
                      f"{plain / cached_flops:.0f}×"])
flop_ratio = {row[0]: row[-1] for row in flop_rows}

# %%
#| echo: false
#| label: tbl-flops
#| tbl-cap: FLOPs of filling a window after an 8-token prompt, by the formula, with and without a cache (GFLOP).
Table(flop_rows, ["preset", "new tokens", "without cache", "with cache",
                  "saving"], digits=3)

# %% [markdown]
# @tbl-flops puts numbers on it: the cache saves a factor of
# {{ flop_ratio['baby'] }} on the baby preset's 64 positions and
# {{ flop_ratio['full'] }} on the full preset's 256, and the factor grows
# with the window. The price is memory, which a later section measures.
#
# ### A cache by concatenation
#
# Each attention layer gets a cache of its own. The simplest holds the
# keys and values seen so far, shape (B, H, T, D) as `split_heads` makes
# them, and appends each new step's along the positions axis:

# %%
class ConcatCache:
    """One layer's keys and values, (B, H, T, D), grown by concatenation."""

    def __init__(self) -> None:
        self.keys: mx.array | None = None
        self.values: mx.array | None = None
        self.offset = 0

    def update(self, keys: mx.array,
               values: mx.array) -> tuple[mx.array, mx.array]:
        """Append this step's keys and values; return all of them."""
        if self.keys is None:
            self.keys, self.values = keys, values
        else:
            self.keys = mx.concatenate([self.keys, keys], axis=2)
            self.values = mx.concatenate([self.values, values], axis=2)
        self.offset += keys.shape[2]
        return self.keys, self.values

# %% [markdown]
# `offset` counts the positions held, which is also the position of the
# next token. Concatenation copies the whole cache at every step, so a
# step costs memory traffic that grows with the text; the preallocated
# cache below avoids that.
#
# ### A cached forward pass
#
# The model of chapter 6 knows nothing of caches, and this chapter does
# not change it. A cached pass reuses its modules one by one instead: the
# same embeddings, the same norms and projections in each block, the
# same final norm and tied head. Only attention changes: the new
# positions' keys and values go into the cache, and the queries attend
# over everything it holds.

# %%
#| export
class LayerCache(Protocol):
    """What a cached pass needs of one layer's cache."""

    offset: int

    def update(self, keys: mx.array,
               values: mx.array) -> tuple[mx.array, mx.array]: ...


def cached_attention(attention: MultiHeadAttention, x: mx.array,
                     cache: LayerCache, mask: mx.array | None) -> mx.array:
    """Chapter 5's attention for the new positions of x, (B, T, dims),
    over the cached keys and values and their own."""
    batch, length, dims = x.shape
    q = attention.split_heads(attention.query_proj(x))
    k = attention.split_heads(attention.key_proj(x))
    v = attention.split_heads(attention.value_proj(x))
    keys, values = cache.update(k, v)
    out = scaled_dot_product_attention(q, keys, values, mask)
    out = out.transpose(0, 2, 1, 3).reshape(batch, length, dims)
    return attention.out_proj(out)


def forward_cached(model: GPT, ids: mx.array,
                   caches: list[LayerCache]) -> mx.array:
    """Logits (B, T, vocab) of ids (B, T) that continue what `caches`
    hold, one cache per block; the caches take the new positions."""
    offset, length = caches[0].offset, ids.shape[1]
    if offset + length > model.config.context:
        raise ValueError(f"{offset} cached + {length} new positions do not "
                         f"fit the context of {model.config.context}")
    positions = mx.arange(offset, offset + length)
    x = model.token_embedding(ids) + model.position_embedding(positions)
    mask = None  # one new position may see every cached one
    if length > 1:
        mask = positions[:, None] >= mx.arange(offset + length)[None]
    for block, cache in zip(model.blocks, caches):
        x = x + cached_attention(block.attention, block.norm1(x), cache,
                                 mask)
        x = x + block.feed_forward(block.norm2(x))
    return model.token_embedding.as_linear(model.norm(x))

# %% [markdown]
# What to notice:
#
# - The position embedding is looked up at `offset`, `offset + 1`, …:
#   a token's position is where it sits in the whole window, not in this
#   call.
# - The mask is chapter 5's causal mask shifted by the offset: new
#   position `offset + i` may see every key up to itself. A single new
#   token may see everything, so it needs none.
# - Dropout is left out: it is the identity in evaluation mode, the only
#   mode in which a cache makes sense (training sees whole windows at
#   once and needs no cache).
#
# The first call, over the whole prompt, is the *prefill*; each later
# call, over one new token, is a *decode* step. Both are the same
# function. The check that matters: the cached logits of every position
# equal the logits of chapter 6's model over the whole window, whether
# the text goes in at once or a token at a time.

# %%
check_ids = mx.array([tokenizer.encode(prompt + " doth")])
reference = model(check_ids)
at_once = forward_cached(model, check_ids, [ConcatCache()
                                            for _ in model.blocks])
caches = [ConcatCache() for _ in model.blocks]
split = 10
steps = [forward_cached(model, check_ids[:, :split], caches)] + [
    forward_cached(model, check_ids[:, t:t + 1], caches)
    for t in range(split, check_ids.shape[1])]
one_by_one = mx.concatenate(steps, axis=1)
logit_error = max(mx.abs(out - reference).max().item()
                  for out in (at_once, one_by_one))
assert logit_error < 1e-4, logit_error
print(f"largest difference: {logit_error:.1e}")

# %% [markdown]
# Over {{ check_ids.shape[1] }} positions the largest difference is
# {{ logit_error:.1e }}, the rounding of float32 arithmetic done in a
# different order.
#
# ### A cache in blocks
#
# Concatenation allocates and copies a bigger array at every step.
# MLX-LM's cache instead allocates room for 256 positions at a time
# (`KVCache.step` in `mlx_lm/models/cache.py`) and
# writes each step into it with a slice assignment; only when the room
# runs out does it grow, by another block. The model here can never hold
# more than its context, so the cache never grows past that.

# %%
#| export
class KVCache:
    """One layer's keys and values in arrays preallocated `step`
    positions at a time, never past `limit` positions."""

    def __init__(self, limit: int, step: int = 256) -> None:
        self.limit, self.step, self.offset = limit, step, 0
        self.keys: mx.array | None = None
        self.values: mx.array | None = None

    def grow(self, like: mx.array, needed: int) -> None:
        """Room for at least `needed` positions, shaped like `like`."""
        room = min(self.limit, -(-needed // self.step) * self.step)
        batch, heads, _, dims = like.shape
        shape = (batch, heads, room - self.offset, dims)
        if self.keys is None:
            self.keys = mx.zeros(shape, like.dtype)
            self.values = mx.zeros(shape, like.dtype)
        else:
            blank = mx.zeros(shape, like.dtype)
            held = (slice(None), slice(None), slice(0, self.offset))
            self.keys = mx.concatenate([self.keys[held], blank], axis=2)
            self.values = mx.concatenate([self.values[held], blank], axis=2)

    def update(self, keys: mx.array,
               values: mx.array) -> tuple[mx.array, mx.array]:
        """Write this step's keys and values; return the filled part."""
        start, end = self.offset, self.offset + keys.shape[2]
        if end > self.limit:
            raise ValueError(f"the cache holds at most {self.limit} "
                             f"positions; {end} asked")
        if self.keys is None or end > self.keys.shape[2]:
            self.grow(keys, end)
        self.keys[..., start:end, :] = keys
        self.values[..., start:end, :] = values
        self.offset = end
        return self.keys[..., :end, :], self.values[..., :end, :]


def make_caches(model: GPT) -> list[KVCache]:
    """One empty KVCache per block of `model`, limited to its context."""
    return [KVCache(model.config.context) for _ in model.blocks]


def prefill(model: GPT, ids: list[int]) -> tuple[mx.array, list[KVCache]]:
    """The last position's logits after `ids`, and the filled caches."""
    caches = make_caches(model)
    logits = forward_cached(model, mx.array([ids]), caches)[0, -1]
    return logits, caches


def decode_step(model: GPT, token: int, caches: list[KVCache]) -> mx.array:
    """The logits after one more token, which joins the caches."""
    return forward_cached(model, mx.array([[token]]), caches)[0, -1]

# %% [markdown]
# What to notice:
#
# - `-(-needed // step) * step` rounds up to whole blocks, and `min`
#   caps the room at the context: the baby model's caches hold 64
#   positions, never 256.
# - `self.keys[..., start:end, :] = keys` writes in place; it is the one
#   line that replaces the concatenation. The slice returned to
#   attention covers only the positions written, so the zeros in the
#   unused room are never attended to.
# - Growing still copies, but once per block instead of once per token.
# - Keys and values need two arrays of zeros, not one array bound to both
#   names: MLX's slice assignment changes the array object it is applied
#   to, so with one shared array the values would overwrite the keys
#   (this chapter's first draft made exactly that mistake, and the check
#   below caught it).
#
# `prefill` and `decode_step` are the two calls a generator makes. The
# same checks as before, with the new cache:

# %%
logits_prefilled, caches = prefill(model, check_ids[0, :split].tolist())
decoded = [decode_step(model, token, caches)
           for token in check_ids[0, split:-1].tolist()]
stacked = mx.stack([logits_prefilled, *decoded])
block_error = mx.abs(stacked - reference[0, split - 1:-1]).max().item()
assert block_error < 1e-4, block_error
assert caches[0].keys.shape[2] == model.config.context
print(f"largest difference: {block_error:.1e}")

# %% [markdown]
# ### At the edge of the window
#
# The positions are learned and absolute: the model has embeddings for
# positions 0 to {{ model.config.context - 1 }} and no others. Chapter 7
# slides the window by one token at a time, so every character after the
# first {{ model.config.context }} is predicted from the last
# {{ model.config.context }}. Sliding breaks the cache: the token that
# was at position 1 is now at position 0, and its keys and values, which
# carry its position, are wrong. A cache cannot slide here. (With rotary
# positions, chapter 4, the keys need no shift, since scores depend only
# on distances; but in every layer after the first, the kept positions'
# keys and values were computed while the dropped tokens were in view,
# so a slid cache is not what a fresh pass would compute.) When the cache is full, the generator below drops it,
# keeps the last `keep` tokens and prefills them again; the next
# `context - keep` tokens are cheap decode steps until it is full again.
# `keep = context` is chapter 7's sliding window, a full prefill for
# every token; the default, half the window, pays one prefill of half a
# window every half window. What the model sees is fixed by that
# schedule, with the cache or without it, so the cache changes the cost
# and never the text.

# %%
#| export
def generate_tokens(model: GPT, prompt_ids: list[int], new_tokens: int, *,
                    temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, min_p: float | None = None,
                    repetition_penalty: float = 1.0, seed: int = 0,
                    cache: bool = True, keep: int | None = None,
                    sampler: Sampler | None = None) -> Iterator[int]:
    """Yield new_tokens ids after the prompt as they are drawn; a full
    window restarts from its last `keep` ids (default: half). A
    `sampler` replaces the five settings before it."""
    settings = Sampler(temperature, top_k, top_p, min_p, repetition_penalty)
    if sampler is None:
        sampler = settings
    elif settings != Sampler():
        raise ValueError("give a sampler or its settings, not both")
    context = model.config.context
    keep = context // 2 if keep is None else keep
    if not prompt_ids or not 1 <= keep <= context:
        raise ValueError(f"need a prompt and 1 <= keep <= {context}")
    ids, key = list(prompt_ids), mx.random.key(seed)
    start, caches, was_training = max(0, len(ids) - context), None, \
        model.training
    model.eval()
    try:
        for _ in range(new_tokens):
            if len(ids) - start > context:  # the window is full
                start, caches = len(ids) - keep, None
            if not cache:
                logits = model(mx.array([ids[start:]]))[0, -1]
            elif caches is None:
                logits, caches = prefill(model, ids[start:])
            else:
                logits = decode_step(model, ids[-1], caches)
            key, draw = mx.random.split(key)
            ids.append(sampler(logits, ids, draw))
            yield ids[-1]
    finally:  # also when the reader stops early
        model.train(was_training)

# %% [markdown]
# What to notice: `start` is where the visible window begins; the cache,
# when there is one, always holds `ids[start:-1]`, and the uncached path
# feeds `ids[start:]` whole. Both take the same decisions from the same
# `Sampler`, seeded the same way, and the model returns to the mode it
# was in, even if the reader stops the iterator early.
#
# Now the promise, checked: greedy decoding with and without the cache,
# far past the window, and the sliding schedule against chapter 7's
# `generate`.

# %%
same_tokens = pick(smoke=150, book=500)
start_ids = tokenizer.encode("ROMEO:\n")
with_cache = list(generate_tokens(model, start_ids, same_tokens,
                                  temperature=0))
without = list(generate_tokens(model, start_ids, same_tokens,
                               temperature=0, cache=False))
assert with_cache == without
sliding = list(generate_tokens(model, start_ids, same_tokens,
                               temperature=0, keep=model.config.context))
assert start_ids + sliding == generate(model, start_ids, same_tokens, 0)
sampled = list(generate_tokens(model, start_ids, same_tokens, top_p=0.9,
                               seed=3))
assert sampled == list(generate_tokens(model, start_ids, same_tokens,
                                       top_p=0.9, seed=3, cache=False))
print(tokenizer.decode(with_cache[:120]))

# %% [markdown]
# All three asserts hold: {{ same_tokens }} greedy tokens with the cache
# equal those without it, past the {{ model.config.context }}-position
# window several times over; with `keep` equal to the context the
# generator writes exactly what chapter 7's `generate` writes; and a
# seeded top-p sample is the same both ways too.
#
# ### What the cache costs in memory
#
# Each layer keeps a key and a value vector of `n_embd` numbers for every
# position, so a cache full to the context holds
# $2 \times L \times T \times d$ numbers: 2 × layers × positions × dims,
# times 4 bytes in float32. For the full preset that is the formula's
# {{ full_cache_formula / 2**20:.2f }} MiB; MLX's allocator, asked before
# and after a prefill of the whole window, reports
# {{ full_cache_measured / 2**20:.2f }} MiB more.

# %%
def cache_bytes(config: GPTConfig, positions: int, itemsize: int = 4) -> int:
    """Bytes of keys and values for `positions` in every layer."""
    return 2 * config.n_layer * positions * config.n_embd * itemsize


mx.random.seed(0)
full_model = GPT(presets["full"])
full_model.eval()
mx.eval(full_model.parameters())
window_ids = np.random.default_rng(0).integers(
    0, vocab, presets["full"].context).tolist()
active_before = mx.get_active_memory()
last_logits, full_caches = prefill(full_model, window_ids)
del last_logits  # its graph would keep activations alive
mx.eval([(cache.keys, cache.values) for cache in full_caches])
full_cache_measured = mx.get_active_memory() - active_before
full_cache_formula = cache_bytes(presets["full"], presets["full"].context)
assert abs(full_cache_measured - full_cache_formula) \
    < 0.05 * full_cache_formula, full_cache_measured
del full_caches
print(f"{full_cache_formula:,} bytes by formula, "
      f"{full_cache_measured:,} measured")

# %% [markdown]
# The two agree, so the cache holds nothing but keys and values. At this
# size the cache is small next to the model: the full preset's weights
# take {{ full_weight_mib:.0f }} MiB. It grows with layers × positions ×
# width, though, and for a model with thousands of positions, dozens of
# layers and a batch of users, the cache, not the weights, is what fills
# memory; that is why later models share keys and values between heads.
#
# ## Measured speed
#
# The cache removes FLOPs; whether it saves time depends on the machine.
# The measurement: greedy decoding from an 8-token prompt, with and
# without the cache, on the trained baby model and on an untrained model
# of the full preset (the weights do not change the work), recording the
# clock at every token.

# %%
def stamps(lm: GPT, new_tokens: int, **options: object) -> np.ndarray:
    """Seconds from the start to each greedy token generate_tokens
    yields after an 8-token prompt."""
    begin, out = time.perf_counter(), []
    for _ in generate_tokens(lm, prompt_ids[:8], new_tokens, temperature=0,
                             **options):
        out.append(time.perf_counter() - begin)
    return np.array(out)


full_weight_mib = sum(v.nbytes for _, v in
                      tree_flatten(full_model.parameters())) / 2**20
speed_tokens = pick(smoke=24, book=256)
speed_runs = {}
for name, lm, tokens in (("baby", model, 3 * pick(smoke=16, book=64)),
                         ("full", full_model, speed_tokens)):
    stamps(lm, 8)  # warm-up
    for cached in (True, False):
        speed_runs[name, cached] = stamps(lm, tokens, cache=cached)
rates = {run: len(times) / times[-1] for run, times in speed_runs.items()}
full_speedup = rates["full", True] / rates["full", False]
baby_speedup = rates["baby", True] / rates["baby", False]
for (name, cached), rate in rates.items():
    print(f"{name}, {'with' if cached else 'without'} cache: "
          f"{rate:.0f} tokens/s")

# %%
#| echo: false
#| label: fig-speed
#| fig-cap: Tokens per second after n new tokens (n divided by the time to write them), greedy, from an 8-token prompt, with and without the cache, on this machine's CPU. The baby model runs past its 64-position window; the full preset fills its 256 and re-prefills half of it for the last 8 tokens.
fig, ax = plt.subplots(figsize=(6, 3))
for (name, cached), times in speed_runs.items():
    count = np.arange(1, len(times) + 1)
    ax.plot(count, count / times, "-" if cached else "--",
            label=f"{name}, {'with' if cached else 'without'} cache")
ax.set_yscale("log")
ax.set_xlabel("new tokens n")
ax.set_ylabel("tokens per second")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# After {{ speed_tokens }} tokens the full preset writes
# {{ rates['full', True]:.0f }} tokens per second with the cache and
# {{ rates['full', False]:.0f }} without, {{ full_speedup:.1f }} times
# faster; the baby model gains {{ baby_speedup:.1f }} times over its
# three windows. Without the cache the rate falls as the text grows,
# each token paying for the whole window; with it the rate holds up
# much better. Both gains fall far short of the FLOP ratios of
# @tbl-flops ({{ flop_ratio['full'] }} for the full preset): a decode
# step does little arithmetic, and the fixed cost of its many small
# operations, which no cache removes, sets its pace (the next section
# measures it). For comparison, not measured here: Raschka's bonus material on
# the KV cache reports GPT-2's 124-million-parameter model, in PyTorch on
# the CPU of a Mac Mini with an M4 chip, writing 200 tokens at 27 tokens
# per second without a cache and 144 with one, 5.3 times faster
# (Raschka, 2024). On a Mac's GPU, expect the small presets here to
# gain less: a decode step that multiplies one vector by each matrix
# leaves most of a GPU idle, and fixed per-call costs weigh more.
#
# ### Prefill and decode
#
# A prefill pushes many positions through each matrix at once, a
# matrix-matrix product; a decode step pushes one, a matrix-vector
# product that reads every weight to use it once. The same window of
# {{ presets['full'].context }} tokens, both ways, on the full preset:

# %%
#| label: tbl-prefill-decode
#| tbl-cap: The same window through the full preset's model twice: prefilled in one pass, and decoded one position at a time through the cache.
def prefill_vs_decode(lm: GPT, ids: list[int]) -> tuple[float, float]:
    """Seconds to prefill `ids` at once, and to feed them one by one."""
    begin = time.perf_counter()
    mx.eval(prefill(lm, ids)[0])
    at_once = time.perf_counter() - begin
    begin = time.perf_counter()
    logits, caches = prefill(lm, ids[:1])
    for token in ids[1:]:
        mx.eval(logits)
        logits = decode_step(lm, token, caches)
    mx.eval(logits)
    return at_once, time.perf_counter() - begin


prefill_vs_decode(full_model, window_ids[:16])  # warm-up
prefill_s, decode_s = prefill_vs_decode(full_model, window_ids)
window = len(window_ids)
Table([["prefill, all at once", prefill_s * 1e3, prefill_s / window * 1e3,
        window / prefill_s],
       ["decode, one at a time", decode_s * 1e3, decode_s / window * 1e3,
        window / decode_s]],
      ["pass", "total (ms)", "per token (ms)", "tokens/s"], digits=1)

# %% [markdown]
# The prefill handles the {{ window }} positions
# {{ decode_s / prefill_s:.0f }} times faster than the decode steps do.
# That is why a long prompt appears to cost little before the first
# token, and why the re-prefill at the window's edge is cheaper than it
# looks: with `keep` at half the window it adds one prefill of
# {{ presets['full'].context // 2 }} positions every
# {{ presets['full'].context // 2 }} tokens, about
# {{ 100 * prefill_s / 2 / (decode_s / 2):.0f }}% of the decode time of
# those tokens by this measurement.
#
# ### Compiling the decode step
#
# At one position per step, a decode step is many small operations, and
# on this CPU their fixed costs add up. `mx.compile` (chapter 2) fuses
# the element-wise ones, but it traces a function for the shapes it is
# given, and the cache's filled part grows every step: each new shape
# would trace again. The way around it is a cache of fixed shape, the
# whole window, written at a position held in an array, with a mask that
# hides the positions not yet written. The compiled function takes the
# cache in and gives it back, as compiled functions must.

# %%
def compiled_decoder(lm: GPT) -> Callable:
    """A compiled decode step over fixed (1, H, context, D) caches."""
    slots = mx.arange(lm.config.context)

    def step(token: mx.array, position: mx.array, keys: list,
             values: list) -> tuple[mx.array, list, list]:
        x = lm.token_embedding(token) + lm.position_embedding(position)
        written = (slots == position)[:, None]
        keys, values = list(keys), list(values)
        for layer, block in enumerate(lm.blocks):
            attention, h = block.attention, block.norm1(x)
            q, k, v = (attention.split_heads(proj(h)) for proj in (
                attention.query_proj, attention.key_proj,
                attention.value_proj))
            keys[layer] = mx.where(written, k, keys[layer])
            values[layer] = mx.where(written, v, values[layer])
            out = scaled_dot_product_attention(q, keys[layer],
                                               values[layer],
                                               slots <= position)
            x = x + attention.out_proj(out.reshape(x.shape))
            x = x + block.feed_forward(block.norm2(x))
        return lm.token_embedding.as_linear(lm.norm(x)), keys, values

    return mx.compile(step)

# %% [markdown]
# What to notice: `position` is an array, so a new position is new data,
# not a new trace; `mx.where(written, …)` writes the new key into its
# slot without a shape that depends on the position; the mask
# `slots <= position` hides the zeros ahead. The reshape merges the heads
# directly, which is right only for one position. The price: every step
# attends over the whole window, written or not. The prefill fills the
# caches; the full preset's `KVCache` is exactly one 256-position block,
# the fixed shape the compiled step needs.

# %%
def decode_rate(lm: GPT, steps: int,
                step: Callable | None) -> tuple[float, list[int]]:
    """Greedy tokens per second over `steps` decode steps after an
    8-token prefill, eager or by a compiled `step`, and the tokens."""
    logits, caches = prefill(lm, prompt_ids[:8])
    keys = [cache.keys for cache in caches]
    values = [cache.values for cache in caches]
    tokens = [greedy(logits)]
    begin = time.perf_counter()
    for position in range(8, 8 + steps):
        if step is None:
            logits = decode_step(lm, tokens[-1], caches)
        else:
            logits, keys, values = step(mx.array([[tokens[-1]]]),
                                        mx.array([position]), keys, values)
            logits = logits[0, -1]
        tokens.append(greedy(logits))
    return steps / (time.perf_counter() - begin), tokens


compile_steps = pick(smoke=16, book=128)
decoder = compiled_decoder(full_model)
decode_rate(full_model, 4, decoder)  # the trace, once
eager_rate, eager_tokens = decode_rate(full_model, compile_steps, None)
compiled_rate, compiled_tokens = decode_rate(full_model, compile_steps,
                                             decoder)
assert compiled_tokens == eager_tokens
print(f"eager {eager_rate:.0f} tokens/s, compiled {compiled_rate:.0f}")

# %% [markdown]
# The compiled step writes the same {{ compile_steps }} tokens as the
# eager one, at {{ compiled_rate:.0f }} tokens per second against
# {{ eager_rate:.0f }}, a ratio of {{ compiled_rate / eager_rate:.2f }}
# on this CPU, and a small one either way. Compiling fuses the small
# element-wise operations, but the step now attends over the whole
# window, written or not, and its matrix products, which compiling
# leaves as they are, weigh most at this width. On a Mac's GPU, where every small kernel launch costs
# time, fusing should count for more; that is an expectation, not a
# measurement. The library keeps the eager, growing cache, which is
# simpler and attends only over the positions written.

# %% [markdown]
# ## Speculative decoding
#
# A decode step is mostly fixed cost, and a pass over a few positions
# pays that cost only once (measured below). Speculative decoding (Leviathan et al., 2023) turns that into
# speed. A small, fast *draft* model writes the next $k$ tokens one at a
# time; the large *target* model then scores all of them in one cached
# pass, which gives its own distribution at each of the $k + 1$
# positions. The draft's tokens are kept as long as the target agrees
# with them; at the first disagreement the target's own choice replaces
# the draft's, and the rest of the draft is thrown away, caches
# included. Every round yields at least one token, and up to $k + 1$.
#
# ### A draft model
#
# The draft must use the same tokenizer as the target and be much
# cheaper. Chapter 7's trainer makes one in a few seconds: a single
# block, two heads, 64 wide, on the same characters.

# %%
from mlxllm.data import encode_splits, load_corpus
from mlxllm.train import Trainer, TrainConfig

char_train, char_val = encode_splits(tokenizer, load_corpus(),
                                     artifact_path("09_generation/tokens"))
draft_config = GPTConfig(vocab, model.config.context, n_layer=1, n_head=2,
                         n_embd=64)
mx.random.seed(0)
draft_model = GPT(draft_config)
draft_steps = pick(smoke=60, book=1500)
draft_train = TrainConfig(steps=draft_steps, eval_every=draft_steps,
                          checkpoint_every=draft_steps,
                          warmup_steps=pick(smoke=10, book=100))
draft_history = Trainer(draft_model, draft_train, char_train,
                        char_val[:pick(smoke=2048, book=65536)],
                        chars_per_token=1.0, log=None).run()
draft_model.eval()
draft_loss = draft_history["val_loss"][-1]


def parameter_count(lm: GPT) -> int:
    """Numbers in the model's parameters."""
    return sum(v.size for _, v in tree_flatten(lm.parameters()))


draft_share = parameter_count(draft_model) / parameter_count(model)
print(f"{parameter_count(draft_model):,} parameters, {draft_share:.1%} of "
      f"the target's; validation {draft_loss:.2f} nats/char after "
      f"{draft_steps} steps")


def cached_pass_seconds(width: int, repeats: int = 30) -> float:
    """Median seconds of the target's cached pass over `width` new
    positions after a 32-position prefill."""
    times = []
    for _ in range(repeats):
        _, caches = prefill(model, prompt_ids[:32])
        mx.eval([(c.keys, c.values) for c in caches])
        begin = time.perf_counter()
        mx.eval(forward_cached(model, mx.array([prompt_ids[32:32 + width]]),
                               caches))
        times.append(time.perf_counter() - begin)
    return float(np.median(times))


verify_width = 5
verify_ratio = cached_pass_seconds(verify_width) / cached_pass_seconds(1)
print(f"a cached pass over {verify_width} positions: {verify_ratio:.2f} "
      "times one over 1")

# %% [markdown]
# One cached pass of the target over {{ verify_width }} new positions
# takes {{ verify_ratio:.1f }} times as long as a pass over one, so
# checking four drafted tokens costs far less than writing them. The
# draft has {{ draft_share:.0%}} of the target's parameters and a
# validation loss of {{ draft_loss:.2f }} nats per character against the
# target's {{ record['history']['val_loss'][-1]:.2f }}: a worse model,
# as a draft is bound to be, but one that agrees with the target on the easy
# characters, the rest of a common word, a space after it.
#
# ### Keeping the target's distribution
#
# With greedy decoding the rule is plain: keep a drafted token if it is
# the target's argmax. Sampling needs more care, since the draft's
# tokens follow the draft's distribution $q$, not the target's $p$. The
# rule of Leviathan et al. keeps a drafted token $x$ with probability
# $\min(1, p(x)/q(x))$; when it rejects one, it draws the replacement
# from what is left of $p$ once $q$ is taken away,
# $\max(p - q, 0)$ normalized. A token is then kept with probability
# $\sum_x \min(p(x), q(x))$ and, kept or replaced, follows $p$ exactly.
# If every draft is kept, one more token comes from the target's last
# distribution. The greedy rule is the special case in which $p$ and
# $q$ are all on one token each: the ratio is 1 or 0, and what is left
# of $p$ is its argmax.

# %%
#| export
def draw_from(probabilities: mx.array, key: mx.array) -> int:
    """One id drawn from a vector of probabilities."""
    return int(mx.random.categorical(mx.log(probabilities), key=key).item())


def accept_draft(target: list[mx.array], draft: list[mx.array],
                 drafted: list[int], key: mx.array) -> list[int]:
    """The ids one round keeps: drafted ones while a uniform draw is
    below p/q, then one from the target (len(target) = len(drafted)+1)."""
    kept = []
    for p, q, token in zip(target, draft, drafted):
        key, test, draw = mx.random.split(key, 3)
        if mx.random.uniform(key=test).item() * q[token].item() \
                < p[token].item():
            kept.append(token)
            continue
        left = mx.maximum(p - q, 0)
        return kept + [draw_from(left if left.sum().item() > 0 else p, draw)]
    return kept + [draw_from(target[len(drafted)], key)]

# %% [markdown]
# What to notice: the test `u · q(x) < p(x)` is `u < p(x)/q(x)` without
# a division, and it always holds when $p(x) \ge q(x)$. What is left of
# $p$ sums to zero only when $p$ equals $q$ to rounding, and then a
# rejection was rounding too, so the draw falls back on $p$.
#
# The claim can be checked on the real models. At the first character
# of a word, after "What light through" and a space, both give a distribution
# at $T = 1$; many single rounds,
# each drafting one token from $q$ and letting `accept_draft` decide,
# must produce tokens distributed as $p$, not as $q$, and keep the
# draft as often as $\sum_x \min(p, q)$ predicts.

# %%
plain, before = Sampler(), tokenizer.encode("ROMEO:\nWhat light through ")
p_next = plain.probabilities(model(mx.array([before]))[0, -1], before)
q_next = plain.probabilities(draft_model(mx.array([before]))[0, -1], before)
trials = pick(smoke=2000, book=20000)
counts, accepted, key = np.zeros(vocab), 0, mx.random.key(1)
for _ in range(trials):
    key, guess_key, round_key = mx.random.split(key, 3)
    guess = draw_from(q_next, guess_key)
    first = accept_draft([p_next, p_next], [q_next], [guess], round_key)
    counts[first[0]] += 1
    accepted += len(first) == 2
p_np, q_np = np.array(p_next), np.array(q_next)
distance = {"draft q": 0.5 * np.abs(q_np - p_np).sum(),
            "speculative": 0.5 * np.abs(counts / trials - p_np).sum()}
predicted_acceptance = np.minimum(p_np, q_np).sum()
noise = np.sqrt(p_np * (1 - p_np) / (2 * np.pi * trials)).sum()
assert distance["speculative"] < 1.5 * noise < distance["draft q"], distance
spread = np.sqrt(predicted_acceptance * (1 - predicted_acceptance) / trials)
assert abs(accepted / trials - predicted_acceptance) < 4 * spread
print({name: round(float(value), 3) for name, value in distance.items()},
      f"(sampling noise {noise:.3f}); acceptance "
      f"{accepted / trials:.3f}, predicted {predicted_acceptance:.3f}")

# %% [markdown]
# Over {{ trials:,}} rounds the speculative tokens lie
# {{ distance['speculative']:.3f }} from $p$ in total variation (half
# the summed absolute difference), where {{ trials:,}} exact draws from
# $p$ would lie {{ noise:.3f }} on average; the draft's own distribution lies
# {{ distance['draft q']:.3f }} from it. The draft was kept in
# {{ accepted / trials:.1%}} of the rounds, against
# {{ predicted_acceptance:.1%}} predicted.
#
# ### Rolling the caches back
#
# A round leaves both models' caches holding positions that were drafted
# and then thrown away. With `KVCache` the rollback is a single number:
# lowering `offset` forgets every position past it, and the next write
# overwrites them. Two helpers keep the bookkeeping in one place:
# `advance` feeds a model whatever part of the window its caches do not
# hold yet, and `rewind` cuts the caches back to a length.

# %%
#| export
def advance(model: GPT, caches: list[KVCache], window: list[int]) -> mx.array:
    """Logits (T, vocab) of the ids of `window` past what `caches` hold,
    which join the caches."""
    new = window[caches[0].offset:]
    return forward_cached(model, mx.array([new]), caches)[0]


def rewind(caches: list[KVCache], length: int) -> None:
    """Forget every cached position from `length` on."""
    for cache in caches:
        cache.offset = min(cache.offset, length)


@dataclass
class SpeculationStats:
    """What a speculative run drafted and kept, counted as it goes."""

    rounds: int = 0
    drafted: int = 0
    accepted: int = 0

# %% [markdown]
# The loop follows `generate_tokens`' window schedule exactly, so that
# with greedy decoding it must write the target's own text: the window
# starts at `start`, a round drafts no further than the window allows,
# and a full window restarts from the last `keep` ids, caches and all.

# %%
#| export
def speculative_tokens(model: GPT, draft: GPT, prompt_ids: list[int],
                       new_tokens: int, *, sampler: Sampler = Sampler(),
                       draft_tokens: int = 4, seed: int = 0,
                       keep: int | None = None,
                       stats: SpeculationStats | None = None
                       ) -> Iterator[int]:
    """generate_tokens' ids, `draft` proposing `draft_tokens` at a time
    and `model` checking them in one pass (Leviathan et al., 2023)."""
    context = model.config.context
    keep = context // 2 if keep is None else keep
    check_draft(model, draft, draft_tokens, keep)
    stats = SpeculationStats() if stats is None else stats
    ids, key, made = list(prompt_ids), mx.random.key(seed), 0
    start = max(0, len(ids) - context)
    caches, draft_caches = make_caches(model), make_caches(draft)
    modes = model.training, draft.training
    model.eval()
    draft.eval()
    try:
        while made < new_tokens:
            if len(ids) - start > context:  # the window is full
                start = len(ids) - keep
                caches, draft_caches = make_caches(model), make_caches(draft)
            k = min(draft_tokens, start + context - len(ids),
                    new_tokens - made - 1)
            window, drafted, guesses = ids[start:], [], []
            for _ in range(k):
                logits = advance(draft, draft_caches, window + drafted)[-1]
                guesses.append(sampler.probabilities(logits, ids + drafted))
                key, draw = mx.random.split(key)
                drafted.append(draw_from(guesses[-1], draw))
            logits = advance(model, caches, window + drafted)[-(k + 1):]
            targets = [sampler.probabilities(logits[i], ids + drafted[:i])
                       for i in range(k + 1)]
            key, draw = mx.random.split(key)
            kept = accept_draft(targets, guesses, drafted, draw)
            rewind(caches, len(window) + len(kept) - 1)
            rewind(draft_caches, len(window) + len(kept) - 1)
            stats.rounds += 1
            stats.drafted += k
            stats.accepted += len(kept) - 1
            for token in kept:
                ids.append(token)
                made += 1
                yield token
    finally:  # also when the reader stops early
        model.train(modes[0])
        draft.train(modes[1])


def check_draft(model: GPT, draft: GPT, draft_tokens: int, keep: int) -> None:
    """Raise ValueError unless `draft` can draft for `model`."""
    mine, theirs = model.config, draft.config
    if theirs.vocab_size != mine.vocab_size:
        raise ValueError(f"the draft model has {theirs.vocab_size} token "
                         f"ids, the model {mine.vocab_size}: they need one "
                         "tokenizer")
    if theirs.context < mine.context:
        raise ValueError(f"the draft model's context ({theirs.context}) is "
                         f"shorter than the model's ({mine.context})")
    if draft_tokens < 1 or not 1 <= keep <= mine.context:
        raise ValueError(f"need draft_tokens >= 1 and 1 <= keep <= "
                         f"{mine.context}")

# %% [markdown]
# What to notice:
#
# - `k` is capped three ways: the setting, the room left in the window
#   (`start + context - len(ids)` more positions may be predicted before
#   it is full) and the tokens still wanted. A round with `k = 0` is a
#   plain decode step.
# - The target's cache holds the window up to its last id; `advance`
#   feeds that id and the $k$ drafted ones, $k + 1$ positions in one
#   pass. After a restart it feeds the whole window, a prefill.
# - After a round that keeps $a$ drafted tokens and one of the target's,
#   only the window and those $a$ drafted tokens are right in either
#   cache, so both are rewound to that length; the draft's cache may
#   hold fewer, and `advance` feeds it the rest next round.
# - The repetition penalty sees `ids + drafted[:i]`, the text as it
#   would be at that position, as in `generate_tokens`.
#
# The check: greedy speculative decoding writes exactly the target's
# greedy text, past the window, for several draft lengths, and a sampled
# run is reproducible from its seed.

# %%
speculative_check = {}
for k in (1, 3, 6):
    stats = SpeculationStats()
    text_ids = list(speculative_tokens(model, draft_model, start_ids,
                                       same_tokens, sampler=Sampler(0),
                                       draft_tokens=k, stats=stats))
    assert text_ids == with_cache, k
    speculative_check[k] = stats
twice = [list(speculative_tokens(model, draft_model, start_ids, 60, seed=5))
         for _ in range(2)]
assert twice[0] == twice[1]
print({k: f"{s.accepted}/{s.drafted} kept in {s.rounds} rounds"
       for k, s in speculative_check.items()})

# %% [markdown]
# All {{ same_tokens }} tokens agree for each draft length. The counts
# already say how much the draft helps: with $k = 3$ the target ran
# {{ speculative_check[3].rounds }} passes for {{ same_tokens }} tokens
# instead of {{ same_tokens }}.
#
# ### What it buys here
#
# Fewer passes of the target are not yet less time: each round also
# pays $k$ draft steps, the target's wider pass, and a few small
# operations per drafted token in `accept_draft`. The measurement: the
# median of three runs of {{ spec_tokens }} new tokens from the prompt,
# greedy and at $T = 1$, against `generate_tokens` with the same
# settings.

# %%
def spec_rate(temperature: float, draft_tokens: int | None) -> tuple[float,
                                                                     float]:
    """Median tokens/s of three runs, and the share of drafts kept
    (draft_tokens None: generate_tokens alone)."""
    rates, stats = [], SpeculationStats()
    for seed in range(3):
        begin = time.perf_counter()
        if draft_tokens is None:
            made = list(generate_tokens(model, start_ids, spec_tokens,
                                        temperature=temperature, seed=seed))
        else:
            made = list(speculative_tokens(
                model, draft_model, start_ids, spec_tokens,
                sampler=Sampler(temperature), draft_tokens=draft_tokens,
                seed=seed, stats=stats))
        rates.append(len(made) / (time.perf_counter() - begin))
    return float(np.median(rates)), stats.accepted / max(stats.drafted, 1)


spec_tokens = pick(smoke=40, book=256)
draft_rates = []
for seed in range(3):
    begin = time.perf_counter()
    list(generate_tokens(draft_model, start_ids, spec_tokens, temperature=0,
                         seed=seed))
    draft_rates.append(spec_tokens / (time.perf_counter() - begin))
draft_rate = float(np.median(draft_rates))
spec_rows, spec_best = [], {}
for temperature in (0.0, 1.0):
    alone, _ = spec_rate(temperature, None)
    spec_rows.append([f"{temperature:g}", "target alone", "", round(alone),
                      1.0])
    for k in (1, 2, 4, 8):
        rate, kept_share = spec_rate(temperature, k)
        spec_rows.append([f"{temperature:g}", f"draft k = {k}", kept_share,
                          round(rate), rate / alone])
        spec_best[temperature] = max(spec_best.get(temperature, 0),
                                     rate / alone)

# %%
#| echo: false
#| label: tbl-speculative
#| tbl-cap: Speculative decoding on this CPU, chapter 7's baby model with the draft above. Median tokens per second of three runs; kept is the share of drafted tokens the target accepted.
Table(spec_rows, ["T", "decoding", "kept", "tokens/s", "speed-up"],
      digits=2)

# %% [markdown]
# On this CPU the draft gains little, if anything: with it, greedy
# decoding is at best {{ spec_best[0.0]:.2f }} times as fast as the
# model alone, and sampling at $T = 1$ at best
# {{ spec_best[1.0]:.2f }} times (@tbl-speculative); on a shared
# machine, differences of a few percent are within the noise, and the
# target-alone rate here differs from the earlier figure's because runs
# of the same work at different moments differ (compare rates within
# one table or figure, not across them). Greedy
# decoding keeps most drafts, since the two models need only agree on
# their likeliest character; at $T = 1$ they must agree on a random
# draw, and the further ahead the draft guesses, the more of it is
# thrown away. What caps the gain is the price of a round. The draft
# has {{ draft_share:.0%}} of the target's parameters, but alone it
# writes {{ draft_rate:.0f }} tokens per second against the target's
# {{ spec_rows[0][3]:.0f }}: at this size a decode step is mostly the
# fixed cost of its many small operations, which
# {{ draft_config.n_layer }} block instead of {{ model.config.n_layer }}
# does not remove, and `accept_draft` adds a few small
# operations per drafted token. The method is made for a large gap in
# cost, a draft that is nearly free next to its target: Leviathan et
# al. report two to three times the speed of T5-XXL's standard
# implementation (not measured here).
#
# ## Summary
#
# You now own the decoding rules, each a few lines on a vector of
# logits: greedy, temperature, top-k, nucleus (top-p) and min-p
# sampling and CTRL's sign-aware repetition penalty, in one `Sampler`
# that applies the filters to the model's own distribution and the
# temperature at the draw, as MLX-LM does. And a key-value cache, first
# by concatenation, then preallocated in blocks, with a cached forward
# pass built from chapter 6's modules unchanged: its logits equal the
# plain model's to float32 rounding, and greedy decoding writes the same
# {{ same_tokens }} tokens with and without it, past the window, where
# learned positions force a re-prefill. It costs
# {{ full_cache_formula / 2**20:.1f }} MiB for the full preset's window,
# as the formula says, and on this machine makes the full preset
# {{ full_speedup:.1f }} times faster over {{ speed_tokens }} tokens.
# Last, speculative decoding: a one-block draft proposes, the model
# checks a whole draft in one pass, Leviathan et al.'s rule keeps the
# model's distribution exactly (checked on the real distributions), and
# greedy speculative decoding writes the model's own greedy text.
#
# What went into `mlxllm.generate`, after chapter 7's `draw_token`,
# `generate_stream` and `generate` (unchanged; chapter 7's trainer still
# samples with them, and `mlxllm generate` now runs on
# `generate_tokens`):
#
# - `greedy`, `apply_temperature`, `top_k_filter`, `top_p_filter`,
#   `min_p_filter`, `apply_repetition_penalty`, and `Sampler(temperature,
#   top_k, top_p, min_p, repetition_penalty, repetition_window)`;
# - `LayerCache` (the protocol), `KVCache(limit, step)`, `make_caches`,
#   `cached_attention`, `forward_cached(model, ids, caches)`, `prefill`
#   and `decode_step`;
# - `generate_tokens(model, prompt_ids, new_tokens, *, temperature,
#   top_k, top_p, min_p, repetition_penalty, seed, cache, keep,
#   sampler)`, an
#   iterator over the new ids, cached by default, that restarts from the
#   last `keep` ids when the window is full;
# - `draw_from`, `accept_draft(target, draft, drafted, key)`, `advance`,
#   `rewind`, `SpeculationStats`, `check_draft` and
#   `speculative_tokens(model, draft, prompt_ids, new_tokens, *, sampler,
#   draft_tokens, seed, keep, stats)`, the same iterator with a draft.
#
# `mlxllm generate` takes `--top-p`, `--min-p`, `--repetition-penalty`,
# `--num-samples` and, for speculative decoding, `--draft DIR` and
# `--draft-tokens K`, and reports tokens per second when it is done.
#
# ## Exercises
#
# 1. ★★ Write beam search with width $B$: keep the $B$ likeliest partial
#    texts by summed log-probability, extend each by every token, keep
#    the best $B$. Compare, at $B = 2, 4, 8$, the log-probability of its
#    40-character continuation of the prompt with greedy decoding's
#    ($B = 1$).
#    Is the likeliest text the best one to read?
# 2. ★ With the trained baby model, measure how many characters top-p
#    with $p = 0.9$ keeps at each step of a 300-character greedy text.
#    How often does it keep a single one?
# 3. ★ After a prefill of 100 positions on the full preset, how many
#    bytes do the caches allocate and how many of them hold keys and
#    values? Compare block sizes of 256, 64 and 16.
# 4. ★★ On the trained baby model, measure tokens per second over 256
#    new tokens with `keep` at 16, 32, 48 and 64, and the loss per
#    character of validation text scored with the same schedule (the
#    model sees what `generate_tokens` would show it). What does a short
#    `keep` cost in speed and in loss?
# 5. ★★★ Give the cached forward a batch: several prompts of different
#    lengths, padded on the left, one mask per row, one cache. Check each
#    row against decoding it alone, and measure tokens per second at
#    batch sizes 1, 4 and 16.
