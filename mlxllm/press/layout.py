"""Split the book's HTML into layout units, lay each out with WeasyPrint, cache the pages.

WeasyPrint's time grows with the page count and is nearly all of a rebuild, so each
top-level <section class="chapter"> is a unit laid out as its own document, with
every page-margin box except the page number (`@bottom-center`, the folio). Its
pages depend only on its HTML, so they are cached by a key over that HTML, the
stylesheets and every file it references, and never laid out again while those stay
the same.

The rest of the book (cover, title page, contents) is the frame: laid out with the
real CSS around placeholders, one empty page per page of each unit, which carry the
unit's anchors. WeasyPrint then numbers every page, puts blank pages before openers
and fills the table of contents exactly as it would in one document. `pdf.join`
puts each unit's pages in place of its placeholders, with the frame's folio on top.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote

from mlxllm.press import floats

FOLIO_BOX = "bottom-center"  # the margin box that prints the page number (book.css)
UNIT_STYLE = f"@page {{ @{FOLIO_BOX} {{ content: none !important; }} }}"
FRAME_STYLE = ".press-page + .press-page { break-before: page; }"
BODY = re.compile(r"<body\b[^>]*>")
SECTION_TAG = re.compile(r"<(/?)section\b[^>]*>")
CLASSES = re.compile(r'\bclass="([^"]*)"')
IDS = re.compile(r'\bid="([^"]*)"')
LOCAL_FILE = re.compile(r'\b(?:src|href)="(?![a-z][a-z0-9+.-]*:|#)([^"]+)"')
FRAGMENT_LINK = re.compile(r'\bhref="#([^"]+)"')
FOREIGN = "press-anchor:"  # a link to another unit: WeasyPrint keeps it as a URI link


@dataclass(frozen=True)
class BookHtml:
    """The book's HTML cut at its top-level <section> elements."""

    head: str  # up to and including <body>
    sections: tuple[str, ...]
    tail: str  # from </body>

    def document(self, body: str, style: str) -> str:
        """A document with the book's head, an extra stylesheet and `body`."""
        head = self.head.replace("</head>", f"<style>{style}</style></head>", 1)
        return head + body + self.tail


def split_book(text: str) -> BookHtml:
    """Cut an HTML book into its head, its top-level sections and its tail."""
    body = BODY.search(text)
    end = text.rindex("</body>")
    if body is None or "</head>" not in text[: body.start()]:
        raise ValueError("the book's HTML has no <head> and <body>")
    sections, depth, start, last = [], 0, 0, body.end()
    for tag in SECTION_TAG.finditer(text, body.end(), end):
        if tag[1]:
            depth -= 1
            if depth == 0:
                sections.append(text[start: tag.end()])
                last = tag.end()
        else:
            if depth == 0:
                if text[last: tag.start()].strip():
                    raise ValueError(f"the book's <body> holds content outside a top-level "
                                     f"<section>: {text[last: tag.start()].strip()[:60]!r}")
                start = tag.start()
            depth += 1
    if depth or text[last:end].strip():
        raise ValueError("the book's <body> must be a sequence of whole <section> elements")
    return BookHtml(text[: body.end()], tuple(sections), text[end:])


def is_unit(section: str) -> bool:
    """A chapter (front matter, chapter or appendix) is laid out on its own."""
    classes = CLASSES.search(section[: section.index(">")])
    return classes is not None and "chapter" in classes[1].split()


def unit_name(section: str, position: int) -> str:
    """The section's id, which names it in reports, or its position."""
    found = IDS.search(section[: section.index(">")])
    return found[1] if found else f"section-{position}"


def unit_document(book: BookHtml, section: str) -> str:
    """The section as a document of its own; links to anchors outside it become
    FOREIGN URIs, which WeasyPrint keeps (it drops links to anchors it cannot find)."""
    own = set(IDS.findall(section))
    section = FRAGMENT_LINK.sub(
        lambda m: m[0] if m[1] in own else f'href="{FOREIGN}{m[1]}"', section)
    return book.document(section, UNIT_STYLE)


