# %% [markdown]
# # Diagnosis by machine: `mlxllm diagnose`
#
# Each failure of this chapter left a signature in the numbers a run
# records. This section writes those signatures down as checks, runs
# them on every run of the chapter, and makes them a command. A check
# reads one run's `RunRecord`, the history of its steps and evaluations
# and its recipe, and returns a `Finding`, or nothing. Every threshold
# below is named, and each was set by looking at the runs of this
# chapter, so @tbl-diagnoses, which runs the checks on those runs, shows
# that the rules fit the runs they were made from, not that they carry
# over to every run; the unit tests check each rule on histories made to
# show it, and the healthy runs of chapters 7 and 10 are the only runs
# here the rules were not tuned on.

# %%
#| echo: false
#| default_exp diagnose
import math
from dataclasses import dataclass

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.diagnose import SMOOTHING, RunRecord, read_run, running_median

vocab_size = read_run(
    artifact_path("11_troubleshooting/runs/control")).model["vocab_size"]
best_known = read_run(
    artifact_path("10_evaluation_02/small")).history["val_loss"][-1]

# %%
#| export
@dataclass(frozen=True)
class Finding:
    """A problem seen in a run: its name, the step where it shows, and
    the numbers that show it."""

    problem: str
    step: int
    evidence: str


# %%
#| echo: false
#| output: false
#| export
FIXES = {
    "diverged": "restart from the last good checkpoint with a lower "
                "learning rate (a warm-up and clipping delay a divergence "
                "at too high a rate, they do not prevent it); a loss that "
                "is inf at once points to a log of zero in the loss",
    "not learning": "check that the weights start random, that the "
                    "learning rate is not zero and that the loss depends "
                    "on the weights",
    "bad start": "initialise smaller, as chapter 6 does: the first loss "
                 "should be close to ln V",
    "too good": "check that the targets are the inputs moved by one and "
                "that attention is causal",
    "early spike": "add a warm-up of a few per cent of the steps",
    "spikes": "lower the learning rate",
    "learning rate too high": "lower it; a range test finds a good one",
    "learning rate too low": "raise it; a range test finds a good one",
    "overfitting": "more text, or the checkpoint with the best "
                   "validation loss; try dropout, and measure it",
}
"""What to try for each problem."""

SECTIONS = {
    "diverged": "NaN, and losses that explode",
    "not learning": "Initialisation",
    "bad start": "Initialisation",
    "too good": "Bugs whose curves lie",
    "early spike": "The learning rate",
    "spikes": "The learning rate",
    "learning rate too high": "The learning rate",
    "learning rate too low": "The learning rate",
    "overfitting": "Gibberish, and a model that learns the text by heart",
}
"""The section of chapter 11 that shows each problem happening."""

# %% [markdown]
# The first checks are the loud failures. A run diverged if it recorded
# a failure, or if the running median of its loss rose more than
# `BLOW_UP` nats above both its first loss and a uniform guess, $\ln V$:
# a model worse than knowing nothing, after starting near it, and for
# longer than one bad step. It started badly if its first loss
# was already that far above $\ln V$. It is not learning if the running
# median of its loss moved by less than `FLAT` of $\ln V$ in the whole
# run. And it is too good if the running median of its training loss
# fell below `TOO_GOOD` of $\ln V$: for this chapter's characters that
# is {{ TOO_GOOD * math.log(vocab_size):.2f }} nats per character, far
# below the {{ best_known:.2f }} of chapter 10's model on text it never
# saw, and a loss that a model of this size reaches on a whole play only
# if it can see the answer.

# %%
#| export
BLOW_UP = 1.0
"""Nats above max(first loss, ln V) that make a loss diverged."""
BAD_START = 1.0
"""Nats above ln V that make a first loss too high."""
FLAT = 0.01
"""Share of ln V the loss's running median must move in a run."""
TOO_GOOD = 0.1
"""Share of ln V below which a training loss means a leak."""


# %%
#| echo: false
#| export
def steps_text(count: int) -> str:
    """'1 step', '200 steps'."""
    return f"{count} step" + ("" if count == 1 else "s")


def uniform_loss(run: RunRecord) -> float:
    """ln V: the loss of a uniform guess over the vocabulary."""
    return math.log(run.model["vocab_size"])


