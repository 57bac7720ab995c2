"""mlxllm: the library built chapter by chapter in *Build a Large Language Model
from Scratch, with MLX*.

Importing the package first makes MLX fast on Linux: the `mlx[cpu]` wheel bundles
a slow reference BLAS, so the system OpenBLAS is loaded before `mlx.core` when it
is installed (see `mlxllm.blas`). On macOS nothing happens: MLX uses Accelerate
and Metal.
"""

from mlxllm.blas import preload_system_blas

preload_system_blas()

__version__ = "0.1.0"
