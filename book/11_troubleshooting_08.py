# %% [markdown]
# # Exercises
#
# The first exercise is a run with one bug planted in it, trained like
# every laboratory run of this chapter. The code that planted it is not
# printed (it is in the chapter's notebook, and in the solution). This
# is what the run recorded, and what `mlxllm diagnose` says about it:

# %%
#| echo: false
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx

from mlxllm.book import artifact_path, pick
from mlxllm.cli import load_model, main
from mlxllm.data import BatchSampler
from mlxllm.diagnose import character_lab
from mlxllm.generate import generate_tokens

lab = character_lab(artifact_path("11_troubleshooting_08/runs"),
                    steps=pick(smoke=30, book=200),
                    val_chars=pick(smoke=2048, book=16384),
                    token_cache=artifact_path("11_troubleshooting/tokens"))


class SkippingSampler(BatchSampler):
    """The planted bug: each target is two tokens ahead, not one."""

    def sample(self) -> tuple[mx.array, mx.array]:
        starts = self.rng.integers(0, len(self.tokens) - self.context - 1,
                                   self.batch_size)
        windows = mx.array(self.tokens[starts[:, None] + self.offsets])
        ahead = mx.array(self.tokens[starts[:, None] + self.offsets + 1])
        return windows[:, :-1], ahead[:, 1:]


lab.run("mystery", sampler_class=SkippingSampler)
mystery = artifact_path("11_troubleshooting_08/runs/mystery")
main(["diagnose", str(mystery)])
model, tokenizer = load_model(mystery)
prompt = tokenizer.encode("ROMEO:\n")
print("\nsample: " + repr(tokenizer.decode(prompt + list(generate_tokens(
    model, prompt, pick(smoke=40, book=100), temperature=0.8, seed=0)))))

# %% [markdown]
# 1. ★★ Find the bug in the run above from what it recorded: the report,
#    its curves (`mlxllm diagnose --plot`, or `plot_runs`), its sample,
#    and whatever else you measure with the model. Is the report right?
#    Then write a check that would have caught it.
# 2. ★ Train the baby model with `mlxllm train` at a peak learning rate
#    of 0.05 and no warm-up, for 300 steps, and run `mlxllm diagnose` on
#    the run directory. Which of this chapter's failures does it show?
# 3. ★ Repeat the range test of "Finding a learning rate" with three
#    other seeds. How far apart are the suggestions? Compare the spread
#    with the learning rates of @tbl-learning-rates.
# 4. ★★ Decay every parameter: train the laboratory with MLX's plain
#    `optim.AdamW`, which decays the norms' gains as well as the
#    matrices, at a weight decay of 1, beside `MatrixAdamW` at the same
#    setting. What happens to the gains, and to the loss?
# 5. ★★ A plateau at the unigram loss is the shape of several failures
#    in this chapter (no warm-up, a learning rate far too high). Add a
#    check to `diagnose` that computes the unigram loss of the training
#    text and reports a run whose loss sits near it for a quarter of the
#    run. Which of the chapter's runs does it flag?
# 6. ★★★ Train the laboratory in bfloat16 (chapter 8) with the loss
#    also computed in bfloat16, and find the first step where the run
#    differs from the float32 run by more than the step-to-step noise.
#    Which operation is responsible?
