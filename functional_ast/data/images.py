"""Image-classification data: load once, decode to uint8, cache as a tensordict memmap, and feed normalised
batches with vectorised augmentation. The public names of the modules below, in one place (see README)."""

from functional_ast.data.batches import augment, batch_at, iterate_batches, num_batches
from functional_ast.data.cifar import CIFAR_DIR, CIFAR_META, CIFAR_TEST, CIFAR_TRAIN
from functional_ast.data.decode import IMAGE_EXTENSIONS
from functional_ast.data.errors import DataError
from functional_ast.data.folders import load_image_folder
from functional_ast.data.formats import ARCHIVE_SUFFIXES
from functional_ast.data.labelled import LabelledImages, from_tensors
from functional_ast.data.load import load_dataset
from functional_ast.data.placement import DATA_IN_MEMORY, MEMORY_FRACTION, is_mapped, placed
from functional_ast.data.seeds import epoch_generator
from functional_ast.data.splits import Sources
from functional_ast.data.stats import channel_stats, describe
from functional_ast.data.subsets import balanced_subset, with_label_noise

__all__ = [
    "ARCHIVE_SUFFIXES", "CIFAR_DIR", "CIFAR_META", "CIFAR_TEST", "CIFAR_TRAIN", "DATA_IN_MEMORY", "IMAGE_EXTENSIONS",
    "MEMORY_FRACTION", "DataError", "LabelledImages", "Sources", "augment", "balanced_subset", "batch_at",
    "channel_stats", "describe", "epoch_generator", "from_tensors", "is_mapped", "iterate_batches", "load_dataset",
    "load_image_folder", "num_batches", "placed", "with_label_noise",
]
