"""Handler registries keyed by namespaced operation names (``"aten::linear"``).

A key is the operation's overload packet with its namespace: ``"aten::conv2d"`` for
``torch.ops.aten.conv2d``, ``"mylib::my_op"`` for a custom op registered with
``torch.library`` as ``mylib::my_op``. A bare name (``"linear"``) means an ATen op and is
stored as ``"aten::linear"``. Python callables in a graph are keyed by their module:
``operator.getitem`` is ``"operator::getitem"``; higher-order ops live under
``"higher_order::"``.

:data:`HANDLERS` is the default registry that :func:`handles` fills; every analysis walks
with its own copy (:func:`default_registry`), extended by the ``handlers=`` it was given, so
handlers passed to one analysis never reach the next.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from torch import fx

from netsculpt.errors import InputError

if TYPE_CHECKING:
    from netsculpt.graph.propagate import Propagator

__all__ = [
    "HANDLERS",
    "Handler",
    "Registry",
    "default_registry",
    "handles",
    "op_name",
    "qualify",
    "short_name",
    "supported_ops",
]

Handler = Callable[["Propagator", fx.Node], Any]
"""``(propagator, node) -> description``: the spaces of the node's output(s)."""

_PART = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def qualify(name: str) -> str:
    """The registry key for ``name``: ``"linear"`` -> ``"aten::linear"``; namespaced names stay.

    Raises :class:`InputError` for a name that is not ``op`` or ``namespace::op`` (for
    example an overload such as ``"aten::add.Tensor"``: handlers are registered per
    overload packet).
    """
    if not isinstance(name, str):
        raise InputError(
            f"an operation name must be a string such as 'aten::linear' or 'mylib::my_op', "
            f"got {type(name).__name__} ({name!r})"
        )
    namespace, sep, op = name.rpartition("::")
    if not sep:
        namespace = "aten"
    if _PART.fullmatch(namespace) and _PART.fullmatch(op):
        return f"{namespace}::{op}"
    hint = ""
    if "." in op:
        base = op.split(".")[0]
        hint = (
            f" (for torch.ops.{namespace}.{base}.<overload> register {namespace}::{base}: "
            f"one handler serves every overload)"
        )
    raise InputError(
        f"cannot register a handler under {name!r}: name the operation as 'namespace::op', "
        f"for example 'aten::linear' or 'mylib::my_channel_scale' (a bare name means "
        f"'aten::'){hint}"
    )


def op_name(target: Any) -> str:
    """The registry key of a graph node's target: ``torch.ops.aten.linear.default`` ->
    ``"aten::linear"``, ``operator.getitem`` -> ``"operator::getitem"``."""
    schema = getattr(target, "_schema", None)  # an OpOverload
    if schema is not None:
        return str(schema.name)
    qualified = getattr(target, "_qualified_op_name", None)  # an OpOverloadPacket
    if isinstance(qualified, str):
        return qualified
    namespace = getattr(target, "namespace", None)  # a HigherOrderOperator
    name = getattr(target, "__name__", None)
    if isinstance(namespace, str) and isinstance(name, str):
        return f"{namespace}::{name}"
    module = getattr(target, "__module__", None)
    if isinstance(name, str) and isinstance(module, str):
        module = module.removeprefix("_").replace(".", "_") if module != "builtins" else module
        return f"{module}::{name}"
    return str(target)


def short_name(target: Any) -> str:
    """The operation's name without its namespace (``"linear"``), for messages and dispatch."""
    return op_name(target).rpartition("::")[2]


class Registry(MutableMapping[str, Handler]):
    """Handlers by namespaced op name; a plain mapping whose keys go through :func:`qualify`.

    >>> reg = Registry()
    >>> reg["linear"] = lambda p, node: None
    >>> list(reg)
    ['aten::linear']
    """

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        if handlers is not None:
            self.update(handlers)

    def __getitem__(self, name: str) -> Handler:
        return self._handlers[qualify(name)]

    def __setitem__(self, name: str, handler: Handler) -> None:
        key = qualify(name)
        if not callable(handler):
            raise InputError(
                f"the handler for {key!r} must be a function (propagator, node) -> spaces, "
                f"got {type(handler).__name__}; see docs/extending.md"
            )
        self._handlers[key] = handler

    def __delitem__(self, name: str) -> None:
        del self._handlers[qualify(name)]

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return qualify(name) in self._handlers
        except InputError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    def __repr__(self) -> str:
        return f"Registry({len(self)} handlers)"

    def update(self, other: Any = None, /, **kwargs: Handler) -> None:
        """Add (or override) handlers from a mapping and keyword arguments."""
        if other is not None and not isinstance(other, Mapping):
            raise InputError(
                f"handlers must be a mapping from op names to handler functions, such as "
                f"{{'mylib::my_op': my_handler}}, got {type(other).__name__}"
            )
        for name, handler in {**(other or {}), **kwargs}.items():
            self[name] = handler

    def lookup(self, key: str) -> Handler | None:
        """The handler for an already-qualified key (as :func:`op_name` returns), or None."""
        return self._handlers.get(key)

    def register(self, *names: str) -> Callable[[Handler], Handler]:
        """Decorator: register the function for every name in ``names``."""
        keys = [qualify(n) for n in names]

        def deco(fn: Handler) -> Handler:
            for key in keys:
                self[key] = fn
            return fn

        return deco

    def copy(self) -> Registry:
        """An independent registry with the same handlers."""
        return Registry(self._handlers)


HANDLERS = Registry()
"""The default handlers: every netsculpt family module and :func:`handles` register here."""


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler in the default registry, for every later analysis.

    Names are namespaced overload packets (``"aten::linear"``, ``"mylib::my_op"``); a bare
    name means ``aten::``. To use a handler for one analysis only, pass it instead as
    ``ns.analyze(..., handlers={"mylib::my_op": fn})``.
    """
    return HANDLERS.register(*names)


def default_registry(extra: Mapping[str, Handler] | None = None) -> Registry:
    """A copy of the default handlers, extended (and overridden) by ``extra``."""
    registry = HANDLERS.copy()
    if extra is not None:
        registry.update(extra)
    return registry


def supported_ops() -> list[str]:
    """Namespaced names of the operations netsculpt propagates channels through."""
    return sorted(HANDLERS)
