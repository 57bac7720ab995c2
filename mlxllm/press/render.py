"""Render executed chapters to one HTML book: prose, listings, outputs, numbering.

The same HTML serves as the browsable site (build/html/index.html) and as the input
of the PDF. Figures and formulas are SVG files referenced by <img>, which WeasyPrint
lays out much faster than inline <svg>.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import markdown
import ziamath
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

from mlxllm.press.execute import Executed
from mlxllm.press.notebook import CellOutput, ChapterRun
from mlxllm.press.read import CODE_SPAN, Cell, Chapter, ChapterFormatError, inline_matches

CSS = Path(__file__).with_name("book.css")
BOOK_TITLE = "Build a Large Language Model from Scratch"
BOOK_SUBTITLE = "with MLX"
AUTHORS = "The mlxllm authors"
OUTPUT_WIDTH = 80
OUTPUT_MAX_LINES = 36
OUTPUT_HEAD, OUTPUT_TAIL = 24, 8
MATH_PX = 14.5
LONG_LISTING = 12  # lines; a shorter listing is never split across two pages
KIND_NAMES = {"fig": "Figure", "tbl": "Table", "lst": "Listing", "eq": "Equation"}
DISPLAY_MATH = re.compile(r"\$\$(?P<tex>.+?)\$\$(?:\s*\{#(?P<label>eq-[\w-]+)\})?", re.S)
# inline math may wrap onto the next source line, but never spans a blank line
INLINE_MATH = re.compile(r"(?<![\\$])\$(?!\s)(?P<tex>(?:[^$\n]|\n(?!\s*\n))+?)(?<!\s)\$(?!\d)")
CROSS_REF = re.compile(r"(?<![\w@])@(?P<label>(?:fig|tbl|lst|eq)-[\w-]*[\w])")
# `: Caption {#tbl-name}`, a paragraph of its own after a Markdown table, captions it
TABLE_CAPTION = re.compile(r"^: (?P<caption>.+?) \{#(?P<label>tbl-[\w-]+)\}[ \t]*$", re.M)
CAPTIONED_TABLE = re.compile("(<table>.*?</table>)\\s*<p>\ue004(\\d+)\ue004</p>", re.S)
SLOT = "\ue000{}\ue001"  # private-use marks: Markdown strips \x02/\x03
SLOT_RE = re.compile("\ue000(\\d+)\ue001")
HEADING_TAG = re.compile(r"<(/?)h([1-5])\b")


# a contents entry: the chapter, its anchor, its number, its sections (anchor, title)
TocEntry = tuple[Chapter, str, str, list[tuple[str, str]]]


@dataclass
class Target:
    """A numbered thing a cross reference can point at."""

    kind: str
    number: str
    anchor: str
    caption: str = ""  # its caption's Markdown, for the list of figures and tables

    @property
    def name(self) -> str:
        return f"{KIND_NAMES[self.kind]} {self.number}"


@dataclass
class BookIndex:
    """Chapter numbers and every label in the book, found before rendering."""

    chapter_numbers: dict[str, str] = field(default_factory=dict)
    targets: dict[str, Target] = field(default_factory=dict)

    def add(self, chapter: Chapter, line: int, label: str, count: dict[str, int],
            caption: str = "") -> None:
        if label in self.targets:
            raise ChapterFormatError(chapter.path, line, f"label {label!r} is used twice")
        kind = label.split("-", 1)[0]
        count[kind] = count.get(kind, 0) + 1
        prefix = self.chapter_numbers[chapter.stem]
        number = f"{prefix}.{count[kind]}" if prefix else str(count[kind])
        self.targets[label] = Target(kind, number, label, caption)


def number_chapters(chapters: list[Chapter]) -> BookIndex:
    """Number chapters (1, 2, … and A, B, … for appendices) and all their labels.

    A chapter's parts take its number, and their labels continue its count.
    """
    index = BookIndex()
    main = appendix = 0
    for chapter in chapters:
        opener = chapter.continues
        if opener is not None:
            if opener not in index.chapter_numbers:
                raise ChapterFormatError(
                    chapter.path, 1, f"{chapter.path.name} is a part of {opener}.py, "
                    "which must come before it in the book")
            index.chapter_numbers[chapter.stem] = index.chapter_numbers[opener]
        elif chapter.part == "main":
            main += 1
            index.chapter_numbers[chapter.stem] = str(main)
        elif chapter.part == "appendix":
            index.chapter_numbers[chapter.stem] = string.ascii_uppercase[appendix]
            appendix += 1
        else:
            index.chapter_numbers[chapter.stem] = ""
    counts: dict[str, dict[str, int]] = {}
    for chapter in chapters:
        count = counts.setdefault(chapter.continues or chapter.stem, {})
        for cell in chapter.cells:
            if cell.kind == "code" and "label" in cell.options:
                label = str(cell.options["label"])
                caption = str(cell.options.get(label.split("-", 1)[0] + "-cap", ""))
                index.add(chapter, cell.line, label, count, caption)
            elif cell.kind == "markdown":
                labelled = [*DISPLAY_MATH.finditer(cell.source),
                            *TABLE_CAPTION.finditer(cell.source)]
                for match in sorted(labelled, key=lambda m: m.start()):
                    if match["label"]:
                        line = cell.line + cell.source[: match.start()].count("\n")
                        caption = match.groupdict().get("caption") or ""
                        index.add(chapter, line, match["label"], count, caption)
    return index


class MathRenderer:
    """LaTeX to SVG files with ziamath, each formula drawn once per build."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir / "math"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.done: dict[tuple[str, bool], str] = {}

    def __call__(self, tex: str, display: bool, where: tuple[Path, int]) -> str:
        key = (tex, display)
        if key not in self.done:
            try:
                formula = ziamath.Math.fromlatex(tex.strip(), size=MATH_PX,
                                                 inline=not display, margin=0.5)
                svg = formula.svg()
            except Exception as error:  # ziamath raises bare assertions on bad TeX
                raise ChapterFormatError(
                    where[0], where[1], f"cannot typeset math ${tex}$ ({error!r})"
                ) from None
            box = re.match(r'<svg[^>]*viewBox="([-\d.]+) ([-\d.]+) ([\d.]+) ([\d.]+)"', svg)
            width, height, top = float(box[3]), float(box[4]), float(box[2])
            descent = height + top  # the viewBox starts `top` above the baseline
            name = hashlib.sha1(f"{tex}{display}".encode()).hexdigest()[:16] + ".svg"
            (self.out_dir / name).write_text(svg, encoding="utf-8")
            style = f"width:{width:.2f}px;height:{height:.2f}px"
            if not display:
                style += f";vertical-align:{-descent:.2f}px"
            css = "math display" if display else "math"
            self.done[key] = (
                f'<img class="{css}" src="math/{name}" style="{style}" '
                f'alt="{html.escape(tex.strip())}">'
            )
        return self.done[key]


