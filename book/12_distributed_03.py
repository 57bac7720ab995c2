# %% [markdown]
# # What communication costs
#
# Data parallelism divides the arithmetic of a step by the number of
# processes and adds one thing: each step, the processes exchange a
# gradient the size of the model. Whether that pays depends on how the
# time of the arithmetic saved compares with the time of the exchange.
# This section measures both here, then computes what several Macs
# would see from a step's FLOPs at assumed rates and the links' cited
# speeds.
#
# `time_data_parallel` runs in every process of a group and times two
# things with the real trainer: whole optimizer steps on random token
# ids, and the gradient's all-reduce alone (`nn.average_gradients` on a
# gradient-sized tree), each the median of several repeats. Started in
# one process it times the same trainer with nothing to exchange.

# %%
#| echo: false
#| default_exp distributed
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.book import Table, artifact_path, pick
from mlxllm.distributed import DataParallelTrainer, launch
from mlxllm.model import count_parameters, train_flops_per_token

# %%
#| echo: false
#| export
import dataclasses
import time
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map

from mlxllm.laptop import MemorySavingConfig
from mlxllm.model import GPT, GPTConfig
from mlxllm.train import TrainConfig

# %%
#| export
@dataclass(frozen=True)
class StepTiming:
    """Median seconds of one optimizer step and of its gradient's
    all-reduce, in a group of `processes`."""

    processes: int
    step_seconds: float
    all_reduce_seconds: float
    gradient_bytes: int
    busy_cores: float
    """CPU seconds over wall seconds of this process during the steps:
    how many cores it kept busy, on average."""


def time_data_parallel(model_config: GPTConfig, train_config: TrainConfig,
                       steps: int, repeats: int = 7,
                       group: mx.distributed.Group | None = None
                       ) -> StepTiming:
    """Time DataParallelTrainer steps on random ids (after one step that
    compiles) and the all-reduce of a gradient-sized tree alone."""
    group = group or mx.distributed.init()
    mx.random.seed(0)
    model = GPT(model_config)
    ids = np.random.default_rng(0).integers(
        0, model_config.vocab_size, 200_000).astype(np.uint16)
    config = MemorySavingConfig(**dataclasses.asdict(train_config))
    # validation ids and characters per token: unused, nothing evaluates
    trainer = DataParallelTrainer(model, config, ids, ids[:10_000], 1.0,
                                  log=None, group=group)
    trainer.one_step()  # compiles
    step_times, cpu_started = [], time.process_time()
    for _ in range(steps):
        started = time.perf_counter()
        trainer.one_step()
        step_times.append(time.perf_counter() - started)
    busy = (time.process_time() - cpu_started) / sum(step_times)
    gradient = tree_map(mx.ones_like, model.trainable_parameters())
    mx.eval(gradient)
    reduce_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        mx.eval(nn.average_gradients(gradient, group))
        reduce_times.append(time.perf_counter() - started)
    size = sum(g.nbytes for _, g in tree_flatten(gradient))
    return StepTiming(group.size(), float(np.median(step_times)),
                      float(np.median(reduce_times)), size, busy)


# %% [markdown]
# The chapter runs it with one process and with two, through `launch`,
# on the baby model with the baby recipe's global batch; rank 0 prints
# its numbers as JSON. The same call with a hidden size of 384, the
# full preset's width, but the baby's 4 layers and 64 positions, gives
# a gradient {{ wide_one.gradient_bytes / full_bytes:.0%}} the size of
# the full model's, with a step this machine can still afford.

# %%
TIMING = """\
import json, sys
import mlxllm
import mlx.core as mx
from mlxllm.distributed import time_data_parallel
from mlxllm.model import GPTConfig
from mlxllm.train import TrainConfig

width, steps = int(sys.argv[1]), int(sys.argv[2])
timing = time_data_parallel(GPTConfig.baby(65, n_embd=width),
                            TrainConfig(batch_size=12), steps)
if mx.distributed.init().rank() == 0:
    print(json.dumps(timing.__dict__))
"""
script = Path(tempfile.mkdtemp()) / "timing.py"
script.write_text(TIMING)
timing_steps = pick(smoke=2, book=12)
timings = {}
for width in (128, 384):
    for processes in (1, 2):
        printed = launch([sys.executable, str(script), str(width),
                          str(timing_steps)], processes).stdout
        timings[width, processes] = StepTiming(**json.loads(printed))

