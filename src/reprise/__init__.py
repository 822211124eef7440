"""reprise: an async agent DSL with a hierarchical, reproducible run system.

::

    from reprise import FlowDefinition, FlowRunner, RunContext, Ref, Initial

    flow = FlowDefinition().node("double", lambda x: x * 2, inputs={"x": Initial("n")})
    result = FlowRunner(flow, RunContext(root_component_id="demo", project_root=".",
                                         initial_inputs={"n": 21})).run_sync()
"""

from reprise._active_run import Run, active_run, finish, init
from reprise._api import Api
from reprise._version import __version__
from reprise.dsl import (
    AgentDefinition,
    Computed,
    FlowDefinition,
    FunctionNode,
    HierarchyPath,
    Initial,
    Node,
    NodeContext,
    NodeSettings,
    Ref,
    Template,
    Var,
    entrypoint,
    node,
)
from reprise.errors import (
    DefinitionError,
    NodeExecutionError,
    NodeInputError,
    RepriseError,
    RerunError,
    RunCancelledError,
    RunFailedError,
    RunFileError,
    RunSetupError,
    StaticInputError,
    TemplateError,
)
from reprise.observability import ObservabilitySettings
from reprise.run import RunContext, RunDirectory, RunStatus
from reprise.runners import AgentRunner, FlowRunner, RunResult
from reprise.tracking import AlertLevel, alert, log

__all__ = [
    "AgentDefinition",
    "AgentRunner",
    "AlertLevel",
    "Api",
    "Computed",
    "DefinitionError",
    "FlowDefinition",
    "FlowRunner",
    "FunctionNode",
    "HierarchyPath",
    "Initial",
    "Node",
    "NodeContext",
    "NodeExecutionError",
    "NodeInputError",
    "NodeSettings",
    "ObservabilitySettings",
    "Ref",
    "RepriseError",
    "RerunError",
    "RunCancelledError",
    "RunContext",
    "RunDirectory",
    "Run",
    "RunFailedError",
    "RunFileError",
    "RunResult",
    "RunSetupError",
    "RunStatus",
    "StaticInputError",
    "Template",
    "TemplateError",
    "Var",
    "__version__",
    "active_run",
    "alert",
    "entrypoint",
    "finish",
    "init",
    "log",
    "node",
]
