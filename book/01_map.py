# %% [markdown]
# # What goes into an LLM: the map
#
# Over this book you build a large language model the way you would build any
# program you want to understand: one piece at a time, each piece checked
# before the next one leans on it. By the end of chapter 12, the last of this
# edition, you own a byte-level BPE tokenizer, a GPT-style transformer, a
# training loop that fits on a laptop, a sampler with a KV cache, a model
# trained on Shakespeare that writes on the command line, the measurements
# that say how good it is, a command that says what went wrong when a
# run goes badly, and a trainer that spreads one run over several
# processes. The chapters planned after it come in the map below.
#
# Why build one when you can download one? Because a model you have built is a
# model you can debug. When a loss stops falling, when a sample repeats itself,
# when memory runs out halfway through an epoch, you know which piece to open
# and what it should look like inside. That knowledge does not come from
# calling a library; it comes from having written the library.
#
# This chapter does two things. First it draws the map: the components of an
# LLM, what each one does, how hard it is, and which chapter builds it. Then it
# walks the whole journey in miniature. In about a hundred lines you load Tiny
# Shakespeare, turn it into integers, assemble a small transformer from MLX's
# ready-made layers, train it for a couple of minutes, and watch its output
# turn from noise into something that looks like a play. Every later chapter
# opens one of those boxes and rebuilds what is inside from scratch. On the
# way you also write the first module of the library, `mlxllm.data`, which
# finds the training text on any machine, online or not.
#
# Every chapter starts the same way. You import `mlxllm` before `mlx.core`: on
# Linux that lets the package load the system's fast BLAS library before MLX
# picks its slow bundled one; on a Mac it does nothing. `pick` chooses the size
# of anything that costs time, per profile: `smoke` for the tests, `book` for
# the numbers printed here, `full` for your own longer run.

# %%
#| default_exp data
import math
import tempfile
import time
from unittest import mock

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from matplotlib.patches import FancyBboxPatch
from mlx.utils import tree_flatten

from mlxllm.book import Table, pick

# %% [markdown]
# ## The map
#
# A language model does one thing: given some text, it scores every possible
# next piece of text. Everything else, chat included, is that one step run in
# a loop. @fig-map shows the path a piece of text takes through the model, and
# @tbl-components lists the same components with what each one does, how hard
# it is to get right, and where this book builds it.
#
# | component | what it does | difficulty | chapter |
# |---|---|---|---|
# | tokenizer | text to integers (token ids) and back | ★★ | 3 |
# | embedding layer | each token id to a vector of numbers | ★ | 4 |
# | positional encoding | tells the model where each token sits | ★ | 4 |
# | self-attention | each position gathers from earlier ones | ★★★ | 5 |
# | transformer blocks | attention and an MLP, stacked | ★★ | 6 |
# | output head | vectors back to one score per token | ★ | 6 |
# | training loop | backpropagation and an optimizer | ★★ | 7 |
# | fitting on a laptop | training within memory and time | ★★ | 8 |
# | sampling, KV cache | fast generation, token by token | ★★ | 9 |
# | evaluation | how good the model is, against baselines | ★★ | 10 |
# | troubleshooting | why a run fails, and how to tell | ★★ | 11 |
# | data parallelism | one run on several processes or Macs | ★★ | 12 |
#
# : The components of a GPT and where this book builds them {#tbl-components}
#
# The tokenizer is where text stops being text: a model only does arithmetic,
# so every character or word must become an integer first. The embedding layer
# looks each integer up in a learned table and gets a vector, so that similar
# tokens can end up with similar vectors. Those vectors carry no order, so
# positional encoding adds where each one sits. The transformer blocks are
# where the model relates tokens to each other: self-attention lets every
# position look back at the positions before it and pull in what it needs
# (Vaswani et al., 2017), and an MLP then works on each position alone. The
# output head maps each final vector to a score (a *logit*) for every token
# in the vocabulary; a softmax turns the scores into probabilities for the
# next token. The training loop compares those probabilities with the token
# that really came next, computes a loss, backpropagates it to every weight
# and lets an optimizer nudge the weights downhill.
#
# Attention gets the most stars because it is where shapes, masks and
# numerics meet: a mask that lets a position see the future gives a model that
# trains beautifully and generates garbage. The five last rows add no
# component; they make the same model practical, to train on a laptop and
# to talk to, then tell you how good it is, why a run fails, and how to
# train one on more than one machine.
#
# This edition has chapters 1 to 12, which build every row of the table.
# Two more chapters are planned: 13, fine-tuning with LoRA; 14, shipping a
# model. Where a chapter of this edition mentions
# what they will add, it says "a later chapter".