def wrap_point(line: str) -> int:
    """Where to cut a line longer than OUTPUT_WIDTH: after its last space that leaves
    room for the continuation mark, else after the last slash of a long path (never at a
    hyphen, which would read as one), else mid-word."""
    for mark, end in ((" ", OUTPUT_WIDTH - 1), ("/", OUTPUT_WIDTH - 2)):  # " ↩" fits
        found = line.rfind(mark, 0, end)
        if found >= OUTPUT_WIDTH // 2:
            return found + 1
    return OUTPUT_WIDTH - 2


def format_output(text: str) -> str:
    """Wrap long lines with a continuation mark and trim long outputs, visibly."""
    lines = []
    for line in text.rstrip("\n").expandtabs().split("\n"):
        while len(line) > OUTPUT_WIDTH:
            cut = wrap_point(line)
            lines.append(line[:cut].rstrip() + " ↩")
            line = "  " + line[cut:].lstrip(" ")
        lines.append(line)
    if len(lines) > OUTPUT_MAX_LINES:
        omitted = len(lines) - OUTPUT_HEAD - OUTPUT_TAIL
        lines = lines[:OUTPUT_HEAD] + [f"… {omitted} lines omitted …"] + lines[-OUTPUT_TAIL:]
    return "\n".join(html.escape(line) for line in lines)


def caption_html(text: object) -> str:
    """A caption's inline Markdown (code, emphasis) as HTML, without the paragraph."""
    rendered = markdown.markdown(str(text), extensions=["smarty"])
    return re.sub(r"^<p>|</p>$", "", rendered.strip())


