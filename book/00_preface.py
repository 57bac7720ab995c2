# %% [markdown]
# # Preface
#
# This book builds a large language model from nothing but Python, a little linear
# algebra and Apple's MLX, and every line of code that builds it ran while the book
# was made. You will not find a listing here that was pasted in from somewhere, or an
# output typed by hand: each number, table and figure under a listing is what that
# listing printed or drew when this copy was built.
#
# ## Who this book is for
#
# You are a programmer. You read Python fluently, you remember what a matrix product
# is, and you have used NumPy at least a little. You may have called a language model
# through an API, or run one locally, and you want to know what happens inside: not
# as a diagram with arrows, but as code you wrote, ran and can change. You own a
# MacBook, which should be all the hardware the book needs (see "What you need").
#
# You do not need a background in machine learning. Each idea is introduced when the
# code needs it, shown working on a small example, and checked: a shape, an equality
# with a library's version, a loss that falls, a memory figure that drops.
#
# ## What you will build
#
# Chapter by chapter you build the parts of a GPT-style model and the tools around it:
#
# - a byte-level BPE tokenizer, trained on your own text (chapter 3);
# - token embeddings and positional encodings, including rotary embeddings
#   (chapter 4);
# - scaled dot-product attention and multi-head attention (chapter 5);
# - the transformer block and the GPT model, with a parameter and FLOP count you
#   can check (chapter 6);
# - a training loop: AdamW with a warmup-and-cosine schedule, gradient clipping,
#   checkpoints that resume, and sampling with temperature and top-k (chapter 7);
# - the same loop made to fit a laptop: gradient accumulation, activation
#   checkpointing and bfloat16 (chapter 8);
# - generating text: greedy decoding, temperature, top-k, top-p, min-p and a
#   repetition penalty, and a key-value cache that makes sampling fast
#   (chapter 9);
# - an honest measure of how good the model is: baselines from a uniform guess
#   to Kneser-Ney n-grams and compressors, the book's own Shakespeare model
#   trained against them, intervals, calibration and memorisation
#   (chapter 10);
# - what goes wrong in training, each failure made to happen on purpose and
#   fixed, and a command that reads a run and says what it sees (chapter 11);
# - data-parallel training with `mx.distributed`: one run on several
#   processes, equal to one process to rounding, and what the exchange of
#   gradients costs on one machine and would cost between Macs (chapter 12).
#
# Those twelve chapters are this edition. You finish it with a model trained
# on Shakespeare that you can sample from, score and diagnose from the command
# line, and a trainer that runs on several processes. The plan goes on, in
# chapters not written yet, to fine-tuning with LoRA and shipping a model.
# Everything you build is also a
# Python package, `mlxllm`: the chapters are its source, so the code you read is
# the code you later import.
#
# ## How to use this book
#
# Clone the repository and run two commands:
#
# ```
# make pdf     # runs every chapter and typesets build/book.pdf
# make test    # runs every chapter in a fast profile, plus the unit tests
# ```
#
# The first `make` creates a virtual environment in `.venv` and installs the package
# and its dependencies into it; nothing else needs to be set up by hand. If a system
# library is missing (the PDF needs Pango: `brew install pango` on a Mac), `make`
# stops and names it.
#
# **Profiles.** Everything that costs time (training steps, model sizes, benchmark
# repeats) is chosen per *profile* with one helper, `pick`. The `smoke` profile
# runs each chapter in seconds and only proves that the code works; `make test` uses
# it. The `book` profile is what `make pdf` runs and what this copy shows: minutes per
# chapter on a laptop. The `full` profile is for your own long runs, such as the
# 10-million-parameter Shakespeare model; where the book talks about a `full` run it
# shows the command and says that the run was not made for the book.

# %%
import mlxllm  # noqa: F401  (on Linux: load the fast system BLAS first)
from mlxllm.book import pick, profile

steps = pick(smoke=20, book=2000, full=5000)
print(f"profile {profile()!r}: {steps} training steps")

# %% [markdown]
# **A chapter is a script and a notebook.** Each chapter is a plain Python file in
# `book/`, in the "percent" format of jupytext: prose lives in comment cells, code in
# code cells. You can run a chapter top to bottom as a script,
#
# ```
# MLXLLM_PROFILE=smoke .venv/bin/python book/01_map.py
# ```
#
# or open it as a notebook and run it cell by cell beside the PDF:
#
# ```
# .venv/bin/jupytext --to notebook book/02_mlx.py   # writes book/02_mlx.ipynb
# ```
#
# A cell marked *exported to mlxllm/…* in the margin above it becomes part of the
# package: `make export` copies those cells into `mlxllm/`, and later chapters import
# them. If you change such a cell, run `make export` and the rest of the book uses
# your version.
#
# **Exercises.** Each chapter ends with exercises marked ★ (minutes), ★★ (an hour)
# or ★★★ (a small project). Their solutions are in the appendix, and they run like
# every other chapter, so they are tested too.
#
# ## What you need
#
# The book is written for a Mac with Apple silicon, where MLX runs your arrays on
# the GPU through Metal, in memory that the CPU shares (Hannun et al., 2023). The
# models are small on purpose, and chapter 8 computes, from a formula it checks
# against measured peaks, how much memory each one takes to train. The book also
# builds on Linux, where `mlx[cpu]` runs on the processor, and that is where it was
# written and tested: never on a Mac. So whatever it says about Macs is an
# expectation, given with its reason. Two run through the whole book. A Mac's GPU
# should train these models much faster than a CPU of a few cores, because it runs
# thousands of multiply-adds at once. And its results should agree with a CPU's up
# to floating-point rounding, not bit for bit, because the GPU adds the same
# numbers in a different order. This copy was built on the machine below; where a
# chapter reports a time or a speed, it is this machine's.

# %%
#| echo: false
#| label: tbl-build-machine
#| tbl-cap: The machine that built this copy of the book, as `mlxllm doctor` reports it.
from mlxllm.book import Table
from mlxllm.hardware import describe_machine

machine = describe_machine()
Table(list(machine.items()), ["", "this build"])

# %% [markdown]
# ## How this book is made
#
# The chapters are executed by a small toolchain that ships with the package
# (`mlxllm/press`). It runs each chapter in a fresh process, in order, and keeps what
# every cell printed, returned or drew; a number in a sentence is written in the source
# as an expression, such as `{{ steps }}`, and filled in from the run (this build
# used {{ steps }} steps for the example above). It then lays out the pages with
# WeasyPrint. When a cell fails, the build stops and names the chapter file and line,
# so a book with a broken listing cannot be printed. Results are cached per chapter
# and rebuilt only when the code they depend on changes.