# %%
#| echo: false
#| label: fig-map
#| fig-cap: The map: from text to next-token scores, and back by training.
def draw_box(ax, x, y, width, label, note, style="solid"):
    box = FancyBboxPatch(
        (x - width / 2, y - 0.45), width, 0.9, boxstyle="round,pad=0.05",
        facecolor="none", edgecolor="black", linestyle=style,
    )
    ax.add_patch(box)
    ax.text(x, y + 0.15, label, ha="center", va="center", weight="bold")
    ax.text(x, y - 0.2, note, ha="center", va="center", fontsize="small")


def draw_arrow(ax, start, end, style="solid"):
    ax.annotate(
        "", xy=end, xytext=start,
        arrowprops={"arrowstyle": "-|>", "linestyle": style},
    )


fig = plt.figure(figsize=(5.5, 4.2))
ax = fig.add_axes((0, 0, 1, 1))
ax.set(xlim=(0, 10), ylim=(1.1, 10.3))
ax.axis("off")
stages = [
    ("Tokenizer", "text → token ids (ch. 3)", "token ids"),
    ("Embedding", "ids → vectors (ch. 4)", "vectors"),
    ("+ Positions", "where each token sits (ch. 4)", "vectors"),
    ("Transformer blocks × N", "self-attention + MLP (ch. 5–6)", "vectors"),
    ("Output head", "vectors → scores (ch. 6)", "logits"),
]
ys = [8.6, 7.2, 5.8, 4.4, 3.0]
ax.text(2.6, 9.9, "text: “To be, or not to”", ha="center", va="center")
draw_arrow(ax, (2.6, 9.65), (2.6, ys[0] + 0.5))
for (label, note, carries), y in zip(stages, ys):
    draw_box(ax, 2.6, y, 4.6, label, note)
    draw_arrow(ax, (2.6, y - 0.5), (2.6, y - 0.9))
    ax.text(2.75, y - 0.7, carries, va="center", fontsize="small",
            style="italic")
ax.text(2.6, 1.85, "next-token scores", ha="center", va="center")
draw_box(ax, 7.9, 1.85, 3.6, "Loss", "vs. the true next token")
draw_arrow(ax, (4.35, 1.85), (6.05, 1.85))
draw_box(ax, 7.9, 5.8, 3.6, "Training loop", "backprop + AdamW (ch. 7)",
         style="dashed")
draw_arrow(ax, (7.9, 2.35), (7.9, 5.3), style="dashed")
ax.plot([5.0, 5.0], [2.6, 7.6], linestyle="dashed", color="black")
draw_arrow(ax, (6.05, 5.8), (5.05, 5.8), style="dashed")
ax.text(5.55, 5.95, "update\nweights", ha="center", va="bottom",
        fontsize="small")

# %% [markdown]
# ## The data
#
# A language model learns from text, and this book uses the same text from the
# first chapter to the last: Tiny Shakespeare, about a megabyte of his plays
# stitched into one file, the corpus of char-rnn (Karpathy, 2015) and nanoGPT
# (Karpathy, 2022). Using their file, byte for byte, means your results can be
# compared with theirs.
#
# Getting a file sounds trivial, and it is where the first failures happen: a
# laptop on a train has no internet, a proxy returns an HTML error page
# instead of the text, a download dies halfway and leaves half a file that
# every later run trusts. The module you write now, `mlxllm.data`, handles
# each of these. It looks for the file in two places, downloads it only when
# both are empty, checks every byte it reads against a known hash, and when it
# cannot find the file it tells you exactly where to put it.
#
# The cells marked `#| export` below become the module `mlxllm/data.py`, so
# later chapters call `from mlxllm.data import load_corpus` and run the very
# code you read here. The first fixes where the text comes from and what it
# must hash to. A SHA-256 hash is a 64-hex-digit fingerprint of a file's
# bytes: change any byte and it changes completely, so one comparison proves
# you have the exact file everybody else trains on.

# %%
#| export
import hashlib
import os
import urllib.request
from pathlib import Path

