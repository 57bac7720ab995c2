"""The kernel's error reports: a failing chapter names the line in its own file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nbformat
import pytest

from mlxllm.press.execute import ChapterRunError, execute
from mlxllm.press.kernel import run_chapter
from mlxllm.press.notebook import ChapterRun
from mlxllm.press.read import read_chapter
from tests.conftest import ROOT

CHAPTER = """
    # %% [markdown]
    # # Broken
    #
    # Some prose, so that the broken cell sits well below the top of the file.

    # %%
    first = 1

    # %%
    #| echo: false
    def ok():
        return 2

    values = [1, 2
    print(values)
"""


@pytest.mark.parametrize("broken, kind, line", [
    ("    values = [1, 2\n    print(values)", "SyntaxError", 14),
    ("    if first:\n    print(first)", "IndentationError", 15),
])
def test_syntax_error_names_the_file_line_and_shows_it(
        tmp_path: Path, artifacts: Path, broken: str, kind: str, line: int) -> None:
    source = CHAPTER.replace("    values = [1, 2\n    print(values)", broken)
    path = tmp_path / "01_broken.py"
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    with pytest.raises(ChapterRunError) as error:
        execute([read_chapter(path)], "smoke", tmp_path / "cache", ROOT, log=lambda _: None)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: {kind}"), message
    file_line = path.read_text().split("\n")[line - 1]
    assert f"> {line:5d} | {file_line}" in message, message


def test_a_run_survives_the_notebook_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "01_round.py"
    path.write_text(textwrap.dedent("""
        # %% [markdown]
        # # Round trip
        #
        # The answer is {{ answer }}.

        # %%
        import matplotlib.pyplot as plt
        from mlxllm.book import Table
        answer = 42
        print("printed")
        plt.plot([1, 2])
        Table([[1, 2]], ["a", "b"])

        # %%
        #| eval: false
        never_runs()
    """).lstrip(), encoding="utf-8")
    chapter = read_chapter(path)
    run = run_chapter(chapter)
    notebook = run.to_notebook(chapter)
    nbformat.validate(nbformat.reads(json.dumps(notebook), as_version=4))
    assert ChapterRun.from_notebook(notebook) == run
    shown, skipped = run.code
    assert shown.ran and shown.printed == "printed\n" and len(shown.figures) == 1
    assert shown.value_markdown.startswith("| a | b |") and not skipped.ran
    assert run.inline == (("42",),)


def test_a_table_formats_numpy_scalars_like_python_numbers() -> None:
    import numpy as np

    from mlxllm.book import Table

    rows = [(np.float32(1.708182), np.int64(12345), 0.5, True, "x")]
    text = Table(rows, ["f", "i", "p", "b", "s"], digits=3)._repr_markdown_()
    assert "| 1.708 | 12,345 | 0.500 | True | x |" in text
