# %% [markdown]
# # A data-parallel trainer
#
# Chapter 7's `Trainer` and chapter 8's `MemorySavingTrainer` need four
# changes to run as one of several processes, and none of them touches
# the model:
#
# - **the batch**: a `ShardedSampler` gives the process its rows;
# - **the step**: chapter 8's accumulating step, with the mean gradient
#   passed through `nn.average_gradients` before clipping, so every
#   process clips and updates with the same averaged gradient. The
#   processes talk once per optimizer step, however many micro-batches
#   the step has. The loss the step reports is averaged too, so every
#   process logs the loss of the whole batch;
# - **randomness**: dropout draws from MLX's generator, which the
#   trainer re-seeds each step. With the same seed everywhere, every
#   process would drop the same units in its rows, a correlation one
#   process with the whole batch never has; so each rank other than 0
#   seeds from the step and its rank. With dropout on, a two-process run
#   therefore draws other masks than a one-process run, equally random
#   (a mask's numbers depend on its whole shape, so even rank 0's half
#   differs); the runs below, with dropout off, do the same arithmetic.
# - **evaluation and files**: the validation windows are split between
#   the processes and their summed losses combined, and only rank 0
#   logs and writes checkpoints. The others keep the run directory only
#   to know where rank 0 writes.

# %%
#| echo: false
#| default_exp distributed
import shutil

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.checkpoint import latest_checkpoint, read_checkpoint
from mlxllm.distributed import ShardedSampler

# %%
#| echo: false
#| export
from functools import partial
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.laptop import (MemorySavingConfig, MemorySavingTrainer,
                           make_accumulating_step,
                           mixed_precision_loss_and_grad)
from mlxllm.model import GPT
from mlxllm.train import StepFn, evaluate, step_seed

# %%
#| export
def rank_seed(seed: int, step: int, rank: int) -> int:
    """The dropout seed of a rank at a step: a one-process run's for
    rank 0, a seed of its own for every other rank."""
    if rank == 0:
        return step_seed(seed, step)
    return int(np.random.SeedSequence([seed, step, rank])
               .generate_state(1)[0])


class DataParallelTrainer(MemorySavingTrainer):
    """Chapter 8's trainer as one of the processes of `group`: its own
    rows of each batch, gradients averaged over the processes before
    each update, evaluation shared out, files written by rank 0 only."""

    def __init__(self, model: GPT, config: MemorySavingConfig,
                 train_tokens: np.ndarray, *args: Any,
                 group: mx.distributed.Group | None = None,
                 **kwargs: Any) -> None:
        self.group = group or mx.distributed.init()
        self.rank, self.processes = self.group.rank(), self.group.size()
        if self.rank != 0:
            kwargs.update(log=None, progress=False)
        rows = config.batch_size // self.processes
        if config.batch_size % self.processes or rows % config.accumulation:
            raise ValueError(
                f"batch_size={config.batch_size} must split into "
                f"{self.processes} processes x accumulation="
                f"{config.accumulation} equal micro-batches")
        super().__init__(model, config, train_tokens, *args, **kwargs)
        self.sampler = ShardedSampler(train_tokens, config.batch_size,
                                      model.config.context, config.seed,
                                      self.rank, self.processes)

    def build_step(self) -> StepFn:
        """Chapter 8's step, averaging the gradient over the processes
        before it clips; the loss it returns is the whole batch's."""
        loss_and_grad = None
        if self.config.precision == "mixed":
            loss_and_grad = mixed_precision_loss_and_grad(self.model)
        step = make_accumulating_step(
            self.model, self.optimizer, self.config, self.config.accumulation,
            loss_and_grad, partial(nn.average_gradients, group=self.group))

        def data_parallel_step(inputs: mx.array, targets: mx.array
                               ) -> tuple[mx.array, mx.array]:
            mx.random.seed(rank_seed(self.config.seed, self.step, self.rank))
            loss, norm = step(inputs, targets)
            return (mx.distributed.all_sum(loss, group=self.group)
                    / self.processes, norm)

        return data_parallel_step

    def val_nats_per_char(self) -> float:
        """Chapter 7's validation loss, each process scoring its share
        of the windows."""
        context = self.model.config.context
        windows = (len(self.val_tokens) - 1) // context
        bounds = np.linspace(0, windows, self.processes + 1).astype(int)
        first, last = bounds[self.rank], bounds[self.rank + 1]
        total = 0.0
        if last > first:
            self.model.eval()
            mine = self.val_tokens[first * context:last * context + 1]
            total = evaluate(self.model, mine, context) * (last - first)
            self.model.train()
        summed = mx.distributed.all_sum(mx.array(total), group=self.group)
        return summed.item() / windows / self.chars_per_token

    def save(self) -> Path:
        """Rank 0 writes the checkpoint; the others return its path."""
        if self.rank == 0:
            return super().save()
        return self.run_dir / f"step-{self.step:07d}"


