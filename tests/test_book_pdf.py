"""Build the real book's PDF in the smoke profile and check it with a PDF reader."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pypdf import PdfReader

from mlxllm.press.__main__ import BuildReport, build_pdf
from mlxllm.press.read import read_book
from mlxllm.press.render import BOOK_TITLE
from tests.conftest import BOOK

ROMAN = {"i": 1, "v": 5, "x": 10}


def roman_value(text: str) -> int:
    values = [ROMAN[c] for c in text]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v
               for i, v in enumerate(values))


@pytest.fixture(scope="module")
def pdf(smoke_book: BuildReport) -> tuple[PdfReader, Path]:
    return PdfReader(smoke_book.pdf), smoke_book.pdf.parent


@pytest.fixture(scope="module")
def pages_text(smoke_book: BuildReport) -> list[str]:
    """The text of every page, in order, as poppler's pdftotext lays it out (one call for
    the whole book: pypdf's extract_text takes several times as long)."""
    out = subprocess.run(["pdftotext", "-layout", str(smoke_book.pdf), "-"],
                         capture_output=True, text=True, check=True).stdout
    return out.split("\f")[:-1]


def footer_number(pages_text: list[str], index: int) -> str:
    """The page number printed at the foot of physical page `index`."""
    lines = [line.strip() for line in pages_text[index].splitlines()]
    return next(line for line in reversed(lines) if line)


def test_pdf_has_title_pages_and_outline(pdf: tuple[PdfReader, Path]) -> None:
    reader, build = pdf
    chapters = [c for c in read_book(BOOK) if not c.continues]  # parts are sections
    assert reader.metadata.title.startswith(BOOK_TITLE)
    assert len(reader.pages) >= 10 * len(chapters) // 2
    top_level = [item for item in reader.outline if not isinstance(item, list)]
    titles = [item.title for item in top_level]
    assert titles[0] == "Contents"
    assert len(titles) == 1 + len(chapters), titles
    for chapter, title in zip(chapters, titles[1:]):
        assert title.endswith(chapter.title)
    assert not (build / "book.pdf.partial").exists()
    assert (build / "html" / "index.html").exists()


def test_toc_page_numbers_match_where_chapters_start(pdf: tuple[PdfReader, Path],
                                                     pages_text: list[str]) -> None:
    reader, _ = pdf
    assert len(pages_text) == len(reader.pages)
    chapters = [c for c in read_book(BOOK) if not c.continues]
    top_level = [item for item in reader.outline if not isinstance(item, list)][1:]
    toc_text = ""
    contents_page = reader.get_destination_page_number(
        [item for item in reader.outline if not isinstance(item, list)][0])
    first_chapter_page = reader.get_destination_page_number(top_level[0])
    for index in range(contents_page, first_chapter_page):
        toc_text += pages_text[index] + "\n"
    for chapter, item in zip(chapters, top_level):
        physical = reader.get_destination_page_number(item)
        match = re.search(re.escape(chapter.title) + r"[ .]*?([ivx]+|\d+)\s*$", toc_text,
                          re.M)
        assert match, f"{chapter.title!r} is not in the table of contents"
        printed = match[1]
        assert footer_number(pages_text, physical) == printed, (
            f"TOC says {chapter.title!r} starts on page {printed}; its first page is "
            f"numbered {footer_number(pages_text, physical)}")
        if chapter.part == "front":
            assert roman_value(printed) == physical + 1


def chapters_in_outline(reader: PdfReader) -> list[tuple[object, list]]:
    """Each top-level outline item after Contents, with the items nested under it."""
    items = list(reader.outline)
    return [(item, following if isinstance(following, list) else [])
            for item, following in zip(items, [*items[1:], None])
            if not isinstance(item, list)][1:]


def test_outline_nests_each_chapters_sections_in_its_pages(
        pdf: tuple[PdfReader, Path]) -> None:
    reader, _ = pdf
    chapters = chapters_in_outline(reader)
    starts = [reader.get_destination_page_number(item) for item, _ in chapters]
    for (item, children), start, end in zip(chapters, starts, [*starts[1:], len(reader.pages)]):
        sections = [child for child in children if not isinstance(child, list)]
        if re.match(r"\d+\. ", item.title):  # a numbered chapter ends with its exercises
            assert sections, f"{item.title!r} has no sections in the outline"
        for section in sections:
            assert start <= reader.get_destination_page_number(section) < end, section.title


