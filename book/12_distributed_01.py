# %% [markdown]
# # `mx.distributed` from scratch
#
# A distributed MLX program is one script started several times. Each
# copy calls `mx.distributed.init()`, which connects it to the others
# and returns a group: `group.size()` is the number of processes,
# `group.rank()` this one's number, from 0. Started alone, the same
# call returns a group of one, so a distributed program is also an
# ordinary one, which is how this chapter's notebook can call it.

# %%
#| echo: false
#| default_exp distributed
import re
import sys

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.data import cache_dir, encode_splits, load_corpus
from mlxllm.tokenizer import CharTokenizer

# %%
#| echo: false
#| export
import json
import os
import shlex
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_map

from mlxllm.data import BatchSampler

# %%
group = mx.distributed.init()
print(f"rank {group.rank()} of {group.size()}")
print(mx.distributed.all_sum(mx.array([1.0, 2.0]), group=group))

# %%
#| echo: false
assert group.size() == 1 and group.rank() == 0

# %% [markdown]
# The operation that matters is `all_sum`: every process passes an
# array of the same shape, and every process gets back the element-wise
# sum of all of them. In a group of one it returns its input.
#
# To see more than one process you need a launcher. `mlx.launch`, which
# comes with MLX, starts the program once per process and tells each its
# rank and the addresses of the others; with the ring backend the
# processes form a ring of TCP connections, in its simplest form each
# sending to its right neighbour and receiving from its left. Here is the first program any
# distributed system runs: every process contributes its rank plus one,
# and every process prints the sum. The listing is the script's text,
# which the cell saves to a file and starts twice with
# `mlx.launch -n 2 --backend ring`, both copies on this machine.

# %%
#| echo: false
#| export
def free_port_range(count: int) -> int:
    """The first of `count` consecutive TCP ports that are free on
    localhost now (the ring backend listens on one port per process)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except (OSError, OverflowError):
            continue
        return first
    raise RuntimeError(f"found no {count} consecutive free ports on "
                       "localhost")


# %%
HELLO = """\
import mlxllm  # loads OpenBLAS first on Linux
import mlx.core as mx

group = mx.distributed.init()
mine = mx.array([group.rank() + 1.0])
total = mx.distributed.all_sum(mine, group=group)
print(f"rank {group.rank()} of {group.size()}: sum {total.item():g}")
"""

scripts = Path(tempfile.mkdtemp())
hello_script = scripts / "hello.py"
hello_script.write_text(HELLO)
mlx_launch = str(Path(sys.executable).parent / "mlx.launch")
hello = subprocess.run([mlx_launch, "-n", "2", "--backend", "ring",
                        "--starting-port", str(free_port_range(2)), "--",
                        sys.executable, str(hello_script)],
                       capture_output=True, text=True, check=True).stdout
print(hello, end="")

# %%
#| echo: false
assert sorted(hello.splitlines()) == ["rank 0 of 2: sum 3",
                                      "rank 1 of 2: sum 3"]

# %% [markdown]
# Both processes hold the same sum, 1 + 2 = 3, and neither was told the
# other's address on its command line: the launcher passed it through
# the environment. The order of the two lines is the order in which
# they reached the launcher. (`--starting-port` picks the ports of the
# ring; the default, 32323 and up, would collide when two runs start at
# once, so the cell asks for free ones.)
#
# `mlx.launch` is the tool for several machines, where it starts the
# processes over SSH from a hostfile (the exercises write one for two
# Macs). For processes on one machine it has a trait that matters to a
# test suite: its exit code does not report a process that failed. The
# next script makes rank 1 fail between two `all_sum`s, so rank 0 loses
# its peer in the second.

# %%
FAIL = """\
import mlxllm
import mlx.core as mx

group = mx.distributed.init()
mx.eval(mx.distributed.all_sum(mx.ones(4), group=group))  # connected
if group.rank() == 1:
    raise SystemExit(3)
