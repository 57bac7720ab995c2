"""Benchmark decoding: the key-value cache, the memory-bandwidth bound, speculative decoding.

    .venv/bin/python bench/generate.py --repeats 5
    .venv/bin/python bench/generate.py --target runs/baby --draft runs/draft

1. Cached against uncached greedy decoding, 256 new tokens after a 16-token prompt, batch
   1, for the baby and the full preset with untrained weights (the weights do not change
   the work), the two measured in turn within each repeat; the median of the repeats.
   Target (issue 13): cached at least 5 times the uncached tokens/s on the full preset.
2. At batch 1 a decode step reads every weight once, so the memory bandwidth bounds it:
   bound = bandwidth / bytes of weights. The bandwidth is measured here (reading and
   copying a 512 MiB array, the faster of the two) and the cached decode rate compared
   with the bound (target: at least 25%). Where the rest goes: the same step's matrix
   products alone, timed as one chain of vector-matrix products over the same weights.
3. Speculative decoding with trained models, when `--target` and `--draft` name runs
   (`mlxllm train ... --run-dir DIR`): the share of drafted tokens kept and the speed-up
   over the target alone, greedy and at temperature 1, for several draft lengths.
Prints Markdown tables for bench/RESULTS.md.
"""

from __future__ import annotations  # noqa: I001  (mlxllm before mlx.core: it loads OpenBLAS)

import argparse
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlxllm  # noqa: F401
import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from mlxllm.cli import load_model
from mlxllm.generate import (
    Sampler,
    SpeculationStats,
    decode_step,
    generate_tokens,
    prefill,
    speculative_tokens,
)
from mlxllm.hardware import describe_machine
from mlxllm.model import GPT, GPTConfig

PROMPT, NEW = 16, 256
VOCAB = 65  # Tiny Shakespeare's characters