def restore_slots(text: str, slots: list[str]) -> str:
    """Put back the fragments that were kept out of Markdown's way, nested ones too."""
    while SLOT_RE.search(text):
        text = SLOT_RE.sub(lambda m: slots[int(m[1])], text)
    return text


class ChapterRenderer:
    """Turns one executed chapter file, an opener or one of its parts, into HTML."""

    def __init__(self, executed: Executed, index: BookIndex, out_dir: Path,
                 math: MathRenderer, first_section: int = 1) -> None:
        self.chapter = executed.chapter
        self.first_section = first_section  # a part continues its chapter's count
        run = ChapterRun.from_notebook(executed.notebook)
        self.index = index
        self.out_dir = out_dir
        self.math = math
        self.number = index.chapter_numbers[self.chapter.stem]
        self.sections: list[tuple[str, str]] = []
        self.figures = 0
        self.floats = 0
        self.inline_values = iter(v for values in run.inline for v in values)
        self.code_outputs = iter(run.code)

    @property
    def anchor(self) -> str:
        return f"ch-{self.chapter.stem}"

    def where(self, cell: Cell, offset: int = 0) -> tuple[Path, int]:
        return self.chapter.path, cell.line + offset

    # prose ---------------------------------------------------------------------
    def caption(self, cell: Cell, option: str, text: str | None = None) -> str:
        """A caption as HTML: inline Markdown, and $…$ math typeset like the body's."""
        slots: list[str] = []

        def math(match: re.Match) -> str:
            slots.append(self.math(match["tex"], False, self.where(cell)))
            return SLOT.format(len(slots) - 1)

        source = str(cell.options.get(option, "")) if text is None else text
        return restore_slots(caption_html(INLINE_MATH.sub(math, source)), slots)

    def prose(self, cell: Cell, text: str) -> str:
        slots: list[str] = []
        captions: list[tuple[str, str]] = []

        def table_caption(match: re.Match) -> str:
            captions.append((match["caption"], match["label"]))
            return f"\ue004{len(captions) - 1}\ue004"

        def keep(fragment: str) -> str:
            slots.append(fragment)
            return SLOT.format(len(slots) - 1)

        def line_of(position: int) -> int:
            return text[:position].count("\n")

        text = TABLE_CAPTION.sub(table_caption, text)
        for match in reversed(inline_matches(text)):  # right to left keeps offsets
            text = text[: match.start()] + "\ue002" + text[match.end():]
        text = re.sub("\ue002", lambda m: html.escape(next(self.inline_values)), text)
        text = CODE_SPAN.sub(lambda m: keep(m[0]) if m[0].startswith("```") else
                             keep(f"<code>{html.escape(m[0][1:-1])}</code>"), text)

        def display(match: re.Match) -> str:
            image = self.math(match["tex"], True, self.where(cell, line_of(match.start())))
            label = match["label"]
            if label:
                target = self.index.targets[label]
                return keep(f'\n\n<div class="equation" id="{label}">{image}'
                            f'<span class="eqnum">({target.number})</span></div>\n\n')
            return keep(f'\n\n<div class="equation">{image}</div>\n\n')

        text = DISPLAY_MATH.sub(display, text)
        text = INLINE_MATH.sub(
            lambda m: keep(self.math(m["tex"].replace("\n", " "), False,
                                     self.where(cell, line_of(m.start())))),
            text)

        def reference(match: re.Match) -> str:
            target = self.index.targets.get(match["label"])
            if target is None:
                raise ChapterFormatError(
                    self.chapter.path, cell.line + line_of(match.start()),
                    f"reference to unknown label @{match['label']}")
            return keep(f'<a class="xref" href="#{target.anchor}">{target.name}</a>')

        text = CROSS_REF.sub(reference, text)
        text = SLOT_RE.sub(lambda m: slots[int(m[1])] if slots[int(m[1])].startswith("```")
                           else m[0], text)
        rendered = markdown.markdown(
            text, extensions=["tables", "fenced_code", "codehilite", "attr_list",
                              "sane_lists", "smarty", "footnotes"],
            extension_configs={"codehilite": {"guess_lang": False, "css_class": "highlight"}},
        )
        rendered = restore_slots(rendered, slots)

        def captioned(match: re.Match) -> str:
            caption, label = captions[int(match[2])]
            target = self.index.targets[label]
            return (f'<figure class="table" id="{target.anchor}" '
                    f'data-float="{self.float_name()}"><figcaption><span class="capnum">'
                    f"{target.name}</span> {self.caption(cell, '', caption)}</figcaption>"
                    f"{match[1]}</figure>")

        rendered = CAPTIONED_TABLE.sub(captioned, rendered)
        if "\ue004" in rendered:
            raise ChapterFormatError(
                self.chapter.path, cell.line,
                "a table caption line `: Caption {#tbl-name}` must be a paragraph of "
                "its own right after a Markdown table")
        if self.chapter.continues:
            rendered = demote_headings(rendered)
        return self.number_sections(rendered)

    def number_sections(self, rendered: str) -> str:
        def section(match: re.Match) -> str:
            title = match[1]
            count = self.first_section + len(self.sections)
            anchor = f"sec-{self.chapter.stem}-{count}"
            number = f"{self.number}.{count}" if self.number else ""
            self.sections.append((anchor, (f"{number} " if number else "") + title))
            label = f'<span class="secnum">{number}</span> ' if number else ""
            return f'<h2 id="{anchor}">{label}{title}</h2>'

        return re.sub(r"<h2>(.*?)</h2>", section, rendered)

    # code ----------------------------------------------------------------------
    def code(self, cell: Cell) -> str:
        output = next(self.code_outputs)
        parts = []
        label = str(cell.options.get("label", ""))
        kind = label.split("-", 1)[0] if label else ""
        target = self.index.targets.get(label)
        if cell.flag("echo", True):
            listing = highlight(cell.code, PythonLexer(), HtmlFormatter(nowrap=True))
            classes = "code" + ("" if cell.runs else " not-run")
            if cell.code.count("\n") >= LONG_LISTING:
                classes += " long"  # may break across pages; short ones move whole
            block = f'<pre class="{classes}">{listing}</pre>'
            module = self.chapter.export_module(cell)
            if module:
                module = f"mlxllm/{module}.py"
                block = f'<div class="export-tag">exported to {module}</div>' + block
            if kind == "lst":
                caption = self.caption(cell, "lst-cap")
                block = (f'<div class="listing" id="{label}"><div class="caption">'
                         f'<span class="capnum">{target.name}</span> {caption}</div>'
                         f"{block}</div>")
            parts.append(block)
        figures = output.figures
        if output.printed and cell.flag("output", True):
            parts.append(f'<pre class="output">{format_output(output.printed)}</pre>')
        if output.value is not None and cell.flag("output", True):
            parts.append(self.result(cell, output, kind, target))
        if kind == "fig" and len(figures) != 1:
            raise ChapterFormatError(
                self.chapter.path, cell.line,
                f"cell labelled {label!r} drew {len(figures)} figures; a fig- cell draws one")
        for svg in figures:
            parts.append(self.figure(cell, svg, target if kind == "fig" else None))
        if kind == "tbl" and not any('class="table"' in p for p in parts):
            raise ChapterFormatError(
                self.chapter.path, cell.line,
                f"cell labelled {label!r} must end with a table (a value with "
                "_repr_markdown_, such as mlxllm.book.Table)")
        return "\n".join(parts)

    def result(self, cell: Cell, output: CellOutput, kind: str, target: Target | None) -> str:
        if output.value_markdown is not None:
            table = markdown.markdown(output.value_markdown, extensions=["tables"])
            caption = ""
            if kind == "tbl" and target:
                text = self.caption(cell, "tbl-cap")
                caption = (f'<figcaption><span class="capnum">{target.name}</span> '
                           f"{text}</figcaption>")
            anchor = f' id="{target.anchor}"' if kind == "tbl" and target else ""
            return (f'<figure class="table"{anchor} data-float="{self.float_name()}">'
                    f"{caption}{table}</figure>")
        return f'<pre class="output result">{format_output(output.value)}</pre>'

    def figure(self, cell: Cell, svg: str, target: Target | None) -> str:
        self.figures += 1
        name = f"{self.chapter.stem}-{self.figures}.svg"
        folder = self.out_dir / "figures"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(svg, encoding="utf-8")
        caption = ""
        anchor = ""
        if target:
            text = self.caption(cell, "fig-cap")
            caption = (f'<figcaption><span class="capnum">{target.name}</span> '
                       f"{text}</figcaption>")
            anchor = f' id="{target.anchor}"'
        return (f'<figure class="figure"{anchor} data-float="{self.float_name()}">'
                f'<img src="figures/{name}" alt="">{caption}</figure>')

    def float_name(self) -> str:
        """A name for the next figure or table that the press may move (press/floats.py)."""
        self.floats += 1
        return f"{self.chapter.stem}-{self.floats}"

    # chapter -------------------------------------------------------------------
    def body(self) -> str:
        """The cells as HTML; a part keeps its title, which becomes a section heading."""
        body = []
        for position, cell in enumerate(self.chapter.cells):
            if cell.kind == "markdown":
                text = cell.source
                if position == 0 and not self.chapter.continues:  # keep line numbers
                    text = re.sub(r"^(\s*)#[^\n]*", r"\1", text, count=1)
                body.append(self.prose(cell, text))
            else:
                body.append(self.code(cell))
        return "".join(body)

    def wrap(self, body: str) -> str:
        """The file's <section>: a chapter's opens with its kicker and title."""
        chapter = self.chapter
        if chapter.continues:
            return f'<section class="continuation" id="{self.anchor}">{body}</section>'
        if chapter.part == "main":
            kicker = f"Chapter {self.number}"
        elif chapter.part == "appendix":
            kicker = f"Appendix {self.number}"
        else:
            kicker = ""
        title = html.escape(chapter.title)
        toc_title = f"{self.number}. {title}" if self.number else title
        opener = (f'<header class="opener"><div class="kicker">{kicker}</div>'
                  f'<h1 data-toc="{toc_title}">{title}</h1></header>')
        return (f'<section class="chapter {chapter.part}" id="{self.anchor}">'
                f"{opener}{body}</section>")


