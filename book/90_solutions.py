# %% [markdown]
# # Solutions to the exercises
#
# One section per chapter. Each solution runs, like every chapter, when the book is
# built and when it is tested, so the answers below are what the code printed and
# drew in this build. Try the exercise before you read its solution: most of them
# take minutes, and the time you spend stuck is where the learning happens.

# %% [markdown]
# ## Chapter 1
#
# The solutions load the corpus with `mlxllm.data` and rebuild the character
# tokenizer of the chapter in three lines, so that they run on their own.

# %%
import functools
import http.server
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from unittest import mock

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from mlxllm.book import Table, pick, profile
from mlxllm.data import (
    CorpusNotFoundError,
    cache_dir,
    load_corpus,
    split_train_val,
)

text = load_corpus()
train_text, val_text = split_train_val(text)
chars = sorted(set(text))
vocab_size = len(chars)
stoi = {ch: i for i, ch in enumerate(chars)}
train_ids = mx.array([stoi[ch] for ch in train_text])
val_ids = mx.array([stoi[ch] for ch in val_text])

# %% [markdown]
# ### Exercise 1.1
#
# A model that ignores context can do no better than the frequency of each
# character in the training text (a *unigram* model). Count, normalize, and
# score the validation text with the log of those frequencies. The count
# starts at one for every character (add-one smoothing): a character that
# never occurs in training would otherwise get probability zero, and a single
# occurrence of it in validation would make the loss infinite.

# %%
counts = mx.zeros(vocab_size).at[train_ids].add(1.0) + 1.0
unigram_logits = mx.log(counts / counts.sum())
unigram_loss = -unigram_logits[val_ids].mean().item()
uniform_loss = math.log(vocab_size)
print(f"uniform {uniform_loss:.2f}, unigram {unigram_loss:.2f} nats/char")
assert unigram_loss < uniform_loss

# %% [markdown]
# Knowing only how common each character is brings the loss from
# {{ uniform_loss:.2f }} to {{ unigram_loss:.2f }} nats per character. In the
# loss curve of chapter 1 that line sits between the uniform guess and the
# curves, and the tiny GPT passes it early: the first steps of training are
# spent learning frequencies, not language.
#
# ### Exercise 1.2
#
# Dividing logits by a temperature $\tau$ before the softmax gives
# $p_\tau(c) \propto p(c)^{1/\tau}$. Its entropy, the loss a model would get
# on text drawn from its own distribution, shows what temperature does.

# %%
def entropy(logits: mx.array) -> float:
    log_probs = logits - mx.logsumexp(logits)
    return -(mx.exp(log_probs) * log_probs).sum().item()


temperatures = [0.25, 0.5, 1.0, 2.0, 4.0]
entropies = [entropy(unigram_logits / t) for t in temperatures]
assert entropies == sorted(entropies)
assert chars[mx.argmax(unigram_logits).item()] == " "
Table(
    [(t, h, math.exp(h)) for t, h in zip(temperatures, entropies)],
    ["temperature", "entropy (nats)", "perplexity"],
)

# %% [markdown]
# The entropy rises with the temperature. At $\tau = 1$ it is the unigram
# loss of exercise 1.1 measured on the model's own samples; as $\tau \to 0$
# all the probability goes to the likeliest character (here the space) and
# the entropy falls to zero; as $\tau \to \infty$ every character becomes
# equally likely and the entropy rises to $\ln V$ = {{ uniform_loss:.2f }}
# nats, the uniform guess. Samples show the same thing:

# %%
mx.random.seed(0)
for t in (0.25, 1.0, 4.0):
    ids = mx.random.categorical(unigram_logits / t, num_samples=60)
    print(f"{t:>4}: {''.join(chars[i] for i in ids.tolist())!r}")

# %% [markdown]
# Cold samples are mostly spaces and `e`s, warm ones look like letter soup
# with realistic frequencies, hot ones use capitals and punctuation as often
# as vowels. A trained model behaves the same way, only with probabilities
# that depend on the context: low temperatures repeat safe phrases, high
# ones invent words.
#
# ### Exercise 1.3
#
# The best bigram model is the table of next-character frequencies for each
# current character, counted on the training text (again with add-one
# smoothing, since many pairs never occur).

# %%
pairs = train_ids[:-1] * vocab_size + train_ids[1:]
pair_counts = mx.zeros(vocab_size * vocab_size).at[pairs].add(1.0)
pair_counts = pair_counts.reshape(vocab_size, vocab_size) + 1.0
bigram_logits = mx.log(pair_counts / pair_counts.sum(axis=1, keepdims=True))
counted_loss = -bigram_logits[val_ids[:-1], val_ids[1:]].mean().item()
print(f"counted bigram: {counted_loss:.3f} nats/char")

# %% [markdown]
# A trained bigram model is an `nn.Embedding(vocab_size, vocab_size)`: row
# $i$ holds the logits of the character after character $i$. It trains with
# exactly the loop of the chapter, on the same random windows.

# %%
def bigram_batch(batch_size: int = 32, context: int = 64):
    starts = mx.random.randint(0, train_ids.size - context, (batch_size,))
    positions = starts[:, None] + mx.arange(context)
    return train_ids[positions], train_ids[positions + 1]


