# %% [markdown]
# # MLX in one chapter
#
# Every line of the model you build in this book runs on MLX, Apple's array
# framework for machine learning (Hannun et al., 2023). You could learn it piece
# by piece as the chapters need it, but four of its ideas shape how every later
# listing is written, and they are easier to see on small examples than inside a
# transformer:
#
# - **A NumPy-like API.** Arrays, dtypes, broadcasting, indexing and `@` work
#   the way you already expect, so most of what you know carries over.
# - **Unified memory.** On Apple silicon the CPU and the GPU share one pool of
#   memory. An array is not tied to a device; each operation runs on one.
#   There is no `.to(device)` and no copy between devices.
# - **Lazy evaluation.** An expression such as `a @ b` records what to compute
#   and returns at once; the work happens when you call `mx.eval` or look at a
#   value. That is what lets MLX fuse and schedule work, and it changes how you
#   time code.
# - **Composable function transformations.** `mx.grad` turns a function into its
#   derivative, `mx.compile` turns it into a fused kernel, and they nest, as in
#   JAX (Bradbury et al., 2018).
#
# In the map of chapter 1, this chapter is the toolbox: nothing here is an LLM
# yet, but the tokenizer, the model, the training loop and the sampler of the
# next chapters use exactly these calls. You end the chapter with numbers about
# your own machine and a first module, `mlxllm.hardware`, which `mlxllm doctor`
# uses to tell you how fast your Mac multiplies matrices.
#
# Every point comes with code that runs, and an assertion that checks the claim.
# Start with the imports. Import `mlxllm` before `mlx.core`: on Linux, this
# loads the system's fast BLAS library before MLX picks its own slow one; on a
# Mac it does nothing.

# %%
#| default_exp hardware
import math
import time

import mlxllm  # noqa: F401  (first: on Linux it gives MLX a fast BLAS)
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import matplotlib.pyplot as plt
import numpy as np
from mlx.utils import tree_flatten

from mlxllm.book import Table, pick

# %% [markdown]
# ## Arrays and dtypes
#
# An `mx.array` is an n-dimensional block of numbers of one type, its *dtype*.
# You make one from a Python list or a NumPy array, and turn it back into NumPy
# with `np.array(x)`.

# %%
a = mx.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
print(a.shape, a.dtype, a.size, a.itemsize, a.nbytes)

from_numpy = mx.array(np.linspace(0, 1, 5))  # NumPy's default is float64
back = np.array(from_numpy)  # a copy: changing it leaves the MLX array alone
back[0] = 99.0
print(from_numpy.dtype, back.dtype, from_numpy[0].item())

# %%
#| echo: false
assert a.nbytes == a.size * a.itemsize == 24
assert from_numpy.dtype == mx.float32 and back.dtype == np.float32
assert from_numpy[0].item() == 0.0

# %% [markdown]
# Notice three things. The attributes are the NumPy ones (`shape`, `dtype`,
# `size`, `itemsize`, `nbytes`). NumPy's float64 became MLX's float32: MLX's
# default float is 32-bit, because that is what GPUs compute fast, so an array
# from NumPy changes type on the way in (ask for `dtype=` if you want
# otherwise). And `np.array(x)` copies, so writing into the copy does not change
# the original.
#
# Which dtype you pick decides how many bytes each number takes and which
# numbers it can hold. @tbl-dtypes lists the ones this book uses, read from
# `mx.finfo` and `mx.iinfo` on this run.

# %%
#| label: tbl-dtypes
#| tbl-cap: Bytes, range (largest value) and precision (step after 1).
def dtype_row(dtype: mx.Dtype) -> list[object]:
    name = str(dtype).removeprefix("mlx.core.")
    if mx.issubdtype(dtype, mx.floating):
        info = mx.finfo(dtype)
        return [name, dtype.size, f"{info.max:.3g}", f"{info.eps:.3g}"]
    return [name, dtype.size, f"{mx.iinfo(dtype).max:,}", "1"]


dtypes = [mx.float32, mx.float16, mx.bfloat16, mx.int32, mx.uint16]
Table(
    [dtype_row(d) for d in dtypes],
    ["dtype", "bytes", "largest value", "step after 1"],
)

# %% [markdown]
# The two 16-bit float types both halve memory, but they spend their 16 bits
# differently. float16 keeps 10 bits of fraction and 5 of exponent: it is the
# more precise of the two but overflows at 65,504. bfloat16 keeps float32's 8
# exponent bits and only 7 fraction bits (Kalamkar et al., 2019), 8 bits of
# precision counting the leading 1 that a float does not store: it covers the
# same range as float32 but rounds much more coarsely. The step after 1 in
# @tbl-dtypes is $2^{-10}$ and $2^{-7}$, one unit of the last fraction bit, as
# the first two lines below assert. Training is full of large intermediate
# values (logits, sums of squares), so range matters more than the third
# significant digit; that is why bfloat16 is the usual half-precision type for
# training. The integer types hold token ids: a vocabulary smaller than 65,536
# fits in uint16, half the bytes of int32.
#
# Check both sides of the bfloat16 trade on real numbers:

# %%
assert mx.finfo(mx.float16).eps == 2**-10  # 10 fraction bits
assert mx.finfo(mx.bfloat16).eps == 2**-7  # 7 fraction bits

big = mx.array(70_000.0)
print(big.astype(mx.float16), big.astype(mx.bfloat16))

one_and_a_bit = 1 + 1 / 256
print(mx.array(one_and_a_bit, dtype=mx.float16).item(),
      mx.array(one_and_a_bit, dtype=mx.bfloat16).item())

half_precision = mx.array([0.1, 0.2], dtype=mx.bfloat16)
try:
    np.array(half_precision)
    raise AssertionError("NumPy accepted a bfloat16 array")
except ValueError as error:
    print("ValueError:", error)
print(np.array(half_precision.astype(mx.float32)))

# %%
#| echo: false
assert mx.isinf(big.astype(mx.float16)).item()
assert mx.isfinite(big.astype(mx.bfloat16)).item()
assert mx.array(one_and_a_bit, dtype=mx.float16).item() == one_and_a_bit
assert mx.array(one_and_a_bit, dtype=mx.bfloat16).item() == 1.0

# %% [markdown]
# 70,000 overflows float16 to `inf` but survives in bfloat16, rounded to
# {{ big.astype(mx.bfloat16).item():,.0f }}, the nearest number it can hold;
# $1 + 1/256$ survives in float16 and rounds to exactly 1 in bfloat16. One
# practical snag: NumPy has no bfloat16, so `np.array` refuses a bfloat16 array
# with the `ValueError` printed above (the `raise` would stop the chapter if it
# ever accepted one); the last line shows the fix, a cast to float32 first.