def demote_headings(rendered: str) -> str:
    """Every heading one level down, so that a part's `# Title` is a section."""
    return HEADING_TAG.sub(lambda m: f"<{m[1]}h{int(m[2]) + 1}", rendered)


def chapter_parts(executed: list[Executed]) -> list[list[Executed]]:
    """The executed files grouped by chapter: each opener, then its parts."""
    groups: dict[str, list[Executed]] = {}
    for item in executed:
        groups.setdefault(item.chapter.continues or item.chapter.stem, []).append(item)
    return list(groups.values())


def render_chapter(parts: list[Executed], index: BookIndex, out_dir: Path,
                   math: MathRenderer) -> tuple[str, TocEntry]:
    """One chapter's <section>, its parts nested in it, and its contents entry."""
    opener = ChapterRenderer(parts[0], index, out_dir, math)
    body, sections = opener.body(), list(opener.sections)
    for item in parts[1:]:
        part = ChapterRenderer(item, index, out_dir, math, first_section=len(sections) + 1)
        body += part.wrap(part.body())
        sections += part.sections
    return opener.wrap(body), (opener.chapter, opener.anchor, opener.number, sections)


def page_ref(anchor: str) -> str:
    """Where a contents line's page number goes (book.css fills it in). The number sits in
    a box of fixed width, so a line wraps the same whether WeasyPrint has resolved the
    number yet or not; otherwise the lists grow after the numbers are set, and every page
    after them is off."""
    return f'<span class="pageref" data-href="#{anchor}"></span>'