def check_divergence(run: RunRecord) -> Finding | None:
    steps, losses = run.history["step"], np.array(run.history["loss"])
    if run.failure is not None:
        return Finding("diverged", int(steps[-1]) + 1 if steps else 1,
                       f"training stopped: {run.failure}")
    ceiling = max(losses[0], uniform_loss(run)) + BLOW_UP
    smooth = running_median(losses)
    if smooth.max() <= ceiling:
        return None
    first, top = int(np.argmax(smooth > ceiling)), int(np.argmax(losses))
    return Finding("diverged", int(steps[first]),
                   f"the loss rose to {losses[top]:.3g} at step "
                   f"{steps[top]:.0f} and its running median passed "
                   f"ln V = {uniform_loss(run):.2f} by {BLOW_UP:g}+ nats")


def check_start(run: RunRecord) -> Finding | None:
    first, uniform = run.history["loss"][0], uniform_loss(run)
    if first <= uniform + BAD_START:
        return None
    return Finding("bad start", int(run.history["step"][0]),
                   f"the first loss, {first:.3g}, is far above ln V = "
                   f"{uniform:.2f}: the initial logits are too large")


def check_learning(run: RunRecord) -> Finding | None:
    smooth = running_median(run.history["loss"])
    moved, uniform = smooth.max() - smooth.min(), uniform_loss(run)
    if len(smooth) < 2 * SMOOTHING or moved >= FLAT * uniform:
        return None
    return Finding("not learning", int(run.history["step"][0]),
                   f"the loss stayed within {moved:.2g} of "
                   f"{smooth[-1]:.3f} for {len(smooth)} steps (ln V = "
                   f"{uniform:.3f}); the largest gradient norm was "
                   f"{max(run.history['grad_norm']):.2g}")


def check_leak(run: RunRecord) -> Finding | None:
    smooth = running_median(run.history["loss"])
    limit = TOO_GOOD * uniform_loss(run)
    if smooth.min() >= limit:
        return None
    first = int(np.argmax(smooth < limit))
    val = run.history["val_loss"]
    after = f"; validation {val[-1]:.3f} at the end" if val else ""
    return Finding("too good", int(run.history["step"][first]),
                   f"the training loss fell below {limit:.2f} nats per "
                   f"token, a tenth of ln V, to {smooth.min():.3f}{after}")

# %% [markdown]
# The quieter checks need a definition of a spike and of rising
# validation. A spike is a step whose loss is more than `SPIKE` nats
# above the median of the up to {{ SMOOTHING }} steps before it. One
# spike early in a run without a warm-up is the early spike of
# "Warm-up"; one during a warm-up is Adam finding its feet and passes;
# `SPIKES` or more after the warm-up mean a learning rate too high for
# the run. Validation rising more than `OVERFIT` nats above its best
# while the training loss kept falling is overfitting, provided the two
# were within `OVERFIT_GAP` of each other at the best step: a model that
# overfits first generalised, and a validation loss that was never close
# to the training loss points to a leak or a mismatch. The learning rate
# is judged from the recipe itself: a peak outside
# `LEARNING_RATE_RANGE` is reported with what the curve did. The range
# is a rule of thumb from published recipes for Adam on transformers,
# not a law: GPT-3 trained at $6 \times 10^{-4}$ to $6 \times
# 10^{-5}$ (Brown et al., 2020), nanoGPT at $10^{-3}$ and
# $6 \times 10^{-4}$ (Karpathy, 2022).

# %%
#| export
SPIKE = 0.5
"""Nats above the median of the steps before that make a spike."""
SPIKES = 3
"""Spikes after the warm-up that make a learning rate suspect."""
EARLY = 0.1
"""Share of the run, from its start, where a spike counts as early."""
OVERFIT = 0.05
"""Nats the validation loss may rise above its best."""
OVERFIT_GAP = 1.0
"""Most nats between validation and training at the best validation:
a run that overfits generalised first."""
LEARNING_RATE_RANGE = (1e-4, 1e-2)
"""Peak learning rates outside this range are reported."""


# %%
#| echo: false
#| export
def spike_steps(run: RunRecord) -> list[int]:
    """Steps whose loss is SPIKE nats above the median of the up to
    SMOOTHING steps before."""
    losses, steps = run.history["loss"], run.history["step"]
    return [int(steps[i]) for i in range(3, len(losses))
            if losses[i] > np.median(losses[max(0, i - SMOOTHING):i]) + SPIKE]


