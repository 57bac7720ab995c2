# %% [markdown]
# # The book's Shakespeare model
#
# The baselines give the numbers to beat. This section trains the model
# that has to beat them: the `small` preset of chapter 7's `preset()`,
# the largest run this book's build affords on its 2-core CPU, and the
# model that the rest of the book fine-tunes and ships. It is chapter 7's
# GPT, wider, with twice the context and {{ book_tokens / baby_tokens:.1f }}
# times the training tokens.

# %%
import json
import os
import time

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint, resume
from mlxllm.data import encode_splits, load_corpus, split_train_val
from mlxllm.hardware import median_seconds
from mlxllm.model import GPT, GPTConfig, count_parameters
from mlxllm.model import train_flops_per_token
from mlxllm.tokenizer import CharTokenizer
from mlxllm.train import Trainer, TrainConfig, make_optimizer, make_step
from mlxllm.train import preset

text = load_corpus()
train_text, val_text = split_train_val(text)
tokenizer = CharTokenizer.train(text)
train_ids, all_val_ids = encode_splits(tokenizer, text,
                                       artifact_path("10_evaluation_02/tokens"))
val_ids = all_val_ids[:pick(smoke=4096, book=len(all_val_ids))]
model_config, book_config = preset("small", tokenizer.vocab_size)
print(f"{model_config.n_layer} layers x {model_config.n_head} heads x "
      f"{model_config.n_embd} dims, context {model_config.context}, "
      f"dropout {model_config.dropout}")
print(f"{book_config.steps:,} steps of {book_config.batch_size} windows, "
      f"peak learning rate {book_config.learning_rate}")

# %% [markdown]
# That is {{ count_parameters(model_config) / 1e6:.2f }} million parameters,
# {{ count_parameters(model_config) / baby_parameters:.1f }} times the
# baby's, and {{ book_tokens / 1e6:.1f }} million training tokens, about
# {{ book_tokens / len(train_ids):.1f }} passes over the training text.
#
# ## Choosing a size for the budget
#
# A budget of time is a budget of arithmetic: chapter 6's count gives the
# FLOPs of a training token, and a timed step gives the rate this machine
# sustains for each shape. @tbl-sizes times one compiled training step of
# five shapes and says how many tokens a quarter of an hour buys each.

# %%
#| echo: false
#| label: tbl-sizes
#| tbl-cap: One compiled training step of five shapes on this CPU (median of a few), and what 15 minutes of such steps would train. Batch 16, context 128 (the baby shape at its own context 64, batch 12).
def time_step(config: GPTConfig, batch_size: int, repeats: int) -> float:
    """Median seconds of one compiled training step of a fresh model."""
    model = GPT(config)
    run = TrainConfig(batch_size=batch_size)
    step = make_step(model, make_optimizer(run), run)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, config.vocab_size, (batch_size, config.context))
    inputs = mx.array(batch.astype(np.int32))

    def one_step() -> tuple:
        return step(inputs, inputs), model.parameters()

    return median_seconds(one_step, repeats)


budget_seconds = 15 * 60
vocab = tokenizer.vocab_size
shapes = {"baby": (GPTConfig.baby(vocab), 12)}
for layers, width in ((4, 128), (4, 192), (6, 192), (4, 256)):
    shapes[f"{layers} x {width}"] = (
        GPTConfig(vocab, context=128, n_layer=layers, n_head=4,
                  n_embd=width), 16)
size_rows = []
for name, (config, batch) in shapes.items():
    seconds = time_step(config, batch, repeats=pick(smoke=1, book=5))
    tokens = budget_seconds / seconds * batch * config.context
    size_rows.append((name, count_parameters(config) / 1e6,
                      1000 * seconds,
                      train_flops_per_token(config) * batch * config.context
                      / seconds / 1e9,
                      tokens / 1e6, tokens / count_parameters(config)))
baby_parameters = count_parameters(GPTConfig.baby(vocab))
baby_run = TrainConfig()  # chapter 7's baby run
baby_tokens = (baby_run.steps * baby_run.batch_size
               * GPTConfig.baby(vocab).context)
table_load = os.getloadavg()[0]  # other work sharing the two cores
fastest_row = max(size_rows, key=lambda row: row[3])
budget_product = size_rows[0][1] * 1e6 * size_rows[0][4] * 1e6  # N * D
optimal_parameters = (budget_product / 20) ** 0.5
optimal_passes = 20 * optimal_parameters / len(train_ids)
Table(size_rows, ["shape", "M params", "ms/step", "GFLOP/s",
                  "M tokens in 15 min", "tokens/param"], digits=1)

