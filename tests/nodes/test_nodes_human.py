"""Human input: static inputs, input handlers on the run context, and the terminal handler
driven through a real subprocess's standard input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from reprise import FlowDefinition, FlowRunner, Ref, RunContext, RunFailedError
from reprise.errors import DefinitionError
from reprise.nodes import HumanInputNode, InputRequest

pytestmark = pytest.mark.anyio


class Approval(BaseModel):
    plan: str
    approved: bool
    comment: str = ""


def make_plan() -> str:
    return "1. build 2. ship"


def approval_flow(**node_kw: Any) -> FlowDefinition:
    node = HumanInputNode(Approval, **node_kw)
    return FlowDefinition().node("plan", make_plan).node("approve", node, inputs={"plan": Ref("plan")})


class RecordingHandler:
    """An input handler that answers from a script and keeps the requests it got."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[InputRequest] = []

    async def __call__(self, request: InputRequest) -> Any:
        self.requests.append(request)
        await anyio.sleep(0)
        return self.answer


async def test_handler_supplies_the_missing_fields(make_context: Callable[..., RunContext]) -> None:
    handler = RecordingHandler({"approved": True, "comment": "go"})
    ctx = make_context("f")
    ctx.register_input_handler(handler)
    result = await FlowRunner(approval_flow(prompt="Approve this plan?"), ctx).run()

    assert result.outcome == Approval(plan="1. build 2. ship", approved=True, comment="go")
    (request,) = handler.requests
    assert request.path == "f.approve" and request.definition_path == "f.approve"
    assert request.known == {"plan": "1. build 2. ship"}
    assert request.missing == ("approved", "comment")
    assert request.prompt == "Approve this plan?"
    assert request.run_id == ctx.run_id
    # The answer is recorded as the node's input, like any input.
    stored = json.loads((result.run_dir / "f" / "approve" / "input.json").read_text())
    assert stored == {"plan": "1. build 2. ship", "approved": True, "comment": "go"}


async def test_static_input_satisfies_without_asking(make_context: Callable[..., RunContext]) -> None:
    handler = RecordingHandler({"approved": False})
    ctx = make_context("f")
    ctx.register_input_handler(handler)
    ctx.register_node_static_input("approve", {"plan": "fixed", "approved": True})
    result = await FlowRunner(approval_flow(), ctx).run()
    assert result.outcome == Approval(plan="fixed", approved=True)
    assert handler.requests == []


async def test_no_handler_is_a_clear_error(make_context: Callable[..., RunContext]) -> None:
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(approval_flow(), make_context("f")).run()
    assert info.value.path == "f.approve"
    assert "register_input_handler" in str(info.value) and "register_node_static_input" in str(info.value)


async def test_handler_for_a_node_wins_over_the_default(make_context: Callable[..., RunContext]) -> None:
    default = RecordingHandler({"approved": False})
    specific = RecordingHandler(Approval(plan="ignored", approved=True))
    flow = approval_flow().node("second", HumanInputNode(Approval), inputs={"plan": "other"})
    ctx = make_context("f")
    ctx.register_input_handler(default)
    ctx.register_input_handler(specific, node="approve")
    result = await FlowRunner(flow, ctx).run()
    assert [r.path for r in specific.requests] == ["f.approve"]
    assert [r.path for r in default.requests] == ["f.second"]
    # A model answer replaces bound fields it sets.
    assert result.outcomes["f.approve"] == Approval(plan="ignored", approved=True)
    assert result.outcome == Approval(plan="other", approved=False)


@pytest.mark.parametrize(
    ("answer", "message"),
    [({"approved": "perhaps"}, "does not validate against Approval"), (["yes"], "returned list")],
)
async def test_invalid_answers_fail_the_node(
    answer: Any, message: str, make_context: Callable[..., RunContext]
) -> None:
    ctx = make_context("f")
    ctx.register_input_handler(RecordingHandler(answer))
    with pytest.raises(RunFailedError, match=message) as info:
        await FlowRunner(approval_flow(), ctx).run()
    assert info.value.path == "f.approve"


async def test_input_timeout(make_context: Callable[..., RunContext]) -> None:
    async def never(request: InputRequest) -> Mapping[str, Any]:
        await anyio.sleep_forever()
        raise AssertionError

    ctx = make_context("f")
    ctx.register_input_handler(never)
    with pytest.raises(RunFailedError, match=r"no input within 0.2s"):
        await FlowRunner(approval_flow(timeout=0.2), ctx).run()


async def test_prompt_is_a_template(make_context: Callable[..., RunContext]) -> None:
    pytest.importorskip("reprise.dsl._template")
    handler = RecordingHandler({"approved": True})
    ctx = make_context("f")
    ctx.register_input_handler(handler)
    await FlowRunner(approval_flow(prompt="Approve '$var{plan}' from $hier{plan}?"), ctx).run()
    assert handler.requests[0].prompt == "Approve '1. build 2. ship' from 1. build 2. ship?"


def test_definition_errors() -> None:
    with pytest.raises(DefinitionError):
        HumanInputNode(dict)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError):
        HumanInputNode(Approval, timeout=0)


# -- the terminal handler, with a real process and its standard input -----------------------------
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pydantic import BaseModel
    from reprise import FlowDefinition, FlowRunner, RunContext, Ref
    from reprise.nodes import HumanInputNode, terminal_input_handler

    class Approval(BaseModel):
        plan: str
        approved: bool
        reviewers: list[str] = []
        comment: str = ""

    flow = (
        FlowDefinition()
        .node("plan", lambda: "1. build 2. ship")
        .node("approve", HumanInputNode(Approval, prompt="Approve the plan?"), inputs={"plan": Ref("plan")})
    )
    ctx = RunContext(root_component_id="f", project_root=sys.argv[1], outcome_repo=False)
    ctx.register_input_handler(terminal_input_handler)
    result = FlowRunner(flow, ctx).run_sync(backend=sys.argv[2])
    print(json.dumps(result.outcome.model_dump()))
    """
)


def run_script(tmp_path: Path, stdin: str, backend: str = "asyncio") -> subprocess.CompletedProcess[str]:
    script = tmp_path / "ask.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script), str(tmp_path), backend],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_terminal_handler_asks_at_the_keyboard(tmp_path: Path, backend: str) -> None:
    proc = run_script(tmp_path, 'yes\n["ann", "bob"]\nship it\n', backend)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "plan": "1. build 2. ship",
        "approved": True,
        "reviewers": ["ann", "bob"],
        "comment": "ship it",
    }
    assert "== input needed for f.approve ==" in proc.stderr
    assert "Approve the plan?" in proc.stderr
    assert "plan: 1. build 2. ship" in proc.stderr  # the known field is shown, not asked
    assert "approved (bool): " in proc.stderr and "comment (str) []: " in proc.stderr


def test_terminal_handler_asks_again_and_keeps_defaults(tmp_path: Path) -> None:
    # 'maybe' is not a bool: asked again; empty lines keep the defaults.
    proc = run_script(tmp_path, "maybe\n\n\nno\n")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"plan": "1. build 2. ship", "approved": False, "reviewers": [], "comment": ""}
    assert "invalid: approved:" in proc.stderr


def test_terminal_handler_closed_stdin(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "")
    assert proc.returncode != 0
    assert "standard input closed while asking for 'approved'" in proc.stderr
