"""`gpt`: a small causal transformer over byte tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _CausalAttention(nn.Module):
    """Multi-head causal self-attention over ``[B, T, width]`` (``scaled_dot_product_attention(is_causal=True)``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads != 0:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))


class _CausalBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))`` (GELU MLP of 4 x width)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = _CausalAttention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _GPT(nn.Module):
    """Token + learned position embeddings, pre-LN causal blocks, final LN, an untied linear head."""

    def __init__(self, vocab: int, context: int, depth: int, width: int, heads: int) -> None:
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab, width)
        self.pos_embed = nn.Parameter(torch.zeros(context, width))
        self.blocks = nn.Sequential(*[_CausalBlock(width, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)  # registered last: `losses.last_layer_keys` finds it
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.head.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[-1] > self.context:
            raise ValueError(f"gpt was built for {self.context} tokens, got {tokens.shape[-1]}")
        x = self.embed(tokens) + self.pos_embed[: tokens.shape[-1]]
        return self.head(self.norm(self.blocks(x)))


def gpt(vocab: int = 256, context: int = 128, depth: int = 2, width: int = 64, heads: int = 4) -> nn.Module:
    """A small causal transformer: int64 tokens ``[B, T]`` (T <= context) -> logits ``[B, T, vocab]``.

    Learned position embeddings, ``depth`` pre-LN blocks of ``heads``-head causal attention
    (``scaled_dot_product_attention(is_causal=True)``) and a GELU MLP, a final LayerNorm and an untied head (its
    own weight: the head is then the last layer, whose per-sample gradient norm a "grad_norm" significance uses).
    No dropout and no BatchNorm, so it runs under ``functional_call``, ``vmap`` and ``torch.compile`` as is.
    """
    return _GPT(vocab, context, depth, width, heads)
