"""The `mlxllm` command line (hand-written): `mlxllm doctor`, more as chapters land."""

from __future__ import annotations

import argparse
import sys


def doctor(args: argparse.Namespace) -> int:
    """Print the platform, MLX set-up, BLAS in use and a measured matmul speed."""
    import mlxllm  # noqa: F401  (loads OpenBLAS first on Linux)
    from mlxllm.hardware import describe_machine, matmul_gflops

    facts = describe_machine()
    facts["f32 matmul"] = f"{matmul_gflops(args.size):.1f} GFLOP/s at n={args.size}"
    width = max(map(len, facts))
    for name, value in facts.items():
        print(f"{name:<{width}}  {value}")
    if "reference BLAS" in facts["BLAS"]:
        print("\nMatrix products are slow here: install the system OpenBLAS "
              "(Debian/Ubuntu: apt-get install libopenblas0-pthread).")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlxllm", description="The library of 'Build a Large Language Model from "
        "Scratch, with MLX'.")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("doctor", help="check this machine's MLX set-up")
    check.add_argument("--size", type=int, default=1024,
                       help="matrix size n of the timed n×n product (default 1024)")
    check.set_defaults(run=doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
