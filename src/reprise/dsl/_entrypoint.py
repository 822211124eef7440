"""Any function as something reprise runs: a one-node flow named after it.

::

    import reprise

    @reprise.entrypoint()            # optional: plain functions work as targets too
    def run(input_text: str) -> str:
        return process(input_text)

``reprise experiment my_agent:run`` (and ``reprise run``) then runs ``run`` as the flow ``run``
holding the node ``run``: its own run directory, trace and git outcome, like any flow. The
function may be sync or async and receives:

* with one parameter, the item's ``input`` (the text of an inputs file's ``input:`` entry), or
  the initial input of the parameter's own name when the item gives one;
* with several, keyword arguments: each parameter from the initial input of its name (its
  default when the item has none). ``input_param=`` names the parameter that also takes
  ``input``.

A ``ctx: NodeContext`` parameter receives the node's context, as in any node.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from reprise.dsl._container import FlowDefinition
from reprise.dsl._paths import validate_id
from reprise.dsl._sources import Source
from reprise.errors import DefinitionError, NodeInputError

if TYPE_CHECKING:
    from reprise.dsl._scope import Scope

__all__ = ["INPUT_KEY", "EntryPoint", "entrypoint", "function_flow"]

#: The initial input holding an item's text (an inputs file's ``input:``).
INPUT_KEY = "input"

_MARK = "__reprise_entrypoint__"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class EntryPoint:
    """What :func:`entrypoint` records on a function."""

    #: The flow's id (and the run ids' and experiments' default name).
    name: str
    #: The parameter that takes the item's ``input`` text (``None``: the only parameter, if one).
    input_param: str | None = None


def entrypoint(name: str | None = None, *, input_param: str | None = None) -> Callable[[F], F]:
    """Mark ``fn`` as an entry point: a target that runs as a one-node flow named ``name``
    (default: the function's name). The function itself is returned unchanged, so code that
    calls it directly keeps working."""

    def mark(fn: F) -> F:
        flow_name = name or str(getattr(fn, "__name__", ""))
        validate_id(flow_name, where=getattr(fn, "__qualname__", None))
        setattr(fn, _MARK, EntryPoint(flow_name, input_param))
        return fn

    return mark


class _Argument(Source):
    """One parameter's value: the initial input of its name, else (for the parameter that
    takes it) the item's ``input`` text, else its default."""

    __slots__ = ("default", "name", "text")

    def __init__(self, name: str, *, text: bool, default: Any) -> None:
        self.name = name
        self.text = text
        self.default = default

    def resolve(self, scope: Scope) -> Any:
        inputs: Mapping[str, Any] = scope.initial_inputs
        if self.name in inputs:
            return inputs[self.name]
        if self.text and INPUT_KEY in inputs:
            return inputs[INPUT_KEY]
        if self.default is not inspect.Parameter.empty:
            return self.default
        wanted = f"{self.name!r} or {INPUT_KEY!r}" if self.text else repr(self.name)
        known = ", ".join(sorted(inputs)) or "none"
        raise NodeInputError(f"initial input {wanted} was not given (given: {known})")

    def __repr__(self) -> str:
        return f"Argument({self.name!r})"


def _parameters(fn: Callable[..., Any], where: str) -> Sequence[inspect.Parameter]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"cannot read its signature: {exc}", path=where) from None
    # ctx is given by the node itself (as FunctionNode decides: by name or annotation).
    skipped = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p
        for p in sig.parameters.values()
        if p.name != "ctx" and "NodeContext" not in str(p.annotation) and p.kind not in skipped
    ]


def function_flow(fn: Callable[..., Any]) -> FlowDefinition:
    """The one-node flow that runs ``fn`` (see the module's documentation)."""
    where = getattr(fn, "__qualname__", repr(fn))
    if isinstance(fn, type) or not callable(fn):
        raise DefinitionError(f"a target must be a function, not a {type(fn).__name__}", path=where)
    mark = getattr(fn, _MARK, None)
    spec = mark if isinstance(mark, EntryPoint) else EntryPoint(getattr(fn, "__name__", ""))
    try:
        validate_id(spec.name)
    except DefinitionError:
        raise DefinitionError(
            f"{spec.name!r} cannot name a flow; decorate it with @reprise.entrypoint(name=...)", path=where
        ) from None
    params = _parameters(fn, where)
    names = [p.name for p in params]
    if spec.input_param is not None and spec.input_param not in names:
        raise DefinitionError(
            f"input_param {spec.input_param!r} is not one of its parameters ({', '.join(names)})", path=where
        )
    text_param = spec.input_param or (names[0] if len(names) == 1 else None)
    inputs = {p.name: _Argument(p.name, text=p.name == text_param, default=p.default) for p in params}
    return FlowDefinition(spec.name).node(spec.name, fn, inputs=inputs)
