"""mlxllm/ is exactly what the chapters export, and every exported module reads on its own:
a docstring, imports once at the top, `__all__`, each cell under the line it came from."""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mlxllm.press.export import (
    GENERATED_MARK,
    PROVENANCE,
    _check_compiles,
    cache_text,
    export,
    module_sources,
    stale_modules,
)
from mlxllm.press.read import ChapterFormatError, read_book
from tests.conftest import BOOK, FIXTURE_BOOK, ROOT


@pytest.fixture(scope="module")
def sources() -> dict[str, str]:
    """The book's generated modules, as `make export` would write them."""
    made = module_sources(read_book(BOOK))
    assert made, "no chapter exports anything"
    return made


def write_book(folder: Path, chapters: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, text in chapters.items():
        (folder / name).write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return folder


def snapshot(package: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(package.iterdir())}


def test_package_matches_chapters() -> None:
    problems = stale_modules(read_book(BOOK), ROOT / "mlxllm")
    assert problems == [], "run `make export`: " + "; ".join(problems)


def test_modules_start_with_the_mark_and_a_docstring_from_their_chapters(
        sources: dict[str, str]) -> None:
    chapters = {c.path.name: c for c in read_book(BOOK)}
    for module, text in sources.items():
        assert text.startswith(GENERATED_MARK), module
        doc = importlib.import_module(f"mlxllm.{module}").__doc__
        assert doc and "make export" in doc and "do not edit" in doc, module
        origins = re.findall(r"book/(\d\d_\w+\.py)", text.split('"""')[0])
        assert origins, f"{module}: the first line names no chapter"
        for name in origins:
            assert chapters[name].title in " ".join(doc.split()), f"{module}: {name}'s title"
    assert "Attention from scratch" in importlib.import_module("mlxllm.model").__doc__


def test_a_module_of_one_section_is_summed_up_by_it() -> None:
    summary = importlib.import_module("mlxllm.checkpoint").__doc__.split("\n")[0]
    assert summary == "Checkpoints (from The training loop)."
    assert importlib.import_module("mlxllm.train").__doc__.startswith("The training loop.")


def test_provenance_lines_point_at_export_cells(sources: dict[str, str]) -> None:
    chapters = {f"book/{c.path.name}": c for c in read_book(BOOK)}
    for module, text in sources.items():
        lines = text.split("\n")
        cited = set()
        for number, line in enumerate(lines):
            origin = PROVENANCE.match(line)
            if not origin:
                continue
            chapter = chapters[origin["file"]]
            cell = next((c for c in chapter.code_cells if c.line == int(origin["line"])), None)
            assert cell is not None, f"{module}: {line} is not the first line of a cell"
            assert chapter.export_module(cell) == module, f"{module}: {line} is not exported"
            assert lines[number + 1] in cell.code.split("\n"), f"{module}: {line}'s code"
            cited.add((origin["file"], cell.line))
        for name, chapter in chapters.items():
            for cell in chapter.code_cells:
                if chapter.export_module(cell) == module and not all(
                        isinstance(n, (ast.Import, ast.ImportFrom))
                        for n in ast.parse(cell.code).body):
                    assert (name, cell.line) in cited, f"{module}: no line for {name}:{cell.line}"


def test_imports_appear_once_and_only_at_the_top(sources: dict[str, str]) -> None:
    for module, text in sources.items():
        body = ast.parse(text).body[1:]  # after the docstring
        first_code = next(i for i, n in enumerate(body)
                          if not isinstance(n, (ast.Import, ast.ImportFrom)))
        imports = body[:first_code]
        assert imports and not any(isinstance(n, (ast.Import, ast.ImportFrom))
                                   for n in body[first_code:]), module
        bound = [(getattr(n, "module", None), a.name, a.asname)
                 for n in imports for a in n.names]
        assert len(bound) == len(set(bound)), f"{module} imports a name twice"


def test_no_module_silences_the_linter(sources: dict[str, str]) -> None:
    for module, text in sources.items():
        blanket = [line for line in text.split("\n")
                   if re.match(r"#\s*(ruff|flake8)\s*:\s*noqa", line)]
        assert blanket == [], f"{module}: {blanket}"


def test_all_lists_the_public_names_in_order(sources: dict[str, str]) -> None:
    for module, text in sources.items():
        imported = {a.asname or a.name.split(".")[0] for n in ast.parse(text).body
                    if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
        loaded = importlib.import_module(f"mlxllm.{module}")
        public = [name for name in vars(loaded)
                  if not name.startswith("_") and name not in imported]
        assert loaded.__all__ == public, module


IMPORTS_BOOK = {
    "01_alpha.py": '''
        # %% [markdown]
        # # Alpha imports
        #
        # Its size is {{ size }} here. The *first* sentence is kept. So is the
        # second. A third is not.

        # %%
        #| default_exp gen
        size = 3

        # %%
        #| export
        from __future__ import annotations

        import os
        import numpy as np
        from collections.abc import (
            Callable,
            Iterable,
        )
        import mlxllm  # noqa: F401

        # %% [markdown]
        # ## Helpers

        # %%
        #| export
        import os.path as osp
        from collections.abc import Callable

        LIMIT: int = 3
        _hidden, SHOWN = 1, 2

        import math


        def helper(run: Callable[[], Iterable[int]]) -> int:
            """An import inside a function stays there."""
            import json

            return len(json.dumps([os.sep, osp.sep, math.pi, list(run())]))
        ''',
    "02_beta.py": '''
        # %% [markdown]
        # # Beta extends it
        #
        # The second chapter. It introduces a list:
        #
        # - which the docstring leaves out

        # %%
        #| export: gen
        import numpy as np
        from mlxllm.tokenizer import (BPETokenizer, CharTokenizer,
                                      SavedTokenizer, SpecialTokenError,
                                      Tokenizer, TokenizerFileError)


        class Kinds:
            """Uses every import."""

            members = (BPETokenizer, CharTokenizer, SavedTokenizer, SpecialTokenError,
                       Tokenizer, TokenizerFileError, np.zeros)
        ''',
}


def test_imports_are_gathered_sorted_and_pass_ruff(tmp_path: Path) -> None:
    book = write_book(tmp_path / "book", IMPORTS_BOOK)
    (tmp_path / "pkg").mkdir()
    export(read_book(book), tmp_path / "pkg")
    text = (tmp_path / "pkg" / "gen.py").read_text()
    block = textwrap.dedent("""
        from __future__ import annotations

        import math
        import os
        import os.path as osp
        from collections.abc import Callable, Iterable

        import numpy as np

        import mlxllm  # noqa: F401
        from mlxllm.tokenizer import (
            BPETokenizer,
            CharTokenizer,
            SavedTokenizer,
            SpecialTokenError,
            Tokenizer,
            TokenizerFileError,
        )
        """)
    assert f'"""\n{block}\n__all__ = [' in text
    assert '__all__ = ["LIMIT", "SHOWN", "helper", "Kinds"]' in text
    assert "\n    import json\n" in text, "a function's own import stays in the function"
    assert "# book/01_alpha.py:27\nLIMIT: int = 3\n_hidden, SHOWN = 1, 2\n\n\ndef helper" in text
    assert "# book/02_beta.py:9\nclass Kinds:" in text and "# book/01_alpha.py:12" not in text
    doc = " ".join(text.split('"""')[1].split())
    assert ('Alpha imports (book/01_alpha.py), from the section "Helpers". The first '
            "sentence is kept. So is the second.") in doc
    assert "third" not in doc and "size" not in doc
    assert "Beta extends it (book/02_beta.py). The second chapter. Generated by" in doc
    lint = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
         str(ROOT / "pyproject.toml"), "--select", "E,F,W,I,B,UP", str(tmp_path / "pkg")],
        capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_a_syntax_error_writes_nothing_and_names_file_and_line(tmp_path: Path) -> None:
    book = write_book(tmp_path / "book", {
        "01_alpha.py": '''
            # %% [markdown]
            # # Alpha

            # %%
            #| default_exp first
            #| export
            def fine() -> int:
                return 1
            ''',
        "02_beta.py": '''
            # %% [markdown]
            # # Beta

            # %%
            #| export: second
            def broken(x: int) -> int:
                return x * * x
            '''})
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "second.py").write_text(f"{GENERATED_MARK} an older export\n")
    before = snapshot(package)
    for check in (export, stale_modules):
        with pytest.raises(ChapterFormatError) as error:
            check(read_book(book), package)
        assert error.value.path == book / "02_beta.py" and error.value.line == 7
        assert "return x * * x" in str(error.value)
    assert snapshot(package) == before, "nothing written, not even the module that compiles"


