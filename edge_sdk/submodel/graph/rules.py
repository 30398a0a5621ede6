"""The rule registry: how each layer type and each operator ties channel spaces.

A rule describes one fx node: given the :class:`~edge_sdk.submodel.graph.analysis.Analyser`
(which holds the dimension spaces and helpers), the node, its arguments and its run-time
result, it ties the spaces of inputs, weights and output and returns the output's
description (one factor list per output dimension). Three tables, each with a default:

* ``call_module`` nodes dispatch on the module's class (first match along its MRO);
  ``register_module_rule(MyLayer)`` adds a rule for a user's layer, and the analysis then
  traces ``MyLayer`` as a leaf (its forward is not traced through);
* ``call_function`` nodes dispatch on the function object (``register_function_rule``);
* ``call_method`` nodes dispatch on the method name (``register_method_rule``).

The defaults keep every channel the node touches whole (and record it in
``Analysis.fallbacks``), which is always safe; a rule may raise :class:`Fallback` to the same
effect, or call :func:`default_module_rule` to decline a module it cannot describe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, TypeVar

import torch.fx as fx
from torch import nn

from edge_sdk.errors import EdgeSDKError, InvalidInputError

if TYPE_CHECKING:
    from edge_sdk.submodel.graph.analysis import Analyser

__all__ = [
    "Fallback",
    "ModuleRule",
    "OpRule",
    "register_module_rule",
    "register_function_rule",
    "register_method_rule",
    "module_rule_for",
    "function_rule_for",
    "method_rule_for",
    "default_module_rule",
    "default_op_rule",
    "rules_version",
]

ModuleRule = Callable[["Analyser", fx.Node, nn.Module, tuple, dict, Any], Any]
OpRule = Callable[["Analyser", fx.Node, tuple, dict, Any], Any]
R = TypeVar("R", bound=Callable[..., Any])

_MODULE_RULES: dict[type, ModuleRule] = {}
_FUNCTION_RULES: dict[Any, OpRule] = {}
_METHOD_RULES: dict[str, OpRule] = {}
_version = 0


class Fallback(EdgeSDKError):
    """Raised by a rule: keep every channel this node touches whole (the message says why).

    The analysis catches it; it never reaches the caller of ``plan``.
    """


def rules_version() -> int:
    """Bumped on every registration, so cached analyses made under older rules are not reused."""
    return _version


def _register(table: dict, keys: tuple[Hashable, ...], what: str, replace: bool) -> Callable[[R], R]:
    if not keys:
        raise InvalidInputError(f"register_{what}_rule needs at least one target")

    def deco(rule: R) -> R:
        global _version
        if not callable(rule):
            raise InvalidInputError(f"a {what} rule must be callable, got {type(rule).__name__}")
        taken = [k for k in keys if k in table and table[k] is not rule]
        if taken and not replace:
            names = ", ".join(getattr(k, "__qualname__", str(k)) for k in taken)
            raise InvalidInputError(f"a {what} rule for {names} is already registered; pass replace=True "
                                    f"to override it")
        for k in keys:
            table[k] = rule
        _version += 1
        return rule

    return deco


def register_module_rule(*module_types: type[nn.Module], replace: bool = False) -> Callable[[R], R]:
    """Decorator: ``rule(an, node, module, args, kwargs, result)`` describes these layer types.

    Subclasses inherit the rule unless they override ``forward`` (then they get the default).
    """
    for t in module_types:
        if not (isinstance(t, type) and issubclass(t, nn.Module)):
            raise InvalidInputError(f"register_module_rule takes torch.nn.Module subclasses, got {t!r}")
    return _register(_MODULE_RULES, module_types, "module", replace)


def register_function_rule(*functions: Callable[..., Any], replace: bool = False) -> Callable[[R], R]:
    """Decorator: ``rule(an, node, args, kwargs, result)`` describes calls of these functions."""
    for f in functions:
        if not callable(f):
            raise InvalidInputError(f"register_function_rule takes callables, got {f!r}")
    return _register(_FUNCTION_RULES, functions, "function", replace)


def register_method_rule(*names: str, replace: bool = False) -> Callable[[R], R]:
    """Decorator: ``rule(an, node, args, kwargs, result)`` describes ``tensor.<name>(...)`` calls."""
    for name in names:
        if not isinstance(name, str) or not name:
            raise InvalidInputError(f"register_method_rule takes method names, got {name!r}")
    return _register(_METHOD_RULES, names, "method", replace)


def _registered_module_rule(cls: type) -> ModuleRule | None:
    for base in cls.__mro__:
        rule = _MODULE_RULES.get(base)
        if rule is not None:
            # a rule describes base.forward: a subclass that rewrites forward is not covered
            return rule if base is cls or getattr(cls, "forward", None) is getattr(base, "forward", None) else None
    return None


def has_module_rule(cls: type) -> bool:
    """True when a registered (non-default) rule covers modules of class ``cls``."""
    return _registered_module_rule(cls) is not None


def module_rule_for(module: nn.Module) -> ModuleRule:
    return _registered_module_rule(type(module)) or default_module_rule


def function_rule_for(target: Any) -> OpRule:
    try:
        rule = _FUNCTION_RULES.get(target)
    except TypeError:  # an unhashable call target
        rule = None
    return rule or default_op_rule


def method_rule_for(name: str) -> OpRule:
    return _METHOD_RULES.get(name) or default_op_rule


def default_module_rule(an: Analyser, n: fx.Node, mod: nn.Module, args: tuple, kwargs: dict, result: Any) -> Any:
    """Unknown layer: keep its parameters and every channel it touches whole."""
    for name, _ in mod.named_parameters():
        an.fix_desc(an.param(f"{n.target}.{name}"))
    for name, _ in mod.named_buffers():
        an.fix_desc(an.param(f"{n.target}.{name}"))
    raise Fallback(f"module type {type(mod).__name__}")


def default_op_rule(an: Analyser, n: fx.Node, args: tuple, kwargs: dict, result: Any) -> Any:
    """Unknown operator: harmless on non-tensors, a fallback when it touches a tensor."""
    tensor_in = any(an.has_tensor(a) for a in list(args) + list(kwargs.values()))
    if not tensor_in and not an.has_tensor_value(result):
        return None
    if not tensor_in:
        return an.fresh_like(result)
    raise Fallback("operator not known to the analysis")
