# %% [markdown]
# # Chapter 12
#
# The solutions that need several processes run them on this machine
# through `launch`, as the chapter does.

# %%
import json
import sys
import tempfile
from pathlib import Path

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.distributed import launch, rank_seed
from mlxllm.model import GPTConfig, count_parameters, train_flops_per_token
from mlxllm.train import step_seed

scripts = Path(tempfile.mkdtemp())


def run_script(source: str, processes: int) -> str:
    """Save `source` to a file, run it as `processes` processes and
    return what they printed, in rank order."""
    script = scripts / "script.py"
    script.write_text(source)
    return launch([sys.executable, str(script)], processes,
                  timeout=600).stdout


# %% [markdown]
# ## Exercise 12.1
#
# `mlx.launch` reads a JSON hostfile: the backend, and for each process
# the name to reach its machine by SSH and the IP addresses the ring
# connects over. Two Macs, one process each:

# %%
hostfile = {
    "backend": "ring",
    "hosts": [{"ssh": "studio.local", "ips": ["192.168.1.20"]},
              {"ssh": "macbook.local", "ips": ["192.168.1.21"]}],
}
(scripts / "hosts.json").write_text(json.dumps(hostfile, indent=1))
print((scripts / "hosts.json").read_text())

# %% [markdown]
# Then, on the first Mac, from the repository (it cannot run here: this
# machine has no second Mac to reach):

# %%
#| eval: false
# mlx.launch --hostfile hosts.json -- \
#     /Users/you/mlx-llm/.venv/bin/mlxllm train --preset baby

# %% [markdown]
# Before it works: the first Mac must reach the second by SSH without a
# password (`ssh macbook.local` succeeds); the same Python environment
# must sit at the same path on both, with the same version of MLX and
# of this repository, since every rank runs the same command; the
# corpus must be on both; the ports of the ring must be open between
# them. Only rank 0 writes checkpoints, so the run directory lives on
# the first Mac; to resume, copy it to the same path on the second,
# because every rank reads the checkpoint it resumes from.
#
# ## Exercise 12.2
#
# With $P$ Macs, a batch of $B$ windows, $F$ FLOPs per window and a
# rate $R$ per Mac, a step computes for $FB/(PR)$ and exchanges for
# $E$, which does not depend on $B$. The exchange is at most a tenth of
# the step when $FB/(PR) \ge 9E$, that is $B \ge 9EPR/F$.

# %%
full = GPTConfig.full(65)
window_flops = train_flops_per_token(full) * full.context
gradient_bytes = 4 * count_parameters(full)
processes, rate, link = 2, 4e12, 1e9
exchange = 2 * (processes - 1) / processes * gradient_bytes * 8 / link
needed = 9 * exchange * processes * rate / window_flops
print(f"exchange {1e3 * exchange:.0f} ms; batch of at least "
      f"{needed:,.0f} windows ({needed / 64:.0f} times the preset's 64)")

# %% [markdown]
# A batch that much larger changes the optimisation, not just the
# arithmetic per step: at a fixed number of tokens it means that many
# times fewer steps, and the learning rate has to be found again (the
# square-root rule gives a first guess of
# {{ (needed / 64) ** 0.5:.1f }} times the preset's, to be checked with
# chapter 11's range test). Past some batch size, a larger batch no
# longer buys a proportionally better gradient, and the extra compute
# is wasted; on a slow link the better answer is fewer, faster Macs.
#
# ## Exercise 12.3

# %%
BUFFERS = """\
import time
import mlxllm
import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten, tree_map
from mlxllm.model import GPT, GPTConfig

group = mx.distributed.init()
model = GPT(GPTConfig.baby(65))
gradient = tree_map(mx.ones_like, model.trainable_parameters())
mx.eval(gradient)
for size in (0, 32 * 2**20):
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        mx.eval(nn.average_gradients(gradient, group, all_reduce_size=size))
        times.append(time.perf_counter() - started)
    if group.rank() == 0:
        print(size, len(tree_flatten(gradient)), np.median(times))
"""
repeats = pick(smoke=3, book=15)
printed = run_script(BUFFERS.replace("REPEATS", str(repeats)), 2)
(_, arrays, per_array), (_, _, grouped) = [
    [float(word) for word in line.split()] for line in printed.splitlines()]
