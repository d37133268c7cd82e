"""From names to the trainer's objects (kept for callers of these names; each task now holds its own):

    build = model_builder("cnn", data)          # or "package.module:function", your own nn.Module
    data = load_data("images/", device="cpu", limit_train=6000, seed=0)
    data = load_text("corpus/", context=128, glob="**/*.py", seed=0)   # text: a TextData (None: the stdlib)
    build = text_model_builder("gpt", context=128, gpt=(2, 64, 4))
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from functional_ast.data.loaders import load_images, load_text
from functional_ast.tasks import images, text
from functional_ast.tasks.models import model_label

__all__ = ["load_data", "load_images", "load_text", "model_builder", "model_label", "text_model_builder"]

load_data = load_images  # the image loader under its former name (`data.loaders.load_images`)
model_builder = images.image_model_builder  # (spec, data) -> a function building the image model


def text_model_builder(spec: str, context: int, gpt_shape: tuple[int, int, int] = (2, 64, 4)
                       ) -> Callable[[], nn.Module]:
    """The language model `spec` names (`tasks.text.text_model_builder`), for windows of `context` bytes."""
    return text.text_model_builder(spec, context=context, gpt=gpt_shape)
