"""Data: image folders, archives and CIFAR-10 decoded once into a uint8 memmap cache; batches gathered by index."""

from functional_ast.data.images import *  # noqa: F401,F403  (the module's public names: see images.__all__)
