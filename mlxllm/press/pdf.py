"""HTML book to PDF: chapters laid out apart (in parallel, cached), then joined.

`write_pdf` never leaves a stale or partial PDF behind: the book is written to a
`.partial` file that replaces the old one only once it is complete. How the layout is
split and cached is described in `mlxllm.press.layout`.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from pypdf import PageObject, PdfReader, PdfWriter
from pypdf.generic import Destination, Fit, NameObject, TextStringObject

from mlxllm.press.layout import (
    FOREIGN,
    Pages,
    frame_document,
    is_unit,
    lay_out,
    layout_key,
    split_book,
    unit_document,
    unit_name,
    unit_starts,
)


@dataclass(frozen=True)
class PdfReport:
    """The PDF's page count and which documents this build laid out ("frame" or an id)."""

    pages: int
    laid_out: tuple[str, ...]
    units: int


@dataclass(frozen=True)
class Job:
    """A document to lay out: its name for reports, its HTML and where its PDF goes."""

    name: str
    document: str
    pdf: Path


def _lay_out_all(jobs: list[Job], base_url: str, workers: int) -> list[Pages]:
    """Lay the jobs out, in a pool of processes when there is more than one.

    The longest documents start first, so that no long one is left running alone at
    the end. Spawned workers import the caller's main module: a script that calls
    this needs the usual `if __name__ == "__main__":` guard.
    """
    if len(jobs) <= 1 or workers <= 1:
        return [lay_out(job.document, base_url, job.pdf) for job in jobs]
    context = multiprocessing.get_context("spawn")  # no fork of a process running MLX
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        futures = {id(job): pool.submit(lay_out, job.document, base_url, job.pdf)
                   for job in sorted(jobs, key=lambda job: -len(job.document))}
        return [futures[id(job)].result() for job in jobs]


def _cached_or_job(name: str, document: str, html_dir: Path, cache: Path) -> Pages | Job:
    pdf = cache / f"{layout_key(document, html_dir)}.pdf"
    return Pages.cached(pdf) or Job(name, document, pdf)


def write_pdf(html_path: Path, pdf_path: Path, cache: Path | None = None,
              workers: int | None = None, prune: bool = True) -> PdfReport:
    """Render `html_path` to `pdf_path` atomically, reusing the layouts cached in `cache`.

    Without a cache the layouts go to a temporary folder. With `prune`, cached layouts
    this book did not use are deleted (a preview of one chapter keeps them).
    """
    if cache is None:
        with tempfile.TemporaryDirectory() as folder:
            return write_pdf(html_path, pdf_path, Path(folder), workers, prune=False)
    cache.mkdir(parents=True, exist_ok=True)
    html_dir = html_path.parent
    base_url = html_path.resolve().as_uri()
    book = split_book(html_path.read_text(encoding="utf-8"))
    found: dict[int, Pages | Job] = {
        position: _cached_or_job(unit_name(section, position),
                                 unit_document(book, section), html_dir, cache)
        for position, section in enumerate(book.sections) if is_unit(section)}
    jobs = [job for job in found.values() if isinstance(job, Job)]
    laid = iter(_lay_out_all(jobs, base_url, workers or os.cpu_count() or 1))
    units = {p: next(laid) if isinstance(f, Job) else f for p, f in found.items()}
    frame = _cached_or_job("frame", frame_document(book, units), html_dir, cache)
    if isinstance(frame, Job):
        jobs.append(frame)
        frame = lay_out(frame.document, base_url, frame.pdf)
    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    partial = pdf_path.with_name(pdf_path.name + ".partial")
    try:
        pages = join(frame, units, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, pdf_path)
    if prune:
        keep = {frame.pdf.stem} | {u.pdf.stem for u in units.values()}
        for old in cache.iterdir():
            if old.name.split(".")[0] not in keep:
                old.unlink()
    return PdfReport(pages, tuple(job.name for job in jobs), len(units))


