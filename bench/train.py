"""Benchmark training speed: MLX's step against a PyTorch twin, and where it goes.

    .venv/bin/python bench/train.py                      # every section
    .venv/bin/python bench/train.py --only frameworks ops --repeats 5 --steps 10

Sections (`--only`, default all):

- frameworks: tokens/s of one training step (forward, backward, clipping, AdamW)
  of `mlxllm.train.make_step` (compiled) and of the PyTorch twin in
  bench/torch_twin.py (eager, with the model's explicit attention or PyTorch's fused
  one; `--torch-compile` adds torch.compile), for the baby and the full preset. The
  full preset runs at `--full-batch` sequences (default 8, not its 64) to keep one
  step to a few seconds on a 2-core CPU.
- blas: the compiled baby step in two subprocesses, with the system OpenBLAS and with
  the reference BLAS bundled in MLX's wheel (MLXLLM_OPENBLAS set to a path that does
  not exist, so mlxllm preloads nothing).
- compile: the baby step with and without `mx.compile`.
- activation: the baby step with ReLU, GELU and SwiGLU, MLX and PyTorch, and MLX's
  GELU layer with `nn.gelu` in place of mlxllm's rational `gelu` (chapter 6).
- layernorm: the compiled baby step with chapter 6's LayerNorm (variance as
  `mx.square(x - mean)`), with the `(x - mean) ** 2` it was first written with, and
  with `mx.fast.layer_norm`.
- checkpointing: the compiled baby step with chapter 8's activation checkpointing
  (`mlxllm.laptop.use_checkpointing`), and its peak memory.
- phases: the baby step taken apart: forward (loss) only, forward and backward,
  clipping and the AdamW update only, the whole step; each with and without
  `mx.compile`.
- ops: the baby model's operations at its shapes (batch 12, context 64, 128 dims,
  4 heads, 512 hidden): forward, forward+backward, and forward+backward under
  `mx.compile`, with how many of each one step runs.

Both frameworks run with `--threads` threads (default 1: OpenBLAS's and PyTorch's
threads, which spin while they wait for each other, slowed PyTorch's baby step
15-30× and MLX's 1.6-4.5× when this 2-core machine was oversubscribed; use 2 on a quiet
machine). The machine is shared, so variants are timed side by side: within a repeat the
variants take turns step by step (the order rotates) for `--steps` steps each, a
variant's figure is its median step of the repeat, and the table gives the median
over `--repeats` repeats (`--full-repeats` for the full preset); ratios are taken
within a repeat, then their median. The BLAS section alternates subprocesses, one
per variant and repeat. PyTorch is optional;
without it the PyTorch rows are skipped with a note on how to install it.
"""

from __future__ import annotations  # noqa: I001  (mlxllm before mlx.core: it loads OpenBLAS)

import argparse
import ctypes
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from functools import partial

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS)
import mlx.core as mx
import mlx.nn as nn
import numpy as np

from mlxllm.blas import blas_in_use, find_openblas
from mlxllm.hardware import describe_machine
from mlxllm.laptop import use_checkpointing
from mlxllm.model import (GPT, FeedForward, GPTConfig, LayerNorm, attention_weights,
                          causal_mask, gelu, language_model_loss)
from mlxllm.train import TrainConfig, clip_by_global_norm, make_optimizer, make_step

try:
    import torch
    from torch_twin import make_torch_step  # noqa: I001  (bench/ is on sys.path)
except ImportError:
    torch = None

TORCH_HINT = ("PyTorch is not installed, so its rows are skipped; install it with\n"
              "  .venv/bin/pip install torch --index-url "
              "https://download.pytorch.org/whl/cpu")
VOCAB = 65  # Tiny Shakespeare's characters
SECTIONS = ("frameworks", "blas", "compile", "activation", "layernorm", "checkpointing",
            "phases", "ops")
Run = Callable[[], object]  # one step, waited for


def random_batches(config: GPTConfig, batch_size: int, count: int = 4) -> np.ndarray:
    """A few (inputs, targets) windows of random ids: speed ignores the text."""
    rng = np.random.default_rng(0)
    return rng.integers(0, config.vocab_size, (count, batch_size, config.context + 1))


