"""Nodes: the atomic units of work in a flow.

Any sync or async function becomes a node. Its input is typed either by a single pydantic model
parameter or by ordinary annotated parameters (reprise builds the model), and its return
annotation types the outcome; both are validated at run time::

    class Count(BaseModel):
        words: int

    @node(retries=2, timeout=5)
    async def count(text: str) -> Count:
        return Count(words=len(text.split()))

A function may also take the node's context by declaring a parameter named ``ctx`` (or annotated
``NodeContext``): it gives the node's logger, directory, metrics and span.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model

from reprise.errors import DefinitionError

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext

__all__ = ["FunctionNode", "Node", "NodeSettings", "node"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSettings:
    """How a node is executed: per-attempt timeout, retries and backoff between attempts.

    ``retries`` is the number of extra attempts after the first; the wait before attempt ``n``
    (n >= 2) is ``min(backoff * backoff_factor ** (n - 2), max_backoff)`` seconds, or longer, up
    to ``max_backoff``, when the failure carries a ``retry_after`` (a model server's
    ``Retry-After``).
    """

    timeout: float | None = None
    retries: int = 0
    backoff: float = 0.1
    backoff_factor: float = 2.0
    max_backoff: float = 10.0
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise DefinitionError(f"retries must be >= 0, got {self.retries}")
        if self.timeout is not None and self.timeout <= 0:
            raise DefinitionError(f"timeout must be > 0 seconds, got {self.timeout}")

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (1-based)."""
        if attempt <= 1:
            return 0.0
        return float(min(self.backoff * self.backoff_factor ** (attempt - 2), self.max_backoff))


