# %% [markdown]
# # Summary
#
# Data parallelism trains one model with several processes, each with a
# whole copy of the model and its own slice of every batch, and one
# all-reduce of the gradient per optimizer step. Because the loss of a
# batch is the mean of its slices' losses and a gradient is linear, the
# averaged gradient is the whole batch's gradient, and every process
# applies the same update to the same weights. You checked that in one
# process, then on two processes through MLX's ring backend, and then
# end to end: `mlxllm train` with one process and with two trained the
# same model to rounding, and a two-process run resumed from the
# checkpoint its rank 0 wrote. Gradient accumulation composes with it:
# the processes still exchange the gradient once per step.
#
# The measurements say when it pays. On this two-core machine two
# processes share the cores of one, so whatever they gain can only come
# from time one process left idle; what the machine showed reliably is
# the cost of the exchange itself. On
# several Macs, computed from the full preset's FLOPs at assumed rates
# and the links' nominal speeds, the exchange of a {{ full_mib:.0f }} MiB
# gradient decides: gigabit Ethernet loses to a single fast Mac, and
# Thunderbolt, on its nominal rate, brings four Macs close to four
# times one. And a scaling law fitted to {{ grid_runs }} short runs of the book's
# own models says what the compute is for: within the range it saw, a
# bigger budget is best spent on a bigger model trained on more tokens,
# while its prediction for the full preset, far outside that range,
# shows how little one decade of small runs can say about the next two.
#
# `mlxllm.distributed` exports:
#
# - `launch(command, processes)`, which runs a command as several local
#   processes on the ring backend and raises when one fails, and
#   `free_port_range(count)`;
# - `average_by_hand(grads, group)`, one `all_sum` per array;
# - `ShardedSampler`, a process's rows of the batch every process draws;
# - `rank_seed(seed, step, rank)` and `DataParallelTrainer`, chapter
#   8's trainer as one of several processes;
# - `StepTiming` and `time_data_parallel(model_config, train_config,
#   steps)`, the step and the all-reduce timed in a group;
# - `fit_scaling(params, tokens, losses, exponents)` and
#   `scaling_loss(fit, params, tokens)`, the law of @eq-scaling.
#
# `mlxllm train --processes N` trains with N local processes;
# `mlx.launch --hostfile FILE -- mlxllm train ...` with several
# machines. Chapter 8's `make_accumulating_step` gained an `average`
# argument, which is where the processes meet.
#
# # Exercises
#
# 1. ★ Write the hostfile that lets `mlx.launch` start a two-process
#    run on two Macs on the same network, with the ring backend, and the
#    command that starts `mlxllm train` with it. What must be the same
#    on both Macs before it can work?
# 2. ★ From @tbl-macs's formulas: how many windows must the global
#    batch of the full preset hold for the exchange to take at most a
#    tenth of a two-Mac step over gigabit Ethernet, at 4 TFLOP/s per
#    Mac? What does that batch do to the learning rate?
# 3. ★★ `nn.average_gradients` groups the gradient's arrays into
#    buffers of `all_reduce_size` bytes. Time it on two processes for
#    the baby model's gradient with `all_reduce_size=0` (one `all_sum`
#    per array) and with the default, and explain the difference.
# 4. ★★ Show that `rank_seed` matters: with dropout on, compare the
#    dropout mask two ranks draw at the same step when both seed with
#    `step_seed` and when each uses `rank_seed`.
# 5. ★★★ Write a ring all-reduce yourself with `mx.distributed.send`
#    and `recv`: a reduce-scatter in which each process ends with the
#    sum of one chunk, then an all-gather. Check it against `all_sum`
#    on three processes, and count the bytes each process sends against
#    @eq-ring-bytes.
# 6. ★★ Refit @eq-scaling without the grid's shortest runs, and again
#    without its narrowest model. How far do the exponents and the
#    prediction for the full preset move? What does that say about the
#    prediction's uncertainty?

# %%
#| echo: false
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.book import artifact_path
from mlxllm.model import GPTConfig, count_parameters

full_mib = 4 * count_parameters(GPTConfig.full(65)) / 2**20
grid_runs = len(list(artifact_path("12_distributed_04/runs").iterdir()))