Table([["one all_sum per array", f"{arrays:.0f}", 1e3 * per_array],
       ["buffers of 32 MiB", "1", 1e3 * grouped]],
      ["all_reduce_size", "exchanges", "median ms"], digits=1)

# %%
#| echo: false
if grouped < per_array:
    buffer_verdict = (f"Here one exchange per array took "
                      f"{per_array / grouped:.1f} times as long as one "
                      "exchange of them all")
else:
    buffer_verdict = (f"Here, on localhost, one exchange per array was "
                      f"the faster, {grouped / per_array:.1f} times "
                      "faster than one exchange of them all")

# %% [markdown]
# The gradient is {{ arrays:.0f }} arrays. {{ buffer_verdict }}. Each
# exchange pays a fixed cost whatever its size (a round of messages
# around the ring, a wait for the slower process), and grouping pays
# instead for a copy of the whole gradient into one buffer and back out.
# On localhost a round of messages costs microseconds, so the copies,
# computed on the same two busy cores, can cost more than the
# exchanges they save. Over a network every exchange waits for at least
# one trip between the machines, so {{ arrays:.0f }} exchanges a step
# pay that wait {{ arrays:.0f }} times; that is the case grouping is
# made for, and the case to measure on your own link before changing
# `all_reduce_size`.
#
# ## Exercise 12.4

# %%
seed, step, dropout = 1337, 10, 0.1
shape = (6, 64, 128)


def kept(rank_seeds: bool, rank: int) -> mx.array:
    """The units that dropout keeps in a rank's rows at the step."""
    mx.random.seed(rank_seed(seed, step, rank) if rank_seeds
                   else step_seed(seed, step))
    return mx.random.bernoulli(1 - dropout, shape)


for rank_seeds in (False, True):
    same = mx.mean(kept(rank_seeds, 0) == kept(rank_seeds, 1)).item()
    print(f"{'rank_seed' if rank_seeds else 'step_seed'}: the two ranks' "
          f"masks agree on {same:.1%} of the units")
expected = (1 - dropout) ** 2 + dropout ** 2

# %% [markdown]
# With one seed for every rank the masks are identical: rank 1's rows
# drop exactly the units rank 0's rows drop, a correlation between the
# two halves of the batch that one process drawing one mask for the
# whole batch never has. With `rank_seed` they agree on the fraction
# two independent masks agree on, $0.9^2 + 0.1^2$ =
# {{ expected:.0%}}. How much correlated masks would hurt is a question
# for an experiment; the point is that they are not the training the
# one-process run does.
#
# ## Exercise 12.5
#
# A ring all-reduce on $P$ processes cuts the array into $P$ chunks. In
# the reduce-scatter, at each of $P - 1$ rounds every process sends one
# chunk to its right neighbour and adds the chunk it receives from its
# left to its own copy; after them, process $r$ holds the full sum of
# chunk $r + 1$ (modulo $P$). The all-gather passes those finished
# chunks around the ring in $P - 1$ more rounds.
#
# One trap: a send on the ring backend waits until its receiver takes
# the data. If every process sends first, every process waits for a
# neighbour that is itself waiting, forever; the first draft of this
# solution did exactly that, and the build would have hung but for the
# timeout `run_script` passes to `launch`. Even ranks send first and odd
# ranks receive first, which breaks the cycle for any number of
# processes: rank 0's send is always taken by rank 1, which receives
# first.