# %%
#| label: tbl-step-times
#| tbl-cap: Median time of one optimizer step of the baby model (the baby recipe's global batch) and of a wider variant, with one process and with two on this 2-core machine, and the median time of the gradient's all-reduce alone in the two-process group. The last column is the all-reduce's share of a two-process step.
rows = []
for width in (128, 384):
    one, two = timings[width, 1], timings[width, 2]
    rows.append([f"n_embd {width}", f"{one.gradient_bytes / 2**20:.1f} MiB",
                 f"{1e3 * one.step_seconds:.0f} ms",
                 f"{1e3 * two.step_seconds:.0f} ms",
                 f"{1e3 * two.all_reduce_seconds:.1f} ms",
                 f"{two.all_reduce_seconds / two.step_seconds:.0%}"])
Table(rows, ["model", "gradient", "1 process", "2 processes",
             "all-reduce", "share"])

# %%
#| echo: false
baby_one, baby_two = timings[128, 1], timings[128, 2]
wide_one, wide_two = timings[384, 1], timings[384, 2]
localhost_gbps = wide_two.gradient_bytes / wide_two.all_reduce_seconds / 1e9


def compared(name: str, one: StepTiming, two: StepTiming) -> str:
    """'faster/slower/no faster' for a model, with the ratio."""
    ratio = two.step_seconds / one.step_seconds
    if ratio < 0.95:
        return f"for the {name} two processes are faster ({ratio:.2f})"
    if ratio <= 1.05:
        return f"for the {name} they are no faster ({ratio:.2f})"
    return f"for the {name} they are slower ({ratio:.2f})"


speed_verdict = (
    "A step with two processes took, as a fraction of one process's step: "
    + compared("baby model", baby_one, baby_two) + "; "
    + compared("wider model", wide_one, wide_two))
busy = (f"{baby_one.busy_cores:.1f} and {wide_one.busy_cores:.1f} "
        f"cores' worth of CPU time per second of the step, of the "
        f"machine's {os.cpu_count()}")
faster = [two.step_seconds < 0.95 * one.step_seconds
          for one, two in ((baby_one, baby_two), (wide_one, wide_two))]
if all(faster):
    speed_reason = (
        f"One process alone used {busy}, yet a second process made both "
        "steps faster, so not all of that time was arithmetic: CPU time "
        "also counts threads that wait for work by spinning, and between "
        "small matrix products a step runs Python and short kernels on "
        "one thread. Two processes overlap one's waiting with the "
        "other's work")
elif not any(faster):
    speed_reason = (
        f"One process alone used {busy}: it already keeps the machine "
        "busy, so a second process splits the same cores and adds the "
        "exchange on top")
else:
    speed_reason = (
        f"One process alone used {busy}. The two results point different "
        "ways, and on this machine they change from run to run: two "
        "processes, each with several threads, contend for the same two "
        "cores, and which one waits when is up to the scheduler")