def seconds(run: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def bandwidth(repeats: int, mib: int = 512) -> dict[str, float]:
    """GB/s of reading a float32 array of `mib` (a sum, in MLX and in NumPy) and of copying
    it (read + write, NumPy), each after one untimed run (the first touches the pages)."""
    a = mx.random.uniform(shape=(mib * 2**20 // 4,))
    mx.eval(a)
    host = np.array(a)
    out = np.empty_like(host)
    runs = {"read (mx.sum)": (lambda: mx.eval(mx.sum(a)), host.nbytes),
            "read (NumPy sum)": (lambda: host.sum(), host.nbytes),
            "copy (NumPy)": (lambda: np.copyto(out, host), 2 * host.nbytes)}
    rates = {}
    for name, (run, moved) in runs.items():
        run()
        rates[name] = moved / statistics.median(seconds(run) for _ in range(repeats)) / 1e9
    return rates


def weight_bytes(model: GPT) -> int:
    """Bytes of the model's parameters (the tied embedding counted once)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def greedy_rate(model: GPT, prompt: list[int], cache: bool) -> float:
    """Tokens per second of NEW greedy tokens."""
    return NEW / seconds(lambda: list(generate_tokens(model, prompt, NEW, temperature=0,
                                                      cache=cache)))


def decode_rate(model: GPT, prompt: list[int]) -> float:
    """Tokens per second of cached greedy decode steps alone (the prefill left out), until
    the window is full."""
    steps = model.config.context - len(prompt)
    logits, caches = prefill(model, prompt)
    token = int(mx.argmax(logits).item())
    began = time.perf_counter()
    for _ in range(steps):
        token = int(mx.argmax(decode_step(model, token, caches)).item())
    return steps / (time.perf_counter() - began)


def matmul_chain_rate(model: GPT, steps: int = 128) -> float:
    """Steps per second of only a decode step's vector-matrix products: every weight
    matrix once (the tied head too; nn.Linear and the head both compute x @ W.T),
    evaluated one step at a time as decoding does."""
    matrices = [w for name, w in tree_flatten(model.parameters())
                if w.ndim == 2 and "position" not in name]
    vectors = [mx.ones((1, w.shape[1])) for w in matrices]

    def step() -> None:
        mx.eval([v @ w.T for v, w in zip(vectors, matrices)])

    step()
    return steps / seconds(lambda: [step() for _ in range(steps)])


def cache_section(repeats: int, threads: str) -> None:
    mx.random.seed(0)
    prompt = np.random.default_rng(0).integers(0, VOCAB, PROMPT).tolist()
    bands = bandwidth(repeats)
    best = max(bands.values())
    print(f"\nmemory bandwidth (median of {repeats}): "
          + ", ".join(f"{name} {value:.1f} GB/s" for name, value in bands.items()))
    print("\n| preset | uncached tok/s | cached tok/s | speed-up | decode steps tok/s "
          "| weights MiB | bound tok/s | decode / bound | matmuls alone tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, config in (("baby", GPTConfig.baby(VOCAB)), ("full", GPTConfig.full(VOCAB))):
        model = GPT(config)
        model.eval()
        mx.eval(model.parameters())
        list(generate_tokens(model, prompt, 8, temperature=0))  # warm-up
        runs: dict[str, list[float]] = {"uncached": [], "cached": [], "decode": [],
                                        "matmuls": []}
        for _ in range(repeats):  # side by side within each repeat
            runs["uncached"].append(greedy_rate(model, prompt, cache=False))
            runs["cached"].append(greedy_rate(model, prompt, cache=True))
            runs["decode"].append(decode_rate(model, prompt))
            runs["matmuls"].append(matmul_chain_rate(model))
        ratios = [c / u for c, u in zip(runs["cached"], runs["uncached"])]
        med = {key: statistics.median(values) for key, values in runs.items()}
        size = weight_bytes(model)
        bound = best * 1e9 / size
        print(f"| {name} | {med['uncached']:.0f} | {med['cached']:.0f} | "
              f"{statistics.median(ratios):.2f} | {med['decode']:.0f} | {size / 2**20:.1f} | "
              f"{bound:.0f} | {med['decode'] / bound:.0%} | {med['matmuls']:.0f} |")
    print(f"\n(threads: {threads}; speed-up is the median of the per-repeat ratios)")


def speculative_section(target_dir: Path, draft_dir: Path, repeats: int) -> None:
    target, tokenizer = load_model(target_dir)
    draft, _ = load_model(draft_dir)
    target.eval()
    draft.eval()
    prompt = tokenizer.encode("ROMEO:\n")
    print(f"\nspeculative decoding: target {target_dir}, draft {draft_dir}, {NEW} tokens "
          f"after {len(prompt)} prompt tokens, median of {repeats}")
    print("\n| T | decoding | kept | tok/s | speed-up |")
    print("|---|---|---:|---:|---:|")
    for temperature in (0.0, 1.0):
        sampler = Sampler(temperature)
        list(speculative_tokens(target, draft, prompt, 16, sampler=sampler))  # warm-up
        alone, rates = [], {k: [] for k in (1, 2, 4, 8)}
        stats = {k: SpeculationStats() for k in rates}
        for seed in range(repeats):  # every setting once per repeat, side by side
            options = {"sampler": sampler, "seed": seed}
            alone.append(tokens_per_second(lambda options=options: generate_tokens(
                target, prompt, NEW, temperature=options["sampler"].temperature,
                seed=options["seed"])))
            for k in rates:
                rates[k].append(tokens_per_second(lambda k=k, options=options, count=stats[k]: (
                    speculative_tokens(target, draft, prompt, NEW, draft_tokens=k,
                                       stats=count, **options))))
        base = statistics.median(alone)
        print(f"| {temperature:g} | target alone | | {base:.0f} | 1.00 |")
        for k, values in rates.items():
            kept = stats[k].accepted / max(stats[k].drafted, 1)
            rate = statistics.median(values)
            print(f"| {temperature:g} | draft, k = {k} | {kept:.0%} | {rate:.0f} | "
                  f"{rate / base:.2f} |")


def tokens_per_second(stream: Callable[[], Iterator[int]]) -> float:
    """Tokens per second of running the iterator `stream()` makes to its end."""
    began = time.perf_counter()
    made = sum(1 for _ in stream())
    return made / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--target", type=Path, help="a trained run to draft for")
    parser.add_argument("--draft", type=Path, help="a smaller run with the same tokenizer")
    args = parser.parse_args()
    facts = describe_machine()
    print(", ".join(f"{key}: {value}" for key, value in facts.items()))
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    cache_section(args.repeats, os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    if args.target and args.draft:
        speculative_section(args.target, args.draft, args.repeats)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
