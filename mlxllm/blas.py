"""Load the system OpenBLAS before `mlx.core` on Linux (hand-written, not exported).

MLX's Linux CPU wheel links a reference BLAS that runs an f32 matmul at a few
GFLOP/s. Loading OpenBLAS with RTLD_GLOBAL first makes MLX resolve its BLAS symbols
there instead, which is 30-60x faster with bit-identical results.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from pathlib import Path

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
OPENBLAS_HINT = (
    "mlxllm: the system OpenBLAS was not found, so MLX uses its bundled reference "
    "BLAS and matrix products run ~50x slower. Install it with "
    "`apt-get install libopenblas0-pthread` (Debian/Ubuntu) or point "
    "MLXLLM_OPENBLAS at libopenblas.so.0."
)

_loaded: str | None = None


def find_openblas() -> str | None:
    """Path of the system OpenBLAS shared library, or None when none is installed."""
    override = os.environ.get("MLXLLM_OPENBLAS")
    candidates = (override,) if override else OPENBLAS_CANDIDATES
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return candidate
    return None


def preload_system_blas() -> str | None:
    """On Linux, load OpenBLAS globally before mlx.core; warn once if it is missing."""
    global _loaded
    if _loaded or not sys.platform.startswith("linux"):
        return _loaded
    path = find_openblas()
    if path is None:
        if "mlx.core" not in sys.modules:
            warnings.warn(OPENBLAS_HINT, RuntimeWarning, stacklevel=2)
        return None
    if "mlx.core" in sys.modules:
        warnings.warn(
            "mlxllm: mlx.core was imported before mlxllm, too late to load OpenBLAS; "
            "import mlxllm first.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    _loaded = path
    return path


def blas_in_use() -> str:
    """Name the BLAS library this process computes matmuls with."""
    if sys.platform == "darwin":
        return "Apple Accelerate (CPU) / Metal (GPU)"
    maps = Path("/proc/self/maps")
    libraries = maps.read_text() if maps.exists() else ""
    for line in libraries.splitlines():
        if "libopenblas" in line:
            return "system OpenBLAS " + line.split()[-1]
    return "MLX's bundled reference BLAS (slow; install libopenblas0-pthread)"