def table_of_contents(entries: list[TocEntry]) -> str:
    rows = []
    for chapter, anchor, number, sections in entries:
        roman = " roman" if chapter.part == "front" else ""
        label = f'<span class="tocnum">{number}</span>'
        rows.append(f'<li class="toc-chapter{roman}"><a href="#{anchor}">{label}'
                    f"{html.escape(chapter.title)}{page_ref(anchor)}</a></li>")
        for sec_anchor, sec_title in sections:
            rows.append(f'<li class="toc-section{roman}"><a href="#{sec_anchor}">'
                        f"{sec_title}{page_ref(sec_anchor)}</a></li>")
    return ('<section class="front toc" id="contents"><h1 class="toc-title">Contents</h1>'
            f'<ul class="toc">{"".join(rows)}</ul></section>')


def list_entry(caption: str) -> str:
    """A caption's first sentence, without math, as a list-of-figures entry."""
    first = re.split(r"(?<=[.!?])\s", caption.strip(), maxsplit=1)[0]
    if "$" in first:
        first = first[: first.index("$")].rstrip(" ,;:") + "…"
    return caption_html(first)


def list_of_floats(index: BookIndex) -> str:
    """The list of figures and the list of tables, with the pages they are on."""
    parts = []
    for kind, title, anchor in (("fig", "Figures", "figures"), ("tbl", "Tables", "tables")):
        rows = "".join(
            f'<li class="toc-float"><a href="#{t.anchor}"><span class="floatnum">'
            f"{t.number}</span>{list_entry(t.caption)}{page_ref(t.anchor)}</a></li>"
            for t in index.targets.values() if t.kind == kind)
        parts.append(f'<section class="front toc" id="{anchor}">'
                     f'<h1 class="toc-title list-title">{title}</h1>'
                     f'<ul class="toc">{rows}</ul></section>')
    return "".join(parts)


