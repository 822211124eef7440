"""The safe expression evaluator behind ``$expr{...}`` (see docs/templates.md).

An expression is translated (``&&``/``||``/``!`` become ``and``/``or``/``not``, ``$var{}`` and
``$hier{}`` become placeholders), parsed once with ``ast.parse(mode="eval")`` and compiled into a
tree of small Python closures. Nothing is ever handed to ``eval``, ``exec`` or ``compile``: only
the node types listed in :class:`_Compiler` are accepted, names are limited to placeholders,
``true``/``false``/``null`` and the function whitelist. Evaluation only reads data: dict keys,
pydantic model fields and dataclass fields, never other attributes, never names starting with ``_``.

Every value an evaluation builds and every walk over a value is paid from one budget
(:class:`Evaluation`, :data:`MAX_SIZE` and :data:`MAX_STEPS`). Each operation is an
:class:`Operation` whose cost is predicted from its operands *before* the value is built (a lower
bound where the exact size is unknown), then trued up from the value it built, so an expression
stops with a :class:`TemplateError` long before it can take noticeable time or memory.

The limits are module constants so the documentation and the tests name the same numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sized
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

import pydantic_core
from pydantic import BaseModel

from reprise.dsl._paths import HierarchyPath
from reprise.dsl._sources import MISSING, Ref
from reprise.errors import NodeInputError, RepriseError, TemplateError

if TYPE_CHECKING:
    from reprise.dsl._scope import Scope

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_INT_BITS",
    "MAX_SIZE",
    "MAX_STEPS",
    "CompiledExpression",
    "Evaluation",
    "HierRef",
    "Operation",
    "compile_expression",
    "to_text",
]

#: Longest accepted expression (the text inside ``$expr{...}``), in characters.
MAX_EXPRESSION_LENGTH = 2000
#: Deepest accepted nesting of the expression's syntax tree.
MAX_DEPTH = 32
#: Largest integer an operation may produce, in bits (about 3000 decimal digits): arithmetic on
#: integers costs more than their size, so one integer is bounded on its own.
MAX_INT_BITS = 10_000
#: The size budget of one evaluation (all the ``$expr{}`` parts of one template rendering): the
#: characters plus items of every value it builds, counted through nested containers.
MAX_SIZE = 1_000_000
#: The work budget of one evaluation, in steps: one per character or item built, walked,
#: compared or sorted (sorting n items takes about n·log2(n)).
MAX_STEPS = 10_000_000
# round(10**100, -n) computes 10**n: bound n.
_MAX_ROUND_DIGITS = 400

#: A compiled piece of an expression: reads what it needs from the evaluation, returns a value.
Evaluator = Callable[["Evaluation"], Any]


class HierRef(Ref):
    """The :class:`Ref` of a ``$hier{path}``; prints as the template wrote it, so definition
    errors point at the template text."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"$hier{{{self.path}}}"

    __str__ = __repr__


class Evaluation:
    """The state of one evaluation: the scope values are read from, what is left of its budget,
    and the sizes of the values seen so far (by identity), so no value is walked twice.

    :meth:`charge` is the one place the budget is spent. The size of a value is its characters
    plus items through nested containers, about the length of its text (see :func:`to_text`): a
    string counts its characters (at least 1), a number its digits, any other value 1 plus what
    it contains (dict keys and model field names included)."""

    __slots__ = ("_sizes", "scope", "size_left", "steps_left")

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope
        self.size_left = MAX_SIZE
        self.steps_left = MAX_STEPS
        self._sizes: dict[int, tuple[Any, int]] = {}

    def charge(self, what: str, *, size: int = 0, steps: int = 0) -> None:
        """Pay for ``what``, which is about to build ``size`` characters/items (a step each) and
        do ``steps`` more work; raise :class:`TemplateError` instead if the budget cannot pay."""
        steps += size
        if size > self.size_left:
            raise TemplateError(
                f"{what} would build {size:,} characters/items, more than the {self.size_left:,} left"
                f" of the expression's budget ({MAX_SIZE:,})"
            )
        if steps > self.steps_left:
            raise TemplateError(
                f"{what} would take {steps:,} steps, more than the {self.steps_left:,} left"
                f" of the expression's budget ({MAX_STEPS:,})"
            )
        self.size_left -= size
        self.steps_left -= steps

    def built(self, what: str, value: Any, paid: int) -> Any:
        """Account for ``value``, just built by ``what`` after paying ``paid`` in advance: the
        rest of its measured size is charged now."""
        size = self.size(value)
        if size > paid + self.size_left:
            raise TemplateError(
                f"{what} built {size:,} characters/items, more than the {paid + self.size_left:,} left"
                f" of the expression's budget ({MAX_SIZE:,})"
            )
        if size > paid:
            self.charge(what, size=size - paid)
        return value

    def size(self, value: Any) -> int:
        """The size of ``value`` (see the class). A walk stops once past the steps left, since
        the caller, who pays at least that many steps, is then refused."""
        own = _scalar_size(value)
        if own is not None:
            return own
        memo = self._sizes
        hit = memo.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        cap = self.steps_left
        total = 0
        # A stack of iterators keeps the walk's memory to the depth of the value.
        stack: list[Iterator[Any]] = [iter((value,))]
        while stack:
            for item in stack[-1]:
                own = _scalar_size(item)
                descend = False
                if own is None:
                    known = memo.get(id(item))
                    if known is not None and known[0] is item:
                        own = known[1]
                    else:
                        own, descend = 1, True
                total += own
                if total > cap:
                    return total
                if descend:
                    stack.append(iter(_children(item)))
                    break
            else:
                stack.pop()
        # Keeping the value alive in the memo keeps its id from being reused during this evaluation.
        memo[id(value)] = (value, total)
        return total


