"""The press on a small fixture book that uses every cell option and each failure."""

from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import jupytext
import pytest
from pypdf import PdfReader

from mlxllm.press.__main__ import _chapters, build_pdf
from mlxllm.press.execute import ChapterRunError, dependencies, execute
from mlxllm.press.export import export, stale_modules
from mlxllm.press.pdf import write_pdf
from mlxllm.press.read import ChapterFormatError, read_book, read_chapter
from mlxllm.press.render import format_output, number_chapters, render_book
from tests.conftest import BOOK, FIXTURE_BOOK, ROOT


def quiet(_: str) -> None:
    """Swallow the press's progress lines."""


@pytest.fixture
def book(tmp_path: Path) -> Path:
    """A private copy of the fixture book that a test may edit."""
    return Path(shutil.copytree(FIXTURE_BOOK, tmp_path / "book"))


def write_chapter(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def run(book: Path, cache: Path) -> list:
    return execute(read_book(book), "smoke", cache, ROOT, jobs=2, log=quiet)


# reading ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(BOOK.glob("[0-9][0-9]_*.py")) +
                         sorted(FIXTURE_BOOK.glob("*.py")), ids=lambda p: p.name)
def test_jupytext_reads_the_same_cells(path: Path) -> None:
    ours = read_chapter(path).cells
    theirs = jupytext.read(path, fmt="py:percent").cells
    assert [c.kind for c in ours] == [c.cell_type for c in theirs]
    for mine, other in zip(ours, theirs):
        assert mine.source.strip() == other.source.strip()


@pytest.mark.parametrize(
    ("option", "message"),
    [("#| echo: maybe", "takes true or false"),
     ("#| colour: blue", "unknown cell option 'colour'"),
     ("#| fig-cap: no label", "needs a '#| label: fig-"),
     ("#| label: figure1", "must start with fig-, tbl- or lst-"),
     ("#|: broken", "malformed cell option"),
     ("#| export: Data-Module", "is not a module name")],
)
def test_bad_option_names_file_and_line(tmp_path: Path, option: str, message: str) -> None:
    path = write_chapter(tmp_path, "01_bad.py", f"""
        # %% [markdown]
        # # Bad

        # %%
        #| default_exp bad
        x = 1

        # %%
        {option}
        y = 2
    """)
    with pytest.raises(ChapterFormatError, match=message) as error:
        read_chapter(path)
    assert str(error.value).startswith(f"{path}:9:")


def test_a_paragraph_line_that_markdown_reads_as_a_list_is_refused(tmp_path: Path) -> None:
    path = write_chapter(tmp_path, "01_break.py", """
        # %% [markdown]
        # # Break
        #
        # The weights are around 0.02 to
        # 1. Adding a small number rounds.
        #
        # What to notice:
        #
        # - a list after a blank line is a list;
        #   its second line is fine.
    """)
    with pytest.raises(ChapterFormatError, match=r"01_break.py:5: this line starts with '1.'"):
        read_chapter(path)
    path.write_text(path.read_text().replace("to\n# 1. Adding", "to 1.\n# Adding"))
    assert read_chapter(path).cells


def test_long_listing_line_is_refused(tmp_path: Path) -> None:
    path = write_chapter(tmp_path, "01_wide.py", f"""
        # %% [markdown]
        # # Wide

        # %%
        x = "{'w' * 90}"
    """)
    with pytest.raises(ChapterFormatError, match=r"01_wide.py:5: code line is 96 columns"):
        read_chapter(path)


def test_quoted_name_bound_twice_is_refused(tmp_path: Path) -> None:
    path = write_chapter(tmp_path, "01_twice.py", """
        # %% [markdown]
        # # Twice
        #
        # The loss is {{ loss:.2f }}.

        # %%
        loss = 1.0

        # %%
        for loss in [0.5, 0.25]:
            pass
    """)
    with pytest.raises(ChapterFormatError, match=r"01_twice.py:10: 'loss' is quoted in "
                                                 r"prose \(line 4\) but bound again"):
        read_chapter(path)


