"""DataError, the one exception of a user-facing data problem, and the one-line reason for its message."""

from __future__ import annotations

import re


class DataError(Exception):
    """A user-facing data problem; str(e) is one clear message naming the problem and the fix."""


def one_line(e: BaseException) -> str:
    """One line for an error message: the exception's reason without C++ source locations."""
    text = str(getattr(e, "reason", None) or e).strip()
    text = re.sub(r"^\w+, \S+:\d+, ", "", text.splitlines()[-1] if text else type(e).__name__)
    return text[:200]
