"""Execute chapters, each in its own process, with a cache of executed notebooks.

A notebook is cached under build/cache/<profile>/ by a key made of everything that
can change what the chapter prints: its code cells, the inline expressions in its
prose, the profile, the mlxllm modules it imports (and theirs), the keys of the
chapters whose artifacts it reads, the press's own kernel, Python and MLX versions.
Prose-only edits therefore re-render without re-running. Each part of a chapter
(`90_solutions_03.py`, see read.py) is a file of its own here: its own process and
key, so an edit to one part re-runs only that part.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from mlxllm.press.export import cache_text
from mlxllm.press.read import Chapter, inline_matches

PACKAGE = Path(__file__).resolve().parents[1]
PRESS_FILES = ("kernel.py", "notebook.py", "read.py", "book.mplstyle")
IMPORT = re.compile(r"(?:from|import)\s+mlxllm\.(\w+)|from\s+mlxllm\s+import\s+([\w, ]+)")
RELATIVE_IMPORT = re.compile(r"from\s+\.(\w+)\s+import|from\s+\.\s+import\s+([\w, ]+)")
# the chapter stem that starts an artifact_path argument, in a plain or an f-string
ARTIFACT = re.compile(r"artifact_path\(\s*[fFrR]{0,2}[\"'](\d\d_[a-z0-9_]+)/")


class ChapterRunError(RuntimeError):
    """A chapter failed: the message names the chapter file and line, with the traceback."""

    def __init__(self, path: Path, line: int | None, message: str, trace: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}\n\n{trace}".rstrip())
        self.path, self.line = path, line


@dataclass
class Executed:
    """A chapter's executed notebook, and whether this build ran it or reused it."""

    chapter: Chapter
    notebook: dict
    path: Path
    from_cache: bool


def _imported_modules(code: str) -> set[str]:
    names = set()
    for match in IMPORT.finditer(code):
        if match[1]:
            names.add(match[1])
        else:
            names |= {n.strip() for n in match[2].split(",") if n.strip()}
    return names


def module_closure(code: str, package: Path = PACKAGE) -> list[Path]:
    """The mlxllm module files that `code` imports, directly or through each other."""
    todo = _imported_modules(code) | {"__init__"}
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        path = package / f"{name}.py"
        if name in seen or not path.exists():
            continue
        seen[name] = path
        text = path.read_text(encoding="utf-8")
        todo |= _imported_modules(text)
        for match in RELATIVE_IMPORT.finditer(text):
            todo |= {match[1]} if match[1] else {n.strip() for n in match[2].split(",")}
    return sorted(seen.values())


def dependencies(chapter: Chapter, stems: set[str]) -> set[str]:
    """Stems of the earlier chapters whose artifacts this chapter reads."""
    code = "\n".join(c.code for c in chapter.code_cells)
    return {s for s in ARTIFACT.findall(code) if s in stems and s != chapter.stem}


def _versions() -> dict[str, str]:
    try:
        mlx_version = metadata.version("mlx")
    except metadata.PackageNotFoundError:
        mlx_version = "none"
    return {"python": sys.version.split()[0], "mlx": mlx_version}


def cache_key(chapter: Chapter, profile: str, upstream: dict[str, str]) -> str:
    """Hash of everything that can change what the chapter's run produces."""
    digest = hashlib.sha256()

    def add(label: str, text: str) -> None:
        digest.update(f"{label}\0{len(text)}\0{text}\0".encode())

    add("profile", profile)
    for name, version in _versions().items():
        add(name, version)
    for name in PRESS_FILES:
        add(name, (Path(__file__).parent / name).read_text(encoding="utf-8"))
    for cell in chapter.code_cells:  # what runs: not labels, captions, echo or output
        add("code", f"{cell.runs}\0{cell.code}")
    code_cells_before = 0
    for cell in chapter.cells:
        if cell.kind == "code":
            code_cells_before += 1
        for match in inline_matches(cell.source if cell.kind == "markdown" else ""):
            add("inline", f"{code_cells_before}:{match['expr'].strip()}")
    code = "\n".join(c.source for c in chapter.code_cells)
    for path in module_closure(code):
        add(f"module {path.name}", cache_text(path.read_text(encoding="utf-8")))
    for stem in sorted(upstream):
        add(f"upstream {stem}", upstream[stem])
    return digest.hexdigest()[:20]


def _run_one(chapter: Chapter, target: Path, profile: str, root: Path) -> None:
    env = dict(os.environ, MLXLLM_PROFILE=profile, MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent),
                                                      env.get("PYTHONPATH")]))
    error_path = target.with_name(target.name + ".error.json")
    error_path.unlink(missing_ok=True)
    process = subprocess.run(
        [sys.executable, "-m", "mlxllm.press.kernel", str(chapter.path), str(target)],
        cwd=root, env=env, capture_output=True, text=True,
    )
    if process.returncode == 0 and target.exists():
        return
    if error_path.exists():
        error = json.loads(error_path.read_text())
        raise ChapterRunError(chapter.path, error["line"], error["message"], error["traceback"])
    raise ChapterRunError(
        chapter.path, None, f"the chapter's process exited with status {process.returncode}",
        (process.stderr or process.stdout)[-4000:],
    )


def execute(
    chapters: list[Chapter],
    profile: str,
    cache_dir: Path,
    root: Path,
    jobs: int = 1,
    use_cache: bool = True,
    log=print,
) -> list[Executed]:
    """Run (or reuse) every chapter, `jobs` at a time, writers of artifacts first."""
    by_stem = {c.stem: c for c in chapters}
    needs = {c.stem: dependencies(c, set(by_stem)) for c in chapters}
    cache = Path(cache_dir) / profile
    cache.mkdir(parents=True, exist_ok=True)
    keys: dict[str, str] = {}
    results: dict[str, Executed] = {}
    failures: list[ChapterRunError] = []

    def start(chapter: Chapter) -> tuple[Path, bool]:
        key = cache_key(chapter, profile, {s: keys[s] for s in needs[chapter.stem]})
        keys[chapter.stem] = key
        target = cache / f"{chapter.stem}.{key}.ipynb"
        return target, use_cache and target.exists()

    pending = dict(by_stem)
    running: dict[Future, tuple[Chapter, Path]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        while pending or running:
            ready = [c for s, c in pending.items()
                     if needs[s] <= set(results) and not failures]
            for chapter in ready:
                del pending[chapter.stem]
                target, cached = start(chapter)
                if cached:
                    results[chapter.stem] = Executed(chapter, _load(target), target, True)
                    log(f"  cached  {chapter.path.name}")
                    continue
                log(f"  running {chapter.path.name} ({profile})")
                running[pool.submit(_run_one, chapter, target, profile, root)] = (chapter, target)
            if not running:
                if pending and not ready:
                    break
                continue
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                chapter, target = running.pop(future)
                try:
                    future.result()
                except ChapterRunError as failure:
                    failures.append(failure)
                    continue
                for old in cache.glob(f"{chapter.stem}.*.ipynb"):
                    if old != target:
                        old.unlink()
                results[chapter.stem] = Executed(chapter, _load(target), target, False)
    if failures:
        raise failures[0]
    return [results[c.stem] for c in chapters]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))
