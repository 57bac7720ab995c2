"""The book toolchain: read, export, execute, render, pdf (hand-written)."""
