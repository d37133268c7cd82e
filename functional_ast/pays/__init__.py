"""Does selection pay on your task? `savings(...)` runs every rule against budget-matched full data and a random
subset over seeds and answers per budget (`SavingsReport`); `questions` holds the two answers as pure functions,
`regimes` the regime map's named settings, `rho1` Rho-1's runs beside a comparison."""

from functional_ast.pays.report import Answer, SavingsReport  # noqa: F401
from functional_ast.pays.run import savings  # noqa: F401
