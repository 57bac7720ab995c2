# %% [markdown]
# # What scale buys
#
# A second Mac buys compute. Before spending it, ask what compute buys:
# a bigger model, more tokens, or neither. Kaplan et al. (2020) found
# that a language model's loss falls as a power of its size and of its
# training tokens over many orders of magnitude; Hoffmann et al. (2022)
# added a floor, the loss no model reaches, and fitted the form
#
# $$L(N, D) = E + \frac{A}{N^{\alpha}} + \frac{B}{D^{\beta}},$$ {#eq-scaling}
#
# with $N$ the parameters, $D$ the training tokens, and $E$ the loss no
# model reaches. This section measures a small grid of the book's own
# runs, fits @eq-scaling to it, tests the fit on runs it did not see,
# and asks it the questions of this chapter: what would the full preset
# reach, and where should an extra hour go?
#
# The grid is chapter 7's baby recipe on the character-level text (its
# layers, heads, positions and batch), at widths
# {{ spoken(widths) }} and run lengths of {{ spoken(lengths) }} steps,
# each run with its own warm-up and cosine schedule, scored once at its
# end on the whole validation split.

# %%
#| echo: false
#| default_exp distributed
import dataclasses
import itertools

import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import matplotlib.pyplot as plt
import numpy as np

from mlxllm.book import Table, artifact_path, pick
from mlxllm.data import load_corpus, split_train_val
from mlxllm.diagnose import character_lab, read_run
from mlxllm.model import GPTConfig, count_parameters, train_flops_per_token
from mlxllm.train import preset

# %%
#| echo: false
def spoken(values: list[int]) -> str:
    """[32, 64, 128] as '32, 64 and 128'."""
    return ", ".join(map(str, values[:-1])) + f" and {values[-1]}"


# %%
widths = pick(smoke=[16, 32], book=[32, 64, 128])
lengths = pick(smoke=[10, 20], book=[150, 300, 600])
lab = character_lab(artifact_path("12_distributed_04/runs"), steps=100,
                    val_chars=len(split_train_val(load_corpus())[1]),
                    token_cache=artifact_path("12_distributed_04/tokens"))
window_tokens = lab.base.batch_size * lab.model_config.context
grid = []
for width, steps in itertools.product(widths, lengths):
    config = GPTConfig.baby(lab.tokenizer.vocab_size, n_embd=width)
    sized = dataclasses.replace(lab, model_config=config)
    trainer = sized.run(f"w{width}-s{steps}", steps=steps,
                        warmup_steps=steps // 10, eval_every=steps,
                        checkpoint_every=steps)
    grid.append((count_parameters(config), steps * window_tokens,
                 trainer.history["val_loss"][-1], width, steps))
params, tokens, losses = (np.array(column, dtype=np.float64)
                          for column in list(zip(*grid))[:3])

# %% [markdown]
# For fixed exponents $\alpha$ and $\beta$, @eq-scaling is linear in
# $E$, $A$ and $B$, so the fit is a grid over the two exponents with an
# ordinary least-squares solve at each point, keeping the pair with the
# smallest squared error. No optimiser, no starting guess to get wrong.

# %%
#| echo: false
#| export
import itertools

import numpy as np

# %%
#| export
def fit_scaling(params: np.ndarray, tokens: np.ndarray,
                losses: np.ndarray, exponents: np.ndarray
                ) -> tuple[float, float, float, float, float]:
    """E, A, alpha, B, beta of L = E + A/N^alpha + B/D^beta, least
    squares over a grid of exponents (linear in E, A, B at each)."""
    best = None
    for alpha, beta in itertools.product(exponents, exponents):
        design = np.stack([np.ones_like(params), params ** -alpha,
                           tokens ** -beta], axis=1)
        (floor, a, b), *_ = np.linalg.lstsq(design, losses, rcond=None)
        error = np.sum((design @ [floor, a, b] - losses) ** 2)
        if best is None or error < best[0]:
            best = (error, floor, a, alpha, b, beta)
    _, floor, a, alpha, b, beta = best
    return float(floor), float(a), float(alpha), float(b), float(beta)


def scaling_loss(fit: tuple[float, float, float, float, float],
                 params: float, tokens: float) -> float:
    """The loss a fitted scaling law predicts for N params, D tokens."""
    floor, a, alpha, b, beta = fit
    return floor + a * params ** -alpha + b * tokens ** -beta


# %%
fit = fit_scaling(params, tokens, losses, np.arange(0.05, 1.51, 0.01))
floor, a, alpha, b, beta = fit
residuals = losses - [scaling_loss(fit, n, d)
                      for n, d in zip(params, tokens)]
