"""Image classification: "image" float inputs, "label" targets, cross-entropy, accuracy; significance's input
statistic is each image's pixel standard deviation (the seed's "intensity"); training batches are augmented by a
random crop (4 pixels of zero padding) and a horizontal flip (`data.augment`)."""

from __future__ import annotations

from functional_ast.core.losses import smoothed_cross_entropy
from functional_ast.core.task import Task, classification
from functional_ast.data.images import augment


def image_classification(label_smoothing: float = 0.0) -> Task:
    """The image classification task the trainer uses by default; with `label_smoothing`, its per-sample loss
    (what training averages, rules rank and evaluation reports) is cross-entropy against smoothed labels."""
    return classification("image classification", input_key="image", target_key="label",
                          loss=smoothed_cross_entropy(label_smoothing))._replace(transform=augment)
