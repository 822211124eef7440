"""Human input: nodes whose input a person (or another program) supplies while the run waits.

A node with ``input_required = True`` gets its input, when it has no static input, from the
*input handler* registered on the run context::

    class Approval(BaseModel):
        plan: str            # bound from an earlier node: shown to the person
        approved: bool       # asked
        comment: str = ""    # asked, may be left empty

    approve = HumanInputNode(Approval, prompt="Approve this plan?")
    flow = FlowDefinition().node("plan", make_plan).node("approve", approve, inputs={"plan": Ref("plan")})

    ctx = RunContext(root_component_id="f", project_root=".")
    ctx.register_input_handler(terminal_input_handler)   # ask at the keyboard
    # or, in a service: ctx.register_input_handler(ask_in_slack, node="approve")

Order: a static input (``ctx.register_node_static_input("approve", {...})``) satisfies the node
without asking; otherwise the bound fields are resolved and the handler is awaited with an
:class:`InputRequest` (the prompt, the fields known so far, the fields still missing). Its
answer (a mapping or a model) is merged over the known fields and validated against the
node's input model; what was answered is recorded as the node's ``input.json`` like any input.

A handler registered for a node id or path wins over one registered for every node
(``node=None``). Any node kind can ask: set ``input_required = True`` on it (and optionally
``input_prompt`` and ``input_timeout``).
"""

from __future__ import annotations

import json
import sys
import threading
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ValidationError

from reprise.dsl._node import Node, validation_summary
from reprise.errors import DefinitionError, NodeInputError
from reprise.nodes._base import ModelOutcomeNode
from reprise.nodes._render import render_in

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext
    from reprise.dsl._paths import HierarchyPath
    from reprise.dsl._scope import Scope