# %% [markdown]
# ## Lazy evaluation and `mx.eval`
#
# When you write `c = a @ b` in MLX, nothing is multiplied. MLX records the
# operation in a graph and hands you an array that knows its shape and dtype but
# has no data yet. The work happens when you call `mx.eval(c)`, or implicitly
# when you need a value: `print(c)`, `c.item()`, `np.array(c)`, or `if c > 0:`.
# Deferring the work lets MLX see a whole computation before running it (to fuse
# steps, to schedule them on the GPU, to skip parts whose result you never use).
#
# Time the two phases separately:

# %%
n = pick(smoke=512, book=1024)
a = mx.random.normal((n, n))
b = mx.random.normal((n, n))
mx.eval(a, b)  # make the inputs real, so only the product below is timed

start = time.perf_counter()
c = mx.tanh(a @ b / math.sqrt(n)) @ b
total = c.sum()
build_ms = 1e3 * (time.perf_counter() - start)

start = time.perf_counter()
mx.eval(total)
eval_ms = 1e3 * (time.perf_counter() - start)
print(f"{c.shape=} {c.dtype=}  build {build_ms:.3f} ms, eval {eval_ms:.1f} ms")

# %%
#| echo: false
assert c.shape == (n, n) and eval_ms > build_ms

# %% [markdown]
# Building the graph for two {{ n }}×{{ n }} products, a `tanh` and a sum took
# {{ build_ms:.3f }} ms; evaluating it took {{ eval_ms:.1f }} ms. The shape and
# dtype were known before any arithmetic ran.
#
# This is the easiest way to mismeasure MLX code: a timer around
# `a @ b` without `mx.eval` measures only the bookkeeping. Here is what such a
# timer reports as a matrix product's speed, next to an honest one:

# %%
flops = 2 * n**3  # n² outputs, each n multiplies and n adds

start = time.perf_counter()
product = a @ b
wrong_seconds = time.perf_counter() - start

start = time.perf_counter()
mx.eval(a @ b)
right_seconds = time.perf_counter() - start

wrong_gflops = flops / wrong_seconds / 1e9
right_gflops = flops / right_seconds / 1e9
print(f"without eval: {wrong_gflops:,.0f} GFLOP/s, with: {right_gflops:,.1f}")

# %% [markdown]
# The timer without `mx.eval` claims {{ wrong_gflops:,.0f }} GFLOP/s, the one
# with it {{ right_gflops:,.1f }}. The rule for the rest of the book: whenever
# you time or measure memory, evaluate inside the measured region. The same goes
# for a training loop: if you never evaluate, each step adds to one ever-growing
# graph, memory climbs, and the whole bill arrives at once when you finally
# print the loss.
#
# Since you will time things all chapter long, write the timer once, properly.
# It is the first export of this chapter, so it starts the module
# `mlxllm/hardware.py`:

# %%
#| export
import os
import platform
import statistics
import time
from collections.abc import Callable

import mlx.core as mx

from mlxllm.blas import blas_in_use