# %% [markdown]
# Two things pull against each other. Larger matrices can keep the CPU
# busier: the best rate in the table is {{ fastest_row[3]:.0f }} GFLOP/s,
# for {{ fastest_row[0] }}, against the baby's
# {{ size_rows[0][3]:.0f }}. Read the rates loosely, though. The load
# average (processes wanting the machine's two cores) was
# {{ table_load:.1f }} while the table was timed; above 2, other work
# shares the CPU with the steps being timed, and a step takes longer
# than this CPU needs, by an amount that changes from one moment to the
# next. The table carries its own check. {{ small_row[0] }} and
# {{ size_rows[3][0] }} have the same width, and six layers against four
# make the deeper step about half as much work again, so it should take
# about half as long again; the table has {{ small_row[2]:.0f }} and
# {{ size_rows[3][2]:.0f }} ms. Whatever moves their ratio away from that
# is mostly the load, and two rows that differ by no more than that are
# not ranked by this table: it cannot say which of them uses the CPU
# better.
#
# Against that, a bigger model gets fewer tokens per parameter, and
# Hoffmann et al. (2022) found that for a fixed budget of compute the
# best loss comes from about 20 training tokens per parameter. At that
# ratio the budget of the baby's row would buy a model of about
# {{ optimal_parameters / 1e6:.1f }} million parameters trained for
# {{ optimal_passes:.0f }} passes over Shakespeare, and repeated text is
# worth less than new text: Muennighoff et al. (2023) measured that up
# to about four passes cost little, and that more cost more and more. So
# the `small` preset takes a middle course, 4 × 192: its
# {{ book_config.steps:, }} steps are {{ book_tokens / 1e6:.1f }} million
# tokens, {{ book_tokens / small_row[1] / 1e6:.1f }} per parameter and
# {{ book_tokens / len(train_ids):.1f }} passes, with a little dropout
# against the repeats; at the step time in the table they take
# {{ book_config.steps * small_row[2] / 60_000:.0f }} minutes. It is a
# judgement from one timing table and two papers, not a search: a search
# would cost a quarter of an hour or more per point.
#
# ## The run
#
# The run lives in a run directory among the book's artifacts, like
# chapter 7's, and the rest of the book reads its last checkpoint. If a
# build is stopped in the middle, the next one resumes it from the last
# checkpoint instead of starting again, and a build that finds the run
# finished trains nothing: `resume` first checks that the checkpoint
# belongs to this model, this schedule and this tokenizer.

# %%
#| echo: false
run_config = TrainConfig(**{
    **vars(book_config),
    "steps": pick(smoke=20, book=book_config.steps),
    "warmup_steps": pick(smoke=4, book=book_config.warmup_steps),
    "eval_every": pick(smoke=10, book=book_config.eval_every)})
book_tokens = (book_config.steps * book_config.batch_size
               * model_config.context)
small_row = next(row for row in size_rows if row[0] == "4 x 192")
tokenizer_file = artifact_path("10_evaluation_02/small/tokenizer.txt")
run_dir = tokenizer_file.parent
tokenizer.save(tokenizer_file)
clock_file = run_dir / "clock.json"  # seconds and load at each evaluation
mx.random.seed(run_config.seed)
trainer = Trainer(GPT(model_config), run_config, train_ids, val_ids,
                  len(val_text) / len(all_val_ids), tokenizer.fingerprint(),
                  run_dir=run_dir, keep=2)
clock = {"step": [], "seconds": [], "load": []}
if (run_dir / "latest").exists():
    resume(trainer)
    clock = json.loads(clock_file.read_text())
    kept = sum(step <= trainer.step for step in clock["step"])
    clock = {name: values[:kept] for name, values in clock.items()}
    print(f"resumed at step {trainer.step}")
while trainer.step < run_config.steps:
    started = time.perf_counter()
    trainer.run(until=trainer.step + run_config.eval_every)
    clock["step"].append(trainer.step)
    clock["seconds"].append((clock["seconds"] or [0.0])[-1]
                            + time.perf_counter() - started)
    clock["load"].append(os.getloadavg()[0])  # other work on the machine
    clock_file.write_text(json.dumps(clock))