print(f"L = {floor:.2f} + {a:.3g}/N^{alpha:.2f} + {b:.3g}/D^{beta:.2f}")
print(f"largest residual {np.abs(residuals).max():.3f} nats/char "
      f"over {len(losses)} runs")
# %%
#| label: fig-scaling
#| fig-cap: Final validation loss of each run of the grid against its training tokens (dots, one colour per width, parameters in brackets), and the fitted law for each width (lines). The dotted line at the bottom is the fit's floor E.
fig, ax = plt.subplots(figsize=(6.2, 3.0))
span = np.geomspace(tokens.min() / 1.5, tokens.max() * 1.5, 50)
for index, width in enumerate(widths):
    mine = [row for row in grid if row[3] == width]
    n = mine[0][0]
    ax.semilogx([row[1] for row in mine], [row[2] for row in mine], "o",
                color=f"C{index}", label=f"n_embd {width} ({n / 1e3:.0f}k)")
    ax.semilogx(span, [scaling_loss(fit, n, d) for d in span],
                color=f"C{index}")
ax.axhline(floor, color="0.4", linestyle=":")
ax.set_xlabel("training tokens")
ax.set_ylabel("validation loss (nats/char)")
ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1))
fig.tight_layout()

# %% [markdown]
# ## Testing the fit on runs it did not see
#
# The fit misses the grid's own runs by up to
# {{ np.abs(residuals).max():.2f }} nats per character, and a fit
# through {{ len(losses) }} points with five free numbers can bend to
# fit them; what it is worth shows on runs outside the grid. Its
# exponents, $\alpha$ = {{ alpha:.2f }} and $\beta$ = {{ beta:.2f }},
# are not Hoffmann et al.'s (about 0.34 and 0.28 for their models,
# fitted over far wider ranges); nine short runs pin them down loosely. The book has
# two: chapter 7's baby run, {{ baby_steps / max(lengths):.1f }} times
# longer than the grid's longest run, and chapter 10's `small` model, wider again, with a
# longer context, more tokens, and dropout. And nanoGPT's own
# Shakespeare configuration, the full preset, which Karpathy (2022)
# reports at a validation loss of 1.47 after 5,000 steps on a GPU:
# {{ full_params / 1e6:.1f }} million parameters and
# {{ full_tokens / 1e6:.0f }} million training tokens, far outside the
# grid in both.

# %%
#| label: tbl-scaling-tests
#| tbl-cap: The fitted law's prediction for runs outside the grid, against what they measured. Chapter 7's and chapter 10's runs are this build's; the full preset's 1.47 is nanoGPT's published result (Karpathy, 2022), not run here.
baby_dir = artifact_path("07_training/baby-char/tokenizer.txt").parent
small_dir = artifact_path("10_evaluation_02/small/tokenizer.txt").parent
vocab = lab.tokenizer.vocab_size
checks = []
for name, folder in (("chapter 7's baby run", baby_dir),
                     ("chapter 10's small model", small_dir)):
    run = read_run(folder)
    config = GPTConfig(**run.model)
    steps = run.history["step"][-1]
    seen = steps * run.train["batch_size"] * config.context
    checks.append((name, count_parameters(config), seen,
                   run.history["val_loss"][-1]))
full_config, full_train = preset("full", vocab)
full_params = count_parameters(full_config)
full_tokens = full_train.steps * full_train.batch_size * full_config.context
checks.append(("full preset (nanoGPT)", full_params, full_tokens, 1.47))
baby_steps = read_run(baby_dir).history["step"][-1]
Table([[name, f"{n / 1e6:.2f} M", f"{d / 1e6:.1f} M",
        scaling_loss(fit, n, d), measured]
       for name, n, d, measured in checks],
      ["run", "parameters", "tokens", "predicted", "measured"])

# %%
#| echo: false
predicted = {name: scaling_loss(fit, n, d) for name, n, d, _ in checks}
measured = {name: value for name, _, _, value in checks}
epochs_full = full_tokens / len(lab.train_ids)

