"""Checking a whole component tree before it runs, and the index the run system uses.

:func:`validate_definition` walks the tree once and raises :class:`DefinitionError` naming the
offending path for: empty flows, references to elements that don't exist, run later, run
concurrently or sit inside a loop body or conditional branch, loop variables used outside their
loop, and input bindings naming fields the node's input model doesn't have. It returns a
:class:`DefinitionIndex`: every element by its *definition path*, the hierarchy path with each
loop iteration written ``*`` (``agent.flow.loop.*.node``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

import pydantic_core

from reprise.dsl._container import Container
from reprise.dsl._elements import (
    ConditionalElement,
    ContainerElement,
    Element,
    ForEachElement,
    NodeElement,
    ParallelElement,
)
from reprise.dsl._paths import HierarchyPath, validate_id
from reprise.dsl._sources import Ref, Source, collect_sources
from reprise.errors import DefinitionError

__all__ = ["DefinitionIndex", "definition_path", "validate_definition"]

# A position in the tree: the container and the index of the element inside it.
_Pos = tuple[Container, int]


def definition_path(path: str | HierarchyPath) -> str:
    """The definition path of a concrete hierarchy path: loop indexes become ``*``."""
    parts = path.parts if isinstance(path, HierarchyPath) else path.split(".")
    return ".".join("*" if p.isdigit() else p for p in parts)


@dataclass(slots=True)
class DefinitionIndex:
    """Every element of a validated tree, by definition path, in execution order."""

    root_id: str
    root: Container
    elements: dict[str, Element] = field(default_factory=dict)
    nodes: dict[str, NodeElement] = field(default_factory=dict)
    #: Every container body by the definition path of its children's parent: the root, subflow
    #: and agent bodies, ``cond.then``/``cond.else``, ``loop.*`` and ``par.<branch>``.
    containers: dict[str, Container] = field(default_factory=dict)
    _outline: dict[str, dict[str, str]] | None = field(default=None, repr=False, compare=False)
    _outline_json: bytes | None = field(default=None, repr=False, compare=False)

    def element(self, path: str | HierarchyPath) -> Element | None:
        """The element at a concrete or definition path, or ``None``."""
        return self.elements.get(definition_path(path))

    def suggest(self, path: str, n: int = 3) -> list[str]:
        """The valid paths closest to ``path``, for error messages."""
        return difflib.get_close_matches(definition_path(path), list(self.elements), n=n, cutoff=0.4)

    def outline(self) -> dict[str, dict[str, str]]:
        """Each element's type (and node kind), by definition path: what a later re-run checks
        to tell whether the definition before its start path still matches this one."""
        if self._outline is not None:
            return self._outline
        out: dict[str, dict[str, str]] = {}
        for path, el in self.elements.items():
            entry = {"type": _element_type(el, path, path in self.containers)}
            if isinstance(el, NodeElement):
                entry["kind"] = el.node.kind
            out[path] = entry
        self._outline = out  # the index is read-only once built: compute this once
        return out

    def outline_json(self) -> bytes:
        """:meth:`outline` as the bytes a run records in ``.trace/definition.json`` (indented,
        trailing newline, as ``reprise.run._files.dump_json`` writes): made once, written by every
        run of this definition, and compared as bytes by a re-run before anything is parsed."""
        if self._outline_json is None:
            self._outline_json = pydantic_core.to_json(self.outline(), indent=2) + b"\n"
        return self._outline_json

    def container_at(self, path: str) -> Container | None:
        """The container whose children sit directly below definition path ``path`` (a flow,
        agent, loop body, branch or conditional branch), or ``None`` if ``path`` is a node or a
        loop/conditional/parallel element itself."""
        return self.containers.get(path)

    def resolve_node(self, node_id_or_path: str) -> str:
        """The definition path of a node named by id (if unique) or by path."""
        key = definition_path(node_id_or_path)
        if key in self.nodes:
            return key
        if "." not in key:
            matches = [p for p in self.nodes if p.rsplit(".", 1)[-1] == key]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise DefinitionError(f"node id {key!r} is ambiguous; use one of the paths: {', '.join(matches)}")
        valid = ", ".join(self.nodes) or "(no nodes)"
        raise DefinitionError(f"unknown node {node_id_or_path!r}; valid nodes: {valid}")


def _element_type(el: Element, path: str, is_body: bool) -> str:
    if isinstance(el, ContainerElement):
        return el.kind
    if is_body and isinstance(el, ForEachElement):
        return "iteration"
    if is_body and isinstance(el, ConditionalElement):
        return f"branch:{path.rsplit('.', 1)[-1]}"
    if is_body and isinstance(el, ParallelElement):
        return "branch"
    return el.element_type


def validate_definition(root: Container, root_id: str) -> DefinitionIndex:
    """Check ``root`` as a run's root component with id ``root_id``; return its index.

    The index is cached on ``root`` and returned again while none of its containers has changed
    (runners are made per run, and validation walks every element; an index is read-only)."""
    cached: tuple[str, DefinitionIndex, tuple[int, ...]] | None = getattr(root, "_validated", None)
    if cached is not None and cached[0] == root_id:
        index = cached[1]
        if all(c.version == v for c, v in zip(index.containers.values(), cached[2], strict=True)):
            return index
    validate_id(root_id)
    index = DefinitionIndex(root_id=root_id, root=root)
    top = _Top(root_id, root)
    index.elements[root_id] = top.elements[0]
    _Checker(index, top).container(root, root_id, [(top, 0)], {})
    root._validated = (root_id, index, tuple(c.version for c in index.containers.values()))  # type: ignore[attr-defined]
    return index


class _Top(Container):
    """The invisible container holding the root, so absolute paths resolve like relative ones."""

    def __init__(self, root_id: str, root: Container) -> None:
        super().__init__()
        # Not through _add: building this must not count as a change to any definition.
        self._elements.append(ContainerElement(root_id, root, root.component_type))
        self._index[root_id] = 0


class _Checker:
    def __init__(self, index: DefinitionIndex, top: _Top) -> None:
        self.index = index
        self.top = top

    def container(self, body: Container, path: str, chain: list[_Pos], loop_vars: Mapping[str, str]) -> None:
        self.index.containers[path] = body
        if len(body) == 0:
            raise DefinitionError(f"empty {body.component_type}: add at least one element", path=path)
        for i, element in enumerate(body):
            self.element(element, f"{path}.{element.id}", [*chain, (body, i)], loop_vars)

    def element(self, el: Element, path: str, chain: list[_Pos], loop_vars: Mapping[str, str]) -> None:
        self.index.elements[path] = el
        if isinstance(el, NodeElement):
            self.index.nodes[path] = el
            self.node_inputs(el, path)
            self.sources(el.inputs, path, chain, loop_vars)
        elif isinstance(el, ContainerElement):
            self.container(el.body, path, chain, loop_vars)
        elif isinstance(el, ConditionalElement):
            self.sources(el.condition, path, chain, loop_vars)
            self.container(el.then_body, f"{path}.then", chain, loop_vars)
            self.index.elements[f"{path}.then"] = el
            if el.else_body is not None:
                self.container(el.else_body, f"{path}.else", chain, loop_vars)
                self.index.elements[f"{path}.else"] = el
        elif isinstance(el, ForEachElement):
            self.sources(el.items, path, chain, loop_vars)
            inner = {**loop_vars, el.item_var: path, el.index_var: path}
            self.index.elements[f"{path}.*"] = el
            self.container(el.body, f"{path}.*", chain, inner)
        elif isinstance(el, ParallelElement):
            for branch_id, body in el.branches.items():
                self.index.elements[f"{path}.{branch_id}"] = el
                self.container(body, f"{path}.{branch_id}", chain, loop_vars)

    def node_inputs(self, el: NodeElement, path: str) -> None:
        model = el.node.input_model
        if isinstance(el.inputs, Mapping) and not isinstance(el.inputs, Source):
            if model is None:
                if el.inputs:
                    raise DefinitionError(f"{el.node.name} takes no input, but inputs were bound", path=path)
                return
            unknown = sorted(set(el.inputs) - set(model.model_fields))
            # A model that accepts extra fields (free-form inputs of built-in nodes) takes any key.
            if unknown and model.model_config.get("extra") != "allow":
                # A lone unknown key is usually the parameter name of ``def f(inp: Model)``.
                hint = "; to give the whole input from one source, pass inputs=Ref(...)" if len(el.inputs) == 1 else ""
                raise DefinitionError(
                    f"inputs {unknown} are not fields of {model.__name__} "
                    f"(fields: {', '.join(model.model_fields) or 'none'}){hint}",
                    path=path,
                )

    def sources(self, value: object, path: str, chain: list[_Pos], loop_vars: Mapping[str, str]) -> None:
        for source in collect_sources(value):
            for name in source.variables():
                if name not in loop_vars:
                    known = ", ".join(sorted(loop_vars)) or "none here"
                    raise DefinitionError(f"loop variable {name!r} is not defined (loop variables: {known})", path=path)
            for ref in source.refs():
                self.reference(ref, path, chain)

    def reference(self, ref: Ref, path: str, chain: list[_Pos]) -> None:
        parts = ref.path.parts
        for level in range(len(chain) - 1, -1, -1):
            container, _ = chain[level]
            j = container.position(parts[0])
            if j is not None:
                target = self.descend(ref, path, [*chain[:level], (container, j)], container.elements[j], parts[1:])
                self.check_order(ref, path, chain, target)
                return
        near = difflib.get_close_matches(ref.path.parts[-1], [p.rsplit(".", 1)[-1] for p in self.index.elements], n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise DefinitionError(f"{ref} refers to an element that does not exist{hint}", path=path)

    def descend(self, ref: Ref, path: str, target: list[_Pos], el: Element, rest: tuple[str, ...]) -> list[_Pos]:
        i = 0
        while i < len(rest):
            part = rest[i]
            if isinstance(el, ContainerElement):
                body = el.body
            elif isinstance(el, ParallelElement):
                # A branch adds no position of its own: its elements sit below the parallel block.
                branch = el.branches.get(part)
                if branch is None:
                    raise DefinitionError(f"{ref}: parallel block {el.id!r} has no branch {part!r}", path=path)
                body, i = branch, i + 1
                if i == len(rest):
                    return target
                part = rest[i]
            elif isinstance(el, (ForEachElement, ConditionalElement)):
                what = (
                    "the list of iteration outcomes" if isinstance(el, ForEachElement) else "the taken branch's outcome"
                )
                raise DefinitionError(
                    f"{ref} reaches inside {el.element_type} {el.id!r}, whose inner outcomes are not kept; "
                    f"reference {el.id!r} itself (its outcome is {what})",
                    path=path,
                )
            else:
                raise DefinitionError(f"{ref}: {el.id!r} is a node; it has no element {part!r}", path=path)
            j = body.position(part)
            if j is None:
                raise DefinitionError(f"{ref}: {el.id!r} has no element {part!r}", path=path)
            target = [*target, (body, j)]
            el = body.elements[j]
            i += 1
        return target

    def check_order(self, ref: Ref, path: str, chain: list[_Pos], target: list[_Pos]) -> None:
        for (tc, ti), (cc, ci) in zip(target, chain, strict=False):  # the shorter one decides
            if tc is not cc:
                raise DefinitionError(f"{ref} runs concurrently with this element, not before it", path=path)
            if ti < ci:
                return
            if ti > ci:
                raise DefinitionError(f"{ref} runs after this element; only earlier outcomes can be used", path=path)
        raise DefinitionError(f"{ref} is this element or one that encloses it, not an earlier one", path=path)