def _scalar_size(value: Any) -> int | None:
    """The size of a string or number (about the characters it shows as), None for anything
    that may contain others."""
    if isinstance(value, str):
        return len(value) or 1
    if isinstance(value, int):
        return _digits(value.bit_length())
    if isinstance(value, float):
        return len(float.__repr__(value))
    if value is None:
        return 1
    return None


def _digits(bits: float) -> int:
    """The decimal digits of an integer of ``bits`` bits (at least 1)."""
    return int(bits * 0.30103) + 1


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    if isinstance(value, Mapping):
        return chain.from_iterable(value.items())
    if isinstance(value, BaseModel):
        return chain.from_iterable(chain(value.__dict__.items(), (value.model_extra or {}).items()))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return chain.from_iterable((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    return ()


def to_text(value: Any) -> str:
    """How a value appears inside a string template (and what ``str()`` returns in an
    expression): strings as they are, everything else as compact JSON (models, dicts, lists,
    ``true``/``false``/``null``)."""
    if isinstance(value, str):
        return value
    if type(value) is int:
        return str(value)
    return pydantic_core.to_json(value, fallback=str).decode()


# -- reading data ------------------------------------------------------------------------------
def _names(keys: Iterable[Any]) -> str:
    shown = [repr(k) for k in islice(keys, 11)]
    if len(shown) > 10:
        shown[10] = "..."
    return ", ".join(shown) or "none"


def get_attribute(value: Any, name: str) -> Any:
    """``value.name`` on data: a dict key, a pydantic model field or a dataclass field."""
    if name.startswith("_"):
        raise TemplateError(f"access to {name!r} is not allowed (names starting with '_' are private)")
    if isinstance(value, Mapping):
        try:
            return value[name]
        except KeyError:
            raise TemplateError(f"no key {name!r} (keys: {_names(value)})") from None
    if isinstance(value, BaseModel):
        cls = type(value)
        if name in cls.model_fields or name in cls.model_computed_fields:
            return getattr(value, name)
        extra = value.model_extra
        if extra and name in extra:
            return extra[name]
        raise TemplateError(f"{cls.__name__} has no field {name!r} (fields: {_names(cls.model_fields)})")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [f.name for f in dataclasses.fields(value)]
        if name in fields:
            return getattr(value, name)
        raise TemplateError(f"{type(value).__name__} has no field {name!r} (fields: {_names(fields)})")
    raise TemplateError(
        f"cannot read .{name} of {type(value).__name__}: only dict keys and model or dataclass fields can be read"
    )


def get_item(value: Any, key: Any) -> Any:
    """``value[key]``: a dict key, a list/tuple/str index or slice, or a model field by name."""
    if isinstance(value, Mapping):
        try:
            return value[key]
        except KeyError:
            raise TemplateError(f"no key {key!r} (keys: {_names(value)})") from None
    if isinstance(value, (list, tuple, str)):
        if isinstance(key, slice):
            return value[key]
        if isinstance(key, bool) or not isinstance(key, int):
            raise TemplateError(f"{type(value).__name__} index must be an integer, got {type(key).__name__}")
        try:
            return value[key]
        except IndexError:
            raise TemplateError(f"index {key} is out of range (length {len(value)})") from None
    if isinstance(key, str) and (isinstance(value, BaseModel) or dataclasses.is_dataclass(value)):
        return get_attribute(value, key)
    raise TemplateError(f"cannot index {type(value).__name__} with {type(key).__name__}")


def read_variable(ev: Evaluation, name: str) -> Any:
    """``$var{name}``: the loop variable ``name`` if one is in scope, else the initial input."""
    scope = ev.scope
    if scope is None:
        raise TemplateError(f"$var{{{name}}} needs a run scope, and none was given")
    try:
        return scope.variable(name)
    except (NodeInputError, LookupError):
        pass
    inputs = scope.initial_inputs
    if name in inputs:
        return inputs[name]
    raise TemplateError(
        f"$var{{{name}}} is neither a loop variable in scope nor an initial input (initial inputs: {_names(inputs)})"
    )


def read_outcome(ev: Evaluation, ref: Ref) -> Any:
    """``$hier{path}``: the outcome of an earlier element, found like a :class:`Ref`."""
    scope = ev.scope
    if scope is None:
        raise TemplateError(f"$hier{{{ref.path}}} needs a run scope, and none was given")
    value = scope.lookup(ref.path.parts)
    if value is MISSING:
        raise TemplateError(f"$hier{{{ref.path}}} has no outcome in this run")
    return value


_VAR = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\Z")


def var_reader(content: str) -> Evaluator:
    """The evaluator of ``$var{content}``: ``name`` or ``name.field.field``."""
    m = _VAR.match(content)
    if m is None:
        raise TemplateError(
            f"$var{{{content}}}: expected a name, optionally followed by .field (for more, use $expr{{}})"
        )
    name = m[1]
    fields = tuple(m[2].split(".")[1:])
    if not fields:
        return lambda ev: read_variable(ev, name)

    def read(ev: Evaluation) -> Any:
        value = read_variable(ev, name)
        for f in fields:
            value = get_attribute(value, f)
        return value

    return read


def hier_ref(content: str) -> HierRef:
    """The reference of ``$hier{content}``."""
    try:
        return HierRef(HierarchyPath(content.strip()))
    except RepriseError as exc:
        raise TemplateError(f"$hier{{{content}}}: {exc.message}") from None


# -- operations and their costs ------------------------------------------------------------
#: Predicts, from an operation's operands and before anything is built, the size of the value it
#: will build (a lower bound where the exact size is unknown) and the steps it takes besides.
Cost = Callable[..., tuple[int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """Something an expression can do (an operator, a function, a method) and what it costs.

    Calling it is the one way a value is produced: its predicted cost is charged to the
    evaluation's budget before ``apply`` runs, and the value built is measured afterwards and
    charged for what the prediction missed. ``reads`` marks operations that return existing data
    (``min``, ``dict.get``); a result that is one of the operands (``str('x')``) costs nothing."""

    what: str
    apply: Callable[..., Any]
    cost: Cost
    keywords: frozenset[str] | None = frozenset()
    reads: bool = False

    def __call__(self, ev: Evaluation, *args: Any, **kwargs: Any) -> Any:
        try:
            size, steps = self.cost(ev, *args, **kwargs)
        except TypeError:
            # Arguments the operation does not take: calling it reports them in its own words.
            size, steps = 1, 0
        ev.charge(self.what, size=size, steps=steps)
        value = self.apply(*args, **kwargs)
        if self.reads or any(value is a for a in args):
            return value
        return ev.built(self.what, value, size)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, Sized) else 0


def _walk(ev: Evaluation, values: Iterable[Any]) -> int:
    """The summed size of ``values``, stopping once past the steps left."""
    total = 0
    for v in values:
        total += ev.size(v)
        if total > ev.steps_left:
            break
    return total


def _one(ev: Evaluation, *args: Any, **kwargs: Any) -> tuple[int, int]:
    """A number or bool from a fixed amount of work."""
    return 1, 0


def _walking(ev: Evaluation, *args: Any, **kwargs: Any) -> tuple[int, int]:
    """A number, bool or existing item found by going through the operands (==, in, sum, min)."""
    return 1, _walk(ev, chain(args, kwargs.values()))


_SEQ = (str, list, tuple)


def _add_cost(ev: Evaluation, a: Any, b: Any) -> tuple[int, int]:
    if isinstance(a, str) and isinstance(b, str):
        return max(1, len(a) + len(b)), 0
    if isinstance(a, _SEQ) and isinstance(b, _SEQ):
        return max(1, _walk(ev, (a, b)) - 1), 0  # one container instead of two
    return 1, 0


def _repeat_cost(ev: Evaluation, seq: Any, n: int) -> tuple[int, int]:
    if n <= 0:
        return 1, 0
    # The copies share one container: count its contents n times, the container once.
    if isinstance(seq, str):
        return len(seq) * n, 0
    return 1 + (ev.size(seq) - 1) * n, 0


def _mul_cost(ev: Evaluation, a: Any, b: Any) -> tuple[int, int]:
    if isinstance(a, _SEQ) and isinstance(b, int):
        return _repeat_cost(ev, a, b)
    if isinstance(a, int) and isinstance(b, _SEQ):
        return _repeat_cost(ev, b, a)
    if isinstance(a, int) and isinstance(b, int):
        bits = a.bit_length() + b.bit_length()
        if bits > MAX_INT_BITS:
            raise TemplateError(f"the product would have more than {MAX_INT_BITS:,} bits")
        return _digits(bits), 0
    return 1, 0


def _pow_cost(ev: Evaluation, a: Any, b: Any) -> tuple[int, int]:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        bits = math.log2(abs(a)) * b
        if bits > MAX_INT_BITS:
            raise TemplateError(f"the power would have about {bits:,.0f} bits; the limit is {MAX_INT_BITS:,}")
        return _digits(bits), 0
    return 1, 0


def _mod_cost(ev: Evaluation, a: Any, b: Any) -> tuple[int, int]:
    if isinstance(a, str):
        # '%0999999999d' % 1 would build a gigabyte; string formatting is not offered.
        raise TemplateError("'%' formatting of strings is not supported; use + and str()")
    return 1, 0


_BINARY: dict[type[ast.operator], Operation] = {
    ast.Add: Operation("+", operator.add, _add_cost),
    ast.Sub: Operation("-", operator.sub, _one),
    ast.Mult: Operation("*", operator.mul, _mul_cost),
    ast.Div: Operation("/", operator.truediv, _one),
    ast.FloorDiv: Operation("//", operator.floordiv, _one),
    ast.Mod: Operation("%", operator.mod, _mod_cost),
    ast.Pow: Operation("**", operator.pow, _pow_cost),
}
_UNARY: dict[type[ast.unaryop], Operation] = {
    ast.USub: Operation("-", operator.neg, _one),
    ast.UAdd: Operation("+", operator.pos, _one),
}
_OPERATOR_TEXT = {
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.MatMult: "@",
}


def _not_in(a: Any, b: Any) -> bool:
    return a not in b


def _in(a: Any, b: Any) -> bool:
    return a in b


# Comparing goes through both operands (at worst), except for identity.
_COMPARE: dict[type[ast.cmpop], Operation] = {
    ast.Eq: Operation("==", operator.eq, _walking),
    ast.NotEq: Operation("!=", operator.ne, _walking),
    ast.Lt: Operation("<", operator.lt, _walking),
    ast.LtE: Operation("<=", operator.le, _walking),
    ast.Gt: Operation(">", operator.gt, _walking),
    ast.GtE: Operation(">=", operator.ge, _walking),
    ast.In: Operation("in", _in, _walking),
    ast.NotIn: Operation("not in", _not_in, _walking),
    ast.Is: Operation("is", operator.is_, _one),
    ast.IsNot: Operation("is not", operator.is_not, _one),
}


def _slice_cost(ev: Evaluation, value: Any, key: Any) -> tuple[int, int]:
    if isinstance(value, _SEQ) and isinstance(key, slice):
        try:
            n = len(range(len(value))[key])
        except (TypeError, ValueError):
            return 1, 0  # the slicing itself reports the bad slice
        return (max(1, n), 0) if isinstance(value, str) else (1 + n, 0)
    return 1, 0


_SLICE = Operation("slicing [:]", lambda value, key: get_item(value, key), _slice_cost)


def _display_cost(ev: Evaluation, *values: Any) -> tuple[int, int]:
    return 1 + _walk(ev, values), 0


_LIST_DISPLAY = Operation("a list [...]", lambda *values: list(values), _display_cost)
_TUPLE_DISPLAY = Operation("a tuple (...)", lambda *values: values, _display_cost)
_DICT_DISPLAY = Operation("a dict {...}", lambda *flat: dict(zip(flat[::2], flat[1::2], strict=True)), _display_cost)


# -- functions and methods --------------------------------------------------------------------
def _number(value: Any, what: str) -> Any:
    if not isinstance(value, (int, float)):
        raise TemplateError(f"{what} adds numbers only, got {type(value).__name__}")
    return value


def _sum(iterable: Iterable[Any], start: Any = 0) -> Any:
    total = _number(start, "sum()")
    for item in iterable:
        total = total + _number(item, "sum()")
    return total


def _round_cost(ev: Evaluation, number: Any, ndigits: Any = None) -> tuple[int, int]:
    if isinstance(ndigits, int) and abs(ndigits) > _MAX_ROUND_DIGITS:
        raise TemplateError(f"round(): ndigits must be within ±{_MAX_ROUND_DIGITS}")
    return 1, 0


def _range_cost(ev: Evaluation, *args: Any) -> tuple[int, int]:
    if not all(isinstance(a, int) for a in args):
        raise TemplateError("range() takes integers")
    try:
        return 1 + len(range(*args)), 0
    except OverflowError:
        return 1 + 2**63, 0
    except (TypeError, ValueError):
        return 1, 0  # range() itself reports the wrong arguments


def _text_cost(ev: Evaluation, value: Any = "") -> tuple[int, int]:
    # Compact JSON has at least a character per character or item counted by size().
    return (1, 0) if isinstance(value, str) else (ev.size(value), 0)


def _parse_cost(ev: Evaluation, value: Any = 0, *args: Any, **kwargs: Any) -> tuple[int, int]:
    return 1, len(value) if isinstance(value, str) else 0


def _sorted_cost(ev: Evaluation, items: Any, **kwargs: Any) -> tuple[int, int]:
    # Each item takes part in about log2(n) comparisons, each going through it at worst.
    n = _count(items)
    return 1 + n, max(1, math.ceil(math.log2(n + 1))) * ev.size(items)


def _list_cost(ev: Evaluation, items: Any = ()) -> tuple[int, int]:
    return 1 + _count(items), 0


def _dict_cost(ev: Evaluation, *args: Any, **kwargs: Any) -> tuple[int, int]:
    return 1 + 2 * (_count(args[0]) if args else 0) + 2 * len(kwargs), 0


def _function(name: str, apply: Callable[..., Any], cost: Cost, *keywords: str, reads: bool = False) -> Operation:
    return Operation(f"{name}()", apply, cost, frozenset(keywords), reads)


_FUNCTIONS: dict[str, Operation] = {
    "len": _function("len", len, _one),
    "sum": _function("sum", _sum, _walking),
    "min": _function("min", min, _walking, "default", reads=True),
    "max": _function("max", max, _walking, "default", reads=True),
    "sorted": _function("sorted", sorted, _sorted_cost, "reverse"),
    "round": _function("round", round, _round_cost, "ndigits"),
    "str": _function("str", to_text, _text_cost),
    "int": _function("int", int, _parse_cost, "base"),
    "float": _function("float", float, _parse_cost),
    "bool": _function("bool", bool, _one),
    "any": _function("any", any, _walking),
    "all": _function("all", all, _walking),
    "abs": _function("abs", abs, _one),
    "list": _function("list", list, _list_cost),
    "dict": Operation("dict()", dict, _dict_cost, None),
    "range": _function("range", lambda *args: list(range(*args)), _range_cost),
}
#: The functions an expression may call.
FUNCTION_NAMES = frozenset(_FUNCTIONS)


def text_of(ev: Evaluation, value: Any) -> str:
    """``str(value)`` paid from ``ev``'s budget: how an ``$expr{}`` inside a longer template
    becomes text."""
    text: str = _FUNCTIONS["str"](ev, value)
    return text


def _join_cost(ev: Evaluation, sep: Any, items: Any) -> tuple[int, int]:
    if not isinstance(sep, str) or not isinstance(items, (str, list, tuple, Mapping)):
        return 1, 0  # join() itself reports what it cannot join
    n = len(items)
    # Each part counts at least its characters in size(), and one more for the container.
    chars = ev.size(items) - (n if isinstance(items, str) else 1 + n)
    return max(1, chars + len(sep) * max(n - 1, 0)), n


def _replace_cost(ev: Evaluation, s: str, old: Any, new: Any, count: Any = -1) -> tuple[int, int]:
    if not isinstance(old, str) or not isinstance(new, str):
        raise TemplateError("replace() takes strings")
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return max(1, len(s) + hits * (len(new) - len(old))), len(s)


def _split_cost(ev: Evaluation, s: str, sep: Any = None, maxsplit: Any = -1) -> tuple[int, int]:
    # The list counts 1, each part its characters (at least 1).
    if sep is None:
        spaces = sum(s.count(c) for c in " \t\n\r\x0b\x0c")
        return 1 + max(1, len(s) - spaces), len(s)
    if not isinstance(sep, str) or not sep:
        return 1, 0  # split() itself reports the bad separator
    cuts = s.count(sep)
    if isinstance(maxsplit, int) and maxsplit >= 0:
        cuts = min(cuts, maxsplit)
    return 1 + max(cuts + 1, len(s) - cuts * len(sep)), len(s)


def _stretch_cost(ev: Evaluation, s: str) -> tuple[int, int]:
    # lower()/upper() give at least as many characters as they are given.
    return max(1, len(s)), 0


def _scan_cost(ev: Evaluation, s: str, *args: Any, **kwargs: Any) -> tuple[int, int]:
    return 1, len(s) + _walk(ev, args)


def _str_method(name: str, cost: Cost) -> Operation:
    # The method is taken from the str class, not the value, so a str subclass cannot override it.
    return Operation(f".{name}()", getattr(str, name), cost, None)


_STR_METHODS: dict[str, Operation] = {
    "lower": _str_method("lower", _stretch_cost),
    "upper": _str_method("upper", _stretch_cost),
    "strip": _str_method("strip", _scan_cost),
    "split": _str_method("split", _split_cost),
    "startswith": _str_method("startswith", _scan_cost),
    "endswith": _str_method("endswith", _scan_cost),
    "join": _str_method("join", _join_cost),
    "replace": _str_method("replace", _replace_cost),
}


def _keys_cost(ev: Evaluation, d: Mapping[Any, Any]) -> tuple[int, int]:
    return 1 + len(d), 0


def _items_cost(ev: Evaluation, d: Mapping[Any, Any]) -> tuple[int, int]:
    return 1 + 3 * len(d), 0


_DICT_METHODS: dict[str, Operation] = {
    "get": Operation(".get()", lambda d, key, default=None: d.get(key, default), _one, None, reads=True),
    "keys": Operation(".keys()", lambda d: list(d.keys()), _keys_cost, None),
    "values": Operation(".values()", lambda d: list(d.values()), _keys_cost, None),
    "items": Operation(".items()", lambda d: list(d.items()), _items_cost, None),
}
#: The methods an expression may call: on strings, and on dicts.
STR_METHOD_NAMES = frozenset(_STR_METHODS)
DICT_METHOD_NAMES = frozenset(_DICT_METHODS)


# -- translation -------------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\$(var|hier)\{([^{}]*)\}")


def string_end(text: str, i: int) -> int:
    """The index just past the string literal that starts with the quote at ``text[i]``."""
    quote = text[i]
    delim = quote * 3 if text.startswith(quote * 3, i) else quote
    j = i + len(delim)
    n = len(text)
    while j < n:
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if text.startswith(delim, j):
            return j + len(delim)
        j += 1
    raise TemplateError("unterminated string literal")


def _translate(source: str) -> tuple[str, list[tuple[str, str]]]:
    """Python source for ``ast.parse`` and the placeholders it names (``_p0``, ``_p1``, ...).

    String literals are copied untouched; outside them ``&&``, ``||`` and ``!`` become ``and``,
    ``or`` and ``not``, and any name starting with ``_`` is refused, so the placeholders (and
    dunder names) can never be written by hand."""
    out: list[str] = []
    holes: list[tuple[str, str]] = []
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if c == "'" or c == '"':
            j = string_end(source, i)
            out.append(source[i:j])
            i = j
        elif c == "$":
            m = _PLACEHOLDER.match(source, i)
            if m is not None:
                out.append(f" _p{len(holes)} ")
                holes.append((m[1], m[2]))
                i = m.end()
            elif source.startswith("$expr{", i):
                raise TemplateError("$expr{} cannot be nested inside $expr{}")
            else:
                raise TemplateError("unexpected '$' in an expression (use $var{name} or $hier{path})")
        elif c == "&" and source.startswith("&&", i):
            out.append(" and ")
            i += 2
        elif c == "|" and source.startswith("||", i):
            out.append(" or ")
            i += 2
        elif c == "!" and not source.startswith("!=", i):
            out.append(" not ")
            i += 1
        elif c.isdigit():
            # Numbers are copied whole so '1_000' is not read as a name '_000'.
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] in "_."):
                j += 1
            out.append(source[i:j])
            i = j
        elif c.isidentifier():
            j = i + 1
            while j < n and (source[j].isalnum() or source[j] == "_"):
                j += 1
            word = source[i:j]
            if word.startswith("_"):
                raise TemplateError(f"names starting with '_' are not allowed: {word!r}")
            out.append(word)
            i = j
        elif c in "\r\n\t":
            out.append(" ")  # an expression may span lines, as in the template it sits in
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), holes


