"""Chapters laid out on their own, cached and joined: on the fixture book."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pypdf import PdfReader

from mlxllm.press import floats, pdf
from mlxllm.press.__main__ import BuildReport, build_pdf, preview_pdf
from mlxllm.press.layout import is_unit, lay_out, layout_key, split_book
from mlxllm.press.render import BOOK_TITLE
from tests.conftest import FIXTURE_BOOK

UNITS = ("ch-00_front", "ch-01_first", "ch-02_second", "ch-90_appendix", "ch-91_closing")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture book built once; each test works on a copy of it."""
    folder = tmp_path_factory.mktemp("built")
    shutil.copytree(FIXTURE_BOOK, folder / "book")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXLLM_ARTIFACTS", str(folder / "build" / "artifacts"))
        report = build_pdf(folder / "book", folder / "build", "smoke", jobs=2)
    assert sorted(report.laid_out) == sorted((*UNITS, "frame")), "a cold build lays out all"
    return folder


@pytest.fixture
def copy(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLXLLM_ARTIFACTS", str(tmp_path / "build" / "artifacts"))
    return Path(shutil.copytree(built, tmp_path, dirs_exist_ok=True))


def rebuild(folder: Path) -> BuildReport:
    report = build_pdf(folder / "book", folder / "build", "smoke", jobs=2)
    assert report.executed == 0, "a prose edit ran a chapter"
    return report


def edit(folder: Path, chapter: str, old: str, new: str) -> None:
    path = folder / "book" / chapter
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_split_book_keeps_nested_sections_whole() -> None:
    page = ('<html><head></head><body><section class="cover">x</section>\n'
            '<section class="chapter main" id="a"><section class="continuation">y'
            "</section></section></body></html>")
    book = split_book(page)
    assert len(book.sections) == 2 and book.sections[1].endswith("</section></section>")
    assert [is_unit(s) for s in book.sections] == [False, True]
    with pytest.raises(ValueError, match="outside a top-level <section>"):
        split_book(page.replace("<body>", "<body><p>loose</p>"))


def test_layout_key_follows_the_files_a_document_references(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "book.css").write_text("p { margin: 0 }")
    (tmp_path / "figures" / "a.svg").write_text("<svg/>")
    document = '<link href="book.css"><img src="figures/a.svg"><a href="#x">x</a>'
    keys = {layout_key(document, tmp_path)}
    (tmp_path / "figures" / "a.svg").write_text("<svg></svg>")
    keys.add(layout_key(document, tmp_path))
    (tmp_path / "book.css").write_text("p { margin: 1pt }")
    keys.add(layout_key(document, tmp_path))
    assert len(keys) == 3


def test_failed_join_sets_the_last_pdf_aside_whole(copy: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    book_pdf = copy / "build" / "book.pdf"
    before = book_pdf.read_bytes()

    def broken_join(frame: object, units: object, target: Path) -> int:
        target.write_bytes(b"%PDF- half written")
        raise OSError("disk full")

    monkeypatch.setattr(pdf, "join", broken_join)
    edit(copy, "02_second.py", "Reads what", "Reads, as a prose edit, what")
    with pytest.raises(OSError, match="disk full"):
        rebuild(copy)
    assert not book_pdf.exists(), "a failed build left a book.pdf that looks current"
    assert (copy / "build" / "book.last-good.pdf").read_bytes() == before
    assert not (copy / "build" / "book.pdf.partial").exists()


def test_unchanged_rebuild_lays_out_nothing(copy: Path) -> None:
    before = (copy / "build" / "book.pdf").read_bytes()
    report = rebuild(copy)
    assert report.laid_out == () and report.units == len(UNITS)
    assert (copy / "build" / "book.pdf").read_bytes() == before


def test_prose_edit_lays_out_only_its_chapter(copy: Path) -> None:
    edit(copy, "02_second.py", "Reads what", "Reads, as a prose edit, what")
    report = rebuild(copy)
    assert report.laid_out == ("ch-02_second",)
    assert any("as a prose edit" in page.extract_text() for page in PdfReader(report.pdf).pages)


def test_longer_chapter_moves_later_pages_without_laying_them_out(copy: Path) -> None:
    pages = len(PdfReader(copy / "build" / "book.pdf").pages)
    filler = "\n#\n".join(["# A paragraph added to push the chapters after it."] * 60)
    edit(copy, "01_first.py", "# ## Outputs\n", f"{filler}\n#\n# ## Outputs\n")
    report = rebuild(copy)
    assert report.laid_out == ("ch-01_first", "frame")
    assert report.pages > pages
    check_contents_and_links(PdfReader(report.pdf))


def check_contents_and_links(reader: PdfReader) -> None:
    """Every link has a destination, and a cross reference lands on its figure's page."""
    names = reader.named_destinations
    links = [(number, str(annotation.get_object()["/Dest"]))
             for number, page in enumerate(reader.pages)
             for annotation in page.get("/Annots") or []
             if "/Dest" in annotation.get_object()]
    assert links and all(name in names for _, name in links)
    figure_page = reader.get_destination_page_number(names["fig-line"])
    assert "Figure 1.1" in reader.pages[figure_page].extract_text()
    chapter_one = reader.get_destination_page_number(names["ch-01_first"])
    appendix = reader.get_destination_page_number(names["ch-90_appendix"])
    assert any(number >= appendix and name == "fig-line" for number, name in links), \
        "the appendix's reference to a figure of chapter 1 is a link"
    assert chapter_one <= figure_page < appendix


def test_joined_book_keeps_links_outline_and_title(built: Path) -> None:
    reader = PdfReader(built / "build" / "book.pdf")
    check_contents_and_links(reader)
    assert reader.metadata.title.startswith(BOOK_TITLE)
    titles = [item.title for item in reader.outline if not isinstance(item, list)]
    assert titles == ["Contents", "A Front Matter", "1. First Chapter", "2. Second Chapter",
                      "A. An Appendix", "B. Closing Appendix"]
    sections = {item.title: [child.title for child in children if not isinstance(child, list)]
                for item, children in zip(reader.outline, [*reader.outline[1:], None])
                if not isinstance(item, list) and isinstance(children, list)}
    assert sections["A. An Appendix"] == ["A.1 Answers to chapter 1", "A.2 Answers to chapter 2"]
    assert [child.title for child in reader.outline[1]] == ["Figures", "Tables"]
    lists = "".join(reader.pages[n].extract_text() for n in range(len(reader.pages))
                    if "Tables" in reader.pages[n].extract_text()[:40])
    assert re.search(r"1\.2\s*Words in a prose table, scaled by…[ .]*\d+", lists), lists


def test_preview_reuses_the_books_layout(copy: Path) -> None:
    report = preview_pdf(copy / "book", copy / "build", "smoke", "01", jobs=2)
    assert report.laid_out == ("frame",), "chapter 1 was laid out by the book build"
    reader = PdfReader(report.pdf)
    text = reader.pages[0].extract_text()
    assert "CHAPTER 1\nFirst Chapter" in text
    assert [item.title for item in reader.outline if not isinstance(item, list)] == \
        ["1. First Chapter"]


PAGE_STYLE = ("<style>@page { size: 4in 4in; margin: 0.5in; } p { margin: 0 }"
              "figure { margin: 0; break-inside: avoid; }</style>")


def float_document(paragraphs_after: str) -> str:
    """Two lines of text, a figure too tall for the rest of the page, then more."""
    figure = ('<figure data-float="f-1"><div style="height: 2.8in; '
              'background: #888"></div></figure>')
    return (f"<html><head>{PAGE_STYLE}</head><body><section><p>First line.<br>"
            f"Second.</p>{figure}{paragraphs_after}</section></body></html>")


def test_a_figure_that_would_leave_a_gap_moves_past_the_next_paragraphs(
        tmp_path: Path) -> None:
    prose = "".join(f"<p>Paragraph {n} of the text that follows.</p>" for n in range(30))
    pages = lay_out(float_document(prose), tmp_path.as_uri() + "/", tmp_path / "a.pdf")
    assert pages.fill[0] > 1 - floats.GAP, pages.fill  # prose moved up into the gap
    text = PdfReader(tmp_path / "a.pdf").pages[0].extract_text()
    assert "Paragraph 0" in text


def test_a_figure_never_leaves_its_section(tmp_path: Path) -> None:
    pages = lay_out(float_document("</section><section><p>Next section</p>"),
                    tmp_path.as_uri() + "/", tmp_path / "b.pdf")
    assert pages.fill[0] < 1 - floats.GAP  # the gap stays: the section starts after
    assert "Next section" not in PdfReader(tmp_path / "b.pdf").pages[0].extract_text()


FIGURE = '<figure data-float="x-1"><img></figure>'


def test_move_floats_moves_a_figure_past_one_paragraph_and_keeps_the_rest() -> None:
    document = (f"<p>a</p>{FIGURE}<ul><li>b<ul><li>c</li></ul></li></ul><p>d</p>")
    moved, names = floats.move_floats(document, {"x-1"})
    assert names == {"x-1"}
    assert moved == f"<p>a</p><ul><li>b<ul><li>c</li></ul></li></ul>{FIGURE}<p>d</p>"
    assert floats.move_floats(moved, {"x-1"})[0].endswith("<p>d</p>" + FIGURE)
    assert floats.move_floats(moved.replace("<p>d</p>", "</section>"), {"x-1"})[1] == set()
    table = '<figure class="table" data-float="x-2"><table><tr><td>1</td></tr></table></figure>'
    assert floats.move_floats(f"{FIGURE}{table}<p>e</p>", {"x-1"})[0] == \
        f"{table}{FIGURE}<p>e</p>"  # a figure moves past the table after it


def test_a_float_moves_with_headings_export_tags_and_outputs_kept_in_place() -> None:
    blocks = ('<h2>Next</h2><div class="export-tag">exported</div><pre class="code">x'
              '</pre><pre class="output">1</pre><pre class="output result">2</pre>')
    document = f"{FIGURE}{blocks}<p>after</p>"
    assert floats.move_floats(document, {"x-1"})[0] == f"{blocks}{FIGURE}<p>after</p>"
    assert floats.move_floats(f"{FIGURE}<h3>Alone</h3></section>", {"x-1"})[1] == set()
