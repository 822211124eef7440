"""``FlowModule``: a reprise flow as the forward pass of a learnable program.

The flow's nodes read parameters as initial inputs (``Initial("system")``), so the forward pass
is a normal reprise run, recorded and committed like any other. Its outcomes come back as
Variables whose history follows the flow's data flow: a node's output depends on the parameters
and the earlier nodes its inputs are bound to. Backward asks a model, node by node, how each of
those inputs should change, and writes what it got into the node's directory
(``gradients.json``).

Evaluating the same inputs again after an optimiser step is a re-run of the earlier run from the
first node that reads a changed parameter: the nodes before it are reused, not called again; with
no parameter changed, the earlier run is the answer and no model is called at all.

Only the flow's top-level nodes are followed (not subflows, loops or branches), with inputs bound
by :class:`~reprise.Initial` and :class:`~reprise.Ref`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext, RunResult
from reprise.dsl import NodeElement
from reprise.optim._chat import ask_for_feedback
from reprise.optim._errors import OptimizationError
from reprise.optim._model import CallRecord, ChatModel
from reprise.optim._module import Module, Parameter
from reprise.optim._variable import GradFn, Variable, feedback_text

__all__ = ["FlowModule", "FlowNodeBackward", "GRADIENTS_FILE"]

#: The file in a node's directory where backward writes the feedback it got for the node's inputs.
GRADIENTS_FILE = "gradients.json"


@dataclass(frozen=True, slots=True)
class _Binding:
    field: str
    kind: str  # "parameter", "node" or "input"
    name: str


@dataclass(frozen=True, slots=True)
class _Evaluation:
    values: dict[str, Any]
    result: RunResult


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    return json.dumps(value, ensure_ascii=False, default=str)


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file, so no reader sees half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2)
    os.replace(tmp, path)


class FlowNodeBackward(GradFn):
    """The history of one node's outcome in a flow run: the inputs it read and where it ran."""

    name = "FlowNodeBackward"

    def __init__(
        self, inputs: Sequence[Variable], *, fields: Mapping[str, str], node_dir: Path, model: ChatModel
    ) -> None:
        super().__init__(inputs)
        self.fields = dict(fields)
        self.node_dir = node_dir
        self.model = model
        self.records: list[CallRecord] = []

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        feedback = feedback_text(output.grad)
        system = self.fields.get("system")
        prompt = "\n".join(f"{k}: {v}" for k, v in self.fields.items() if k != "system")
        pairs = []
        for variable in self.inputs:
            if variable.requires_grad:
                grad = await ask_for_feedback(
                    self.model,
                    variable=variable,
                    system=system,
                    prompt=prompt,
                    output=output,
                    feedback=feedback,
                    records=self.records,
                )
                pairs.append((variable, grad))
        self._record(feedback, pairs)
        return pairs

    def _record(self, feedback: str, pairs: list[tuple[Variable, Variable]]) -> None:
        # A reused node's directory is a link into the run where it executed: that run is left as it was.
        if self.node_dir.is_symlink() or not self.node_dir.is_dir():
            return
        path = self.node_dir / GRADIENTS_FILE
        entries: list[Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        entries.append(
            {
                "output_feedback": feedback,
                "inputs": [{"role": v.role, "feedback": str(g.data)} for v, g in pairs],
            }
        )
        _write_json(path, entries)


class FlowModule(Module):
    """A flow whose nodes read ``parameters`` through ``Initial(<name>)``, run once per call.

    ::

        system = Parameter("Classify the sentiment.", role="system prompt for sentiment")
        flow = FlowDefinition().node(
            "classify",
            AIModelNode(model="gpt-4o-mini", system="$var{system}", prompt="$var{text}"),
            inputs={"system": Initial("system"), "text": Initial("text")},
        )
        module = FlowModule(flow, root="sentiment", parameters={"system": system},
                            output="classify", backward_model=ChatModel("gpt-4o"), project_root=".")
        label = module({"text": "I loved it."})      # a reprise run; a Variable

    ``runs`` lists every run made, oldest first; ``reused_runs`` counts calls answered by an
    earlier run because no parameter had changed."""

    def __init__(
        self,
        flow: FlowDefinition,
        *,
        root: str,
        parameters: Mapping[str, Parameter],
        output: str,
        backward_model: ChatModel,
        project_root: Path | str,
        run_root: Path | str | None = None,
        output_role: str | None = None,
    ) -> None:
        super().__init__()
        for name, parameter in parameters.items():
            setattr(self, name, parameter)
        object.__setattr__(self, "flow", flow)
        self.root = root
        self.output = output
        self.output_role = output_role or f"output of {root}.{output}"
        self.backward_model = backward_model
        self.project_root = Path(project_root)
        self.run_root = Path(run_root) if run_root is not None else None
        self.runs: list[RunResult] = []
        self.reused_runs = 0
        self._evaluations: dict[str, _Evaluation] = {}
        self._nodes = self._bindings(flow, set(parameters))
        if output not in self._nodes:
            raise ValueError(f"output {output!r} is not a top-level node of flow {root!r}: {', '.join(self._nodes)}")

    @staticmethod
    def _bindings(flow: FlowDefinition, parameters: set[str]) -> dict[str, list[_Binding]]:
        nodes: dict[str, list[_Binding]] = {}
        for element in flow.elements:
            if not isinstance(element, NodeElement):
                continue
            bindings = []
            inputs = element.inputs if isinstance(element.inputs, Mapping) else {}
            for field, source in inputs.items():
                if isinstance(source, Initial):
                    kind = "parameter" if source.key in parameters else "input"
                    bindings.append(_Binding(field, kind, source.key))
                elif isinstance(source, Ref) and source.path.name in nodes:
                    bindings.append(_Binding(field, "node", source.path.name))
            nodes[element.id] = bindings
        return nodes

    def _depends(self, node: str, changed: set[str]) -> bool:
        return any(
            (b.kind == "parameter" and b.name in changed) or (b.kind == "node" and self._depends(b.name, changed))
            for b in self._nodes[node]
        )

    def _run(self, inputs: Mapping[str, Any]) -> RunResult:
        values = {name: p.data for name, p in self.named_parameters()}
        key = json.dumps(inputs, sort_keys=True, default=str)
        earlier = self._evaluations.get(key)
        if earlier is not None and earlier.values == values:
            self.reused_runs += 1
            return earlier.result
        start = None
        if earlier is not None:
            changed = {n for n in values if values[n] != earlier.values.get(n)}
            start = next((n for n in self._nodes if self._depends(n, changed)), None)
        ctx = RunContext(
            root_component_id=self.root,
            project_root=self.project_root,
            run_root=self.run_root,
            previous_run_id=earlier.result.run_id if earlier is not None and start is not None else None,
            start_hierarchy_path=f"{self.root}.{start}" if earlier is not None and start is not None else None,
            initial_inputs={**inputs, **values},
        )
        result = FlowRunner(self.flow, ctx).run_sync()
        self.runs.append(result)
        if not result.ok:
            raise OptimizationError(
                f"the forward run {result.run_id} of flow {self.root!r} failed at {result.failed_path}: {result.error}"
            )
        self._evaluations[key] = _Evaluation(values, result)
        return result

    flow: FlowDefinition

    def forward(self, inputs: Mapping[str, Any]) -> Variable:
        """Run the flow on ``inputs`` (its initial inputs besides the parameters); the output
        node's outcome as a Variable (text; other outcomes as JSON)."""
        result = self._run(inputs)
        parameters = dict(self.named_parameters())
        outputs: dict[str, Variable] = {}
        for node, bindings in self._nodes.items():
            path = f"{self.root}.{node}"
            if path not in result.outcomes:
                continue
            out = Variable(
                _text(result.outcomes[path]), role=self.output_role if node == self.output else f"output of {path}"
            )
            sources: list[Variable] = []
            fields: dict[str, str] = {}
            for b in bindings:
                if b.kind == "parameter":
                    sources.append(parameters[b.name])
                    fields[b.field] = str(parameters[b.name].data)
                elif b.kind == "node" and b.name in outputs:
                    sources.append(outputs[b.name])
                    fields[b.field] = str(outputs[b.name].data)
                else:
                    fields[b.field] = _text(inputs.get(b.name))
            if any(v.requires_grad for v in sources):
                out.requires_grad = True
                out.grad_fn = FlowNodeBackward(
                    sources, fields=fields, node_dir=result.run_dir / self.root / node, model=self.backward_model
                )
            outputs[node] = out
        return outputs[self.output]
