"""Selection rules, one file each, and their registry (`registry.py`, the only list of names)."""

from functional_ast.core.selection import Selection, Strategy, all_data  # noqa: F401
from functional_ast.strategies.registry import Context, Rule, build, get, names, option, register  # noqa: F401
from functional_ast.strategies.full import full  # noqa: F401  (the order of these imports is the list's order)
from functional_ast.strategies.random import random_subset  # noqa: F401
from functional_ast.strategies.sundew import default_gate, sundew  # noqa: F401
from functional_ast.strategies.stale import STALE_RULES, stale  # noqa: F401
from functional_ast.strategies.prioritized import prioritized  # noqa: F401
from functional_ast.strategies.sundew_remembered import sundew_remembered  # noqa: F401
from functional_ast.strategies.infobatch import infobatch  # noqa: F401
from functional_ast.strategies.rho_loss import rho_loss, with_reference  # noqa: F401
from functional_ast.strategies.proxy import proxy  # noqa: F401
