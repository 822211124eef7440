"""The safe expression evaluator behind ``$expr{...}`` (see docs/templates.md).

An expression is translated (``&&``/``||``/``!`` become ``and``/``or``/``not``, ``$var{}`` and
``$hier{}`` become placeholders), parsed once with ``ast.parse(mode="eval")`` and compiled into a
tree of small Python closures. Nothing is ever handed to ``eval``, ``exec`` or ``compile``: only
the node types listed in :class:`_Compiler` are accepted, names are limited to placeholders,
``true``/``false``/``null`` and the function whitelist, and every operation that could grow a
value (``**``, ``*``, ``+``, displays, ``range``, ``join``, ``replace``) checks the size of its
result *before* computing it. Evaluation only reads data: dict keys, pydantic model fields and
dataclass fields, never other attributes, never names starting with ``_``.

The limits are module constants so the documentation and the tests name the same numbers.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from itertools import chain, islice
from typing import TYPE_CHECKING, Any

import pydantic_core
from pydantic import BaseModel

from reprise.dsl.paths import HierarchyPath
from reprise.dsl.sources import MISSING, Ref
from reprise.errors import NodeInputError, RepriseError, TemplateError

if TYPE_CHECKING:
    from reprise.dsl.scope import Scope

__all__ = [
    "MAX_DEPTH",
    "MAX_EXPRESSION_LENGTH",
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SIZE",
    "CompiledExpression",
    "Evaluation",
    "HierRef",
    "compile_expression",
    "to_text",
]

#: Longest accepted expression (the text inside ``$expr{...}``), in characters.
MAX_EXPRESSION_LENGTH = 2000
#: Deepest accepted nesting of the expression's syntax tree.
MAX_DEPTH = 32
#: Largest integer an operation may produce, in bits (about 3000 decimal digits).
MAX_INT_BITS = 10_000
#: Largest value an operation may build: characters of strings plus items of lists, tuples and
#: dicts, counted through nested containers.
MAX_SIZE = 1_000_000
#: Most items ``range()`` may produce.
MAX_RANGE = 100_000
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
    """The state of one evaluation: the scope values are read from, and the sizes of the values
    seen so far (by identity), so a size check never walks the same value twice."""

    __slots__ = ("_sizes", "scope")

    def __init__(self, scope: Scope | None) -> None:
        self.scope = scope
        self._sizes: dict[int, tuple[Any, int]] | None = None

    def size(self, value: Any) -> int:
        """Characters plus items in ``value``, counted through nested containers; stops counting
        once past :data:`MAX_SIZE`."""
        if isinstance(value, str):
            return len(value)
        if value is None or isinstance(value, (int, float)):
            return 1
        memo = self._sizes
        if memo is None:
            memo = self._sizes = {}
        hit = memo.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1]
        total = 0
        stack: list[Any] = [value]
        while stack and total <= MAX_SIZE:
            item = stack.pop()
            if isinstance(item, str):
                total += len(item)
                continue
            total += 1
            if item is not value:
                known = memo.get(id(item))
                if known is not None and known[0] is item:
                    total += known[1] - 1
                    continue
            stack.extend(islice(_children(item), MAX_SIZE + 1))
        # Keeping the value alive in the memo keeps its id from being reused during this evaluation.
        memo[id(value)] = (value, total)
        return total

    def created(self, value: Any, size: int) -> Any:
        """Record the size of a value an operation just built, after checking it."""
        check_size(size)
        if self._sizes is None:
            self._sizes = {}
        self._sizes[id(value)] = (value, size)
        return value


def _children(value: Any) -> Iterable[Any]:
    if isinstance(value, (list, tuple, set, frozenset)):
        return value
    if isinstance(value, Mapping):
        return chain.from_iterable(value.items())
    if isinstance(value, BaseModel):
        return value.__dict__.values()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [getattr(value, f.name) for f in dataclasses.fields(value)]
    return ()


def check_size(size: int) -> None:
    """Raise :class:`TemplateError` if a value of ``size`` would be too large to build."""
    if size > MAX_SIZE:
        raise TemplateError(f"the result would be too large ({size:,} characters/items; the limit is {MAX_SIZE:,})")


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


# -- operators -------------------------------------------------------------------------------
_SEQ = (str, list, tuple)


def _add(ev: Evaluation, a: Any, b: Any) -> Any:
    if isinstance(a, _SEQ) and isinstance(b, _SEQ):
        size = ev.size(a) + ev.size(b)
        check_size(size)
        return ev.created(operator.add(a, b), size)
    return a + b


def _repeat(ev: Evaluation, seq: Any, n: int) -> Any:
    if n <= 0:
        return seq[:0]
    # The copies share one container: count its contents n times, the container once.
    size = ev.size(seq) * n if isinstance(seq, str) else 1 + (ev.size(seq) - 1) * n
    check_size(size)
    return ev.created(seq * n, size)


def _mul(ev: Evaluation, a: Any, b: Any) -> Any:
    if isinstance(a, _SEQ) and isinstance(b, int):
        return _repeat(ev, a, b)
    if isinstance(a, int) and isinstance(b, _SEQ):
        return _repeat(ev, b, a)
    if isinstance(a, int) and isinstance(b, int) and a.bit_length() + b.bit_length() > MAX_INT_BITS:
        raise TemplateError(f"the product would have more than {MAX_INT_BITS:,} bits")
    return a * b


def _pow(ev: Evaluation, a: Any, b: Any) -> Any:
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        bits = math.log2(abs(a)) * b
        if bits > MAX_INT_BITS:
            raise TemplateError(f"the power would have about {bits:,.0f} bits; the limit is {MAX_INT_BITS:,}")
    return a**b


def _mod(ev: Evaluation, a: Any, b: Any) -> Any:
    if isinstance(a, str):
        # '%0999999999d' % 1 would build a gigabyte; string formatting is not offered.
        raise TemplateError("'%' formatting of strings is not supported; use + and str()")
    return a % b


def _plain(fn: Callable[[Any, Any], Any]) -> Callable[[Evaluation, Any, Any], Any]:
    return lambda ev, a, b: fn(a, b)


_BINARY: dict[type[ast.operator], Callable[[Evaluation, Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: _plain(operator.sub),
    ast.Mult: _mul,
    ast.Div: _plain(operator.truediv),
    ast.FloorDiv: _plain(operator.floordiv),
    ast.Mod: _mod,
    ast.Pow: _pow,
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


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: _in,
    ast.NotIn: _not_in,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


# -- functions and methods --------------------------------------------------------------------
def _number(value: Any, what: str) -> Any:
    if not isinstance(value, (int, float)):
        raise TemplateError(f"{what} adds numbers only, got {type(value).__name__}")
    return value


def _sum(ev: Evaluation, iterable: Iterable[Any], start: Any = 0) -> Any:
    total = _number(start, "sum()")
    for item in iterable:
        total = total + _number(item, "sum()")
    return total


def _round(ev: Evaluation, number: Any, ndigits: Any = None) -> Any:
    if isinstance(ndigits, int) and abs(ndigits) > _MAX_ROUND_DIGITS:
        raise TemplateError(f"round(): ndigits must be within ±{_MAX_ROUND_DIGITS}")
    return round(number, ndigits)


def _range(ev: Evaluation, *args: Any) -> list[int]:
    if not all(isinstance(a, int) for a in args):
        raise TemplateError("range() takes integers")
    r = range(*args)
    try:
        n = len(r)
    except OverflowError:
        n = MAX_RANGE + 1
    if n > MAX_RANGE:
        raise TemplateError(f"range() would have more than {MAX_RANGE:,} items")
    return list(r)


def _str(ev: Evaluation, value: Any = "") -> str:
    return to_text(value)


def _wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
    return lambda ev, *args, **kwargs: fn(*args, **kwargs)


# name -> (implementation taking the evaluation first, keyword arguments it accepts; None: any)
_FUNCTIONS: dict[str, tuple[Callable[..., Any], frozenset[str] | None]] = {
    "len": (_wrap(len), frozenset()),
    "sum": (_sum, frozenset()),
    "min": (_wrap(min), frozenset({"default"})),
    "max": (_wrap(max), frozenset({"default"})),
    "sorted": (_wrap(sorted), frozenset({"reverse"})),
    "round": (_round, frozenset({"ndigits"})),
    "str": (_str, frozenset()),
    "int": (_wrap(int), frozenset({"base"})),
    "float": (_wrap(float), frozenset()),
    "bool": (_wrap(bool), frozenset()),
    "any": (_wrap(any), frozenset()),
    "all": (_wrap(all), frozenset()),
    "abs": (_wrap(abs), frozenset()),
    "list": (_wrap(list), frozenset()),
    "dict": (_wrap(dict), None),
    "range": (_range, frozenset()),
}
#: The functions an expression may call.
FUNCTION_NAMES = frozenset(_FUNCTIONS)


def _join(ev: Evaluation, sep: str, items: Iterable[Any]) -> str:
    parts = list(items)
    size = sum(len(p) if isinstance(p, str) else 0 for p in parts) + len(sep) * max(len(parts) - 1, 0)
    check_size(size)
    return ev.created(str.join(sep, parts), size)  # type: ignore[no-any-return]


def _replace(ev: Evaluation, s: str, old: str, new: str, count: int = -1) -> str:
    if not isinstance(old, str) or not isinstance(new, str):
        raise TemplateError("replace() takes strings")
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    size = len(s) + hits * (len(new) - len(old))
    check_size(size)
    return str.replace(s, old, new, count)


def _str_method(name: str) -> Callable[..., Any]:
    # The method is taken from the str class, not the value, so a str subclass cannot override it.
    method = getattr(str, name)
    return lambda ev, s, *args, **kwargs: method(s, *args, **kwargs)


_STR_METHODS: dict[str, Callable[..., Any]] = {
    **{n: _str_method(n) for n in ("lower", "upper", "strip", "split", "startswith", "endswith")},
    "join": _join,
    "replace": _replace,
}


def _dict_get(ev: Evaluation, d: Mapping[Any, Any], key: Any, default: Any = None) -> Any:
    return d.get(key, default)


_DICT_METHODS: dict[str, Callable[..., Any]] = {
    "get": _dict_get,
    "keys": lambda ev, d: list(d.keys()),
    "values": lambda ev, d: list(d.values()),
    "items": lambda ev, d: list(d.items()),
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
        if isinstance(node.op, ast.USub):
            return lambda ev: -operand(ev)
        if isinstance(node.op, ast.UAdd):
            return lambda ev: +operand(ev)
        raise TemplateError("operator ~ is not supported")

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
            return lambda ev: op(left(ev), right(ev))

        def chained(ev: Evaluation) -> Any:
            a = left(ev)
            for op, right in zip(ops, rights, strict=True):
                b = right(ev)
                if not op(a, b):
                    return False
                a = b
            return True

        return chained

    def c_IfExp(self, node: ast.IfExp, depth: int) -> Evaluator:
        test = self.compile(node.test, depth)
        body = self.compile(node.body, depth)
        orelse = self.compile(node.orelse, depth)
        return lambda ev: body(ev) if test(ev) else orelse(ev)

    def _display(self, elements: list[ast.expr], depth: int, build: Callable[[list[Any]], Any]) -> Evaluator:
        items = [self.compile(e, depth) for e in elements]

        def make(ev: Evaluation) -> Any:
            values = [item(ev) for item in items]
            return ev.created(build(values), 1 + sum(ev.size(v) for v in values))

        return make

    def c_List(self, node: ast.List, depth: int) -> Evaluator:
        return self._display(node.elts, depth, list)

    def c_Tuple(self, node: ast.Tuple, depth: int) -> Evaluator:
        return self._display(node.elts, depth, tuple)

    def c_Dict(self, node: ast.Dict, depth: int) -> Evaluator:
        if any(k is None for k in node.keys):
            raise TemplateError("** unpacking is not allowed in expressions")
        keys = [k for k in node.keys if k is not None]
        flat = [e for pair in zip(keys, node.values, strict=True) for e in pair]
        return self._display(flat, depth, lambda v: dict(zip(v[::2], v[1::2], strict=True)))

    def c_Call(self, node: ast.Call, depth: int) -> Evaluator:
        if any(k.arg is None for k in node.keywords):
            raise TemplateError("** unpacking is not allowed in expressions")
        args = [self.compile(a, depth) for a in node.args]
        kwargs = [(k.arg, self.compile(k.value, depth)) for k in node.keywords if k.arg is not None]
        func = node.func
        if isinstance(func, ast.Name) and func.id in _FUNCTIONS:
            impl, allowed = _FUNCTIONS[func.id]
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
    def _call(impl: Callable[..., Any], args: list[Evaluator], kwargs: list[tuple[str, Evaluator]]) -> Evaluator:
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