# %% [markdown]
# The class is short because chapters 7 and 8 did the work; what it
# adds is where the processes meet. There are two meetings per step,
# the gradient's all-reduce inside the compiled update and the loss's
# `all_sum` after it, and one per evaluation. A process that reaches a
# meeting waits there for the others, so the processes keep in step
# without any other synchronisation; the price is that the slowest
# process sets the pace.
#
# ## Two processes, one run
#
# `mlxllm train` runs data-parallel when it is started under
# `mlx.launch`: it asks `mx.distributed.init()` for its group, and with
# more than one process it builds a `DataParallelTrainer`. Rank 0 does
# everything a one-process run does with files (the lock on the run
# directory, the tokenizer, the checkpoints, the log); the other ranks
# only compute. The flag `--processes N` starts the launcher itself:
#
#     mlxllm train --processes 2 --preset baby
#
# does what `mlx.launch -n 2 --backend ring -- mlxllm train --preset
# baby` does, through `launch`. `--batch-size` stays the global batch,
# so a run's recipe means the same with one process or many.
#
# Data parallelism divides the batch, not the model: every process
# still holds all the weights, their gradient and Adam's two moments,
# and only the activations shrink with its share of the batch. When the
# model itself does not fit one machine, the route is to shard the
# optimizer's state, the gradients and the weights across the processes
# (Rajbhandari et al., 2020), which this book does not build.
#
# The test of the whole chapter is the claim of its opening, on real
# runs: the baby model (dropout 0, as nanoGPT's baby recipe has it),
# {{ compare_steps }} steps at the preset's global batch, once with one
# process and once with two, through the command line.

# %%
#| output: false
from mlxllm.cli import main
from mlxllm.diagnose import read_run