def check_spikes(run: RunRecord) -> Finding | None:
    spikes, warmup = spike_steps(run), run.train["warmup_steps"]
    early = [step for step in spikes
             if step <= EARLY * run.train["steps"]]
    if warmup == 0 and early:
        return Finding("early spike", early[0],
                       f"the loss jumped at step {early[0]}, in the first "
                       f"{EARLY:.0%} of a run with no warm-up")
    late = [step for step in spikes if step > warmup]
    if len(late) < SPIKES:
        return None
    return Finding("spikes", late[0],
                   f"{len(late)} steps after the warm-up had a loss "
                   f"{SPIKE:g}+ nats above the steps before, the first at "
                   f"step {late[0]}")


def check_learning_rate(run: RunRecord) -> Finding | None:
    peak, (low, high) = run.train["learning_rate"], LEARNING_RATE_RANGE
    if low <= peak <= high:
        return None
    problem = "learning rate too high" if peak > high else \
        "learning rate too low"
    smooth = running_median(run.history["loss"])
    curve = (f"; the loss went from {run.history['loss'][0]:.2f} to "
             f"{smooth[-1]:.2f} in {steps_text(len(smooth))}" if len(smooth)
             else "")
    return Finding(problem, 1, f"the peak learning rate, {peak:g}, is "
                   f"outside {low:g} to {high:g}{curve}")


def check_overfitting(run: RunRecord) -> Finding | None:
    val, evals = run.history["val_loss"], run.history["eval_step"]
    if len(val) < 3:
        return None
    best = int(np.argmin(val))
    if val[-1] - val[best] <= OVERFIT:
        return None
    smooth = running_median(run.history["loss"])
    steps = np.array(run.history["step"])
    at_best, at_end = (smooth[np.searchsorted(steps, evals[i])]
                       for i in (best, -1))
    if at_end >= at_best or val[best] - at_best > OVERFIT_GAP:
        return None
    return Finding("overfitting", int(evals[best]),
                   f"validation rose from {val[best]:.3f} at step "
                   f"{evals[best]:.0f} to {val[-1]:.3f} at step "
                   f"{evals[-1]:.0f}, while the training loss fell from "
                   f"{at_best:.3f} to {at_end:.3f}")


# %% [markdown]
# The checks themselves are not printed: each is a few lines that
# follow the definitions above word for word, and `mlxllm/diagnose.py`
# has them all. What ties them together is a list, in the order the
# report gives them:

# %%
#| export
CHECKS = (check_divergence, check_start, check_learning, check_leak,
          check_spikes, check_learning_rate, check_overfitting)
"""Every check, loudest first."""


def diagnose(run: RunRecord) -> list[Finding]:
    """What every check finds in a run, loudest first."""
    return [finding for check in CHECKS if (finding := check(run))]

# %% [markdown]
# `report` (not printed) turns the findings into what the command
# prints: a line that says what the run is, then each problem with its
# evidence, the fix to try from a table `FIXES`, and the section of this
# chapter that shows it, from a table `SECTIONS`.

# %%
#| echo: false
#| export
def report(name: str, run: RunRecord) -> str:
    """The findings of diagnose(run) as text, with fixes and sections."""
    history = run.history
    lines = [f"{name}: {steps_text(len(history['step']))} recorded"]
    if history["val_loss"]:
        lines[0] += (f", validation {history['val_loss'][-1]:.3f} nats/char"
                     f" at step {history['eval_step'][-1]:.0f}")
    findings = diagnose(run)
    for finding in findings:
        lines += [f"{finding.problem} (step {finding.step}): "
                  f"{finding.evidence}",
                  f"  try: {FIXES[finding.problem]}",
                  f"  see: chapter 11, \"{SECTIONS[finding.problem]}\""]
    if not findings:
        lines.append("nothing wrong found in its loss, gradient norm, "
                     "learning rate and validation")
    return "\n".join(lines)

# %% [markdown]
# @tbl-diagnoses runs `diagnose` on every run of this chapter, and on
# the healthy runs of chapters 7 and 10, beside what was done to each.
# The last column says whether that is what the chapter expects, which
# is written in its source beside each run; an assertion under the table
# stops the build if the two ever differ.

