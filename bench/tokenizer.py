"""Benchmark chapter 3's tokenizer on Tiny Shakespeare.

    MLXLLM_DATA=... .venv/bin/python bench/tokenizer.py
    .venv/bin/python bench/tokenizer.py --plain-sizes 512 --repeats 1   # quicker

For each vocabulary size: training time of the plain trainer (only for
--plain-sizes: it recounts every pair before every merge and takes minutes; it is
given the chunks already split, so its speed-up column understates the fast one's
lead), of `BPETokenizer.train` (the fast trainer, split included) and of SentencePiece
BPE (lossless settings, as in the chapter); encode
throughput of a freshly loaded tokenizer (empty chunk cache) on the whole corpus; and
characters per token on the validation split. Times are medians of --repeats runs.
Prints a Markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import sentencepiece as spm

import mlxllm  # noqa: F401
from mlxllm.data import load_corpus, split_train_val
from mlxllm.tokenizer import BPETokenizer, pretokenize, train_bpe_plain


def median_time(run: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def train_sentencepiece(text: str, vocab_size: int, folder: Path) -> spm.SentencePieceProcessor:
    prefix = folder / f"sp{vocab_size}"
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()), model_prefix=str(prefix),
        model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
        character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
        num_threads=2, minloglevel=2,
    )
    return spm.SentencePieceProcessor(model_file=f"{prefix}.model")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 4096])
    parser.add_argument("--plain-sizes", type=int, nargs="*", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    text = load_corpus()
    train, val = split_train_val(text)
    chunks = [c.encode("utf-8") for c in pretokenize(train)]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            merges = size - 256
            fast_s, tokenizer = median_time(
                partial(BPETokenizer.train, train, vocab_size=size), args.repeats)
            plain = "not run"
            if size in args.plain_sizes:
                plain_s, plain_merges = median_time(
                    partial(train_bpe_plain, chunks, merges), 1)
                assert plain_merges == tokenizer.merges, "the trainers disagree"
                plain = f"{plain_s:.1f} s ({plain_s / fast_s:.0f}×)"
            sp_s, sp = median_time(partial(train_sentencepiece, train, size, Path(folder)),
                                   args.repeats)
            path = Path(folder) / f"ours{size}.bpe"
            tokenizer.save(path)
            encode_times = []
            for _ in range(args.repeats):
                fresh = BPETokenizer.load(path)  # empty per-chunk cache
                start = time.perf_counter()
                fresh.encode(text)
                encode_times.append(time.perf_counter() - start)
            megabytes = len(text.encode("utf-8")) / 1e6
            ours_cpt = len(val) / len(tokenizer.encode(val))
            sp_cpt = len(val) / len(sp.encode(val))
            rows.append((size, plain, f"{fast_s:.2f} s", f"{sp_s:.2f} s",
                         f"{megabytes / statistics.median(encode_times):.1f}",
                         f"{ours_cpt:.3f}", f"{sp_cpt:.3f}",
                         f"{100 * (ours_cpt / sp_cpt - 1):+.1f}%"))
            print(rows[-1], flush=True)
    print()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; Tiny Shakespeare "
          f"train split ({len(train):,} characters); median of {args.repeats}.")
    print()
    print("| vocab | plain trainer (speed-up of fast) | fast trainer | SentencePiece | "
          "encode MB/s | chars/token ours | chars/token SentencePiece | ours vs SP |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