compare_steps = pick(smoke=12, book=120)
common = ["--preset", "baby", "--steps", str(compare_steps),
          "--warmup-steps", str(compare_steps // 10),
          "--eval-every", str(compare_steps // 2),
          "--checkpoint-every", str(compare_steps // 2),
          "--eval-tokens", "8192", "--sample-tokens", "0"]
compare_runs = {}
for processes in (1, 2):
    run_dir = artifact_path(f"12_distributed_02/compare-{processes}")
    shutil.rmtree(run_dir, ignore_errors=True)
    code = main(["train", "--run-dir", str(run_dir),
                 "--processes", str(processes), *common])
    assert code == 0, f"the {processes}-process run failed"
    compare_runs[processes] = read_run(run_dir)

# %% [markdown]
# The two runs wrote the same kind of run directory, and their
# histories can be laid side by side.

# %%
#| label: tbl-one-two
#| tbl-cap: The baby model trained with one process and with two, the same global batch (the baby preset's), through `mlxllm train`. Losses are per token of the whole batch; the last rows are the validation losses, in nats per character, that each run's evaluation computed (split between the processes in the two-process run).
one, two = (compare_runs[p].history for p in (1, 2))
loss_gap = np.abs(np.array(one["loss"]) - np.array(two["loss"]))
rows = [[f"step {step}", one["loss"][step - 1], two["loss"][step - 1],
         f"{loss_gap[step - 1]:.1e}"]
        for step in (1, 2, compare_steps // 2, compare_steps)]
rows += [[f"validation, step {step:.0f}", a, b, f"{abs(a - b):.1e}"]
         for step, a, b in zip(one["eval_step"], one["val_loss"],
                               two["val_loss"])]
Table(rows, ["", "1 process", "2 processes", "difference"], digits=5)

# %%
#| echo: false
first_gap, largest_loss_gap = loss_gap[0], loss_gap.max()
val_gap = max(abs(a - b) for a, b in zip(one["val_loss"], two["val_loss"]))
weights = [read_checkpoint(latest_checkpoint(
    artifact_path(f"12_distributed_02/compare-{p}")))[1] for p in (1, 2)]
weight_gap = max(np.abs(np.array(weights[0][name])
                        - np.array(weights[1][name])).max()
                 for name in weights[0])
edge_steps = max(1, compare_steps // 6)
early_gap = float(np.median(loss_gap[:edge_steps]))
late_gap = float(np.median(loss_gap[-edge_steps:]))
ulp = float(np.spacing(np.float32(2.0)))
assert first_gap < 1e-5 and largest_loss_gap < 1e-4 and val_gap < 1e-4
assert late_gap <= 10 * max(early_gap, ulp)  # the prose: it does not grow

# %% [markdown]
# The first loss agrees to {{ first_gap:.0e }}: same weights, same
# windows, the mean taken in two halves. The difference does not grow:
# its median is {{ early_gap:.0e }} over the first
# {{ edge_steps }} steps and {{ late_gap:.0e }} over the last
# {{ edge_steps }}, the largest is {{ largest_loss_gap:.0e }}, and the
# final weights differ by at most {{ weight_gap:.0e }}. For a number
# between 2 and 4, float32's last bit is worth {{ ulp:.1e }}, so the
# runs differ by a few units in the last place. The two add the same
# numbers in different orders, and float32 addition is not associative;
# that is all. Over a much longer run the last bits can drift further
# (Adam divides each gradient by its own running size, so the rounding
# of a gradient near zero can become a step of visible size), so the
# tests of this chapter compare with stated tolerances: the runs are the
# same training, not the same bits.

# %%
#| label: fig-one-two
#| fig-cap: Left: the training loss per step of the one-process and the two-process run, which lie on top of each other. Right: the absolute difference at each step, on a log axis, with float32's last bit for numbers between 2 and 4 as a dotted line; steps where the two losses agree to the bit are left out (a log axis has no zero).
fig, (ax, gap_ax) = plt.subplots(1, 2, figsize=(7.0, 2.6))
steps = np.array(one["step"])
ax.plot(steps, one["loss"], label="1 process")
ax.plot(steps, two["loss"], linestyle="--", label="2 processes")
ax.set_xlabel("step")
ax.set_ylabel("loss (nats/token)")
ax.legend()
differs = loss_gap > 0
gap_ax.semilogy(steps[differs], loss_gap[differs], ".", color="C2")
gap_ax.axhline(ulp, color="0.4", linestyle=":", label="last bit")
gap_ax.set_ylim(ulp / 10, 1e-4)
gap_ax.set_xlabel("step")
gap_ax.set_ylabel("|difference| (nats/token)")
gap_ax.legend(loc="upper right")
fig.tight_layout()

# %% [markdown]
# ## A distributed run resumes
#
# Only rank 0 writes checkpoints, but every rank reads the one it wrote:
# the weights, the optimizer's moments, and the sampler's state, which
# is the same in every process because every process draws the whole
# batch. To check, the next cell takes the two-process run back to its
# checkpoint at step {{ compare_steps // 2 }}, as if it had been
# stopped there, and resumes it with two processes.

# %%
resumed_dir = artifact_path("12_distributed_02/resumed")
shutil.rmtree(resumed_dir, ignore_errors=True)
shutil.copytree(artifact_path("12_distributed_02/compare-2"), resumed_dir)
halfway = f"step-{compare_steps // 2:07d}"
shutil.rmtree(resumed_dir / f"step-{compare_steps:07d}")
(resumed_dir / "latest").write_text(halfway + "\n")
code = main(["train", "--run-dir", str(resumed_dir), "--resume",
             "--processes", "2", "--eval-tokens", "8192",
             "--sample-tokens", "0"])
assert code == 0
again = read_run(resumed_dir).history
after = slice(compare_steps // 2, None)  # the steps the resumed run took
resume_gap = np.abs(np.array(again["loss"][after])
                    - np.array(two["loss"][after])).max()
print(f"steps {compare_steps // 2 + 1} to {compare_steps}: largest "
      f"difference from the uninterrupted run {resume_gap:.1e}")

# %%
#| echo: false
assert resume_gap < 1e-5
resume_agreement = ("they do" if resume_gap == 0 else
                    f"they agree to {resume_gap:.0e}")

# %% [markdown]
# The resumed run retraces the uninterrupted one over the steps it took
# itself: each process drew the same rows from the restored sampler.
# Unlike the one- and two-process runs, these two add their numbers in
# the same order (same processes, same rows, same operations), so they
# can agree to the bit, and {{ resume_agreement }}.