def mlx_run(config: GPTConfig, batch_size: int, compile: bool = True,
            transform: Callable[[GPT], GPT] = lambda model: model) -> Run:
    mx.random.seed(0)
    model = transform(GPT(config))
    train = TrainConfig(batch_size=batch_size, compile=compile)
    optimizer = make_optimizer(train)
    step = make_step(model, optimizer, train)
    data = itertools.cycle([(mx.array(w[:, :-1].astype(np.int32)),
                             mx.array(w[:, 1:].astype(np.int32)))
                            for w in random_batches(config, batch_size)])

    def run() -> None:
        loss, norm = step(*next(data))
        mx.eval(loss, norm, model.parameters(), optimizer.state)

    return run


def torch_run(config: GPTConfig, batch_size: int, fused: bool = False,
              compile: bool = False) -> Run:
    torch.manual_seed(0)
    step = make_torch_step(config, fused_attention=fused, compile=compile)
    data = itertools.cycle([(torch.from_numpy(w[:, :-1]), torch.from_numpy(w[:, 1:]))
                            for w in random_batches(config, batch_size)])
    return lambda: step(*next(data)).item()


def measure(runs: dict[str, Run], steps: int, repeats: int,
            warmup: int = 2) -> dict[str, list[float]]:
    """Per variant, the median seconds per step of each repeat. Variants take
    turns step by step (the order rotates), so a burst of load on the shared
    machine hits them all alike."""
    for run in runs.values():  # compile, allocate, settle
        for _ in range(warmup):
            run()
    names = list(runs)
    medians: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        times: dict[str, list[float]] = {name: [] for name in names}
        for index in range(steps):
            shift = (repeat + index) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
        for name in names:
            medians[name].append(statistics.median(times[name]))
    return medians