# %%
#| echo: false
#| label: tbl-diagnoses
#| tbl-cap: What diagnose finds in each run of the chapter and in the book's healthy runs, named as in the checks; a dash is a run with nothing found.
RUNS = {  # run directory: (what was done to it, what diagnose should find)
    artifact_path("11_troubleshooting/runs/control"): ("nothing", ()),
    artifact_path("11_troubleshooting_01/runs/high-lr"): (
        "peak learning rate ×30", ("learning rate too high",)),
    artifact_path("11_troubleshooting_01/runs/low-lr"): (
        "peak learning rate ÷100", ("learning rate too low",)),
    artifact_path("11_troubleshooting_01/runs/suggested"): (
        "the range test's rate", ()),
    artifact_path("11_troubleshooting_01/runs/warmup"): (
        "learning rate ×3", ()),
    artifact_path("11_troubleshooting_01/runs/no-warmup"): (
        "learning rate ×3, no warm-up", ("early spike",)),
    artifact_path("11_troubleshooting_02/runs/explode"): (
        "learning rate 1, unguarded",
        ("diverged", "early spike", "learning rate too high")),
    artifact_path("11_troubleshooting_02/runs/log-zero"): (
        "the same, log of softmax", ("diverged", "learning rate too high")),
    artifact_path("11_troubleshooting_02/runs/guarded"): (
        "learning rate 1, guarded",
        ("diverged", "spikes", "learning rate too high")),
    artifact_path("11_troubleshooting_03/runs/tiny"): (
        "1 layer, 32 dimensions", ()),
    artifact_path("11_troubleshooting_03/small-text/no-dropout"): (
        "2,000 characters of text", ("overfitting",)),
    artifact_path("11_troubleshooting_03/small-text/dropout"): (
        "the same, dropout 0.2", ("overfitting",)),
    artifact_path("11_troubleshooting_04/runs/unshifted"): (
        "targets not shifted", ("too good",)),
    artifact_path("11_troubleshooting_04/runs/unmasked"): (
        "no causal mask", ("too good",)),
    artifact_path("11_troubleshooting_04/runs/padded"): (
        "padding counted", ()),
    artifact_path("11_troubleshooting_05/runs/zeros"): (
        "all-zero weights", ("not learning",)),
    artifact_path("11_troubleshooting_05/runs/large-init"): (
        "weights std 1", ("bad start",)),
    artifact_path("07_training/baby-char"): ("chapter 7, characters", ()),
    artifact_path("07_training/baby-bpe"): ("chapter 7, BPE", ()),
    artifact_path("10_evaluation_02/small"): ("chapter 10's model", ()),
}
diagnosis_rows, mismatches = [], []
for folder, (done, expected) in RUNS.items():
    found = tuple(finding.problem for finding in diagnose(read_run(folder)))
    if found != expected:
        mismatches.append((folder.name, found, expected))
    diagnosis_rows.append((folder.name, done, ", ".join(found) or "—",
                           "yes" if found == expected else "NO"))
Table(diagnosis_rows, ["run", "what was done", "diagnose finds",
                       "as expected"])

# %%
#| echo: false
if pick(smoke=False, book=True):  # the quick profile's runs are too short
    assert not mismatches, mismatches

# %% [markdown]
# The checks find what was done to each run they were tuned on, and
# nothing in the healthy runs of chapters 7 and 10. Two rows say what
# they cannot see. The tiny model looks healthy, and by its curves it
# is: a model too small for the text still learns. The padded run has a
# large gap between its training and validation losses, but no rule
# calls it a failure, because a loss that counts padding is a wrong
# number, not a wrong shape. Diagnosis from curves is a first look, not
# a proof; samples and the checks of "Bugs whose curves lie" are the
# second. (These runs are the book's: the quick profile that `make test`
# runs trains each for a few dozen steps, too few to show most failures,
# so there the table is drawn but not checked, and the unit tests check
# each rule on histories made to show it.)
#
# ## The command
#
# `mlxllm diagnose` runs the checks on one or more run directories,
# prints each report, and exits with status 1 when it found a problem,
# so that a script can stop on it. `--plot FILE` draws the runs as this
# chapter's figures are drawn. The train command now records a
# divergence with `record_failure` before it reports it, so a run that
# stopped on a NaN can be diagnosed too. Here it is on two runs of this
# chapter:

# %%
from mlxllm.cli import main

status = main(["diagnose",
               str(artifact_path("11_troubleshooting_01/runs/no-warmup")),
               str(artifact_path("11_troubleshooting_02/runs/log-zero"))])
print(f"exit status {status}")
