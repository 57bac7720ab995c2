"""Check the system libraries the book needs, before anything is installed.

Runs with the system Python (`python3 mlxllm/press/system.py`, from the Makefile), so
it imports nothing from the package. It stops with the packages to install when
something is missing, instead of letting WeasyPrint or MLX fail later in obscure ways.
"""

from __future__ import annotations

import ctypes.util
import shutil
import subprocess
import sys
from pathlib import Path

MIN_PYTHON = (3, 10)

# (what, how to find it, Debian package)
LINUX_LIBRARIES = [
    ("OpenBLAS (fast matmuls for mlx[cpu])", "openblas", "libopenblas0-pthread"),
    ("Pango (WeasyPrint's text layout)", "pango-1.0", "libpango-1.0-0"),
    ("PangoFT2 (WeasyPrint's fonts)", "pangoft2-1.0", "libpangoft2-1.0-0"),
    ("HarfBuzz subset (PDF font embedding)", "harfbuzz-subset", "libharfbuzz-subset0"),
]
LINUX_PROGRAMS = [("pdftoppm/pdftotext (tests read the PDF)", "pdftotext", "poppler-utils")]
LINUX_FONTS = [
    ("TeX Gyre Pagella (body text)", "TeX Gyre Pagella", "fonts-texgyre"),
    ("DejaVu Sans Mono (code)", "DejaVu Sans Mono", "fonts-dejavu-core"),
]
MAC_LIBRARY_DIRS = ("/opt/homebrew/lib", "/usr/local/lib")


def missing_linux() -> list[tuple[str, str]]:
    missing = [(what, package) for what, name, package in LINUX_LIBRARIES
               if ctypes.util.find_library(name) is None]
    missing += [(what, package) for what, program, package in LINUX_PROGRAMS
                if shutil.which(program) is None]
    if shutil.which("fc-list"):
        fonts = subprocess.run(["fc-list", ":", "family"], capture_output=True,
                               text=True).stdout
        missing += [(what, package) for what, family, package in LINUX_FONTS
                    if family not in fonts]
    else:
        missing.append(("fontconfig (font lookup)", "fontconfig"))
    return missing


def missing_mac() -> list[tuple[str, str]]:
    found = any(Path(d, "libpango-1.0.dylib").exists() for d in MAC_LIBRARY_DIRS)
    return [] if found else [("Pango (WeasyPrint's text layout)", "pango")]


def main() -> int:
    if sys.version_info < MIN_PYTHON:
        print(f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed; this is "
              f"{sys.version.split()[0]}. Run make with PYTHON=/path/to/python3.11",
              file=sys.stderr)
        return 1
    if sys.platform == "darwin":
        missing = missing_mac()
        command = "brew install " + " ".join(sorted({p for _, p in missing}))
    elif sys.platform.startswith("linux"):
        missing = missing_linux()
        command = "sudo apt-get install " + " ".join(sorted({p for _, p in missing}))
    else:
        print(f"unsupported platform {sys.platform}: the book builds on macOS and Linux",
              file=sys.stderr)
        return 1
    if not missing:
        return 0
    print("The book needs system libraries that are not installed:", file=sys.stderr)
    for what, package in missing:
        print(f"  {what}: package {package}", file=sys.stderr)
    print(f"Install them with:\n  {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
