"""Templates: ``$var{name}``, ``$expr{...}``, ``$hier{path}`` and ``$$`` (see docs/templates.md).

::

    .node("greet", greet, inputs={"text": "Hello $var{name}, you have $expr{len($hier{inbox})} messages"})
    .conditional("big", "$expr{$hier{count}.words > 1000}", summarize_flow)
    .for_each("per_task", "$hier{planner.plan}", task_flow, item_var="task", max_iterations=50)

A string that contains ``$var{``, ``$expr{`` or ``$hier{`` given as a node input, a condition or
loop items is compiled when the flow is built (:func:`compile_value`) into a :class:`Template`,
a value source: its ``$hier{}`` references are checked with the rest of the definition, and it
is rendered each time the element runs. A template that is exactly one ``$var{}``, ``$expr{}``
or ``$hier{}`` gives the raw value (list, dict, number, model); any other gives a string.
Values substituted into a template are never evaluated again.

Built-in nodes render their own settings (a prompt, say) with :func:`render`::

    text = render(self.prompt, ctx.scope, path=str(ctx.path))
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from reprise.dsl._expr import (
    MAX_EXPRESSION_LENGTH,
    CompiledExpression,
    Evaluation,
    Evaluator,
    HierRef,
    compile_expression,
    hier_ref,
    read_outcome,
    string_end,
    text_of,
    to_text,
    var_reader,
)
from reprise.dsl._sources import Ref, Source
from reprise.errors import RepriseError, TemplateError

if TYPE_CHECKING:
    from reprise.dsl._scope import Scope

__all__ = ["MAX_TEMPLATE_LENGTH", "Template", "compile_value", "is_template", "render"]

#: Longest accepted template text, in characters.
MAX_TEMPLATE_LENGTH = 1_000_000
_MARKERS = ("$var{", "$expr{", "$hier{")
_PART = re.compile(r"\$(?:(\$)|(var|expr|hier)\{|([A-Za-z_][A-Za-z0-9_]*)\{)")


class _Hole:
    """One ``$var{}``, ``$expr{}`` or ``$hier{}`` in a template."""

    __slots__ = ("fn", "text")

    def __init__(self, text: str, fn: Evaluator) -> None:
        self.text = text
        self.fn = fn

    def text_value(self, ev: Evaluation) -> str:
        """The part as text inside a longer template. An expression's value becomes text as
        ``str()`` makes it, paid from the evaluation's budget; a ``$var{}`` or ``$hier{}`` is
        data that already exists and is shown as it is."""
        value = self.value(ev)
        if not isinstance(self.fn, CompiledExpression):
            return to_text(value)
        try:
            return text_of(ev, value)
        except TemplateError as exc:
            exc.expression = self.text
            raise

    def value(self, ev: Evaluation) -> Any:
        try:
            return self.fn(ev)
        except TemplateError as exc:
            if exc.expression is None:
                exc.expression = self.text
            raise
        except RepriseError as exc:
            raise TemplateError(exc.message, expression=self.text) from exc
        except Exception as exc:
            # TypeError, ZeroDivisionError, OverflowError, ... from the operations themselves.
            raise TemplateError(f"{type(exc).__name__}: {exc}", expression=self.text) from exc


def _expression_end(text: str, start: int) -> int:
    """The index of the ``}`` closing the ``$expr{`` whose body starts at ``start``."""
    depth = 1
    i, n = start, len(text)
    limit = start + MAX_EXPRESSION_LENGTH + 1
    while i < n and i <= limit:
        c = text[i]
        if c == "'" or c == '"':
            i = string_end(text, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    if i > limit:
        raise TemplateError(f"expression is too long (the limit is {MAX_EXPRESSION_LENGTH:,} characters)")
    raise TemplateError("unterminated $expr{: no matching '}'")


def _parse(text: str) -> tuple[list[str | _Hole], list[HierRef]]:
    parts: list[str | _Hole] = []
    refs: list[HierRef] = []
    literal: list[str] = []
    pos = 0
    while True:
        i = text.find("$", pos)
        if i < 0:
            literal.append(text[pos:])
            break
        m = _PART.match(text, i)
        if m is None:
            # A '$' that starts nothing (a price, a shell variable) is an ordinary character.
            literal.append(text[pos : i + 1])
            pos = i + 1
            continue
        literal.append(text[pos:i])
        if m[1]:
            literal.append("$")
            pos = m.end()
            continue
        if m[3]:
            raise TemplateError(
                f"unknown template part ${m[3]}{{: use $var{{}}, $expr{{}} or $hier{{}}, and $$ for a literal $",
                expression=text[i : i + 40],
            )
        kind, start = m[2], m.end()
        end = -1
        try:
            if kind == "expr":
                end = _expression_end(text, start)
                compiled = compile_expression(text[start:end])
                refs.extend(compiled.refs)
                fn: Evaluator = compiled
            else:
                end = text.find("}", start)
                if end < 0:
                    raise TemplateError(f"unterminated ${kind}{{: no matching '}}'")
                if kind == "var":
                    fn = var_reader(text[start:end])
                else:
                    ref = hier_ref(text[start:end])
                    refs.append(ref)
                    fn = _outcome(ref)
        except TemplateError as exc:
            if exc.expression is None:
                exc.expression = text[i : end + 1] if end >= 0 else text[i : i + 60]
            raise
        if literal:
            joined = "".join(literal)
            if joined:
                parts.append(joined)
            literal = []
        parts.append(_Hole(text[i : end + 1], fn))
        pos = end + 1
    joined = "".join(literal)
    if joined:
        parts.append(joined)
    return parts, refs


def _outcome(ref: Ref) -> Evaluator:
    return lambda ev: read_outcome(ev, ref)


class Template(Source):
    """A compiled template; a value source wherever a node input, condition or loop items go.

    >>> Template("$expr{1 + 2}").render(None)
    3
    >>> Template("total: $expr{1 + 2}").render(None)
    'total: 3'

    ``refs()`` gives the references of its ``$hier{}`` parts (checked before a run).
    ``variables()`` is empty on purpose: ``$var{x}`` may name an initial input rather than a
    loop variable, so it is resolved at run time (loop variable first, then initial input).
    """

    __slots__ = ("_parts", "_refs", "_single", "text")

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise TemplateError(f"a template is a string, got {type(text).__name__}")
        if len(text) > MAX_TEMPLATE_LENGTH:
            raise TemplateError(
                f"template is too long ({len(text):,} characters; the limit is {MAX_TEMPLATE_LENGTH:,})"
            )
        parts, refs = _parse(text)
        self.text = text
        self._parts = tuple(parts)
        # A lone part is returned as it is: the raw value of a hole, or the text of a template
        # without holes (render() treats every text as a template).
        self._single: str | _Hole | None = parts[0] if len(parts) == 1 else None
        self._refs = tuple(refs)

    def render(self, scope: Scope | None, *, path: str | None = None) -> Any:
        """The template's value in ``scope``: the raw value of a lone ``$var{}``/``$expr{}``/
        ``$hier{}``, else a string. Errors are :class:`TemplateError` naming ``path``."""
        try:
            single = self._single
            if single is not None:
                return single if isinstance(single, str) else single.value(Evaluation(scope))
            ev = Evaluation(scope)
            return "".join(p if isinstance(p, str) else p.text_value(ev) for p in self._parts)
        except TemplateError as exc:
            if exc.path is None:
                exc.path = path
            raise

    def resolve(self, scope: Scope) -> Any:
        return self.render(scope)

    def refs(self) -> Sequence[Ref]:
        return self._refs

    def variables(self) -> Sequence[str]:
        return ()

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash((Template, self.text))

    def __reduce__(self) -> tuple[Any, ...]:
        # The compiled parts are closures; a copy (Dask, multiprocessing) compiles the text again.
        return (Template, (self.text,))


def is_template(text: str) -> bool:
    """True if ``text`` contains ``$var{``, ``$expr{`` or ``$hier{`` (so building a flow turns it
    into a :class:`Template`)."""
    return any(m in text for m in _MARKERS)


def compile_value(value: Any, *, path: str | None = None) -> Any:
    """Compile every template string in ``value`` (looking into plain dicts and lists): strings
    containing ``$var{``, ``$expr{`` or ``$hier{`` become :class:`Template` sources, everything
    else is returned as it is. Called when a flow is built; a bad template raises
    :class:`TemplateError` naming ``path`` (the element's id)."""
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            return Template(value)
        except TemplateError as exc:
            if exc.path is None:
                exc.path = path
            raise
    if type(value) is dict:
        return {k: compile_value(v, path=path) for k, v in value.items()}
    if type(value) is list:
        return [compile_value(v, path=path) for v in value]
    return value


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Template:
    # Built-in nodes render the same settings on every run: compile each text once.
    return Template(text)


def render(template: str | Template, scope: Scope | None, *, path: str) -> Any:
    """Render ``template`` (text or :class:`Template`) against ``scope`` (a node's
    ``ctx.scope``); errors are :class:`TemplateError` naming ``path``.

    Text is always treated as a template here (``$$`` gives ``$``) and compiled once per
    distinct text::

        prompt = render(self.prompt, ctx.scope, path=str(ctx.path))
    """
    if isinstance(template, Template):
        compiled = template
    else:
        try:
            compiled = _compiled(template)
        except TemplateError as exc:
            if exc.path is None:
                exc.path = path
            raise
    return compiled.render(scope, path=path)