# %% [markdown]
# {{ speed_verdict }}. {{ speed_reason }}. These are medians of
# {{ timing_steps }} steps in one run on a shared machine, and another
# run can differ by tens of percent; `bench/distributed.py` repeats the
# measurement and `bench/RESULTS.md` keeps its medians. Whatever two
# processes gain on one machine can only come from time one process
# leaves idle, not from new compute: data parallelism cannot speed up
# work that already fills the machine. It pays when each process brings
# its own compute, another Mac or another GPU.
# What this machine can measure
# honestly is the exchange itself: an all-reduce of the wider model's
# {{ wide_two.gradient_bytes / 2**20:.1f }} MiB gradient takes
# {{ 1e3 * wide_two.all_reduce_seconds:.0f }} ms over localhost, about
# {{ localhost_gbps:.2f }} GB ({{ 8 * localhost_gbps:.1f }} Gb) of
# gradient per second, with the ring backend moving the data through
# TCP sockets and summing it on the same two cores the training uses.
#
# ## What several Macs would see
#
# On separate machines the arithmetic does divide, and the exchange
# runs over a real link. A ring all-reduce of $S$ bytes among $P$
# processes runs in two phases, a reduce-scatter and an all-gather, in
# each of which every process passes $(P-1)/P$ of the data to its
# neighbour, so each process sends
#
# $$\frac{2(P-1)}{P}\,S \text{ bytes}$$ {#eq-ring-bytes}
#
# per all-reduce, and receives as much: $S$ for two processes,
# approaching $2S$ as $P$ grows (Patarasuk & Yuan, 2009). Divided by a
# link's bandwidth, that is the least time the exchange can take.
#
# @tbl-macs computes, for the full preset (nanoGPT's model,
# {{ full_parameters / 1e6:.1f }} million parameters, a float32
# gradient of {{ full_bytes / 2**20:.0f }} MiB, a global batch of
# {{ full_batch }} windows of 256 tokens), the least time of the
# exchange over the nominal rate of each link, and what that leaves of
# the ideal speed-up when each Mac computes its share of a step at 1 or
# at 4 TFLOP/s, the bracket for a MacBook GPU that chapter 10 used
# (assumed rates, not measured): {{ 1e3 * step_flops / RATES[0]:.0f }}
# and {{ 1e3 * step_flops / RATES[1]:.0f }} ms for a whole step on one
# Mac. All of it is computed, none of it measured, and the rates are
# the links' nominal ones (Intel, 2020; Intel, 2023): real links deliver
# less, TCP over Thunderbolt included. Wi-Fi is left out: every Mac on
# it shares one channel that carries one transmission at a time, so the
# ring's arithmetic, which assumes a link per neighbour, does not apply;
# expect it to do worse than wired Ethernet.

# %%
#| label: tbl-macs
#| tbl-cap: Computed, not measured, on nominal link rates: one step of the full preset on P Macs. The exchange is the least time of the ring all-reduce of its gradient (the formula above); the speed-up is one Mac's step time over P Macs', each Mac computing 1/P of the step at an assumed 1 TFLOP/s (first figure) or 4 TFLOP/s (second) and then exchanging, without overlap. Link rates are the nominal ones in LINKS.
full_config = GPTConfig.full(65)
full_parameters = count_parameters(full_config)
full_bytes, full_batch = 4 * full_parameters, 64
step_flops = train_flops_per_token(full_config) * full_batch * 256
LINKS = {"1 Gb Ethernet": 1e9, "10 Gb Ethernet": 10e9,
         "Thunderbolt 4": 40e9, "Thunderbolt 5": 80e9}  # bits per second
RATES = (1e12, 4e12)


def exchange_seconds(size: float, processes: int, bits_per_second: float
                     ) -> float:
    """Least time of a ring all-reduce of `size` bytes."""
    return 2 * (processes - 1) / processes * size * 8 / bits_per_second


def speedup(processes: int, bits_per_second: float, rate: float) -> float:
    """One Mac's step time over P Macs' (compute shared, no overlap)."""
    alone = step_flops / rate
    return alone / (alone / processes
                    + exchange_seconds(full_bytes, processes,
                                       bits_per_second))


mac_rows = [[link] + [
    f"{1e3 * exchange_seconds(full_bytes, processes, bits):.0f} ms"
    for processes in (2, 4)] + [
    f"{speedup(processes, bits, RATES[0]):.2f} / "
    f"{speedup(processes, bits, RATES[1]):.2f}" for processes in (2, 4)]
    for link, bits in LINKS.items()]
Table(mac_rows, ["link", "exchange, 2 Macs", "4 Macs",
                 "speed-up, 2 Macs", "4 Macs"])