def cover_art(out_dir: Path) -> str:
    """A causal attention mask drawn as a grid: the book's one decoration."""
    size, cell = 16, 18
    squares = []
    for row in range(size):
        for col in range(row + 1):
            shade = 0.35 + 0.65 * ((row * 7 + col * 3) % 11) / 10
            squares.append(f'<rect x="{col * cell}" y="{row * cell}" width="{cell - 3}" '
                           f'height="{cell - 3}" fill="#E69F00" fill-opacity="{shade:.2f}"/>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{size * cell}" '
           f'height="{size * cell}">{"".join(squares)}</svg>')
    (out_dir / "cover.svg").write_text(svg, encoding="utf-8")
    return '<img class="cover-art" src="cover.svg" alt="">'


def render_book(executed: list[Executed], out_dir: Path, profile: str,
                book: list[Chapter] | None = None) -> Path:
    """Write build/html/index.html (with figures, formulas, CSS); return its path.

    Given `book` (every chapter, for the numbers), only the executed chapters are
    rendered, without cover, title page and contents: a preview.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    numbered = book or [e.chapter for e in executed]
    index = number_chapters(numbered)
    math = MathRenderer(out_dir)
    sections, toc = [], []
    for parts in chapter_parts(executed):
        section, entry = render_chapter(parts, index, out_dir, math)
        sections.append(section)
        toc.append(entry)
    (out_dir / "book.css").write_text(CSS.read_text(encoding="utf-8"), encoding="utf-8")
    today = datetime.date.today().isoformat()
    cover = (f'<section class="cover">{cover_art(out_dir)}'
             f'<div class="cover-title">{BOOK_TITLE}</div>'
             f'<div class="cover-subtitle">{BOOK_SUBTITLE}</div>'
             f'<div class="cover-authors">{AUTHORS}</div></section>')
    title_page = (f'<section class="titlepage"><div class="tp-title">{BOOK_TITLE}</div>'
                  f'<div class="tp-subtitle">{BOOK_SUBTITLE}</div>'
                  f'<div class="tp-authors">{AUTHORS}</div>'
                  f'<div class="tp-colophon">Built {today} in the <code>{profile}</code> '
                  "profile. Every listing in this book ran while it was built; every "
                  "output, table and figure is what that run printed or drew.</div>"
                  "</section>")
    first_stem = next((c.stem for c in numbered if c.part == "main"), None)
    first_main = next((i for i, entry in enumerate(toc) if entry[0].stem == first_stem), None)
    if first_main is not None:
        sections[first_main] = sections[first_main].replace(
            'class="chapter main"', 'class="chapter main first-main"', 1)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{BOOK_TITLE}, {BOOK_SUBTITLE}</title>"
        f'<meta name="author" content="{AUTHORS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="book.css"></head><body>'
        + ("" if book else cover + title_page + table_of_contents(toc)
           + list_of_floats(index))
        + "".join(sections)
        + "</body></html>\n"
    )
    target = out_dir / "index.html"
    target.write_text(document, encoding="utf-8")
    return target
