"""Shared paths; every test runs in the smoke profile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mlxllm  # noqa: F401  (first: loads OpenBLAS before any test imports mlx.core)

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
