"""dhenara-agent 0.3.4 (reprise's seed system): a flow of custom nodes, each adding 1.

dhenara-agent has no "plain function" node, so the node is a custom node kind written the way
its built-in kinds are (a ``FlowNodeDefinition`` plus a ``FlowNodeExecutor`` whose
``execute_node`` is wrapped in ``trace_node``), reading the previous node's outcome from the
flow's execution context. The run uses dhenara's defaults (``AgentRunConfig()``: run directory
with result/outcome files, trace, metrics and logs written to files; the git outcome repo is off
by default there).

dhenara demands an AI credentials config even for flows without AI nodes: an empty
``ResourceConfig`` is registered as the ``default`` profile before ``setup_run``.

dhenara's root component executor catches node errors and returns a failed result instead of
raising, so the first run is checked by reading the last node's ``outcome.json``.

Caveat, in dhenara's favour: it installs its tracer provider as the process-global one, which
OpenTelemetry lets happen only once per process, so after the first run the spans of later runs
go to the first run's ``trace.jsonl``, through a ``BatchSpanProcessor`` (exported in a background
thread). The span work is still done; the file writes happen off the timed path.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import CHAIN_SIZES, Report, main_args, time_async
from dhenara.agent.dsl import FlowDefinition
from dhenara.agent.dsl.base import ExecutionStatusEnum, NodeOutcome, NodeOutput
from dhenara.agent.dsl.components.flow import FlowNodeDefinition, FlowNodeExecutionResult, FlowNodeExecutor
from dhenara.agent.observability.tracing import trace_node
from dhenara.agent.observability.tracing.data.profile import NodeTracingProfile
from dhenara.agent.run import RunContext
from dhenara.agent.run.registry import resource_config_registry
from dhenara.agent.runner import FlowRunner
from dhenara.agent.types import AgentRunConfig
from dhenara.ai.types.resource import ResourceConfig
from pydantic import BaseModel

NODE_TYPE = "custom"


class IncData(BaseModel):
    value: int


class IncOutcome(NodeOutcome):
    value: int


class IncResult(FlowNodeExecutionResult[Any, NodeOutput[IncData], IncOutcome]):
    pass


class IncExecutor(FlowNodeExecutor):
    node_type = NODE_TYPE
    input_model = None
    setting_model = None
    _tracing_profile = NodeTracingProfile(node_type=NODE_TYPE)

    def get_result_class(self) -> type[IncResult]:
        return IncResult

    @trace_node(NODE_TYPE)
    async def execute_node(
        self, node_id: Any, node_definition: Any, node_input: Any, execution_context: Any
    ) -> IncResult:
        results = execution_context.execution_results
        previous = next(reversed(results.values())).outcome.value if results else 0
        value = previous + 1
        return IncResult(
            node_identifier=node_id,
            execution_status=ExecutionStatusEnum.COMPLETED,
            input=None,
            output=NodeOutput[IncData](data=IncData(value=value)),
            outcome=IncOutcome(value=value),
            created_at=datetime.now(),
        )


class IncNode(FlowNodeDefinition):
    node_type: str = NODE_TYPE

    def get_executor_class(self) -> type[IncExecutor]:
        return IncExecutor


def chain(n: int) -> FlowDefinition:
    flow = FlowDefinition(root_id="root")
    for i in range(n):
        flow.node(f"n{i}", IncNode())
    return flow


async def run_once(flow: FlowDefinition, project: Path) -> None:
    config = AgentRunConfig(root_component_id="root", project_root=str(project), run_root=str(project / "runs"))
    ctx = RunContext(run_config=config)
    runner = FlowRunner(flow, ctx)
    runner.setup_run(config)
    await runner.run()


def last_outcome(run_dir: Path, n: int) -> Any:
    matches = list(run_dir.rglob(f"n{n - 1}/outcome.json")) or list(run_dir.rglob(f"*n{n - 1}*outcome*"))
    if not matches:
        raise RuntimeError(f"no outcome for n{n - 1} under {run_dir}")
    return json.loads(matches[0].read_text())


async def main() -> None:
    args = main_args()
    report = Report("dhenara-agent", ("dhenara-agent", "dhenara-ai", "opentelemetry-sdk"))
    config = "defaults"
    try:
        if args.benchmark not in CHAIN_SIZES:
            report.error(args.benchmark, config, "not run for this system (chains only)")
        else:
            n = CHAIN_SIZES[args.benchmark]
            project = Path(tempfile.mkdtemp(prefix="dhenara-", dir=args.tmp))
            resource_config_registry.register("default", ResourceConfig())
            flow = chain(n)
            await run_once(flow, project)
            runs = sorted((project / "runs").iterdir())
            outcome = last_outcome(runs[-1], n)
            if outcome.get("value") != n:
                raise RuntimeError(f"last outcome is {outcome}, expected value {n}")
            report.add(args.benchmark, config, n, await time_async(lambda i: run_once(flow, project), args.runs))
    except Exception as exc:
        report.error(args.benchmark, config, exc)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