def test_a_subscript_assignment_or_a_quoted_string_binds_no_name(tmp_path: Path) -> None:
    path = write_chapter(tmp_path, "01_store.py", """
        # %% [markdown]
        # # Store
        #
        # {{ losses.sum():.2f }} in all, {{ shares['word start']:.0%}} at words.

        # %%
        losses, shares = np.zeros(3), {"word start": 0.5}

        # %%
        word = start = 1
        losses[1:] = losses[:-1] + word
    """)
    read_chapter(path)


# executing -------------------------------------------------------------------------
def test_failing_cell_reports_chapter_file_line_and_traceback(
        tmp_path: Path, artifacts: Path) -> None:
    path = write_chapter(tmp_path / "book", "01_fails.py", """
        # %% [markdown]
        # # Fails

        # %%
        def divide(a, b):
            return a / b

        # %%
        values = [1, 2]
        divide(values[0], 0)
    """)
    with pytest.raises(ChapterRunError) as error:
        execute([read_chapter(path)], "smoke", tmp_path / "cache", ROOT, log=quiet)
    message = str(error.value)
    assert message.startswith(f"{path}:6: ZeroDivisionError")
    assert f'File "{path}", line 10' in message and "divide(values[0], 0)" in message


def test_missing_corpus_stops_with_where_to_put_it(
        tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLXLLM_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.setenv("MLXLLM_CORPUS_URL", "http://127.0.0.1:9/tinyshakespeare.txt")
    path = write_chapter(tmp_path / "book", "01_data.py", """
        # %% [markdown]
        # # Data

        # %%
        from mlxllm.data import load_corpus

        text = load_corpus("tinyshakespeare")
    """)
    with pytest.raises(ChapterRunError) as error:
        execute([read_chapter(path)], "smoke", tmp_path / "cache", ROOT, log=quiet)
    message = str(error.value)
    assert f"{path}:7: CorpusNotFoundError" in message
    assert str(tmp_path / "empty") in message and "tinyshakespeare.txt" in message


def test_cache_reruns_only_when_code_changes(book: Path, tmp_path: Path,
                                             artifacts: Path) -> None:
    cache = tmp_path / "cache"
    first = run(book, cache)
    assert not any(e.from_cache for e in first)
    assert all(e.from_cache for e in run(book, cache))

    chapter = book / "01_first.py"
    text = chapter.read_text()
    chapter.write_text(text.replace("Printing, a value", "Printing (prose edit), a value"))
    assert all(e.from_cache for e in run(book, cache)), "a prose edit re-ran code"

    chapter.write_text(text.replace("#| fig-cap: A straight line.",
                                    "#| fig-cap: A straight line, recaptioned."))
    assert all(e.from_cache for e in run(book, cache)), "a caption edit re-ran code"

    chapter.write_text(text.replace("pi is about {{ math.pi:.3f }}",
                                    "pi is about {{ math.pi:.4f }}"))
    again = {e.chapter.stem: e.from_cache for e in run(book, cache)}
    assert again["01_first"] is False, "a new inline expression must re-run the chapter"

    chapter.write_text(text.replace("smoke=42", "smoke=41"))
    again = {e.chapter.stem: e.from_cache for e in run(book, cache)}
    assert again == {"00_front": True, "01_first": False, "02_second": False,
                     "90_appendix": True, "90_appendix_01": True,
                     "90_appendix_02": False, "91_closing": True}, \
        "a code edit re-runs the chapter and the chapters that read its artifacts"


# rendering -------------------------------------------------------------------------
def test_fixture_book_renders_every_feature(book: Path, tmp_path: Path,
                                            artifacts: Path) -> None:
    executed = run(book, tmp_path / "cache")
    page = render_book(executed, tmp_path / "html", "smoke").read_text()
    assert "The answer is 42 and pi is about 3.142" in page
    for name in ("Figure 1.1", "Table 1.1", "Listing 1.1", "Equation 1.1"):
        assert f">{name}</a>" in page, f"cross reference to {name}"
        assert f'class="capnum">{name}<' in page or name.startswith("Equation")
    assert '<span class="eqnum">(1.1)</span>' in page
    assert ('<figure class="table" id="tbl-words" data-float="01_first-3"><figcaption>'
            '<span class="capnum">Table 1.2</span> Words in a prose table, scaled by '
            '<img class="math"') in page
    assert 'alt="\\sqrt{d_k}"' in page and '>Table 1.2</a> is a table' in page
    assert "hello from __main__" in page and "1764" in page
    assert page.count("this is hidden") == 1, "output: false hides what the cell printed"
    assert "line 99" in page and "69 lines omitted" in page
    assert "never runs" in page and 'class="code not-run"' in page
    assert "exported to mlxllm/fixture_mod.py" in page
    assert "Reads what the first chapter left: 1 2 3" in page
    assert "Chapter 1" in page and "Appendix A" in page
    assert "<code>code span with $dollars$</code>" in page
    assert "<code>{{ literal }}</code>" in page
    assert 'alt="a + b"' in page and "a price of $5 and $10 is not math" in page
    assert (tmp_path / "html" / "figures" / "01_first-1.svg").exists()
    assert "Text(" not in page, "a plotting call's return value is not an output"


def test_eighty_column_listing_lines_fit_the_page(book: Path, tmp_path: Path,
                                                   artifacts: Path) -> None:
    executed = run(book, tmp_path / "cache")
    pdf = tmp_path / "book.pdf"
    write_pdf(render_book(executed, tmp_path / "html", "smoke"), pdf)
    line = next(line for line in (book / "01_first.py").read_text().splitlines()
                if line.startswith("eighty = "))
    assert len(line) == 80
    text = "\n".join(page.extract_text() for page in PdfReader(pdf).pages)
    assert line in text, "an 80-column listing line was wrapped"


def test_failed_build_sets_the_last_pdf_aside_and_leaves_no_partial_file(
        book: Path, tmp_path: Path, artifacts: Path, capsys: pytest.CaptureFixture) -> None:
    build = tmp_path / "build"
    report = build_pdf(book, build, "smoke", jobs=2)
    before = report.pdf.read_bytes()
    chapter = book / "01_first.py"
    good = chapter.read_text()
    chapter.write_text(good.replace("smoke=42", "smoke=1 / 0"))
    with pytest.raises(ChapterRunError, match="01_first.py:17: ZeroDivisionError"):
        build_pdf(book, build, "smoke", jobs=2)
    assert not report.pdf.exists(), "a failed build left a book.pdf that looks current"
    assert (build / "book.last-good.pdf").read_bytes() == before
    assert sorted(p.name for p in build.iterdir()) == ["book.last-good.pdf", "cache", "html"]
    assert not (build / "html" / "index.html").exists()
    assert "kept as" in capsys.readouterr().err
    chapter.write_text(good)
    build_pdf(book, build, "smoke", jobs=2)
    assert sorted(p.name for p in build.iterdir()) == ["book.pdf", "cache", "html"]


def test_reference_to_unknown_label_names_file_and_line(book: Path, tmp_path: Path,
                                                        artifacts: Path) -> None:
    chapter = book / "90_appendix.py"
    chapter.write_text(chapter.read_text().replace("@fig-line", "@fig-nowhere"))
    executed = run(book, tmp_path / "cache")
    with pytest.raises(ChapterFormatError, match=r"90_appendix.py:4: reference to "
                                                 r"unknown label @fig-nowhere"):
        render_book(executed, tmp_path / "html", "smoke")


def test_output_lines_wrap_with_a_mark_and_long_outputs_are_trimmed() -> None:
    wrapped = format_output("x" * 100).split("\n")
    assert wrapped[0].endswith("↩") and len(wrapped[0]) == 80
    trimmed = format_output("\n".join(str(i) for i in range(100))).split("\n")
    assert "… 68 lines omitted …" in trimmed and trimmed[-1] == "99"


def test_output_lines_wrap_at_a_space_not_inside_a_word() -> None:
    words = " ".join(f"word{i:02d}" for i in range(30))  # 209 characters
    wrapped = format_output(words).split("\n")
    assert all(len(line) <= 80 for line in wrapped)
    assert [line.removesuffix(" ↩").strip() for line in wrapped] == [
        " ".join(words.split()[start:end]) for start, end in ((0, 11), (11, 22), (22, 30))]


def test_a_long_path_wraps_after_a_slash_never_at_its_hyphens() -> None:
    path = "/usr/lib/x86_64-linux-gnu/openblas-pthread/" + "deep-folder/" * 6 + "libblas.so"
    wrapped = format_output(path).split("\n")
    assert all(len(line) <= 80 for line in wrapped) and len(wrapped) > 1
    assert all(line.removesuffix(" ↩").endswith("/") for line in wrapped[:-1])
    assert "".join(line.removesuffix(" ↩").lstrip() for line in wrapped) == path


# chapters in parts -----------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fixture book's HTML, executed and rendered once for the tests of parts."""
    folder = tmp_path_factory.mktemp("parts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXLLM_ARTIFACTS", str(folder / "artifacts"))
        executed = run(FIXTURE_BOOK, folder / "cache")
    return render_book(executed, folder / "html", "smoke").read_text()


def test_parts_are_sections_of_one_appendix(rendered: str) -> None:
    start = rendered.index('id="ch-90_appendix"')
    appendix = rendered[start:rendered.index('<section class="chapter appendix" '
                                             'id="ch-91_closing"')]
    assert '<section class="chapter' not in appendix and appendix.count("<h1") == 1, \
        "a part opened a chapter of its own"
    assert appendix.index('id="ch-90_appendix_01"') < appendix.index('id="ch-90_appendix_02"')
    assert ('<h2 id="sec-90_appendix_01-1"><span class="secnum">A.1</span> '
            "Answers to chapter 1</h2>") in appendix
    assert ('<h2 id="sec-90_appendix_02-2"><span class="secnum">A.2</span> '
            "Answers to chapter 2</h2>") in appendix
    assert "<h3>Exercise 1.1</h3>" in appendix and "<h3>Exercise 2.1</h3>" in appendix
    assert 'class="capnum">Table A.1<' in appendix and 'class="capnum">Table A.2<' in appendix
    assert ">Table A.1</a> in the first part and to " in appendix and ">Figure 1.1</a>" in appendix
    assert "21 is half the answer" in appendix and "left, 1 2 3, and" in appendix
    assert 'class="kicker">Appendix B<' in rendered and "Appendix C" not in rendered, \
        "a part took an appendix letter"


def test_contents_list_the_parts_under_their_appendix(rendered: str) -> None:
    contents = rendered[rendered.index('<ul class="toc">'):rendered.index("</ul>")]
    rows = [(kind, anchor, " ".join(re.sub("<[^>]+>", " ", text).split()))
            for kind, anchor, text in re.findall(
                r'<li class="toc-(chapter|section)[^"]*"><a href="#([^"]+)">(.*?)</a>', contents)]
    assert rows[-4:] == [
        ("chapter", "ch-90_appendix", "A An Appendix"),
        ("section", "sec-90_appendix_01-1", "A.1 Answers to chapter 1"),
        ("section", "sec-90_appendix_02-2", "A.2 Answers to chapter 2"),
        ("chapter", "ch-91_closing", "B Closing Appendix")]


def test_each_part_runs_and_is_cached_on_its_own(book: Path, tmp_path: Path,
                                                 artifacts: Path) -> None:
    cache = tmp_path / "cache"
    first = {e.chapter.stem: e for e in run(book, cache)}
    appendix = ["90_appendix", "90_appendix_01", "90_appendix_02"]
    assert len({first[stem].path for stem in appendix}) == 3
    assert not any(first[stem].from_cache for stem in appendix)
    part = book / "90_appendix_02.py"
    part.write_text(part.read_text().replace("2 * int(n)", "3 * int(n)"))
    again = {e.chapter.stem: e for e in run(book, cache)}
    assert [stem for stem, e in again.items() if not e.from_cache] == ["90_appendix_02"]
    assert again["90_appendix_01"].path == first["90_appendix_01"].path
    assert again["90_appendix_02"].path != first["90_appendix_02"].path


@pytest.mark.parametrize(
    ("names", "message"),
    [(["01_a.py", "90_sol_01.py"],
      r"90_sol_01.py:1: 90_sol_01.py is a part of 90_sol.py, which is not in "),
     (["90_sol.py", "90_sol_01.py", "90_sol_01_02.py"],
      r"90_sol_01_02.py:1: 90_sol_01_02.py continues 90_sol_01.py, itself a part of "
      r"90_sol.py; parts do not nest")],
)
def test_malformed_part_is_refused(tmp_path: Path, names: list[str], message: str) -> None:
    for name in names:
        write_chapter(tmp_path, name, f"""
            # %% [markdown]
            # # Title of {name}
        """)
    with pytest.raises(ChapterFormatError, match=message):
        read_book(tmp_path)


def test_part_rendered_without_its_opener_is_refused(tmp_path: Path) -> None:
    part = write_chapter(tmp_path, "90_sol_01.py", """
        # %% [markdown]
        # # A part
    """)
    with pytest.raises(ChapterFormatError, match=r"90_sol_01.py:1: .* must come before it"):
        number_chapters([read_chapter(part)])


# exporting -------------------------------------------------------------------------
def test_export_and_export_check(book: Path, tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    chapters = read_book(book)
    assert stale_modules(chapters, package) == [f"{package}/fixture_mod.py is missing"]
    export(chapters, package)
    module = (package / "fixture_mod.py").read_text()
    assert module.startswith("# Generated by `make export` from book/01_first.py, "
                             "book/02_second.py.")
    assert module.index("# book/01_first.py:20\ndef square") < module.index(
        "# book/02_second.py:12\ndef cube")
    assert '__all__ = ["square", "cube"]' in module and "First Chapter" in module
    assert "def square(x: int) -> int:" in module and "\n#| " not in module
    assert stale_modules(chapters, package) == []
    (package / "fixture_mod.py").write_text(module + "\n# edited by hand\n")
    assert stale_modules(chapters, package) == [f"{package}/fixture_mod.py differs "
                                                "from its chapter"]


def test_run_takes_chapters_by_number_stem_or_file_and_adds_what_they_read() -> None:
    for name in ("09", "09_generation", "book/09_generation.py"):
        assert [c.stem for c in _chapters([name], BOOK)] == ["07_training", "09_generation"]
    assert len(_chapters([], BOOK)) == len(read_book(BOOK))
    with pytest.raises(SystemExit, match="no chapter '77' in the book"):
        _chapters(["77"], BOOK)


def test_a_chapter_depends_on_the_chapters_whose_artifacts_it_reads(tmp_path: Path) -> None:
    path = write_chapter(tmp_path, "03_reader.py", """
        # %% [markdown]
        # # Reader

        # %%
        a = artifact_path("01_writer/model.txt")
        b = artifact_path(f"02_other/{a.name}")
        c = artifact_path( 'nothing/here.txt')
    """)
    stems = {"01_writer", "02_other", "03_reader"}
    assert dependencies(read_chapter(path), stems) == {"01_writer", "02_other"}