# %%
#| echo: false
gbe_two_fast = speedup(2, LINKS["1 Gb Ethernet"], RATES[1])
tb5_four_fast = speedup(4, LINKS["Thunderbolt 5"], RATES[1])
thunderbolt_ms = max(1e3 * exchange_seconds(full_bytes, processes, bits)
                     for processes in (2, 4)
                     for link, bits in LINKS.items() if "Thunder" in link)
assert gbe_two_fast < 1 < tb5_four_fast

# %% [markdown]
# The table says where data parallelism pays for this model. Over
# gigabit Ethernet, two fast Macs take longer per step than one
# ({{ gbe_two_fast:.2f }} times one Mac's speed): the
# {{ full_bytes / 2**20:.0f }} MiB gradient takes longer to cross the
# wire than the half step it saves. Over Thunderbolt, on its nominal
# rate, the exchange takes at most {{ thunderbolt_ms:.0f }} ms and four
# Macs come close to four times one ({{ tb5_four_fast:.2f }} times, at
# 4 TFLOP/s each). Two levers move a row without a faster link. A
# larger batch per step does more arithmetic per exchange, so its share
# shrinks (the exercises compute how much); and starting a layer's
# exchange while the backward pass is still computing the layers below
# hides part of it (overlap, which `nn.average_gradients` does not do:
# it waits for the whole gradient). MLX's JACCL backend replaces TCP
# over Thunderbolt with remote direct memory access for lower latency
# (MLX documentation); this machine cannot run it.
#
# ## Accumulation and data parallelism together
#
# Chapter 8 split a step into micro-batches to save memory; data
# parallelism splits it between processes. They compose: with $P$
# processes and $k$ micro-batches, each process computes $k$ gradients
# of $B/(Pk)$ windows and averages them, and the processes exchange the
# gradient once per step. The global batch, the one the optimizer sees,
# is still $B$, so the learning rate, the schedule and the result do
# not change; only the memory per process changes (a micro-batch's
# activations), while the exchanges stay at one per step. The run below repeats the two-process run of the
# last section with `--accumulation 2`, each process taking its half of
# the batch as two micro-batches.

# %%
#| output: false
from mlxllm.cli import main
from mlxllm.diagnose import read_run

accumulated_dir = artifact_path("12_distributed_03/accumulated")
shutil.rmtree(accumulated_dir, ignore_errors=True)
reference = read_run(artifact_path("12_distributed_02/compare-1"))
reference_steps = len(reference.history["loss"])
code = main(["train", "--run-dir", str(accumulated_dir),
             "--processes", "2", "--accumulation", "2", "--preset", "baby",
             "--steps", str(reference_steps),
             "--warmup-steps", str(reference_steps // 10),
             "--eval-every", str(reference_steps // 2),
             "--checkpoint-every", str(reference_steps // 2),
             "--eval-tokens", "8192", "--sample-tokens", "0"])
assert code == 0

# %%
accumulated = read_run(accumulated_dir).history
accumulated_gap = np.abs(np.array(accumulated["loss"])
                         - np.array(reference.history["loss"])).max()
print(f"2 processes x 2 micro-batches against 1 process, "
      f"{reference_steps} steps:\n"
      f"largest loss difference {accumulated_gap:.1e}, final validation "
      f"{accumulated['val_loss'][-1]:.4f} against "
      f"{reference.history['val_loss'][-1]:.4f} nats/char")

# %%
#| echo: false
assert accumulated_gap < 1e-3

# %% [markdown]
# The same training again, to rounding. If instead you add processes
# and keep each one's batch, the global batch grows with them, and the
# learning rate that suited the old batch no longer fits. A larger batch
# gives a less noisy gradient, which tolerates a larger step. For
# stochastic gradient descent, Goyal et al. (2017) scaled the learning
# rate in proportion to the batch, with a warm-up, and kept the accuracy
# of ImageNet training up to batches of 8,192 images; for Adam, whose
# step is already divided by the gradient's size, the analysis of
# Malladi et al. (2022) suggests the square root of the batch ratio
# instead. Both are starting points, not laws: chapter 11's range test,
# rerun at the new batch, is the check.
