"""HTML book to PDF with WeasyPrint, never leaving a stale or partial PDF behind."""

from __future__ import annotations

import os
from pathlib import Path


def write_pdf(html_path: Path, pdf_path: Path) -> int:
    """Render `html_path` to `pdf_path` atomically; return the page count."""
    import weasyprint

    pdf_path.parent.mkdir(parents=True, exist_ok=True)
    partial = pdf_path.with_name(pdf_path.name + ".partial")
    document = weasyprint.HTML(filename=str(html_path)).render()
    document.write_pdf(str(partial))
    os.replace(partial, pdf_path)
    return len(document.pages)