# %%
#| export
def median_seconds(fn: Callable[[], object], repeats: int = 5) -> float:
    """Median wall time of evaluating `fn()`, after one untimed warm-up call.

    `mx.eval` makes the timer wait for the arithmetic, not just the graph; the
    warm-up absorbs one-off setup and the median ignores a stray slow run.
    """
    mx.eval(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mx.eval(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)

# %% [markdown]
# `fn` takes no arguments and returns whatever should be evaluated (an array or
# a list, tuple or dict of arrays: `mx.eval` accepts them all). You pass it as a
# `lambda`, as in `median_seconds(lambda: a @ b)`.

# %% [markdown]
# ## Unified memory and devices
#
# MLX has two kinds of device, `mx.cpu` and `mx.gpu`. On a Mac the GPU runs
# through Metal and is the default; MLX also runs on Linux, where the build used
# for the CPU has no GPU at all. This book is built by executing every chapter,
# and the machine that built it may not be a Mac, so ask rather than assume:

# %%
default_device = mx.default_device()
gpu_available = mx.is_available(mx.gpu)
print(f"default device: {default_device}, GPU available: {gpu_available}")
print(mx.device_info())

# %% [markdown]
# This run used {{ default_device }}, and a GPU was
# {{ "available" if gpu_available else "not available" }}. On your Mac you see
# `Device(gpu, 0)` and the name of your chip.
#
# Because memory is shared, placing work on a device is a property of an
# operation, not of an array. Every MLX operation takes a `stream=` argument (a
# device, or a stream on a device), and `with mx.stream(...)` sets it for a
# block. The same input array feeds both devices without a copy:

# %%
x = mx.random.normal((256, 256))
devices = [mx.cpu, mx.gpu] if gpu_available else [mx.cpu]
results = [mx.matmul(x, x, stream=device) for device in devices]
with mx.stream(mx.cpu):
    results.append(x @ x)
mx.eval(results)
print(f"ran on {len(devices)} device(s); results agree:",
      all(mx.allclose(r, results[0], atol=1e-3).item() for r in results))

# %%
#| echo: false
assert all(mx.allclose(r, results[0], atol=1e-3).item() for r in results)

# %% [markdown]
# On a Mac this cell would multiply on the GPU and on the CPU from one array
# `x`, with no transfer in between, since both devices read the same unified
# memory (Hannun et al., 2023); expect the results to agree up to rounding,
# not bit for bit, because the two devices add in different orders. This
# build has no GPU, so only the CPU ran, and the assertion above checked only
# that the streams agree. You rarely need
# `stream=` in this book: the default device is right for nearly everything. It
# matters when a small operation is faster on the CPU or when you overlap CPU
# and GPU work.

# %% [markdown]
# ## `mx.grad` and `mx.value_and_grad`
#
# Training a network means following the gradient of a loss. MLX computes
# gradients by transforming functions: `mx.grad(f)` is a new function that
# returns $f'$, computed by reverse-mode automatic differentiation. Try it on a
# function whose derivative you can write by hand, $f(x) = x^3 \sin x$ with
# $f'(x) = 3x^2 \sin x + x^3 \cos x$:

# %%
def f(x: mx.array) -> mx.array:
    return x**3 * mx.sin(x)


def f_prime(x: mx.array) -> mx.array:
    return 3 * x**2 * mx.sin(x) + x**3 * mx.cos(x)


point = mx.array(1.3)
value, slope = mx.value_and_grad(f)(point)
step = 1e-2
central_difference = (f(point + step) - f(point - step)) / (2 * step)
print(f"f = {value.item():.6f}  autodiff {mx.grad(f)(point).item():.6f}  "
      f"analytic {f_prime(point).item():.6f}  "
      f"finite diff {central_difference.item():.6f}")

# %%
#| echo: false
autodiff_error = abs(slope.item() - f_prime(point).item()) / abs(
    f_prime(point).item()
)
assert mx.array_equal(slope, mx.grad(f)(point))
assert autodiff_error < 1e-6
assert abs(central_difference.item() - f_prime(point).item()) < 1e-3

# %% [markdown]
# `mx.value_and_grad` returns the value and the derivative from one pass, which
# is what a training step wants (the loss to print, the gradient to follow). The
# automatic derivative agrees with the analytic one to float32 rounding (the
# relative difference here is {{ autodiff_error:.1e }}). The central finite
# difference $\bigl(f(x+h) - f(x-h)\bigr)/2h$ is a useful independent check, but
# only an approximate one, and @fig-finite-difference shows why: a large $h$
# suffers from the curvature of $f$ (an error shrinking like $h^2$), a small $h$
# from subtracting two nearly equal float32 numbers (an error growing like
# $\epsilon/h$).

# %%
#| echo: false
#| label: fig-finite-difference
#| fig-cap: Finite-difference error in float32: rounding left, truncation right.
step_grid = np.logspace(-5, 0, 26)
exact = f_prime(point).item()
errors = [
    abs(((f(point + h) - f(point - h)) / (2 * h)).item() - exact) / abs(exact)
    for h in step_grid
]
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.loglog(step_grid, errors, marker="o", label="central finite difference")
ax.axhline(mx.finfo(mx.float32).eps, linestyle="--", label="float32 epsilon")
ax.set_xlabel("step h")
ax.set_ylabel("relative error")
ax.legend()

# %% [markdown]
# Gradients with respect to arrays work the same way. For a linear model with
# weights $w$, inputs $X$ and targets $y$, the mean squared error
# $L = \frac{1}{N}\lVert Xw - y\rVert^2$ has the gradient
# $\nabla_w L = \frac{2}{N} X^\top (Xw - y)$. `mx.grad` differentiates with
# respect to the first argument unless `argnums` says otherwise:

# %%
def squared_error(w: mx.array, x: mx.array, y: mx.array) -> mx.array:
    return ((x @ w - y) ** 2).mean()


inputs = mx.random.normal((64, 3))
targets = mx.random.normal((64,))
w = mx.zeros(3)
loss, grad_w = mx.value_and_grad(squared_error)(w, inputs, targets)
by_hand = 2 * inputs.T @ (inputs @ w - targets) / inputs.shape[0]
grad_w2, grad_targets = mx.grad(squared_error, argnums=(0, 2))(
    w, inputs, targets
)
print(grad_w, by_hand, grad_targets.shape, sep="\n")

# %%
#| echo: false
assert mx.allclose(grad_w, by_hand, atol=1e-6)
assert mx.array_equal(grad_w, grad_w2)
assert grad_targets.shape == targets.shape

# %% [markdown]
# The gradient has the shape of the thing you differentiate with respect to, and
# it matches the formula. Asking for `argnums=(0, 2)` returns a tuple of two
# gradients. Because `mx.grad` transforms functions rather than recording a tape
# during a forward pass, it nests: `mx.grad(mx.grad(f))` is the second
# derivative (Exercise 2.2), and a function passed to it must be *pure*: it
# computes its result from its arguments only and changes nothing outside
# itself.

# %% [markdown]
# ## `nn.Module`
#
# A network has many parameters, and passing each one as an argument to the loss
# would be unbearable. `mlx.nn.Module` keeps them in a tree: each module is a
# dictionary of its arrays and sub-modules, and `parameters()` returns that tree
# as nested `dict`s. Here is the smallest useful network, a multi-layer
# perceptron (MLP) with one hidden layer:

# %%
class MLP(nn.Module):
    """Two linear layers with a ReLU between them."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(d_in, d_hidden)
        self.out = nn.Linear(d_hidden, d_out)

    def __call__(self, x: mx.array) -> mx.array:
        return self.out(nn.relu(self.hidden(x)))


def count(tree: dict) -> int:
    """Number of scalars in a tree of arrays."""
    return sum(p.size for _, p in tree_flatten(tree))


mx.random.seed(0)
model = MLP(1, 64, 1)
for name, p in tree_flatten(model.parameters()):
    print(f"{name:14} {p.shape}")
n_params = count(model.parameters())

# %% [markdown]
# `tree_flatten` turns the nested dictionaries into a list of (dotted name,
# array) pairs, which is how you count parameters and how checkpoints name them.
# The MLP has $1 \cdot 64 + 64$ parameters in its hidden layer and
# $64 \cdot 1 + 1$ in its output layer, {{ n_params }} in all.
#
# `trainable_parameters()` is the same tree minus what you froze. Freezing is
# how you fine-tune part of a model; it also shows that the gradient follows the
# trainable tree. `nn.value_and_grad(model, loss_fn)` is the module version of
# `mx.value_and_grad`: it differentiates `loss_fn` with respect to the model's
# trainable parameters, which are not arguments of `loss_fn` but live inside
# `model`.

# %%
def mse_loss(model: nn.Module, x: mx.array, y: mx.array) -> mx.array:
    return nn.losses.mse_loss(model(x), y)


x_train = mx.linspace(-3, 3, 256)[:, None]
y_train = mx.sin(x_train)
loss_and_grad = nn.value_and_grad(model, mse_loss)

model.hidden.freeze()
n_trainable = count(model.trainable_parameters())
loss, grads = loss_and_grad(model, x_train, y_train)
print("frozen hidden layer:", n_trainable, [k for k, _ in tree_flatten(grads)])
model.unfreeze()
loss, grads = loss_and_grad(model, x_train, y_train)
print("all trainable:", count(grads), [k for k, _ in tree_flatten(grads)])

# %%
#| echo: false
assert n_params == (1 * 64 + 64) + (64 * 1 + 1)
assert n_trainable == 64 * 1 + 1
assert count(grads) == n_params
assert [k for k, _ in tree_flatten(grads)] == [
    k for k, _ in tree_flatten(model.trainable_parameters())
]

# %% [markdown]
# With the hidden layer frozen only {{ n_trainable }} parameters are trainable
# and the gradient tree holds only `out.weight` and `out.bias`; unfrozen, it
# mirrors all {{ n_params }} parameters. Everything downstream (optimizers,
# checkpoints, the distributed `all_sum` of a later chapter) works on such
# trees.

# %% [markdown]
# ## `mlx.optimizers`
#
# An optimizer turns gradients into parameter updates and keeps whatever state
# it needs (momentum, running averages) in a tree shaped like the parameters.
# `optimizer.update(model, grads)` computes the new parameters and puts them
# into the model. The training loop below fits the MLP to $\sin x$ on $[-3, 3]$;
# each run starts from the same initial weights, which you can keep simply by
# holding on to the arrays: an optimizer step puts new arrays into the model
# and leaves the old ones as they were.

# %%
initial = model.parameters()
steps = pick(smoke=150, book=500)


def train(optimizer: optim.Optimizer) -> list[float]:
    """Fit `model` to sin(x) from `initial`; return the loss at every step."""
    model.update(initial)
    losses = []
    for _ in range(steps):
        loss, grads = loss_and_grad(model, x_train, y_train)
        optimizer.update(model, grads)
        mx.eval(model.parameters(), optimizer.state)
        losses.append(loss.item())
    return losses


runs = {
    "SGD": train(optim.SGD(learning_rate=0.05)),
    "SGD, momentum 0.9": train(optim.SGD(learning_rate=0.05, momentum=0.9)),
    "AdamW (MLX default)": train(optim.AdamW(learning_rate=5e-3)),
    "AdamW, bias correction": train(
        optim.AdamW(learning_rate=5e-3, bias_correction=True)
    ),
}
assert len({losses[0] for losses in runs.values()}) == 1  # one start

# %%
#| echo: false
assert all(losses[-1] < losses[0] / 10 for losses in runs.values())
assert all(losses[-1] < runs["SGD"][-1] for losses in runs.values()
           if losses is not runs["SGD"])
assert not mx.array_equal(initial["out"]["weight"], model.out.weight)

# %% [markdown]
# `mx.eval(model.parameters(), optimizer.state)` is the evaluation point of each
# step: without it the loop would build one graph for all {{ steps }} steps.
# `loss.item()` would force the loss anyway, but the parameters and optimizer
# state must be evaluated too, or they pile up as a graph. The assertion under
# the runs checks that `initial` survived three runs of training: all four
# runs started from the same loss, so from the same weights.

# %%
#| echo: false
#| label: fig-optimizers
#| fig-cap: Loss of one MLP under four optimizers; plain SGD ends highest.
fig, ax = plt.subplots(figsize=(5.5, 3.4))
for label, losses in runs.items():
    ax.semilogy(range(1, steps + 1), losses, label=label)
ax.set_xlabel("step")
ax.set_ylabel("mean squared error")
ax.legend()

# %% [markdown]
# @fig-optimizers shows the four runs. After {{ steps }} steps the losses are
# {{ runs["SGD"][-1]:.2e }} (SGD), {{ runs["SGD, momentum 0.9"][-1]:.2e }} (SGD
# with momentum), {{ runs["AdamW (MLX default)"][-1]:.2e }} (MLX's default
# AdamW) and {{ runs["AdamW, bias correction"][-1]:.2e }} (AdamW with bias
# correction). That two AdamW runs with the same learning rate behave
# differently deserves a closer look.
#
# ### AdamW and bias correction
#
# Adam (Kingma & Ba, 2015) keeps two running averages per parameter, of the
# gradient $g_t$ and of its square, and AdamW (Loshchilov & Hutter, 2019) adds
# weight decay applied directly to the weights. With learning rate $\eta$:
#
# $$m_t = \beta_1 m_{t-1} + (1-\beta_1)\, g_t$$
#
# $$v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2$$
#
# $$w_t = w_{t-1} - \eta \frac{\hat m_t}{\sqrt{\hat v_t}+\epsilon}$$ {#eq-adam}
#
# Both averages start at zero, so early on they are too small: after one step
# $m_1 = (1-\beta_1) g_1$, a tenth of the gradient. The paper corrects this with
# $\hat m_t = m_t / (1-\beta_1^t)$ and $\hat v_t = v_t / (1-\beta_2^t)$, and
# PyTorch always does. MLX's `Adam` and `AdamW` default to
# `bias_correction=False` and use $m_t$ and $v_t$ directly. On the first step
# that changes the update from about $\eta$ to about
# $\eta (1-\beta_1)/\sqrt{1-\beta_2}$, which for the default betas
# $(0.9, 0.999)$ is more than three times larger. Check it on one step with a
# known gradient:

# %%
learning_rate = 1e-3
beta1, beta2 = 0.9, 0.999
gradient = mx.array([0.5, -2.0, 1e-3])


def first_update(bias_correction: bool) -> mx.array:
    optimizer = optim.AdamW(learning_rate=learning_rate, weight_decay=0.0,
                            bias_correction=bias_correction)
    params = {"w": mx.zeros(3)}
    updated = optimizer.apply_gradients({"w": gradient}, params)
    return params["w"] - updated["w"]


m1, v1 = (1 - beta1) * gradient, (1 - beta2) * gradient**2
expected_plain = learning_rate * m1 / (mx.sqrt(v1) + 1e-8)
expected_corrected = learning_rate * (m1 / (1 - beta1)) / (
    mx.sqrt(v1 / (1 - beta2)) + 1e-8
)
for label, bias_correction, expected in [
    ("MLX default:   ", False, expected_plain),
    ("bias-corrected:", True, expected_corrected),
]:
    print(label, np.array(first_update(bias_correction)), np.array(expected))

# %%
#| echo: false
assert mx.allclose(first_update(False), expected_plain, rtol=1e-5)
assert mx.allclose(first_update(True), expected_corrected, rtol=1e-5)
first_step_ratio = (first_update(False) / first_update(True))[0].item()
assert abs(first_step_ratio - (1 - beta1) / math.sqrt(1 - beta2)) < 1e-3

# %% [markdown]
# Both updates match @eq-adam with and without the hats, and the first step of
# MLX's default is {{ first_step_ratio:.2f }} times the corrected one, whatever
# the size of the gradient (Adam's step is about $\eta$ times the sign of the
# gradient). The difference does not vanish after one step. With a constant
# gradient the ratio of the two step sizes is
# $(1-\beta_1^t)/\sqrt{1-\beta_2^t}$; @fig-adam-ratio measures it by running
# both optimizers, for the default $\beta_2 = 0.999$ and for $\beta_2 = 0.95$,
# the value GPT-3 was trained with (Brown et al., 2020).

# %%
ratio_steps = pick(smoke=200, book=3000)


def step_sizes(beta2: float, bias_correction: bool) -> np.ndarray:
    """Size of each AdamW step under a constant gradient of 1."""
    optimizer = optim.AdamW(learning_rate=1e-3, betas=[0.9, beta2],
                            weight_decay=0.0, bias_correction=bias_correction)
    params, ones = {"w": mx.zeros(1)}, {"w": mx.ones(1)}
    sizes = []
    for _ in range(ratio_steps):
        new = optimizer.apply_gradients(ones, params)
        sizes.append((params["w"] - new["w"]).item())
        params = new
    return np.array(sizes)


t = np.arange(1, ratio_steps + 1)
step_ratios = {
    b2: step_sizes(b2, False) / step_sizes(b2, True) for b2 in (0.999, 0.95)
}

# %%
#| echo: false
for b2, measured in step_ratios.items():
    assert np.allclose(measured, (1 - 0.9**t) / np.sqrt(1 - b2**t), rtol=1e-2)
assert step_ratios[0.95][0] < 1 < step_ratios[0.999][0]
peak_ratio = step_ratios[0.999].max()
peak_step = int(t[step_ratios[0.999].argmax()])

# %%
#| echo: false
#| label: fig-adam-ratio
#| fig-cap: Uncorrected/corrected AdamW step: measured (lines), formula (dots).
fig, ax = plt.subplots(figsize=(5.5, 3.2))
for b2, measured in step_ratios.items():
    line, = ax.semilogx(t, measured, label=f"β₂ = {b2}")
    marks = np.unique(np.geomspace(1, ratio_steps, 12).astype(int))
    predicted = (1 - 0.9**marks) / np.sqrt(1 - b2**marks)
    ax.plot(marks, predicted, "o", color=line.get_color(), markersize=4)
ax.axhline(1.0, linestyle=":", linewidth=1)
ax.set_xlabel("step t")
ax.set_ylabel("uncorrected / corrected step")
ax.legend()

# %% [markdown]
# With the default betas the uncorrected optimizer's steps peak at
# {{ peak_ratio:.1f }} times the corrected ones, at step {{ peak_step }}, and
# are still {{ step_ratios[0.999][-1]:.2f }} times larger at step
# {{ ratio_steps }}. That is why the two AdamW curves of @fig-optimizers differ:
# with the same nominal learning rate, MLX's default takes larger steps, so the
# learning rate you pass is not the one you get. With $\beta_2 = 0.95$ the first
# steps are *smaller* instead ({{ step_ratios[0.95][0]:.2f }} times the
# corrected one on step 1). Learning rates and warm-up schedules in papers and
# in reference code such as nanoGPT were tuned with bias correction on, so this
# book passes `bias_correction=True` to every Adam-style optimizer: a learning
# rate then means what it means everywhere else, and your results compare with
# theirs.

# %% [markdown]
# ## `mx.compile`
#
# Each MLX operation is a separate kernel: it reads its inputs from memory,
# writes its output, and costs some fixed overhead to set up. `mx.compile(f)`
# traces `f` once, simplifies the graph and fuses chains of element-wise
# operations into a single kernel, so a chain of eight small operations becomes
# one pass over the data. A good test subject is the tanh approximation of GELU
# (Hendrycks & Gimpel, 2016), the activation function of GPT-2:

# %%
def gelu(x: mx.array) -> mx.array:
    inner = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1 + mx.tanh(inner))


gelu_compiled = mx.compile(gelu)
x = mx.random.normal((4096,))
mx.eval(x)

start = time.perf_counter()
y = gelu_compiled(x)
mx.eval(y)
first_call_ms = 1e3 * (time.perf_counter() - start)
steady_ms = 1e3 * median_seconds(lambda: gelu_compiled(x), repeats=21)
eager_ms = 1e3 * median_seconds(lambda: gelu(x), repeats=21)
print(f"first call {first_call_ms:.1f} ms, then {steady_ms:.3f} ms; "
      f"eager {eager_ms:.3f} ms")
assert mx.allclose(y, gelu(x), atol=1e-6)
assert mx.allclose(y, nn.gelu_approx(x), atol=1e-6)

# %% [markdown]
# The compiled function gives the same numbers as the plain one and as MLX's own
# `nn.gelu_approx`, as the two assertions check. Its first call took
# {{ first_call_ms:.1f }} ms against {{ steady_ms:.3f }} ms for later calls:
# the first call traces the function and builds the fused kernel. On a Mac that is a Metal kernel; on the
# Linux CPU build, MLX writes C++ source for the kernel, runs the system C++
# compiler on it and keeps the library in a cache under the temporary directory,
# so the very first run on a machine pays for a compiler and later runs find the
# kernel ready. A compiled function is traced again when the shapes or dtypes of
# its inputs change.
#
# Whether fusing pays depends on where the time goes, so measure it across sizes
# (@fig-compile).

# %%
compile_sizes = pick(
    smoke=[2**6, 2**10, 2**14], book=[2**k for k in range(4, 21, 2)]
)


def microseconds_per_call(fn: Callable, x: mx.array) -> float:
    return 1e6 * median_seconds(lambda: fn(x), repeats=11)


eager_us, compiled_us = [], []
for size in compile_sizes:
    x = mx.random.normal((size,))
    mx.eval(x)
    eager_us.append(microseconds_per_call(gelu, x))
    compiled_us.append(microseconds_per_call(gelu_compiled, x))
speedups = [e / c for e, c in zip(eager_us, compiled_us, strict=True)]

# %%
#| echo: false
#| label: fig-compile
#| fig-cap: Time per GELU call, eager and compiled, against array size.
fig, ax = plt.subplots(figsize=(5.5, 3.2))
ax.loglog(compile_sizes, eager_us, marker="o", label="eager")
ax.loglog(compile_sizes, compiled_us, marker="s", label="mx.compile")
ax.set_xlabel("elements")
ax.set_ylabel("time per call (µs)")
ax.legend()

# %% [markdown]
# Compiled over eager, the speed-up was {{ speedups[0]:.2f }}× at
# {{ compile_sizes[0]:, }} elements and {{ speedups[-1]:.2f }}× at
# {{ compile_sizes[-1]:, }} elements on this {{ default_device }} run (below 1
# means the compiled function was slower). For small arrays, most of the time of
# the eager version is per-operation overhead, and fusing eight operations into
# one removes most of it. For large arrays the time goes to arithmetic and
# memory traffic. On a GPU the fused kernel reads and writes the data once
# instead of eight times; on the Linux CPU the fused kernel is a plain scalar
# loop, which can lose to MLX's own vectorized element-wise kernels. So never
# assume `mx.compile` speeds things up: measure, on the machine you care about,
# at the sizes you care about.

# %% [markdown]
# ## Memory figures
#
# Whether a model fits on your Mac is a question of bytes, and MLX reports them:
# `mx.get_active_memory()` is what arrays hold now, `mx.get_peak_memory()` the
# highest that has been since `mx.reset_peak_memory()`, and
# `mx.get_cache_memory()` what MLX keeps from freed arrays to reuse. Allocate an
# array of known size and watch the counters:

# %%
rows = pick(smoke=1024, book=4096)
mx.reset_peak_memory()
before = mx.get_active_memory()

block = mx.ones((rows, 1024))  # float32: 4 bytes each
block_bytes = block.nbytes
lazy_bytes = mx.get_active_memory() - before
mx.eval(block)
held_bytes = mx.get_active_memory() - before

doubled_sum = (block * 2).sum()  # a temporary as large as block
mx.eval(doubled_sum)
peak_bytes = mx.get_peak_memory() - before
print(f"block: {block_bytes:,} B  before eval: {lazy_bytes:,} B  "
      f"after: {held_bytes:,} B  peak: {peak_bytes:,} B")

# %% [markdown]
# Before `mx.eval`, the {{ block_bytes:, }}-byte array took {{ lazy_bytes:, }}
# bytes: a lazy array has no storage yet. After evaluation, active memory grew
# by {{ held_bytes:, }} bytes, the array's size. Computing `(block * 2).sum()`
# needed a temporary as big as `block`, which is gone now but shows in the peak:
# {{ peak_bytes:, }} bytes, about twice the array. Peaks like this, not the size
# of the final results, decide whether a training step fits in memory.

# %%
del block
freed_active = mx.get_active_memory() - before
cached = mx.get_cache_memory()
mx.clear_cache()
print(f"after del: active {freed_active:,} B, cached {cached:,} B; "
      f"after clear_cache: cached {mx.get_cache_memory():,} B")

# %%
#| echo: false
assert lazy_bytes < 1024
assert block_bytes == rows * 1024 * 4
assert abs(held_bytes - block_bytes) < 1024
assert peak_bytes >= 2 * block_bytes
assert freed_active < 1024 and cached >= block_bytes
assert mx.get_cache_memory() == 0

# %% [markdown]
# Deleting the last reference returns the memory from active to the cache, where
# MLX reuses it for the next array of a similar size instead of asking the
# operating system again; `mx.clear_cache()` hands it back. If memory seems not
# to fall after you free a model, look at the cache before you look for a leak.

# %% [markdown]
# ## Random numbers
#
# Reproducible runs need reproducible random numbers: the same initial weights,
# the same batches, the same samples. MLX offers two ways. `mx.random.seed(s)`
# resets a global generator, which is convenient. An explicit key,
# `mx.random.key(s)`, passed as `key=` to any sampling function, makes the
# numbers depend on nothing but that key, which is robust: a function that draws
# with its own key does not shift the numbers that the rest of the program
# draws.

# %%
mx.random.seed(42)
first = mx.random.normal((4,))
mx.random.seed(42)
again = mx.random.normal((4,))

key = mx.random.key(7)
same_1 = mx.random.uniform(shape=(4,), key=key)
same_2 = mx.random.uniform(shape=(4,), key=key)
key_init, key_data = mx.random.split(key)
print(key, key_init, key_data, sep="\n")
print(mx.random.uniform(shape=(4,), key=key_init))
print(mx.random.uniform(shape=(4,), key=key_data))

# %%
#| echo: false
assert mx.array_equal(first, again)
assert mx.array_equal(same_1, same_2)
assert not mx.array_equal(
    mx.random.uniform(shape=(4,), key=key_init),
    mx.random.uniform(shape=(4,), key=key_data),
)

# %% [markdown]
# A key is a small uint32 array. Re-seeding gives the same normal numbers, the
# same key gives the same uniform numbers twice, and `mx.random.split` derives
# new, independent keys from one, so each part of a program (initialization,
# data shuffling, sampling) can own its stream. Never reuse a key for two
# purposes you want to be independent: reused keys give the same numbers, on
# purpose.

# %% [markdown]
# ## Measured matmul throughput
#
# Almost all of an LLM's arithmetic is matrix multiplication, so the speed of
# one product is the best single number for what your machine can train. The
# rest of this module measures it. Multiplying two $n \times n$ matrices takes
# $n^3$ multiplications and $n^3$ additions, $2n^3$ floating-point operations
# (FLOPs); divide by the measured time to get FLOP/s. The function draws its
# matrices with its own key, for the reason you just saw.

# %%
#| export
def matmul_gflops(
    n: int = 1024, dtype: mx.Dtype = mx.float32, repeats: int = 5
) -> float:
    """Measured speed of an n×n by n×n matrix product, in GFLOP/s.

    Counts 2n³ floating-point operations per product and times the median of
    `repeats` evaluated products after a warm-up. Draws its inputs with its own
    random key, so the global random state is left alone.
    """
    key_a, key_b = mx.random.split(mx.random.key(0))
    a = mx.random.normal((n, n), key=key_a).astype(dtype)
    b = mx.random.normal((n, n), key=key_b).astype(dtype)
    mx.eval(a, b)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats) / 1e9


def describe_machine() -> dict[str, str]:
    """The machine and MLX set-up, as `mlxllm doctor` reports them."""
    return {
        "platform": platform.platform(),
        "processor": platform.machine(),
        "CPU cores": str(os.cpu_count()),
        "Python": platform.python_version(),
        "MLX": mx.__version__,
        "default device": str(mx.default_device()),
        "device name": str(mx.device_info().get("device_name", "unknown")),
        "BLAS": blas_in_use(),
    }

# %%
mx.random.seed(1)
undisturbed = mx.random.normal((3,))
mx.random.seed(1)
gflops = matmul_gflops(pick(smoke=256, book=1024))
after_benchmark = mx.random.normal((3,))
print(f"{gflops:.1f} GFLOP/s")
assert mx.array_equal(undisturbed, after_benchmark)  # global state untouched

# %% [markdown]
# The benchmark left the global random numbers untouched: after it, the seeded
# generator drew the same numbers as without it. @fig-matmul runs it over a
# range of sizes and three dtypes.

# %%
float32_sizes = pick(smoke=[64, 128, 256],
                     book=[64, 128, 256, 512, 1024, 2048])
half_sizes = pick(smoke=[64, 128], book=[64, 128, 256, 512])
throughput = {
    "float32": [matmul_gflops(n, mx.float32) for n in float32_sizes],
    "float16": [matmul_gflops(n, mx.float16) for n in half_sizes],
    "bfloat16": [matmul_gflops(n, mx.bfloat16) for n in half_sizes],
}
best_float32 = max(throughput["float32"])
best_half = max(throughput["float16"] + throughput["bfloat16"])

# %%
#| echo: false
#| label: fig-matmul
#| fig-cap: Measured matmul throughput against size, per dtype, on this machine, both axes logarithmic. Each curve's peak is labelled with its value in GFLOP/s.
from matplotlib.ticker import FuncFormatter, LogLocator

fig, ax = plt.subplots(figsize=(5.5, 3.2))
dtype_sizes = {name: float32_sizes if name == "float32" else half_sizes
               for name in throughput}
for (name, values), marker in zip(throughput.items(), "osD"):
    ax.plot(dtype_sizes[name], values, marker=marker, label=name)
for name, values in throughput.items():  # each peak, labelled with its value
    best = int(np.argmax(values))
    size = dtype_sizes[name][best]
    near = [v[dtype_sizes[other].index(size)]  # other curves close by
            for other, v in throughput.items() if other != name
            and size in dtype_sizes[other]
            and 1 / 3 < v[dtype_sizes[other].index(size)] / values[best] < 3]
    above = values[best] >= max(near, default=0)
    ax.annotate(f"{values[best]:,.1f}", (size, values[best]),
                xytext=(0, 7 if above else -7), textcoords="offset points",
                ha="center", va="bottom" if above else "top", fontsize=8)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(float32_sizes, [f"{n:,}" for n in float32_sizes])
ax.minorticks_off()
ax.margins(y=0.12)
ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
ax.set_xlabel("matrix size n (n × n by n × n)")
ax.set_ylabel("throughput (GFLOP/s)")
ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3)

# %% [markdown]
# On this run float32 peaked at {{ best_float32:,.1f }} GFLOP/s and the 16-bit
# types at {{ best_half:,.1f }} GFLOP/s. Small products are slow for the same
# reason small element-wise operations were: fixed costs per call dominate until
# $n$ is large enough to keep the hardware busy. The 16-bit curves say more
# about the machine than about the types. MLX's Linux CPU build does not hand
# float16 and bfloat16 products to BLAS; it falls back to a generic loop, which
# is why the figure stops them at $n =$ {{ half_sizes[-1] }}. On a Mac the GPU
# computes 16-bit products natively and they move half the bytes; run the
# chapter there to see how much that buys. Which dtype to train in is a
# question for your machine, answered by measuring it.
#
# This chapter ran on the machine of @tbl-build-machine, in the preface; at
# the largest size it measured, n = {{ float32_sizes[-1] }}, float32 ran at
# {{ throughput['float32'][-1]:,.1f }} GFLOP/s.

# %%
#| echo: false
machine = describe_machine()

# %% [markdown]
# One machine, yet this chapter has already printed several throughputs for
# float32: {{ right_gflops:,.0f }} GFLOP/s for one product of size {{ n }} in
# the section on lazy evaluation, {{ gflops:,.0f }} for the median of five a
# few seconds later, and {{ best_float32:,.0f }} at the peak of @fig-matmul.
# Three things move the number. The size, as @fig-matmul shows. The threads:
# OpenBLAS, the BLAS of this Linux build, splits a large product across the
# cores it finds ({{ machine["CPU cores"] }} here), so one busy core holds up
# the whole product. And the load: the machine that built this book is shared
# with other jobs, and a core that another process is using is not working on
# your product. Measure the same product several times in a row:

# %%
repeat_size = pick(smoke=256, book=1024)
repeated = [matmul_gflops(repeat_size) for _ in range(pick(smoke=3, book=9))]
print(f"n = {repeat_size}, {len(repeated)} times: {min(repeated):,.0f} to "
      f"{max(repeated):,.0f} GFLOP/s")

# %% [markdown]
# Within seconds the same call ranged from {{ min(repeated):,.0f }} to
# {{ max(repeated):,.0f }} GFLOP/s, and a measurement in another chapter, made
# minutes later while something else runs, can land further away. A
# throughput is a measurement with conditions, not a constant of the machine,
# so when a later chapter relies on one, it measures it there and says at which
# size and dtype.

# %% [markdown]
# ## MLX, PyTorch and NumPy side by side
#
# Much LLM code you will read is written in PyTorch, and much numerical code in
# NumPy. @tbl-numpy-mlx-torch maps the calls this book uses. PyTorch is not
# installed where this book is built, so its column comes from PyTorch's
# documentation;
# the MLX and NumPy columns are checked by the cell after the table.
#
# | task | NumPy | MLX | PyTorch |
# |---|---|---|---|
# | create | `np.array([1, 2])` | `mx.array([1, 2])` | `torch.tensor([1, 2])` |
# | random | `rng.normal(size=n)` | `mx.random.normal([n])` | `torch.randn(n)` |
# | default float | float64 | float32 | float32 |
# | cast | `x.astype(np.int32)` | `x.astype(mx.int32)` | `x.to(torch.int32)` |
# | matmul | `a @ b` | `a @ b` | `a @ b` |
# | reshape | `x.reshape(2, -1)` | `x.reshape(2, -1)` | `x.reshape(2, -1)` |
# | permute axes | `x.transpose(2, 0, 1)` | the same | `x.permute(2, 0, 1)` |
# | swap axes | `x.swapaxes(0, 1)` | `x.swapaxes(0, 1)` | `x.transpose(0, 1)` |
# | indexing | `x[:, 0]`, `x[idx]` | `x[:, 0]`, `x[idx]` | `x[:, 0]`, `x[idx]` |
# | update | `x[i] = v` writes | `x[i] = v`, no views | `x[i] = v` writes |
# | add at | `np.add.at(x, i, v)` | `x.at[i].add(v)` | `x.index_add_(0, i, v)` |
# | autograd | none | `mx.grad(f)(x)` | `loss.backward()`, `x.grad` |
# | modules | none | `nn.Module` | `torch.nn.Module` |
# | parameters | none | nested dict | iterator of tensors |
# | optimizer | none | `opt.update(model, grads)` | `opt.step()` |
# | device | CPU only | `stream=mx.gpu`, no copies | `x.to("mps")` copies |
# | evaluation | eager | lazy, `mx.eval(x)` | eager (asynchronous on GPU) |
# | compile | none | `mx.compile(f)` | `torch.compile(f)` |
# | to NumPy | itself | `np.array(x)` | `x.numpy()` |
#
# : The calls this book uses in NumPy, MLX and PyTorch {#tbl-numpy-mlx-torch}
#
# The row that trips people up is the update. In NumPy and PyTorch, `x[i] = v`
# writes into memory, and every view of that memory (a slice, a reshape) sees
# the change; PyTorch's autograd then has to check that no value it saved for
# the backward pass was overwritten. MLX has no views: a slice or a reshape is
# a new array with values of its own. `x[i] = v` does change the array object
# `x` itself, so every name bound to that object sees the new value (`b = a`
# copies nothing), but a slice taken earlier, or any result computed from the
# old `x`, keeps the old values: the assignment is one more operation in the
# graph, and `x` now stands for its result. That keeps lazy graphs and
# function transformations safe. And it is why keeping `initial` above was
# enough to restart training: the optimizer hands the model new arrays instead
# of assigning into the old ones. For repeated indices,
# `x[idx] += 1` adds once per distinct index, as in NumPy, while
# `x.at[idx].add(1)` accumulates every occurrence, like `np.add.at`.

# %%
matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
m = mx.array(matrix)
idx = np.array([0, 2, 2])
exps = np.exp(matrix - matrix.max(axis=-1, keepdims=True))
checks = {
    "matmul": (m @ m.T, matrix @ matrix.T),
    "reshape, transpose": (m.reshape(2, 3, 2).transpose(2, 0, 1),
                           matrix.reshape(2, 3, 2).transpose(2, 0, 1)),
    "swapaxes": (m.swapaxes(0, 1), matrix.swapaxes(0, 1)),
    "fancy indexing": (m[mx.array(idx), 1:], matrix[idx, 1:]),
    "softmax": (mx.softmax(m, axis=-1), exps / exps.sum(-1, keepdims=True)),
    "cumsum, argmax": (mx.cumsum(m, axis=0).argmax(axis=1),
                       np.cumsum(matrix, axis=0).argmax(axis=1)),
}
scattered = np.zeros(4, dtype=np.float32)
np.add.at(scattered, idx, 1.0)
checks["scatter-add"] = (mx.zeros(4).at[mx.array(idx)].add(1.0), scattered)
for name, (ours, theirs) in checks.items():
    print(f"{name:20} equal: {np.allclose(np.array(ours), theirs, rtol=1e-6)}")

# %%
#| echo: false
assert all(
    np.allclose(np.array(ours), theirs, rtol=1e-6)
    for ours, theirs in checks.values()
)

# %% [markdown]
# And the update semantics, checked against NumPy's views:

# %%
numbers = mx.arange(6)
alias = numbers  # a second name for the same array object
window = numbers[1:4]  # a copy: MLX has no views
doubled = numbers * 2  # computed from the values before the assignment
numbers[1] = 50
numpy_numbers = np.arange(6)
numpy_window = numpy_numbers[1:4]  # a view
numpy_numbers[1] = 50
counts = mx.zeros(4)
counts[mx.array(idx)] += 1  # idx is [0, 2, 2]
print(alias, window, doubled, numpy_window, counts, sep="\n")
assert alias.tolist()[1] == 50 and window.tolist() == [1, 2, 3]
assert doubled.tolist()[1] == 2 and numpy_window.tolist() == [50, 2, 3]
assert counts.tolist() == [1, 0, 1, 0]

# %% [markdown]
# The second name sees the 50, because the assignment changed the object both
# names stand for. The MLX slice still holds `[1, 2, 3]`, and `doubled`, which
# was not even evaluated before the assignment, doubles the old values; the
# NumPy view shows the 50. And `counts` got 1 at index 2, not 2: when indices
# repeat, use `.at[...].add`, as in the scatter-add check above.

# %% [markdown]
# ## Summary
#
# You now know the MLX this book uses:
#
# - arrays and dtypes, and what float16 and bfloat16 trade: bfloat16 keeps
#   float32's range with only 7 fraction bits, float16 keeps 10 fraction bits
#   and overflows at 65,504;
# - lazy evaluation: operations build a graph, `mx.eval` runs it, and any timing
#   or memory figure must evaluate inside the measured region;
# - devices on unified memory: operations, not arrays, are placed with
#   `stream=`;
# - `mx.grad` and `mx.value_and_grad`, checked against calculus and finite
#   differences;
# - `nn.Module` parameter trees, `tree_flatten`, freezing, and
#   `nn.value_and_grad`;
# - optimizers, and why the book turns on AdamW's bias correction, which MLX
#   leaves off by default;
# - `mx.compile`, which fuses operations and must be measured, not assumed, to
#   help;
# - memory counters, explicit random keys, why a throughput figure moves
#   between measurements, and how MLX maps to NumPy and PyTorch, including
#   `x[i] = v`, which changes `x` but no other array, since MLX has no views.
#
# The chapter exported `mlxllm.hardware`: `median_seconds` for timing MLX code
# honestly, `matmul_gflops` for the throughput of a matrix product, and
# `describe_machine` for the set-up you run on. `mlxllm doctor` prints them, and
# later chapters use `median_seconds` whenever they time something.

# %% [markdown]
# ## Exercises
#
# 1. ★ Adding in half precision. Starting from zero, add 0.01 one
#    thousand times in float32, float16 and bfloat16 (cast after every
#    addition). Which totals are far from 10, and why does bfloat16 stop
#    growing? What does this say about where a model trained in bfloat16
#    should keep its running sums?
# 2. ★ Second derivatives. Use `mx.grad(mx.grad(f))` to get $f''$ for
#    $f(x) = x^3 \sin x$, and check it against the analytic second derivative
#    at a few points.
# 3. ★★ Matrix times vector. Write `matvec_gflops(n)`, the throughput
#    of an $n \times n$ matrix times a vector ($2n^2$ FLOPs), using
#    `median_seconds`. Compare it with `matmul_gflops(n)` for a few sizes.
#    Explain the gap by counting bytes read per FLOP in each case. Which of
#    the two does generating text one token at a time resemble?
# 4. ★★ Learning rates with and without bias correction. Sweep the
#    learning rate of AdamW on this chapter's sine-fitting problem, with and
#    without bias correction, and plot the final loss against the learning
#    rate. By about what factor do the two best learning rates differ, and
#    how does that relate to @fig-adam-ratio?
# 5. ★★★ Adam from scratch. Write AdamW with bias correction
#    yourself, as a function that maps a parameter tree, a gradient tree and
#    a state tree to new ones with `mlx.utils.tree_map`. Train the MLP with
#    it and with `optim.AdamW(bias_correction=True)` from the same start, and
#    show that the parameters agree to float32 rounding after many steps.
