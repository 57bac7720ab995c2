"""mlxllm/ is exactly what the chapters export, and every exported module imports."""

from __future__ import annotations

import importlib

from mlxllm.press.export import GENERATED_MARK, module_sources, stale_modules
from mlxllm.press.read import read_book
from tests.conftest import BOOK, ROOT


def test_package_matches_chapters() -> None:
    problems = stale_modules(read_book(BOOK), ROOT / "mlxllm")
    assert problems == [], "run `make export`: " + "; ".join(problems)


def test_exported_modules_import_and_name_their_chapter() -> None:
    sources = module_sources(read_book(BOOK))
    assert sources, "no chapter exports anything"
    for module, text in sources.items():
        assert text.startswith(GENERATED_MARK) and "book/" in text.splitlines()[0]
        importlib.import_module(f"mlxllm.{module}")
