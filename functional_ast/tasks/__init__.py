"""Tasks on the seam of `core.task.Task`: image classification and byte-level language modelling."""

from functional_ast.tasks.images import image_classification  # noqa: F401
from functional_ast.tasks.text import language_modelling  # noqa: F401
