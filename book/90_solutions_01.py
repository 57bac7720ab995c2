# %% [markdown]
# # Chapter 1
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
# ## Exercise 1.1
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
# ## Exercise 1.2
#
# Dividing logits by a temperature $\tau$ before the softmax gives
# $p_\tau(c) \propto p(c)^{1/\tau}$. Its entropy, the loss a model would get
# on text drawn from its own distribution, shows what temperature does.

# %%
#| label: tbl-solution-1-2
#| tbl-cap: Entropy and perplexity of the model's next-character distribution at each temperature.
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
# ## Exercise 1.3
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
# ## Exercise 1.4
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
# ## Exercise 1.5
#
# Time one forward and backward pass, including the parameter gradients as
# in training, of the attention layer and of the MLP at growing contexts.

# %%
#| label: tbl-solution-1-5
#| tbl-cap: Forward and backward time of the attention layer and of the MLP as the context grows.
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
# ## Exercise 1.6
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
#| label: tbl-solution-1-6
#| tbl-cap: The overfitted model's confidence in its top choice and how often that choice is right, on its training text and on new text.
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