# -- compilation -------------------------------------------------------------------------------
_CONSTANT_NAMES: dict[str, Any] = {"true": True, "false": False, "null": None}
_NODE_TEXT = {
    "Lambda": "lambdas",
    "ListComp": "comprehensions",
    "SetComp": "comprehensions",
    "DictComp": "comprehensions",
    "GeneratorExp": "generator expressions",
    "NamedExpr": "assignment expressions (:=)",
    "JoinedStr": "f-strings",
    "FormattedValue": "f-strings",
    "Set": "set displays",
    "Starred": "starred (*) arguments",
    "Await": "await expressions",
    "Yield": "yield expressions",
    "YieldFrom": "yield expressions",
}


class CompiledExpression:
    """An expression, parsed and compiled once; :meth:`evaluate` runs it against a scope."""

    __slots__ = ("_fn", "refs", "source")

    def __init__(self, source: str, fn: Evaluator, refs: tuple[HierRef, ...]) -> None:
        self.source = source
        #: The ``$hier{}`` references inside, checked against the definition before a run.
        self.refs = refs
        self._fn = fn

    def __call__(self, ev: Evaluation) -> Any:
        return self._fn(ev)

    def evaluate(self, scope: Scope | None) -> Any:
        """The expression's value in ``scope`` (errors other than :class:`TemplateError` are
        left to the caller, which knows the template around the expression)."""
        return self._fn(Evaluation(scope))

    def __repr__(self) -> str:
        return f"CompiledExpression({self.source!r})"


