"""The honest savings benchmark: `python -m functional_ast savings` under its former name (same flags, same JSON).

    python -m benchmarks.savings --data PATH [--quick] [--seeds 0,1,2] [--budget-epochs 6,16]
                                 [--budget-kind time|flops] [--json savings.json]
    python -m benchmarks.savings --task lm [--data PATH] [--quick] ...

The question, its answers and its resume are the package's (`functional_ast.pays`, `functional_ast.cli.savings`).
"""

from __future__ import annotations

import sys

from functional_ast.cli.savings import EXPERIMENT  # noqa: F401
from functional_ast.cli.savings import main as _main
from functional_ast.pays.questions import (  # noqa: F401  (the two questions, where callers found them)
    ACCURACY,
    Metric,
    equal_accuracy,
    equal_time,
    metric_of,
    selective_lm,
    time_to_reach,
    unaffordable,
    verdict,
)


def main(argv: list[str] | None = None) -> int:
    return _main(argv, prog="python -m benchmarks.savings")


if __name__ == "__main__":
    sys.exit(main())
