"""What a chapter's run hands the renderer, as named records.

The kernel stores each run as an ordinary nbformat-4 notebook under build/cache, so a
reader can open it in Jupyter. The press itself never reads that notebook by key and
position: the kernel builds a `ChapterRun` and writes it with `to_notebook`, and the
renderer reads it back with `ChapterRun.from_notebook`. Change the format here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlxllm.press.read import Chapter

SVG, MARKDOWN, PLAIN = "image/svg+xml", "text/markdown", "text/plain"


@dataclass(frozen=True)
class CellOutput:
    """What one code cell left: what it printed, its figures, its last value."""

    ran: bool = False
    printed: str = ""  # stdout and stderr together, in the order they were written
    figures: tuple[str, ...] = ()  # one SVG document per matplotlib figure left open
    value: str | None = None  # repr() of the cell's last expression, if not None
    value_markdown: str | None = None  # its _repr_markdown_() (a Table), if it has one
    seconds: float = 0.0

    def outputs(self) -> list[dict[str, Any]]:
        """The nbformat outputs: the printed stream, the figures, then the value."""
        outputs: list[dict[str, Any]] = []
        if self.printed:
            outputs.append({"output_type": "stream", "name": "stdout", "text": self.printed})
        outputs += [{"output_type": "display_data", "metadata": {}, "data": {SVG: svg}}
                    for svg in self.figures]
        if self.value is not None:
            data = {PLAIN: self.value}
            if self.value_markdown is not None:
                data[MARKDOWN] = self.value_markdown
            outputs.append({"output_type": "execute_result", "execution_count": None,
                            "data": data, "metadata": {}})
        return outputs

    @classmethod
    def from_cell(cls, cell: dict[str, Any]) -> CellOutput:
        """Read a code cell of a notebook that `ChapterRun.to_notebook` wrote."""
        printed, figures, value, markdown = "", [], None, None
        for output in cell["outputs"]:
            data = output.get("data", {})
            if output["output_type"] == "stream":
                printed += output["text"]
            elif SVG in data:
                figures.append(data[SVG])
            elif output["output_type"] == "execute_result":
                value, markdown = data.get(PLAIN), data.get(MARKDOWN)
        return cls(cell["execution_count"] is not None, printed, tuple(figures), value,
                   markdown, cell["metadata"].get("press", {}).get("seconds", 0.0))


@dataclass(frozen=True)
class ChapterRun:
    """A chapter's results: one CellOutput per code cell, and per markdown cell the
    formatted values of its `{{ expr }}`, both in the chapter's cell order."""

    code: tuple[CellOutput, ...]
    inline: tuple[tuple[str, ...], ...]

    def to_notebook(self, chapter: Chapter) -> dict[str, Any]:
        """The run as an nbformat-4 notebook whose cells are the chapter's cells."""
        code, inline = iter(self.code), iter(self.inline)
        cells, count = [], 0
        for cell in chapter.cells:
            record: dict[str, Any] = {"id": f"cell-{len(cells)}", "source": cell.source}
            if cell.kind == "markdown":
                record |= {"cell_type": "markdown",
                           "metadata": {"press": {"inline": list(next(inline))}}}
            else:
                output = next(code)
                count += output.ran
                record |= {"cell_type": "code",
                           "execution_count": count if output.ran else None,
                           "metadata": {"press": {"seconds": output.seconds}},
                           "outputs": output.outputs()}
            cells.append(record)
        return {"nbformat": 4, "nbformat_minor": 5, "cells": cells,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                            "language": "python"},
                             "language_info": {"name": "python"},
                             "jupytext": {"formats": "py:percent"}}}

    @classmethod
    def from_notebook(cls, notebook: dict[str, Any]) -> ChapterRun:
        """Read back a notebook that `to_notebook` wrote."""
        cells = notebook["cells"]
        return cls(tuple(CellOutput.from_cell(c) for c in cells if c["cell_type"] == "code"),
                   tuple(tuple(c["metadata"]["press"]["inline"]) for c in cells
                         if c["cell_type"] == "markdown"))
