"""The press's command line, used by the Makefile.

    python -m mlxllm.press export          # chapters -> mlxllm/*.py
    python -m mlxllm.press export-check    # fail when mlxllm/ is out of date
    python -m mlxllm.press run [CHAPTER…]  # execute chapters (cached)
    python -m mlxllm.press pdf             # execute, render build/html, build/book.pdf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlxllm.book import PROFILES
from mlxllm.press.execute import ChapterRunError, execute
from mlxllm.press.export import export, stale_modules
from mlxllm.press.read import Chapter, ChapterFormatError, read_book, read_chapter

ROOT = Path(__file__).resolve().parents[2]


def _chapters(names: list[str], book: Path) -> list[Chapter]:
    if not names:
        return read_book(book)
    return [read_chapter(Path(n)) for n in names]


@dataclass
class BuildReport:
    """What a PDF build produced and where its time went."""

    pdf: Path
    pages: int
    executed: int
    execute_seconds: float
    html_seconds: float
    pdf_seconds: float

    def __str__(self) -> str:
        return (f"{self.pdf}: {self.pages} pages; {self.executed} chapters run "
                f"({self.execute_seconds:.1f} s), html {self.html_seconds:.1f} s, pdf "
                f"{self.pdf_seconds:.1f} s ({self.pdf_seconds / self.pages:.3f} s/page)")


def build_pdf(book: Path, build: Path, profile: str, jobs: int,
              use_cache: bool = True) -> BuildReport:
    """Execute every chapter, render the HTML site, then the PDF."""
    from mlxllm.press.pdf import write_pdf
    from mlxllm.press.render import render_book

    started = time.perf_counter()
    chapters = read_book(book)
    executed = execute(chapters, profile, build / "cache", ROOT, jobs=jobs, use_cache=use_cache)
    ran = time.perf_counter()
    html_path = render_book(executed, build / "html", profile)
    rendered = time.perf_counter()
    pdf = build / "book.pdf"
    pages = write_pdf(html_path, pdf)
    done = time.perf_counter()
    return BuildReport(pdf, pages, sum(not e.from_cache for e in executed),
                       ran - started, rendered - ran, done - rendered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlxllm.press")
    parser.add_argument("command", choices=["export", "export-check", "run", "pdf"])
    parser.add_argument("chapters", nargs="*", help="chapter files (default: all)")
    parser.add_argument("--book", type=Path, default=ROOT / "book")
    parser.add_argument("--build", type=Path, default=ROOT / "build")
    parser.add_argument("--profile", default=None, choices=PROFILES)
    parser.add_argument("--jobs", type=int, default=None,
                        help="chapters run at once (default: 1 for book/full, whose "
                             "timings the book prints; 2 for smoke)")
    parser.add_argument("--no-cache", action="store_true", help="re-run every chapter")
    args = parser.parse_intermixed_args(argv)
    profile = args.profile or os.environ.get("MLXLLM_PROFILE", "book")
    jobs = args.jobs or (2 if profile == "smoke" else 1)
    try:
        if args.command == "export":
            for path in export(read_book(args.book), ROOT / "mlxllm"):
                print(f"wrote {path.relative_to(ROOT)}")
        elif args.command == "export-check":
            problems = stale_modules(read_book(args.book), ROOT / "mlxllm")
            if problems:
                print("mlxllm/ is out of date with book/ (run `make export`):", file=sys.stderr)
                print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
                return 1
            print("mlxllm/ matches the chapters")
        elif args.command == "run":
            execute(_chapters(args.chapters, args.book), profile, args.build / "cache",
                    ROOT, jobs=jobs, use_cache=not args.no_cache)
        else:
            print(build_pdf(args.book, args.build, profile, jobs, use_cache=not args.no_cache))
    except (ChapterFormatError, ChapterRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