def join(frame: Pages, units: dict[int, Pages], target: Path) -> int:
    """Write the frame's pages, each placeholder replaced by its unit's page with the
    frame's folio drawn over it; outline and named destinations from all; return pages."""
    starts = unit_starts(frame, units)
    frame_reader = PdfReader(frame.pdf)
    readers = {position: PdfReader(pages.pdf) for position, pages in units.items()}
    source = {starts[position] + number: (position, number)
              for position, pages in units.items() for number in range(pages.count)}
    writer = PdfWriter()
    for number, frame_page in enumerate(frame_reader.pages):
        if number not in source:
            writer.add_page(frame_page)
            continue
        position, page = source[number]
        added = writer.add_page(readers[position].pages[page])
        _link_across_units(added)
        if page not in units[position].blank:
            added.merge_page(frame_page)
            added.compress_content_streams()
    marks = [m for m in _bookmarks(frame_reader, frame_reader.outline, 0)
             if m.page not in source]
    places = [p for p in _places(frame_reader, 0) if p.page not in source]
    for position, reader in readers.items():
        marks += _bookmarks(reader, reader.outline, starts[position])
        places += _places(reader, starts[position])
    _add_bookmarks(writer, sorted(marks, key=lambda mark: mark.page))
    named = writer.get_named_dest_root()
    for place in sorted(places, key=lambda place: place.name):
        named.extend(place.entry(writer))
    writer.add_metadata(dict(frame_reader.metadata or {}))
    catalog = frame_reader.trailer["/Root"]
    if "/Lang" in catalog:
        writer.root_object[NameObject("/Lang")] = catalog["/Lang"]
    with open(target, "wb") as stream:
        writer.write(stream)
    return len(writer.pages)


def _link_across_units(page: PageObject) -> None:
    """Turn the unit's FOREIGN URI links back into links to named destinations."""
    for annotation in page.get("/Annots") or []:
        annotation = annotation.get_object()
        uri = str(annotation.get("/A", {}).get("/URI", ""))
        if uri.startswith(FOREIGN):
            del annotation["/A"]
            annotation[NameObject("/Dest")] = TextStringObject(unquote(uri[len(FOREIGN):]))


@dataclass
class Bookmark:
    """An outline item with its page in the joined book."""

    title: str
    page: int
    fit: Fit
    is_open: bool
    children: list[Bookmark]


def _bookmarks(reader: PdfReader, items: list, offset: int) -> list[Bookmark]:
    """`reader`'s outline (pypdf's nested lists) as a tree, pages moved by `offset`."""
    marks: list[Bookmark] = []
    for item in items:
        if isinstance(item, list):
            marks[-1].children += _bookmarks(reader, item, offset)
        else:
            page = offset + reader.get_destination_page_number(item)
            fit = Fit.xyz(item.left, item.top, item.zoom)
            marks.append(Bookmark(item.title, page, fit, item.get("/Count", 0) >= 0, []))
    return marks


def _add_bookmarks(writer: PdfWriter, marks: list[Bookmark], parent=None) -> None:
    for mark in marks:
        added = writer.add_outline_item(title=mark.title, page_number=mark.page,
                                        parent=parent, fit=mark.fit, is_open=mark.is_open)
        _add_bookmarks(writer, mark.children, added)


@dataclass
class Place:
    """A named destination (an HTML id) with its page in the joined book."""

    name: str
    page: int
    fit: Fit

    def entry(self, writer: PdfWriter) -> list:
        """The name and destination array for the writer's /Dests name tree."""
        page = writer.pages[self.page].indirect_reference
        return [TextStringObject(self.name), Destination(self.name, page, self.fit).dest_array]


def _places(reader: PdfReader, offset: int) -> list[Place]:
    return [Place(name, offset + reader.get_destination_page_number(dest),
                  Fit.xyz(dest.left, dest.top, dest.zoom))
            for name, dest in reader.named_destinations.items()]
