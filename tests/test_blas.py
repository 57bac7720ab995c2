"""On Linux, importing mlxllm loads the system OpenBLAS before mlx.core."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

PROBE = "import mlxllm, mlxllm.blas as b; import mlx.core; print(b.blas_in_use())"


def test_openblas_is_loaded_before_mlx() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True)
    assert out.stdout.startswith("system OpenBLAS"), out.stdout + out.stderr


def test_missing_openblas_warns_once(tmp_path) -> None:
    env = {"MLXLLM_OPENBLAS": str(tmp_path / "nowhere.so"), "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env=env)
    assert out.stderr.count("apt-get install libopenblas0-pthread") == 1
    assert "reference BLAS" in out.stdout