mx.eval(mx.distributed.all_sum(mx.ones(4), group=group))
"""
fail_script = scripts / "fail.py"
fail_script.write_text(FAIL)
failed = subprocess.run([mlx_launch, "-n", "2", "--backend", "ring",
                         "--starting-port", str(free_port_range(2)), "--",
                         sys.executable, str(fail_script)],
                        capture_output=True, text=True)
print("exit code of mlx.launch:", failed.returncode)
for line in failed.stderr.splitlines():
    if "exited" in line or "RuntimeError" in line:
        print(re.sub(r"\x1b\[[0-9;]*m", "", line).strip())  # no colours

# %%
#| echo: false
launcher_exit = failed.returncode
assert "exited with code" in failed.stderr

# %% [markdown]
# Both processes failed (rank 0 lost its connection, rank 1 exited with
# code 3), and the launcher's exit code was {{ launcher_exit }}, which a
# build, a test or a shell script reads as success. So the book and
# `mlxllm train --processes` start local processes with `launch` below,
# which does for one machine what `mlx.launch` does (a hostfile in JSON
# with one address per rank, and each process's rank in `MLX_RANK`) and
# adds what a build needs: free ports, the output of each rank in rank
# order, the other processes stopped when one fails, and an error that
# says which.

# %%
#| export
def launch(command: list[str], processes: int, capture: bool = True,
           check: bool = True, timeout: float | None = None
           ) -> subprocess.CompletedProcess:
    """Run `command` as `processes` processes on this machine, joined
    by MLX's ring backend over localhost. If one fails, the others get
    GRACE_SECONDS to finish, then are stopped; with `check`, that
    raises RuntimeError (naming their output when it was captured),
    else the code returned is rank 0's, or the first failure's."""
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    first = free_port_range(processes)
    ring = [[f"127.0.0.1:{first + rank}"] for rank in range(processes)]
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        (folder / "hosts.json").write_text(json.dumps(ring))
        outputs = [(folder / f"{rank}.out", folder / f"{rank}.err")
                   for rank in range(processes)]
        children = []
        for rank, (out, err) in enumerate(outputs):
            env = {name: value for name, value in os.environ.items()
                   if name not in ("MLX_RANK", "MLX_HOSTFILE")}
            if processes > 1:  # a group of one needs no ring
                env.update(MLX_RANK=str(rank),
                           MLX_HOSTFILE=str(folder / "hosts.json"))
            children.append(subprocess.Popen(
                command, env=env,
                stdout=out.open("w") if capture else None,
                stderr=err.open("w") if capture else None))
        codes = wait_all(children, timeout)
        stdout, stderr = ("".join(path.read_text() for path in paths)
                          if capture else None
                          for paths in zip(*outputs))
    failures = [f"rank {rank} exited with code {code}"
                for rank, code in enumerate(codes) if code != 0]
    if failures and check:
        raise RuntimeError(f"{processes} processes of {shlex.join(command)}"
                           f": {', '.join(failures)}"
                           + (f"\n{stdout}{stderr}" if capture else ""))
    code = codes[0] or next((code for code in codes if code != 0), 0)
    return subprocess.CompletedProcess(command, code, stdout, stderr)


# %%
#| echo: false
#| export
GRACE_SECONDS = 20.0


def wait_all(children: list[subprocess.Popen],
             timeout: float | None) -> list[int]:
    """Wait for every process and return their exit codes. When one
    fails, or after Ctrl-C (which the terminal sends to every process:
    they save and stop), the others get GRACE_SECONDS to finish on their
    own, then are stopped (a process waiting for a dead peer would wait
    forever); when time runs out, all are stopped at once."""
    deadline = None if timeout is None else time.monotonic() + timeout
    late = False
    try:
        while any(child.poll() is None for child in children):
            late = deadline is not None and time.monotonic() > deadline
            if late or any(child.poll() not in (None, 0)
                           for child in children):
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    grace = time.monotonic() + (0.0 if late else GRACE_SECONDS)
    for child in children:
        try:
            child.wait(max(0.0, grace - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.terminate()
            child.wait()
    if late:
        raise TimeoutError(f"processes still running after {timeout} s; "
                           "stopped them")
    return [child.returncode for child in children]


# %% [markdown]
# `wait_all`, not printed, polls the processes. When one fails it gives
# the others {{ GRACE_SECONDS:.0f }} seconds to finish on their own
# (rank 0 may be writing down a divergence that every rank saw), then
# stops them; after Ctrl-C, which a terminal sends to every process, it
# waits the same way while they save. The same failing script through
# `launch` is an error that names the failure, and the rest of this
# chapter gets the same protection:

# %%
try:
    launch([sys.executable, str(fail_script)], processes=2)
except RuntimeError as error:
    print(str(error).splitlines()[0].replace(sys.executable, "python")
          .replace(str(scripts), "..."))

# %%
#| echo: false
try:
    launch([sys.executable, str(fail_script)], processes=2)
    raise AssertionError("launch did not report the failure")
except RuntimeError as error:
    assert "rank 1 exited with code 3" in str(error)


def run_script(source: str, processes: int) -> str:
    """Save `source` to a file, run it as `processes` processes and
    return what they printed, in rank order."""
    script = scripts / "script.py"
    script.write_text(source)
    return launch([sys.executable, str(script)], processes,
                  timeout=600).stdout


# %% [markdown]
# ## Averaging a gradient by hand
#
# A gradient is a tree of arrays, one per parameter. Averaging it over
# the processes is one `all_sum` per array, divided by the number of
# processes:

# %%
#| export
def average_by_hand(grads: dict, group: mx.distributed.Group) -> dict:
    """Each array of a gradient tree summed over the processes of
    `group` and divided by their number: one all_sum per array."""
    return tree_map(lambda g: mx.distributed.all_sum(g, group=group)
                    / group.size(), grads)


# %% [markdown]
# That is correct, and slow in one way that matters on a network: the
# baby model has {{ baby_arrays }} parameter arrays, so a step would pay
# for {{ baby_arrays }} separate exchanges, each with its own round
# trips, most of them for arrays of a few hundred numbers. MLX's
# `nn.average_gradients` does the same arithmetic with fewer exchanges:
# it flattens the arrays, concatenates them into buffers of about
# `all_reduce_size` bytes (32 MiB by default, so the whole baby model
# is one buffer), sums each buffer with one `all_sum`, and cuts the
# result back into the original shapes.
#
# The next script checks both against the algebra of the chapter's
# opening, on two processes: each process takes its half of one batch
# and computes its gradient; rank 0 also computes the
# gradient of the whole batch and reports how far each average is from
# it.

# %%
AVERAGE = """\
import mlxllm
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlxllm.data import BatchSampler, cache_dir, encode_splits, load_corpus
from mlxllm.distributed import average_by_hand
from mlxllm.model import GPT, GPTConfig, language_model_loss
from mlxllm.tokenizer import CharTokenizer