# %%
RING = """\
import mlxllm
import mlx.core as mx

group = mx.distributed.init()
rank, size = group.rank(), group.size()
right, left = (rank + 1) % size, (rank - 1) % size
mx.random.seed(rank)
data = mx.random.normal((size * 1000,))
chunks = list(mx.split(data, size))
sent_bytes = 0


def exchange(send: int, receive: int) -> mx.array:
    global sent_bytes
    outgoing = mx.distributed.send(chunks[send], right, group=group)
    incoming = mx.distributed.recv_like(chunks[receive], left, group=group)
    order = [outgoing, incoming] if rank % 2 == 0 else [incoming, outgoing]
    for operation in order:  # a send waits for its receiver
        mx.eval(operation)
    sent_bytes += chunks[send].nbytes
    return incoming


for round in range(size - 1):  # reduce-scatter
    send, receive = (rank - round) % size, (rank - round - 1) % size
    chunks[receive] = chunks[receive] + exchange(send, receive)
for round in range(size - 1):  # all-gather
    send, receive = (rank + 1 - round) % size, (rank - round) % size
    chunks[receive] = exchange(send, receive)
mine = mx.concatenate(chunks)
reference = mx.distributed.all_sum(data, group=group)
gap = mx.abs(mine - reference).max().item()
print(rank, gap, sent_bytes, data.nbytes)
"""
ring = [[float(word) for word in line.split()]
        for line in run_script(RING, 3).splitlines()]
for rank, gap, sent, size in ring:
    print(f"rank {rank:.0f}: largest difference from all_sum {gap:.1e}; "
          f"sent {sent:,.0f} bytes = {sent / size:.3f} S "
          f"(2(P-1)/P = {2 * 2 / 3:.3f})")

# %%
#| echo: false
assert all(gap < 1e-5 and abs(sent / size - 4 / 3) < 1e-9
           for _, gap, sent, size in ring)

# %% [markdown]
# The hand-written ring gives `all_sum`'s result to rounding (the sums
# are added in another order), and each process sends $4/3$ of the
# array, as @eq-ring-bytes says for three processes.

# %% [markdown]
# ## Exercise 12.6
#
# The grid's runs are in the chapter's artifacts, one directory each;
# the refits leave out the shortest runs, then the narrowest model.

# %%
from mlxllm.diagnose import read_run
from mlxllm.distributed import fit_scaling, scaling_loss
from mlxllm.train import preset

grid = []
for folder in sorted(artifact_path("12_distributed_04/runs").iterdir()):
    run = read_run(folder)
    config = GPTConfig(**run.model)
    steps = run.history["step"][-1]
    grid.append((count_parameters(config),
                 steps * run.train["batch_size"] * config.context,
                 run.history["val_loss"][-1]))
grid = np.array(grid)
full_config, full_train = preset("full", 65)
full_point = (count_parameters(full_config),
              full_train.steps * full_train.batch_size * full_config.context)
subsets = {"all runs": np.ones(len(grid), bool),
           "without the shortest": grid[:, 1] > grid[:, 1].min(),
           "without the narrowest": grid[:, 0] > grid[:, 0].min()}
rows = []
for name, keep in subsets.items():
    fit = fit_scaling(*grid[keep].T, np.arange(0.05, 1.51, 0.01))
    rows.append([name, int(keep.sum()), fit[2], fit[4],
                 scaling_loss(fit, *full_point)])
Table(rows, ["fitted on", "runs", "alpha", "beta", "full preset"])

# %%
#| echo: false
full_predictions = [row[-1] for row in rows]
spread = max(full_predictions) - min(full_predictions)

# %% [markdown]
# Dropping {{ len(grid) - rows[1][1] }} of the {{ len(grid) }} runs moves the prediction for the full
# preset by up to {{ spread:.2f }} nats per character. With six or
# seven points and five free numbers, the exponents trade off against
# each other and against the floor, and an extrapolation over two
# decades inherits all of that freedom. A fit that moves this much when
# a third of its data goes has no claim to a second decimal; its
# prediction is a range, and the width of the range is the result.