class Node:
    """Base class of every node kind. Subclasses set ``kind`` and implement :meth:`run`.

    ``input_model`` is the pydantic model the node's input is validated against (``None`` for a
    node that takes no input). ``dump_outcome`` / ``load_outcome`` turn an outcome into JSON data
    and back, so a re-run can reuse an earlier run's outcome without calling the node.
    """

    kind: ClassVar[str] = "node"
    input_model: type[BaseModel] | None = None
    settings: NodeSettings = NodeSettings()
    #: Whether :meth:`run` takes the node context (``ctx``) as second argument.
    wants_context: bool = True
    #: Whether the node asks for its input (a person, through the run's input handlers) when no
    #: static input is registered for it. See :mod:`reprise.nodes._human_input`.
    input_required: bool = False

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def validate_outcome(self, outcome: Any) -> Any:
        """Check and coerce a returned outcome; raise ``ValidationError`` if it does not fit."""
        return outcome

    def dump_outcome(self, outcome: Any) -> Any:
        """JSON-compatible data for ``outcome.json``."""
        return _ANY.dump_python(outcome, mode="json")

    def load_outcome(self, data: Any) -> Any:
        """Rebuild an outcome from the data :meth:`dump_outcome` wrote."""
        return data

    def with_settings(self, **changes: Any) -> Node:
        """A copy of this node with some settings changed."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone.settings = replace(self.settings, **changes)
        return clone

    @property
    def name(self) -> str:
        """A readable name for messages."""
        return type(self).__name__


_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_NO_RETURN = (inspect.Signature.empty, None, type(None))


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


@dataclass(slots=True)
class _Signature:
    input_model: type[BaseModel] | None
    model_param: bool  # True: pass the model itself; False: pass its fields as keyword arguments
    params: tuple[str, ...]
    ctx_param: str | None
    output: Any = field(default=None)


def _caller_namespace() -> dict[str, Any]:
    """The local variables of the nearest frame outside reprise (the user's code)."""
    import sys

    frame = sys._getframe(1)
    package = __name__.split(".", 1)[0]
    while frame is not None and frame.f_globals.get("__name__", "").split(".", 1)[0] == package:
        frame = frame.f_back  # type: ignore[assignment]
    return dict(frame.f_locals) if frame is not None else {}


def _analyse(fn: Callable[..., Any]) -> _Signature:
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        hints = typing.get_type_hints(fn)
    except NameError:
        # String annotations (``from __future__ import annotations``) naming classes local to
        # the function that built the flow: resolve them in the caller's namespace, as pydantic
        # does for models defined inside functions.
        try:
            hints = typing.get_type_hints(fn, localns=_caller_namespace())
        except Exception as exc:
            raise DefinitionError(f"cannot read the type hints of {name}: {exc}") from exc
    except Exception as exc:
        raise DefinitionError(f"cannot read the type hints of {name}: {exc}") from exc
    sig = inspect.signature(fn)
    ctx_param = None
    fields: dict[str, Any] = {}
    for p in sig.parameters.values():
        ann = hints.get(p.name, Any)
        if p.name == "ctx" or getattr(ann, "__name__", None) == "NodeContext":
            ctx_param = p.name
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DefinitionError(f"{name}: *args and **kwargs cannot be node inputs; name the parameters")
        fields[p.name] = (ann, ... if p.default is p.empty else p.default)
    ret = sig.return_annotation
    output = None if ret in _NO_RETURN else hints.get("return")
    if len(fields) == 1:
        (pname, (ann, _default)) = next(iter(fields.items()))
        if _is_model(ann):
            return _Signature(ann, True, (pname,), ctx_param, output)
    if not fields:
        return _Signature(None, False, (), ctx_param, output)
    model_name = "".join(part.title() for part in getattr(fn, "__name__", "node").split("_")) + "Input"
    model = create_model(model_name, __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
    return _Signature(model, False, tuple(fields), ctx_param, output)


class FunctionNode(Node):
    """A node that calls a plain Python function (sync or async).

    Sync functions run in a worker thread by default so a slow one neither blocks parallel
    branches nor escapes its timeout (on timeout or cancellation the node stops waiting; the
    thread itself cannot be stopped and finishes in the background); pass ``thread=False`` for
    cheap sync functions to skip the thread hop.
    """

    kind = "python"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        settings: NodeSettings | None = None,
        thread: bool = True,
    ) -> None:
        if not callable(fn):
            raise DefinitionError(f"a node needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self.settings = settings or NodeSettings()
        self._is_async = inspect.iscoroutinefunction(fn)
        self.thread = thread and not self._is_async
        sig = _analyse(fn)
        self._sig = sig
        self.input_model = sig.input_model
        self.wants_context = sig.ctx_param is not None
        out = sig.output
        self._out_model: type[BaseModel] | None = out if _is_model(out) else None
        self._out_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(out) if out is not None and self._out_model is None else None
        )

    @property
    def name(self) -> str:
        return getattr(self.fn, "__qualname__", repr(self.fn))

    def _call(self, input: BaseModel | None, ctx: NodeContext) -> Any:
        sig = self._sig
        kwargs: dict[str, Any]
        if sig.model_param:
            kwargs = {sig.params[0]: input}
        elif sig.params:
            kwargs = {p: getattr(input, p) for p in sig.params}
        else:
            kwargs = {}
        if sig.ctx_param is not None:
            kwargs[sig.ctx_param] = ctx
        return self.fn(**kwargs)

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> Any:
        if self._is_async:
            return await self._call(input, ctx)
        if self.thread:
            import anyio.to_thread

            # A thread cannot be interrupted: on timeout or cancellation the node stops waiting
            # for it (and fails or is cancelled) while the thread runs to its end unobserved.
            return await anyio.to_thread.run_sync(self._call, input, ctx, abandon_on_cancel=True)
        result = self._call(input, ctx)
        if inspect.isawaitable(result):
            return await result
        return result

    def validate_outcome(self, outcome: Any) -> Any:
        model = self._out_model
        if model is not None:
            return outcome if type(outcome) is model else model.model_validate(outcome)
        if self._out_adapter is not None:
            return self._out_adapter.validate_python(outcome)
        return outcome

    def dump_outcome(self, outcome: Any) -> Any:
        if isinstance(outcome, BaseModel):
            return outcome.model_dump(mode="json")
        if self._out_adapter is not None:
            return self._out_adapter.dump_python(outcome, mode="json")
        return _ANY.dump_python(outcome, mode="json")

    def load_outcome(self, data: Any) -> Any:
        if self._out_model is not None:
            return self._out_model.model_validate(data)
        if self._out_adapter is not None:
            return self._out_adapter.validate_python(data)
        return data

    def __repr__(self) -> str:
        return f"FunctionNode({self.name})"


NodeFunction = Callable[..., Any] | Callable[..., Awaitable[Any]]


@overload
def node(fn: NodeFunction, /) -> FunctionNode: ...


@overload
def node(
    *,
    timeout: float | None = None,
    retries: int = 0,
    backoff: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    thread: bool = True,
) -> Callable[[NodeFunction], FunctionNode]: ...


def node(
    fn: NodeFunction | None = None,
    /,
    *,
    timeout: float | None = None,
    retries: int = 0,
    backoff: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
    thread: bool = True,
) -> FunctionNode | Callable[[NodeFunction], FunctionNode]:
    """Turn a function into a node, as ``@node`` or ``@node(timeout=..., retries=...)``."""
    settings = NodeSettings(timeout=timeout, retries=retries, backoff=backoff, retry_on=retry_on)

    def wrap(f: NodeFunction) -> FunctionNode:
        return FunctionNode(f, settings=settings, thread=thread)

    return wrap(fn) if fn is not None else wrap


def as_node(value: Node | Callable[..., Any], *, where: str) -> Node:
    """``value`` as a :class:`Node`: nodes pass through, callables are wrapped."""
    if isinstance(value, Node):
        return value
    if callable(value):
        return FunctionNode(value)
    raise DefinitionError(f"expected a node or a function, got {type(value).__name__}", path=where)


def validation_summary(exc: ValidationError) -> str:
    """A short, one-line description of a pydantic validation error."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "<input>"
        parts.append(f"{loc}: {err.get('msg')}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
