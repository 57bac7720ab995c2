"""Shared paths; every test runs in the smoke profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mlxllm  # noqa: F401  (first: loads OpenBLAS before any test imports mlx.core)
from mlxllm.press.__main__ import BuildReport, build_pdf
from mlxllm.press.read import read_book

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
FIXTURE_BOOK = Path(__file__).parent / "fixtures" / "book"

os.environ["MLXLLM_PROFILE"] = "smoke"


@pytest.fixture
def artifacts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private artifacts directory, so tests never touch build/."""
    path = tmp_path / "artifacts"
    monkeypatch.setenv("MLXLLM_ARTIFACTS", str(path))
    return path


@pytest.fixture(scope="session")
def smoke_book(tmp_path_factory: pytest.TempPathFactory) -> BuildReport:
    """The real book built once in the smoke profile, every chapter run afresh in a new
    build directory: test_chapters checks the runs, test_book_pdf the PDF."""
    build = tmp_path_factory.mktemp("build")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLXLLM_ARTIFACTS", str(build / "artifacts"))
        report = build_pdf(BOOK, build, "smoke", jobs=2)
    assert report.executed == len(read_book(BOOK)), report
    assert "frame" in report.laid_out and len(report.laid_out) == report.units + 1
    return report
