"""What a chapter needs from the press at run time (hand-written, not exported).

`pick` chooses a size per profile, `Table` is a result the press renders as a
numbered table (and a script prints as text), `artifact_path` is where a chapter
leaves files for later chapters.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np

PROFILES = ("smoke", "book", "full")
T = TypeVar("T")


def profile() -> str:
    """The active profile: $MLXLLM_PROFILE, or `book` when it is unset."""
    name = os.environ.get("MLXLLM_PROFILE", "book")
    if name not in PROFILES:
        raise ValueError(
            f"MLXLLM_PROFILE={name!r} is not a profile; use one of {', '.join(PROFILES)}"
        )
    return name


def pick(*, smoke: T, book: T, full: T | None = None) -> T:
    """The value for the active profile; `full` defaults to the `book` value."""
    chosen = {"smoke": smoke, "book": book, "full": book if full is None else full}
    return chosen[profile()]


def artifact_path(relative: str) -> Path:
    """A path under build/artifacts/<profile>/ for files shared between chapters.

    Name it after the chapter that writes it, e.g. "07_training/baby.safetensors";
    the press reads these names to learn which chapter depends on which.
    """
    root = Path(os.environ.get("MLXLLM_ARTIFACTS", Path("build") / "artifacts"))
    path = root / profile() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _cell_text(value: object, digits: int) -> str:
    """A number with thousands separators (floats to `digits` places, NumPy's
    scalars too); anything else as str() gives it."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    if isinstance(value, numbers.Real):
        return f"{float(value):,.{digits}f}"
    return str(value)


class Table:
    """Rows with headers; rendered by the press as a table, printed as text."""

    def __init__(
        self, rows: Sequence[Sequence[object]], headers: Sequence[str], digits: int = 2
    ) -> None:
        if any(len(row) != len(headers) for row in rows):
            raise ValueError(f"every row needs {len(headers)} cells, one per header")
        self.headers = [str(h) for h in headers]
        self.rows = [[_cell_text(v, digits) for v in row] for row in rows]

    def _repr_markdown_(self) -> str:
        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

        aligns = [
            "---:" if all(_is_number(r[i]) for r in self.rows) else ":---"
            for i in range(len(self.headers))
        ]
        return "\n".join([line(self.headers), line(aligns), *map(line, self.rows)])

    def __repr__(self) -> str:
        widths = [
            max(len(c) for c in column) for column in zip(self.headers, *self.rows)
        ]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(row, widths))
            for row in [self.headers, ["-" * w for w in widths], *self.rows]
        ]
        return "\n".join(line.rstrip() for line in lines)


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").rstrip("%×x"))
    except ValueError:
        return False
    return True
