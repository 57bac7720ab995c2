# %% [markdown]
# # Scoring any checkpoint: `mlxllm eval`
#
# Everything this chapter measured once, for one model, the library now
# does for any checkpoint and any text. `mlxllm eval` loads a run
# directory (or one of its `step-*` checkpoints), scores the text in
# whole windows of the model's context, and prints the loss in nats and
# bits per character with the bootstrap's 95% interval, the perplexity
# per token, and beside them the baselines of this chapter, fitted on
# the training split and scored on the same text. Without `--text` it
# scores the validation split; `--max-order 0` skips the baselines. Here
# it is on the book's model, as you would type it in a terminal:

# %%
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)

from mlxllm.book import artifact_path, pick
from mlxllm.cli import main
from mlxllm.data import load_corpus

small_dir = artifact_path("10_evaluation_02/small/tokenizer.txt").parent
excerpt = artifact_path("10_evaluation_06/excerpt.txt")  # the smoke test's
excerpt.write_text(load_corpus()[-4096:])
status = main(["eval", "--checkpoint", str(small_dir)]
              + pick(smoke=["--text", str(excerpt)], book=[]))
assert status == 0

# %% [markdown]
# The command is `mlxllm eval --checkpoint runs/small` for a run you
# trained with `mlxllm train --preset small`. Its numbers are the ones
# this chapter computed step by step: `score_text` for the loss and the
# interval, `baselines` for the table. A text the model cannot read is a
# one-line error rather than a traceback: a character model meets a
# character it never saw in training (a BPE model reads any text), or a
# file shorter than one window of the model's context.

# %%
modern = artifact_path("10_evaluation_06/modern.txt")
modern.write_text("Wherefore art thou, Romeo? Café au lait. " * 10)
status = main(["eval", "--checkpoint", str(small_dir), "--text", str(modern)])
assert status == 2
