# %% [markdown]
# # The learning rate
#
# The first row of the tutorials' table says that a loss that will not
# fall calls for a look at the learning rate. It is the setting most likely to be
# wrong, and it is wrong in two directions that look different.
# @fig-learning-rates puts the control beside a peak learning rate
# {{ high_lr / lab.base.learning_rate:.0f }} times higher and one
# {{ lab.base.learning_rate / low_lr:.0f }} times lower, the rest of the
# recipe unchanged.

# %%
#| echo: false
#| default_exp diagnose
import json

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.diagnose import character_lab, plot_runs, read_run
from mlxllm.diagnose import running_median
from mlxllm.model import GPT
from mlxllm.train import TrainConfig, warmup_cosine

lab = character_lab(artifact_path("11_troubleshooting_01/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))
baselines = json.loads(
    artifact_path("10_evaluation_01/baselines.json").read_text())

# %%
high_lr, low_lr = 3e-2, 1e-5
lab.run("high-lr", learning_rate=high_lr)
lab.run("low-lr", learning_rate=low_lr)
runs = {"control": read_run(artifact_path("11_troubleshooting/runs/control")),
        "high-lr": read_run(lab.root / "high-lr"),
        "low-lr": read_run(lab.root / "low-lr")}
final_val = {name: run.history["val_loss"][-1] for name, run in runs.items()}
for name, value in final_val.items():
    print(f"{name:8} validation loss {value:.3f} nats/char")

# %%
#| echo: false
#| label: fig-learning-rates
#| fig-cap: Three peak learning rates, the rest of the recipe equal. Too high, the loss drops at first and then stalls far above the control; too low, it creeps down and is still falling at the end.
plot_runs({f"lr {rate:g}": runs[name] for name, rate in
           (("control", lab.base.learning_rate), ("high-lr", high_lr),
            ("low-lr", low_lr))})

# %% [markdown]
# The two failures look different. Too high, the loss drops in the
# first steps, spikes, and then levels off early, at
# {{ final_val['high-lr']:.2f }} nats per character against the
# control's {{ final_val['control']:.2f }}: the updates overshoot, the
# model settles for a crude solution, and its gradient norm sinks below
# the control's. Too low, the loss creeps down from the start and ends
# at {{ final_val['low-lr']:.2f }}, above even the
# {{ baselines['unigram']:.2f }}-nat unigram model of chapter 10: every
# update points the right way and is far too short. The cosine schedule
# flattens the end of every run, so the slope at the end tells little;
# where a run levels off, and how fast it got there, tells more.
# Neither run produced a NaN or an error, and each, seen alone, looks
# like a model that is learning. Only the comparison with a control
# shows the failure.
#
# ## Finding a learning rate
#
# Comparing whole runs costs a run per guess. A *learning-rate range
# test* (Smith, 2017) spends one short run instead: start at a tiny
# learning rate, multiply it by the same factor every step up to a huge
# one, and record the loss of each step. While the rate is too small the
# loss barely moves; then it falls, faster and faster; past some rate it
# turns up and explodes. A good peak learning rate is below the bottom
# of that curve, where the loss still falls steeply; a common rule
# takes a tenth of the rate at the minimum.

# %%
#| export
from mlxllm.data import BatchSampler
from mlxllm.train import MatrixAdamW, make_step


def learning_rate_range(model: GPT, sampler: BatchSampler,
                        config: TrainConfig, low: float, high: float,
                        steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The loss of each step while the learning rate grows by one factor
    per step from `low` to `high` (Smith, 2017); stops once the loss is
    not finite or four times its lowest."""
    growth = (high / low) ** (1 / (steps - 1))
    optimizer = MatrixAdamW(learning_rate=lambda step: low * growth**step,
                            betas=[config.beta1, config.beta2],
                            weight_decay=config.weight_decay,
                            bias_correction=True)
    step = make_step(model, optimizer, config)
    rates, losses = [], []
    for index in range(steps):
        loss, _ = step(*sampler.sample())
        mx.eval(loss, model.parameters(), optimizer.state)
        rates.append(low * growth**index)
        losses.append(loss.item())
        if not np.isfinite(losses[-1]) or losses[-1] > 4 * min(losses):
            break
    return np.array(rates), np.array(losses)


def suggest_learning_rate(rates: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the learning rate at the lowest running median of the
    range test's loss."""
    return float(rates[np.argmin(running_median(losses))] / 10)


# %%
range_steps = pick(smoke=20, book=150)
mx.random.seed(lab.base.seed)
sampler = BatchSampler(lab.train_ids, lab.base.batch_size,
                       lab.model_config.context, lab.base.seed)
rates, range_losses = learning_rate_range(GPT(lab.model_config), sampler,
                                          lab.base, 1e-5, 1.0, range_steps)
suggested = suggest_learning_rate(rates, range_losses)
print(f"{len(rates)} steps, lowest median loss at lr "
      f"{suggested * 10:.2g}: suggests {suggested:.2g}")

# %%
#| echo: false
#| label: fig-range-test
#| fig-cap: A learning-rate range test, one short run whose learning rate grows by a constant factor every step. Thin, the loss of each step; thick, its running median. The dashed line is the suggested peak learning rate, a tenth of the rate at the lowest median; the dotted one, chapter 7's.
plt.figure(figsize=(6, 2.8))
plt.plot(rates, range_losses, color="0.7", linewidth=0.6)
plt.plot(rates, running_median(range_losses), color="C0")
plt.axvline(suggested, color="C1", linestyle="--", label="suggested")
plt.axvline(lab.base.learning_rate, color="C2", linestyle=":",
            label="chapter 7")
plt.xscale("log")
plt.ylim(top=min(range_losses[0] + 1.5, max(range_losses) + 0.1))
plt.xlabel("learning rate")
plt.ylabel("loss (nats/char)")
plt.legend(fontsize="small")

# %% [markdown]
# The test ran {{ len(rates) }} steps, about the cost of
# {{ len(rates) / lab.base.steps:.1f }} laboratory runs, and its
# suggestion, {{ suggested:.1g }}, is
# {{ suggested / lab.base.learning_rate:.1f }} times chapter 7's
# {{ lab.base.learning_rate:g }}. A range test is a guide, not a
# verdict: its loss at each rate comes after the steps at lower rates,
# not after a run at that rate, so train at the suggestion and compare,
# as @tbl-learning-rates does. Here the rule's tenth is cautious: the
# suggested run ends a little behind chapter 7's rate, and the run at
# three times chapter 7's rate, in "Warm-up" below, a little ahead. The
# last column counts the steps whose gradient norm was above the
# clipping threshold. At the lowest rate the model stays close to its
# random start, where gradients are large, so every step is clipped; at
# the highest it settles where they are small.

# %%
suggested_run = lab.run("suggested", learning_rate=suggested)
runs["suggested"] = read_run(lab.root / "suggested")

# %%
#| echo: false
#| label: tbl-learning-rates
#| tbl-cap: Validation loss after the laboratory's steps at each peak learning rate, with the share of steps whose gradient norm was clipped.
rate_rows = []
for name, rate in (("low-lr", low_lr), ("control", lab.base.learning_rate),
                   ("suggested", suggested), ("high-lr", high_lr)):
    history = runs[name].history
    rate_rows.append((name, f"{rate:.1g}", history["val_loss"][-1],
                      f"{np.mean(np.array(history['grad_norm']) > 1):.0%}"))
Table(rate_rows, ["run", "peak learning rate", "validation nats/char",
                  "steps clipped"], digits=3)

# %% [markdown]
# ## Warm-up
#
# Chapter 7's schedule starts with a warm-up, a linear rise of the
# learning rate from zero, and it is tempting to think of that as a
# nicety. Adam makes it more than that. Its update divides the running
# mean of the gradient by the square root of the running mean of its
# square; in the first steps both averages rest on a handful of
# gradients, so the ratio is noisy, and each weight moves by about the
# full learning rate in whatever direction that noise points (Liu et
# al., 2020). @fig-warmup trains at
# {{ warm_lr:g }}, {{ warm_lr / lab.base.learning_rate:.0f }} times
# chapter 7's rate, with the laboratory's warm-up of
# {{ lab.base.warmup_steps }} steps and without one.

# %%
warm_lr = 3e-3
lab.run("warmup", learning_rate=warm_lr)
lab.run("no-warmup", learning_rate=warm_lr, warmup_steps=0)
warm_runs = {"warm-up": read_run(lab.root / "warmup"),
             "no warm-up": read_run(lab.root / "no-warmup")}
cold = np.array(warm_runs["no warm-up"].history["loss"])
first_spike = int(np.argmax(cold[1:] - cold[:-1] > 0.5)) + 2
print(f"without warm-up: loss {cold[first_spike - 2]:.2f} at step "
      f"{first_spike - 1}, {cold[first_spike - 1]:.2f} at step "
      f"{first_spike}")

# %%
#| echo: false
#| label: fig-warmup
#| fig-cap: The same peak learning rate with and without a warm-up. Without one, the loss spikes in the first steps and then sits near the unigram model's loss for tens of steps; it never catches up.
plot_runs(warm_runs)

# %% [markdown]
# Without the warm-up the loss falls fast for four steps, jumps from
# {{ cold[first_spike - 2]:.2f }} to {{ cold[first_spike - 1]:.2f }} at
# step {{ first_spike }}, and then stays near the unigram model's loss
# for tens of steps while the warmed-up run keeps falling; it ends at
# {{ warm_runs['no warm-up'].history['val_loss'][-1]:.2f }} nats per
# character against {{ warm_runs['warm-up'].history['val_loss'][-1]:.2f }}
# with the warm-up. The warmed-up run has a spike of its own, smaller in
# the loss though not in the gradient norm, and recovers at once. A
# spike in the first steps and a long flat stretch after it are the
# signature of a missing or too short warm-up, and the fix costs
# nothing: a few per cent of the steps.
#
# ## Weight decay on the wrong parameters
#
# Chapter 7's `MatrixAdamW` decays only matrices, and leaves the
# normalization gains and any biases alone. Decay on a gain pulls it
# towards zero, a normalization that outputs nothing, and the gradient
# has to pull it back every step. The size of that pull is computable
# from the schedule: each step multiplies a decayed weight by
# $1 - \eta_t \lambda$, and over chapter 7's 2,000 steps the product of
# those factors is {{ decay_2000:.2f }}. For this book's short runs it
# is small. It compounds with the length of a run and the size of the
# decay, and a recipe that decays everything trades a little of every
# gain for nothing. Exercise 11.4 measures it at a larger decay.

# %%
#| echo: false
chapter7 = TrainConfig()
schedule = warmup_cosine(chapter7)
decay_2000 = float(np.prod([1 - schedule(mx.array(step)).item()
                            * chapter7.weight_decay
                            for step in range(chapter7.steps)]))