history = trainer.history
baby_record, _, _ = read_checkpoint(
    latest_checkpoint(artifact_path("07_training/baby-char/tokenizer.txt")
                      .parent), optimizer=False)
baby_val = baby_record["history"]["val_loss"][-1]
small_val = history["val_loss"][-1]
small_minutes = clock["seconds"][-1] / 60

# %% [markdown]
# While it trains, the run logs one line per evaluation, each on the
# whole validation split; a build that finds the run finished, like the
# one that printed this page, resumes at its last step and prints only
# that. The run ends at
# {{ small_val:.3f }} nats per character, against {{ baby_val:.3f }} for
# chapter 7's baby model. It took {{ small_minutes:.1f }} minutes of
# wall-clock time, evaluations included, while the machine's load
# average ran from
# {{ min(clock["load"]):.1f }} to {{ max(clock["load"]):.1f }}. A load
# above 2 means other work shared the CPU with the run, and the minutes
# below are then longer than this CPU needs.
#
# ## Against the baselines
#
# @fig-small-curve draws the validation loss of every evaluation against
# the training tokens seen so far and against the minutes spent, with
# each baseline of the previous section but the uniform guess as a
# horizontal line.

# %%
#| echo: false
#| label: fig-small-curve
#| fig-cap: Validation loss of the small model at each evaluation against training tokens (left, logarithmic) and wall-clock minutes on this CPU while other work also ran on it (right), with every baseline of the previous section except the uniform guess as a dashed line. Where the curve passes a line, the model has caught up with that baseline.
baselines = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())
lines = {name: baselines[name] for name in ("unigram", "bigram", "zlib",
                                            "lzma", "bz2", "witten_bell",
                                            "kneser_ney")}
tokens_per_step = run_config.batch_size * model_config.context
eval_tokens = np.array(history["eval_step"]) * tokens_per_step
eval_minutes = np.array(clock["seconds"]) / 60
shown = {"witten_bell": "Witten-Bell", "kneser_ney": "Kneser-Ney"}
low = min(min(history["val_loss"]), min(lines.values())) - 0.1
high = max(lines.values()) + 0.3
label_at, previous = {}, None  # labels a line of 7-point text apart
for name, value in sorted(lines.items(), key=lambda item: item[1]):
    gap = 0.055 * (high - low)
    previous = value if previous is None else max(value, previous + gap)
    label_at[name] = previous
fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 2.9), sharey=True)
for axes, x, label in ((left, eval_tokens / 1e6,
                        "training tokens (millions)"),
                       (right, eval_minutes, "minutes (this CPU)")):
    axes.plot(x, history["val_loss"], "o-", markersize=3, color="C0",
              label="small model")
    for index, (name, value) in enumerate(sorted(lines.items(),
                                                 key=lambda item: -item[1])):
        axes.axhline(value, color=f"C{index + 1}", linestyle="--",
                     linewidth=0.9)
        if axes is right:
            axes.annotate(shown.get(name, name), (1.01, label_at[name]),
                          xycoords=("axes fraction", "data"), fontsize=7,
                          va="center", color=f"C{index + 1}")
    axes.set_xlabel(label)
left.set_xscale("log")
left.set_xticks([0.25, 0.5, 1, 2, 4], ["0.25", "0.5", "1", "2", "4"])
left.minorticks_off()
left.set_ylabel("validation loss (nats/char)")
_ = left.set_ylim(low, high)

# %% [markdown]
# @tbl-crossings reads the crossings off the curve: for each baseline, the
# first evaluation at which the model's validation loss is below it.

# %%
#| echo: false
#| label: tbl-crossings
#| tbl-cap: The first evaluation at which the small model's validation loss is below each baseline of the figure (empty where it never is).
def first_below(value: float) -> int | None:
    """Index of the first evaluation below `value`, or None."""
    return next((index for index, loss in enumerate(history["val_loss"])
                 if loss < value), None)


crossings = {name: first_below(value) for name, value in lines.items()}
crossing_rows = []
for name, value in sorted(lines.items(), key=lambda item: -item[1]):
    at = crossings[name]
    crossing_rows.append(
        (shown.get(name, name), value) + (("", "", "") if at is None else
                         (history["eval_step"][at], eval_tokens[at] / 1e6,
                          eval_minutes[at])))