CORPUS_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/"
    "data/tinyshakespeare/input.txt"
)
CORPUS_SHA256 = (
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
)
CORPUS_NAMES = ("tinyshakespeare",)


class CorpusNotFoundError(RuntimeError):
    """No copy on disk and no download; the message says where to put it."""

# %% [markdown]
# Next, where to look. `MLXLLM_DATA` is a directory you choose, for a shared
# or offline copy (the machines that build this book point it at a verified
# copy, since they have no internet). The user cache is where a download
# lands, so that you download once and not once per chapter.

# %%
#| export
def cache_dir() -> Path:
    """Where downloads are kept: $XDG_CACHE_HOME/mlxllm or ~/.cache/mlxllm."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "mlxllm"


def search_dirs() -> list[Path]:
    """The directories load_corpus looks in, in order."""
    data_dir = os.environ.get("MLXLLM_DATA")
    return ([Path(data_dir)] if data_dir else []) + [cache_dir()]

# %% [markdown]
# A file that is found still has to prove it is the right one. A truncated
# download or a different edition of the text would not crash anything; it
# would quietly give you different losses from everybody else's. So a file
# with the wrong hash is an error, and the error names the file.

# %%
#| export
def read_verified(path: Path) -> str:
    """The text of `path`, if its SHA-256 is CORPUS_SHA256."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise CorpusNotFoundError(
            f"{path} has sha256 {digest}, expected {CORPUS_SHA256}; "
            "delete it or replace it with the original file"
        )
    return data.decode("utf-8")

# %% [markdown]
# Downloading has two traps of its own. A silent firewall can make a request
# hang for minutes, so the request gets a short timeout. And a download that
# dies halfway must not leave a broken file in the cache, where the next run
# would find it. So the bytes are hashed in memory first, then written to a
# temporary file next to the target, then renamed. A rename within one
# directory is atomic: other processes see either no file or the whole file.

# %%
#| export
def download(url: str, target: Path, timeout: float = 10.0) -> str:
    """Fetch `url`, check its hash, and only then write it to `target`."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != CORPUS_SHA256:
        raise ValueError(f"{url} sent a file with sha256 {digest}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    partial.replace(target)
    return data.decode("utf-8")

# %% [markdown]
# `load_corpus` puts the pieces together. Whatever goes wrong with the
# download (no network, a refused connection, a timeout, the wrong bytes), you
# get the same error, and it says what to do about it: where to put the file,
# under which name, and which hash it must have. `MLXLLM_CORPUS_URL` overrides
# the address, which lets a test point it at a port where nothing listens.

# %%
#| export
def load_corpus(name: str = "tinyshakespeare") -> str:
    """The corpus text, from $MLXLLM_DATA, the user cache, or the internet."""
    if name not in CORPUS_NAMES:
        known = ", ".join(CORPUS_NAMES)
        raise ValueError(f"unknown corpus {name!r}; known corpora: {known}")
    filename = f"{name}.txt"
    for directory in search_dirs():
        if (directory / filename).is_file():
            return read_verified(directory / filename)
    url = os.environ.get("MLXLLM_CORPUS_URL", CORPUS_URL)
    try:
        return download(url, cache_dir() / filename)
    except Exception as error:  # any failure gets the same instructions
        looked = " or ".join(str(d) for d in search_dirs())
        raise CorpusNotFoundError(
            f"{filename} is not in {looked} and could not be downloaded "
            f"from {url} ({error}).\n"
            f"Put {filename} (sha256 {CORPUS_SHA256}) in\n"
            f"  {cache_dir()}, or\n"
            "  any directory, and set MLXLLM_DATA to that directory.\n"
            f"A copy is at {CORPUS_URL}"
        ) from error

# %% [markdown]
# Here is what you see on a machine with no copy and no network. The cell
# points every location at an empty temporary directory and the download at
# port 9 of your own machine, where nothing answers.

# %%
with tempfile.TemporaryDirectory() as empty_dir:
    nowhere = {
        "MLXLLM_DATA": empty_dir,
        "XDG_CACHE_HOME": empty_dir,
        "MLXLLM_CORPUS_URL": "http://127.0.0.1:9/input.txt",
    }
    with mock.patch.dict(os.environ, nowhere):
        try:
            load_corpus()
        except CorpusNotFoundError as error:
            offline_message = str(error)
print(offline_message)
assert CORPUS_SHA256 in offline_message and empty_dir in offline_message

# %% [markdown]
# Notice that the call fails at once (a refused connection, not a hang) and
# that the message carries everything you need to fix it without reading any
# code. The next cell checks the other two failure modes: a corrupted copy is
# rejected by an error that names it, and an unknown corpus gets a list of
# the known ones.

# %%
def error_message(call) -> str:
    """The message of the error that `call()` must raise."""
    try:
        call()
    except (CorpusNotFoundError, ValueError) as error:
        return str(error)
    raise AssertionError("expected an error")


with tempfile.TemporaryDirectory() as bad_dir:
    bad_copy = Path(bad_dir) / "tinyshakespeare.txt"
    bad_copy.write_text("To be, or not to be: that is not the file.")
    with mock.patch.dict(os.environ, {"MLXLLM_DATA": bad_dir}):
        assert str(bad_copy) in error_message(load_corpus)
assert "known corpora: tinyshakespeare" in error_message(
    lambda: load_corpus("hamlet"))

# %% [markdown]
# The last export splits the text for validation. A model is judged on text
# it never trained on, otherwise memorizing would look like learning. Like
# nanoGPT, you keep the first 90% for training and the last 10% for
# validation. A contiguous split rather than a random one matters: random
# lines would put neighbouring lines of one speech on both sides, and the
# validation loss would flatter the model.

# %%
#| export
def split_train_val(
    text: str, train_fraction: float = 0.9
) -> tuple[str, str]:
    """nanoGPT's split: the first 90% trains, the last 10% validates."""
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1): {train_fraction}")
    cut = int(len(text) * train_fraction)
    return text[:cut], text[cut:]

