# %% [markdown]
# # Chapter 7
#
# The solutions train with the chapter's own `Trainer`, imported from
# `mlxllm.train`, and read the two runs the chapter left in its build
# directory with `mlxllm.checkpoint`: the character and the BPE baby
# models, with their histories and checkpoints. To keep the appendix within minutes, every new run
# is measured on the first {{ len(val_ids) - 1:, }} validation ids
# rather than all of them, and the book profile shortens the runs of
# exercises 7.1 and 7.3 (the `full` profile runs the lengths the
# exercises ask for).

# %%
import math
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from mlxllm.book import Table, artifact_path, pick
from mlxllm.data import encode_splits, load_corpus, split_train_val
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint, resume
from mlxllm.generate import generate
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import load_tokenizer
from mlxllm.train import StepFn, Trainer, TrainConfig, TrainingDiverged

text = load_corpus()
train_text, val_text = split_train_val(text)
char_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
bpe_dir = artifact_path("07_training/baby-bpe/tokenizer.txt").parent
token_cache = artifact_path("07_training/tokens")
tokenizer = load_tokenizer(char_dir / "tokenizer.txt")
train_ids, all_val = encode_splits(tokenizer, text, token_cache)
val_ids = all_val[:pick(smoke=2049, book=16385)]


def train(config: TrainConfig, trainer_class: type = Trainer,
          until: int | None = None) -> Trainer:
    """A baby character model, from the same seed every time, trained
    by `trainer_class` to step `until` (default: the end)."""
    mx.random.seed(0)
    model = GPT(GPTConfig.baby(tokenizer.vocab_size))
    trainer = trainer_class(model, config, train_ids, val_ids,
                            1.0, log=None)
    trainer.run(until)
    return trainer


def smooth(losses: list[float], window: int) -> np.ndarray:
    """The moving average of `losses` over `window` steps."""
    window = min(window, len(losses))
    return np.convolve(losses, np.ones(window) / window, mode="valid")

# %% [markdown]
# ## Exercise 7.1
#
# `Trainer` builds its optimizer with `make_optimizer` and then its step
# with `build_step`; a subclass that switches the correction off between
# the two is all the exercise needs. Four runs, from the same seed and on
# the same batches: with and without warm-up, with and without the
# correction.

# %%
class UncorrectedTrainer(Trainer):
    """A Trainer whose AdamW skips bias correction (MLX's default)."""

    def build_step(self) -> StepFn:
        self.optimizer.bias_correction = False
        return super().build_step()


