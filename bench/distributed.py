"""Benchmark data parallelism here: step time, communication time, ring bandwidth.

    .venv/bin/python bench/distributed.py --repeats 3

1. For the baby and the full preset, with their own global batches (12 x 64 and 64 x 256
   tokens), a DataParallelTrainer step with 1 and with 2 processes on this machine and
   the all-reduce of the gradient alone in the 2-process group
   (`mlxllm.distributed.time_data_parallel`), the median over the repeats of each run's
   median; the all-reduce's share of the 2-process step.
2. The ring backend's all-reduce on localhost, 2 processes, for buffers of 1 to 64 MiB:
   median seconds and the buffer's bytes per second.
Processes are started with `mlxllm.distributed.launch` (the ring backend on localhost).
Prints Markdown tables for bench/RESULTS.md. Target (issue 16): the communication time per
step for both presets at 2 processes and the fraction of the step it takes; the measured
ring all-reduce bandwidth.
"""

from __future__ import annotations  # noqa: I001  (mlxllm before mlx.core: it loads OpenBLAS)

import argparse
import json
import statistics
import sys
import time

import mlxllm  # noqa: F401
import mlx.core as mx
from mlxllm.distributed import StepTiming, launch, time_data_parallel
from mlxllm.hardware import describe_machine
from mlxllm.train import preset

VOCAB = 65  # Tiny Shakespeare's characters
STEPS = {"baby": 20, "full": 3}
BUFFER_MIB = (1, 4, 16, 64)


def timing_worker(name: str, steps: int) -> None:
    """In each launched process: time the preset; rank 0 prints the result as JSON."""
    model_config, train_config = preset(name, VOCAB)
    timing = time_data_parallel(model_config, train_config, steps, repeats=5)
    if mx.distributed.init().rank() == 0:
        print(json.dumps(timing.__dict__))


def bandwidth_worker(mib: int, repeats: int) -> None:
    """In each launched process: all_sum a float32 buffer of `mib` MiB; rank 0 prints the
    median seconds."""
    group = mx.distributed.init()
    buffer = mx.ones((mib * 2**20 // 4,))
    mx.eval(mx.distributed.all_sum(buffer, group=group))  # connect, warm up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        mx.eval(mx.distributed.all_sum(buffer, group=group))
        times.append(time.perf_counter() - started)
    if group.rank() == 0:
        print(statistics.median(times))


def run_worker(processes: int, *arguments: str) -> str:
    """This script in worker mode, as `processes` processes; rank 0's output."""
    return launch([sys.executable, __file__, "--worker", *arguments], processes,
                  timeout=3600).stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--presets", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "timing":
            timing_worker(rest[0], int(rest[1]))
        else:
            bandwidth_worker(int(rest[0]), int(rest[1]))
        return

    machine = ", ".join(f"{key} {value}" for key, value in describe_machine().items())
    print(f"{machine}; median of {args.repeats} runs\n")
    print("| preset | parameters' gradient | 1 process | 2 processes | all-reduce (2) "
          "| share of the 2-process step |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.presets:
        runs: dict[int, list[StepTiming]] = {1: [], 2: []}
        for _ in range(args.repeats):
            for processes in (1, 2):  # side by side within each repeat
                printed = run_worker(processes, "timing", name, str(STEPS[name]))
                runs[processes].append(StepTiming(**json.loads(printed)))
        one = statistics.median(t.step_seconds for t in runs[1])
        two = statistics.median(t.step_seconds for t in runs[2])
        reduce = statistics.median(t.all_reduce_seconds for t in runs[2])
        size = runs[2][0].gradient_bytes / 2**20
        print(f"| {name} | {size:.1f} MiB | {1e3 * one:,.0f} ms | {1e3 * two:,.0f} ms | "
              f"{1e3 * reduce:,.1f} ms | {reduce / two:.1%} |")

    print("\n| buffer | all-reduce, 2 processes | buffer bytes per second |")
    print("|---:|---:|---:|")
    for mib in BUFFER_MIB:
        seconds = statistics.median(
            float(run_worker(2, "bandwidth", str(mib), "7")) for _ in range(args.repeats))
        print(f"| {mib} MiB | {1e3 * seconds:.1f} ms | {mib * 2**20 / seconds / 1e9:.2f} GB/s |")


if __name__ == "__main__":
    main()
