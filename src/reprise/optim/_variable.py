"""``Variable``: a value (text, a number, or a list of them) that records how it was computed and
collects *textual gradients*, feedback in words, in ``grad``.

The graph is built as in PyTorch: every operation on Variables that require grad gives a result
whose ``grad_fn`` knows its inputs and how to turn feedback on the result into feedback on each
input. ``backward()`` walks that graph from the output to the leaves, in reverse topological
order, so every function sees all the feedback on its output before it passes anything on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import anyio

__all__ = ["GradFn", "Scalar", "Value", "Variable", "feedback_text"]

Scalar: TypeAlias = str | int | float
Value: TypeAlias = Scalar | list[Scalar] | tuple[Scalar, ...]

_CASTS: dict[type, Callable[[Any], Scalar]] = {int: int, float: float, str: str}


def _check_data(data: Any) -> Value:
    """``data`` if a Variable can hold it, else a :class:`TypeError` saying what it can hold."""
    if _is_scalar(data):
        return data  # type: ignore[no-any-return]
    if isinstance(data, list | tuple):
        for i, item in enumerate(data):
            if not _is_scalar(item):
                raise TypeError(
                    f"a Variable holds a string, a number, or a list or tuple of them; item {i} of the "
                    f"{type(data).__name__} is {type(item).__name__}: {item!r}"
                )
        return data
    raise TypeError(
        f"a Variable holds a string, a number, or a list or tuple of them, not {type(data).__name__}: {data!r}"
    )


def _is_scalar(value: Any) -> bool:
    # bool is an int to Python, but "True + 1" is rarely what a prompt means.
    return isinstance(value, str | int | float) and not isinstance(value, bool)


def _kind(value: Scalar) -> str:
    return "text" if isinstance(value, str) else "number"


def _add_scalars(a: Scalar, b: Scalar, where: str) -> Scalar:
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if not isinstance(a, str) and not isinstance(b, str):
        return a + b
    raise TypeError(f"cannot add {_kind(a)} {a!r} and {_kind(b)} {b!r}{where}")


def add_data(a: Value, b: Value) -> Value:
    """``a + b`` as Variables add: text is concatenated, numbers are added, lists of equal length
    element by element (the result is a list, or a tuple when both are tuples)."""
    a_seq, b_seq = isinstance(a, list | tuple), isinstance(b, list | tuple)
    if a_seq and b_seq:
        assert isinstance(a, list | tuple) and isinstance(b, list | tuple)
        if len(a) != len(b):
            raise ValueError(f"cannot add lists of different lengths ({len(a)} and {len(b)}) element by element")
        items = [_add_scalars(x, y, f" (item {i})") for i, (x, y) in enumerate(zip(a, b, strict=True))]
        return tuple(items) if isinstance(a, tuple) and isinstance(b, tuple) else items
    if a_seq or b_seq:
        raise TypeError(
            f"cannot add a {type(a).__name__} and a {type(b).__name__}: both sides must be lists "
            "(added element by element) or both single values"
        )
    assert not isinstance(a, list | tuple) and not isinstance(b, list | tuple)
    return _add_scalars(a, b, "")


def feedback_text(grads: Sequence[Variable]) -> str:
    """The feedback in ``grads`` as one text, one piece per line."""
    return "\n".join(str(g.data) for g in grads)


class GradFn:
    """How a Variable was computed: its ``inputs`` and how feedback on it becomes feedback on
    them. Subclasses implement :meth:`backward`; ``name`` shows in ``repr(variable.grad_fn)``."""

    name = "GradFn"

    def __init__(self, inputs: Sequence[Variable]) -> None:
        self.inputs: tuple[Variable, ...] = tuple(inputs)

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        """Feedback for the inputs that require grad, as ``(input, feedback)`` pairs, from the
        feedback gathered in ``output.grad``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{self.name}>"


class AddBackward(GradFn):
    """``a + b``: every input that requires grad gets the feedback on the sum, said to be about
    the combination (TextGrad's rule for sums)."""

    name = "AddBackward"

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        text = feedback_text(output.grad)
        return [
            (
                v,
                Variable(
                    f"Here is the combined feedback we got for this specific {v.role} and other variables: {text}",
                    role=f"feedback to {v.role}",
                ),
            )
            for v in self.inputs
            if v.requires_grad
        ]


class PassBackward(GradFn):
    """An operation that does not change what the value means (a cast): feedback passes as is."""

    name = "PassBackward"

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        return [(v, g) for v in self.inputs if v.requires_grad for g in output.grad]


