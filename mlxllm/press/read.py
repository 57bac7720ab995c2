"""Read a chapter: jupytext percent cells, their `#| ` options, checked.

The parser is small on purpose: it keeps the line where every cell starts, so that
any error (a bad option, a long listing line, a failing cell) names file and line.
`tests/test_press.py` checks that jupytext reads the same cells.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

CELL_MARKER = re.compile(r"^# %%(?P<rest>.*)$")
# `#| key: value`, or nbdev's `#| default_exp model` without the colon
OPTION_LINE = re.compile(r"^#\|\s*(?P<key>[A-Za-z_][\w-]*)(?:(?:\s*:\s*|\s+)(?P<value>.*?))?\s*$")
INLINE_EXPR = re.compile(r"\{\{(?P<expr>.+?)\}\}")
CODE_SPAN = re.compile(r"```.*?```|`[^`\n]+`", re.S)
LABEL_KINDS = ("fig", "tbl", "lst")
MAX_CODE_COLUMNS = 80

BOOL_OPTIONS = ("echo", "output", "eval")
TEXT_OPTIONS = ("label", "fig-cap", "tbl-cap", "lst-cap", "default_exp")
# a string in a quoted expression, `{{ shares['word start'] }}`: its words are no names
STRING_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
FLAG_OPTIONS = ("export",)  # `#| export`, or `#| export: module` for another module
MODULE_NAME = re.compile(r"[a-z_][a-z0-9_]*")
# `90_solutions_03` continues the chapter `90_solutions`: a part with its own run
CONTINUATION = re.compile(r"(?P<opener>\d\d_[a-z0-9_]+)_\d\d")
KNOWN_OPTIONS = BOOL_OPTIONS + TEXT_OPTIONS + FLAG_OPTIONS


class ChapterFormatError(ValueError):
    """A chapter file that does not follow book/README.md; names file and line."""

    def __init__(self, path: Path, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line = path, line


@dataclass
class Cell:
    """One cell: `kind` is "markdown" or "code"; `line` is where its text starts."""

    kind: str
    source: str
    line: int
    options: dict[str, str | bool] = field(default_factory=dict)
    option_lines: int = 0

    @property
    def code(self) -> str:
        """The source without its option lines (what the reader sees and runs)."""
        return "\n".join(self.source.split("\n")[self.option_lines :]).strip("\n")

    @property
    def code_line(self) -> int:
        """File line of the first line of `code`."""
        lines = self.source.split("\n")[self.option_lines :]
        blank = next((i for i, text in enumerate(lines) if text.strip()), 0)
        return self.line + self.option_lines + blank

    def flag(self, name: str, default: bool) -> bool:
        value = self.options.get(name, default)
        return bool(value)

    @property
    def runs(self) -> bool:
        return self.kind == "code" and self.flag("eval", True)


@dataclass
class Chapter:
    """A chapter file read into cells, with where it sits in the book."""

    path: Path
    cells: list[Cell]

    @property
    def stem(self) -> str:
        return self.path.stem

    @property
    def order(self) -> int:
        return int(self.stem[:2])

    @property
    def part(self) -> str:
        """"front", "main" or "appendix", from the two-digit prefix."""
        if self.order == 0:
            return "front"
        return "appendix" if self.order >= 90 else "main"

    @property
    def continues(self) -> str | None:
        """The stem of the chapter this file is a part of, or None when it opens one."""
        match = CONTINUATION.fullmatch(self.stem)
        return match["opener"] if match else None

    @property
    def title(self) -> str:
        first = next(c for c in self.cells if c.kind == "markdown")
        return first.source.lstrip().split("\n", 1)[0].lstrip("#").strip()

    @property
    def default_exp(self) -> str | None:
        for cell in self.cells:
            if "default_exp" in cell.options:
                return str(cell.options["default_exp"])
        return None

    def export_module(self, cell: Cell) -> str | None:
        """The mlxllm module a cell is exported to, or None when it is not exported."""
        target = cell.options.get("export")
        if target is None:
            return None
        return target if isinstance(target, str) else self.default_exp

    @property
    def code_cells(self) -> list[Cell]:
        return [c for c in self.cells if c.kind == "code"]


def inline_matches(text: str) -> list[re.Match]:
    """The `{{ expr }}` in prose, except those shown literally inside `code`."""
    code = [m.span() for m in CODE_SPAN.finditer(text)]
    return [m for m in INLINE_EXPR.finditer(text)
            if not any(start <= m.start() < end for start, end in code)]


def _markdown_text(lines: list[str]) -> str:
    stripped = []
    for text in lines:
        if text.startswith("# "):
            stripped.append(text[2:])
        elif text.rstrip() == "#":
            stripped.append("")
        else:
            stripped.append(text)
    return "\n".join(stripped)


LIST_START = re.compile(r"(1[.)]|[-+*]) ")  # what CommonMark lets break into a paragraph
NOT_PARAGRAPH = re.compile(r"\s|(\d+[.)]|[-+*]|#+|\||>) |\$\$|```|<")


def _check_paragraphs(path: Path, start: int, lines: list[str]) -> None:
    """Refuse a line of a paragraph that Markdown would read as the start of a list, which
    breaks the paragraph there: '... around 0.02 to' / '1. Adding ...'."""
    fenced = False
    for offset, (before, line) in enumerate(zip(lines, lines[1:]), start=1):
        if before.startswith(("```", "$$")):
            fenced = not fenced
        if fenced or not before.strip() or NOT_PARAGRAPH.match(before):
            continue
        if LIST_START.match(line):
            raise ChapterFormatError(
                path, start + offset, f"this line starts with {line.split()[0]!r}, which "
                "Markdown reads as a list and so breaks the paragraph here; move it onto "
                "the line before, or put a blank line first if a list is meant")


def _split_cells(path: Path, text: str) -> list[Cell]:
    cells: list[Cell] = []
    kind: str | None = None
    start, body = 0, []

    def close() -> None:
        if kind is None:
            return
        while body and not body[-1].strip():
            body.pop()
        source = _markdown_text(body) if kind == "markdown" else "\n".join(body)
        if kind == "markdown":
            _check_paragraphs(path, start, source.split("\n"))
        cells.append(Cell(kind, source, start))

    for number, line in enumerate(text.split("\n"), start=1):
        marker = CELL_MARKER.match(line)
        if marker:
            close()
            rest = marker["rest"].strip()
            if rest in ("", "[code]"):
                kind = "code"
            elif rest == "[markdown]":
                kind = "markdown"
            else:
                raise ChapterFormatError(
                    path, number, f"unknown cell marker '# %%{marker['rest']}'; "
                    "use '# %%' or '# %% [markdown]'"
                )
            start, body = number + 1, []
        elif kind is None:
            if line.strip() and not line.startswith("#"):
                raise ChapterFormatError(
                    path, number, "code before the first cell marker; "
                    "start the file with '# %% [markdown]'"
                )
        else:
            body.append(line)
    close()
    return cells


def _parse_options(path: Path, cell: Cell) -> None:
    lines = cell.source.split("\n")
    count = 0
    for offset, text in enumerate(lines):
        if not text.startswith("#|"):
            break
        count += 1
        number = cell.line + offset
        match = OPTION_LINE.match(text)
        if not match:
            raise ChapterFormatError(
                path, number, f"malformed cell option {text!r}; write '#| key: value'"
            )
        key, value = match["key"], match["value"]
        if key not in KNOWN_OPTIONS:
            raise ChapterFormatError(
                path, number, f"unknown cell option {key!r}; known options: "
                + ", ".join(KNOWN_OPTIONS)
            )
        if key in cell.options:
            raise ChapterFormatError(path, number, f"option {key!r} given twice")
        if key in BOOL_OPTIONS:
            if value not in ("true", "false"):
                raise ChapterFormatError(
                    path, number, f"option {key!r} takes true or false, not {value!r}"
                )
            cell.options[key] = value == "true"
        elif key in FLAG_OPTIONS:
            if value and not MODULE_NAME.fullmatch(value):
                raise ChapterFormatError(
                    path, number, f"'#| {key}: {value}': {value!r} is not a module name "
                    "(write '#| export' for the chapter's default_exp module, or "
                    "'#| export: data' for mlxllm/data.py)"
                )
            cell.options[key] = value or True
        else:
            if not value:
                raise ChapterFormatError(path, number, f"option {key!r} needs a value")
            cell.options[key] = value
    cell.option_lines = count


def _check_options(path: Path, chapter_cells: list[Cell]) -> None:
    seen_exp = False
    for cell in chapter_cells:
        options = cell.options
        where = cell.line
        if "default_exp" in options:
            if seen_exp:
                raise ChapterFormatError(path, where, "'default_exp' given twice in one chapter")
            if not MODULE_NAME.fullmatch(str(options["default_exp"])):
                raise ChapterFormatError(
                    path, where, f"default_exp {options['default_exp']!r} is not a module name"
                )
            seen_exp = True
        if options.get("export") is True and not seen_exp:
            raise ChapterFormatError(
                path, where, "'#| export' before any '#| default_exp': "
                "name the module in the chapter's first code cell"
            )
        label = options.get("label")
        if label is not None:
            kind = str(label).split("-", 1)[0]
            if kind not in LABEL_KINDS or not re.fullmatch(r"[a-z]+-[\w-]+", str(label)):
                raise ChapterFormatError(
                    path, where, f"label {label!r} must start with fig-, tbl- or lst-"
                )
        for kind in LABEL_KINDS:
            if f"{kind}-cap" in options and not str(label or "").startswith(f"{kind}-"):
                raise ChapterFormatError(
                    path, where, f"'{kind}-cap' needs a '#| label: {kind}-...' on the same cell"
                )
        if options.get("export") and options.get("eval") is False:
            raise ChapterFormatError(path, where, "an exported cell must run: drop 'eval: false'")


def _check_columns(path: Path, cell: Cell) -> None:
    if not cell.flag("echo", True):
        return
    for offset, text in enumerate(cell.source.split("\n")):
        if len(text) > MAX_CODE_COLUMNS and offset >= cell.option_lines:
            raise ChapterFormatError(
                path, cell.line + offset,
                f"code line is {len(text)} columns; listings stay within "
                f"{MAX_CODE_COLUMNS} so they fit the page",
            )


def _top_level_names(cell: Cell) -> set[str]:
    """Names a code cell binds at module level (assignments, loops, defs, imports)."""
    try:
        tree = ast.parse(cell.code)
    except SyntaxError:
        return set()  # the kernel reports it with its line
    names = set()
    for node in tree.body:
        targets: list[ast.AST] = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        elif isinstance(node, (ast.For, ast.With)):
            targets = [node.target] if isinstance(node, ast.For) else [
                item.optional_vars for item in node.items if item.optional_vars]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        for target in targets:  # `x[i] = ...` binds no name; `x, y = ...` binds two
            names |= {n.id for n in ast.walk(target)
                      if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    return names


def _check_quoted_names(path: Path, cells: list[Cell]) -> None:
    """Prose is filled in after the run, so a quoted name must be bound in one cell."""
    quoted = {}
    for cell in cells:
        if cell.kind == "markdown":
            for match in inline_matches(cell.source):
                expression = STRING_LITERAL.sub("''", match["expr"].split(":")[0])
                for name in re.findall(r"(?<![.\w])[A-Za-z_]\w*", expression):
                    quoted.setdefault(name, cell.line + cell.source[: match.start()].count("\n"))
    first_binding: dict[str, int] = {}
    for cell in cells:
        if not cell.runs:
            continue
        for name in _top_level_names(cell) & set(quoted):
            if name in first_binding:
                raise ChapterFormatError(
                    path, cell.code_line,
                    f"{name!r} is quoted in prose (line {quoted[name]}) but bound again "
                    f"here after line {first_binding[name]}; prose is filled in after the "
                    "run, so give the quoted value a name of its own")
            first_binding[name] = cell.code_line


def read_chapter(path: Path) -> Chapter:
    """Parse and check one chapter file."""
    path = Path(path)
    if not re.fullmatch(r"\d\d_[a-z0-9_]+", path.stem):
        raise ChapterFormatError(path, 1, "chapter files are named NN_slug.py")
    cells = _split_cells(path, path.read_text(encoding="utf-8"))
    if not cells or cells[0].kind != "markdown" or not cells[0].source.lstrip().startswith("# "):
        raise ChapterFormatError(
            path, 1, "a chapter opens with a markdown cell whose first line is '# Title'"
        )
    for cell in cells:
        if cell.kind == "code":
            _parse_options(path, cell)
            _check_columns(path, cell)
    _check_options(path, cells)
    _check_quoted_names(path, cells)
    return Chapter(path, cells)


def _reading_order(path: Path) -> tuple[str, str]:
    """Sort key that puts the parts of a chapter right after its opener, in order."""
    match = CONTINUATION.fullmatch(path.stem)
    return (match["opener"] if match else path.stem, path.stem)


def _check_parts(chapters: list[Chapter]) -> None:
    """Every part continues an opener that is in the book; parts do not nest."""
    by_stem = {c.stem: c for c in chapters}
    for chapter in chapters:
        opener = chapter.continues
        if opener is None:
            continue
        if opener not in by_stem:
            raise ChapterFormatError(
                chapter.path, 1, f"{chapter.path.name} is a part of {opener}.py, which "
                f"is not in {chapter.path.parent}; a chapter split into parts opens "
                f"with {opener}.py (its '# Title' and introduction)")
        if by_stem[opener].continues:
            raise ChapterFormatError(
                chapter.path, 1, f"{chapter.path.name} continues {opener}.py, itself a "
                f"part of {by_stem[opener].continues}.py; parts do not nest")


def read_book(book_dir: Path) -> list[Chapter]:
    """Every chapter file of the book, in reading order (a chapter's parts follow it)."""
    paths = sorted(Path(book_dir).glob("[0-9][0-9]_*.py"), key=_reading_order)
    if not paths:
        raise FileNotFoundError(f"no chapters (NN_slug.py) in {book_dir}")
    chapters = [read_chapter(p) for p in paths]
    _check_parts(chapters)
    return chapters