def ratio(medians: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over repeats of name's time over reference's time."""
    return statistics.median(a / b for a, b in zip(medians[name], medians[reference]))


def load() -> str:
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def print_step_table(medians: dict[str, list[float]], reference: str,
                     tokens: dict[str, int]) -> None:
    print(f"| variant | ms/step | tokens/s | time ÷ {reference} |")
    print("|---|---:|---:|---:|")
    for name, values in medians.items():
        seconds = statistics.median(values)
        print(f"| {name} | {1000 * seconds:.1f} | {tokens[name] / seconds:,.0f} | "
              f"{ratio(medians, name, reference):.2f} |")
    print(flush=True)


def section_frameworks(args: argparse.Namespace) -> None:
    if torch is None:
        print(TORCH_HINT)
    for name, batch, steps, repeats in (
            ("baby", 12, args.steps, args.repeats),
            ("full", args.full_batch, args.full_steps, args.full_repeats)):
        config = getattr(GPTConfig, name)(VOCAB)
        runs = {"MLX, compiled": mlx_run(config, batch)}
        if torch is not None:
            runs["PyTorch eager (twin)"] = torch_run(config, batch)
            runs["PyTorch eager, fused SDPA"] = torch_run(config, batch, fused=True)
            if args.torch_compile:
                runs["PyTorch compiled, fused SDPA"] = torch_run(config, batch, True, True)
        print(f"### {name}: context {config.context}, {config.n_layer} layers, "
              f"{config.n_embd} dims, batch {batch}; {load()}")
        medians = measure(runs, steps, repeats)
        print_step_table(medians, "MLX, compiled",
                         dict.fromkeys(runs, batch * config.context))


def set_threads(threads: int) -> None:
    """Use `threads` threads in OpenBLAS (MLX's matmuls) and in PyTorch."""
    if "OpenBLAS" in blas_in_use():
        ctypes.CDLL(find_openblas()).openblas_set_num_threads(threads)
    if torch is not None:
        torch.set_num_threads(threads)


def blas_child(args: argparse.Namespace) -> None:
    """Run in a subprocess: time the compiled baby step, print JSON."""
    config = GPTConfig.baby(VOCAB)
    run = mlx_run(config, 12)
    medians = measure({"step": run}, args.steps, 1)
    print(json.dumps({"seconds": medians["step"][0], "blas": blas_in_use()}))


def section_blas(args: argparse.Namespace) -> None:
    settings = {"system OpenBLAS": {},
                "MLX's bundled BLAS": {"MLXLLM_OPENBLAS": "/nonexistent/libopenblas.so",
                                       "PYTHONWARNINGS": "ignore"}}
    medians: dict[str, list[float]] = {name: [] for name in settings}
    blas = {}
    print(f"### BLAS: baby step, compiled, batch 12; {load()}")
    for _ in range(args.repeats):
        for name, extra in settings.items():
            command = [sys.executable, __file__, "--child-blas",
                       "--steps", str(args.blas_steps), "--threads", str(args.threads)]
            output = subprocess.run(command, env={**os.environ, **extra}, check=True,
                                    capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            medians[name].append(result["seconds"])
            blas[name] = result["blas"]
    for name, library in blas.items():
        print(f"- {name}: {library}")
    print()
    print_step_table(medians, "system OpenBLAS", dict.fromkeys(settings, 12 * 64))


def section_compile(args: argparse.Namespace) -> None:
    config = GPTConfig.baby(VOCAB)
    runs = {"mx.compile": mlx_run(config, 12),
            "no compile": mlx_run(config, 12, compile=False)}
    print(f"### mx.compile: baby step, batch 12; {load()}")
    print_step_table(measure(runs, args.steps, args.repeats), "mx.compile",
                     dict.fromkeys(runs, 12 * 64))


def swap_class(base: type, replacement: type) -> Callable[[GPT], GPT]:
    """A transform for `mlx_run` that turns every `base` module of the model
    into a `replacement` (a subclass with the same parameters)."""
    def transform(model: GPT) -> GPT:
        for _, module in model.named_modules():
            if isinstance(module, base):
                module.__class__ = replacement
        return model
    return transform


class MLXGeluFeedForward(FeedForward):
    """The GELU feed-forward layer with MLX's `nn.gelu` (its erf, and automatic
    differentiation) instead of mlxllm's rational `gelu`."""

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(nn.gelu(self.up_proj(x)))


def section_activation(args: argparse.Namespace) -> None:
    runs = {}
    for activation in ("relu", "gelu", "swiglu"):
        config = GPTConfig.baby(VOCAB, activation=activation)
        runs[f"MLX {activation}"] = mlx_run(config, 12)
        if activation == "gelu":
            runs["MLX gelu, nn.gelu"] = mlx_run(
                config, 12, transform=swap_class(FeedForward, MLXGeluFeedForward))
        if torch is not None:
            runs[f"PyTorch {activation}"] = torch_run(config, 12)
    if torch is None:
        print(TORCH_HINT)
    print(f"### activation: baby step, batch 12 (MLX compiled, PyTorch eager); {load()}")
    print_step_table(measure(runs, args.steps, args.repeats), "MLX gelu",
                     dict.fromkeys(runs, 12 * 64))


class PowerLayerNorm(LayerNorm):
    """LayerNorm with the variance written `(x - mean) ** 2`."""

    def __call__(self, x: mx.array) -> mx.array:
        mean = x.mean(axis=-1, keepdims=True)
        variance = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) * mx.rsqrt(variance + self.eps) * self.weight + self.bias


class FastLayerNorm(LayerNorm):
    """LayerNorm by MLX's fused `mx.fast.layer_norm`."""

    def __call__(self, x: mx.array) -> mx.array:
        return mx.fast.layer_norm(x, self.weight, self.bias, self.eps)


def section_layernorm(args: argparse.Namespace) -> None:
    config = GPTConfig.baby(VOCAB)
    runs = {"mx.square (chapter 6)": mlx_run(config, 12),
            "** 2": mlx_run(config, 12,
                            transform=swap_class(LayerNorm, PowerLayerNorm)),
            "mx.fast.layer_norm": mlx_run(config, 12,
                                          transform=swap_class(LayerNorm, FastLayerNorm))}
    print(f"### LayerNorm: baby step, compiled, batch 12; {load()}")
    print_step_table(measure(runs, args.steps, args.repeats), "mx.square (chapter 6)",
                     dict.fromkeys(runs, 12 * 64))


def section_checkpointing(args: argparse.Namespace) -> None:
    config = GPTConfig.baby(VOCAB)
    runs = {"plain": mlx_run(config, 12),
            "use_checkpointing": mlx_run(config, 12,
                                         transform=use_checkpointing)}
    print(f"### activation checkpointing: baby step, compiled, batch 12; {load()}")
    medians = measure(runs, args.steps, args.repeats)
    peaks = {}
    for name, run in runs.items():  # after measure's warm-up: no compilation
        mx.reset_peak_memory()
        run()
        peaks[name] = mx.get_peak_memory() / 2**20
    print("peak memory of one step: " + ", ".join(
        f"{name} {mib:.0f} MiB" for name, mib in peaks.items()) + "\n")
    print_step_table(medians, "plain", dict.fromkeys(runs, 12 * 64))


def section_phases(args: argparse.Namespace) -> None:
    """Forward, forward+backward, update, whole step; plain and compiled."""
    config, batch = GPTConfig.baby(VOCAB), 12
    window = random_batches(config, batch)[0]
    x, y = mx.array(window[:, :-1].astype(np.int32)), mx.array(window[:, 1:].astype(np.int32))
    runs: dict[str, Run] = {}
    for compiled in (False, True):
        label = "compiled" if compiled else "plain"
        mx.random.seed(0)
        model = GPT(config)
        train = TrainConfig(compile=compiled)
        optimizer = make_optimizer(train)
        optimizer.init(model.trainable_parameters())
        loss_and_grad = nn.value_and_grad(model, language_model_loss)
        grads = loss_and_grad(model, x, y)[1]
        mx.eval(grads)

        def forward(inputs, targets, model=model):
            return language_model_loss(model, inputs, targets)

        def backward(inputs, targets, model=model, loss_and_grad=loss_and_grad):
            return loss_and_grad(model, inputs, targets)

        def update(gradients, model=model, optimizer=optimizer, clip=train.grad_clip):
            clipped, norm = clip_by_global_norm(gradients, clip)
            optimizer.update(model, clipped)
            return norm

        if compiled:
            forward = mx.compile(forward, inputs=model.state)
            backward = mx.compile(backward, inputs=model.state, outputs=model.state)
            state = [model.state, optimizer.state]
            update = mx.compile(update, inputs=state, outputs=state)
        step = make_step(model, optimizer, train)
        runs[f"forward (loss), {label}"] = partial(
            lambda f: mx.eval(f(x, y)), forward)
        runs[f"forward + backward, {label}"] = partial(
            lambda f: mx.eval(f(x, y)), backward)
        runs[f"clip + AdamW update, {label}"] = partial(
            lambda f, g, m, o: mx.eval(f(g), m.parameters(), o.state),
            update, grads, model, optimizer)
        runs[f"whole step, {label}"] = partial(
            lambda s, m, o: mx.eval(s(x, y), m.parameters(), o.state),
            step, model, optimizer)
    print(f"### phases of the baby step (batch 12); {load()}")
    print_step_table(measure(runs, args.steps, args.repeats), "whole step, compiled",
                     dict.fromkeys(runs, batch * config.context))


def section_ops(args: argparse.Namespace) -> None:
    """Each operation of the baby model alone, at its shapes."""
    b, t, d, heads, hidden = 12, 64, 128, 4, 512
    layers = 4
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> mx.array:
        return mx.array(rng.standard_normal(shape).astype(np.float32) * 0.5)

    mask = causal_mask(t)
    heads_shape = (b, heads, t, d // heads)
    targets = mx.array(rng.integers(0, VOCAB, (b, t)).astype(np.int32))
    # name: (function, argument shapes, calls per step)
    ops = {
        "matmul 768×128 · 128×128 (q, k, v, out)": (
            lambda a, w: a @ w, [(b * t, d), (d, d)], 4 * layers),
        "matmul 768×128 · 128×512 (up)": (
            lambda a, w: a @ w, [(b * t, d), (d, hidden)], layers),
        "matmul 768×512 · 512×128 (down)": (
            lambda a, w: a @ w, [(b * t, hidden), (hidden, d)], layers),
        "matmul 768×128 · 128×65 (tied head)": (
            lambda a, w: a @ w.T, [(b * t, d), (VOCAB, d)], 1),
        "ReLU 768×512": (nn.relu, [(b, t, hidden)], layers),
        "GELU, mlxllm (rational erf, own backward) 768×512": (
            gelu, [(b, t, hidden)], layers),
        "GELU, nn.gelu (exact) 768×512": (nn.gelu, [(b, t, hidden)], layers),
        "GELU, tanh approximation 768×512": (nn.gelu_approx, [(b, t, hidden)], layers),
        "SwiGLU gate silu(g)·u 768×512": (
            lambda g, u: nn.silu(g) * u, [(b, t, hidden), (b, t, hidden)], layers),
        "LayerNorm (mlxllm)": (
            lambda a, w, c: LayerNorm.__call__(
                types.SimpleNamespace(weight=w, bias=c, eps=1e-5), a),
            [(b, t, d), (d,), (d,)], 2 * layers + 1),
        "LayerNorm, mx.fast.layer_norm": (
            lambda a, w, c: mx.fast.layer_norm(a, w, c, 1e-5),
            [(b, t, d), (d,), (d,)], 2 * layers + 1),
        "attention (mlxllm: scores, mask, softmax, ·V)": (
            lambda q, k, v: attention_weights(q, k, mask) @ v,
            [heads_shape] * 3, layers),
        "attention, mx.fast.scaled_dot_product_attention": (
            lambda q, k, v: mx.fast.scaled_dot_product_attention(
                q, k, v, scale=(d // heads) ** -0.5, mask="causal"),
            [heads_shape] * 3, layers),
        "cross-entropy 768×65": (
            lambda logits: nn.losses.cross_entropy(logits, targets, reduction="mean"),
            [(b, t, VOCAB)], 1),
    }
    runs: dict[str, Run] = {}
    calls = {}
    for name, (fn, shapes, count) in ops.items():
        arrays = [normal(*shape) for shape in shapes]
        out_shape = fn(*arrays).shape
        cotangent = normal(*out_shape) if out_shape else mx.array(1.0)

        def both(*inputs, fn=fn, cotangent=cotangent):
            return mx.vjp(fn, list(inputs), [cotangent])

        runs[f"{name}|fwd"] = partial(lambda f, a: mx.eval(f(*a)), fn, arrays)
        runs[f"{name}|fwd+bwd"] = partial(lambda f, a: mx.eval(f(*a)), both, arrays)
        runs[f"{name}|compiled fwd+bwd"] = partial(
            lambda f, a: mx.eval(f(*a)), mx.compile(both), arrays)
        calls[name] = count
    print(f"### operations of the baby model (batch 12, context 64); {load()}")
    medians = measure(runs, args.op_steps, args.repeats)
    print("| operation | fwd ms | fwd+bwd ms | compiled fwd+bwd ms | calls/step "
          "| ms/step (compiled fwd+bwd × calls) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, count in calls.items():
        cells = [1000 * statistics.median(medians[f"{name}|{kind}"])
                 for kind in ("fwd", "fwd+bwd", "compiled fwd+bwd")]
        print(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} | "
              f"{count} | {cells[2] * count:.2f} |")
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10,
                        help="timed steps per variant per repeat (baby)")
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--full-repeats", type=int, default=3)
    parser.add_argument("--full-batch", type=int, default=8)
    parser.add_argument("--blas-steps", type=int, default=3)
    parser.add_argument("--op-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of OpenBLAS and of PyTorch")
    parser.add_argument("--torch-compile", action="store_true",
                        help="add torch.compile rows (compiles for minutes on CPU)")
    parser.add_argument("--child-blas", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads(args.threads)
    if args.child_blas:
        blas_child(args)
        return
    machine = describe_machine()
    print("Machine: " + "; ".join(f"{k}: {v}" for k, v in machine.items()))
    if torch is not None:
        print(f"PyTorch {torch.__version__}")
    print(f"{args.threads} thread(s) for OpenBLAS and PyTorch")
    print(f"{time.strftime('%Y-%m-%d %H:%M')}; {load()}; median of {args.repeats} "
          f"repeats of {args.steps} steps (full preset: {args.full_steps})\n")
    for section in args.only:
        globals()[f"section_{section}"](args)
    print(f"done; {load()}")


if __name__ == "__main__":
    main()
