# %% [markdown]
# # When training goes wrong
#
# Tutorials that build a GPT tend to end with a troubleshooting table,
# four rows long: the loss does not decrease, so check the learning
# rate; the loss turns to NaN, so clip the gradient; the model writes
# gibberish, so make it bigger; training is too slow, so spread it over
# more machines. Each row is sound advice, and none of them is ever
# shown happening. A reader who meets one of these failures for the
# first time has no picture of what it looks like, and several failures
# that look alike have different causes.
#
# This chapter makes each failure happen on purpose. Every experiment is
# a short run of chapter 7's baby model, {{ lab_steps }} steps instead of
# 2,000, small enough that the chapter trains more than a dozen of
# them in about the time chapter 7 spent on one.
# For each failure you see the run that fails, its loss and gradient
# norm and, where they tell, its samples; how to recognise it; the fix;
# and the fixed run beside it. Some failures do not show in the curves
# at all, and the chapter says which. That makes this one of the longest
# chapters of the book: a failure you have only read about is the one
# you will not recognise, so each gets its own run and its own figure. At the end, the signatures go into
# `mlxllm diagnose`, a command that reads a run directory and says what
# it sees, and the four-row table comes back extended, each row pointing
# at the numbers behind it. On the map of chapter 1 this chapter sits
# beside the training loop: it is what you do when the loop's output
# looks wrong.
#
# ## The laboratory
#
# An experiment needs a control. Every run here is the baby model of
# chapter 7 on the character-level text, with chapter 7's recipe cut to
# {{ lab_steps }} steps: a warm-up of {{ lab_config.warmup_steps }}
# steps, a cosine down to a tenth of the peak, clipping at
# {{ lab_config.grad_clip }}, an evaluation every
# {{ lab_config.eval_every }} steps on the first
# {{ len(lab_val_ids):, }} characters of the validation split. The
# trainer of chapter 7 already records what diagnosis needs: the loss,
# learning rate and gradient norm of every step, and the validation loss
# of every evaluation, saved with each checkpoint. What it does not keep
# is the failure itself. When a loss or a gradient norm stops being a
# finite number, `Trainer` raises `TrainingDiverged` before anything
# else is saved, which protects the last good checkpoint and loses the
# evidence. `record_failure` writes the evidence down, next to the
# checkpoints, and `read_run` reads a run back: the history of its
# latest checkpoint, or of its failure if that came later.

# %%
#| default_exp diagnose
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.book import artifact_path, pick

# %%
#| echo: false
#| export
import dataclasses
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np

from mlxllm.checkpoint import CheckpointError, latest_checkpoint
from mlxllm.data import BatchSampler, encode_splits, load_corpus
from mlxllm.model import GPT, GPTConfig
from mlxllm.tokenizer import CharTokenizer, Tokenizer
from mlxllm.train import Trainer, TrainConfig, TrainingDiverged

FAILURE_FILE = "failure.json"

# %%
#| export
def record_failure(trainer: Trainer, error: TrainingDiverged) -> Path:
    """Write what a diverged run leaves behind, the history up to the
    last finite step and the error, to FAILURE_FILE in its run_dir."""
    if trainer.run_dir is None:
        raise ValueError("this Trainer has no run_dir to record into")
    record = {key: value for key, value in trainer.record().items()
              if key != "sampler"}
    record["failure"] = str(error)
    path = trainer.run_dir / FAILURE_FILE
    trainer.run_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record, indent=1))
    partial.replace(path)
    return path


# %% [markdown]
# A run directory may hold checkpoints, a failure, or both: a run that
# saved at step 200 and diverged at step 260 has the longer history in
# its failure. `read_run` takes whichever history is longer (the
# failure, if they are as long: it came after the checkpoint) and
# returns it as a `RunRecord`: the history, the model's and the recipe's
# settings, and the failure's message. It checks that what it read is a
# run's record, so that a damaged file is an error that names it rather
# than a `KeyError` three functions later. (That plumbing is in
# `mlxllm/diagnose.py`; the chapter does not print it.)

# %%
#| echo: false
#| export
@dataclass
class RunRecord:
    """What diagnosis reads from a run directory."""

    history: dict[str, list[float]]
    """The trainer's history: step, loss, learning_rate, grad_norm,
    eval_step and val_loss."""
    model: dict
    """The model's GPTConfig, as a dict."""
    train: dict
    """The run's TrainConfig, as a dict."""
    failure: str | None
    """TrainingDiverged's message, when the run ended in one."""