# %% [markdown]
# Now load it for real and look at it.

# %%
text = load_corpus()
n_chars, n_bytes = len(text), len(text.encode("utf-8"))
n_lines = text.count("\n")
train_text, val_text = split_train_val(text)
n_train, n_val = len(train_text), len(val_text)
print(text[:230])

# %% [markdown]
# The corpus has {{ n_chars:, }} characters in {{ n_lines:, }} lines, and
# since every character is plain ASCII it is also {{ n_bytes:, }} bytes.
# The split leaves {{ n_train:, }} characters for training and
# {{ n_val:, }} for validation. The excerpt shows the format the model will
# have to learn: a speaker's name and a colon on a line of its own, the
# speech below, a blank line between speakers.

# %%
#| echo: false
assert n_bytes == n_chars and train_text + val_text == text

# %% [markdown]
# ## The journey in miniature
#
# What follows is the whole book in one short stretch. Each step uses the
# simplest thing that works, often a ready-made MLX layer; each is a chapter
# later, built from scratch and compared with what you use here.
#
# ### Tokens: one per character
#
# The simplest tokenizer gives every distinct character its own integer.
# `stoi` maps string to integer, `itos` maps back.

# %%
chars = sorted(set(text))
vocab_size = len(chars)
stoi = {ch: i for i, ch in enumerate(chars)}
itos = {i: ch for i, ch in enumerate(chars)}


def encode(s: str) -> list[int]:
    return [stoi[ch] for ch in s]


def decode(ids: list[int]) -> str:
    return "".join(itos[i] for i in ids)


assert decode(encode(text)) == text
print(repr("".join(chars)))
print(encode("To be"))

# %% [markdown]
# The vocabulary has {{ vocab_size }} symbols, mostly letters and
# punctuation, plus space and newline. The assertion checks the round trip on
# the whole corpus: decoding what you encoded gives back the exact text. A
# character tokenizer is tiny and never meets a symbol it cannot encode
# inside this corpus, but it makes sequences long: one token per character.
# Chapter 3 builds byte-level BPE, which spends a larger vocabulary to get
# shorter sequences.
#
# ### Batches: windows and their shifted twins
#
# Training shows the model many random windows of text at once. For each
# window `x`, the targets `y` are the window that starts one character
# later, so every position carries its own example: given the characters up
# to here, predict the next one. A window of $T$ characters is $T$ training
# examples for the price of one forward pass.

# %%
train_ids = mx.array(encode(train_text))
val_ids = mx.array(encode(val_text))


