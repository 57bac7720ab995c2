"""Build the real book's PDF in the smoke profile and check it with a PDF reader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pypdf import PdfReader

from mlxllm.press.__main__ import build_pdf
from mlxllm.press.read import read_book
from mlxllm.press.render import BOOK_TITLE
from tests.conftest import BOOK

ROMAN = {"i": 1, "v": 5, "x": 10}


def roman_value(text: str) -> int:
    values = [ROMAN[c] for c in text]
    return sum(-v if i + 1 < len(values) and v < values[i + 1] else v
               for i, v in enumerate(values))


@pytest.fixture(scope="module")
def pdf(tmp_path_factory: pytest.TempPathFactory) -> tuple[PdfReader, Path]:
    build = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXLLM_ARTIFACTS", str(build / "artifacts"))
        report = build_pdf(BOOK, build, "smoke", jobs=2)
    return PdfReader(report.pdf), build


def footer_number(reader: PdfReader, index: int) -> str:
    """The page number printed at the foot of physical page `index`."""
    lines = [line.strip() for line in reader.pages[index].extract_text().splitlines()]
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


def test_toc_page_numbers_match_where_chapters_start(pdf: tuple[PdfReader, Path]) -> None:
    reader, _ = pdf
    chapters = [c for c in read_book(BOOK) if not c.continues]
    top_level = [item for item in reader.outline if not isinstance(item, list)][1:]
    toc_text = ""
    contents_page = reader.get_destination_page_number(
        [item for item in reader.outline if not isinstance(item, list)][0])
    first_chapter_page = reader.get_destination_page_number(top_level[0])
    for index in range(contents_page, first_chapter_page):
        toc_text += reader.pages[index].extract_text() + "\n"
    for chapter, item in zip(chapters, top_level):
        physical = reader.get_destination_page_number(item)
        match = re.search(re.escape(chapter.title) + r"[ .]*?([ivx]+|\d+)\s*$", toc_text,
                          re.M)
        assert match, f"{chapter.title!r} is not in the table of contents"
        printed = match[1]
        assert footer_number(reader, physical) == printed, (
            f"TOC says {chapter.title!r} starts on page {printed}; its first page is "
            f"numbered {footer_number(reader, physical)}")
        if chapter.part == "front":
            assert roman_value(printed) == physical + 1
