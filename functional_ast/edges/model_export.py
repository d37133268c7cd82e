"""Where the logged models' wrappers and descriptions lived before each task held its own: the image classifier's
(`tasks.images`: `RawImageClassifier`, `description`) and the language model's (`tasks.text`: `text_description`).
A model logged with the "pickle" format names this module's class: it stays importable here."""

from functional_ast.tasks.images import RawImageClassifier, description  # noqa: F401
from functional_ast.tasks.text import text_description  # noqa: F401