Table(crossing_rows,
      ["baseline", "nats/char", "step", "M tokens", "minutes"], digits=2)

# %% [markdown]
# ## How far to the best n-gram
#
# The best n-gram of the previous section is the line that matters: it is
# the strongest model in this chapter that no one trained. Whether the
# small model passes it in this budget, and if not how long it would
# need, is a question for the curve. Losses of language models fall with
# training tokens roughly as a power law (Kaplan et al., 2020), towards a
# floor that no amount of data removes (Hoffmann et al., 2022),
# $L(D) \approx c + a D^{-b}$, and a fit of that form to the
# evaluations after the first tenth of the run gives a prediction.

# %%
#| echo: false
def fit_power_law(tokens: np.ndarray,
                  losses: np.ndarray) -> tuple[float, float, float]:
    """(a, b, c) of loss = c + a * tokens**-b, least squares in the loss,
    over a grid of floors c below the smallest loss."""
    best = None
    for floor in np.linspace(0.0, losses.min() - 1e-3, 400):
        slope, intercept = np.polyfit(np.log(tokens),
                                      np.log(losses - floor), 1)
        fitted = floor + np.exp(intercept) * tokens ** slope
        error = float(np.sum((fitted - losses) ** 2))
        if best is None or error < best[0]:
            best = (error, float(np.exp(intercept)), float(-slope),
                    float(floor))
    return best[1], best[2], best[3]


tail = eval_tokens >= 0.1 * eval_tokens[-1]
scale, exponent, floor = fit_power_law(eval_tokens[tail],
                                       np.array(history["val_loss"])[tail])
best_ngram_name = min(("witten_bell", "kneser_ney"), key=lines.get)
best_ngram = lines[best_ngram_name]
print(f"fit: {floor:.3f} + {scale:.3g} * D^-{exponent:.3f}"
      + (" (the floor at the grid's edge: no floor shows yet)"
         if floor == 0 else ""))
print(f"best n-gram ({best_ngram_name}): {best_ngram:.3f}; "
      f"small model: {small_val:.3f}")

# %%
#| echo: false
tokens_per_second = eval_tokens[-1] / clock["seconds"][-1]


def duration(seconds: float) -> str:
    """'40 seconds', '12 minutes' or '3.5 hours'."""
    if seconds < 90:
        return f"{seconds:.0f} seconds"
    if seconds < 5400:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds / 3600:.1f} hours"


if small_val < best_ngram:
    crossed = crossings[best_ngram_name]
    outcome = (
        f"The small model passes it at step {history['eval_step'][crossed]:,}"
        f", after {eval_minutes[crossed]:.0f} minutes, and ends "
        f"{best_ngram - small_val:.3f} nats per character below it. The "
        f"fitted floor, {floor:.2f}, is where this curve would level off "
        "if the text never repeated; it does repeat, so read it as an "
        "optimistic limit for this model, not a promise")
elif best_ngram <= floor:
    outcome = (
        "The model does not reach it in this budget, and the fitted "
        f"curve never will: its floor, {floor:.2f}, lies above the "
        "n-gram. More tokens alone would not do; a bigger model might")
else:
    needed = (scale / (best_ngram - floor)) ** (1 / exponent)
    needed_flops = train_flops_per_token(model_config) * needed
    mac_hours = {rate: needed_flops / rate / 3600 for rate in (1e12, 4e12)}
    outcome = (
        "The model does not reach it in this budget. The fitted curve "
        f"reaches it after {needed / 1e6:.0f} million tokens, "
        f"{needed / eval_tokens[-1]:.1f} times this run's, which at this "
        f"run's {tokens_per_second:,.0f} tokens per second is "
        f"{duration(needed / tokens_per_second)} here. On a "
        "MacBook GPU sustaining 1 to 4 TFLOP/s, rates chosen to bracket "
        "what such a GPU might reach and not measured here, the same "
        f"{needed_flops / 1e15:.2f} PFLOP would take "
        f"{duration(3600 * mac_hours[4e12])} to "
        f"{duration(3600 * mac_hours[1e12])} (computed, not measured). "
        "Read it as an order of "
        "magnitude and a lower bound: the fit treats more tokens as a "
        "continuation of this one run, whose last stretch owes part of its "
        "fall to the learning rate decaying to its end, and more tokens "
        "mean more passes over the same text")

# %% [markdown]
# {{ outcome }}.