def test_every_link_lands_on_its_target(pdf: tuple[PdfReader, Path],
                                        pages_text: list[str]) -> None:
    reader, build = pdf
    page_html = (build / "html" / "index.html").read_text(encoding="utf-8")
    names = reader.named_destinations
    links = [(number, str(annotation.get_object()["/Dest"]))
             for number, page in enumerate(reader.pages)
             for annotation in page.get("/Annots") or []
             if "/Dest" in annotation.get_object()]
    assert {name for _, name in links} == set(re.findall(r'href="#([^"]+)"', page_html)), \
        "every internal link of the HTML is a link in the PDF"
    assert all(name in names for _, name in links)
    starts = sorted(reader.get_destination_page_number(item)
                    for item, _ in chapters_in_outline(reader))

    def chapter_of(page: int) -> int:
        return sum(start <= page for start in starts)

    references = dict(re.findall(r'<a class="xref" href="#([^"]+)">([^<]+)</a>', page_html))
    text = [" ".join(page.split()) for page in pages_text]
    across = 0
    for number, name in links:
        if name not in references:
            continue
        target = reader.get_destination_page_number(names[name])
        kind, label = references[name].split(" ", 1)
        shown = f"({label})" if kind == "Equation" else f"{kind} {label}"
        assert shown in text[target], \
            f"the link to {name!r} on page {number + 1} lands on page {target + 1}"
        across += chapter_of(number) != chapter_of(target)
    assert across, "no cross reference links one chapter to another"


def test_rebuild_with_no_change_lays_out_nothing(pdf: tuple[PdfReader, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    reader, build = pdf
    monkeypatch.setenv("MLXLLM_ARTIFACTS", str(build / "artifacts"))
    report = build_pdf(BOOK, build, "smoke", jobs=2)
    assert (report.executed, report.laid_out) == (0, ())
    assert report.pages == len(reader.pages)


# blank space ---------------------------------------------------------------------
DPI = 24  # enough to see where ink ends on a page
TOP_MARGIN, BOTTOM_MARGIN, PAGE_HEIGHT = 0.8, 0.85, 9.25  # inches, as in book.css
INK = 200  # a grey level darker than this is ink


def page_fills(pdf_path: Path, folder: Path) -> list[float]:
    """How far down each page's content area the ink goes (0 empty, 1 full), read
    from the PDF rendered as grey images: text, figures and tables alike."""
    subprocess.run(["pdftoppm", "-gray", "-r", str(DPI), str(pdf_path),
                    str(folder / "page")], check=True)
    fills = []
    for image in sorted(folder.glob("page-*.pgm")):
        data = image.read_bytes()
        header = re.match(rb"P5\s+(\d+)\s+(\d+)\s+255\s", data)
        assert header, f"{image.name} is not an 8-bit PGM image"
        width, height = int(header[1]), int(header[2])
        pixels = data[header.end():]
        top = round(TOP_MARGIN * height / PAGE_HEIGHT)
        bottom = height - round(BOTTOM_MARGIN * height / PAGE_HEIGHT)
        inked = [row for row in range(top, bottom)
                 if min(pixels[row * width:(row + 1) * width]) < INK]
        fills.append((inked[-1] + 1 - top) / (bottom - top) if inked else 0.0)
    return fills


def mid_chapter_pages(reader: PdfReader, fills: list[float]) -> list[int]:
    """Pages inside a chapter: not the front pages before the first chapter, not a
    chapter's last page, not a blank page."""
    starts = sorted(reader.get_destination_page_number(item) for item in reader.outline
                    if not isinstance(item, list))[1:]  # after Contents
    inside = []
    for start, end in zip(starts, [*starts[1:], len(fills)]):
        pages = [n for n in range(start, end) if fills[n] > 0]
        inside += pages[:-1]
    return inside


def test_no_mid_chapter_page_is_more_than_a_third_empty(
        pdf: tuple[PdfReader, Path], tmp_path: Path) -> None:
    reader, build = pdf
    fills = page_fills(build / "book.pdf", tmp_path)
    assert len(fills) == len(reader.pages)
    gappy = [(n + 1, round(fills[n], 2)) for n in mid_chapter_pages(reader, fills)
             if fills[n] < 2 / 3]
    assert not gappy, f"pages (physical number, fill) more than a third empty: {gappy}"
