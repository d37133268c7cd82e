"""The trainer: config, plan, budgets, the loop's bookkeeping, fit / compare and the callback contract."""
