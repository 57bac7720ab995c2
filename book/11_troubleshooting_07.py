# %% [markdown]
# # Summary
#
# The four-row table this chapter began with comes back in
# @tbl-troubleshooting, one row per failure of the chapter, each with
# the measurement that showed it. Two rows
# were computed rather than trained: the narrow formats and the sampling
# temperature. Read it from the left when something looks wrong: the
# symptom column is what you see first.

# %%
#| echo: false
#| label: tbl-troubleshooting
#| tbl-cap: The troubleshooting table, extended. Each number comes from the chapter's runs of the baby model, 200-step laboratory runs except the no-causal-mask run (500 steps); the control reached the validation loss in the first row.
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.book import Table, artifact_path
from mlxllm.diagnose import read_run


runs = {name: read_run(folder) for name, folder in {
    "control": artifact_path("11_troubleshooting/runs/control"),
    "low-lr": artifact_path("11_troubleshooting_01/runs/low-lr"),
    "high-lr": artifact_path("11_troubleshooting_01/runs/high-lr"),
    "warmup": artifact_path("11_troubleshooting_01/runs/warmup"),
    "no-warmup": artifact_path("11_troubleshooting_01/runs/no-warmup"),
    "explode": artifact_path("11_troubleshooting_02/runs/explode"),
    "log-zero": artifact_path("11_troubleshooting_02/runs/log-zero"),
    "overfit": artifact_path("11_troubleshooting_03/small-text/no-dropout"),
    "unshifted": artifact_path("11_troubleshooting_04/runs/unshifted"),
    "unmasked": artifact_path("11_troubleshooting_04/runs/unmasked"),
    "padded": artifact_path("11_troubleshooting_04/runs/padded"),
    "zeros": artifact_path("11_troubleshooting_05/runs/zeros"),
    "large-init": artifact_path("11_troubleshooting_05/runs/large-init"),
}.items()}


def loss(name: str, at: int = -1) -> float:
    return runs[name].history["loss"][at]


def val(name: str) -> str:
    return f"val {runs[name].history['val_loss'][-1]:.2f}"


overfit = runs["overfit"].history["val_loss"]
rows = [
    ("(healthy)", "the control", val("control"), "—"),
    ("loss flat at ln V", "all-zero weights",
     f"loss {loss('zeros'):.3f} throughout", "random initial weights"),
    ("first loss far above ln V", "initial weights too large",
     f"first loss {loss('large-init', 0):.0f}", "normal(0, 0.02)"),
    ("loss falls slowly and levels off high", "learning rate too low",
     val("low-lr"), "raise it (range test)"),
    ("loss stalls early, high", "learning rate too high", val("high-lr"),
     "lower it (range test)"),
    ("spike in the first steps, then a plateau", "no warm-up",
     f"{val('no-warmup')}; with warm-up "
     f"{runs['warmup'].history['val_loss'][-1]:.2f}", "warm-up"),
    ("loss leaps to hundreds", "divergence",
     f"loss {max(runs['explode'].history['loss']):.0f}",
     "a lower learning rate"),
    ("loss inf or NaN", "log of zero (float16: computed)",
     runs["log-zero"].failure.split(",")[0], "logsumexp; float32 loss"),
    ("gibberish samples", "model too small or too short", "the samples",
     "train longer while the loss falls; then larger"),
    ("gibberish from a good model", "temperature too high",
     "temperature 2", "temperature below 1"),
    ("validation rises, training falls", "overfitting",
     f"val {min(overfit):.2f} → {overfit[-1]:.2f}",
     "more text; the best checkpoint"),
    ("training loss near zero", "targets not shifted",
     f"loss {loss('unshifted'):.3f}, {val('unshifted')}",
     "shift targets by one"),
    ("both losses too good; samples garbage", "no causal mask",
     val("unmasked"), "causal mask"),
    ("good curves, garbage samples", "vocabulary changed", "—",
     "save and check the tokenizer"),
    ("loss better than it should be", "padding counted in the loss",
     f"loss {loss('padded'):.2f}/token, {val('padded')}",
     "mask the padding"),
    ("training too slow", "time per step", "chapters 7 and 8",
     "profile; more machines"),
]
Table(rows, ["symptom", "cause", "measured", "fix"])

# %% [markdown]
# Three habits cover most of the table. Check the first loss against
# $\ln V$ before anything else. Compare every run with a control that
# differs in one setting only. And when the numbers are better than you
# expected, look harder than when they are worse.
#
# What you now own, in `mlxllm.diagnose`:
#
# - `record_failure` and `read_run`: a diverged run keeps its evidence,
#   and any run directory reads back as a `RunRecord`;
# - `Experiment` and `character_lab`: short runs that differ in one
#   setting, each in its own run directory;
# - `running_median` and `plot_runs`: the chapter's figures, for any
#   runs;
# - `learning_rate_range` and `suggest_learning_rate`: the range test;
# - `largest_activations`: where the numbers grow;
# - the checks, `diagnose` and `report`, and the command
#   `mlxllm diagnose RUN_DIR [--plot FILE]`, which the train command's
#   divergence message now points to.
#
# The last row of the table, a run that is too slow, has no experiment
# here because it is not a bug: chapter 7 measured where a step's time
# goes and chapter 8 what memory costs. A later chapter does what the
# row's fix says, and spreads the steps over more than one process.
