"""What to run: nodes, flows, agents, hierarchy paths and value sources."""

from reprise.dsl._entrypoint import INPUT_KEY, EntryPoint, entrypoint, function_flow
from reprise.dsl.container import AgentDefinition, Container, FlowDefinition
from reprise.dsl.context import NodeContext
from reprise.dsl.definition import DefinitionIndex, definition_path, validate_definition
from reprise.dsl.elements import (
    ConditionalElement,
    ContainerElement,
    Element,
    ForEachElement,
    NodeElement,
    ParallelElement,
)
from reprise.dsl.node import FunctionNode, Node, NodeSettings, node
from reprise.dsl.paths import HierarchyPath
from reprise.dsl.scope import Scope
from reprise.dsl.sources import MISSING, Computed, Initial, Ref, Source, Var
from reprise.dsl.template import Template, compile_value, render

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