def get_batch(ids: mx.array, batch_size: int, context: int):
    starts = mx.random.randint(0, ids.size - context, (batch_size,))
    positions = starts[:, None] + mx.arange(context)
    return ids[positions], ids[positions + 1]


mx.random.seed(0)
x, y = get_batch(train_ids, batch_size=2, context=24)
print(repr(decode(x[0].tolist())))
print(repr(decode(y[0].tolist())))

# %% [markdown]
# Notice that `y` is `x` moved left by one character, with one new character
# at the end. `mx.random.seed` fixes the random windows, so every run of this
# chapter draws the same ones.

# %%
#| echo: false
assert mx.array_equal(x[:, 1:], y[:, :-1]).item()

# %% [markdown]
# ### A tiny GPT
#
# The model is a GPT in miniature: token embeddings plus learned position
# embeddings, a few transformer blocks, a final layer norm and a linear head
# that scores every character. Each block is *pre-norm*: it normalizes its
# input before attention and before the MLP, and adds their results back onto
# the input (a *residual* connection), which keeps deep stacks trainable. The
# causal mask stops each position from attending to positions after it, so
# the model cannot peek at the character it must predict. The MLP uses ReLU,
# which is cheap to compute on a CPU; GPT-2 uses GELU. The cell is exported to
# `mlxllm/tiny.py`, so that the exercises, and later chapters that compare
# their models with this one, import it instead of copying it.

