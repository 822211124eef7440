"""Flows and agents: ordered containers of elements, built with a fluent builder.

::

    analyse = (
        FlowDefinition()
        .node("list", list_files, inputs={"folder": Initial("folder")})
        .for_each("per_file", Ref("list", "files"), count_body, item_var="file", max_iterations=1000)
        .parallel("stats", {"longest": longest_flow, "total": total_flow})
    )
    agent = AgentDefinition().flow("analyse", analyse).flow("report", report_flow)

Builder methods append and return the same object. Ids are checked as they are added; the
whole tree (references, loop bounds, input bindings) is checked by :func:`validate_definition`
before a run starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Self

from reprise.dsl._elements import (
    ConditionalElement,
    ContainerElement,
    Element,
    ForEachElement,
    NodeElement,
    ParallelElement,
)
from reprise.dsl._node import Node, as_node
from reprise.dsl._paths import validate_id
from reprise.dsl._template import compile_value
from reprise.errors import DefinitionError

__all__ = ["AgentDefinition", "Container", "FlowDefinition"]


class Container:
    """An ordered list of uniquely named elements. Base of flows and agents."""

    component_type: ClassVar[str] = "container"

    def __init__(self, id: str | None = None, *, description: str | None = None) -> None:
        #: Optional default id, used as the root id when this is the run's root component.
        self.id = validate_id(id) if id is not None else None
        self.description = description
        self._elements: list[Element] = []
        self._index: dict[str, int] = {}
        #: Bumped by every change, so a validated definition can be cached while no container
        #: in it has changed (see ``validate_definition``).
        self.version = 0

    # -- reading ---------------------------------------------------------------------------
    @property
    def elements(self) -> tuple[Element, ...]:
        """The elements in execution order."""
        return tuple(self._elements)

    def __iter__(self) -> Iterator[Element]:
        return iter(self._elements)

    def __len__(self) -> int:
        return len(self._elements)

    def get(self, element_id: str) -> Element | None:
        """The element with this id, or ``None``."""
        i = self._index.get(element_id)
        return None if i is None else self._elements[i]

    def position(self, element_id: str) -> int | None:
        """The index of the element with this id, or ``None``."""
        return self._index.get(element_id)

    def __repr__(self) -> str:
        ids = ", ".join(e.id for e in self._elements)
        return f"{type(self).__name__}([{ids}])"

    # -- building --------------------------------------------------------------------------
    def _add(self, element: Element) -> Self:
        validate_id(element.id)
        if element.id in self._index:
            raise DefinitionError(f"duplicate id {element.id!r}: ids must be unique among siblings", path=element.id)
        self._index[element.id] = len(self._elements)
        self._elements.append(element)
        self.version += 1
        return self

    def conditional(
        self,
        id: str,
        condition: Any,
        then_flow: Container,
        else_flow: Container | None = None,
    ) -> Self:
        """Run ``then_flow`` if ``condition`` (a source, template or literal) is truthy, else
        ``else_flow``. The branch taken is re-evaluated on every run, re-runs included."""
        _check_body(then_flow, id, "then_flow")
        if else_flow is not None:
            _check_body(else_flow, id, "else_flow")
        condition = compile_value(condition, path=id)
        return self._add(ConditionalElement(id, condition, then_flow, else_flow))

    def for_each(
        self,
        id: str,
        items: Any,
        body: Container,
        *,
        item_var: str = "item",
        index_var: str = "index",
        max_iterations: int | None = None,
        max_concurrency: int = 1,
    ) -> Self:
        """Run ``body`` once per item of ``items`` (a source, template or literal list).

        ``max_iterations`` bounds the loop; it is required unless ``items`` is a literal list, and
        a run whose items exceed it fails. Up to ``max_concurrency`` iterations run at once."""
        _check_body(body, id, "body")
        items = compile_value(list(items) if isinstance(items, tuple) else items, path=id)
        validate_id(item_var, where=id)
        validate_id(index_var, where=id)
        if max_concurrency < 1:
            raise DefinitionError(f"max_concurrency must be >= 1, got {max_concurrency}", path=id)
        if max_iterations is not None and max_iterations < 1:
            raise DefinitionError(f"max_iterations must be >= 1, got {max_iterations}", path=id)
        if max_iterations is None:
            if not isinstance(items, (list, tuple)):
                raise DefinitionError(
                    "loop without a bound: set max_iterations (items are only known at run time)", path=id
                )
            max_iterations = max(len(items), 1)
        return self._add(
            ForEachElement(
                id,
                items,
                body,
                item_var=item_var,
                index_var=index_var,
                max_iterations=max_iterations,
                max_concurrency=max_concurrency,
            )
        )

    def parallel(self, id: str, branches: Mapping[str, Container]) -> Self:
        """Run each branch concurrently. If one fails, the others are cancelled."""
        if not branches:
            raise DefinitionError("parallel block without branches", path=id)
        for branch_id, body in branches.items():
            validate_id(branch_id, where=id)
            _check_body(body, id, f"branch {branch_id!r}")
        return self._add(ParallelElement(id, dict(branches)))


def _check_body(body: object, where: str, what: str) -> None:
    if not isinstance(body, Container):
        raise DefinitionError(
            f"{what} must be a FlowDefinition or AgentDefinition, got {type(body).__name__}", path=where
        )


class FlowDefinition(Container):
    """An ordered flow of nodes, subflows, conditionals, loops and parallel blocks."""

    component_type = "flow"

    def node(
        self,
        id: str,
        node: Node | Callable[..., Any],
        *,
        inputs: Mapping[str, Any] | Any | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        backoff: float | None = None,
    ) -> Self:
        """Add a node. ``node`` is a :class:`Node` or any sync/async function.

        ``inputs`` binds the node's input fields to value sources (:class:`Ref`,
        :class:`Initial`, :class:`Var`, ...) or literals, or is one source giving the whole input.
        ``timeout``/``retries``/``backoff`` override the node's own settings here only."""
        the_node = as_node(node, where=id)
        changes = {k: v for k, v in (("timeout", timeout), ("retries", retries), ("backoff", backoff)) if v is not None}
        if changes:
            the_node = the_node.with_settings(**changes)
        # Template strings among the bindings become Template sources now, once.
        inputs = compile_value(dict(inputs) if isinstance(inputs, Mapping) else inputs, path=id)
        return self._add(NodeElement(id, the_node, inputs))

    def subflow(self, id: str, flow: FlowDefinition) -> Self:
        """Add a nested flow; its elements' paths are ``<id>.<element>``."""
        _check_body(flow, id, "subflow")
        return self._add(ContainerElement(id, flow, "subflow"))


class AgentDefinition(Container):
    """An agent: flows and sub-agents run in order (conditionals, loops and parallel blocks too)."""

    component_type = "agent"

    def flow(self, id: str, flow: FlowDefinition) -> Self:
        """Add a flow to the agent."""
        if not isinstance(flow, FlowDefinition):
            raise DefinitionError(f"flow must be a FlowDefinition, got {type(flow).__name__}", path=id)
        return self._add(ContainerElement(id, flow, "flow"))

    def subagent(self, id: str, agent: AgentDefinition) -> Self:
        """Add a nested agent."""
        if not isinstance(agent, AgentDefinition):
            raise DefinitionError(f"subagent must be an AgentDefinition, got {type(agent).__name__}", path=id)
        return self._add(ContainerElement(id, agent, "subagent"))
