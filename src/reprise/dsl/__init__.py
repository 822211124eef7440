"""What to run: nodes, flows, agents, hierarchy paths and value sources."""

from reprise.dsl._container import AgentDefinition, Container, FlowDefinition
from reprise.dsl._context import NodeContext
from reprise.dsl._definition import DefinitionIndex, definition_path, validate_definition
from reprise.dsl._elements import (
    ConditionalElement,
    ContainerElement,
    Element,
    ForEachElement,
    NodeElement,
    ParallelElement,
)
from reprise.dsl._entrypoint import INPUT_KEY, EntryPoint, entrypoint, function_flow
from reprise.dsl._node import FunctionNode, Node, NodeSettings, node
from reprise.dsl._paths import HierarchyPath
from reprise.dsl._scope import Scope
from reprise.dsl._sources import MISSING, Computed, Initial, Ref, Source, Var
from reprise.dsl._template import Template, compile_value, render

__all__ = [
    "INPUT_KEY",
    "MISSING",
    "AgentDefinition",
    "Computed",
    "ConditionalElement",
    "Container",
    "ContainerElement",
    "DefinitionIndex",
    "Element",
    "EntryPoint",
    "FlowDefinition",
    "ForEachElement",
    "FunctionNode",
    "HierarchyPath",
    "Initial",
    "Node",
    "NodeContext",
    "NodeElement",
    "NodeSettings",
    "ParallelElement",
    "Ref",
    "Scope",
    "Source",
    "Template",
    "Var",
    "compile_value",
    "definition_path",
    "entrypoint",
    "function_flow",
    "node",
    "render",
    "validate_definition",
]
