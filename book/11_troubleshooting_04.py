# %% [markdown]
# # Bugs whose curves lie
#
# Every failure so far showed in the curves, once you knew what to look
# for. The bugs in this section make the curves look as good as they
# can, or better, and each of them is a line or two of code that is easy
# to get wrong and that reads as correct.
#
# ## Targets that are not shifted
#
# A language model predicts the token after each position, so the
# targets of a window are its inputs moved one place to the left. Forget
# the move, and the model is asked to predict the token it is reading.

# %%
#| echo: false
import dataclasses
import json
import shutil

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.book import artifact_path, pick
from mlxllm.cli import CommandError, load_model
from mlxllm.data import BatchSampler
from mlxllm.diagnose import character_lab, plot_runs, read_run
from mlxllm.generate import generate_tokens
from mlxllm.model import GPT
from mlxllm.tokenizer import CharTokenizer

lab = character_lab(artifact_path("11_troubleshooting_04/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))
control = read_run(artifact_path("11_troubleshooting/runs/control"))
baselines = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())

# %%


class UnshiftedSampler(BatchSampler):
    """The bug: targets equal to the inputs."""

    def sample(self) -> tuple[mx.array, mx.array]:
        inputs, _ = super().sample()
        return inputs, inputs


lab.run("unshifted", sampler_class=UnshiftedSampler)
unshifted = read_run(lab.root / "unshifted")
print(f"training loss {unshifted.history['loss'][-1]:.3f}, validation "
      f"{unshifted.history['val_loss'][-1]:.2f} nats/char")

# %% [markdown]
# The training loss falls to {{ unshifted.history['loss'][-1]:.3f }}
# nats per character within a few dozen steps: the model has learned to
# copy its input, which it can do perfectly. The validation loss, which
# chapter 7's `evaluate` computes with correctly shifted targets, says
# {{ unshifted.history['val_loss'][-1]:.1f }}, worse than a uniform
# guess. A training loss near zero on natural text is never good news:
# no model of Shakespeare gets anywhere close to it on text it has not
# memorised, and the best n-gram model of chapter 10 scores
# {{ baselines['kneser_ney']:.2f }}. When the training loss is far better than
# anything you expected, look for a leak of the answer into the input.
#
# ## A missing causal mask
#
# The mask of chapter 5 stops each position from attending to the ones
# after it. Leave it out and the model can read the next character
# straight from the window, through attention, in training and in
# evaluation alike, since both run the same model. It has to learn to,
# though, and in this run that takes a few hundred steps, so the run
# goes on for {{ unmasked.history['step'][-1]:.0f }}.

# %%
class UnmaskedGPT(GPT):
    """The bug: chapter 6's GPT with the causal mask left out."""

    def __call__(self, ids: mx.array) -> mx.array:
        positions = self.position_embedding(mx.arange(ids.shape[1]))
        x = self.dropout(self.token_embedding(ids) + positions)
        for block in self.blocks:
            x = block(x, None)
        return self.token_embedding.as_linear(self.norm(x))


mx.random.seed(lab.base.seed)
unmasked_trainer = lab.run("unmasked", model=UnmaskedGPT(lab.model_config),
                           steps=lab.base.steps * 5 // 2)
unmasked = read_run(lab.root / "unmasked")
val_steps = np.array(unmasked.history["eval_step"])
unmasked_val = np.array(unmasked.history["val_loss"])
at_control_end = unmasked_val[val_steps == lab.base.steps][0]
print(f"validation at step {lab.base.steps}: {at_control_end:.3f} "
      f"(control {control.history['val_loss'][-1]:.3f}); at step "
      f"{val_steps[-1]:.0f}: {unmasked_val[-1]:.3f} nats/char")

# %%
#| echo: false
#| label: fig-leaks
#| fig-cap: Two leaks of the answer into the input, beside the control. Targets not shifted, the training loss collapses at once and the validation loss climbs; no causal mask, the run looks healthy until the model finds the leak, and then both losses fall far below anything a model of this text can reach.
plot_runs({"targets not shifted": unshifted, "no causal mask": unmasked,
           "control": control})

# %% [markdown]
# For {{ lab.base.steps }} steps the run looks like the control, a
# little better: {{ at_control_end:.2f }} against
# {{ control.history['val_loss'][-1]:.2f }}. Then the model finds the
# leak and both losses fall off a cliff, to
# {{ unmasked_val[-1]:.2f }} nats per character of validation, because
# evaluation reads the future too. Nothing in the curves is wrong except
# that they are too good, and for the first part of the run not even
# that. Generation gives the bug away: there, the
# next character does not exist yet, and a model that learned to read it
# rather than to predict it has nothing to read. Here is its sample,
# drawn as the control's was in "Too small, too short":

# %%
prompt = lab.tokenizer.encode("ROMEO:\n")
ids = generate_tokens(unmasked_trainer.model, prompt,
                      pick(smoke=40, book=90), temperature=0.8, seed=0,
                      cache=False)
print("ROMEO:\n" + lab.tokenizer.decode(list(ids)))

# %% [markdown]
# ## A vocabulary that changed between training and sampling
#
# A character model's vocabulary is a list of characters, and an id is a
# position in that list. Chapter 3's `CharTokenizer` sorts the
# characters. A tokenizer written in a hurry might take them in the order
# a Python `set` yields them, and that order depends on the string
# hashes, which Python salts differently in every process unless
# `PYTHONHASHSEED` is set. The run that trained and the run that samples
# then disagree about which id is which character, and a good model
# writes nonsense. Here the control's ids are decoded both ways:

# %%
control_model, _ = load_model(artifact_path("11_troubleshooting/runs/control"))
hurried = CharTokenizer(set(lab.tokenizer.decode(
    list(range(lab.tokenizer.vocab_size)))))  # a set's order, this process
ids = prompt + list(generate_tokens(control_model, prompt,
                                    pick(smoke=40, book=90),
                                    temperature=0.8, seed=0))
print("--- sorted, as in training\n" + lab.tokenizer.decode(ids))
print("\n--- in a set's order\n" + hurried.decode(ids))

# %% [markdown]
# No curve shows this bug, because training never sees it: the run's
# loss and validation are the control's. The defence is to keep the
# tokenizer with the weights and check that they belong together, which
# `mlxllm` does: every run directory holds `tokenizer.txt`, every
# checkpoint records the tokenizer's SHA-256, and `load_model` refuses a
# pair that does not match.

# %%
copied = artifact_path("11_troubleshooting_04/wrong-tokenizer/run")
shutil.rmtree(copied.parent, ignore_errors=True)
shutil.copytree(artifact_path("11_troubleshooting/runs/control"), copied)
hurried.save(copied / "tokenizer.txt")
try:
    load_model(copied)
except CommandError as error:
    print(f"CommandError: {error}")

# %% [markdown]
# ## Padding counted in the loss
#
# Text often comes in pieces of different lengths: lines, documents,
# question-and-answer pairs. To stack pieces into one batch, each is
# padded to the window with a token that means "nothing here". The
# padding has to be left out of the loss, or the loss counts
# predictions such as "after padding comes padding", which the model
# learns in a few steps and gets right forever after. Here the baby
# model trains on single lines of the play, one per row, padded with
# one extra id, and the loss counts every position:

# %%
PAD = lab.tokenizer.vocab_size  # one id past the characters
NEWLINE = lab.tokenizer.encode("\n")[0]


class PaddedLines(BatchSampler):
    """One line of the text per row, from its start, padded with PAD."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int,
                 seed: int) -> None:
        super().__init__(tokens, batch_size, context, seed)
        self.ends = np.flatnonzero(tokens == NEWLINE) + 1
        self.starts = np.concatenate([[0], self.ends[:-1]])

    def sample(self) -> tuple[mx.array, mx.array]:
        lines = self.rng.integers(0, len(self.starts), self.batch_size)
        rows = np.full((self.batch_size, self.context + 1), PAD, np.int32)
        for row, line in enumerate(lines):
            text = self.tokens[self.starts[line]:self.ends[line]]
            rows[row, :len(text)] = text[:self.context + 1]
        rows = mx.array(rows)
        return rows[:, :-1], rows[:, 1:]


padded_config = dataclasses.replace(lab.model_config, vocab_size=PAD + 1)
padded_trainer = lab.run("padded", model=GPT(padded_config),
                         sampler_class=PaddedLines)
padded = read_run(lab.root / "padded")

# %% [markdown]
# The training loss this run logs ends at
# {{ padded.history['loss'][-1]:.2f }} nats per token, far below the
# control's {{ control.history['loss'][-1]:.2f }}. To see what it hides,
# score the trained model on lines of the validation text both ways:
# every position, as the training loss does, and only the positions
# whose target is a character.

# %%
def line_losses(model: GPT, sampler: PaddedLines,
                batches: int) -> tuple[float, float, float]:
    """Mean loss over every target, over the character targets only,
    and the share of targets that are padding."""
    total = characters = counted = real = 0.0
    for _ in range(batches):
        inputs, targets = sampler.sample()
        logits = model(inputs).astype(mx.float32)
        losses = nn.losses.cross_entropy(logits, targets)
        is_char = targets != PAD
        total += losses.sum().item()
        counted += losses.size
        characters += (losses * is_char).sum().item()
        real += is_char.sum().item()
    return total / counted, characters / real, 1 - real / counted


model = padded_trainer.model.eval()
val_lines = PaddedLines(lab.val_ids, 64, lab.model_config.context, seed=1)
all_loss, char_loss, pad_share = line_losses(model, val_lines,
                                             pick(smoke=2, book=10))
print(f"every position {all_loss:.2f}, characters only {char_loss:.2f} "
      f"nats; {pad_share:.0%} of the targets are padding")

# %% [markdown]
# {{ pad_share:.0%}} of the targets are padding, and the model predicts
# them almost for free, so the loss over every position,
# {{ all_loss:.2f }}, is mostly a measure of how much padding there is.
# Over the characters alone the same model scores
# {{ char_loss:.2f }}. On running text, the validation split that every
# other run here is scored on, it scores
# {{ padded.history['val_loss'][-1]:.2f }} against the control's
# {{ control.history['val_loss'][-1]:.2f }}: trained only on lines
# that start at a line's start, it never learned to continue text that
# starts anywhere. A loss that improves when you change how the data
# is batched, and not what the model is, should make you ask what it
# counts. The fix is a mask: compute the loss of every position, multiply
# by a mask that is 0 at padding, and divide by the number of ones.
# Fine-tuning, in a later chapter, needs exactly this, to train only on
# the answers of questions.