__all__ = [
    "HumanInputNode",
    "InputHandler",
    "InputRequest",
    "TerminalInputHandler",
    "request_input",
    "terminal_input_handler",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class InputRequest:
    """What a handler is asked for.

    Attributes:
        path: the node's hierarchy path (with loop indexes).
        definition_path: the node's path in the definition (loop indexes as ``*``).
        run_id: the run.
        node: the node.
        input_model: the model the answer, merged over ``known``, must validate against.
        prompt: text for the person (rendered if it was a template), or ``None``.
        known: the input fields bound from earlier outcomes or literals.
    """

    path: str
    definition_path: str
    run_id: str
    node: Node
    input_model: type[BaseModel]
    prompt: str | None
    known: Mapping[str, Any]

    @property
    def missing(self) -> tuple[str, ...]:
        """Fields of the input model not in ``known``, in declaration order."""
        return tuple(name for name in self.input_model.model_fields if name not in self.known)


#: ``async (request) -> mapping | model``: supplies a node's input.
InputHandler = Callable[[InputRequest], Awaitable[BaseModel | Mapping[str, Any]]]


class HumanInputNode(ModelOutcomeNode):
    """A node whose outcome is what a person answered (validated by ``model``).

    Args:
        model: the pydantic model of the answer; fields bound with ``inputs=`` are known
            context and are not asked.
        prompt: text shown to the person (a template).
        timeout: seconds to wait for the answer (``None``: no limit).
    """

    kind = "human_input"
    input_required = True

    def __init__(self, model: type[BaseModel], *, prompt: str | None = None, timeout: float | None = None) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise DefinitionError(f"HumanInputNode needs a pydantic model class, got {model!r}")
        if timeout is not None and timeout <= 0:
            raise DefinitionError(f"timeout must be > 0 seconds, got {timeout}")
        self.input_model = model
        self.outcome_model = model
        self.input_prompt = prompt
        self.input_timeout = timeout

    @property
    def name(self) -> str:
        return f"HumanInputNode({self.outcome_model.__name__})"

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> Any:
        return input


async def request_input(
    handler: InputHandler | None,
    node: Node,
    path: HierarchyPath,
    definition_path: str,
    data: Any,
    scope: Scope | None,
    *,
    run_id: str,
    logger: Any = None,
) -> dict[str, Any]:
    """Ask ``handler`` (the run's input handler for this node) for the input of ``node``; the
    executor calls this for a node with ``input_required`` and no static input. Returns the
    bound ``data`` with the answer merged over it, for the executor to validate."""
    model = node.input_model
    assert model is not None
    if handler is None:
        raise NodeInputError(
            f"{node.name} needs input and none was given: register a static input "
            "(RunContext.register_node_static_input) or an input handler (RunContext.register_input_handler)",
            path=str(path),
        )
    known = data.model_dump() if isinstance(data, BaseModel) else dict(data or {})
    prompt = getattr(node, "input_prompt", None)
    if prompt is not None:
        prompt = str(render_in(prompt, scope, str(path), known))
    request = InputRequest(
        path=str(path),
        definition_path=definition_path,
        run_id=run_id,
        node=node,
        input_model=model,
        prompt=prompt,
        known=known,
    )
    if logger is not None:
        logger.info("input requested", hierarchy_path=str(path), missing=list(request.missing))
    timeout = getattr(node, "input_timeout", None)
    try:
        with anyio.fail_after(timeout):
            answer = await handler(request)
    except TimeoutError:
        raise NodeInputError(f"no input within {timeout}s", path=str(path)) from None
    if isinstance(answer, BaseModel):
        answer = answer.model_dump()
    if not isinstance(answer, Mapping):
        raise NodeInputError(
            f"the input handler returned {type(answer).__name__}; expected a mapping or a model", path=str(path)
        )
    if logger is not None:
        logger.info("input received", hierarchy_path=str(path), fields=sorted(answer))
    return {**known, **answer}


# -- the terminal ----------------------------------------------------------------------------------
# One terminal per process: two nodes asking at once (parallel branches) take turns.
_TERMINAL = threading.Lock()


class TerminalInputHandler:
    """Asks the person at the keyboard, one line per missing field.

    Prompts go to standard error (standard output stays the program's), answers come from
    standard input. A field typed as ``str`` takes the line as it is; other fields take JSON
    (``42``, ``true``, ``["a", "b"]``) or the words pydantic accepts (``yes``, ``no``). An empty
    line keeps a field's default. Invalid answers are asked again, up to ``max_rounds`` times.

    Args:
        stdin, stdout: streams to use instead of ``sys.stdin`` and ``sys.stderr``.
        max_rounds: how many times invalid fields are asked before the node fails.
    """

    def __init__(self, stdin: IO[str] | None = None, stdout: IO[str] | None = None, *, max_rounds: int = 3) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.max_rounds = max_rounds

    async def __call__(self, request: InputRequest) -> dict[str, Any]:
        # Blocking reads in a worker thread, abandoned if the run is cancelled meanwhile.
        return await anyio.to_thread.run_sync(self._ask, request, abandon_on_cancel=True)

    def _ask(self, request: InputRequest) -> dict[str, Any]:
        stdin = self.stdin or sys.stdin
        out = self.stdout or sys.stderr
        with _TERMINAL:
            out.write(f"\n== input needed for {request.path} ==\n")
            if request.prompt:
                out.write(request.prompt.rstrip() + "\n")
            for name, value in request.known.items():
                out.write(f"  {name}: {_show(value)}\n")
            fields = request.input_model.model_fields
            answers: dict[str, Any] = {}
            to_ask = list(request.missing)
            for _ in range(self.max_rounds):
                for name in to_ask:
                    field = fields[name]
                    hint = _type_name(field.annotation)
                    default = "" if field.is_required() else f" [{_show(field.get_default(call_default_factory=True))}]"
                    out.write(f"{name} ({hint}){default}: ")
                    out.flush()
                    line = stdin.readline()
                    if not line:
                        raise NodeInputError(f"standard input closed while asking for {name!r}", path=request.path)
                    text = line.rstrip("\n")
                    if not text and not field.is_required():
                        answers.pop(name, None)
                        continue
                    answers[name] = _parse(text, field.annotation)
                try:
                    request.input_model.model_validate({**request.known, **answers})
                    return answers
                except ValidationError as exc:
                    out.write(f"invalid: {validation_summary(exc)}\n")
                    bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc")}
                    to_ask = [n for n in request.missing if n in bad] or list(request.missing)
            raise NodeInputError(f"no valid input after {self.max_rounds} tries", path=request.path)


def _parse(text: str, annotation: Any) -> Any:
    if _accepts_str(annotation):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text  # 'yes', 'no', '2024-01-01': left to pydantic


def _accepts_str(annotation: Any) -> bool:
    """``str``, or a union with ``str`` in it (``str | None``): the line is taken as text."""
    if annotation is str:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(arg is str for arg in typing.get_args(annotation))
    return False


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 2000 else text[:2000] + "..."


#: The handler that asks at the keyboard: ``ctx.register_input_handler(terminal_input_handler)``.
terminal_input_handler = TerminalInputHandler()
