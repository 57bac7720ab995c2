"""Benchmark training quality: the baby character model's validation loss.

    .venv/bin/python bench/quality.py --seeds 1337 1338
    .venv/bin/python bench/quality.py --steps 200 --seeds 1   # a quick check

Trains `preset("baby", vocab)` (4 layers, 4 heads, 128 dims, context 64, batch 12,
2000 steps, no dropout, lr 1e-3 -> 1e-4 cosine after 100 warm-up steps) with
`mlxllm.train.Trainer` on Tiny Shakespeare characters, once per seed, and evaluates
the final model on the whole validation split (every window of 64, in order) in
nats per character. The target is nanoGPT's published figure for the same
configuration, 1.88 (README, "I only have a macbook": `--block_size=64
--batch_size=12 --n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000
--lr_decay_iters=2000 --dropout=0.0`), which nanoGPT estimates from 20 random
batches of the validation split. Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations  # noqa: I001  (mlxllm before mlx.core: it loads OpenBLAS)

import argparse
import statistics
import time

import mlxllm  # noqa: F401
import mlx.core as mx
from mlxllm.data import encode_splits, load_corpus, split_train_val
from mlxllm.hardware import describe_machine
from mlxllm.model import GPT, count_parameters
from mlxllm.tokenizer import CharTokenizer
from mlxllm.train import Trainer, preset

TARGET = 1.88  # nats/char, nanoGPT README


def train_once(seed: int, steps: int | None, eval_every: int, cache: str) -> dict:
    """One baby run with `seed`; its final validation loss and timings."""
    text = load_corpus()
    _, val_text = split_train_val(text)
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = encode_splits(tokenizer, text, cache)
    model_config, config = preset("baby", tokenizer.vocab_size)
    config.seed = seed
    config.eval_every = eval_every  # evaluation only; the training is the preset's
    if steps is not None:
        config.steps, config.eval_every = steps, min(eval_every, steps)
        config.warmup_steps = min(config.warmup_steps, steps // 10)
    mx.random.seed(seed)
    model = GPT(model_config)
    trainer = Trainer(model, config, train_ids, val_ids,
                      len(val_text) / len(val_ids), tokenizer.fingerprint(),
                      log=lambda line: print(f"  seed {seed}: {line}", flush=True))
    started = time.perf_counter()
    trainer.run()
    minutes = (time.perf_counter() - started) / 60
    history = trainer.history
    return {"seed": seed, "steps": config.steps, "val": history["val_loss"][-1],
            "best": min(history["val_loss"]),
            "train": statistics.mean(history["loss"][-50:]), "minutes": minutes,
            "parameters": count_parameters(model_config), "vocab": tokenizer.vocab_size,
            "val_chars": len(val_text)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[1337, 1338])
    parser.add_argument("--steps", type=int, default=None,
                        help="override the preset's 2000 steps (quick checks only)")
    parser.add_argument("--eval-every", type=int, default=1000,
                        help="steps between evaluations on the whole validation "
                        "split (each costs about as much as 150 training steps)")
    parser.add_argument("--cache", default="build/cache/bench-tokens")
    args = parser.parse_args()

    machine = describe_machine()
    runs = []
    for seed in args.seeds:
        runs.append(train_once(seed, args.steps, args.eval_every, args.cache))
        run = runs[-1]
        print(f"seed {seed}: val {run['val']:.4f} nats/char, "
              f"{run['minutes']:.1f} min", flush=True)
    median = statistics.median(run["val"] for run in runs)
    first = runs[0]
    print()
    print(f"Machine: {machine['platform']}, {machine['CPU cores']} cores, MLX "
          f"{machine['MLX']}, BLAS: {machine['BLAS']}. Baby preset, "
          f"{first['parameters']:,} parameters, vocab {first['vocab']}, "
          f"{first['steps']} steps; validation = all {first['val_chars']:,} "
          "characters of the split.")
    print()
    print("| seed | val nats/char (final) | best eval | train (last 50 steps) "
          "| minutes |")
    print("|---:|---:|---:|---:|---:|")
    for run in runs:
        print(f"| {run['seed']} | {run['val']:.4f} | {run['best']:.4f} | "
              f"{run['train']:.4f} | {run['minutes']:.1f} |")
    print(f"| median | {median:.4f} | | | |")
    print()
    verdict = "holds" if median <= TARGET else f"missed by {median - TARGET:.3f}"
    print(f"Target <= {TARGET} nats/char (nanoGPT): {verdict}.")


if __name__ == "__main__":
    main()
