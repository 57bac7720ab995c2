# %% [markdown]
# # More than one machine
#
# The last row of the troubleshooting table says: training is too slow,
# so use data parallelism. This chapter does it properly. A reader who
# outgrows one MacBook does not need a home-made toy: MLX ships a
# distributed layer, `mx.distributed`, with several backends (a ring
# over ordinary TCP sockets, JACCL with remote direct memory access over
# Thunderbolt, MPI, and NCCL on CUDA machines; MLX documentation), and a
# launcher, `mlx.launch`, that starts one copy of a program per process
# and tells each who it is. You learn data parallelism from its algebra,
# write the averaging of a gradient by hand, compare it with MLX's
# `average_gradients`, and wire it into `mlxllm train`, so that
# `mlxllm train --processes 2` trains one model with two processes.
#
# Everything here runs for real while the book is built: two processes
# on this one machine, talking over the ring backend on localhost. That
# proves the code and the arithmetic. It cannot add compute, because
# the two processes share the same two cores; whatever speed they gain
# comes from time one process left idle, and the chapter measures how
# much. What several Macs would gain is computed from the FLOPs of a
# step at assumed rates and the links' cited speeds, and labelled as
# computed. The chapter ends with the other
# question an extra machine raises: what more compute buys at all, from
# a sweep of model sizes and token budgets with a power law fitted to
# it. On the map of chapter 1 this chapter sits beside the training
# loop: it changes where the loop runs, not what it computes.
#
# ## Why splitting the batch changes nothing
#
# Data parallelism gives each of $P$ processes a whole copy of the model
# and a slice of each batch. Every process computes the gradient of the
# loss on its own slice; the processes average their gradients; each
# applies the same averaged gradient with the same optimizer to the same
# weights, so the copies stay identical without ever sending a weight.
#
# Why is that the same training as one process with the whole batch?
# The loss of a batch of $B$ windows is the mean of the windows' losses,
# and if the batch is split into $P$ slices of $B/P$ windows, the mean
# of all $B$ is the mean of the $P$ slice means:
#
# $$L = \frac{1}{B}\sum_{i=1}^{B} \ell_i
#     = \frac{1}{P}\sum_{p=1}^{P} \frac{P}{B}\sum_{i \in S_p} \ell_i
#     = \frac{1}{P}\sum_{p=1}^{P} L_p .$$ {#eq-split-mean}
#
# A gradient is linear, $\nabla (a + b) = \nabla a + \nabla b$, so the
# same holds for it: the gradient of the whole batch is the average of
# the slices' gradients. Everything after the gradient (clipping, Adam,
# weight decay) is a function of that one averaged gradient and of the
# weights, the same on every process. The result is exact in algebra;
# in floating point, the sums are taken in a different order, so it
# agrees to rounding. The equation needs equal slices (unequal ones
# would need a weighted average), which is why the batch must divide
# evenly among the processes.
#
# Before any second process, check the algebra in one: the gradient of
# chapter 6's baby model on a batch of {{ split_batch }} windows,
# against the average of the gradients of its {{ split_parts }} slices.

# %%
#| default_exp distributed
import mlxllm  # noqa: F401  (before mlx.core: loads OpenBLAS on Linux)
import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from mlxllm.data import BatchSampler, cache_dir, encode_splits, load_corpus
from mlxllm.model import GPT, GPTConfig, language_model_loss
from mlxllm.tokenizer import CharTokenizer

# %%
text = load_corpus()
tokenizer = CharTokenizer.train(text)
train_ids, _ = encode_splits(tokenizer, text, cache_dir() / "tokens")
mx.random.seed(0)
model = GPT(GPTConfig.baby(tokenizer.vocab_size))
split_batch, split_parts = 12, 2
inputs, targets = BatchSampler(train_ids, split_batch,
                               model.config.context, seed=0).sample()
loss_and_grad = nn.value_and_grad(model, language_model_loss)

whole_loss, whole = loss_and_grad(model, inputs, targets)
sliced = [loss_and_grad(model, part_inputs, part_targets)
          for part_inputs, part_targets in zip(
              mx.split(inputs, split_parts), mx.split(targets, split_parts))]
mean_loss = sum(loss for loss, _ in sliced) / split_parts
mean_grad = tree_map(lambda *grads: sum(grads) / split_parts,
                     *[grads for _, grads in sliced])

differences = [mx.abs(a - b).max().item() for (_, a), (_, b)
               in zip(tree_flatten(whole), tree_flatten(mean_grad))]
largest = max(mx.abs(g).max().item() for _, g in tree_flatten(whole))
print(f"loss: whole batch {whole_loss.item():.6f}, "
      f"mean of slices {mean_loss.item():.6f}")
print(f"gradient: largest entry {largest:.3g}, "
      f"largest difference {max(differences):.2g}")

# %%
#| echo: false
split_difference = max(differences)
assert abs(whole_loss.item() - mean_loss.item()) < 1e-5
assert split_difference < 1e-5 * largest

# %% [markdown]
# The two gradients agree to {{ split_difference:.0e }}, about what
# float32 rounding leaves on entries as large as {{ largest:.2g }}. This
# is the whole idea; the rest of the chapter is plumbing that makes it
# happen across processes, and the measurements that say when it pays.
