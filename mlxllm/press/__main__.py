"""The press's command line, used by the Makefile.

    python -m mlxllm.press export          # chapters -> mlxllm/*.py
    python -m mlxllm.press export-check    # fail when mlxllm/ is out of date
    python -m mlxllm.press run [CHAPTER…]  # execute chapters (cached)
    python -m mlxllm.press pdf             # execute, render build/html, build/book.pdf
    python -m mlxllm.press preview 07      # chapter 07 alone -> build/preview-07.pdf
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlxllm.book import PROFILES
from mlxllm.press.execute import ChapterRunError, dependencies, execute
from mlxllm.press.export import export, stale_modules
from mlxllm.press.read import Chapter, ChapterFormatError, read_book

ROOT = Path(__file__).resolve().parents[2]


def _chapters(names: list[str], book: Path) -> list[Chapter]:
    """The book's chapters, or those `names` choose with their parts and the chapters whose
    artifacts they read."""
    chapters = read_book(book)
    if not names:
        return chapters
    return with_upstream(chapters, [c for name in names for c in chosen(chapters, name)])


@dataclass
class BuildReport:
    """What a PDF build produced and where its time went."""

    pdf: Path
    pages: int
    executed: int
    execute_seconds: float
    html_seconds: float
    pdf_seconds: float
    laid_out: tuple[str, ...]  # the documents laid out again (a chapter's id, "frame")
    units: int  # chapters laid out on their own (the frame is one more document)

    def __str__(self) -> str:
        return (f"{self.pdf}: {self.pages} pages; {self.executed} chapters run "
                f"({self.execute_seconds:.1f} s), html {self.html_seconds:.1f} s, pdf "
                f"{self.pdf_seconds:.1f} s ({len(self.laid_out)} of {self.units + 1} "
                f"documents laid out: {', '.join(self.laid_out) or 'none'})")


def layout_cache(build: Path, profile: str) -> Path:
    """Where the chapters' laid-out pages are kept between builds."""
    return build / "cache" / profile / "layout"


LAST_GOOD = {"book.pdf": "book.last-good.pdf", "html/index.html": "html/index.last-good.html"}


def set_aside_last_build(build: Path) -> list[str]:
    """After a failed build: rename the previous PDF and HTML so that neither passes for
    the current book; say what moved where."""
    moved = []
    for current, kept in LAST_GOOD.items():
        if (build / current).exists():
            os.replace(build / current, build / kept)
            moved.append(f"{build / current} is from an earlier build: kept as {build / kept}")
    return moved


def build_pdf(book: Path, build: Path, profile: str, jobs: int,
              use_cache: bool = True) -> BuildReport:
    """Execute every chapter, render the HTML site, then the PDF. When a stage fails,
    the previous PDF and HTML are set aside (`set_aside_last_build`) and the error raised."""
    try:
        report = _build_pdf(book, build, profile, jobs, use_cache)
    except Exception:
        for note in set_aside_last_build(build):
            print(f"note: {note}", file=sys.stderr)
        raise
    for kept in LAST_GOOD.values():
        (build / kept).unlink(missing_ok=True)
    return report


def _build_pdf(book: Path, build: Path, profile: str, jobs: int,
               use_cache: bool) -> BuildReport:
    from mlxllm.press.pdf import write_pdf
    from mlxllm.press.render import render_book

    started = time.perf_counter()
    chapters = read_book(book)
    executed = execute(chapters, profile, build / "cache", ROOT, jobs=jobs, use_cache=use_cache)
    ran = time.perf_counter()
    html_path = render_book(executed, build / "html", profile)
    rendered = time.perf_counter()
    pdf = build / "book.pdf"
    layout = write_pdf(html_path, pdf, layout_cache(build, profile) if use_cache else None)
    done = time.perf_counter()
    return BuildReport(pdf, layout.pages, sum(not e.from_cache for e in executed),
                       ran - started, rendered - ran, done - rendered, layout.laid_out,
                       layout.units)


def chosen(chapters: list[Chapter], name: str) -> list[Chapter]:
    """The chapter `name` (its number, stem or file name) with its parts, in order."""
    def opener(chapter: Chapter) -> str:
        return chapter.continues or chapter.stem

    wanted = {opener(c) for c in chapters
              if name in (c.stem[:2], c.stem, c.path.name) or Path(name).name == c.path.name}
    if not wanted:
        raise SystemExit(f"error: no chapter {name!r} in the book")
    return [c for c in chapters if opener(c) in wanted]


def with_upstream(chapters: list[Chapter], wanted: list[Chapter]) -> list[Chapter]:
    """`wanted` and every chapter whose artifacts they read, directly or not."""
    stems = {c.stem for c in chapters}
    by_stem = {c.stem: c for c in chapters}
    needed, todo = set(), [c.stem for c in wanted]
    while todo:
        stem = todo.pop()
        if stem not in needed:
            needed.add(stem)
            todo += dependencies(by_stem[stem], stems)
    return [c for c in chapters if c.stem in needed]


def preview_pdf(book: Path, build: Path, profile: str, name: str, jobs: int) -> BuildReport:
    """One chapter's pages, with its numbers in the book (pages count from 1)."""
    from mlxllm.press.pdf import write_pdf
    from mlxllm.press.render import render_book

    started = time.perf_counter()
    chapters = read_book(book)
    wanted = chosen(chapters, name)
    executed = execute(with_upstream(chapters, wanted), profile, build / "cache", ROOT,
                       jobs=jobs)
    ran = time.perf_counter()
    shown = [e for e in executed if e.chapter in wanted]
    html_path = render_book(shown, build / "preview" / "html", profile, book=chapters)
    rendered = time.perf_counter()
    pdf = build / f"preview-{name}.pdf"
    layout = write_pdf(html_path, pdf, layout_cache(build, profile), prune=False)
    done = time.perf_counter()
    return BuildReport(pdf, layout.pages, sum(not e.from_cache for e in executed),
                       ran - started, rendered - ran, done - rendered, layout.laid_out,
                       layout.units)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlxllm.press")
    parser.add_argument("command", choices=["export", "export-check", "run", "pdf", "preview"])
    parser.add_argument("chapters", nargs="*",
                        help="chapters by number (07), stem or file (default: all); run "
                             "adds their parts and the chapters they read; preview takes one")
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
        elif args.command == "preview":
            if len(args.chapters) != 1:
                parser.error("preview takes one chapter, e.g. `preview 07`")
            started = time.perf_counter()
            report = preview_pdf(args.book, args.build, profile, args.chapters[0], jobs)
            print(f"{report}\nwrote {report.pdf} in {time.perf_counter() - started:.1f} s")
        else:
            print(build_pdf(args.book, args.build, profile, jobs, use_cache=not args.no_cache))
    except (ChapterFormatError, ChapterRunError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
