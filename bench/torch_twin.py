"""A PyTorch twin of mlxllm.model.GPT, for bench/train.py's speed comparison.

Same shapes and the same arithmetic as the MLX model: learned token and position
embeddings, pre-norm blocks (LayerNorm with weight and bias, attention with four
bias-free projections and an explicit causal softmax, a bias-free feed-forward with
ReLU, exact GELU or SwiGLU), a final LayerNorm and the token embedding reused as the
output head; trained with AdamW (decay on matrices only, PyTorch's bias correction)
and gradient clipping at 1.0, like `mlxllm.train.make_step`. `fused_attention=True`
uses `F.scaled_dot_product_attention` instead, as nanoGPT does. PyTorch is an
optional dependency of the benchmarks only:

    .venv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mlxllm.model import GPTConfig


class Attention(nn.Module):
    def __init__(self, config: GPTConfig, fused: bool) -> None:
        super().__init__()
        d = config.n_embd
        self.heads, self.fused = config.n_head, fused
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        mask = torch.ones(config.context, config.context, dtype=torch.bool).tril()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dims = x.shape
        q, k, v = (proj(x).view(batch, length, self.heads, -1).transpose(1, 2)
                   for proj in (self.q, self.k, self.v))
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q * (1 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
            scores = scores.masked_fill(~self.mask[:length, :length],
                                        torch.finfo(scores.dtype).min)
            out = scores.softmax(dim=-1) @ v
        return self.o(out.transpose(1, 2).reshape(batch, length, dims))


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        d, h = config.n_embd, config.hidden
        self.activation = config.activation
        self.up = nn.Linear(d, h, bias=False)
        self.gate = nn.Linear(d, h, bias=False) if self.activation == "swiglu" else None
        self.down = nn.Linear(h, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        if self.activation == "relu":
            hidden = F.relu(up)
        elif self.activation == "gelu":
            hidden = F.gelu(up)
        else:
            hidden = F.silu(self.gate(x)) * up
        return self.down(hidden)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, fused: bool) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(config.n_embd), nn.LayerNorm(config.n_embd)
        self.attention = Attention(config, fused)
        self.feed_forward = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.feed_forward(self.norm2(x))


class TorchGPT(nn.Module):
    def __init__(self, config: GPTConfig, fused_attention: bool = False) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        self.position_embedding = nn.Embedding(config.context, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, fused_attention)
                                    for _ in range(config.n_layer))
        self.norm = nn.LayerNorm(config.n_embd)
        for name, parameter in self.named_parameters():
            if parameter.ndim == 2:
                std = 0.02 / math.sqrt(2 * config.n_layer) if name.endswith(
                    ("o.weight", "down.weight")) else 0.02
                nn.init.normal_(parameter, std=std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.token_embedding(ids) + self.position_embedding(positions)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.token_embedding.weight.T


def make_torch_step(config: GPTConfig, fused_attention: bool = False,
                    compile: bool = False, learning_rate: float = 1e-3,
                    weight_decay: float = 0.1, grad_clip: float = 1.0,
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """One training step of a fresh TorchGPT: forward, backward, clip, AdamW."""
    model = TorchGPT(config, fused_attention)
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    others = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices, "weight_decay": weight_decay},
         {"params": others, "weight_decay": 0.0}],
        lr=learning_rate, betas=(0.9, 0.99), foreach=True)
    forward = torch.compile(model) if compile else model

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = forward(inputs)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                               targets.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return step
