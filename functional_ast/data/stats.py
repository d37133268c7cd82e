"""Summaries of a set: its sizes for tracking, a short stable fingerprint, and per-channel mean and std streamed
chunk by chunk."""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from functional_ast.data.labelled import LabelledImages, rows_per_chunk


def describe(ds: LabelledImages) -> dict:
    """Summary for tracking: {"num_samples": N, "num_classes": K, "image_shape": (C, H, W)}."""
    return {"num_samples": len(ds), "num_classes": len(ds.classes),
            "image_shape": tuple(int(s) for s in ds.data["image"].shape[1:])}


def channel_stats(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, std) of uint8 images [N,C,H,W] in [0,1] units, each float32 of shape [C]; streamed
    through one float64 chunk at a time (4096 small images, or 2**20 values), so mapped images are never held."""
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    total = torch.zeros(images.shape[1], dtype=torch.float64, device=images.device)
    squares = torch.zeros_like(total)
    for chunk in images.split(rows_per_chunk(images)):
        x = chunk.to(torch.float64, copy=True).div_(scale)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square_().sum(dim=(0, 2, 3))
    count = images.numel() / images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.float()


def dataset_digest(images: Tensor, labels: Tensor, samples: int = 1024) -> str:
    """Short stable fingerprint (12 hex digits) of a labelled set: sha256 over the shapes and dtypes, `samples`
    inputs evenly strided through it and every label; milliseconds even for 50,000 images."""
    h = hashlib.sha256(f"{tuple(images.shape)}|{images.dtype}|{tuple(labels.shape)}|{labels.dtype}".encode())
    n = images.shape[0] if images.dim() else 0
    if n:
        k = min(n, samples)
        index = torch.arange(k, device=images.device) * (n - 1) // max(k - 1, 1)
        h.update(_bytes(images[index]))
    h.update(_bytes(labels))
    return h.hexdigest()[:12]


def _bytes(tensor: Tensor) -> bytes:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
