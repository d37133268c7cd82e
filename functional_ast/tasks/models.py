"""A `--model` spec to a function building the network: a built-in of the task, or the user's
package.module:function called with the keyword arguments the task gives it (a one-line ConfigError when it cannot
be imported or called, or returns no nn.Module)."""

from __future__ import annotations

import importlib
import inspect
from typing import Callable

from torch import nn

from functional_ast.core.checks import ConfigError


def imported(spec: str, flag: str = "--model", what: str = "a function that returns an nn.Module",
             must_call: bool = True):
    """The object "package.module:attribute" names (callable unless not `must_call`); a one-line ConfigError naming
    `flag` and `what` it should be when it cannot be imported."""
    module_name, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr)
    except ImportError as error:
        raise ConfigError(f"{flag} {spec}: cannot import {module_name} ({error}); put its folder on PYTHONPATH "
                          "or run from it") from None
    except AttributeError:
        raise ConfigError(f"{flag} {spec}: {module_name} has no {attr!r}; name {what}") from None
    if must_call and not callable(found):
        raise ConfigError(f"{flag} {spec}: {attr} is not callable; name {what}")
    return found


def takes(fn: Callable, name: str) -> bool:
    """Whether `fn` accepts the keyword argument `name` (or any, through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def user_builder(spec: str, kwargs: dict, must_take: str, optional: dict | None = None) -> Callable[[], nn.Module]:
    """A function calling the user's `spec` with `kwargs` (and each of `optional` it takes); a one-line ConfigError
    when the call fails or returns no nn.Module."""
    fn = imported(spec)
    kwargs = dict(kwargs, **{k: v for k, v in (optional or {}).items() if takes(fn, k)})

    def build() -> nn.Module:
        try:
            model = fn(**kwargs)
        except TypeError as error:
            raise ConfigError(f"--model {spec}: calling it with {', '.join(kwargs)} failed ({error}); it must take "
                              f"{must_take} keyword arguments") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(f"--model {spec}: it returned {type(model).__name__}, not an nn.Module")
        return model

    return build


def model_label(spec: str) -> str:
    """A model spec's short name for run names: "cnn" -> "cnn", "my.nets:wide" -> "wide"."""
    return spec.rpartition(":")[2] or spec
