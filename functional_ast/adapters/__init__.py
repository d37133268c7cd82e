"""Selection inside the training loops people already have: a `Selector` for a loop of your own (indices and your
forward's per-sample losses in, what to train and its weighted loss out), a `Sampler` for any DataLoader (selects
from remembered scores before the forward), `lightning.SelectionCallback` (imports lightning) and `compare`, full
data and a random subset against a rule at the same budget over seeds. Every one calls the rule's own functions as
`fa.fit` does (`adapters.state`)."""

from functional_ast.adapters.compare import Arm, Comparison, compare
from functional_ast.adapters.loop import Choice, Selector
from functional_ast.adapters.sampler import Sampler
from functional_ast.adapters.state import costs_of

__all__ = ["Arm", "Choice", "Comparison", "Sampler", "Selector", "compare", "costs_of"]
