"""Figures and tables that float: moved later in the text when they would leave a gap.

WeasyPrint has no page floats. A figure or table that does not fit under the text
before it moves whole to the next page and leaves the rest of its page empty. After
laying a chapter out, the press finds each page that is more than `GAP` empty and is
followed by a page that starts with a float (an element marked `data-float`), moves
that float past the block after it (a paragraph, a listing, a heading with what follows
it), and lays the chapter out again, until no such gap is left, the float reaches the
end of its section, or `PASSES` run out. The text moves up into the gap, as in a
typeset book; the figure keeps its number and its cross references.
"""

from __future__ import annotations

import re

from weasyprint.formatting_structure import boxes  # only the press's pdf stage imports this

GAP = 1 / 3  # a page more empty than this, followed by a float, is worth a move
PASSES = 4
FLOAT = re.compile(r'<figure\b[^>]*\bdata-float="([^"]+)"[^>]*>.*?</figure>', re.S)
# the blocks a float may move past; a <section> (its end, or a part's start) stops it
BLOCK = re.compile(
    r'\s*<(?P<tag>p|ul|ol|pre|div|figure|h2|h3|h4)\b(?:[^>]*\bclass="(?P<classes>[^"]*)")?')
STICKY = {"h2", "h3", "h4"}  # a heading moves with the block under it
OUTPUT = re.compile(r'\s*<(?P<tag>pre)\b[^>]*\bclass="output')
SKIPPED_TAGS = {"html", "body", "section"}  # they span the page whatever it holds


def _visible(box: boxes.Box) -> bool:
    """A box whose bottom is where ink ends: text, an image, a box with a background."""
    if isinstance(box, (boxes.LineBox, boxes.ReplacedBox)):
        return True
    if box.element_tag in SKIPPED_TAGS:
        return False
    style = box.style
    return style["background_color"].alpha > 0 or style["border_bottom_width"] > 0


def _content_boxes(page: object) -> list[boxes.Box]:
    """The boxes of a page's content area in document order (no margin boxes)."""
    found: list[boxes.Box] = []

    def walk(box: boxes.Box) -> None:
        found.append(box)
        if not isinstance(box, boxes.LineBox):  # a line's inline boxes end where it does
            for child in getattr(box, "children", ()):
                walk(child)

    for child in page._page_box.children:
        if not isinstance(child, boxes.MarginBox):
            walk(child)
    return found


def page_fill(page: object) -> float:
    """How much of the page's content area, from the top, holds something (0 to 1)."""
    frame = page._page_box
    top, height = frame.content_box_y(), frame.height
    bottoms = [box.border_box_y() + box.border_height()
               for box in _content_boxes(page) if _visible(box)]
    if not bottoms or height <= 0:
        return 0.0
    return min(1.0, max(0.0, (max(bottoms) - top) / height))


def leading_float(page: object) -> str | None:
    """The data-float name of the float the page starts with, if it starts with one."""
    for box in _content_boxes(page):
        element = box.element
        number = element.get("data-float") if element is not None else None
        if number is not None:
            return number
        if _visible(box):
            return None
    return None


def blank_pages(pages: list) -> tuple[int, ...]:
    """The pages WeasyPrint left blank before a recto opener (it has no public flag)."""
    return tuple(n for n, page in enumerate(pages) if page._page_box.page_type.blank)


def floats_to_move(pages: list) -> set[str]:
    """The floats that start a page after a page more than GAP empty."""
    moves, blank = set(), set(blank_pages(pages))
    for number in range(len(pages) - 1):
        if number in blank or number + 1 in blank:
            continue
        if page_fill(pages[number]) < 1 - GAP:
            following = leading_float(pages[number + 1])
            if following is not None:
                moves.add(following)
    return moves


def move_floats(document: str, names: set[str]) -> tuple[str, set[str]]:
    """The document with each named float moved past the block after it, and the
    floats that moved. A block is a paragraph, a list, a listing with its output, an
    equation or another float (a table right after a figure); a heading moves with the
    block under it, so a float never sits between them; the end of a section stops it."""
    moved: set[str] = set()
    for name in sorted(names):
        found = next((m for m in FLOAT.finditer(document) if m[1] == name), None)
        if found is None:
            continue
        end = _block_end(document, found.end())
        if end is None:
            continue
        document = (document[: found.start()] + document[found.end(): end]
                    + found[0] + document[end:])
        moved.add(name)
    return document, moved


def _block_end(document: str, start: int) -> int | None:
    """Where the block at `start` ends, with what must stay with it: a heading or an
    export tag with the block under it, a listing with its output boxes."""
    block = BLOCK.match(document, start)
    if block is None:
        return None
    end = _element_end(document, block.start("tag") - 1, block["tag"])
    if block["tag"] in STICKY or "export-tag" in (block["classes"] or ""):
        return _block_end(document, end)
    while block["tag"] == "pre" and (output := OUTPUT.match(document, end)):
        end = _element_end(document, output.start("tag") - 1, "pre")
    return end


def _element_end(document: str, start: int, tag: str) -> int:
    """Where the element opened at `start` with `tag` ends (nested ones counted)."""
    depth = 0
    for match in re.compile(rf"<(/?){tag}\b[^>]*>").finditer(document, start):
        depth += -1 if match[1] else 1
        if depth == 0:
            return match.end()
    raise ValueError(f"<{tag}> at offset {start} is never closed")