def compile_expression(source: str) -> CompiledExpression:
    """Parse and compile one expression (the text inside ``$expr{...}``).

    Raises :class:`TemplateError` for syntax errors, anything outside the allowed language and
    expressions longer than :data:`MAX_EXPRESSION_LENGTH` or nested deeper than :data:`MAX_DEPTH`.
    """
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise TemplateError(
            f"expression is too long ({len(source):,} characters; the limit is {MAX_EXPRESSION_LENGTH:,})"
        )
    text, holes = _translate(source)
    text = text.strip()
    if not text:
        raise TemplateError("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise TemplateError(f"invalid expression: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise TemplateError(f"invalid expression: {exc}") from None
    placeholders: dict[str, Evaluator] = {}
    hier_names: set[str] = set()
    refs: list[HierRef] = []
    for k, (kind, content) in enumerate(holes):
        name = f"_p{k}"
        if kind == "var":
            placeholders[name] = var_reader(content)
        else:
            ref = hier_ref(content)
            refs.append(ref)
            hier_names.add(name)
            placeholders[name] = _outcome_reader(ref)
    fn = _Compiler(placeholders, hier_names).compile(tree.body, 0)
    return CompiledExpression(source, fn, tuple(refs))


def _outcome_reader(ref: Ref) -> Evaluator:
    return lambda ev: read_outcome(ev, ref)


def _constant(value: Any) -> Evaluator:
    return lambda ev: value


class _Compiler:
    """Turns an expression's syntax tree into closures. Any node type without a method here is
    refused, so the accepted language is exactly what this class lists."""

    def __init__(self, placeholders: dict[str, Evaluator], hier_names: set[str]) -> None:
        self.placeholders = placeholders
        self.hier_names = hier_names

    def compile(self, node: ast.AST, depth: int) -> Evaluator:
        if depth >= MAX_DEPTH:
            raise TemplateError(f"expression is nested too deeply (the limit is {MAX_DEPTH} levels)")
        kind = type(node).__name__
        method: Callable[[Any, int], Evaluator] | None = getattr(self, f"c_{kind}", None)
        if method is None:
            what = _NODE_TEXT.get(kind, f"{kind} nodes")
            raise TemplateError(f"{what} are not allowed in expressions")
        return method(node, depth + 1)

    def c_Constant(self, node: ast.Constant, depth: int) -> Evaluator:
        value = node.value
        if value is not None and not isinstance(value, (str, int, float)):
            raise TemplateError(f"{type(value).__name__} literals are not allowed in expressions")
        return _constant(value)

    def c_Name(self, node: ast.Name, depth: int) -> Evaluator:
        name = node.id
        found = self.placeholders.get(name)
        if found is not None:
            return found
        if name in _CONSTANT_NAMES:
            return _constant(_CONSTANT_NAMES[name])
        if name in _FUNCTIONS:
            raise TemplateError(f"{name} is a function: call it, {name}(...)")
        raise TemplateError(f"unknown name {name!r}: write $var{{{name}}} for a loop variable or initial input")

    def c_Attribute(self, node: ast.Attribute, depth: int) -> Evaluator:
        attr = node.attr
        if attr.startswith("_"):
            raise TemplateError(f"access to {attr!r} is not allowed (names starting with '_' are private)")
        target = node.value
        if attr == "outcome" and isinstance(target, ast.Name) and target.id in self.hier_names:
            # $hier{x}.outcome is the seed system's "result object, then its outcome": here
            # $hier{x} already is the outcome, so this .outcome selects nothing.
            return self.placeholders[target.id]
        value = self.compile(target, depth)
        return lambda ev: get_attribute(value(ev), attr)

    def c_Subscript(self, node: ast.Subscript, depth: int) -> Evaluator:
        value = self.compile(node.value, depth)
        key = self.compile(node.slice, depth)
        if isinstance(node.slice, ast.Slice):
            return lambda ev: _SLICE(ev, value(ev), key(ev))
        return lambda ev: get_item(value(ev), key(ev))

    def c_Slice(self, node: ast.Slice, depth: int) -> Evaluator:
        lower, upper, step = (
            self.compile(p, depth) if p is not None else _constant(None) for p in (node.lower, node.upper, node.step)
        )
        return lambda ev: slice(lower(ev), upper(ev), step(ev))

    def c_BinOp(self, node: ast.BinOp, depth: int) -> Evaluator:
        op = _BINARY.get(type(node.op))
        if op is None:
            text = _OPERATOR_TEXT.get(type(node.op), type(node.op).__name__)
            hint = " (for logic use and/or, && or ||)" if text in "&|" else ""
            raise TemplateError(f"operator {text} is not supported{hint}")
        left = self.compile(node.left, depth)
        right = self.compile(node.right, depth)
        return lambda ev: op(ev, left(ev), right(ev))

    def c_UnaryOp(self, node: ast.UnaryOp, depth: int) -> Evaluator:
        operand = self.compile(node.operand, depth)
        if isinstance(node.op, ast.Not):
            return lambda ev: not operand(ev)
        op = _UNARY.get(type(node.op))
        if op is None:
            raise TemplateError("operator ~ is not supported")
        return lambda ev: op(ev, operand(ev))

    def c_BoolOp(self, node: ast.BoolOp, depth: int) -> Evaluator:
        values = [self.compile(v, depth) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(ev: Evaluation) -> Any:
                result: Any = True
                for v in values:
                    result = v(ev)
                    if not result:
                        return result
                return result

            return all_of

        def any_of(ev: Evaluation) -> Any:
            result: Any = False
            for v in values:
                result = v(ev)
                if result:
                    return result
            return result

        return any_of

    def c_Compare(self, node: ast.Compare, depth: int) -> Evaluator:
        left = self.compile(node.left, depth)
        ops = [_COMPARE[type(op)] for op in node.ops]
        rights = [self.compile(c, depth) for c in node.comparators]
        if len(ops) == 1:
            op, right = ops[0], rights[0]
            return lambda ev: op(ev, left(ev), right(ev))

        def chained(ev: Evaluation) -> Any:
            a = left(ev)
            for op, right in zip(ops, rights, strict=True):
                b = right(ev)
                if not op(ev, a, b):
                    return False
                a = b
            return True

        return chained

    def c_IfExp(self, node: ast.IfExp, depth: int) -> Evaluator:
        test = self.compile(node.test, depth)
        body = self.compile(node.body, depth)
        orelse = self.compile(node.orelse, depth)
        return lambda ev: body(ev) if test(ev) else orelse(ev)

    def _display(self, elements: list[ast.expr], depth: int, build: Operation) -> Evaluator:
        items = [self.compile(e, depth) for e in elements]
        return lambda ev: build(ev, *[item(ev) for item in items])

    def c_List(self, node: ast.List, depth: int) -> Evaluator:
        return self._display(node.elts, depth, _LIST_DISPLAY)

    def c_Tuple(self, node: ast.Tuple, depth: int) -> Evaluator:
        return self._display(node.elts, depth, _TUPLE_DISPLAY)

    def c_Dict(self, node: ast.Dict, depth: int) -> Evaluator:
        if any(k is None for k in node.keys):
            raise TemplateError("** unpacking is not allowed in expressions")
        keys = [k for k in node.keys if k is not None]
        flat = [e for pair in zip(keys, node.values, strict=True) for e in pair]
        return self._display(flat, depth, _DICT_DISPLAY)

    def c_Call(self, node: ast.Call, depth: int) -> Evaluator:
        if any(k.arg is None for k in node.keywords):
            raise TemplateError("** unpacking is not allowed in expressions")
        args = [self.compile(a, depth) for a in node.args]
        kwargs = [(k.arg, self.compile(k.value, depth)) for k in node.keywords if k.arg is not None]
        func = node.func
        if isinstance(func, ast.Name) and func.id in _FUNCTIONS:
            impl = _FUNCTIONS[func.id]
            allowed = impl.keywords
            bad = [k for k, _ in kwargs if allowed is not None and k not in allowed]
            if bad:
                raise TemplateError(f"{func.id}() takes no keyword argument {bad[0]!r} here")
            return self._call(impl, args, kwargs)
        if isinstance(func, ast.Attribute):
            return self._method(func, args, kwargs, depth)
        if isinstance(func, ast.Name):
            allowed_text = ", ".join(sorted(_FUNCTIONS))
            raise TemplateError(f"function {func.id!r} is not available; the functions are: {allowed_text}")
        raise TemplateError("only the whitelisted functions and str/dict methods can be called")

    @staticmethod
    def _call(impl: Operation, args: list[Evaluator], kwargs: list[tuple[str, Evaluator]]) -> Evaluator:
        if not kwargs:
            if len(args) == 1:
                arg = args[0]
                return lambda ev: impl(ev, arg(ev))
            return lambda ev: impl(ev, *[a(ev) for a in args])
        return lambda ev: impl(ev, *[a(ev) for a in args], **{k: v(ev) for k, v in kwargs})

    def _method(
        self, func: ast.Attribute, args: list[Evaluator], kwargs: list[tuple[str, Evaluator]], depth: int
    ) -> Evaluator:
        name = func.attr
        str_impl = _STR_METHODS.get(name)
        dict_impl = _DICT_METHODS.get(name)
        if str_impl is None and dict_impl is None:
            methods = ", ".join(sorted(_STR_METHODS | _DICT_METHODS))
            raise TemplateError(f"method .{name}() is not available; the methods are: {methods}")
        receiver = self.compile(func.value, depth)

        def call(ev: Evaluation) -> Any:
            obj = receiver(ev)
            if isinstance(obj, str) and str_impl is not None:
                impl = str_impl
            elif isinstance(obj, Mapping) and dict_impl is not None:
                impl = dict_impl
            else:
                owner = "str" if str_impl is not None else "dict"
                raise TemplateError(f".{name}() is a method of {owner}, not of {type(obj).__name__}")
            return impl(ev, obj, *[a(ev) for a in args], **{k: v(ev) for k, v in kwargs})

        return call