def test_cache_text_ignores_moved_provenance_and_docstring_but_not_code(tmp_path: Path) -> None:
    chapter = IMPORTS_BOOK["02_beta.py"]
    variants = {
        "as written": chapter,
        "prose edited": chapter.replace("# The second chapter.",
                                        "# The second chapter, reworded.\n        #\n"
                                        "        # With a paragraph more."),
        "code edited": chapter.replace("np.zeros)", "np.ones)"),
    }
    texts = {}
    for name, text in variants.items():
        book = write_book(tmp_path / name.replace(" ", "_") / "book", {"02_beta.py": text})
        texts[name] = module_sources(read_book(book))["gen"]
    assert texts["prose edited"] != texts["as written"], "the docstring and provenance moved"
    assert cache_text(texts["prose edited"]) == cache_text(texts["as written"])
    assert cache_text(texts["code edited"]) != cache_text(texts["as written"])
    hand_written = '"""Written by hand."""\n# a comment\n'
    assert cache_text(hand_written) == hand_written


def test_an_assembled_module_that_does_not_compile_names_its_cell() -> None:
    text = f'{GENERATED_MARK} book/01_alpha.py.\n"""Doc."""\n\n\n# book/01_alpha.py:9\nx = (\n'
    with pytest.raises(ChapterFormatError, match="cell at book/01_alpha.py:9 does not compile"):
        _check_compiles("gen", text)


def test_an_import_sharing_its_line_is_refused(tmp_path: Path) -> None:
    book = write_book(tmp_path / "book", {"01_alpha.py": '''
        # %% [markdown]
        # # Alpha

        # %%
        #| default_exp first
        #| export
        import os; SEP = os.sep
        '''})
    with pytest.raises(ChapterFormatError, match="01_alpha.py:7: .*line of its own"):
        module_sources(read_book(book))


def test_a_hand_written_module_is_never_overwritten(tmp_path: Path) -> None:
    book = Path(shutil.copytree(FIXTURE_BOOK, tmp_path / "book"))
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "fixture_mod.py").write_text('"""Written by hand."""\n')
    with pytest.raises(FileExistsError, match="hand-written"):
        export(read_book(book), package)
    assert snapshot(package) == {"fixture_mod.py": '"""Written by hand."""\n'}