# %% [markdown]
# {{ scaling_verdict }}. Two things limit any such fit here. The grid
# spans a factor of {{ params.max() / params.min():.0f }} in parameters
# and {{ tokens.max() / tokens.min():.0f }} in tokens, and a power law
# fitted over one decade says little about the next two. And the text
# is small: the full preset's {{ full_tokens / 1e6:.0f }} million
# tokens are {{ epochs_full:.0f }} passes over the
# {{ len(lab.train_ids) / 1e6:.1f }} million training characters. The
# law of @eq-scaling was fitted on text seen once; repeated text is
# worth less with every pass (Muennighoff et al., 2023), and a model
# that large on text that small overfits without dropout, which is why
# the full preset has 0.2 of it.
#
# ## Where extra compute goes
#
# With those limits in mind, the fit can still answer this chapter's
# practical question inside the range it saw. A training step costs
# `train_flops_per_token` times its tokens, so a compute budget $C$
# buys $D = C / f(N)$ tokens of a model of $N$ parameters, and the fit
# says which $N$ makes the most of it. (FLOPs stand in for time only on
# hardware the model keeps busy; on this CPU the small widths do not,
# as the timings of the last section showed.) @fig-budget draws the predicted
# loss of every width from 16 to 256 at three budgets: the compute of
# the grid's longest run of the baby model, and 4 and 16 times that.

# %%
#| label: fig-budget
#| fig-cap: Predicted validation loss (from the fitted law) against the model's width when the compute is fixed, for three budgets in multiples of the grid's longest baby run; each curve's dot is its minimum, the width that budget is best spent on. The shaded band is the widths the grid trained; outside it the fit extrapolates. Predictions, not runs.
candidate_widths = np.arange(16, 257, 8)
budgets = (1, 4, 16)
baby_config = GPTConfig.baby(vocab)
base_flops = (train_flops_per_token(baby_config) * max(lengths)
              * window_tokens)
fig, ax = plt.subplots(figsize=(5.2, 3.0))
best_widths = {}
for index, budget in enumerate(budgets):
    predictions = []
    for width in candidate_widths:
        config = GPTConfig.baby(vocab, n_embd=int(width))
        affordable = budget * base_flops / train_flops_per_token(config)
        predictions.append(scaling_loss(fit, count_parameters(config),
                                        affordable))
    best_widths[budget] = int(candidate_widths[np.argmin(predictions)])
    ax.plot(candidate_widths, predictions, color=f"C{index}",
            label=f"{budget}x the compute")
    ax.plot(best_widths[budget], min(predictions), "o", color=f"C{index}")
ax.axvspan(min(widths), max(widths), color="0.9", zorder=0)
ax.set_xlabel("width n_embd (4 layers)")
ax.set_ylabel("predicted loss (nats/char)")
ax.legend(fontsize=7.5, loc="upper right")
fig.tight_layout()

# %%
#| echo: false
chinchilla_flops = 6 * 70e9 * 1.4e12  # 70 B parameters, 1.4 T tokens
chinchilla_ratio = chinchilla_flops / (train_flops_per_token(GPTConfig.baby(
    vocab, n_embd=max(widths))) * max(lengths) * window_tokens)

# %% [markdown]
# {{ budget_verdict }} The differences between neighbouring widths near
# each minimum are smaller than the fit's own error on the grid, so read
# the minima as regions, not points. The shape is the answer Hoffmann
# et al. (2022) gave for Chinchilla (70 billion parameters, 1.4
# trillion tokens), some {{ chinchilla_ratio / 1e9:,.0f }} billion
# times the compute of this grid's largest run: for a fixed budget the loss is lowest when parameters
# and tokens grow together, so a model can be too big for its tokens as
# well as too small, and the best model grows with the budget. For the
# reader with a second Mac the lesson is to size the model for the new
# budget, not to run the old model twice as fast.

# %%
#| echo: false
def describe_fit() -> tuple[str, str]:
    """The sentences the fit's numbers support."""
    gaps = {name: predicted[name] - measured[name] for name in measured}
    signs = {gap > 0 for gap in gaps.values()}
    listed = ", ".join(f"{gap:+.2f}" for gap in gaps.values())
    tested = (f"Predicted minus measured, the three runs give {listed} "
              "nats per character")
    if signs == {True}:
        tested += (": every prediction is too high, a bias rather than "
                   "scatter")
    tested += (f". The fitted floor, E = {floor:.2f}, says how little "
               "the extrapolation can be trusted: "
               + ("it lies below nanoGPT's 1.47, so the law has the full "
                  "model almost at a loss no model can beat"
                  if floor < 1.47 else
                  "it lies above nanoGPT's 1.47, a loss the law says no "
                  "model reaches"))
    baby_width = GPTConfig.baby(vocab).n_embd
    relation = ("narrower than" if best_widths[1] < baby_width else
                "wider than" if best_widths[1] > baby_width else "the same as")
    budget = (f"The fit puts the best width for the compute of the grid's "
              f"longest baby run at {best_widths[1]}, {relation} the "
              f"baby's {baby_width}, and for 16 times that compute at "
              f"{best_widths[16]}.")
    return tested, budget


scaling_verdict, budget_verdict = describe_fit()