class Variable:
    """A value in a computation that can take feedback.

    ::

        x = Variable("The weather is nice today.", role="weather update statement", requires_grad=True)
        z = x + Variable(" Let's go for a walk.")
        z.backward(Variable("Add a question for the reader."))
        x.grad    # [Variable(data=Here is the combined feedback ..., role=feedback to ..., ...)]

    Args:
        data: a string, an int or float, or a list or tuple of them.
        role: what the value is for ("system prompt for sentiment classification"); the models
            that write feedback and rewrite values read it.
        requires_grad: collect feedback for this value during :meth:`backward`.
    """

    def __init__(self, data: Value, role: str = "", requires_grad: bool = False) -> None:
        if isinstance(data, Variable):
            raise TypeError("Variable(data) takes a plain value; use other.data or v.copy_(other)")
        if not isinstance(role, str):
            raise TypeError(f"role must be a string, not {type(role).__name__}")
        self.data: Value = _check_data(data)
        self.role = role
        self.requires_grad = bool(requires_grad)
        #: Feedback Variables gathered by :meth:`backward`, oldest first.
        self.grad: list[Variable] = []
        #: The function that computed this Variable; ``None`` for one made by the user.
        self.grad_fn: GradFn | None = None
        #: Which output of ``grad_fn`` this Variable is (operations here have one).
        self.output_nr = 0

    @property
    def is_leaf(self) -> bool:
        """True if the user made this Variable (no operation computed it)."""
        return self.grad_fn is None

    # -- operations ----------------------------------------------------------------------------
    def __add__(self, other: Variable | Value) -> Variable:
        other = _as_variable(other)
        result = Variable(add_data(self.data, other.data), role=_combined_role(self, other))
        _record(result, AddBackward([self, other]))
        return result

    def __radd__(self, other: Value) -> Variable:
        return _as_variable(other) + self

    def __iadd__(self, other: Variable | Value) -> Variable:
        other = _as_variable(other)
        data = add_data(self.data, other.data)
        if other.requires_grad or not self.is_leaf:
            # The value before the addition keeps the history so far; this Variable, now the sum,
            # passes its feedback to it and to ``other``.
            before = self._detached_copy()
            before.grad_fn, self.grad_fn = self.grad_fn, None
            self.data = data
            self.requires_grad = False
            _record(self, AddBackward([before, other]))
        else:
            self.data = data
        return self

    def copy_(self, other: Variable | Value) -> Variable:
        """Set this Variable's data to (a copy of) ``other``'s, in place; returns ``self``."""
        source = other.data if isinstance(other, Variable) else _check_data(other)
        self.data = copy.deepcopy(source)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> Variable:
        """Turn feedback collection on (or off) for this Variable, in place; returns ``self``."""
        if not self.is_leaf and not requires_grad:
            raise RuntimeError(
                f"cannot stop gradient tracking on Variable {self._name()}, which an operation computed; "
                "make a new Variable from its .data instead"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def to(self, kind: type) -> Variable:
        """A new Variable with the data cast to ``int``, ``float`` or ``str`` (element-wise for
        lists); feedback on it passes unchanged to this one."""
        cast = _CASTS.get(kind)
        if cast is None:
            raise TypeError(f"Variable.to() casts to int, float or str, not {kind!r}")
        try:
            if isinstance(self.data, list | tuple):
                data: Value = type(self.data)(cast(item) for item in self.data)
            else:
                data = cast(self.data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot cast the data of Variable {self._name()} to {kind.__name__}: {exc}") from None
        result = Variable(data, role=self.role)
        _record(result, PassBackward([self]))
        return result

    # -- gradients -----------------------------------------------------------------------------
    def backward(self, gradient: Variable | str | None = None) -> None:
        """Propagate feedback from this Variable to every Variable it was computed from.

        ``gradient`` is the feedback on this Variable (a Variable or a text); without it, this
        Variable is its own feedback (the output of an evaluator, a loss). Every Variable on the
        way that requires grad gets its share appended to ``grad``. Operations that ask a model
        (chat completions) call it here; from async code use :meth:`abackward`."""
        anyio.run(self.abackward, gradient)

    async def abackward(self, gradient: Variable | str | None = None) -> None:
        """:meth:`backward` for async code."""
        if not self.requires_grad:
            raise RuntimeError(
                f"backward() on Variable {self._name()}, which does not require grad: nothing it was "
                "computed from collects feedback (make a leaf with requires_grad=True, or a Parameter)"
            )
        if gradient is None:
            seed = self
        elif isinstance(gradient, Variable):
            seed = gradient
        elif isinstance(gradient, str):
            seed = Variable(gradient, role=f"feedback to {self.role}")
        else:
            raise TypeError(f"backward() takes a feedback Variable or text, not {type(gradient).__name__}")
        self.grad.append(seed)
        for variable in _reverse_topological(self):
            assert variable.grad_fn is not None
            if not variable.grad:
                continue  # no feedback reached it (none of its consumers passed any)
            for target, feedback in await variable.grad_fn.backward(variable):
                target.grad.append(feedback)

    def zero_grad(self) -> None:
        """Forget the feedback gathered so far."""
        self.grad = []

    # -- conversions ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        return f"Variable(data={self.data}, role={self.role}, requires_grad={self.requires_grad})"

    def __str__(self) -> str:
        return str(self.data)

    def _name(self) -> str:
        return repr(self.role) if self.role else f"holding {_short(self.data)!r}"

    def _detached_copy(self) -> Variable:
        twin = Variable(copy.deepcopy(self.data), role=self.role, requires_grad=self.requires_grad)
        twin.grad = self.grad
        self.grad = []
        return twin


def _short(data: Value, limit: int = 40) -> str:
    text = str(data)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_variable(value: Variable | Value) -> Variable:
    return value if isinstance(value, Variable) else Variable(value)


def _combined_role(a: Variable, b: Variable) -> str:
    roles = [r for r in (a.role, b.role) if r]
    return " and ".join(roles)


def _record(result: Variable, fn: GradFn) -> None:
    """Make ``fn`` the history of ``result`` if any input requires grad (else keep none)."""
    if any(v.requires_grad for v in fn.inputs):
        result.requires_grad = True
        result.grad_fn = fn


def _reverse_topological(root: Variable) -> list[Variable]:
    """The Variables with a ``grad_fn`` reachable from ``root``, each after every Variable that
    was computed from it."""
    order: list[Variable] = []
    seen: set[int] = set()
    stack: list[tuple[Variable, bool]] = [(root, False)]
    while stack:
        variable, expanded = stack.pop()
        if expanded:
            order.append(variable)
            continue
        if id(variable) in seen or variable.grad_fn is None or not variable.requires_grad:
            continue
        seen.add(id(variable))
        stack.append((variable, True))
        stack.extend((v, False) for v in variable.grad_fn.inputs)
    order.reverse()
    return order
