"""Image classifiers used as stateless "shapes" for ``torch.func.functional_call``.

Every constructor returns an ``nn.Module`` mapping a float tensor of images
``[B, C, H, W]`` to logits ``[B, num_classes]``.  The modules hold freshly
initialised parameters and buffers; the training code is expected to copy them
out (``dict(model.named_parameters())``, ``dict(model.named_buffers())``) and
call the module only through ``torch.func.functional_call``.

Design constraints shared by all models:

* no in-place operations on activations (no ``inplace=True``), so that
  ``torch.func.vmap(torch.func.grad(...))`` can trace them;
* in eval mode each sample is processed independently (BatchNorm uses its
  running statistics), so per-sample gradients via ``vmap(grad(f))`` over a
  batch equal a loop over single samples;
* ``cnn`` and ``resnet`` end with global pooling, so any image size >= 8 works;
  ``vit`` is built for one fixed ``image_size``.

Caveats for callers using ``torch.func``:

* in train mode BatchNorm updates ``running_mean``/``running_var``/
  ``num_batches_tracked`` in place, so under ``torch.func.grad`` the buffers
  must be an explicit argument of the transformed function (not captured), and
  the caller should pass clones if it wants the old values kept; train-mode
  BatchNorm cannot be used under ``vmap`` (samples are not independent there);
* under ``vmap`` PyTorch has no batching rule for the CPU flash-attention kernel
  behind ``scaled_dot_product_attention`` and warns once that it falls back to
  a per-sample loop; the result is correct and, for these sizes, not slower.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["cnn", "resnet", "vit", "gpt", "MODELS", "build_model"]


# --------------------------------------------------------------------------- #
# CNN: small, fast, airbench-flavoured
# --------------------------------------------------------------------------- #


def _conv_bn_act(c_in: int, c_out: int) -> list[nn.Module]:
    """3x3 same-padding convolution (no bias), BatchNorm, GELU."""
    return [
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.GELU(),
    ]


class _GlobalMaxPool(nn.Module):
    """``[B, C, H, W] -> [B, C]`` by taking the maximum over the spatial dims."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(-2, -1))


def cnn(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    """Small fast CNN: the default model for CPU training.

    Layout (airbench-flavoured): three stages with ``width, 2*width, 4*width``
    channels, each ``conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU``
    (3x3 bias-free convs), then global max pooling and a linear head giving
    ``[B, num_classes]``.  There is no separate full-resolution stem: on CPU a
    conv at full resolution costs as much as the rest of the network.

    Accepts any ``[B, in_channels, H, W]`` with ``H, W >= 8``.  No dropout and
    no in-place ops; in eval mode samples are independent.
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for c_out in (width, 2 * width, 4 * width):
        layers += [
            nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(c_out),
            nn.GELU(),
            *_conv_bn_act(c_out, c_out),
        ]
        c_in = c_out
    layers += [_GlobalMaxPool(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- #
# ResNet: BatchNorm residual network for small images
# --------------------------------------------------------------------------- #


class _BasicBlock(nn.Module):
    """Post-activation basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

    The shortcut is the identity when shape is unchanged, else a strided 1x1
    conv followed by BatchNorm.
    """

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        if stride != 1 or c_in != c_out:
            self.shortcut: nn.Module = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                nn.BatchNorm2d(c_out),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _ResNet(nn.Module):
    """Stem conv-BN-ReLU, three stages of basic blocks, global average pool, linear head."""

    def __init__(self, num_classes: int, in_channels: int, width: int, blocks_per_stage: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(blocks_per_stage):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(_BasicBlock(c_in, c_out, stride))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(-2, -1)))


def resnet(
    num_classes: int = 10, in_channels: int = 3, width: int = 16, blocks_per_stage: int = 3
) -> nn.Module:
    """CIFAR-style BatchNorm ResNet: stronger but about 3x slower than :func:`cnn`.

    A 3x3 conv-BN-ReLU stem with ``width`` channels, then three stages of
    ``blocks_per_stage`` basic residual blocks with ``width, 2*width, 4*width``
    channels (stages 2 and 3 downsample by 2), global average pooling and a
    linear head giving ``[B, num_classes]``.  The defaults are ResNet-20 of He
    et al. (2016) (``6 * blocks_per_stage + 2`` weighted layers).

    Accepts any ``[B, in_channels, H, W]`` with ``H, W >= 8``.  No dropout and
    no in-place ops; in eval mode samples are independent.
    """
    return _ResNet(num_classes, in_channels, width, blocks_per_stage)


# --------------------------------------------------------------------------- #
# ViT: small Vision Transformer with class token
# --------------------------------------------------------------------------- #


class _Attention(nn.Module):
    """Multi-head self-attention over ``[B, N, dim]`` via ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, head_dim]
        p = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class _Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _ViT(nn.Module):
    """Patch embedding + class token + learned positions, pre-norm blocks, LN, head on class token."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size ({image_size}) must be divisible by patch_size ({patch_size})")
        self.image_size = image_size
        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[_Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}")
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, dim]
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.pos_drop(torch.cat([cls, tokens], dim=1) + self.pos_embed)
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


def vit(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int = 4,
    dim: int = 128,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
) -> nn.Module:
    """Small Vision Transformer with a class token and learned position embedding.

    Non-overlapping ``patch_size`` patches are embedded to ``dim`` channels, a
    class token is prepended, learned positions are added, then ``depth``
    pre-norm blocks (multi-head attention via ``scaled_dot_product_attention``
    with ``heads`` heads, GELU MLP of width ``mlp_ratio * dim``), a final
    LayerNorm and a linear head on the class token give ``[B, num_classes]``.
    Class token and positions are initialised with trunc-normal std 0.02.

    Only ``[B, in_channels, image_size, image_size]`` inputs are accepted
    (``image_size`` must be divisible by ``patch_size``; otherwise ValueError).

    The defaults are a CPU-friendly shrink of the reference configuration
    (patch 4, dim 256, depth 6, 8 heads, MLP ratio 2, dropout 0.1).  ``dropout``
    defaults to 0.0 because dropout in train mode draws from torch's global RNG,
    so results would no longer be reproducible from explicit state alone; with
    ``dropout > 0`` the model is deterministic only in eval mode.
    """
    return _ViT(num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_ratio, dropout)


# --------------------------------------------------------------------------- #
# GPT: a small causal transformer over byte tokens
# --------------------------------------------------------------------------- #


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


# --------------------------------------------------------------------------- #
# Registry
# --------------------------------------------------------------------------- #

MODELS: dict[str, Callable[..., nn.Module]] = {"cnn": cnn, "resnet": resnet, "vit": vit}
"""Name -> constructor for every model in this module."""


def build_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """Build model ``name`` (a key of :data:`MODELS`) with its default widths.

    ``image_size`` is passed only to ``vit`` (``cnn``/``resnet`` are size
    agnostic).  Raises ``ValueError`` naming the valid choices if ``name`` is
    unknown.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid choices: {', '.join(sorted(MODELS))}")
    if name == "vit":
        return vit(num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    return MODELS[name](num_classes=num_classes, in_channels=in_channels)
