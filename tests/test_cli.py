"""The command line as a new user runs it."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def test_doctor_reports_the_machine() -> None:
    result = subprocess.run([sys.executable, "-m", "mlxllm.cli", "doctor", "--size", "256"],
                            cwd=ROOT, capture_output=True, text=True, check=True)
    lines = {}
    for line in result.stdout.splitlines():
        name, _, value = line.partition("  ")
        lines[name.strip()] = value.strip()
    for field in ("platform", "Python", "MLX", "default device", "BLAS", "f32 matmul"):
        assert field in lines, result.stdout
    gflops = float(lines["f32 matmul"].split()[0])
    assert gflops > 0
    if sys.platform.startswith("linux"):
        assert "OpenBLAS" in lines["BLAS"], "the system OpenBLAS should be in use"
