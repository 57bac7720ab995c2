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
# cost and never the text, and measure what it buys. On the map of
# chapter 1 this is the last box, the loop that turns a model into a
# writer; it all goes to `mlxllm.generate`, behind one iterator,
# `generate_tokens`.

# %%
#| default_exp generate
import math
from dataclasses import dataclass

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import artifact_path
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
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
from dataclasses import dataclass

import mlx.core as mx
import numpy as np


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
# default; that is the window here too.

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

    def __call__(self, logits: mx.array, ids: list[int],
                 key: mx.array) -> int:
        """The next id after `ids`, drawn with `key`."""
        recent = ids[-self.repetition_window:]
        logits = apply_repetition_penalty(logits.astype(mx.float32),
                                          recent, self.repetition_penalty)
        if self.temperature == 0:
            return greedy(logits)
        if self.top_k is not None:
            logits = top_k_filter(logits, self.top_k)
        if self.top_p is not None:
            logits = top_p_filter(logits, self.top_p)
        if self.min_p is not None:
            logits = min_p_filter(logits, self.min_p)
        tempered = apply_temperature(logits, self.temperature)
        return int(mx.random.categorical(tempered, key=key).item())

# %% [markdown]
# `__post_init__` runs each filter once on a dummy vector, so that a bad
# setting (`top_p=1.5`) fails when the sampler is made, with the
# filter's own message, not halfway through a generation. Each draw uses
# a key it is given, so a sample depends only on its seed, as in
# chapter 7.
#
# To see the settings at work, a plain loop, chapter 7's way (the whole
# window through the model for every character), writes 160 characters
# after the prompt with four samplers:

# %%
def write(sampler: Sampler, length: int = 160, seed: int = 0) -> str:
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
# breaks the loop, at a price you can see: once the commonest letters
# have been used, it pushes the model towards rarer ones, and the words
# get odder. Plain sampling at $T = 1$ never loops, but draws from the
# tail now and then, which reads as misspellings; min-p with a slightly
# cooler temperature keeps the variety and loses most of those. Which
# sample reads best is a matter of taste, and the baby model's loss,
# {{ record['history']['val_loss'][-1]:.2f }} nats per character, limits
# all four.
#
# Beam search, which keeps the several likeliest partial texts instead of
# one, is the classic alternative to sampling for translation; it is
# exercise 9.1.
