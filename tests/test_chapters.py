"""Every chapter file of the book, each part too, runs in the smoke profile (one test each).

The runs are those of the session's smoke build (conftest.smoke_book), which runs every
chapter afresh; running them again here would double the suite's time."""

from __future__ import annotations

import nbformat
import pytest

from mlxllm.press.__main__ import BuildReport
from mlxllm.press.execute import dependencies, execute
from mlxllm.press.read import Chapter, read_book
from tests.conftest import BOOK, ROOT

CHAPTERS = read_book(BOOK)


def with_upstream(chapter: Chapter) -> list[Chapter]:
    """The chapter and the chapters whose artifacts it reads, transitively."""
    stems = {c.stem for c in CHAPTERS}
    needed, todo = set(), [chapter.stem]
    while todo:
        stem = todo.pop()
        needed.add(stem)
        todo += dependencies(next(c for c in CHAPTERS if c.stem == stem), stems) - needed
    return [c for c in CHAPTERS if c.stem in needed]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=[c.stem for c in CHAPTERS])
def test_chapter_runs(chapter: Chapter, smoke_book: BuildReport,
                      monkeypatch: pytest.MonkeyPatch) -> None:
    build = smoke_book.pdf.parent
    monkeypatch.setenv("MLXLLM_ARTIFACTS", str(build / "artifacts"))
    results = execute(with_upstream(chapter), "smoke", build / "cache", ROOT,
                      log=lambda _: None)
    result = results[-1]
    assert result.chapter is chapter and result.from_cache  # the build's own run
    notebook = nbformat.reads(result.path.read_text(), as_version=4)
    nbformat.validate(notebook)
    ran = [c for c in notebook.cells if c.cell_type == "code" and c.execution_count]
    assert len(ran) == sum(1 for c in chapter.code_cells if c.runs)