def layout_key(document: str, html_dir: Path) -> str:
    """Hash of what decides the document's pages: its HTML, referenced files, the press."""
    digest = hashlib.sha256()
    digest.update(metadata.version("weasyprint").encode() + b"\0")
    for module in (__file__, floats.__file__):
        digest.update(Path(module).read_bytes() + b"\0")
    digest.update(document.encode() + b"\0")
    for name in sorted(set(LOCAL_FILE.findall(document))):
        path = html_dir / unquote(name)
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"missing")
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class Pages:
    """A laid-out document: its PDF, page count, blank pages, where each anchor is,
    and how full each page is (`floats.page_fill`)."""

    pdf: Path
    count: int
    blank: tuple[int, ...]
    anchors: dict[str, int]
    fill: tuple[float, ...] = ()

    @classmethod
    def cached(cls, pdf: Path) -> Pages | None:
        facts = pdf.with_suffix(".json")
        if not (facts.exists() and pdf.exists()):
            return None
        data = json.loads(facts.read_text(encoding="utf-8"))
        return cls(pdf, data["count"], tuple(data["blank"]), data["anchors"],
                   tuple(data.get("fill", ())))


def lay_out(document: str, base_url: str, pdf: Path) -> Pages:
    """Lay `document` out into `pdf` (atomically, facts last) and return its pages."""
    import weasyprint

    def render(text: str) -> weasyprint.Document:
        return weasyprint.HTML(string=text, base_url=base_url).render()

    rendered = render(document)
    for _ in range(floats.PASSES):
        document, moved = floats.move_floats(
            document, floats.floats_to_move(rendered.pages))
        if not moved:
            break
        rendered = render(document)
    anchors: dict[str, int] = {}
    for number, page in enumerate(rendered.pages):
        for name in page.anchors:
            anchors.setdefault(name, number)
    blank = floats.blank_pages(rendered.pages)
    fill = tuple(round(floats.page_fill(page), 3) for page in rendered.pages)
    partial = pdf.with_name(pdf.name + ".partial")
    rendered.write_pdf(partial)
    os.replace(partial, pdf)
    facts = {"count": len(rendered.pages), "blank": blank, "anchors": anchors,
             "fill": fill}
    partial_facts = pdf.with_name(pdf.stem + ".json.partial")
    partial_facts.write_text(json.dumps(facts), encoding="utf-8")
    os.replace(partial_facts, pdf.with_suffix(".json"))
    return Pages(pdf, len(rendered.pages), blank, anchors, fill)


def placeholder(section: str, position: int, pages: Pages) -> str:
    """The unit's start tag and one empty page per page, carrying its anchors."""
    opening = section[: section.index(">") + 1]
    own = set(IDS.findall(opening))
    by_page: list[list[str]] = [[] for _ in range(pages.count)]
    for name, number in pages.anchors.items():
        if name not in own:
            by_page[number].append(name)
    body = "".join(
        f'<div class="press-page" id="press-{position}-{number}">'
        + "".join(f'<div id="{html.escape(name)}"></div>' for name in names) + "</div>"
        for number, names in enumerate(by_page))
    return f"{opening}{body}</section>"


def frame_document(book: BookHtml, units: dict[int, Pages]) -> str:
    """The book with every unit replaced by its placeholder pages."""
    body = "".join(placeholder(s, i, units[i]) if i in units else s
                   for i, s in enumerate(book.sections))
    return book.document(body, FRAME_STYLE)


def unit_starts(frame: Pages, units: dict[int, Pages]) -> dict[int, int]:
    """The frame page where each unit's first page goes, checked page by page."""
    starts = {}
    for position, pages in units.items():
        start = frame.anchors[f"press-{position}-0"]
        if start % 2:
            raise ValueError("a chapter must open on a recto page (break-before: right) "
                             "to be laid out on its own")
        for number in range(pages.count):
            if frame.anchors.get(f"press-{position}-{number}") != start + number:
                raise ValueError(f"placeholder page {number} of section {position} "
                                 "did not get a page of its own")
        starts[position] = start
    return starts