def read_json(path: Path) -> dict:
    """A JSON object from a file, or CheckpointError naming the file."""
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} cannot be read ({error})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} is damaged: not a JSON object")
    return record


def read_run(run_dir: Path) -> RunRecord:
    """The longest history a run directory holds: its latest checkpoint's
    or its recorded failure's."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} does not exist or is not a "
                              "directory")
    records = []
    if (run_dir / "latest").is_file():
        state = latest_checkpoint(run_dir) / "state.json"
        records.append(read_json(state) | {"failure": None})
    if (run_dir / FAILURE_FILE).is_file():
        records.append(read_json(run_dir / FAILURE_FILE))
    if not records:
        raise CheckpointError(f"{run_dir} holds no checkpoint and no "
                              f"{FAILURE_FILE}: not a run directory")
    record = max(records, key=lambda r: (len(r.get("history", {})
                                             .get("step", [])),
                                         r.get("failure") is not None))
    try:
        history = {name: list(map(float, record["history"][name]))
                   for name in ("step", "loss", "learning_rate",
                                "grad_norm", "eval_step", "val_loss")}
        run = RunRecord(history, dict(record["model"]),
                        dict(record["train"]), record["failure"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{run_dir}: its record is damaged (at "
                              f"{error})") from None
    if not history["step"] and run.failure is None:
        raise CheckpointError(f"{run_dir}: its record has no steps")
    return run


# %% [markdown]
# The laboratory itself is one small class. An `Experiment` holds the
# tokenized text and the model's shape; `run` trains one variation,
# given as changes to the recipe, in a fresh directory under its root,
# from the same seed every time, so that two runs differ only in what
# the experiment changed. A failure is recorded, not raised: a diverged
# run is a result here. Later sections pass a model, a trainer class or
# a batch sampler class of their own to plant a bug.

# %%
#| export
@dataclass
class Experiment:
    """Short runs of one model shape on one tokenized text, each in its
    own run directory under `root` (with the tokenizer, so that
    `mlxllm generate` and `load_model` read it), from the same seed."""

    root: Path
    train_ids: np.ndarray
    val_ids: np.ndarray
    model_config: GPTConfig
    base: TrainConfig
    tokenizer: Tokenizer
    chars_per_token: float = 1.0

    def run(self, name: str, model: GPT | None = None,
            trainer_class: type[Trainer] = Trainer,
            sampler_class: type[BatchSampler] = BatchSampler,
            **changes: object) -> Trainer:
        """Train the base recipe with `changes` into root/name (emptied
        first); a divergence is recorded in the run directory. A new
        peak learning rate keeps the base's ratio of floor to peak."""
        if "learning_rate" in changes and "min_learning_rate" not in changes:
            changes["min_learning_rate"] = (changes["learning_rate"]
                                            * self.base.min_learning_rate
                                            / self.base.learning_rate)
        config = dataclasses.replace(self.base, **changes)
        run_dir = Path(self.root) / name
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        self.tokenizer.save(run_dir / "tokenizer.txt")
        mx.random.seed(config.seed)
        if model is None:
            model = GPT(self.model_config)
        trainer = trainer_class(model, config, self.train_ids,
                                self.val_ids, self.chars_per_token,
                                self.tokenizer.fingerprint(),
                                run_dir=run_dir, log=None)
        trainer.sampler = sampler_class(self.train_ids, config.batch_size,
                                        model.config.context, config.seed)
        try:
            trainer.run()
        except TrainingDiverged as error:
            record_failure(trainer, error)
        return trainer


# %% [markdown]
# `character_lab` (not printed) sets up the chapter's laboratory in one
# call, so that each section of the chapter, which runs in a process of
# its own, builds the same one: chapter 7's baby model and character
# tokenizer, its recipe cut to `steps` steps with a tenth of them
# warm-up, eight evaluations, and one checkpoint at the end. Each later
# section starts by building its laboratory this way, in a cell the book
# does not print. The control run is the baby model at chapter 7's
# learning rate:

# %%
#| echo: false
#| export
def character_lab(root: Path, steps: int, val_chars: int,
                  token_cache: Path) -> Experiment:
    """The baby model on the character-level Tiny Shakespeare with
    chapter 7's recipe cut to `steps` steps, validated on the first
    `val_chars` characters of the validation split."""
    text = load_corpus()
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = encode_splits(tokenizer, text, token_cache)
    config = TrainConfig(steps=steps, warmup_steps=steps // 10,
                         eval_every=max(1, steps // 8),
                         checkpoint_every=steps)
    return Experiment(Path(root), train_ids, val_ids[:val_chars],
                      GPTConfig.baby(tokenizer.vocab_size), config,
                      tokenizer)


# %%
lab = character_lab(artifact_path("11_troubleshooting/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))
lab_steps, lab_config = lab.base.steps, lab.base
lab_val_ids, tokenizer = lab.val_ids, lab.tokenizer
uniform = math.log(tokenizer.vocab_size)
control = lab.run("control")
print(f"validation loss after {lab_steps} steps: "
      f"{control.history['val_loss'][-1]:.3f} nats/char")

# %% [markdown]
# Each figure in this chapter draws runs the same way: the training loss
# of every step as a thin line with its running median over
# {{ SMOOTHING }} steps on top, the validation loss as dots, and the
# gradient norm before clipping underneath, on a log scale. The median,
# unlike a mean, is not dragged up by a single bad step, so a spike
# shows in the thin line and not in the thick one. Both helpers go to
# `mlxllm.diagnose` (not printed); `mlxllm diagnose --plot` draws the
# same figure for any run directory.

# %%
#| echo: false
#| export
from matplotlib.figure import Figure

SMOOTHING = 15


def running_median(values: list[float], window: int = SMOOTHING
                   ) -> np.ndarray:
    """The median of each value and up to window - 1 values before it."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([np.median(values[max(0, i + 1 - window):i + 1])
                     for i in range(len(values))])


def plot_runs(runs: dict[str, RunRecord], loss_limits: tuple[float, float]
              | None = None) -> Figure:
    """Loss (per step, its running median, validation) over gradient
    norm, one colour per run, for runs of one model shape."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(6, 3.1), sharex=True,
        gridspec_kw={"height_ratios": [3, 2]})
    for index, (label, run) in enumerate(runs.items()):
        colour = f"C{index}"
        history = run.history
        top.plot(history["step"], history["loss"], color=colour,
                 linewidth=0.4, alpha=0.45)
        top.plot(history["step"], running_median(history["loss"]),
                 color=colour, label=label)
        top.plot(history["eval_step"], history["val_loss"], "o",
                 color=colour, markersize=3)
        bottom.plot(history["step"], history["grad_norm"], color=colour,
                    linewidth=0.6)
    if loss_limits is not None:
        top.set_ylim(*loss_limits)
    top.set_ylabel("loss (nats/char)")
    top.legend(fontsize="small")
    bottom.set_yscale("log")
    bottom.yaxis.set_minor_formatter(NullFormatter())
    bottom.set_ylabel("gradient norm")
    bottom.set_xlabel("step")
    return figure


# %% [markdown]
# @fig-control is the control run: the shape every later figure is
# compared with. The loss falls from $\ln {{ tokenizer.vocab_size }}
# = {{ uniform:.2f }}$, a uniform guess, to about
# {{ control.history['val_loss'][-1]:.2f }} in {{ lab_steps }} steps;
# the gradient norm starts high while the weights are far from anything
# useful and settles near the clipping threshold.

# %% [markdown]
# Keep that shape in mind, because every failure below is a departure
# from it, and most of them can be told apart by which part departs.
# A healthy run starts at $\ln V$, because a fresh model knows nothing
# and says so; a first loss far above it means the weights started too
# large. The loss then falls fast while the model learns what is cheap
# (character frequencies, spaces, common pairs) and slower after; a run
# that never makes the fast part had a learning rate too low, or weights
# that cannot learn, and one that makes it and then stalls high had a
# rate too high. The per-step loss is noisy but has no jumps of half a
# nat or more; jumps mean steps that were too large. The validation
# loss follows the training loss closely; a validation loss that turns
# up while training falls is overfitting, and one that is far from the
# training loss from the first evaluation means the two are not
# measuring the same thing. Last, the gradient norm starts high and
# settles; one that grows by orders of magnitude comes before a
# divergence.

# %%
#| echo: false
#| label: fig-control
#| fig-cap: The control run, chapter 7's baby model for 200 steps at chapter 7's learning rate. Thin line, the loss of each step; thick, its running median over the steps before (which lags where the loss falls fast); dots, validation loss. Below, the gradient norm before clipping.
plot_runs({"control": read_run(lab.root / "control")})
