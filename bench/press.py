"""Benchmark the press: cold build, warm rebuild, rebuild after a prose-only edit.

    .venv/bin/python bench/press.py                 # book profile (what `make pdf` runs)
    .venv/bin/python bench/press.py --profile smoke --repeats 5

Works on a copy of book/ in a temporary directory, so the real build/ and chapters
are untouched. The cold build runs once (it executes every chapter); warm and
prose-edit rebuilds run `--repeats` times each and report the median. Prints a
Markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import mlxllm  # noqa: F401
from mlxllm.press.__main__ import ROOT, BuildReport, build_pdf


def timed_build(book: Path, build: Path, profile: str) -> tuple[float, BuildReport]:
    start = time.perf_counter()
    report = build_pdf(book, build, profile, jobs=1)
    return time.perf_counter() - start, report


def edit_prose(book: Path, round_number: int) -> None:
    """Append a sentence to the preface's first paragraph: prose only, no code."""
    preface = next(book.glob("00_*.py"))
    text = preface.read_text(encoding="utf-8")
    marker = "# was made."
    preface.write_text(text.replace(marker, f"{marker} (Benchmark edit {round_number}.)", 1),
                       encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="book", choices=["smoke", "book"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        book = Path(shutil.copytree(ROOT / "book", Path(folder) / "book"))
        build = Path(folder) / "build"
        os.environ["MLXLLM_ARTIFACTS"] = str(build / "artifacts")
        cold, cold_report = timed_build(book, build, args.profile)
        print(f"cold: {cold:.1f} s  {cold_report}")
        warm, prose, per_page = [], [], []
        for round_number in range(args.repeats):
            seconds, report = timed_build(book, build, args.profile)
            assert report.executed == 0, "a rebuild with no change ran a chapter"
            warm.append(seconds)
            per_page.append(report.pdf_seconds / report.pages)
            print(f"warm: {seconds:.1f} s  {report}")
            edit_prose(book, round_number)
            seconds, report = timed_build(book, build, args.profile)
            assert report.executed == 0, "a prose-only edit ran a chapter"
            prose.append(seconds)
            print(f"prose edit: {seconds:.1f} s  {report}")
    print()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; profile "
          f"`{args.profile}`; {cold_report.pages} pages; median of {args.repeats}.")
    print()
    print("| build | seconds |")
    print("|---|---:|")
    print(f"| cold (executes every chapter) | {cold:.1f} |")
    print(f"| warm, no change | {statistics.median(warm):.1f} |")
    print(f"| after a prose-only edit | {statistics.median(prose):.1f} |")
    print(f"| PDF layout per page | {statistics.median(per_page):.3f} |")


if __name__ == "__main__":
    main()
