"""Run one chapter in this process and write it as an executed notebook.

    python -m mlxllm.press.kernel book/01_map.py out.ipynb

Cells run in order in one namespace, compiled with the chapter's file name and line
numbers, so a traceback points into the chapter. Each cell's stdout and stderr, the
value of its last expression and the matplotlib figures it leaves open are stored as
notebook outputs; `{{ expr }}` in prose is evaluated in the namespace the run leaves.
On failure the notebook is not written; an error record (file, line, traceback) goes
to `out.ipynb.error.json` and the exit status is 1.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import mlxllm  # noqa: F401  (loads OpenBLAS before mlx.core on Linux)
from mlxllm.press.notebook import CellOutput, ChapterRun
from mlxllm.press.read import Cell, Chapter, inline_matches, read_chapter

STYLE = Path(__file__).with_name("book.mplstyle")


class CellFailure(Exception):
    """A cell raised; carries the chapter line and a trimmed traceback."""

    def __init__(self, line: int, message: str, trace: str) -> None:
        super().__init__(message)
        self.line, self.message, self.trace = line, message, trace


def _setup_matplotlib() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.style.use(str(STYLE))
    return plt


def _failure(chapter: Chapter, error: BaseException, fallback_line: int) -> CellFailure:
    frames = traceback.extract_tb(error.__traceback__)
    chapter_file = str(chapter.path)
    in_chapter = [f for f in frames if f.filename == chapter_file]
    line = in_chapter[-1].lineno if in_chapter and in_chapter[-1].lineno else fallback_line
    keep = frames[next((i for i, f in enumerate(frames) if f.filename == chapter_file), 0):]
    trace = "".join(traceback.format_list(keep))
    trace += "".join(traceback.format_exception_only(type(error), error))
    return CellFailure(line, f"{type(error).__name__}: {error}", trace)


def _syntax_failure(cell: Cell, error: SyntaxError) -> CellFailure:
    """A syntax error at its line in the chapter file, with the cell's lines around it."""
    in_cell = error.lineno or 1
    line = cell.code_line + in_cell - 1
    code = cell.code.split("\n")
    shown = []
    for index in range(max(0, in_cell - 3), min(len(code), in_cell + 2)):
        mark = ">" if index + 1 == in_cell else " "
        shown.append(f"{mark} {cell.code_line + index:5d} | {code[index]}")
    kind = type(error).__name__
    return CellFailure(line, f"{kind}: {error.msg}", "\n".join(shown) + "\n")


def _compile_cell(chapter: Chapter, cell: Cell) -> tuple[Any, Any]:
    tree = ast.parse(cell.code, filename=str(chapter.path))
    ast.increment_lineno(tree, cell.code_line - 1)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    body = compile(tree, str(chapter.path), "exec")
    tail = compile(last, str(chapter.path), "eval") if last else None
    return body, tail


def _value_text(value: Any) -> tuple[str | None, str | None]:
    """A last expression's repr and Markdown; none for None or a plotting call's return."""
    if value is None or type(value).__module__.startswith("matplotlib"):
        return None, None  # a plotting call's return value is noise next to its figure
    markdown = getattr(value, "_repr_markdown_", None)
    return repr(value), markdown() if callable(markdown) else None


def _figures(plt: Any) -> tuple[str, ...]:
    """Every open figure as an SVG document; the figures are closed."""
    svgs = []
    for number in plt.get_fignums():
        figure = plt.figure(number)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", bbox_inches="tight")
        plt.close(figure)
        svgs.append(buffer.getvalue())
    return tuple(svgs)


def run_code_cell(chapter: Chapter, cell: Cell, namespace: dict, plt: Any) -> CellOutput:
    """Execute one cell; return what it printed, drew and evaluated to."""
    try:
        body, tail = _compile_cell(chapter, cell)
    except SyntaxError as error:  # parsed before line numbers move: lineno is in the cell
        raise _syntax_failure(cell, error) from None
    stream = io.StringIO()
    value = None
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
            exec(body, namespace)
            if tail is not None:
                value = eval(tail, namespace)
    except Exception as error:
        raise _failure(chapter, error, cell.code_line) from None
    seconds = round(time.perf_counter() - start, 3)  # as the notebook stores it
    text, markdown = _value_text(value)
    return CellOutput(True, stream.getvalue(), _figures(plt), text, markdown, seconds)


def inline_values(chapter: Chapter, cell: Cell, namespace: dict) -> list[str]:
    """Evaluate and format each `{{ expr[:spec] }}` in a markdown cell."""
    values = []
    for match in inline_matches(cell.source):
        text = match["expr"].strip()
        line = cell.line + cell.source[: match.start()].count("\n")
        expression, spec = text, ""
        try:
            ast.parse(text, mode="eval")
        except SyntaxError:
            expression, _, spec = text.rpartition(":")
        try:
            value = eval(compile(expression, str(chapter.path), "eval"), namespace)
            values.append(format(value, spec))
        except Exception as error:
            raise CellFailure(
                line, f"inline expression {{{{ {text} }}}} failed: "
                f"{type(error).__name__}: {error} (prose is filled in from the "
                "names the chapter defines by the end of its run)",
                "".join(traceback.format_exception_only(type(error), error)),
            ) from None
    return values


def run_chapter(chapter: Chapter) -> ChapterRun:
    """Execute the chapter's code cells in order, then fill in its prose's values."""
    plt = _setup_matplotlib()
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(chapter.path)}
    sys.path.insert(0, str(chapter.path.parent.resolve()))
    code = tuple(run_code_cell(chapter, cell, namespace, plt) if cell.runs else CellOutput()
                 for cell in chapter.code_cells)
    inline = tuple(tuple(inline_values(chapter, cell, namespace))
                   for cell in chapter.cells if cell.kind == "markdown")
    return ChapterRun(code, inline)


def main(argv: list[str]) -> int:
    chapter_path, out = Path(argv[0]), Path(argv[1])
    error_path = out.with_name(out.name + ".error.json")
    try:
        chapter = read_chapter(chapter_path)
        notebook = run_chapter(chapter).to_notebook(chapter)
    except CellFailure as failure:
        error_path.write_text(json.dumps({"line": failure.line, "message": failure.message,
                                          "traceback": failure.trace}))
        return 1
    partial = out.with_name(out.name + ".partial")
    partial.write_text(json.dumps(notebook, indent=1), encoding="utf-8")
    partial.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