def bigram_loss(table: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(table(x), y, reduction="mean")


mx.random.seed(0)
table = nn.Embedding(vocab_size, vocab_size)
table_optimizer = optim.AdamW(learning_rate=3e-2)
table_loss_and_grad = nn.value_and_grad(table, bigram_loss)
for _ in range(pick(smoke=50, book=1000)):
    loss, grads = table_loss_and_grad(table, *bigram_batch())
    table_optimizer.update(table, grads)
    mx.eval(table.parameters(), table_optimizer.state)
trained_loss = bigram_loss(table, val_ids[None, :-1], val_ids[None, 1:])
trained_loss = trained_loss.item()
print(f"trained bigram: {trained_loss:.3f} nats/char")
assert abs(trained_loss - counted_loss) < pick(smoke=2.0, book=0.02)

# %% [markdown]
# Gradient descent finds the counted answer: the trained table reaches
# {{ trained_loss:.3f }} nats per character against {{ counted_loss:.3f }}
# for the counts. That is no accident: for a table of logits, the
# cross-entropy is minimized exactly by the observed frequencies, so
# training can only approach them. One character of context takes the loss
# from the unigram's {{ unigram_loss:.2f }} to {{ counted_loss:.2f }}, most
# of the way from knowing nothing to where the tiny GPT of the chapter ends.
# Everything below the bigram line in the chapter's loss curve is what the
# longer context and attention buy: spelling whole words, closing lines,
# naming speakers.
#
# ### Exercise 1.4
#
# A local HTTP server plays the internet. The handler counts the requests it
# serves and stays quiet instead of logging each one.

# %%
class CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests_served = 0

    def do_GET(self) -> None:
        CountingHandler.requests_served += 1
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def start_server(directory: Path) -> http.server.ThreadingHTTPServer:
    handler = functools.partial(CountingHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server

# %% [markdown]
# The site holds the right file and a truncated one. With an empty
# `MLXLLM_DATA` and a fresh cache, `load_corpus` must refuse the truncated
# file without leaving anything in the cache, accept the right one, and then
# read the cached copy without asking the server again.

# %%
with tempfile.TemporaryDirectory() as root:
    site = Path(root, "site")
    site.mkdir()
    (site / "good.txt").write_text(text)
    (site / "bad.txt").write_text(text[:-1000])
    server = start_server(site)
    base = f"http://127.0.0.1:{server.server_port}"
    env = {"MLXLLM_DATA": "", "XDG_CACHE_HOME": str(Path(root, "cache"))}
    with mock.patch.dict(os.environ, env):
        os.environ["MLXLLM_CORPUS_URL"] = f"{base}/bad.txt"
        try:
            load_corpus()
        except CorpusNotFoundError:
            cached_after_bad = sorted(p.name for p in cache_dir().glob("*"))
        os.environ["MLXLLM_CORPUS_URL"] = f"{base}/good.txt"
        first = load_corpus()
        served = CountingHandler.requests_served
        second = load_corpus()
        cached_after_good = sorted(p.name for p in cache_dir().glob("*"))
    server.shutdown()
    server.server_close()

assert cached_after_bad == [] and cached_after_good == ["tinyshakespeare.txt"]
assert first == second == text and CountingHandler.requests_served == served
print("after the bad file:", cached_after_bad)
print("after the good file:", cached_after_good)
print("requests:", served, "then", CountingHandler.requests_served)

# %% [markdown]
# The bad download leaves the cache empty: the hash is checked before
# anything is written. The good one lands under its name and the partial
# file is gone, renamed into place. The second call makes no request. Two
# details of the test matter: an empty `MLXLLM_DATA` counts as unset, so the
# copy the book's build machines use cannot hide the download path; and
# `mock.patch.dict` restores every variable afterwards, even after an error.
#
# ### Exercise 1.5
#
# Time one forward and backward pass, including the parameter gradients as
# in training, of the attention layer and of the MLP at growing contexts.

# %%
def step_ms(module: nn.Module, forward, x: mx.array) -> float:
    loss_and_grad = nn.value_and_grad(module, lambda m, x: forward(m, x).sum())
    mx.eval(loss_and_grad(module, x))
    times = []
    for _ in range(pick(smoke=2, book=10)):
        start = time.perf_counter()
        mx.eval(loss_and_grad(module, x))
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[len(times) // 2]


def attend(attention: nn.Module, x: mx.array) -> mx.array:
    mask = nn.MultiHeadAttention.create_additive_causal_mask(x.shape[1])
    return attention(x, x, x, mask)


dims = 64
attention = nn.MultiHeadAttention(dims, 4)
mlp = nn.Sequential(
    nn.Linear(dims, 4 * dims), nn.ReLU(), nn.Linear(4 * dims, dims)
)
contexts = pick(smoke=[32, 128], book=[32, 64, 128, 256])
timings = []
for context in contexts:
    x = mx.random.normal((8, context, dims))
    timings.append((context, step_ms(attention, attend, x),
                    step_ms(mlp, lambda m, x: m(x), x)))
Table(timings, ["context", "attention (ms)", "MLP (ms)"])

# %%
attention_growth = timings[-1][1] / timings[0][1]
mlp_growth = timings[-1][2] / timings[0][2]
context_growth = contexts[-1] / contexts[0]
# smoke's two short contexts and two repeats are too small to time reliably
assert profile() == "smoke" or attention_growth > mlp_growth

# %% [markdown]
# From context {{ contexts[0] }} to {{ contexts[-1] }}, a context
# {{ context_growth:.0f }} times longer, the MLP's time grew
# {{ mlp_growth:.1f }}-fold and the attention's
# {{ attention_growth:.1f }}-fold on the machine that ran this book. The MLP
# works on each position alone, so its cost grows with the number of
# positions, $T$. Attention scores every pair of positions: a $T \times T$
# matrix per head, with an exponential for each entry in the softmax, so its
# cost grows towards $T^2$ once that matrix dominates; at short contexts the
# projections, which are linear in $T$, still hide it. For training this
# means that doubling the context eventually quadruples the attention's time
# and the memory its score matrices take, while everything else merely
# doubles.
#
# ### Exercise 1.6
#
# The tiny GPT of the chapter, imported from `mlxllm.tiny`, trains on only the
# first 10,000 characters of the training text.

# %%
from mlxllm.tiny import TinyGPT

small_text = train_text[:10_000]
small_ids = mx.array([stoi[ch] for ch in small_text])
context, batch_size = 64, 32


def window_batch(ids: mx.array):
    starts = mx.random.randint(0, ids.size - context, (batch_size,))
    positions = starts[:, None] + mx.arange(context)
    return ids[positions], ids[positions + 1]


def gpt_loss(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.cross_entropy(model(x), y, reduction="mean")


def mean_loss(model: nn.Module, ids: mx.array) -> float:
    losses = [gpt_loss(model, *window_batch(ids)) for _ in range(10)]
    return mx.stack(losses).mean().item()


mx.random.seed(0)
small_model = TinyGPT(vocab_size, context, dims=64, heads=4, layers=2)
small_optimizer = optim.AdamW(learning_rate=3e-3)
small_loss_and_grad = nn.value_and_grad(small_model, gpt_loss)
eval_every = pick(smoke=10, book=100)
small_history = []
for step in range(1, pick(smoke=20, book=1000) + 1):
    loss, grads = small_loss_and_grad(small_model, *window_batch(small_ids))
    small_optimizer.update(small_model, grads)
    mx.eval(small_model.parameters(), small_optimizer.state)
    if step % eval_every == 0:
        small_history.append((step, mean_loss(small_model, small_ids),
                              mean_loss(small_model, val_ids)))

# %%
#| label: fig-solution-1-6
#| fig-cap: The tiny GPT trained on 10,000 characters overfits.
plt.plot([s for s, _, _ in small_history],
         [t for _, t, _ in small_history], marker=".", label="train")
plt.plot([s for s, _, _ in small_history],
         [v for _, _, v in small_history], marker=".", label="validation")
plt.axhline(uniform_loss, linestyle=":", color="gray", label="uniform guess")
plt.xlabel("training step")
plt.ylabel("loss (nats per character)")
plt.legend()

# %%
best_step, _, best_val = min(small_history, key=lambda row: row[2])
last_step, last_train, last_val = small_history[-1]
passes_per_100 = 100 * batch_size * context / len(small_text)
data_ratio = len(train_text) / len(small_text)
assert profile() == "smoke" or last_val > best_val + 0.5

# %% [markdown]
# Every 100 steps the batches read the 10,000 characters about
# {{ passes_per_100:.0f }} times over, and @fig-solution-1-6 shows the curves
# parting from the first evaluation on. Validation is best at step
# {{ best_step }} ({{ best_val:.2f }} nats per character); after that the
# training loss keeps falling, to {{ last_train:.2f }} at step
# {{ last_step }}, while the validation loss climbs to {{ last_val:.2f }},
# against {{ uniform_loss:.2f }} for a uniform guess that knows nothing.
# How can a model do that badly on new text? By being sure of itself.
# Compare how much probability it gives its top choice (its confidence) with
# how often that choice is right (its accuracy), on both texts:

# %%
def confidence_and_accuracy(ids: mx.array) -> tuple[float, float]:
    x, y = window_batch(ids)
    probs = mx.softmax(small_model(x), axis=-1)
    confidence = probs.max(axis=-1).mean().item()
    accuracy = (probs.argmax(axis=-1) == y).mean().item()
    return confidence, accuracy


mx.random.seed(2)
train_conf, train_acc = confidence_and_accuracy(small_ids)
val_conf, val_acc = confidence_and_accuracy(val_ids)
assert profile() == "smoke" or abs(train_conf - train_acc) < 0.1
assert profile() == "smoke" or val_conf > val_acc + 0.2
Table(
    [("training (10,000 chars)", train_conf, train_acc),
     ("validation", val_conf, val_acc)],
    ["text", "confidence", "accuracy"],
)

# %% [markdown]
# On its training text the model is right about as often as it thinks it
# is. On new text it is nearly as confident ({{ val_conf:.0%}} on average)
# and right only {{ val_acc:.0%}} of the time; a confident wrong guess costs
# far more loss than a hesitant one, which is how the validation loss ends
# up where it does. Nothing on the training side warns you of this; only
# text the model has never seen does.
#
# Three knobs bring the curves back together. More data is the best one:
# the chapter's model, the same size with {{ data_ratio:.0f }} times the
# text, kept its validation loss falling. A smaller model has less room to
# memorize. Fewer steps, stopping at the validation minimum (*early
# stopping*), keep the best model seen, which is why training runs save
# checkpoints as they go. Regularizers such as dropout and weight decay
# trade a little training loss for the same effect.

# %% [markdown]
# ## Chapter 2

# %%
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlxllm.hardware import matmul_gflops, median_seconds

# %% [markdown]
# ### Exercise 2.1
#
# Add 0.01 a thousand times, rounding to the dtype after every addition, as a
# running sum stored in that dtype would:

# %%
def running_total(dtype: mx.Dtype, terms: int = 1000) -> float:
    total = mx.array(0.0, dtype=dtype)
    increment = mx.array(0.01, dtype=dtype)
    for _ in range(terms):
        total = total + increment  # the sum stays in `dtype`
    return total.item()


ch2_totals = {str(d).removeprefix("mlx.core."): running_total(d)
              for d in (mx.float32, mx.float16, mx.bfloat16)}
print(ch2_totals)

# %%
#| echo: false
assert abs(ch2_totals["float32"] - 10) < 1e-3
assert abs(ch2_totals["float16"] - 10) > 1e-2
assert ch2_totals["bfloat16"] == 4.0

# %% [markdown]
# float32 ends within rounding of 10 ({{ ch2_totals["float32"]:.5f }});
# float16 is visibly off ({{ ch2_totals["float16"]:.4f }}); bfloat16 stops at
# {{ ch2_totals["bfloat16"]:.1f }}. The reason is the spacing between
# neighbouring numbers, which grows with their size. bfloat16 has 8 bits of
# significand, so between 4 and 8 its numbers are $2^{-5} = 0.03125$ apart.
# Once the sum reaches 4, adding 0.01, less than half that gap, rounds back to
# the same number, and the sum never moves again. float16's gap near 8 is
# $2^{-7}$, small enough to keep growing, but every addition still rounds.
#
# The lesson for training: keep anything that accumulates many small
# contributions (a running loss, gradient sums over micro-batches, optimizer
# moments, the master copy of the weights) in float32, and use 16-bit types for
# the bulk arithmetic, where each result is used once. That is the recipe of
# mixed-precision training (Micikevicius et al., 2018).

# %% [markdown]
# ### Exercise 2.2
#
# Differentiate twice. By hand,
# $f''(x) = 6x \sin x + 6x^2 \cos x - x^3 \sin x$.

# %%
def f(x: mx.array) -> mx.array:
    return x**3 * mx.sin(x)


def f_second(x: mx.array) -> mx.array:
    return 6 * x * mx.sin(x) + 6 * x**2 * mx.cos(x) - x**3 * mx.sin(x)


second = mx.grad(mx.grad(f))
for value in (-2.0, 0.5, 1.3, 3.0):
    point = mx.array(value)
    print(f"x = {value:4}: autodiff {second(point).item():9.5f}  "
          f"by hand {f_second(point).item():9.5f}")
    assert abs(second(point).item() - f_second(point).item()) < 1e-4

# %% [markdown]
# `mx.grad(f)` is an ordinary function of `x`, so `mx.grad` can transform it
# again; the two agree to float32 rounding at every point.

# %% [markdown]
# ### Exercise 2.3
#
# The matrix-vector product does $2n^2$ FLOPs and has to read the whole matrix,
# $n^2$ numbers, so in float32 it reads 2 bytes per FLOP whatever $n$ is. The
# matrix product reads $2n^2$ numbers for $2n^3$ FLOPs, $4/n$ bytes per FLOP,
# and each number fetched from memory is used $n$ times. A matrix-vector product
# is limited by how fast memory delivers the matrix, so it is better measured
# in GB/s than in GFLOP/s.

# %%
def matvec_gflops(n: int, dtype: mx.Dtype = mx.float32,
                  repeats: int = 5) -> float:
    """Measured speed of an n×n matrix times a vector, in GFLOP/s."""
    key_a, key_v = mx.random.split(mx.random.key(0))
    a = mx.random.normal((n, n), key=key_a).astype(dtype)
    v = mx.random.normal((n,), key=key_v).astype(dtype)
    mx.eval(a, v)
    return 2 * n**2 / median_seconds(lambda: a @ v, repeats) / 1e9


rows = []
for n in pick(smoke=[256, 512], book=[256, 512, 1024, 2048]):
    vector_speed = matvec_gflops(n)
    bandwidth = vector_speed * 2  # GB/s: 2 bytes read per FLOP in float32
    rows.append([n, matmul_gflops(n), vector_speed, bandwidth])
Table(rows, ["n", "matmul GFLOP/s", "matvec GFLOP/s", "matvec GB/s read"])

# %%
#| echo: false
assert rows[-1][2] < rows[-1][1]

# %% [markdown]
# At every size the matrix-vector product runs at a small fraction of the
# matrix product's FLOP rate. Its speed is set by how fast the matrix can be
# read, not by arithmetic: once $n$ is large enough to hide the fixed cost of a
# call, the GB/s column approaches what the memory system delivers, and
# doubling $n$ cannot raise the FLOP rate the way it does for the matrix
# product. Generating text one token at a
# time is this case: each new token multiplies every weight matrix by a single
# vector, so a model's decoding speed is set by how many bytes of weights it
# must read per token. That is why smaller dtypes and batching several
# sequences speed up generation, and why training, which multiplies whole
# batches of tokens at once, runs near matmul speed.

# %% [markdown]
# ### Exercise 2.4
#
# Fit the chapter's sine problem with AdamW at a range of learning rates, with
# and without bias correction, from the same initial weights. The average of
# the last 20 losses is less noisy than the last one.

# The chapter's `MLP` class is the same network as this `nn.Sequential`, which
# saves writing a class for a model that only chains layers.

# %%
def mse_loss(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.mse_loss(model(x), y)


mx.random.seed(0)
model = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 1))
initial = model.parameters()
x_train = mx.linspace(-3, 3, 256)[:, None]
y_train = mx.sin(x_train)
loss_and_grad = nn.value_and_grad(model, mse_loss)


def final_loss(optimizer: optim.Optimizer, steps: int) -> float:
    model.update(initial)
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grad(model, x_train, y_train)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        losses.append(loss.item())
    return float(np.mean(losses[-20:]))


sweep_steps = pick(smoke=100, book=300)
learning_rates = pick(smoke=[1e-3, 1e-2, 1e-1],
                      book=[3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
sweep = {
    correction: [
        final_loss(optim.AdamW(learning_rate=lr,
                               bias_correction=correction), sweep_steps)
        for lr in learning_rates
    ]
    for correction in (False, True)
}
ch2_best_lr = {c: learning_rates[int(np.argmin(v))] for c, v in sweep.items()}
print("best learning rate without / with correction:",
      ch2_best_lr[False], ch2_best_lr[True])

# %%
#| echo: false
#| label: fig-solution-2-4
#| fig-cap: Final loss vs AdamW learning rate, with and without bias correction.
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for correction, losses in sweep.items():
    label = "bias correction" if correction else "MLX default"
    ax.loglog(learning_rates, losses, marker="o", label=label)
ax.set_xlabel("learning rate")
ax.set_ylabel(f"mean loss, last 20 of {sweep_steps} steps")
ax.legend()

# %%
#| echo: false
assert ch2_best_lr[False] <= ch2_best_lr[True]

# %% [markdown]
# In this run the best learning rate on the grid was {{ ch2_best_lr[False] }}
# without bias correction and {{ ch2_best_lr[True] }} with it. The
# uncorrected optimizer takes steps up to several times larger than the
# learning rate suggests (@fig-adam-ratio), so its best learning rate is the
# same or smaller (checked). Had you tuned a learning rate with MLX's default
# and then switched the correction on, you would be training with a learning
# rate that is too small for a few hundred steps; the reverse makes the early
# steps too large. Either way the numbers stop transferring, which is the
# reason the book keeps the correction on.

# %% [markdown]
# ### Exercise 2.5
#
# Adam keeps, for every parameter, the moving averages $m$ and $v$ and a step
# counter $t$. With `tree_map`, one function applied leaf by leaf updates whole
# parameter trees:

# %%
def adamw_step(params: dict, grads: dict, state: dict, lr: float,
               betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
               weight_decay: float = 0.01) -> tuple[dict, dict]:
    """One bias-corrected AdamW step (Loshchilov & Hutter, 2019)."""
    beta1, beta2 = betas
    t = state["t"] + 1
    m = tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, state["m"], grads)
    v = tree_map(lambda v, g: beta2 * v + (1 - beta2) * g**2, state["v"],
                 grads)

    def update(p: mx.array, m: mx.array, v: mx.array) -> mx.array:
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        decayed = p * (1 - lr * weight_decay)
        return decayed - lr * m_hat / (mx.sqrt(v_hat) + eps)

    return tree_map(update, params, m, v), {"t": t, "m": m, "v": v}


def zeros_like_tree(tree: dict) -> dict:
    return tree_map(mx.zeros_like, tree)

# %% [markdown]
# Train the same MLP from the same start with both, and compare the parameters
# after every step. Your version needs its own model, `twin`, and its own
# `nn.value_and_grad(twin, ...)`: the function that `nn.value_and_grad` returns
# differentiates with respect to the parameters of the model it was built
# with, so passing it a different model would silently give zero gradients.

# %%
ch2_adam_steps = pick(smoke=50, book=300)
lr = 5e-3
model.update(initial)
reference = optim.AdamW(learning_rate=lr, bias_correction=True)
twin = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 1))
twin_loss_and_grad = nn.value_and_grad(twin, mse_loss)
ours = initial
state = {"t": 0, "m": zeros_like_tree(initial), "v": zeros_like_tree(initial)}
ch2_largest_gap = 0.0
for _ in range(ch2_adam_steps):
    _, grads = loss_and_grad(model, x_train, y_train)
    reference.update(model, grads)
    twin.update(ours)
    _, our_grads = twin_loss_and_grad(twin, x_train, y_train)
    ours, state = adamw_step(ours, our_grads, state, lr)
    mx.eval(model.parameters(), reference.state, ours, state)
    gaps = [mx.abs(a - b).max().item() for (_, a), (_, b) in zip(
        tree_flatten(model.parameters()), tree_flatten(ours), strict=True)]
    ch2_largest_gap = max(ch2_largest_gap, *gaps)
print(f"largest difference in {ch2_adam_steps} steps: {ch2_largest_gap:.2e}")

# %%
#| echo: false
assert ch2_largest_gap < 1e-4

# %% [markdown]
# The two trajectories stay within float32 rounding of each other for all
# {{ ch2_adam_steps }} steps (largest difference {{ ch2_largest_gap:.1e }}).
# They need not be bit-identical: MLX folds the corrections into the learning
# rate and the denominator, $\eta/(1-\beta_1^t)$ and
# $\sqrt{v_t}/\sqrt{1-\beta_2^t}$, while `adamw_step` divides $m$ and $v$
# first. The two orders of operations round differently in the last bit, and a
# training run carries that difference along without amplifying it much over
# these steps.

# %% [markdown]
# ## Chapter 3
#
# The solutions share one setup: the corpus split as in the chapter, and a
# `BPETokenizer` of 2,048 ids trained on the training split.

# %%
import heapq

import regex
import sentencepiece as spm

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
# ### Exercise 3.1
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
split_rows = []
for name, pattern in [("GPT-2", GPT2_SPLIT_PATTERN),
                      ("GPT-4", GPT4_SPLIT_PATTERN)]:
    tokenizer = BPETokenizer.train(train_text, 2048, pattern=pattern)
    val_chunks = pretokenize(val_text, pattern)
    split_rows.append((name, len(val_chunks), len(set(val_chunks)),
                       len(val_text) / len(tokenizer.encode(val_text))))
    assert tokenizer.decode(tokenizer.encode(val_text)) == val_text
ch3_gpt4_gain = split_rows[1][3] / split_rows[0][3] - 1
gpt4_chunks = pretokenize(val_text, GPT4_SPLIT_PATTERN)
ch3_line_ends = sum(regex.fullmatch(r" ?[^\s\p{L}\p{N}]+\n+", chunk)
                    is not None for chunk in gpt4_chunks) / len(gpt4_chunks)
Table(split_rows, ["pattern", "validation chunks", "distinct chunks",
                   "characters per token"])

# %% [markdown]
# The sample shows the differences: GPT-4's pattern keeps `'S` together as a
# contraction, gives the colon and the newlines after it one chunk, and
# cuts `12345` into `123` and `45`. On Shakespeare the new pattern improves
# compression by {{ ch3_gpt4_gain:.1%}}, and the digits have nothing to do
# with it: verse ends most lines with punctuation, and with GPT-4's pattern
# the punctuation takes its newline along. Such chunks are
# {{ ch3_line_ends:.0%}} of the validation chunks, and BPE learns `,↵` or
# `:↵` as one token where GPT-2's pattern forces two.
#
# ### Exercise 3.2
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
# ### Exercise 3.3
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
ch3_deepest = depth[deepest[0]]

# %% [markdown]
# Each merge removes one token, so a chunk takes as many merges as it has
# bytes minus the tokens it ends with. The deepest chunks, with up to
# {{ ch3_deepest }} merges, are therefore long words that end as a few
# pieces, each piece assembled byte by byte before the pieces could meet.
#
# ### Exercise 3.4
#
# Train once at the largest size and take prefixes of the merges, as the
# chapter did. A unigram model is the token frequencies of the training ids,
# with one added to every count so that no token gets probability zero.

# %%
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
ch3_unigram_char = unigram_rows[0][2]
ch3_unigram_best = min(row[2] for row in unigram_rows)
Table(unigram_rows, ["tokenizer", "ids", "unigram nats per character"])

# %% [markdown]
# A larger vocabulary helps even a model without context, from
# {{ ch3_unigram_char:.2f }} nats per character with characters down to
# {{ ch3_unigram_best:.2f }}. The tokens themselves carry context: a token
# such as `␣the` says in one guess what a character model needs four
# guesses, each conditioned on nothing, to say. Some of what a
# character-level transformer must learn with attention, BPE hands over
# for free.
#
# ### Exercise 3.5
#
# Train both SentencePiece models with the chapter's lossless settings.

# %%
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
ch3_sp_unigram = sp_rows[2][1]
Table(sp_rows, ["tokenizer (2,048 ids)", "characters per token"])

# %%
for line in ["Good morrow, neighbour Gremio.", "Unmannerly wenches!"]:
    for model_type, model in sp_models.items():
        print(f"{model_type:>8}:", "|".join(model.encode(line, out_type=str)))

# %% [markdown]
# The unigram model compresses to {{ ch3_sp_unigram:.2f }} characters per
# token, about as much as both BPE models. It does not merge pairs: it
# starts from a large set of candidate pieces, repeatedly drops the ones
# whose removal costs the training text the least likelihood, and encodes
# each sentence with its most likely split under a unigram language model
# over pieces (Kudo, 2018). The splits above show the effect: the same
# vocabulary size, different pieces (`▁neighbour` whole, `▁` split from
# `morrow`), because the choice is made per sentence by probability rather
# than by replaying merges.
#
# ### Exercise 3.6
#
# A long chunk of letters, built from the validation text with the spaces
# and punctuation removed, shows the quadratic cost of `encode_chunk`: each
# merge it applies scans the whole chunk again.

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
letters = regex.sub(r"[^a-z]", "", val_text.lower())
heap_rows = []
for length in pick(smoke=[250, 500, 1000], book=[1000, 2000, 4000, 8000]):
    chunk = letters[:length].encode()
    start = time.perf_counter()
    reference = encode_chunk(chunk, bpe_2048.merge_ids)
    scan_seconds = time.perf_counter() - start
    start = time.perf_counter()
    assert encode_chunk_heap(chunk, bpe_2048.merge_ids) == reference
    heap_seconds = time.perf_counter() - start
    heap_rows.append((length, len(reference), scan_seconds, heap_seconds))
ch3_heap_speedup = heap_rows[-1][2] / heap_rows[-1][3]
(shortest, _, short_scan, short_heap) = heap_rows[0]
(longest, _, long_scan, long_heap) = heap_rows[-1]
ch3_scan_growth = (long_scan / longest) / (short_scan / shortest)
ch3_heap_growth = (long_heap / longest) / (short_heap / shortest)
Table(heap_rows, ["chunk length", "tokens", "encode_chunk (s)",
                  "heap (s)"], digits=4)

# %% [markdown]
# From the shortest chunk to the longest, the time per character of
# `encode_chunk` grows {{ ch3_scan_growth:.1f }} times, because a longer
# chunk uses more distinct merges and each one rescans it; the growth stops
# only when the chunk uses every merge in the vocabulary. The heap version's
# time per character changes {{ ch3_heap_growth:.1f }} times (its cost is
# $n \log n$), and at the longest chunk it is {{ ch3_heap_speedup:.0f }}
# times faster, with identical ids. For ordinary text the chunks are words
# and the per-chunk cache hides the difference; for long runs without
# spaces it decides how long encoding takes.

# %% [markdown]
# ## Chapter 4
#
# The solutions import the two position encodings that chapter 4 exported
# to `mlxllm.model`.

# %%
from mlxllm.model import rope, sinusoidal_positions

mx.random.seed(4)

# %% [markdown]
# ### Exercise 4.1
#
# The halves layout computes the same angles and concatenates the sines and
# the cosines instead of interleaving them.

# %%
def ch4_sinusoidal_halves(context: int, dims: int,
                          base: float = 10000.0) -> mx.array:
    freqs = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    angles = mx.arange(context, dtype=mx.float32)[:, None] * freqs
    return mx.concatenate([mx.sin(angles), mx.cos(angles)], axis=-1)


ch4_paper = sinusoidal_positions(64, 32)
ch4_halves = ch4_sinusoidal_halves(64, 32)
ch4_order = mx.concatenate([mx.arange(0, 32, 2), mx.arange(1, 32, 2)])
print(ch4_halves[1, :3], ch4_paper[1, 0:6:2])
assert mx.array_equal(ch4_halves, ch4_paper[:, ch4_order]).item()
assert mx.allclose(ch4_halves @ ch4_halves.T, ch4_paper @ ch4_paper.T,
                   atol=1e-4).item()

# %% [markdown]
# Column $i$ of the halves layout is column `ch4_order[i]` of the paper's,
# so the two matrices hold the same numbers in a different column order.
# A dot product is a sum over columns and does not care about their order,
# so every dot product between positions is the same. The model does not
# care either: the next layer is a matrix product, and a learned matrix
# absorbs any fixed permutation of its inputs. The layout only matters when
# two pieces of code must agree, say a checkpoint and the code loading it.
#
# ### Exercise 4.2
#
# Reshape the last axis into $D/2$ pairs, rotate each pair, and flatten
# back. Pair $i$ is features $(2i, 2i + 1)$ and turns at
# $\theta_i = \text{base}^{-2i/D}$.

# %%
def ch4_rope_traditional(x: mx.array, base: float = 10000.0,
                         offset: int = 0) -> mx.array:
    steps, dims = x.shape[-2], x.shape[-1]
    freqs = base ** (-mx.arange(0, dims, 2, dtype=mx.float32) / dims)
    positions = mx.arange(offset, offset + steps, dtype=mx.float32)
    angles = positions[:, None] * freqs
    cos, sin = mx.cos(angles), mx.sin(angles)
    pairs = x.reshape(*x.shape[:-1], dims // 2, 2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = mx.stack([even * cos - odd * sin, even * sin + odd * cos],
                       axis=-1)
    return rotated.reshape(x.shape)


for ch4_shape, ch4_base, ch4_offset in [((1, 9, 8), 10000.0, 0),
                                        ((2, 4, 33, 64), 10000.0, 21),
                                        ((3, 16, 16), 100.0, 7)]:
    ch4_x = mx.random.normal(ch4_shape)
    ch4_fused = mx.fast.rope(ch4_x, ch4_shape[-1], traditional=True,
                             base=ch4_base, scale=1.0, offset=ch4_offset)
    ch4_mine = ch4_rope_traditional(ch4_x, ch4_base, ch4_offset)
    print(ch4_shape, f"{mx.abs(ch4_mine - ch4_fused).max().item():.1e}")
    assert mx.allclose(ch4_mine, ch4_fused, atol=1e-4).item()

# %% [markdown]
# The reshape turns the last axis of length $D$ into $D/2$ rows of two, so
# `pairs[..., 0]` holds the even features and `pairs[..., 1]` the odd ones,
# each of shape (..., T, D/2), which broadcasts against the angles exactly
# as the two halves do in `rope`. The stack on a new last axis interleaves
# them again. It matches `mx.fast.rope` with `traditional=True` to float32
# rounding.
#
# ### Exercise 4.3
#
# Rebuild the chapter's bare attention with an option to rotate the queries
# and keys, and compare the output for *bites* in the two sentences. The
# embeddings here are drawn with a standard deviation of one, so that the
# attention weights are far from even and the effect is easy to see.

# %%
ch4_dims = 16
ch4_w_q, ch4_w_k, ch4_w_v = (
    mx.random.normal((ch4_dims, ch4_dims)) / math.sqrt(ch4_dims)
    for _ in range(3)
)
ch4_words = {"dog": 0, "bites": 1, "man": 2}
ch4_word_vectors = mx.random.normal((len(ch4_words), ch4_dims))


def ch4_attention(x: mx.array, rotate: bool = False,
                  offset: int = 0) -> mx.array:
    queries, keys, values = x @ ch4_w_q, x @ ch4_w_k, x @ ch4_w_v
    if rotate:
        queries = rope(queries, offset=offset)
        keys = rope(keys, offset=offset)
    scores = queries @ keys.T / math.sqrt(ch4_dims)
    return mx.softmax(scores, axis=-1) @ values


def ch4_embed(text: str) -> mx.array:
    return ch4_word_vectors[mx.array([ch4_words[w] for w in text.split()])]

# %%
def ch4_bites_change(first: mx.array, second: mx.array) -> float:
    gap = mx.linalg.norm(first[1] - second[1]) / mx.linalg.norm(first[1])
    return gap.item()


ch4_dbm, ch4_mbd = ch4_embed("dog bites man"), ch4_embed("man bites dog")
ch4_sines = sinusoidal_positions(8, ch4_dims)
ch4_changes = {
    "none": ch4_bites_change(ch4_attention(ch4_dbm),
                             ch4_attention(ch4_mbd)),
    "added sinusoidal": ch4_bites_change(
        ch4_attention(ch4_dbm + ch4_sines[:3]),
        ch4_attention(ch4_mbd + ch4_sines[:3])),
    "RoPE": ch4_bites_change(ch4_attention(ch4_dbm, rotate=True),
                             ch4_attention(ch4_mbd, rotate=True)),
}
ch4_rope_shift = ch4_bites_change(
    ch4_attention(ch4_dbm, rotate=True),
    ch4_attention(ch4_dbm, rotate=True, offset=5))
ch4_sines_shift = ch4_bites_change(
    ch4_attention(ch4_dbm + ch4_sines[:3]),
    ch4_attention(ch4_dbm + ch4_sines[5:8]))
for ch4_name, ch4_change in ch4_changes.items():
    print(f"{ch4_name:>16}: bites changes by {ch4_change:.1%}")
print(f"shifted by 5, RoPE {ch4_rope_shift:.1e}, "
      f"sinusoidal {ch4_sines_shift:.1%}")
assert ch4_changes["none"] < 1e-5 < ch4_changes["RoPE"]
assert ch4_rope_shift < 1e-4 < ch4_sines_shift

# %% [markdown]
# Without positions *bites* does not change at all; with either scheme it
# does, by {{ ch4_changes["added sinusoidal"]:.0%}} with added sines and
# {{ ch4_changes["RoPE"]:.0%}} with RoPE. Shifting the whole sentence by
# five positions separates the two: with RoPE the output is unchanged (a
# difference of {{ ch4_rope_shift:.0e }}, rounding), because every score
# depends only on the distances between the words, which the shift keeps;
# with added sines it moves by {{ ch4_sines_shift:.0%}}, because the
# content-position terms of the scores see the absolute positions. A RoPE
# model reads "dog bites man" the same way at the start of a text and in
# its middle.
#
# ### Exercise 4.4
#
# With a query and a key of all ones, every pair $(1, 1)$ rotated by
# $m\theta_i$ and $n\theta_i$ contributes $2\cos((m - n)\theta_i)$, so the
# score at offset $d$ is $2\sum_i \cos(d\,\theta_i)$: the sum of the
# frequencies' cosines, peaking at $D$ for $d = 0$.

# %%
ch4_head_dims, ch4_span = 64, 512
ch4_ones = mx.ones((1, ch4_span, ch4_head_dims))
ch4_decay = {}
for ch4_base in (100.0, 1000.0, 10000.0):
    ch4_rotated = rope(ch4_ones, base=ch4_base)[0]
    ch4_decay[ch4_base] = np.array(ch4_rotated @ ch4_rotated[0])
ch4_half_distance = {
    base: int(np.argmax(scores < scores[0] / 2))
    for base, scores in ch4_decay.items()
}
print("first offset below half the peak:", ch4_half_distance)
assert (ch4_half_distance[100.0] < ch4_half_distance[1000.0]
        < ch4_half_distance[10000.0])

# %%
#| echo: false
#| label: fig-ch4-rope-decay
#| fig-cap: The RoPE score of an all-ones query and key (64 numbers each) against their distance, for three bases. A larger base keeps the score high over longer distances.
for ch4_base, ch4_style in zip(ch4_decay, ["-", "--", ":"]):
    plt.plot(ch4_decay[ch4_base], ch4_style,
             label=f"base {ch4_base:,.0f}")
plt.xscale("symlog", linthresh=10)
plt.xlabel("offset m − n (positions)")
plt.ylabel("score q · k")
plt.legend()

# %% [markdown]
# The score starts at the same peak for every base and falls as the offset
# grows; it first drops below half the peak at offset
# {{ ch4_half_distance[100.0] }} with base 100,
# {{ ch4_half_distance[1000.0] }} with base 1,000 and
# {{ ch4_half_distance[10000.0] }} with base 10,000. The reason is the
# ladder of frequencies $\theta_i = \text{base}^{-2i/D}$: the cosines stay
# near one while $d\,\theta_i$ is small, and a larger base makes more of
# the frequencies slow, so more terms stay in phase for longer. The decay is
# not a clean envelope, though: past the half-way point the fast terms
# cancel each other only on average, and the curve wobbles. That is why
# models meant for long contexts raise the base: with base 100 the score
# has halved {{ ch4_half_distance[100.0] }} positions away.
#
# ### Exercise 4.5
#
# A `scale` multiplies the positions, offset included; `mx.fast.rope` takes
# the same argument.

# %%
def ch4_rope_scaled(x: mx.array, base: float = 10000.0, offset: int = 0,
                    scale: float = 1.0) -> mx.array:
    steps, dims = x.shape[-2], x.shape[-1]
    half = dims // 2
    freqs = base ** (-mx.arange(half, dtype=mx.float32) / half)
    positions = mx.arange(offset, offset + steps, dtype=mx.float32) * scale
    angles = positions[:, None] * freqs
    cos, sin = mx.cos(angles), mx.sin(angles)
    first, second = x[..., :half], x[..., half:]
    return mx.concatenate([first * cos - second * sin,
                           first * sin + second * cos], axis=-1)


ch4_x = mx.random.normal((2, 256, 32))
for ch4_scale, ch4_offset in [(1.0, 0), (0.25, 0), (0.25, 64)]:
    ch4_fused = mx.fast.rope(ch4_x, 32, traditional=False, base=10000.0,
                             scale=ch4_scale, offset=ch4_offset)
    assert mx.allclose(ch4_rope_scaled(ch4_x, offset=ch4_offset,
                                       scale=ch4_scale),
                       ch4_fused, atol=1e-4).item()

# %% [markdown]
# Now stretch a context of 256 into a model trained on 64. With
# `scale = 64 / 256` the largest position is $255/4$, inside the span of
# 64 positions the model trained on, so every angle is one it could have
# seen; extrapolation (scale one) cannot promise that. The price is resolution. Measure it with a random query
# and key of 64 numbers: score the query at offsets 0 to 255 from the key,
# with and without the stretch.

# %%
ch4_trained, ch4_long = 64, 256
ch4_scale = ch4_trained / ch4_long
ch4_q = mx.broadcast_to(mx.random.normal((64,)), (1, ch4_long, 64))
ch4_k = mx.broadcast_to(mx.random.normal((64,)), (1, ch4_long, 64))


def ch4_offset_scores(scale: float) -> np.ndarray:
    rotated_q = ch4_rope_scaled(ch4_q, scale=scale)[0]
    rotated_k = ch4_rope_scaled(ch4_k, scale=scale)[0]
    return np.array(rotated_q @ rotated_k[0])


ch4_plain = ch4_offset_scores(1.0)
ch4_stretched = ch4_offset_scores(ch4_scale)
ch4_max_position = (ch4_long - 1) * ch4_scale
ch4_near_change = (np.abs(ch4_plain[:16] - ch4_stretched[:16]).mean()
                   / np.abs(ch4_plain[:16]).mean())
print(f"largest stretched position {ch4_max_position}")
print(f"scores at offsets 0..15 change by {ch4_near_change:.0%}")
assert ch4_max_position < ch4_trained
assert np.allclose(ch4_stretched[::4], ch4_plain[:64], atol=1e-3)

# %% [markdown]
# The stretched scores at offsets 0, 4, 8, ... are exactly the plain
# scores at offsets 0, 1, 2, ... (a check in the listing): every attention
# pattern the model learned at some distance now fires at four times that
# distance, and nothing is out of range, so a stretched model runs at
# once. But it reads every distance four times too short. At the short
# offsets 0 to 15, where a language model does most of its attending, the
# scores change by {{ ch4_near_change:.0%}} on average, and offsets 1, 2
# and 3 become the fractional offsets 0.25, 0.5 and 0.75, which training
# never produced and which all look much like offset 0. So the model needs
# fine-tuning on long texts to relearn fine distances; Chen et al. (2023)
# report that a short fine-tuning is enough, far shorter than training a
# long-context model from scratch. Showing that here would take a trained
# model, which chapter 6 provides.

# %% [markdown]
# ## Chapter 5
#
# The solutions import the attention that chapter 5 exported to
# `mlxllm.model`.

# %%
from mlxllm.model import (
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)

mx.random.seed(5)

# %% [markdown]
# ### Exercise 5.1
#
# With as many queries as keys, the string `"causal"` and the boolean lower
# triangle are the same mask.

# %%
ch5_q, ch5_k, ch5_v = (mx.random.normal((1, 2, 8, 16)) for _ in range(3))
ch5_scale = 1 / math.sqrt(16)
ch5_square = mx.fast.scaled_dot_product_attention(
    ch5_q, ch5_k, ch5_v, scale=ch5_scale, mask="causal")
assert mx.allclose(ch5_square, scaled_dot_product_attention(
    ch5_q, ch5_k, ch5_v, causal_mask(8)), atol=1e-5).item()

# %% [markdown]
# With 3 queries and 8 keys, MLX aligns the *last* query with the *last*
# key ("lower-right"): the queries are the three newest positions of an
# 8-token text, so query $i$ sees keys $j \le i + 5$. `causal_mask(3)`
# would be the wrong shape, and its upper-left alignment would hide the
# keys the new tokens must see.

# %%
ch5_new_q = ch5_q[:, :, -3:]
ch5_offset = ch5_k.shape[2] - ch5_new_q.shape[2]
ch5_sees = (mx.arange(8)[None, :]
            <= mx.arange(3)[:, None] + ch5_offset)
print(np.array(ch5_sees).astype(int))
ch5_rect = mx.fast.scaled_dot_product_attention(
    ch5_new_q, ch5_k, ch5_v, scale=ch5_scale, mask="causal")
assert mx.allclose(ch5_rect, scaled_dot_product_attention(
    ch5_new_q, ch5_k, ch5_v, ch5_sees), atol=1e-5).item()
assert mx.allclose(ch5_rect, ch5_square[:, :, -3:], atol=1e-5).item()

# %% [markdown]
# The last check is the reason for the convention: the three new queries
# get exactly the outputs they had as the last three rows of the full
# square, which is what generation with a cache of keys and values needs.
#
# ### Exercise 5.2
#
# Multiply the queries by $c$ and the scaled scores are multiplied by $c$:
# $c$ is an inverse temperature. The target is the entropy of unscaled
# scores at $d_k = 1024$, whose spread is $\sqrt{1024} = 32$ times that of
# scaled ones.

# %%
def ch5_entropy(scores: mx.array) -> float:
    weights = mx.softmax(scores, axis=-1, precise=True)
    return -(weights * mx.log(weights + 1e-30)).sum(-1).mean().item()


ch5_keys = mx.random.normal((64, 64))
ch5_queries = mx.random.normal((pick(smoke=16, book=256), 64))
ch5_wide = mx.random.normal((ch5_queries.shape[0], 1024))
ch5_target = ch5_entropy(ch5_wide @ mx.random.normal((64, 1024)).T)
ch5_factors = [1, 2, 4, 8, 16, 32, 64]
ch5_entropies = [ch5_entropy(c * ch5_queries @ ch5_keys.T / 8)
                 for c in ch5_factors]
for c, entropy in zip(ch5_factors, ch5_entropies):
    print(f"c = {c:>2}: entropy {entropy:.2f} nats")
ch5_match = min(ch5_factors,
                key=lambda c: abs(ch5_entropies[ch5_factors.index(c)]
                                  - ch5_target))
print(f"unscaled d_k = 1024: {ch5_target:.2f} nats, closest c = {ch5_match}")
assert ch5_match in (16, 32, 64)

# %% [markdown]
# The entropy falls steadily with $c$, and the unscaled width-1,024 scores,
# at {{ ch5_target:.2f }} nats, sit closest to $c = $ {{ ch5_match }}.
# Near $\sqrt{1024} = 32$, as expected: leaving out the scale is the same
# as running every head at a temperature of $1/\sqrt{d_k}$. A learned head
# can sharpen itself by growing its queries, as the hand-built heads of
# the chapter did, but it starts from a sensible temperature.
#
# ### Exercise 5.3
#
# Cross-attention changes only where the keys and values come from, so it
# can inherit everything else from `MultiHeadAttention`.

# %%
class CrossAttention(MultiHeadAttention):
    """Queries from x, keys and values from another sequence, `source`."""

    def __call__(self, x: mx.array, source: mx.array,
                 mask: mx.array | None = None) -> mx.array:
        batch, length, dims = x.shape
        q = self.split_heads(self.query_proj(x))
        k = self.split_heads(self.key_proj(source))
        v = self.split_heads(self.value_proj(source))
        out = scaled_dot_product_attention(q, k, v, mask)
        out = out.transpose(0, 2, 1, 3).reshape(batch, length, dims)
        return self.out_proj(out)


ch5_cross = CrossAttention(32, 4, bias=True)
ch5_reference = nn.MultiHeadAttention(32, 4, bias=True)
ch5_reference.update(ch5_cross.parameters())
ch5_x = mx.random.normal((2, 5, 32))
ch5_source = mx.random.normal((2, 9, 32))
ch5_out = ch5_cross(ch5_x, ch5_source)
print(ch5_out.shape)
assert mx.allclose(ch5_out, ch5_reference(ch5_x, ch5_source, ch5_source),
                   atol=1e-5).item()

# %% [markdown]
# Five queries attend over nine positions of another sequence and produce
# five outputs; the score matrix of each head is 5 × 9, no longer square.
# This is the layer an encoder-decoder translator uses to read the source
# sentence; a GPT has no second sequence and needs only self-attention.
#
# ### Exercise 5.4
#
# Each chunk of queries needs all the keys, but only its own rows of the
# mask and of the scores.

# %%
def ch5_chunked(q: mx.array, k: mx.array, v: mx.array, mask: mx.array,
                chunk: int) -> mx.array:
    """Attention computed `chunk` queries at a time."""
    outputs = []
    for start in range(0, q.shape[2], chunk):
        piece = scaled_dot_product_attention(
            q[:, :, start:start + chunk], k, v, mask[start:start + chunk])
        mx.eval(piece)
        outputs.append(piece)
    return mx.concatenate(outputs, axis=2)


ch5_length = pick(smoke=512, book=2048)
ch5_long = [mx.random.normal((1, 4, ch5_length, 32)) for _ in range(3)]
ch5_mask = causal_mask(ch5_length)
mx.eval(ch5_long, ch5_mask)
ch5_full = scaled_dot_product_attention(*ch5_long, ch5_mask)
mx.eval(ch5_full)
ch5_peaks = {}
for ch5_chunk in (ch5_length, ch5_length // 4, ch5_length // 16):
    mx.reset_peak_memory()
    ch5_before = mx.get_active_memory()  # arrays earlier solutions still hold
    ch5_out = ch5_chunked(*ch5_long, ch5_mask, ch5_chunk)
    ch5_peaks[ch5_chunk] = (mx.get_peak_memory() - ch5_before) / 2**20
    assert mx.allclose(ch5_out, ch5_full, atol=1e-5).item()
    print(f"chunk {ch5_chunk:>5}: peak {ch5_peaks[ch5_chunk]:.1f} MB")
assert ch5_peaks[ch5_length // 16] < ch5_peaks[ch5_length] / 2

# %% [markdown]
# Every chunk size gives the same output, and the peak memory it adds falls with
# the chunk, from {{ ch5_peaks[ch5_length]:.1f }} MB for the whole
# sequence at once to {{ ch5_peaks[ch5_length // 16]:.1f }} MB for chunks
# of {{ ch5_length // 16 }} queries. The `mx.eval` inside the loop
# matters: without it MLX builds the whole graph lazily and may hold every
# chunk's scores at once. The work is unchanged, $O(T^2)$; only the memory
# drops, to $O(\text{chunk} \times T)$.
#
# ### Exercise 5.5
#
# The online softmax keeps three running quantities per query: the largest
# score so far $m$, the sum of $e^{s - m}$ so far $\ell$, and the sum of
# $e^{s - m} v$ so far. When a block raises the maximum from $m$ to $m'$,
# the old sums are multiplied by $e^{m - m'}$, which restates them relative
# to the new maximum; at the end, the output is the weighted sum over
# $\ell$.

# %%
def ch5_online(q: mx.array, k: mx.array, v: mx.array, mask: mx.array,
               block: int) -> mx.array:
    """Attention over blocks of keys with a running (online) softmax."""
    q = q * (1 / math.sqrt(q.shape[-1]))
    lowest = mx.finfo(q.dtype).min
    best = mx.full((*q.shape[:-1], 1), lowest)
    total = mx.zeros((*q.shape[:-1], 1))
    acc = mx.zeros(q.shape)
    for start in range(0, k.shape[2], block):
        keys = slice(start, start + block)
        scores = q @ k[:, :, keys].swapaxes(-1, -2)
        scores = mx.where(mask[:, keys], scores, lowest)
        new_best = mx.maximum(best, scores.max(-1, keepdims=True))
        rescale = mx.exp(best - new_best)
        weights = mx.exp(scores - new_best)
        total = total * rescale + weights.sum(-1, keepdims=True)
        acc = acc * rescale + weights @ v[:, :, keys]
        best = new_best
        mx.eval(best, total, acc)
    return acc / total


mx.reset_peak_memory()
ch5_online_before = mx.get_active_memory()
ch5_flash = ch5_online(*ch5_long, ch5_mask, block=ch5_length // 16)
ch5_online_peak = (mx.get_peak_memory() - ch5_online_before) / 2**20
print(f"online softmax: peak {ch5_online_peak:.1f} MB, max difference "
      f"{mx.abs(ch5_flash - ch5_full).max().item():.1e}")
assert mx.allclose(ch5_flash, ch5_full, atol=1e-5).item()
assert ch5_online_peak < ch5_peaks[ch5_length] / 2

# %% [markdown]
# The result equals `scaled_dot_product_attention` to float32 rounding,
# causal mask included, and the peak memory is
# {{ ch5_online_peak:.1f }} MB against {{ ch5_peaks[ch5_length]:.1f }} MB:
# no array of size $T \times T$ ever exists, only blocks of $T \times$
# {{ ch5_length // 16 }}. This is the idea of FlashAttention, which also
# splits the queries into blocks and keeps each block's running sums in
# the GPU's fast on-chip memory, so that the scores never travel to main
# memory at all. Causal attention can go one step further and skip the
# blocks of keys that a block of queries cannot see, which halves the work.

# %% [markdown]
# ## Chapter 6
#
# The solutions import the GPT that chapter 6 exported to `mlxllm.model`
# and rebuild the character data of the chapter.

# %%
from mlxllm.data import BatchSampler
from mlxllm.hardware import matmul_gflops, median_seconds
from mlxllm.model import (
    GPT,
    Block,
    GPTConfig,
    causal_mask,
    count_parameters,
    lm_loss,
)
from mlxllm.tokenizer import CharTokenizer

ch6_text = load_corpus()
ch6_tokenizer = CharTokenizer.train(ch6_text)
ch6_vocab = ch6_tokenizer.vocab_size
ch6_train_ids = np.array(
    ch6_tokenizer.encode(split_train_val(ch6_text)[0]), dtype=np.int32)


def ch6_train(model: GPT, steps: int, learning_rate: object) -> list[float]:
    """AdamW on fixed-seed batches of 16; the loss of every step."""
    optimizer = optim.AdamW(learning_rate=learning_rate)
    loss_and_grad = nn.value_and_grad(model, lm_loss)
    batches = BatchSampler(ch6_train_ids, 16, model.config.context, seed=2)
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grad(model, *batches.sample())
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses

# %% [markdown]
# ### Exercise 6.1
#
# The count grows with the square of the width, so a scan over multiples
# of 64 finds the closest in a few lines. Each width must also be divisible
# by the number of heads; six heads of 64 dimensions fix the head count to
# the width.

# %%
ch6_budget_rows = []
for ch6_width in range(64, 1024 + 1, 64):
    ch6_config = GPTConfig(ch6_vocab, context=256, n_layer=6,
                           n_head=ch6_width // 64, n_embd=ch6_width)
    ch6_budget_rows.append([ch6_width, count_parameters(ch6_config)])
ch6_best_width, ch6_best_count = min(
    ch6_budget_rows, key=lambda row: abs(row[1] - 5_000_000))
print(f"n_embd={ch6_best_width}: {ch6_best_count:,} parameters")

# %% [markdown]
# A width of {{ ch6_best_width }} gives {{ ch6_best_count:, }} parameters.
# Almost all of them sit in the blocks, $12d^2$ each, so the best width is
# close to $\sqrt{5 \times 10^6 / 72}$.
#
# ### Exercise 6.2
#
# An untied model replaces `as_linear` by a head of its own. Subclassing
# keeps everything else, initialization included.

# %%
class ch6_UntiedGPT(GPT):
    """The GPT with an output head that does not share the embedding."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.init_weights()

    def __call__(self, ids: mx.array) -> mx.array:
        positions = self.position_embedding(mx.arange(ids.shape[1]))
        x = self.token_embedding(ids) + positions
        mask = causal_mask(ids.shape[1])
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.norm(x))


def ch6_count(model: nn.Module) -> int:
    return sum(v.size for _, v in tree_flatten(model.parameters()))


ch6_baby = GPTConfig.baby(ch6_vocab)
ch6_extra = ch6_count(ch6_UntiedGPT(ch6_baby)) - ch6_count(GPT(ch6_baby))
assert ch6_extra == ch6_vocab * ch6_baby.n_embd
ch6_gpt2 = GPTConfig(50257, context=1024, n_layer=12, n_head=12,
                     n_embd=768)
ch6_tying_rows = [
    [name, count_parameters(c), c.vocab_size * c.n_embd,
     100 * c.vocab_size * c.n_embd / (count_parameters(c)
                                      + c.vocab_size * c.n_embd)]
    for name, c in (("baby", ch6_baby), ("GPT-2 small", ch6_gpt2))]

# %%
#| echo: false
#| label: tbl-ch6-tying
#| tbl-cap: What weight tying saves. The last column is the untied head's share of the untied model.
Table(ch6_tying_rows, ["model", "tied parameters", "head V·d",
                       "share untied (%)"], digits=1)

# %% [markdown]
# For a character vocabulary an untied head would be
# {{ ch6_tying_rows[0][3]:.1f }}% of the model, a rounding error; for
# GPT-2's vocabulary it would be {{ ch6_tying_rows[1][3]:.0f }}%, which is
# why GPT-2 ties it.
#
# ### Exercise 6.3
#
# Two baby models, two blocks deep to keep the appendix quick, the same
# seed and batches; only the normalization differs.

# %%
ch6_norm_steps = pick(smoke=3, book=150)
ch6_norm_curves, ch6_norm_ms = {}, {}
for ch6_norm in ("layer", "rms"):
    mx.random.seed(0)
    ch6_model = GPT(GPTConfig.baby(ch6_vocab, n_layer=2, norm=ch6_norm))
    ch6_start = time.perf_counter()
    ch6_norm_curves[ch6_norm] = ch6_train(ch6_model, ch6_norm_steps, 2e-3)
    ch6_norm_ms[ch6_norm] = (time.perf_counter() - ch6_start) \
        / ch6_norm_steps * 1e3
ch6_norm_final = {name: np.mean(c[-max(1, ch6_norm_steps // 10):])
                  for name, c in ch6_norm_curves.items()}
print(ch6_norm_final, ch6_norm_ms)

# %% [markdown]
# After {{ ch6_norm_steps }} steps LayerNorm reaches
# {{ ch6_norm_final["layer"]:.3f }} nats and RMSNorm
# {{ ch6_norm_final["rms"]:.3f }}, at {{ ch6_norm_ms["layer"]:.0f }} and
# {{ ch6_norm_ms["rms"]:.0f }} ms a step. The curves are close, as Zhang &
# Sennrich (2019) found; any difference in time is small because the
# normalizations are a small part of the work next to the matrix products.
#
# ### Exercise 6.4
#
# The post-norm model of the chapter, trained once at the fixed rate and
# once with a linear warm-up over the first quarter of the run.

# %%
class ch6_PostNormBlock(Block):
    """norm(x + sublayer(x)), as in Vaswani et al. (2017)."""

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        x = self.norm1(x + self.attention(x, mask))
        return self.norm2(x + self.feed_forward(x))


class ch6_PostNormGPT(GPT):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.blocks = [ch6_PostNormBlock(config)
                       for _ in range(config.n_layer)]
        self.init_weights()


ch6_depth_steps = pick(smoke=4, book=200)
ch6_depth = GPTConfig(ch6_vocab, context=32, n_layer=pick(smoke=4, book=8),
                      n_head=4, n_embd=64, activation="relu")
ch6_warmup = optim.join_schedules(
    [optim.linear_schedule(1e-5, 2e-3, ch6_depth_steps // 4),
     lambda step: 2e-3], [ch6_depth_steps // 4])
ch6_warm_curves = {}
for ch6_name, ch6_rate in (("fixed", 2e-3), ("warm-up", ch6_warmup)):
    mx.random.seed(1)
    ch6_warm_curves[ch6_name] = ch6_train(ch6_PostNormGPT(ch6_depth),
                                          ch6_depth_steps, ch6_rate)

# %%
#| echo: false
#| label: fig-ch6-warmup
#| fig-cap: The post-norm model of the chapter's depth experiment, with and without a linear warm-up of the learning rate (moving average over 20 steps).
fig, ax = plt.subplots(figsize=(4.5, 2.6))
ch6_window = min(20, ch6_depth_steps)
for ch6_name, ch6_losses in ch6_warm_curves.items():
    ax.plot(np.convolve(ch6_losses, np.ones(ch6_window) / ch6_window,
                        mode="valid"), label=ch6_name)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# Whether the warm-up wins depends on how hard the fixed rate was for the
# post-norm model to begin with; at this depth and rate the curves end at
# {{ np.mean(ch6_warm_curves["fixed"][-20:]):.3f }} (fixed) and
# {{ np.mean(ch6_warm_curves["warm-up"][-20:]):.3f }} (warm-up) nats.
# Raise the learning rate or the depth and the fixed-rate run is the one
# that fails first.
#
# ### Exercise 6.5
#
# The prediction is the chapter's: $6N' + 12LTd$ FLOPs per token, at the
# speed of a large matrix product.

# %%
from mlxllm.model import time_train_step, train_flops_per_token

ch6_gflops = matmul_gflops()
ch6_x = mx.random.randint(0, ch6_vocab, (16, 64))
ch6_rows = []
for ch6_width in pick(smoke=[64], book=[64, 128, 256, 384]):
    ch6_config = GPTConfig.baby(ch6_vocab, n_embd=ch6_width)
    ch6_predicted = train_flops_per_token(ch6_config) * ch6_x.size \
        / (ch6_gflops * 1e9) * 1e3
    ch6_measured = 1e3 * time_train_step(GPT(ch6_config), ch6_x, ch6_x,
                                         pick(smoke=1, book=5))
    ch6_rows.append([ch6_width, ch6_predicted, ch6_measured,
                     ch6_measured / ch6_predicted])

# %%
#| echo: false
#| label: fig-ch6-flops
#| fig-cap: Measured against predicted time of one training step (batch 16 × 64 characters) for baby models of several widths; the dashed line is a perfect prediction.
fig, ax = plt.subplots(figsize=(4.0, 2.8))
ch6_pred = [row[1] for row in ch6_rows]
ax.loglog(ch6_pred, [row[2] for row in ch6_rows], "o-", label="measured")
ax.loglog(ch6_pred, ch6_pred, "k--", label="predicted")
for ch6_row in ch6_rows:
    ax.annotate(f"d={ch6_row[0]}", (ch6_row[1], ch6_row[2]), fontsize=7)
ax.set_xlabel("predicted step time (ms)")
ax.set_ylabel("measured step time (ms)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# The ratio of measured to predicted time goes from
# {{ ch6_rows[0][3]:.1f }} at width {{ ch6_rows[0][0] }} to
# {{ ch6_rows[-1][3]:.1f }} at width {{ ch6_rows[-1][0] }}. The fixed costs
# of a step (elementwise work, the optimizer, launching operations) grow
# like the number of parameters or slower, while the matrix products grow
# with the square of the width, so the products, which the formula counts,
# take a larger share as the model widens.

# %% [markdown]
# ## Chapter 7
#
# The solutions train with the chapter's own `Trainer`, imported from
# `mlxllm.train`, and read the two runs the chapter left in its build
# directory: the character and the BPE baby models, with their histories
# and checkpoints. To keep the appendix within minutes, every new run
# is measured on the first {{ len(ch7_val_ids) - 1:, }} validation ids
# rather than all of them, and the book profile shortens the runs of
# exercises 7.1 and 7.3 (the `full` profile runs the lengths the
# exercises ask for).

# %%
import numpy as np
from mlx.utils import tree_map

from mlxllm.book import artifact_path
from mlxllm.data import encode_splits
from mlxllm.model import GPT, GPTConfig
from mlxllm.train import (
    StepFn,
    Trainer,
    TrainConfig,
    latest_checkpoint,
    load_tokenizer,
    read_checkpoint,
    resume,
)
from mlxllm.train import sample as ch7_sample  # `sample` is chapter 3's

ch7_char_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
ch7_bpe_dir = artifact_path("07_training/baby-bpe/tokenizer.txt").parent
ch7_token_cache = artifact_path("07_training/tokens")
ch7_tokenizer = load_tokenizer(ch7_char_dir / "tokenizer.txt")
ch7_train_ids, ch7_all_val = encode_splits(ch7_tokenizer, text,
                                           ch7_token_cache)
ch7_val_ids = ch7_all_val[:pick(smoke=2049, book=16385)]


def ch7_train(config: TrainConfig, trainer_class: type = Trainer,
              until: int | None = None) -> Trainer:
    """A baby character model, from the same seed every time, trained
    by `trainer_class` to step `until` (default: the end)."""
    mx.random.seed(0)
    model = GPT(GPTConfig.baby(ch7_tokenizer.vocab_size))
    trainer = trainer_class(model, config, ch7_train_ids, ch7_val_ids,
                            1.0, log=None)
    trainer.run(until)
    return trainer


def ch7_smooth(losses: list[float], window: int) -> np.ndarray:
    """The moving average of `losses` over `window` steps."""
    window = min(window, len(losses))
    return np.convolve(losses, np.ones(window) / window, mode="valid")

# %% [markdown]
# ### Exercise 7.1
#
# `Trainer` builds its optimizer with `make_optimizer` and then its step
# with `build_step`; a subclass that switches the correction off between
# the two is all the exercise needs. Four runs, from the same seed and on
# the same batches: with and without warm-up, with and without the
# correction.

# %%
class ch7_UncorrectedTrainer(Trainer):
    """A Trainer whose AdamW skips bias correction (MLX's default)."""

    def build_step(self) -> StepFn:
        self.optimizer.bias_correction = False
        return super().build_step()


ch7_bias_steps = pick(smoke=6, book=100, full=300)
ch7_bias_runs = {}
for ch7_warmup in (ch7_bias_steps // 3, 0):
    ch7_bias_config = TrainConfig(steps=ch7_bias_steps,
                                  warmup_steps=ch7_warmup,
                                  eval_every=ch7_bias_steps)
    for ch7_class, ch7_correction in ((Trainer, "on"),
                                      (ch7_UncorrectedTrainer, "off")):
        ch7_name = (f"warm-up {'on' if ch7_warmup else 'off'}, "
                    f"correction {ch7_correction}")
        ch7_bias_runs[ch7_name] = ch7_train(ch7_bias_config, ch7_class)
ch7_bias_val = {name: run.history["val_loss"][-1]
                for name, run in ch7_bias_runs.items()}
ch7_excess = max((1 - 0.9 ** step) / math.sqrt(1 - 0.99 ** step)
                 for step in range(1, ch7_bias_steps + 1))
ch7_bias_baseline = "warm-up on, correction on"
ch7_bias_spread = max(ch7_bias_val.values()) - min(ch7_bias_val.values())
ch7_bias_worst = max(ch7_bias_val, key=ch7_bias_val.get)
ch7_bias_best = min(ch7_bias_val, key=ch7_bias_val.get)
ch7_bias_lead = max(
    ch7_smooth(np.array(ch7_bias_runs[ch7_bias_baseline].history["loss"])
               - run.history["loss"], 10).max()
    for run in ch7_bias_runs.values())
print({name: round(loss, 3) for name, loss in ch7_bias_val.items()})

# %%
#| echo: false
#| label: fig-ch7-bias
#| fig-cap: Training loss of three runs minus that of the run with both warm-up and bias correction, step by step on the same batches (moving average over 10 steps). Below zero, the run is ahead.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
ch7_baseline = np.array(ch7_bias_runs[ch7_bias_baseline].history["loss"])
for (ch7_name, ch7_run), ch7_style in zip(ch7_bias_runs.items(),
                                         ("-", "--", "-.", ":")):
    if ch7_name == ch7_bias_baseline:
        continue
    ch7_curve = ch7_smooth(np.array(ch7_run.history["loss"])
                           - ch7_baseline, 10)
    ax.plot(np.arange(len(ch7_curve)) + len(ch7_baseline)
            - len(ch7_curve) + 1, ch7_curve, ch7_style, label=ch7_name)
ax.axhline(0, color="0.5", linewidth=0.8)
ax.set_xlabel("step")
ax.set_ylabel("loss difference (nats/char)")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# At the chapter's peak rate, 0.001, none of the four suffers. In the
# first steps every other run is ahead of the one with both warm-up and
# correction, by up to {{ ch7_bias_lead:.2f }} nats (@fig-ch7-bias), and
# after {{ ch7_bias_steps }} steps all four are within
# {{ ch7_bias_spread:.3f }} nats per character of each other on the
# validation slice, from {{ ch7_bias_val[ch7_bias_best]:.3f }}
# ("{{ ch7_bias_best }}") to {{ ch7_bias_val[ch7_bias_worst]:.3f }}
# ("{{ ch7_bias_worst }}"). A warm-up costs early progress, and a
# missing correction acts as a larger early rate: up to
# {{ ch7_excess:.1f }} times the nominal one (@fig-bias-correction), so
# about {{ 1e-3 * ch7_excess:.1e }} for a few dozen steps, well inside
# the constant {{ ch7_best_rate:g }} that exercise 7.3 finds this model
# tolerates. Both safeguards earn their place nearer the edge of
# stability: with a peak rate close to that limit, the uncorrected,
# unwarmed first steps are the ones that would cross it.
#
# ### Exercise 7.2
#
# The chapter's runs saved their histories in their checkpoints. A step
# feeds {{ ch7_char_record["train"]["batch_size"] }} windows of 64 tokens;
# a character token is one character of training text and a BPE token
# {{ ch7_bpe_chars_per_token:.2f }} of them on average, so the characters
# seen are the step times the tokens per step times the characters per
# token.

# %%
def ch7_by_characters(run_dir: Path) -> tuple[dict, np.ndarray, float]:
    """A chapter-7 run's last record, the characters of training text it
    had seen at each evaluation, and its characters per token."""
    record, _, _ = read_checkpoint(latest_checkpoint(run_dir))
    tokenizer = load_tokenizer(run_dir / "tokenizer.txt")
    train_ids, _ = encode_splits(tokenizer, text, ch7_token_cache)
    chars_per_token = len(train_text) / len(train_ids)
    tokens_per_step = (record["train"]["batch_size"]
                       * record["model"]["context"])
    steps = np.array(record["history"]["eval_step"])
    return record, steps * tokens_per_step * chars_per_token, \
        chars_per_token


ch7_char_record, ch7_char_seen, _ = ch7_by_characters(ch7_char_dir)
ch7_bpe_record, ch7_bpe_seen, ch7_bpe_chars_per_token = \
    ch7_by_characters(ch7_bpe_dir)
ch7_char_curve = ch7_char_record["history"]["val_loss"]
ch7_bpe_curve = ch7_bpe_record["history"]["val_loss"]
ch7_bpe_at_char_end = float(np.interp(ch7_char_seen[-1], ch7_bpe_seen,
                                      ch7_bpe_curve))
ch7_leader = ("character" if ch7_char_curve[-1] < ch7_bpe_at_char_end
              else "BPE")
ch7_bpe_steps = ch7_bpe_record["train"]["steps"]
ch7_bpe_step_at_char_end = (ch7_char_seen[-1] / ch7_bpe_seen[-1]
                            * ch7_bpe_steps)
ch7_bpe_rate_at_char_end = ch7_bpe_record["history"]["learning_rate"][
    int(ch7_bpe_step_at_char_end) - 1]

# %%
#| echo: false
#| label: fig-ch7-per-char
#| fig-cap: Validation loss of the chapter's two baby runs against the characters of training text they had seen. The BPE run reads more text per step, so its curve stretches further right.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
ax.plot(ch7_char_seen / 1e6, ch7_char_curve, "o-", label="characters")
ax.plot(ch7_bpe_seen / 1e6, ch7_bpe_curve, "s--",
        label=f"{ch7_bpe_record['model']['vocab_size']:,} BPE ids")
ax.set_xlabel("training text seen (millions of characters)")
ax.set_ylabel("validation loss (nats/char)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# Per step, the BPE model reads {{ ch7_bpe_chars_per_token:.1f }} times
# as much text. Per character read, compare the two at the
# {{ ch7_char_seen[-1] / 1e6:.2f }} million characters the character
# model saw in its whole run: there the character model is at
# {{ ch7_char_curve[-1]:.2f }} nats per character and the BPE model, read
# off its curve between two evaluations, at
# {{ ch7_bpe_at_char_end:.2f }}. Per character of training text, the
# {{ ch7_leader }} model is ahead.
#
# The comparison at equal text is not a comparison at equal schedule,
# though. The BPE run had read that much text by step
# {{ ch7_bpe_step_at_char_end:,.0f }} of its {{ ch7_bpe_steps:, }}, with
# its learning rate still at {{ ch7_bpe_rate_at_char_end:.1e }}, while
# the character run had finished its cosine decay to
# {{ ch7_char_record["train"]["min_learning_rate"]:.0e }}, and a run that
# has cooled down scores lower than one still at a high rate. To compare
# tokenizers per character fairly, give both runs the same characters of
# text, not the same steps.

# %% [markdown]
# ### Exercise 7.3
#
# A constant rate is a `TrainConfig` without warm-up whose floor equals
# its peak. What counts as failing needs a definition. A rate can fail
# loudly, the loss climbing or turning into `nan`, or quietly, the model
# settling at the loss of a model that ignores its context and only
# knows how often each character occurs ({{ ch7_unigram:.2f }} nats per
# character, exercise 1.1). So a run fails if its
# {{ ch7_window }}-step moving average climbs {{ ch7_margin }} nats above
# its lowest point so far, or is still within {{ ch7_margin }} nats of
# that context-free loss after {{ ch7_patience }} steps.
#
# The search starts high and halves the rate until a run gets through
# {{ ch7_lr_steps }} steps without failing. Starting high is the cheap
# direction: a rate that is too large shows it early and its run stops
# there; only the survivor runs to the end.

# %%
ch7_lr_steps = pick(smoke=8, book=240, full=500)
ch7_window = pick(smoke=4, book=ch7_lr_steps // 10)
ch7_patience = pick(smoke=ch7_lr_steps, book=ch7_lr_steps // 3)
ch7_margin = 0.1
ch7_counts = np.bincount(ch7_train_ids)
ch7_frequencies = ch7_counts[ch7_counts > 0] / ch7_counts.sum()
ch7_unigram = float(-(ch7_frequencies * np.log(ch7_frequencies)).sum())


def ch7_fails(losses: list[float]) -> bool:
    """Whether the smoothed loss is not finite, has climbed clearly above
    its minimum, or has stalled at the context-free loss."""
    curve = ch7_smooth(losses, ch7_window)
    climbed = curve[-1] > curve.min() + ch7_margin
    stalled = (len(losses) > ch7_patience
               and curve[-1] > ch7_unigram - ch7_margin)
    return bool(not np.isfinite(curve[-1]) or climbed or stalled)


def ch7_constant_rate(rate: float) -> tuple[Trainer, bool]:
    """Train at a constant rate, checking every window; stop at a
    failure. Returns the trainer and whether the run failed."""
    config = TrainConfig(steps=ch7_lr_steps, warmup_steps=0,
                         learning_rate=rate, min_learning_rate=rate,
                         eval_every=ch7_lr_steps)
    trainer = ch7_train(config, until=ch7_window)
    while not ch7_fails(trainer.history["loss"]):
        if trainer.step == ch7_lr_steps:
            return trainer, False
        trainer.run(min(trainer.step + ch7_window, ch7_lr_steps))
    return trainer, True


ch7_constant_runs = {}
for ch7_rate in pick(smoke=(6.4e-2, 1e-3),
                     book=(3.2e-2, 1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3)):
    ch7_trainer, ch7_failed = ch7_constant_rate(ch7_rate)
    ch7_constant_runs[ch7_rate] = ch7_trainer
    ch7_outcome = f"failed at step {ch7_trainer.step}" if ch7_failed \
        else "trained"
    print(f"rate {ch7_rate:g}: {ch7_outcome}")
    if not ch7_failed:
        break
assert not ch7_failed, "no rate trained; extend the search downwards"
ch7_best_rate = ch7_rate
ch7_schedule_run = ch7_train(TrainConfig(steps=ch7_lr_steps,
                                         warmup_steps=ch7_lr_steps // 5))
ch7_constant_val = ch7_constant_runs[ch7_best_rate].history["val_loss"][-1]
ch7_schedule_val = ch7_schedule_run.history["val_loss"][-1]

# %%
#| echo: false
#| label: fig-ch7-constant
#| fig-cap: Training loss (moving average) at constant learning rates, each stopped when it failed, and the chapter's warm-up and cosine schedule with a peak of 0.001. The dotted line is the loss of a model that ignores its context.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
for ch7_rate, ch7_trainer in ch7_constant_runs.items():
    ch7_curve = ch7_smooth(ch7_trainer.history["loss"], ch7_window)
    ax.plot(np.arange(len(ch7_curve)) + ch7_window, ch7_curve,
            label=f"constant {ch7_rate:g}")
ch7_curve = ch7_smooth(ch7_schedule_run.history["loss"], ch7_window)
ax.plot(np.arange(len(ch7_curve)) + ch7_window, ch7_curve, "k--",
        label="schedule, peak 0.001")
ax.axhline(ch7_unigram, color="0.5", linestyle=":", linewidth=1)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# The largest constant rate that trained is {{ ch7_best_rate:g }}, to
# within the factor of two of the search:
# {{ ch7_best_rate / 1e-3:.0f }} times the schedule's peak. Training at
# it is a low bar, though. After {{ ch7_lr_steps }} steps the run is at
# {{ ch7_constant_val:.3f }} nats per character on the validation slice,
# and the schedule at {{ ch7_schedule_val:.3f }},
# {{ ch7_constant_val - ch7_schedule_val:.2f }} nats lower. At the edge
# of stability every step overshoots; the loss does not climb, but it
# falls slowly (@fig-ch7-constant). The largest rate that
# survives is not the best one, and the best schedule starts well below
# it, warms up to its peak, and decays from there.
#
# ### Exercise 7.4
#
# The final character model is the chapter's last checkpoint. Each
# temperature writes {{ ch7_sample_length }} characters after the same
# prompt; a word is anything between spaces or line breaks, punctuation
# included, and counts as real if the training text, split the same way,
# contains it. As a yardstick, the same share for the validation text,
# which is real Shakespeare the model never saw.

# %%
ch7_final_record, ch7_final_weights, _ = read_checkpoint(
    latest_checkpoint(ch7_char_dir))
ch7_final_model = GPT(GPTConfig(**ch7_final_record["model"]))
ch7_final_model.load_weights(list(ch7_final_weights.items()))
ch7_train_words = set(train_text.split())
ch7_sample_length = pick(smoke=80, book=800)


def ch7_real_share(words: list[str]) -> float:
    """The share of `words` that occur in the training text."""
    return float(np.mean([word in ch7_train_words for word in words]))


ch7_prompt = ch7_tokenizer.encode("ROMEO:\n")
ch7_temperature_rows, ch7_samples = [], {}
for ch7_temperature in (0.0, 0.5, 1.0, 1.5):
    ch7_ids = ch7_sample(ch7_final_model, ch7_prompt, ch7_sample_length,
                     temperature=ch7_temperature, seed=3)
    ch7_samples[ch7_temperature] = ch7_tokenizer.decode(
        ch7_ids[len(ch7_prompt):])
    ch7_words = ch7_samples[ch7_temperature].split()
    ch7_temperature_rows.append(
        [ch7_temperature, len(ch7_words), ch7_real_share(ch7_words),
         len(set(ch7_words)) / len(ch7_words)])
ch7_val_pieces = [val_text[start:start + ch7_sample_length].split()
                  for start in range(0, len(val_text) - ch7_sample_length,
                                     ch7_sample_length)]
ch7_temperature_rows.append(
    ["validation text", round(np.mean([len(piece)
                                       for piece in ch7_val_pieces])),
     ch7_real_share(val_text.split()),
     np.mean([len(set(piece)) / len(piece) for piece in ch7_val_pieces])])
ch7_share = {row[0]: row[2] for row in ch7_temperature_rows}
ch7_distinct = {row[0]: row[3] for row in ch7_temperature_rows}
for ch7_temperature in (0.0, 1.5):
    print(f"--- temperature {ch7_temperature}")
    print(ch7_samples[ch7_temperature][:160])

# %%
#| echo: false
#| label: tbl-ch7-temperature
#| tbl-cap: Samples of the final character model at four temperatures. Real words are those that occur in the training text; distinct is the number of different words over the number of words. The last row cuts the validation text into pieces as long as a sample and averages over them.
Table(ch7_temperature_rows,
      ["temperature", "words", "real words", "distinct"], digits=2)

# %% [markdown]
# Real words make up {{ ch7_share[0.0]:.0%}} of the words at
# temperature 0, {{ ch7_share[0.5]:.0%}} at 0.5,
# {{ ch7_share[1.0]:.0%}} at 1 and {{ ch7_share[1.5]:.0%}} at 1.5,
# against {{ ch7_share["validation text"]:.0%}} for Shakespeare's own
# unseen lines (a word can be real and still absent from the training
# text: a name, a rare inflection). At temperature 0 the model always
# takes its likeliest character, and the likeliest continuation of a
# phrase leads back into the phrase: the words are real but few of them
# are distinct, {{ ch7_distinct[0.0]:.0%}} against
# {{ ch7_distinct["validation text"]:.0%}} in real text. At 1 the model
# draws from its own distribution, whose tail of unlikely characters is
# too fat for a model this small; at 1.5, flattened further, the tail
# breaks {{ 1 - ch7_share[1.5]:.0%}} of the words. The usual compromise
# sits in between, a temperature a little below 1, often with a top-k
# cut-off for the tail, as in the chapter's samples.

# %% [markdown]
# ### Exercise 7.5
#
# An exponential moving average of the weights, $\bar w \leftarrow
# \beta \bar w + (1 - \beta) w$ after every step, is a cheap way to
# average out the noise of the last steps (Polyak & Juditsky, 1992).
# The subclass keeps one average per decay next to the model, updates it
# after the step (outside the compiled function, so training itself is
# untouched), and at every evaluation swaps each average into the model,
# measures it, and swaps the weights back. The averages start at zero and
# are divided by $1 - \beta^t$ when used, the same bias correction as
# Adam's moments, so that they need no warm-up of their own.

# %%
class ch7_EMATrainer(Trainer):
    """A Trainer that keeps exponential moving averages of the weights,
    one per decay, and evaluates them next to the weights themselves."""

    def __init__(self, *args: object, decays: tuple[float, ...],
                 **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        zeros = tree_map(mx.zeros_like, self.model.parameters())
        self.averages = {decay: zeros for decay in decays}
        self.averaged_steps = 0
        self.ema_history = {"step": [], "weights": [],
                            **{decay: [] for decay in decays}}

    def one_step(self) -> None:
        super().one_step()
        weights = self.model.parameters()
        for decay, average in self.averages.items():
            self.averages[decay] = tree_map(
                lambda mean, w: decay * mean + (1 - decay) * w,
                average, weights)
        self.averaged_steps += 1
        mx.eval(self.averages)

    def averaged_weights(self, decay: float) -> dict:
        """The average with `decay`, corrected for its start at zero."""
        correction = 1 - decay ** self.averaged_steps
        return tree_map(lambda mean: mean / correction, self.averages[decay])

    def record_eval(self, tokens_per_second: float) -> None:
        super().record_eval(tokens_per_second)
        self.ema_history["step"].append(self.step)
        self.ema_history["weights"].append(self.history["val_loss"][-1])
        weights = self.model.parameters()
        for decay in self.averages:
            self.model.update(self.averaged_weights(decay))
            self.ema_history[decay].append(self.val_nats_per_char())
        self.model.update(weights)

# %% [markdown]
# Rather than train the baby run again from the start, the solution
# resumes the chapter's run from its checkpoint at step
# {{ ch7_ema_start:, }} and averages over the last
# {{ ch7_ema_config.steps - ch7_ema_start:, }} steps. The steps it
# leaves out are the earlier and worse ones; in an average kept over
# the whole run they would carry {{ ch7_left_out:.0%}} of the weight
# with $\beta = 0.999$ and pull it towards weights from a time when the
# loss was higher. Alongside the exercise's decay, a shorter memory,
# 0.99, for comparison.

# %%
ch7_ema_config = TrainConfig(**ch7_final_record["train"])
ch7_ema_start = (ch7_ema_config.steps * 3 // 4
                 // ch7_ema_config.checkpoint_every
                 * ch7_ema_config.checkpoint_every)
ch7_ema = ch7_EMATrainer(GPT(GPTConfig(**ch7_final_record["model"])),
                         ch7_ema_config, ch7_train_ids, ch7_val_ids, 1.0,
                         ch7_tokenizer.fingerprint(), log=None,
                         decays=(0.999, 0.99))
resume(ch7_ema, ch7_char_dir / f"step-{ch7_ema_start:07d}")
ch7_ema.run()
ch7_resume_gap = max(abs(ours - chapter) for ours, chapter in zip(
    ch7_ema.history["loss"], ch7_final_record["history"]["loss"]))
ch7_left_out = (0.999 ** (ch7_ema_config.steps - ch7_ema_start)
                - 0.999 ** ch7_ema_config.steps) \
    / (1 - 0.999 ** ch7_ema_config.steps)
ch7_ema_final = {name: values[-1]
                 for name, values in ch7_ema.ema_history.items()}
ch7_tie = 0.005


def ch7_verdict(decay: float) -> str:
    """How the average with `decay` compares with the last weights."""
    gain = ch7_ema_final["weights"] - ch7_ema_final[decay]
    if abs(gain) < ch7_tie:
        return "ties with"
    return "beats" if gain > 0 else "loses to"


ch7_ema_verdict = {decay: ch7_verdict(decay) for decay in (0.999, 0.99)}
print(f"largest difference from the chapter's losses: {ch7_resume_gap}")

# %%
#| echo: false
#| label: tbl-ch7-ema
#| tbl-cap: Validation loss (nats per character, on the validation slice) of the weights and of their moving averages over the last steps of the chapter's character run, at each of its evaluations.
Table(list(zip(*ch7_ema.ema_history.values())),
      ["step", "weights", "average, 0.999", "average, 0.99"], digits=3)

# %% [markdown]
# The resumed run retraces the chapter's: the largest difference between
# its losses and the chapter's is {{ ch7_resume_gap:.1g }}, so the last
# weights are the chapter's final model. At the end they score
# {{ ch7_ema_final["weights"]:.3f }} nats per character on the slice;
# the average with the exercise's decay, 0.999, scores
# {{ ch7_ema_final[0.999]:.3f }}, and the one with 0.99
# {{ ch7_ema_final[0.99]:.3f }}. So the 0.999 average
# {{ ch7_ema_verdict[0.999] }} the last weights and the 0.99 average
# {{ ch7_ema_verdict[0.99] }} them, where a tie means within
# {{ ch7_tie }} nats.
#
# An average helps when the weights at the end of a run are noisy, that
# is, when the learning rate is still large: it removes the jitter of
# the last steps without the cost of a smaller rate. The chapter's run
# ends with a cosine decay to a tenth of its peak, which already does
# most of that job, so there is little noise left to average and the
# gains, where there are any, are in the third decimal. The average
# also has a cost: with decay 0.999 its memory is about 1,000 steps,
# longer than the {{ ch7_ema_config.steps - ch7_ema_start }} steps it
# saw, so it is close to a plain mean of all of them, back to weights
# from a time when the loss was higher; the 0.99 average remembers only
# the last hundred or so. Averages pay off in long runs at a constant or
# slowly decaying rate, where they are standard; on a run that has
# already cooled down, a short memory is the one to keep.

# %% [markdown]
# ## Chapter 8
#
# The solutions use what chapter 8 exported to `mlxllm.train`: the memory
# estimate, the accumulating step, `CheckpointedBlock` and the trainer's
# pieces. Models are built from a fixed seed on random token windows,
# since none of the answers depends on the text.

# %%
import gc

import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlxllm.hardware import median_seconds
from mlxllm.model import GPT, Block, GPTConfig, causal_mask
from mlxllm.train import (
    CheckpointedBlock,
    StepFn,
    TrainConfig,
    language_model_loss,
    make_accumulating_step,
    make_optimizer,
    memory_estimate,
)

ch8_vocab = 65
ch8_budget = 0.75 * 16 * 2 ** 30


def ch8_batch(config: GPTConfig, size: int) -> tuple[mx.array, mx.array]:
    """Random windows and their next tokens, from a fixed seed."""
    ids = np.random.default_rng(0).integers(
        0, config.vocab_size, (size, config.context + 1)).astype(np.int32)
    return mx.array(ids[:, :-1]), mx.array(ids[:, 1:])

# %% [markdown]
# ### Exercise 8.1
#
# Add blocks until the estimate no longer fits the chapter's budget for
# a 16 GB Mac, three quarters of the memory.

# %%
def ch8_deepest(accumulation: int) -> int:
    """The most blocks of the full model's width whose float32 step with
    batches of 64 fits the 16 GB budget."""
    depth = 0
    while True:
        config = GPTConfig.full(ch8_vocab, n_layer=depth + 1)
        estimate = memory_estimate(config, 64, accumulation=accumulation)
        if sum(estimate.values()) > ch8_budget:
            return depth
        depth += 1


ch8_deepest_plain, ch8_deepest_split = ch8_deepest(1), ch8_deepest(8)
print(f"batch of 64: {ch8_deepest_plain} blocks; in 8 micro-batches: "
      f"{ch8_deepest_split} blocks")

# %% [markdown]
# {{ ch8_deepest_plain }} blocks fit with the whole batch at once, and
# {{ ch8_deepest_split }} with 8 micro-batches of 8. With accumulation the
# activations shrink eightfold and the limit moves to where the 16 (here
# 20, with the running sum) bytes per parameter and the remaining
# activations meet; each block adds $12d^2$ parameters, 1.8 million at
# this width, so both terms grow linearly with depth.
#
# ### Exercise 8.2
#
# Forgetting the division is the same as multiplying the mean gradient
# by $k$, which a `loss_and_grad` can do. One AdamW step with the right
# gradient and one with $k$ times it, from the same weights:

# %%
def ch8_scaled_loss_and_grad(model: GPT, factor: float):
    """The model's loss and its gradients multiplied by `factor`."""
    value_and_grad = nn.value_and_grad(model, language_model_loss)

    def loss_and_grad(inputs: mx.array, targets: mx.array):
        loss, grads = value_and_grad(model, inputs, targets)
        return loss, tree_map(lambda g: factor * g, grads)

    return loss_and_grad


ch8_parts = 4
ch8_small = GPTConfig.baby(ch8_vocab, n_layer=2)
ch8_config = TrainConfig(compile=False, warmup_steps=0)
ch8_after, ch8_norms = [], []
for ch8_factor in (1.0, ch8_parts):
    mx.random.seed(0)
    ch8_model = GPT(ch8_small)
    ch8_step = make_accumulating_step(
        ch8_model, make_optimizer(ch8_config), ch8_config, ch8_parts,
        ch8_scaled_loss_and_grad(ch8_model, ch8_factor))
    _, ch8_norm = ch8_step(*ch8_batch(ch8_small, 8))
    mx.eval(ch8_model.parameters())
    ch8_after.append(dict(tree_flatten(ch8_model.parameters())))
    ch8_norms.append(ch8_norm.item())
ch8_weight_gap = max(mx.abs(w - ch8_after[1][name]).max().item()
                     for name, w in ch8_after[0].items())
print(f"gradient norm {ch8_norms[0]:.3f} vs {ch8_norms[1]:.3f}; largest "
      f"weight difference {ch8_weight_gap:.1e}")

# %% [markdown]
# The weights after the step differ by {{ ch8_weight_gap:.0e}}: nothing.
# Adam divides the first moment by the square root of the second, so
# multiplying every gradient by the same factor cancels, except against
# the tiny $\epsilon$. What notices is everything that reads the
# gradient's size: the logged norm is {{ ch8_norms[1]:.2f }} instead of
# {{ ch8_norms[0]:.2f }}, and clipping at 1.0 now triggers on gradients
# $k$ times smaller than intended, which changes the relative weight of
# steps within Adam's averages. With plain SGD the step would simply be
# $k$ times too large.
#
# ### Exercise 8.3
#
# Only the blocks at even positions change class; the chapter's
# `measure_step` idea is repeated here in a few lines.

# %%
def ch8_measure(config: GPTConfig, batch_size: int,
                every: int | None) -> tuple[float, float]:
    """Peak MiB and median ms of a compiled step with every `every`-th
    block checkpointed (None: no block)."""
    gc.collect()
    floor = mx.get_active_memory()
    mx.random.seed(0)
    model = GPT(config)
    if every is not None:
        for block in model.blocks[::every]:
            block.__class__ = CheckpointedBlock
    train = TrainConfig()
    step: StepFn = make_accumulating_step(model, make_optimizer(train),
                                          train, 1)
    inputs, targets = ch8_batch(config, batch_size)
    mx.eval(step(inputs, targets), model.parameters())
    mx.reset_peak_memory()
    seconds = median_seconds(lambda: (step(inputs, targets),
                                      model.parameters()),
                             pick(smoke=1, book=3))
    return (mx.get_peak_memory() - floor) / 2 ** 20, 1000 * seconds


ch8_deep = GPTConfig.baby(ch8_vocab, n_layer=pick(smoke=2, book=8))
ch8_policy_rows = [(name, *ch8_measure(ch8_deep, pick(smoke=2, book=16),
                                       every))
                   for name, every in (("none", None), ("every other", 2),
                                       ("all", 1))]
Table(ch8_policy_rows, ["checkpointed blocks", "peak MiB", "ms per step"],
      digits=1)

# %% [markdown]
# Checkpointing half the blocks lands between the two, at
# {{ ch8_policy_rows[1][1]:.0f }} MiB against
# {{ ch8_policy_rows[0][1]:.0f }} and {{ ch8_policy_rows[2][1]:.0f }}: the
# plain blocks keep their activations, the checkpointed ones only their
# input, so the saving is about half. The time follows the recomputed
# share, with this machine's noise on top. The policy is a dial between
# memory and time, and the right setting is the cheapest one that fits.
#
# ### Exercise 8.4
#
# bfloat16 is the upper half of float32, so rounding is a question about
# the lower 16 bits. Add a random number below $2^{16}$ to them and cut
# them off: the value rounds up with probability equal to the part that
# is cut, which makes the rounding unbiased (Gupta et al., 2015, trained
# networks in 16-bit fixed point this way).

# %%
def ch8_stochastic_round(x: mx.array, key: mx.array) -> mx.array:
    """float32 -> bfloat16, rounding up or down at random so that the
    expected result equals x."""
    bits = x.astype(mx.float32).view(mx.uint32)
    noise = mx.random.randint(0, 1 << 16, x.shape, key=key).astype(
        mx.uint32)
    return ((bits + noise) & 0xFFFF0000).view(mx.float32).astype(
        mx.bfloat16)


ch8_steps, ch8_update = pick(smoke=200, book=1000), 1e-4
ch8_nearest = mx.ones((1000,), dtype=mx.bfloat16)
ch8_stochastic = mx.ones((1000,), dtype=mx.bfloat16)
ch8_key = mx.random.key(0)
for _ in range(ch8_steps):
    ch8_key, ch8_draw = mx.random.split(ch8_key)
    ch8_nearest = (ch8_nearest.astype(mx.float32) + ch8_update).astype(
        mx.bfloat16)
    ch8_stochastic = ch8_stochastic_round(
        ch8_stochastic.astype(mx.float32) + ch8_update, ch8_draw)
    mx.eval(ch8_nearest, ch8_stochastic)
ch8_expected = 1 + ch8_steps * ch8_update
ch8_mean = mx.mean(ch8_stochastic.astype(mx.float32)).item()
assert mx.all(ch8_nearest == 1).item()
assert abs(ch8_mean - ch8_expected) < 0.01
print(f"nearest: {ch8_nearest[0].item()}, stochastic: mean {ch8_mean:.4f}"
      f" (exact {ch8_expected:.4f})")

# %% [markdown]
# After {{ ch8_steps }} updates of $10^{-4}$, round-to-nearest leaves all
# 1,000 weights at exactly 1, while stochastic rounding brings their mean
# to {{ ch8_mean:.4f }}, against the exact {{ ch8_expected:.4f }}. Each
# weight moves in jumps of $2^{-7}$, now and then, but on average
# correctly; this is how fully bfloat16 training can keep learning
# without float32 master weights.
#
# ### Exercise 8.5
#
# The trouble was that the recomputation drew new masks. Draw both masks
# before the checkpointed function and pass them in as arguments: then
# the forward pass and its rerun multiply by the same numbers, and the
# masks are saved like any input, as booleans, one byte per number.

# %%
class ch8_MaskedBlock(Block):
    """A checkpointed Block whose dropout masks are drawn outside the
    recomputed function and passed in."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config)
        self.keep = 1 - config.dropout

    def forward(self, x: mx.array, mask: mx.array | None,
                keep_attention: mx.array, keep_ffn: mx.array) -> mx.array:
        scale = 1 / self.keep
        x = x + (keep_attention * self.attention(self.norm1(x), mask)) * scale
        return x + (keep_ffn * self.feed_forward(self.norm2(x))) * scale

    def __call__(self, x: mx.array, mask: mx.array | None = None) -> mx.array:
        if not self.training or self.keep == 1:
            return Block.__call__(self, x, mask)
        masks = [mx.random.bernoulli(self.keep, x.shape) for _ in range(2)]
        return nn.utils.checkpoint(self, self.forward)(x, mask, *masks)


mx.random.seed(0)
ch8_dropout_config = GPTConfig.baby(ch8_vocab, dropout=0.2)
ch8_masked = ch8_MaskedBlock(ch8_dropout_config)
ch8_x = mx.random.normal((2, 16, 128))
ch8_weights = mx.random.normal(ch8_x.shape)


def ch8_block_grads(call) -> dict:
    """Gradients of a weighted sum of the block's output, seed 7."""
    def loss(params: dict) -> mx.array:
        ch8_masked.update(params)
        return (call(ch8_x, causal_mask(16)) * ch8_weights).sum()

    mx.random.seed(7)
    return dict(tree_flatten(mx.grad(loss)(
        ch8_masked.trainable_parameters())))


ch8_plain_grads = ch8_block_grads(lambda x, m: Block.__call__(ch8_masked,
                                                               x, m))
ch8_fixed_grads = ch8_block_grads(ch8_masked)
ch8_mask_gap = max(mx.abs(g - ch8_plain_grads[name]).max().item()
                   for name, g in ch8_fixed_grads.items())
assert ch8_mask_gap < 1e-4
print(f"largest gradient difference with dropout 0.2: {ch8_mask_gap:.1e}")

# %% [markdown]
# Against the plain block, with the same seed and therefore the same
# masks, the largest gradient difference is now {{ ch8_mask_gap:.0e}},
# rounding, where the chapter's version was off by whole units. The
# masks cost $2d$ bytes per token and block, next to the float32
# activations, four bytes per number, that checkpointing saves. For `use_checkpointing` to accept dropout,
# `CheckpointedBlock` would adopt this `__call__`.
