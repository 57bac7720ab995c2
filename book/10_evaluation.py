# %% [markdown]
# # How good is it?
#
# Chapter 7 reports one number for the model it trains, the validation
# loss in nats per character, and you have watched it fall from about
# {{ np.log(unit_rows[0][1]):.1f }}, a uniform guess, to
# {{ unit_rows[0][5]:.2f }}. Nothing yet says whether that is good. Is it
# close to what a
# counting model gets from the same text? How sure is the third decimal?
# Where in the text does the loss go, and how much of what the model
# writes did it simply learn by heart?
#
# This chapter answers each question with a measurement. It starts with
# the units, so that a loss means the same thing whatever the tokenizer.
# Then it builds the baselines a language model has to beat, from a
# uniform guess to character n-grams with Kneser-Ney smoothing and the
# compressors in Python's standard library, all scored on the same
# validation split. Then it trains the book's own Shakespeare model, the
# longest run this book's build affords, and draws where its curve
# passes each baseline. The rest of the chapter takes that model apart:
# an interval for its loss and the spread from one seed to the next,
# its loss by position and by kind of character, whether its
# probabilities can be trusted, and how much of its writing it copied.
# On the map of chapter 1 this is the box after training: the
# measurements that tell you whether the loop worked. It all goes to
# `mlxllm.evaluate`, and to one command, `mlxllm eval`, that scores any
# checkpoint on any text.
#
# ## Units
#
# A language model's loss on a text is the mean of $-\ln p(x_t \mid
# x_{<t})$ over its tokens: the surprise, in nats, of each token given
# the ones before it. Three restatements of it are in common use.
#
# - **Bits** instead of nats: divide by $\ln 2$. A model that assigns
#   probability $p$ to what comes next can be turned into a code that
#   spends $-\log_2 p$ bits on it (Shannon, 1948; arithmetic coding
#   reaches that to within a few bits per message, Witten et al., 1987),
#   so the loss in bits is the size of the text compressed with the
#   model. That is why a compressor is a fair baseline.
# - **Perplexity**: $e^{\text{loss}}$, the number of equally likely
#   choices that would be just as surprising. A uniform guess over $V$
#   tokens has perplexity $V$.
# - **Per character** instead of per token: total nats over the
#   characters of the text. A token of a BPE model covers several
#   characters, so its loss per token is larger for the same text; only
#   the per-character figure compares models with different tokenizers.
#
# Chapter 7 trained two baby models that differ only in the tokenizer.
# Score both on the validation split and restate each number every way:

# %%
#| label: tbl-units
#| tbl-cap: Chapter 7's two baby models on the validation split, one loss restated five ways. Per token the BPE model looks far worse; per character it is the better of the two.
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.cli import load_model
from mlxllm.data import load_corpus, split_train_val
from mlxllm.train import evaluate

text = load_corpus()
train_text, val_text = split_train_val(text)
val_text = val_text[:pick(smoke=8192, book=None)]  # smoke: seconds
unit_rows = []
for name in ("baby-char", "baby-bpe"):
    folder = artifact_path(f"07_training/{name}/tokenizer.txt").parent
    model, tokenizer = load_model(folder)
    ids = np.array(tokenizer.encode(val_text))
    per_token = evaluate(model, ids, model.config.context)
    chars_per_token = len(val_text) / len(ids)
    per_char = per_token / chars_per_token
    unit_rows.append((name, tokenizer.vocab_size, chars_per_token,
                      per_token, np.exp(per_token), per_char,
                      per_char / np.log(2), np.exp(per_char)))
better = min(unit_rows, key=lambda row: row[5])[0]
unit_verdict = f"{better} is the better model of text"
Table(unit_rows, ["model", "vocab", "chars/token", "nats/token",
                  "ppl/token", "nats/char", "bits/char", "ppl/char"],
      digits=2)

# %% [markdown]
# Per token, the BPE model looks much worse: its perplexity is
# {{ unit_rows[1][4]:.0f }} against the character model's
# {{ unit_rows[0][4]:.1f }}. But each of its tokens stands for
# {{ unit_rows[1][2]:.1f }} characters, and per character the two are
# {{ abs(unit_rows[1][5] - unit_rows[0][5]):.2f }} nats apart:
# {{ unit_verdict }}. That gap is not the tokenizer's alone. Both models
# read {{ model.config.context }} tokens at a time, in batches of the
# same size, for the same number of steps, so the BPE model saw about
# {{ unit_rows[1][2]:.1f }} times as many characters, in each context (about
# {{ model.config.context * unit_rows[1][2]:.0f }} against
# {{ model.config.context }}) and in its training as a whole, and its
# embedding table has {{ unit_rows[1][1]:, }} rows where the character
# model's has {{ unit_rows[0][1] }}. From here
# on every loss in the book is per character, and a figure in bits per
# character, like a compressor's, is the same number divided by
# $\ln 2 \approx 0.693$. (A character model's nats per token are already
# per character, which is why chapter 7's log could print one number
# for both.)
