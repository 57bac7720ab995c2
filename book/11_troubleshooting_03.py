# %% [markdown]
# # Gibberish, and a model that learns the text by heart
#
# The third row of the table says that a model writing gibberish should
# be made larger. Sometimes. Gibberish has at least three causes: a
# model too small for the text, a model trained too briefly, and a good
# model sampled badly; and the opposite of gibberish, a model that fits
# its training text at the expense of every other text, is a failure
# too.
#
# ## Too small, too short
#
# The same prompt, sampled the same way ({{ sample_chars }} characters
# at temperature {{ sample_temperature }}, from the same seed) from four models that differ in size and in
# training: a baby model of one layer and
# {{ tiny_config.n_embd }} dimensions, the control of this chapter,
# chapter 7's baby model after its full run, and chapter 10's small
# model.

# %%
#| echo: false
#| default_exp diagnose
import dataclasses

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.cli import load_model
from mlxllm.diagnose import character_lab, plot_runs, read_run
from mlxllm.diagnose import running_median
from mlxllm.generate import generate_tokens
from mlxllm.model import GPT, count_parameters
from mlxllm.train import evaluate

lab = character_lab(artifact_path("11_troubleshooting_03/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))

# %%
tiny_config = dataclasses.replace(lab.model_config, n_layer=1, n_head=2,
                                  n_embd=32)
lab.run("tiny", model=GPT(tiny_config))
folders = {"tiny": lab.root / "tiny",
           "baby": artifact_path("11_troubleshooting/runs/control"),
           "baby, chapter 7": artifact_path(
               "07_training/baby-char/tokenizer.txt").parent,
           "small, chapter 10": artifact_path(
               "10_evaluation_02/small/tokenizer.txt").parent}
prompt = lab.tokenizer.encode("ROMEO:\n")
sample_chars, sample_temperature = pick(smoke=40, book=90), 0.8
samples, sweep_rows = {}, []
for name, folder in folders.items():
    model, tokenizer = load_model(folder)
    steps = int(read_run(folder).history["step"][-1])
    samples[name] = tokenizer.decode(list(generate_tokens(
        model, prompt, sample_chars, temperature=sample_temperature,
        seed=0)))
    sweep_rows.append((name, count_parameters(model.config), steps,
                       evaluate(model, lab.val_ids, model.config.context)))
for (name, _, steps, _), sample in zip(sweep_rows, samples.values()):
    print(f"--- {name}, {steps:,} steps\nROMEO:\n{sample.strip()}\n")

# %%
#| echo: false
#| label: tbl-sweep
#| tbl-cap: The four models of the samples above, scored on the laboratory's validation text.
Table(sweep_rows, ["model", "parameters", "steps", "validation nats/char"],
      digits=3)

# %% [markdown]
# Read the samples from the top. The tiny model, with
# {{ sweep_rows[0][1]:, }} parameters, has learned the alphabet of the
# text, its capitals and punctuation, and roughly how long a word is.
# The control, with {{ sweep_rows[1][1] / sweep_rows[0][1]:.0f }} times
# as many parameters and the same {{ sweep_rows[1][2] }} steps, writes
# syllables that could be English, a few real words, and lines of about
# the right length. Chapter 7's run of the same model,
# {{ sweep_rows[2][2] / sweep_rows[1][2]:.0f }} times longer, writes
# mostly real words; chapter 10's model, wider and longer again, adds a
# speaker's name and phrases that nearly parse. Size and training time
# both matter, and the loss says which limit you are against. While it
# still falls when the schedule ends, train longer; once it has
# flattened, a bigger model is the next step. A later chapter puts
# numbers on that trade.
#
# ## A good model, sampled badly
#
# Gibberish can also come from the sampler. Here is chapter 10's model,
# the best the book trains, at three temperatures:

# %%
small, _ = load_model(folders["small, chapter 10"])
temperatures = (0.5, 1.0, 2.0)
for temperature in temperatures:
    text_out = lab.tokenizer.decode(list(generate_tokens(
        small, prompt, pick(smoke=40, book=120), temperature=temperature,
        seed=0)))
    print(f"--- temperature {temperature}\nROMEO:\n{text_out.strip()}\n")

# %% [markdown]
# At temperature 2 the best model of the book writes about as badly as
# the tiny one: dividing the logits by 2 flattens the distribution so
# much that rare characters, which the model rightly gives tiny
# probabilities, are drawn every few letters. Before you enlarge a model whose samples are
# bad, sample it at a temperature below 1, or greedily; if the text
# improves, the model was fine and the sampler was not. Chapter 9's
# samplers are the tools.
#
# ## Fitting a small text too well
#
# The opposite failure is a model that fits its training text too well.
# Give the baby model only the first {{ tiny_chars:, }} characters of
# the training split, so that the laboratory's
# {{ lab.base.steps }} steps pass over it about {{ passes:.0f }} times,
# and evaluate more often. Then train it again with dropout
# (Srivastava et al., 2014) at {{ dropout }}, which zeroes that share of
# the activations at random in every training step.

# %%
tiny_chars, dropout = 2000, 0.2
small_text = dataclasses.replace(
    lab, root=artifact_path("11_troubleshooting_03/small-text"),
    train_ids=lab.train_ids[:tiny_chars],
    base=dataclasses.replace(lab.base,
                             eval_every=max(1, lab.base.steps // 20)))
passes = (lab.base.steps * lab.base.batch_size * lab.model_config.context
          / tiny_chars)
small_text.run("no-dropout")
small_text.run("dropout", model=GPT(dataclasses.replace(
    lab.model_config, dropout=dropout)))
overfit = {name: read_run(small_text.root / name)
           for name in ("no-dropout", "dropout")}
fit = {}  # run: (best validation, its step, last validation, training)
for name, run in overfit.items():
    val = np.array(run.history["val_loss"])
    best = int(np.argmin(val))
    fit[name] = (val[best], run.history["eval_step"][best], val[-1],
                 running_median(run.history["loss"])[-1])
    print(f"{name:10}  best validation {fit[name][0]:.3f} at step "
          f"{fit[name][1]:.0f}, last {fit[name][2]:.3f}; training loss "
          f"{fit[name][3]:.3f}")

# %%
#| echo: false
#| label: fig-overfit
#| fig-cap: The baby model on a training text of two thousand characters, without and with dropout, beside the control trained on the whole training split. The training loss keeps falling while the validation loss (dots) turns up, with dropout too.
plot_runs({"control, whole text": read_run(folders["baby"]), **overfit},
          loss_limits=(1.5, 3.6))

# %% [markdown]
# Without dropout the training loss falls to
# {{ fit['no-dropout'][3]:.2f }} while the validation loss bottoms out at
# {{ fit['no-dropout'][0]:.2f }} at step {{ fit['no-dropout'][1]:.0f }}
# and climbs back to {{ fit['no-dropout'][2]:.2f }}: from that step on,
# the model fits the particulars of its {{ tiny_chars:, }} characters
# better and everything else worse. It has only begun to learn them by
# heart, and a longer run would go further. The gap between the two
# curves, not either curve alone, is the signature. Dropout did not help
# here: its validation loss turns up too, from
# {{ fit['dropout'][0]:.2f }} at step {{ fit['dropout'][1]:.0f }} to
# {{ fit['dropout'][2]:.2f }}, no better than without it. (Its training
# loss is measured with dropout switched on, so it does not compare with
# the other run's.) On a text this small the fix is the control's: more
# text. On the whole training split the same model and steps reach
# {{ read_run(folders['baby']).history['val_loss'][-1]:.2f }}. When more
# text is not to be had, keep the checkpoint with the best validation
# loss, and stop there.