bias_steps = pick(smoke=6, book=100, full=300)
bias_runs = {}
for warmup in (bias_steps // 3, 0):
    bias_config = TrainConfig(steps=bias_steps,
                              warmup_steps=warmup,
                              eval_every=bias_steps)
    for trainer_class, correction in ((Trainer, "on"),
                                      (UncorrectedTrainer, "off")):
        name = (f"warm-up {'on' if warmup else 'off'}, "
                f"correction {correction}")
        bias_runs[name] = train(bias_config, trainer_class)
bias_val = {name: run.history["val_loss"][-1]
            for name, run in bias_runs.items()}
excess = max((1 - 0.9 ** step) / math.sqrt(1 - 0.99 ** step)
             for step in range(1, bias_steps + 1))
bias_baseline = "warm-up on, correction on"
bias_spread = max(bias_val.values()) - min(bias_val.values())
bias_worst = max(bias_val, key=bias_val.get)
bias_best = min(bias_val, key=bias_val.get)
bias_lead = max(
    smooth(np.array(bias_runs[bias_baseline].history["loss"])
           - run.history["loss"], 10).max()
    for run in bias_runs.values())
print({name: round(loss, 3) for name, loss in bias_val.items()})

# %%
#| echo: false
#| label: fig-ch7-bias
#| fig-cap: Training loss of three runs minus that of the run with both warm-up and bias correction, step by step on the same batches (moving average over 10 steps). Below zero, the run is ahead.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
baseline = np.array(bias_runs[bias_baseline].history["loss"])
for (name, run), style in zip(bias_runs.items(),
                              ("-", "--", "-.", ":")):
    if name == bias_baseline:
        continue
    curve = smooth(np.array(run.history["loss"])
                   - baseline, 10)
    ax.plot(np.arange(len(curve)) + len(baseline)
            - len(curve) + 1, curve, style, label=name)
ax.axhline(0, color="0.5", linewidth=0.8)
ax.set_xlabel("step")
ax.set_ylabel("loss difference (nats/char)")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# At the chapter's peak rate, 0.001, none of the four suffers. In the
# first steps every other run is ahead of the one with both warm-up and
# correction, by up to {{ bias_lead:.2f }} nats (@fig-ch7-bias), and
# after {{ bias_steps }} steps all four are within
# {{ bias_spread:.3f }} nats per character of each other on the
# validation slice, from {{ bias_val[bias_best]:.3f }}
# ("{{ bias_best }}") to {{ bias_val[bias_worst]:.3f }}
# ("{{ bias_worst }}"). A warm-up costs early progress, and a
# missing correction acts as a larger early rate: up to
# {{ excess:.1f }} times the nominal one (@fig-bias-correction), so
# about {{ 1e-3 * excess:.1e }} for a few dozen steps, well inside
# the constant {{ best_rate:g }} that exercise 7.3 finds this model
# tolerates. Both safeguards earn their place nearer the edge of
# stability: with a peak rate close to that limit, the uncorrected,
# unwarmed first steps are the ones that would cross it.
#
# ## Exercise 7.2
#
# The chapter's runs saved their histories in their checkpoints. A step
# feeds {{ char_record["train"]["batch_size"] }} windows of 64 tokens;
# a character token is one character of training text and a BPE token
# {{ bpe_chars_per_token:.2f }} of them on average, so the characters
# seen are the step times the tokens per step times the characters per
# token. (Chapter 7 quotes {{ bpe_val_chars_per_token:.2f }}, the ratio
# on the validation text, which its loss per character divides by. The
# tokenizer, trained on the training split, packs that split a little
# tighter, as the assertion checks.)

# %%
def by_characters(run_dir: Path) -> tuple[dict, np.ndarray, float, float]:
    """A chapter-7 run's last record, the characters of training text it
    had seen at each evaluation, and its characters per token on the
    training and on the validation text."""
    record, _, _ = read_checkpoint(latest_checkpoint(run_dir))
    tokenizer = load_tokenizer(run_dir / "tokenizer.txt")
    train_ids, val_token_ids = encode_splits(tokenizer, text, token_cache)
    chars_per_token = len(train_text) / len(train_ids)
    tokens_per_step = (record["train"]["batch_size"]
                       * record["model"]["context"])
    steps = np.array(record["history"]["eval_step"])
    return (record, steps * tokens_per_step * chars_per_token,
            chars_per_token, len(val_text) / len(val_token_ids))


char_record, char_seen, _, _ = by_characters(char_dir)
bpe_record, bpe_seen, bpe_chars_per_token, bpe_val_chars_per_token = \
    by_characters(bpe_dir)
assert bpe_val_chars_per_token < bpe_chars_per_token
char_curve = char_record["history"]["val_loss"]
bpe_curve = bpe_record["history"]["val_loss"]
bpe_at_char_end = float(np.interp(char_seen[-1], bpe_seen,
                                  bpe_curve))
leader = ("character" if char_curve[-1] < bpe_at_char_end
          else "BPE")
bpe_steps = bpe_record["train"]["steps"]
bpe_step_at_char_end = (char_seen[-1] / bpe_seen[-1]
                        * bpe_steps)
bpe_rate_at_char_end = bpe_record["history"]["learning_rate"][
    int(bpe_step_at_char_end) - 1]

# %%
#| echo: false
#| label: fig-ch7-per-char
#| fig-cap: Validation loss of the chapter's two baby runs against the characters of training text they had seen. The BPE run reads more text per step, so its curve stretches further right.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
ax.plot(char_seen / 1e6, char_curve, "o-", label="characters")
ax.plot(bpe_seen / 1e6, bpe_curve, "s--",
        label=f"{bpe_record['model']['vocab_size']:,} BPE ids")
ax.set_xlabel("training text seen (millions of characters)")
ax.set_ylabel("validation loss (nats/char)")
ax.legend()
fig.tight_layout()

# %% [markdown]
# Per step, the BPE model reads {{ bpe_chars_per_token:.1f }} times
# as much text. Per character read, compare the two at the
# {{ char_seen[-1] / 1e6:.2f }} million characters the character
# model saw in its whole run: there the character model is at
# {{ char_curve[-1]:.2f }} nats per character and the BPE model, read
# off its curve between two evaluations, at
# {{ bpe_at_char_end:.2f }}. Per character of training text, the
# {{ leader }} model is ahead.
#
# The comparison at equal text is not a comparison at equal schedule,
# though. The BPE run had read that much text by step
# {{ bpe_step_at_char_end:,.0f }} of its {{ bpe_steps:, }}, with
# its learning rate still at {{ bpe_rate_at_char_end:.1e }}, while
# the character run had finished its cosine decay to
# {{ char_record["train"]["min_learning_rate"]:.0e }}, and a run that
# has cooled down scores lower than one still at a high rate. To compare
# tokenizers per character fairly, give both runs the same characters of
# text, not the same steps.

# %% [markdown]
# ## Exercise 7.3
#
# A constant rate is a `TrainConfig` without warm-up whose floor equals
# its peak. What counts as failing needs a definition. A rate can fail
# loudly, the loss climbing or turning into `nan`, or quietly, the model
# settling at the loss of a model that ignores its context and only
# knows how often each character occurs ({{ unigram:.2f }} nats per
# character: the entropy of the training text's character frequencies,
# which exercise 1.2 finds at temperature 1). So a run fails if its
# {{ window }}-step moving average climbs {{ margin }} nats above
# its lowest point so far, or is still within {{ margin }} nats of
# that context-free loss after {{ patience }} steps.
#
# The search starts high and halves the rate until a run gets through
# {{ lr_steps }} steps without failing. Starting high is the cheap
# direction: a rate that is too large shows it early and its run stops
# there; only the survivor runs to the end.

# %%
lr_steps = pick(smoke=8, book=240, full=500)
window = pick(smoke=4, book=lr_steps // 10)
patience = pick(smoke=lr_steps, book=lr_steps // 3)
margin = 0.1
counts = np.bincount(train_ids)
frequencies = counts[counts > 0] / counts.sum()
unigram = float(-(frequencies * np.log(frequencies)).sum())


def fails(losses: list[float]) -> bool:
    """Whether the smoothed loss is not finite, has climbed clearly above
    its minimum, or has stalled at the context-free loss."""
    curve = smooth(losses, window)
    climbed = curve[-1] > curve.min() + margin
    stalled = (len(losses) > patience
               and curve[-1] > unigram - margin)
    return bool(not np.isfinite(curve[-1]) or climbed or stalled)


def constant_rate(rate: float) -> tuple[Trainer, bool]:
    """Train at a constant rate, checking every window; stop at a
    failure. Returns the trainer and whether the run failed."""
    config = TrainConfig(steps=lr_steps, warmup_steps=0,
                         learning_rate=rate, min_learning_rate=rate,
                         eval_every=lr_steps)
    trainer = train(config, until=0)
    try:
        while trainer.step < lr_steps:
            trainer.run(min(trainer.step + window, lr_steps))
            if fails(trainer.history["loss"]):
                return trainer, True
    except TrainingDiverged:  # the loss turned inf or NaN: stopped
        return trainer, True
    return trainer, False


constant_runs = {}
for rate in pick(smoke=(6.4e-2, 1e-3),
                 book=(3.2e-2, 1.6e-2, 8e-3, 4e-3, 2e-3, 1e-3)):
    trainer, failed = constant_rate(rate)
    constant_runs[rate] = trainer
    outcome = f"failed at step {trainer.step}" if failed \
        else "trained"
    print(f"rate {rate:g}: {outcome}")
    if not failed:
        break
assert not failed, "no rate trained; extend the search downwards"
best_rate = rate
schedule_run = train(TrainConfig(steps=lr_steps,
                                 warmup_steps=lr_steps // 5))
constant_val = constant_runs[best_rate].history["val_loss"][-1]
schedule_val = schedule_run.history["val_loss"][-1]

# %%
#| echo: false
#| label: fig-ch7-constant
#| fig-cap: Training loss (moving average) at constant learning rates, each stopped when it failed, and the chapter's warm-up and cosine schedule with a peak of 0.001. The dotted line is the loss of a model that ignores its context.
fig, ax = plt.subplots(figsize=(5.5, 2.8))
for rate, trainer in constant_runs.items():
    curve = smooth(trainer.history["loss"], window)
    ax.plot(np.arange(len(curve)) + window, curve,
            label=f"constant {rate:g}")
curve = smooth(schedule_run.history["loss"], window)
ax.plot(np.arange(len(curve)) + window, curve, "k--",
        label="schedule, peak 0.001")
ax.axhline(unigram, color="0.5", linestyle=":", linewidth=1)
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats/char)")
ax.legend(fontsize=7)
fig.tight_layout()

# %% [markdown]
# The largest constant rate that trained is {{ best_rate:g }}, to
# within the factor of two of the search:
# {{ best_rate / 1e-3:.0f }} times the schedule's peak. Training at
# it is a low bar, though. After {{ lr_steps }} steps the run is at
# {{ constant_val:.3f }} nats per character on the validation slice,
# and the schedule at {{ schedule_val:.3f }},
# {{ constant_val - schedule_val:.2f }} nats lower. At the edge
# of stability every step overshoots; the loss does not climb, but it
# falls slowly (@fig-ch7-constant). The largest rate that
# survives is not the best one, and the best schedule starts well below
# it, warms up to its peak, and decays from there.
#
# ## Exercise 7.4
#
# The final character model is the chapter's last checkpoint. Each
# temperature writes {{ sample_length }} characters after the same
# prompt; a word is anything between spaces or line breaks, punctuation
# included, and counts as real if the training text, split the same way,
# contains it. As a yardstick, the same share for the validation text,
# which is real Shakespeare the model never saw.

# %%
final_record, final_weights, _ = read_checkpoint(
    latest_checkpoint(char_dir))
final_model = GPT(GPTConfig(**final_record["model"]))
final_model.load_weights(list(final_weights.items()))
train_words = set(train_text.split())
sample_length = pick(smoke=80, book=800)


def real_share(words: list[str]) -> float:
    """The share of `words` that occur in the training text."""
    return float(np.mean([word in train_words for word in words]))


prompt = tokenizer.encode("ROMEO:\n")
temperature_rows, samples = [], {}
for temperature in (0.0, 0.5, 1.0, 1.5):
    ids = generate(final_model, prompt, sample_length,
                   temperature=temperature, seed=3)
    samples[temperature] = tokenizer.decode(ids[len(prompt):])
    words = samples[temperature].split()
    temperature_rows.append(
        [temperature, len(words), real_share(words),
         len(set(words)) / len(words)])
val_pieces = [val_text[start:start + sample_length].split()
              for start in range(0, len(val_text) - sample_length,
                                 sample_length)]
temperature_rows.append(
    ["validation text", round(np.mean([len(piece)
                                       for piece in val_pieces])),
     real_share(val_text.split()),
     np.mean([len(set(piece)) / len(piece) for piece in val_pieces])])
share = {row[0]: row[2] for row in temperature_rows}
distinct = {row[0]: row[3] for row in temperature_rows}
for temperature in (0.0, 1.5):
    print(f"--- temperature {temperature}")
    print(samples[temperature][:160])

# %%
#| echo: false
#| label: tbl-ch7-temperature
#| tbl-cap: Samples of the final character model at four temperatures. Real words are those that occur in the training text; distinct is the number of different words over the number of words. The last row cuts the validation text into pieces as long as a sample and averages over them.
Table(temperature_rows,
      ["temperature", "words", "real words", "distinct"], digits=2)

# %% [markdown]
# Real words make up {{ share[0.0]:.0%}} of the words at
# temperature 0, {{ share[0.5]:.0%}} at 0.5,
# {{ share[1.0]:.0%}} at 1 and {{ share[1.5]:.0%}} at 1.5,
# against {{ share["validation text"]:.0%}} for Shakespeare's own
# unseen lines (a word can be real and still absent from the training
# text: a name, a rare inflection). At temperature 0 the model always
# takes its likeliest character, and the likeliest continuation of a
# phrase leads back into the phrase: the words are real but few of them
# are distinct, {{ distinct[0.0]:.0%}} against
# {{ distinct["validation text"]:.0%}} in real text. At 1 the model
# draws from its own distribution, whose tail of unlikely characters is
# too fat for a model this small; at 1.5, flattened further, the tail
# breaks {{ 1 - share[1.5]:.0%}} of the words. The usual compromise
# sits in between, a temperature a little below 1, often with a top-k
# cut-off for the tail, as in the chapter's samples.

# %% [markdown]
# ## Exercise 7.5
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
class EMATrainer(Trainer):
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
# {{ ema_start:, }} and averages over the last
# {{ ema_config.steps - ema_start:, }} steps. The steps it
# leaves out are the earlier and worse ones; in an average kept over
# the whole run they would carry {{ left_out:.0%}} of the weight
# with $\beta = 0.999$ and pull it towards weights from a time when the
# loss was higher. Alongside the exercise's decay, a shorter memory,
# 0.99, for comparison.

# %%
ema_config = TrainConfig(**final_record["train"])
ema_start = (ema_config.steps * 3 // 4
             // ema_config.checkpoint_every
             * ema_config.checkpoint_every)
ema = EMATrainer(GPT(GPTConfig(**final_record["model"])),
                 ema_config, train_ids, val_ids, 1.0,
                 tokenizer.fingerprint(), log=None,
                 decays=(0.999, 0.99))
resume(ema, char_dir / f"step-{ema_start:07d}")
ema.run()
resume_gap = max(abs(ours - chapter) for ours, chapter in zip(
    ema.history["loss"], final_record["history"]["loss"]))
left_out = (0.999 ** (ema_config.steps - ema_start)
            - 0.999 ** ema_config.steps) \
    / (1 - 0.999 ** ema_config.steps)
ema_final = {name: values[-1]
             for name, values in ema.ema_history.items()}
tie = 0.005


def verdict(decay: float) -> str:
    """How the average with `decay` compares with the last weights."""
    gain = ema_final["weights"] - ema_final[decay]
    if abs(gain) < tie:
        return "ties with"
    return "beats" if gain > 0 else "loses to"


ema_verdict = {decay: verdict(decay) for decay in (0.999, 0.99)}
print(f"largest difference from the chapter's losses: {resume_gap}")

# %%
#| echo: false
#| label: tbl-ch7-ema
#| tbl-cap: Validation loss (nats per character, on the validation slice) of the weights and of their moving averages over the last steps of the chapter's character run, at each of its evaluations.
Table(list(zip(*ema.ema_history.values())),
      ["step", "weights", "average, 0.999", "average, 0.99"], digits=3)

# %% [markdown]
# The resumed run retraces the chapter's: the largest difference between
# its losses and the chapter's is {{ resume_gap:.1g }}, so the last
# weights are the chapter's final model. At the end they score
# {{ ema_final["weights"]:.3f }} nats per character on the slice;
# the average with the exercise's decay, 0.999, scores
# {{ ema_final[0.999]:.3f }}, and the one with 0.99
# {{ ema_final[0.99]:.3f }}. So the 0.999 average
# {{ ema_verdict[0.999] }} the last weights and the 0.99 average
# {{ ema_verdict[0.99] }} them, where a tie means within
# {{ tie }} nats.
#
# An average helps when the weights at the end of a run are noisy, that
# is, when the learning rate is still large: it removes the jitter of
# the last steps without the cost of a smaller rate. The chapter's run
# ends with a cosine decay to a tenth of its peak, which already does
# most of that job, so there is little noise left to average and the
# gains, where there are any, are in the third decimal. The average
# also has a cost: with decay 0.999 its memory is about 1,000 steps,
# longer than the {{ ema_config.steps - ema_start }} steps it
# saw, so it is close to a plain mean of all of them, back to weights
# from a time when the loss was higher; the 0.99 average remembers only
# the last hundred or so. Averages pay off in long runs at a constant or
# slowly decaying rate, where they are standard; on a run that has
# already cooled down, a short memory is the one to keep.
