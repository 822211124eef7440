"""Rendering of built-in node settings that are templates.

A setting given as a string may be a template (``"Summarize $var{text}"``); it is rendered with
:func:`reprise.dsl._template.render` against the node's scope, extended with the node's input
fields as variables, so ``inputs={"text": Ref("load")}`` makes ``$var{text}`` available.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from reprise.dsl._sources import MISSING

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext
    from reprise.dsl._scope import Scope

__all__ = ["NodeScope", "input_variables", "render_in", "render_setting", "render_text"]


class NodeScope:
    """A :class:`~reprise.dsl._scope.Scope` that adds a node's input fields as variables on top
    of the scope the node runs in (input fields shadow loop variables of the same name)."""

    __slots__ = ("_base", "_variables")

    def __init__(self, base: Scope | None, variables: Mapping[str, Any]) -> None:
        self._base = base
        self._variables = variables

    @property
    def initial_inputs(self) -> Mapping[str, Any]:
        return self._base.initial_inputs if self._base is not None else {}

    def lookup(self, parts: tuple[str, ...]) -> Any:
        return self._base.lookup(parts) if self._base is not None else MISSING

    def variable(self, name: str) -> Any:
        if name in self._variables:
            return self._variables[name]
        if self._base is None:
            from reprise.errors import NodeInputError

            raise NodeInputError(f"variable {name!r} is not in scope")
        return self._base.variable(name)

    def __getattr__(self, name: str) -> Any:
        # Anything else the template engine may ask of a scope comes from the real one.
        return getattr(self._base, name)


def input_variables(input: BaseModel | None) -> dict[str, Any]:
    """The fields of a node input (declared and extra) as template variables."""
    if input is None:
        return {}
    # Iterating a model yields its declared fields and then its extra ones.
    return dict(input)


def render_setting(value: Any, ctx: NodeContext, variables: Mapping[str, Any]) -> Any:
    """``value`` rendered if it is a template, else unchanged (see :func:`render_in`)."""
    return render_in(value, ctx.scope, str(ctx.path), variables)


def render_in(value: Any, scope: Scope | None, path: str, variables: Mapping[str, Any]) -> Any:
    """``value`` rendered against ``scope`` (plus ``variables``) if it is a template.

    As for node inputs, a string is a template only if it contains ``$var{``, ``$expr{`` or
    ``$hier{``: other text (a shell's ``$$`` or ``$HOME``, a price) is used as it is. The template
    module is imported lazily: strings without ``$`` never need it."""
    if not isinstance(value, str) or "$" not in value:
        return value
    try:
        # Imported by name so this module type-checks whether or not the template module exists.
        template = importlib.import_module("reprise.dsl._template")
    except ImportError:  # pragma: no cover - the template language ships with reprise
        return value
    if not template.is_template(value):
        return value
    return template.render(value, NodeScope(scope, variables), path=path)


def render_text(value: Any, ctx: NodeContext, variables: Mapping[str, Any]) -> str:
    """Like :func:`render_setting`, but always a string: a template that yields data (a single
    ``$expr{}``) is written as JSON so a prompt or argument shows it faithfully."""
    rendered = render_setting(value, ctx, variables)
    if isinstance(rendered, str):
        return rendered
    if isinstance(rendered, BaseModel):
        return rendered.model_dump_json()
    return json.dumps(rendered, ensure_ascii=False, default=str)