# %%
#| export: tiny
import mlx.core as mx
import mlx.nn as nn


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a ReLU MLP, each residual."""

    def __init__(self, dims: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dims)
        self.attention = nn.MultiHeadAttention(dims, heads)
        self.norm2 = nn.LayerNorm(dims)
        self.mlp = nn.Sequential(
            nn.Linear(dims, 4 * dims), nn.ReLU(), nn.Linear(4 * dims, dims)
        )

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = self.norm1(x)
        x = x + self.attention(h, h, h, mask)
        return x + self.mlp(self.norm2(x))


class TinyGPT(nn.Module):
    """Chapter 1's miniature GPT, built from MLX's ready-made layers."""

    def __init__(self, vocab: int, context: int, dims: int, heads: int,
                 layers: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, dims)
        self.position_embedding = nn.Embedding(context, dims)
        self.blocks = [Block(dims, heads) for _ in range(layers)]
        self.norm = nn.LayerNorm(dims)
        self.head = nn.Linear(dims, vocab)

    def __call__(self, ids: mx.array) -> mx.array:
        length = ids.shape[1]
        x = self.token_embedding(ids)
        x = x + self.position_embedding(mx.arange(length))
        mask = nn.MultiHeadAttention.create_additive_causal_mask(length)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))

# %% [markdown]
# `nn.MultiHeadAttention` does the attention itself, and
# `create_additive_causal_mask` builds the mask: zero where a position may
# look, a huge negative number where it may not, so that after the softmax
# those positions get no weight. Chapter 5 writes both by hand; chapter 6
# writes the full GPT. The sizes come from `pick`; the `book` profile's model
# is deliberately small, so that it trains in minutes on the two-core Linux
# machine that builds this book.

# %%
context = pick(smoke=64, book=64, full=128)
dims = pick(smoke=64, book=64, full=128)
layers = pick(smoke=2, book=2, full=4)
heads = 4
batch_size = pick(smoke=32, book=32, full=64)

mx.random.seed(0)
model = TinyGPT(vocab_size, context, dims, heads, layers)
mx.eval(model.parameters())
n_params = sum(p.size for _, p in tree_flatten(model.parameters()))
print(f"{n_params:,} parameters")

# %% [markdown]
# ### The loss, before any training
#
# The loss is cross-entropy: the negative log of the probability the model
# gave to the character that really came next, averaged over every position.
# It is measured in nats (natural-log units) per character, the unit this
# book quotes everywhere. It also tells you what "knowing nothing" looks like.
# A model that spreads its bets evenly over all $V$ characters gives each a
# probability of $1/V$, for a loss of $\ln V$ nats. An untrained model
# should be close to that, so it is the first thing to check.

# %%
def loss_fn(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


eval_batches = pick(smoke=2, book=20, full=50)


def estimate_loss(ids: mx.array) -> float:
    """Mean loss over eval_batches random batches of `ids`."""
    losses = [
        loss_fn(model, *get_batch(ids, batch_size, context))
        for _ in range(eval_batches)
    ]
    return mx.stack(losses).mean().item()


uniform_loss = math.log(vocab_size)
initial_val_loss = estimate_loss(val_ids)
print(f"untrained: {initial_val_loss:.2f}, uniform: {uniform_loss:.2f}")

# %%
#| echo: false
assert abs(initial_val_loss - uniform_loss) < 0.5

# %% [markdown]
# With $V$ = {{ vocab_size }}, the uniform guess scores
# {{ uniform_loss:.2f }} nats and the untrained model
# {{ initial_val_loss:.2f }}: close, as it should be. A loss far above
# $\ln V$ at the start means the model is confidently wrong before it has
# learned anything, which usually points to a bug in the initialization.
#
# ### Sampling
#
# To generate text, you run the model on what you have, take the scores of
# the last position, turn them into probabilities, draw one character, append
# it and repeat. The *temperature* divides the scores before the softmax:
# below 1 it sharpens the distribution towards the likeliest characters,
# above 1 it flattens it towards noise. `mx.random.categorical` applies the
# softmax and draws in one call. The window keeps only the last `context`
# characters, because the position table has no rows beyond that.

# %%
def sample(prompt: str, length: int, temperature: float = 0.8) -> str:
    ids = mx.array([encode(prompt)])
    for _ in range(length):
        logits = model(ids[:, -context:])[:, -1, :]
        next_id = mx.random.categorical(logits / temperature)
        ids = mx.concatenate([ids, next_id[:, None]], axis=1)
    return decode(ids[0].tolist())


mx.random.seed(1)
print(sample("\n", 160))

# %% [markdown]
# Before training, that is noise: every character is about as likely as any
# other. Chapter 9 makes this loop fast with a KV cache, which avoids
# recomputing the whole window for every new character.
#
# ### Training
#
# The training loop is four lines repeated: draw a batch, compute the loss
# and its gradient with respect to every weight (`nn.value_and_grad` runs the
# backpropagation), let the optimizer update the weights, and evaluate. That
# last step matters in MLX: computations are *lazy*, recorded but not run
# until a result is needed. `mx.eval` runs this step's work now; without it
# the recorded graph would grow with every step until memory ran out. The
# optimizer is AdamW (Loshchilov & Hutter, 2019), which adapts a step size
# per weight; every so often the loop also estimates the loss on both splits.

# %%
steps = pick(smoke=30, book=2500, full=5000)
eval_every = pick(smoke=10, book=250, full=500)
learning_rate = pick(smoke=3e-3, book=3e-3, full=1e-3)

optimizer = optim.AdamW(learning_rate=learning_rate)
loss_and_grad = nn.value_and_grad(model, loss_fn)

mx.random.seed(0)
history = [(0, estimate_loss(train_ids), estimate_loss(val_ids))]
start = time.perf_counter()
for step in range(1, steps + 1):
    x, y = get_batch(train_ids, batch_size, context)
    loss, grads = loss_and_grad(model, x, y)
    optimizer.update(model, grads)
    mx.eval(model.parameters(), optimizer.state)
    if step % eval_every == 0 or step == steps:
        history.append(
            (step, estimate_loss(train_ids), estimate_loss(val_ids))
        )
train_seconds = time.perf_counter() - start
final_train_loss, final_val_loss = history[-1][1:]
print(f"{steps} steps in {train_seconds:.0f} s, val loss {final_val_loss:.2f}")

# %%
#| echo: false
assert final_val_loss < initial_val_loss - pick(smoke=0.5, book=2.0)

# %% [markdown]
# The {{ steps:, }} steps took {{ train_seconds:.0f }} seconds on the machine
# that built this book, and brought the validation loss from
# {{ initial_val_loss:.2f }} to {{ final_val_loss:.2f }} nats per character.
# @fig-loss shows the way down and @tbl-progress a few stops along it.

# %%
#| label: fig-loss
#| fig-cap: Training and validation loss of the tiny GPT, step by step.
steps_seen = [s for s, _, _ in history]
plt.plot(steps_seen, [t for _, t, _ in history], marker=".", label="train")
plt.plot(steps_seen, [v for _, _, v in history], marker=".",
         label="validation")
plt.axhline(uniform_loss, linestyle=":", color="gray", label="uniform guess")
plt.xlabel("training step")
plt.ylabel("loss (nats per character)")
plt.legend()

# %% [markdown]
# Notice the shape: a steep fall while the model learns which characters are
# common and which follow which, then a long, slow slope while it learns
# words and the layout of a play. The dotted line is the uniform guess,
# which the model leaves behind early. At the end, the validation loss is
# {{ final_val_loss - final_train_loss:.2f }} nats above the training loss;
# that gap is the part of what the model learned that holds only for the
# training text. @tbl-progress adds the exponential of the validation loss,
# its *perplexity*, which reads as "the model is as unsure as a fair choice
# among this many characters".

# %%
#| label: tbl-progress
#| tbl-cap: Loss and perplexity of the tiny GPT during training.
shown = sorted({round(i * (len(history) - 1) / 4) for i in range(5)})
Table(
    [(s, t, v, math.exp(v)) for s, t, v in (history[i] for i in shown)],
    ["step", "train loss", "val loss", "val perplexity"],
)

# %% [markdown]
# ### After training
#
# Sample again, with the same seed and the same prompt as before.

# %%
mx.random.seed(1)
print(sample("\n", 500))

# %% [markdown]
# The noise has become a play. In the `book` profile you see speakers' names
# in capitals followed by a colon, line breaks where verse would break, and
# mostly real English words with some invented ones. What is missing is
# sense: with a context of {{ context }} characters and
# {{ n_params:, }} parameters the model knows spelling and layout, not what
# anybody is talking about. Closing that gap is what the rest of the book is
# about: a better tokenizer, components you understand well enough to change,
# and a longer training run that fits your laptop (faster sampling comes in
# chapter 9). To see
# how far this miniature goes on your own machine, run it with the `full`
# profile:
#
#     MLXLLM_PROFILE=full python book/01_map.py
#
# ## Summary
#
# You now have the map of an LLM: a tokenizer that turns text into integers,
# embeddings and positions that turn integers into vectors, transformer
# blocks that relate positions through self-attention, an output head that
# scores the next token, and a training loop that makes those scores right.
# You have also seen all of them work together once: a character-level GPT
# of {{ n_params:, }} parameters that learned, in {{ steps:, }} steps, to
# write text that looks like Shakespeare from across the room.
#
# You also wrote the first module of the library, `mlxllm.data`:
#
# - `load_corpus()` returns Tiny Shakespeare from `$MLXLLM_DATA`, the user
#   cache or its public address, checks its SHA-256 (`CORPUS_SHA256`), writes
#   downloads atomically, and raises `CorpusNotFoundError` with instructions
#   when it cannot;
# - `split_train_val(text)` gives nanoGPT's 90/10 split.
#
# The next chapters take the boxes of @fig-map one at a time.
#
# ## Exercises
#
# 1. ★ Before any model, two baselines. You have seen the uniform guess. What
#    loss does a model get if it always predicts each character with its
#    frequency in the training text, ignoring context? Where would that line
#    sit in @fig-loss?
# 2. ★ Temperature. Take the character frequencies of exercise 1 as
#    probabilities, compute the entropy of the distribution after applying
#    temperatures from 0.25 to 4, and sample a line at a low, a middle and a
#    high temperature. What happens as the temperature goes to zero, and to
#    infinity?
# 3. ★★ A bigram model sees one character of context: it predicts the next
#    character from the current one only. Compute the best possible bigram
#    model directly from counts, then train an `nn.Embedding(vocab_size,
#    vocab_size)` as a table of logits with the training loop of this chapter.
#    Do they agree? How much of the tiny GPT's final loss does one character
#    of context already explain?
# 4. ★★ Test the download path of `load_corpus` without the internet: serve
#    a directory with Python's `http.server` on a local port and point
#    `MLXLLM_CORPUS_URL` at it. Check that the file lands in the cache, that a
#    second call does not touch the network, and that a server sending the
#    wrong bytes leaves no file behind.
# 5. ★★ Where does the time go? Time a forward and backward pass of one
#    `nn.MultiHeadAttention` and of one block's MLP at contexts 32, 64, 128
#    and 256. How does each scale with the context, and what does that mean
#    for training with longer contexts?
# 6. ★★★ Overfitting on purpose. Train the tiny GPT on only the first
#    10,000 characters of the training text and plot both losses. When do
#    they part, how sure of itself is the model on new text, and which knobs
#    (data, model size, steps) would you turn to bring them back together?