group = mx.distributed.init()
text = load_corpus()
tokenizer = CharTokenizer.train(text)
train_ids, _ = encode_splits(tokenizer, text, cache_dir() / "tokens")
mx.random.seed(0)  # the same weights in every process
model = GPT(GPTConfig.baby(tokenizer.vocab_size))
inputs, targets = BatchSampler(train_ids, 12, 64, seed=0).sample()
rows = slice(6 * group.rank(), 6 * group.rank() + 6)
loss_and_grad = nn.value_and_grad(model, language_model_loss)
_, mine = loss_and_grad(model, inputs[rows], targets[rows])
averages = {"by hand": average_by_hand(mine, group),
            "nn.average_gradients": nn.average_gradients(mine, group)}
mx.eval(averages)  # every process must take part in every all_sum
if group.rank() == 0:
    _, whole = loss_and_grad(model, inputs, targets)
    reference = tree_flatten(whole)
    print(f"{len(reference)} arrays")
    for name, average in averages.items():
        gap = max(mx.abs(a - b).max().item() for (_, a), (_, b)
                  in zip(reference, tree_flatten(average)))
        print(f"{name}: largest difference from the whole batch {gap:.1e}")
"""
averaged = run_script(AVERAGE, processes=2)
print(averaged, end="")

# %%
#| echo: false
baby_arrays = int(averaged.split()[0])
average_gaps = [float(line.rsplit(" ", 1)[1])
                for line in averaged.splitlines()[1:]]
assert len(average_gaps) == 2 and max(average_gaps) < 1e-6

# %% [markdown]
# Both averages are the whole batch's gradient to float32 rounding.
# The script shows the other rule of data parallelism too: every process
# must start from the same weights. Here each seeds MLX's generator
# with the same number before building the model; `mlxllm train` does
# the same with the run's seed, and a resumed run loads the same
# checkpoint in every process.
#
# ## Each process its own rows
#
# Which windows does each process train on? The simplest rule that
# keeps the run equal to a one-process run is to let every process draw
# the whole batch from the shared seed, exactly as chapter 3's
# `BatchSampler` would, and keep only its own rows: process $p$ of $P$
# takes rows $pB/P$ to $(p+1)B/P - 1$. The rows of different processes
# are disjoint, together they are the batch one process would have
# drawn, and the sampler's state is the same in every process, so the
# checkpoint rank 0 writes resumes every one of them. Drawing $B$ random
# offsets to use $B/P$ of them costs microseconds; the windows themselves
# are cut only for the rows kept.

# %%
#| export
class ShardedSampler(BatchSampler):
    """Chapter 3's sampler for one of `processes` processes: every
    process draws the same batch from the shared seed and keeps its own
    rows, so the rows are disjoint and together are the whole batch."""

    def __init__(self, tokens: np.ndarray, batch_size: int, context: int,
                 seed: int, rank: int, processes: int) -> None:
        if not 0 <= rank < processes:
            raise ValueError(f"rank {rank} is not in [0, {processes})")
        if batch_size % processes:
            raise ValueError(
                f"a batch of {batch_size} windows does not split evenly "
                f"over {processes} processes; use a batch_size that is a "
                f"multiple of {processes}")
        super().__init__(tokens, batch_size, context, seed)
        self.rank, self.processes = rank, processes
        self.rows = batch_size // processes

    def sample(self) -> tuple[mx.array, mx.array]:
        """This process's rows of the batch: inputs and targets."""
        starts = self.rng.integers(0, len(self.tokens) - self.context,
                                   self.batch_size)
        mine = starts[self.rank * self.rows:(self.rank + 1) * self.rows]
        windows = self.tokens[mine[:, None] + self.offsets]
        windows = mx.array(windows.astype(np.int32))
        return windows[:, :-1], windows[:, 1:]


# %%
text = load_corpus()
train_ids, _ = encode_splits(CharTokenizer.train(text), text,
                            cache_dir() / "tokens")
whole_inputs, _ = BatchSampler(train_ids, 12, 64, seed=7).sample()
shards = [ShardedSampler(train_ids, 12, 64, seed=7, rank=rank,
                         processes=3).sample()[0] for rank in range(3)]
together = mx.concatenate(shards)
print("rows per process:", [shard.shape[0] for shard in shards])
print("together equal to one process's batch:",
      mx.array_equal(together, whole_inputs).item())

# %%
#| echo: false
assert mx.array_equal(together, whole_inputs).item()

# %% [markdown]
# Three samplers, one per rank, each return a third of the batch's
# rows, and stacked in rank order they are, number for number, the
# batch one process draws with the same seed.
