"""Where a language model's generated sample lived before the task held it (`tasks.samples`)."""

from functional_ast.tasks.samples import decoded, generate, prompt_of, sample_text  # noqa: F401
