"""The elements a flow or agent is made of, as immutable data.

Users build them through :class:`~reprise.dsl.flow.FlowDefinition` and
:class:`~reprise.dsl.agent.AgentDefinition`; the runner walks them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from reprise.dsl._node import Node

if TYPE_CHECKING:
    from reprise.dsl._container import Container

__all__ = [
    "ConditionalElement",
    "ContainerElement",
    "Element",
    "ForEachElement",
    "NodeElement",
    "ParallelElement",
]


@dataclass(frozen=True, slots=True)
class Element:
    """Something with an id inside a flow or agent."""

    id: str
    element_type: ClassVar[str] = "element"


@dataclass(frozen=True, slots=True)
class NodeElement(Element):
    """A node in a flow. ``inputs`` maps input field names to value sources or literals, or is a
    single source giving the whole input."""

    node: Node
    inputs: Mapping[str, Any] | Any | None = None
    element_type: ClassVar[str] = "node"


@dataclass(frozen=True, slots=True)
class ContainerElement(Element):
    """A nested flow (``subflow``), an agent's flow (``flow``) or a sub-agent (``subagent``)."""

    body: Container
    kind: str = "subflow"

    @property
    def element_type(self) -> str:  # type: ignore[override]
        return self.kind


@dataclass(frozen=True, slots=True)
class ConditionalElement(Element):
    """Runs ``then_body`` when ``condition`` is truthy, else ``else_body`` (if any).

    The taken branch appears in paths as ``<id>.then`` or ``<id>.else``."""

    condition: Any
    then_body: Container
    else_body: Container | None = None
    element_type: ClassVar[str] = "conditional"


@dataclass(frozen=True, slots=True)
class ForEachElement(Element):
    """Runs ``body`` once per item; iteration ``i`` appears in paths as ``<id>.<i>``.

    The loop's outcome is the list of each iteration's outcome (its body's last element's
    outcome). At most ``max_concurrency`` iterations run at the same time."""

    items: Any
    body: Container
    item_var: str = "item"
    index_var: str = "index"
    max_iterations: int | None = None
    max_concurrency: int = 1
    element_type: ClassVar[str] = "loop"


@dataclass(frozen=True, slots=True)
class ParallelElement(Element):
    """Runs every branch concurrently; the outcome maps branch id to the branch's outcome."""

    branches: Mapping[str, Container]
    element_type: ClassVar[str] = "parallel"
