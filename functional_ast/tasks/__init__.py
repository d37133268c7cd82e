"""Tasks on the seam of `core.task.Task`: image classification first."""

from functional_ast.tasks.images import image_classification  # noqa: F401
