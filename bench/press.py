"""Benchmark the press: cold build, warm rebuilds, prose edits and a preview.

    .venv/bin/python bench/press.py                          # book profile, the book as it is
    .venv/bin/python bench/press.py --profile smoke --pages 450 --repeats 3
    .venv/bin/python bench/press.py --html build/html --repeats 3   # layout only

Works on a copy of book/ in a temporary directory, so the real build/ and chapters
are untouched. The cold build runs once (it executes every chapter). With `--pages N`
the copy then grows to about N pages: main chapters are duplicated under new numbers
(09, 10, ...) with their labels renamed and "(copy)" after their titles, and each
copy's executed notebook is the original's, filed under the copy's cache key, so the
copies are rendered and laid out like new chapters without being run again. Every
other row runs `--repeats` times, interleaved, and reports the median, the range and
the mean one-minute load average at the start of its runs. With `--html DIR` (a
rendered book, such as build/html after `make pdf`) it times only the layout of that
HTML: one WeasyPrint document (in a process of its own, WeasyPrint's import included)
against the press's cold and warm layouts. Prints a
Markdown table to paste into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlxllm  # noqa: F401
from mlxllm.press.__main__ import ROOT, BuildReport, build_pdf, layout_cache, preview_pdf
from mlxllm.press.execute import cache_key, dependencies
from mlxllm.press.pdf import PdfReport, write_pdf
from mlxllm.press.read import Chapter, read_book

DEFINED_LABEL = re.compile(r"#\|\s*label:\s*((?:fig|tbl|lst)-[\w-]+)|\{#(eq-[\w-]+)\}")


class Row:
    """One line of the results table: a name and the runs measured for it."""

    def __init__(self, name: str) -> None:
        self.name, self.seconds, self.loads, self.laid_out = name, [], [], set()

    def time(self, build: Callable[[], object]) -> object:
        gc.collect()  # no garbage left by the previous run is collected on this one's clock
        self.loads.append(os.getloadavg()[0])
        start = time.perf_counter()
        result = build()
        self.seconds.append(time.perf_counter() - start)
        if isinstance(result, BuildReport | PdfReport):
            self.laid_out.add(len(result.laid_out))
        print(f"{self.name}: {self.seconds[-1]:.1f} s  {result}", flush=True)
        return result

    def markdown(self) -> str:
        laid = "/".join(str(n) for n in sorted(self.laid_out)) or "–"
        return (f"| {self.name} | {statistics.median(self.seconds):.1f} | "
                f"{min(self.seconds):.1f}–{max(self.seconds):.1f} | {laid} | "
                f"{statistics.mean(self.loads):.1f} |")


def chapter_pages(report: BuildReport, chapters: list[Chapter]) -> dict[str, int]:
    """Pages of each main chapter, from where the PDF outline says chapters start."""
    from pypdf import PdfReader

    reader = PdfReader(report.pdf)
    top = [i for i in reader.outline if not isinstance(i, list)]
    starts = [reader.get_destination_page_number(i) for i in top] + [len(reader.pages)]
    pages = {}
    for chapter in chapters:
        for index, item in enumerate(top):
            if item.title.endswith(chapter.title):
                pages[chapter.stem] = starts[index + 1] - starts[index]
    return pages


def copy_chapter(chapter: Chapter, number: int, book: Path) -> Path:
    """A duplicate of `chapter` numbered `number`: its own labels, "(copy)" in its title."""
    text = chapter.path.read_text(encoding="utf-8")
    for match in DEFINED_LABEL.finditer(chapter.path.read_text(encoding="utf-8")):
        label = match[1] or match[2]
        text = re.sub(rf"(?<![\w-]){re.escape(label)}(?![\w-])", f"{label}-copy{number}", text)
    text = text.replace(f"# # {chapter.title}\n", f"# # {chapter.title} (copy)\n", 1)
    path = book / f"{number:02d}_{chapter.stem[3:]}_copy.py"
    path.write_text(text, encoding="utf-8")
    return path


def grow_book(book: Path, build: Path, profile: str, cold: BuildReport, target: int) -> str:
    """Duplicate main chapters until the book has about `target` pages; say which."""
    chapters = read_book(book)
    mains = [c for c in chapters if c.part == "main" and not c.continues]
    pages = chapter_pages(cold, mains)
    total, number, copied = cold.pages, int(mains[-1].stem[:2]), []
    while total < target:
        original = mains[len(copied) % len(mains)]
        number += 1
        copy_chapter(original, number, book)
        copied.append(original)
        total += pages[original.stem] + pages[original.stem] % 2
    grown = read_book(book)
    stems = {c.stem for c in grown}
    cache = build / "cache" / profile
    keys = {path.name.split(".")[0]: path.name.split(".")[1] for path in cache.glob("*.ipynb")}
    for chapter in grown:
        original = re.fullmatch(r"\d\d_(.+)_copy", chapter.stem)
        if original:
            source = next(c for c in mains if c.stem[3:] == original[1])
            upstream = {s: keys[s] for s in dependencies(chapter, stems)}
            key = cache_key(chapter, profile, upstream)
            shutil.copy(cache / f"{source.stem}.{keys[source.stem]}.ipynb",
                        cache / f"{chapter.stem}.{key}.ipynb")
    names = ", ".join(c.stem[:2] for c in copied)
    return f"the book's {cold.pages} pages plus copies of chapters {names}"


def insert_after_title(path: Path, text: str) -> None:
    """Add a paragraph of prose right after the chapter's title: no code changes."""
    source = path.read_text(encoding="utf-8")
    title = re.search(r"^# # .*\n#\n", source, re.M)
    path.write_text(source[: title.end()] + text + "#\n" + source[title.end():],
                    encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="book", choices=["smoke", "book"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pages", type=int, default=0,
                        help="grow the book to about this many pages first")
    parser.add_argument("--html", type=Path, help="time the layout of this rendered book")
    args = parser.parse_args()
    if args.html:
        return layout_only(args.html, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        book = Path(shutil.copytree(ROOT / "book", Path(folder) / "book"))
        build = Path(folder) / "build"
        os.environ["MLXLLM_ARTIFACTS"] = str(build / "artifacts")

        def rebuild() -> BuildReport:
            report = build_pdf(book, build, args.profile, jobs=1)
            assert report.executed == 0, "a rebuild without code changes ran a chapter"
            return report

        cold_row = Row("cold (executes every chapter)")
        cold = cold_row.time(lambda: build_pdf(book, build, args.profile, jobs=1))
        size, pages = f"the book's {cold.pages} pages", cold.pages
        if args.pages > cold.pages:
            size = grow_book(book, build, args.profile, cold, args.pages)
            pages = rebuild().pages
        chapters = [c for c in read_book(book)
                    if c.part == "main" and not c.stem.endswith("_copy")]
        longest = max(chapters, key=lambda c: len(c.path.read_text(encoding="utf-8")))
        first = chapters[0]
        row = [Row(name) for name in (
            "every chapter laid out (notebooks cached, as after a CSS edit)",
            "one WeasyPrint document (the press before), layout only",
            "warm, no change",
            f"after a prose-only edit to the longest chapter ({longest.stem[:2]})",
            f"an edit that adds pages to chapter {first.stem[:2]} (later pages move)",
            f"preview of chapter {longest.stem[:2]} after a prose edit",
            f"preview of chapter {longest.stem[:2]}, unchanged")]
        for round_number in range(args.repeats):
            shutil.rmtree(layout_cache(build, args.profile))
            report = row[0].time(rebuild)
            assert len(report.laid_out) == report.units + 1
            row[1].time(lambda: single_document(build / "html" / "index.html"))
            assert row[2].time(rebuild).laid_out == ()
            insert_after_title(longest.path, f"# Benchmark edit {round_number}.\n")
            assert row[3].time(rebuild).laid_out[0] == f"ch-{longest.stem}"
            filler = "".join(f"# Benchmark paragraph {round_number}.{n}, prose only.\n#\n"
                             for n in range(40))
            insert_after_title(first.path, filler)
            assert row[4].time(rebuild).laid_out == (f"ch-{first.stem}", "frame")
            insert_after_title(longest.path, f"# Preview edit {round_number}.\n")

            def preview() -> BuildReport:
                return preview_pdf(book, build, args.profile, longest.stem[:2], jobs=1)

            assert f"ch-{longest.stem}" in row[5].time(preview).laid_out
            assert row[6].time(preview).laid_out == ()
    print()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; profile "
          f"`{args.profile}`; {pages} pages ({size}), growing as the edits add pages; "
          f"median of {args.repeats}.")
    print()
    print("| build | median s | range s | documents laid out | load average |")
    print("|---|---:|---:|---:|---:|")
    print(cold_row.markdown())
    for each in row:
        print(each.markdown())


def layout_only(html_dir: Path, repeats: int) -> None:
    """One WeasyPrint document against the press's layout, cold and warm, on one HTML."""
    with tempfile.TemporaryDirectory() as folder:
        html = Path(shutil.copytree(html_dir, Path(folder) / "html")) / "index.html"
        cache, pdf = Path(folder) / "layout", Path(folder) / "book.pdf"
        row = [Row(name) for name in ("one WeasyPrint document (the press before)",
                                      "chapters apart, every one laid out (cold)",
                                      "chapters apart, none laid out (warm)")]
        for _ in range(repeats):
            row[0].time(lambda: single_document(html))
            shutil.rmtree(cache, ignore_errors=True)
            report = row[1].time(lambda: write_pdf(html, pdf, cache))
            assert row[2].time(lambda: write_pdf(html, pdf, cache)).laid_out == ()
    print()
    print(f"Machine: {platform.platform()}, {os.cpu_count()} cores; {html_dir}, layout "
          f"only; {report.pages} pages; median of {repeats}.")
    print()
    print("| layout | median s | range s | documents laid out | load average |")
    print("|---|---:|---:|---:|---:|")
    for each in row:
        print(each.markdown())


def single_document(html_path: Path) -> str:
    """Lay the whole HTML out as one WeasyPrint document, as the press did before, in a
    process of its own (so its memory is not left to the builds timed after it)."""
    code = ("import sys, tempfile, weasyprint\n"
            "with tempfile.TemporaryDirectory() as folder:\n"
            "    document = weasyprint.HTML(filename=sys.argv[1]).render()\n"
            "    document.write_pdf(folder + '/book.pdf')\n"
            "print(len(document.pages), 'pages')\n")
    done = subprocess.run([sys.executable, "-c", code, str(html_path)], check=True,
                          capture_output=True, text=True)
    return done.stdout.strip()


if __name__ == "__main__":
    main()
