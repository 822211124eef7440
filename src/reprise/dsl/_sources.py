"""Where a value comes from: the explicit, typed data flow between elements.

A node's input fields, a conditional's condition and a loop's items are *value sources*:

* :class:`Ref` - the outcome of an element that ran earlier, by hierarchy path, optionally a
  field inside it: ``Ref("load")``, ``Ref("load", "files")``, ``Ref("agent.prep.load", "files.0")``;
* :class:`Initial` - one of the run's initial inputs: ``Initial("folder")``;
* :class:`Var` - a loop variable (the current item or index): ``Var("file")``;
* :class:`Computed` - a plain Python function of other sources:
  ``Computed(lambda n: n > 3, Ref("count", "total"))``;
* a template string with ``$var{}``, ``$expr{}`` or ``$hier{}`` (compiled to a
  :class:`~reprise.dsl._template.Template` when the flow is built);
* anything else is a literal value.

Reference resolution (documented in the README): a relative path ``a.b`` is looked up first in
the flow that holds the referencing element, then in each enclosing flow outwards, the nearest
match winning; a path that starts with the root component's id is therefore absolute. A path may
descend into a subflow, agent flow or parallel branch, but not into a loop body or a conditional
branch (use the loop's or conditional's own outcome). The element referenced must run earlier
than the referencing one; the definition check rejects anything else before the run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from reprise.dsl._paths import HierarchyPath
from reprise.errors import DefinitionError, NodeInputError

if TYPE_CHECKING:
    from reprise.dsl._scope import Scope

__all__ = ["MISSING", "Computed", "Initial", "Ref", "Source", "Var", "access", "collect_sources", "resolve_value"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


#: Returned by :meth:`Scope.lookup` when a path has no outcome.
MISSING: Any = _Missing()
_MISSING = MISSING


class Source:
    """Base class of value sources. ``resolve`` turns a source into a value inside a scope."""

    __slots__ = ()

    def resolve(self, scope: Scope) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def refs(self) -> Sequence[Ref]:
        """References this source depends on (checked against the definition before a run)."""
        return ()

    def variables(self) -> Sequence[str]:
        """Loop variables this source reads."""
        return ()


def _split_field(field: str | None) -> tuple[str, ...]:
    return tuple(field.split(".")) if field else ()


def access(value: Any, fields: Sequence[str], *, what: str) -> Any:
    """Follow ``fields`` into ``value``: fields of pydantic models and dataclasses, keys of
    mappings, integer indexes of sequences. Never calls anything, never reads a name starting
    with ``_``, and never reads methods or arbitrary object attributes."""
    for name in fields:
        if name.startswith("_"):
            raise NodeInputError(f"{what}: access to {name!r} is not allowed")
        try:
            if isinstance(value, Mapping):
                value = value[name]
            elif isinstance(value, (list, tuple)):
                value = value[int(name)]
            elif isinstance(value, BaseModel):
                if name not in type(value).model_fields and name not in (value.model_extra or {}):
                    if name not in type(value).model_computed_fields:
                        raise AttributeError(name)
                value = getattr(value, name)
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                if name not in {f.name for f in dataclasses.fields(value)}:
                    raise AttributeError(name)
                value = getattr(value, name)
            else:
                raise AttributeError(name)
        except (KeyError, IndexError, AttributeError, ValueError, TypeError):
            raise NodeInputError(f"{what}: no field {name!r} in {type(value).__name__}") from None
    return value


class Ref(Source):
    """The outcome of an earlier element, or a field inside it.

    >>> Ref("load")                    # the whole outcome of sibling 'load'
    Ref('load')
    >>> Ref("prep.load", "files.0")    # first item of 'files' in prep's 'load'
    Ref('prep.load', 'files.0')
    """

    __slots__ = ("_fields", "_parts", "field", "path")

    def __init__(self, path: str | HierarchyPath, field: str | None = None) -> None:
        self.path = HierarchyPath(path)
        self.field = field
        self._parts = self.path.parts
        self._fields = _split_field(field)

    def resolve(self, scope: Scope) -> Any:
        outcome = scope.lookup(self._parts)
        if outcome is _MISSING:
            raise NodeInputError(f"reference {self.path} has no outcome in this run")
        return access(outcome, self._fields, what=f"reference {self}") if self._fields else outcome

    def refs(self) -> Sequence[Ref]:
        return (self,)

    def __repr__(self) -> str:
        return f"Ref({str(self.path)!r}, {self.field!r})" if self.field else f"Ref({str(self.path)!r})"

    __str__ = __repr__


class Initial(Source):
    """One of the run's initial inputs (``RunContext(initial_inputs={...})``), optionally a field
    inside it. Without a default, a missing key is an error naming the node."""

    __slots__ = ("_fields", "default", "field", "key")

    def __init__(self, key: str, field: str | None = None, *, default: Any = _MISSING) -> None:
        self.key = key
        self.field = field
        self.default = default
        self._fields = _split_field(field)

    def resolve(self, scope: Scope) -> Any:
        inputs = scope.initial_inputs
        if self.key not in inputs:
            if self.default is not _MISSING:
                return self.default
            known = ", ".join(sorted(inputs)) or "none"
            raise NodeInputError(f"initial input {self.key!r} was not given (given: {known})")
        value = inputs[self.key]
        return access(value, self._fields, what=f"initial input {self.key!r}") if self._fields else value

    def __repr__(self) -> str:
        return f"Initial({self.key!r})"


class Var(Source):
    """A loop variable: the current item (``item_var``) or index (``index_var``) of an enclosing
    ``for_each``, optionally a field inside it."""

    __slots__ = ("_fields", "field", "name")

    def __init__(self, name: str, field: str | None = None) -> None:
        self.name = name
        self.field = field
        self._fields = _split_field(field)

    def resolve(self, scope: Scope) -> Any:
        value = scope.variable(self.name)
        return access(value, self._fields, what=f"variable {self.name!r}") if self._fields else value

    def variables(self) -> Sequence[str]:
        return (self.name,)

    def __repr__(self) -> str:
        return f"Var({self.name!r})"


class Computed(Source):
    """A Python function applied to the values of other sources.

    The function is ordinary user code (never a string that gets evaluated)::

        .conditional("big", Computed(lambda n: n > 100, Ref("count", "words")), then_flow)
    """

    __slots__ = ("fn", "sources")

    def __init__(self, fn: Callable[..., Any], *sources: Any) -> None:
        if not callable(fn):
            raise DefinitionError(f"Computed needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.sources = sources

    def resolve(self, scope: Scope) -> Any:
        return self.fn(*(resolve_value(s, scope) for s in self.sources))

    def refs(self) -> Sequence[Ref]:
        return [r for s in self.sources if isinstance(s, Source) for r in s.refs()]

    def variables(self) -> Sequence[str]:
        return [v for s in self.sources if isinstance(s, Source) for v in s.variables()]

    def __repr__(self) -> str:
        return f"Computed({getattr(self.fn, '__name__', 'fn')}, {', '.join(map(repr, self.sources))})"


def resolve_value(value: Any, scope: Scope) -> Any:
    """Resolve ``value`` if it is a source; containers are resolved element-wise; other values
    are literals and returned as they are."""
    if isinstance(value, Source):
        return value.resolve(scope)
    if type(value) is dict:
        return {k: resolve_value(v, scope) for k, v in value.items()}
    if type(value) is list:
        return [resolve_value(v, scope) for v in value]
    return value


def collect_sources(value: Any) -> list[Source]:
    """Every source inside ``value`` (looking into plain dicts and lists)."""
    if isinstance(value, Source):
        return [value]
    if type(value) is dict:
        return [s for v in value.values() for s in collect_sources(v)]
    if type(value) is list:
        return [s for v in value for s in collect_sources(v)]
    return []
