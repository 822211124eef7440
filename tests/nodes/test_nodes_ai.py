"""AIModelNode against real OpenAI- and Anthropic-compatible HTTP servers on 127.0.0.1.

The servers (tests/_model_server.py) speak the real wire formats (``/v1/chat/completions``,
``/v1/messages``) and the node drives the real SDK clients against them, on asyncio and on trio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
from pydantic import BaseModel, SecretStr

from _model_server import ModelServer, Reply, serve_models
from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext, RunFailedError
from reprise.nodes import AIModelNode, Credentials, PriceTable, register_price
from reprise.nodes._credentials import redact_value
from reprise.nodes._pricing import DEFAULT_PRICES
from reprise.nodes._providers import ModelRequest, ModelResponse
from reprise.view import write_run_view

pytestmark = pytest.mark.anyio

CANARY = "sk-canary-7f3a9c1e-do-not-leak"


# -- a loopback model server ---------------------------------------------------------------------
@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with serve_models() as server:
        yield server


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    # Never read a real credentials file of the person running the tests.
    monkeypatch.setenv("REPRISE_CREDENTIALS", str(tmp_path / "no-credentials.toml"))
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


def openai_node(server: ModelServer, **kw: Any) -> AIModelNode:
    kw.setdefault("model", "gpt-4o")
    kw.setdefault("prompt", "Say hello.")
    kw.setdefault("backoff", 0.01)
    return AIModelNode(provider="openai", base_url=server.url + "/v1", **kw)


def anthropic_node(server: ModelServer, **kw: Any) -> AIModelNode:
    kw.setdefault("model", "claude-haiku-4-5")
    kw.setdefault("prompt", "Say hello.")
    kw.setdefault("backoff", 0.01)
    return AIModelNode(provider="anthropic", base_url=server.url, **kw)


async def run_flow(flow: FlowDefinition, ctx: RunContext) -> Any:
    return await FlowRunner(flow, ctx).run()


def read_result(run_dir: Path, node: str) -> dict[str, Any]:
    return dict(json.loads((run_dir / "f" / node / "result.json").read_text()))


def spans(run_dir: Path) -> list[dict[str, Any]]:
    """Every span in ``.trace/trace.jsonl`` with its attributes decoded to a plain dict."""
    out = []
    for line in (run_dir / ".trace" / "trace.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    span["attrs"] = {a["key"]: _value(a["value"]) for a in span.get("attributes", [])}
                    out.append(span)
    return out


def _value(v: dict[str, Any]) -> Any:
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    if "intValue" in v:
        return int(v["intValue"])
    return next(iter(v.values()))


class Plan(BaseModel):
    title: str
    steps: list[str]


# -- plain text ------------------------------------------------------------------------------------
async def test_openai_plain_text(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    node = openai_node(model_server, system="Be brief.", temperature=0.2, max_tokens=50)
    result = await run_flow(FlowDefinition().node("ask", node), make_context("f"))

    assert result.outcome == "Hello from the model."
    sent = model_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
    ]
    assert sent["body"]["temperature"] == 0.2
    assert sent["body"]["max_tokens"] == 50  # compatible servers get max_tokens
    assert sent["headers"]["authorization"] == f"Bearer {CANARY}"

    res = read_result(result.run_dir, "ask")
    assert res["attempts"] == 1
    assert res["usage"] == {"input_tokens": 12, "output_tokens": 5, "calls": 1}
    # gpt-4o-2024-08-06 is priced as gpt-4o: 12 * 2.50 / 1e6 + 5 * 10.00 / 1e6
    assert res["cost_usd"] == pytest.approx(12 * 2.5e-6 + 5 * 10e-6)
    assert res["ai"]["response_model"] == "gpt-4o-2024-08-06"
    assert res["ai"]["credentials_source"] == "env:OPENAI_API_KEY"
    assert json.loads((result.run_dir / "f" / "ask" / "outcome.json").read_text()) == "Hello from the model."


async def test_anthropic_plain_text(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    node = anthropic_node(model_server, system="Be brief.", temperature=0.0)
    result = await run_flow(FlowDefinition().node("ask", node), make_context("f"))

    assert result.outcome == "Hello from the model."
    sent = model_server.requests[0]
    assert sent["path"] == "/v1/messages"
    assert sent["body"]["system"] == "Be brief."
    assert sent["body"]["max_tokens"] == 1024  # required by the Messages API
    assert sent["body"]["messages"] == [{"role": "user", "content": "Say hello."}]
    res = read_result(result.run_dir, "ask")
    assert res["usage"]["input_tokens"] == 20 and res["usage"]["output_tokens"] == 7
    assert res["cost_usd"] == pytest.approx(20 * 1e-6 + 7 * 5e-6)


async def test_prompt_from_input_field(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    node = openai_node(model_server, prompt=None)
    flow = FlowDefinition().node("ask", node, inputs={"prompt": Initial("question")})
    await run_flow(flow, make_context("f", initial_inputs={"question": "What is 2+2?"}))
    assert model_server.requests[0]["body"]["messages"][-1]["content"] == "What is 2+2?"


async def test_prompt_and_system_are_templates(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    pytest.importorskip("reprise.dsl._template")

    def load() -> dict[str, str]:
        return {"story": "a long story", "style": "terse"}

    node = openai_node(
        model_server,
        system="Write in a $var{style} style.",  # a field of the node's input
        prompt="Summarize for $var{reader}: $expr{$hier{load}.story.upper()}",
    )
    flow = FlowDefinition().node("load", load).node("ask", node, inputs=Ref("load"))
    await run_flow(flow, make_context("f", initial_inputs={"reader": "kids"}))
    messages = model_server.requests[0]["body"]["messages"]
    assert messages[0]["content"] == "Write in a terse style."
    assert messages[1]["content"] == "Summarize for kids: A LONG STORY"


# -- what was sent --------------------------------------------------------------------------------
@pytest.mark.parametrize("make_node", [openai_node, anthropic_node], ids=["openai", "anthropic"])
async def test_the_rendered_request_is_recorded_and_on_the_span(
    make_node: Callable[..., AIModelNode], model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    """input.json holds the node's input ({"prompt": null} with a prompt template); request.json
    holds what was sent, and the chat span carries it as GenAI messages for trace viewers."""
    model_server.structured = {"title": "Ship it", "steps": ["build"]}
    node = make_node(
        model_server,
        system="Answer as a $var{role}.",
        prompt="Plan: $var{task}",
        output=Plan,
        temperature=0.1,
        max_tokens=99,
        extra={"top_p": 0.5},
    )
    flow = FlowDefinition().node("ask", node, inputs={"role": Initial("role"), "task": Initial("task")})
    result = await run_flow(flow, make_context("f", initial_inputs={"role": "planner", "task": "ship"}))

    node_dir = result.run_dir / "f" / "ask"
    assert json.loads((node_dir / "input.json").read_text()) == {"prompt": None, "role": "planner", "task": "ship"}
    request = json.loads((node_dir / "request.json").read_text())
    assert request == {
        "provider": node.provider.name,
        "model": node.model,
        "server": "127.0.0.1",
        "system": "Answer as a planner.",
        "messages": [{"role": "user", "content": "Plan: ship"}],
        "parameters": {"temperature": 0.1, "max_tokens": 99, "timeout": 120.0, "top_p": 0.5},
        "output": {"name": "Plan", "schema": Plan.model_json_schema()},
    }

    chat = next(s for s in spans(result.run_dir) if s["name"].startswith("chat "))["attrs"]
    assert json.loads(chat["gen_ai.system_instructions"]) == [{"type": "text", "content": "Answer as a planner."}]
    assert json.loads(chat["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Plan: ship"}]}
    ]
    [answer] = json.loads(chat["gen_ai.output.messages"])
    assert answer["role"] == "assistant" and answer["finish_reason"] in ("stop", "tool_use")
    assert [json.loads(p["content"]) for p in answer["parts"]] == [{"title": "Ship it", "steps": ["build"]}]


async def test_a_failed_call_still_records_its_request(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.queue(Reply(400, {"error": {"message": "no"}}))
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("ask", openai_node(model_server)), make_context("f"))
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    request = json.loads((run_dir / "f" / "ask" / "request.json").read_text())
    assert request["messages"] == [{"role": "user", "content": "Say hello."}] and request["system"] is None
    chat = next(s for s in spans(run_dir) if s["name"] == "chat gpt-4o")["attrs"]
    assert "Say hello." in chat["gen_ai.input.messages"] and "gen_ai.output.messages" not in chat


# -- structured output -----------------------------------------------------------------------------
async def test_openai_structured_output(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    model_server.structured = {"title": "Ship it", "steps": ["build", "test"]}
    node = openai_node(model_server, output=Plan)
    result = await run_flow(FlowDefinition().node("plan", node), make_context("f"))

    assert result.outcome == Plan(title="Ship it", steps=["build", "test"])
    fmt = model_server.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "Plan"
    assert set(fmt["json_schema"]["schema"]["properties"]) == {"title", "steps"}
    # outcome.json round-trips through the node (a re-run reuses it this way).
    data = json.loads((result.run_dir / "f" / "plan" / "outcome.json").read_text())
    assert node.load_outcome(data) == result.outcome
    assert node.load_outcome(node.dump_outcome(result.outcome)) == result.outcome


async def test_anthropic_structured_output_uses_a_forced_tool(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.structured = {"title": "Ship it", "steps": ["build"]}
    node = anthropic_node(model_server, output=Plan)
    result = await run_flow(FlowDefinition().node("plan", node), make_context("f"))

    assert result.outcome == Plan(title="Ship it", steps=["build"])
    body = model_server.requests[0]["body"]
    assert body["tool_choice"] == {"type": "tool", "name": "Plan"}
    assert body["tools"][0]["input_schema"]["required"] == ["title", "steps"]


async def test_structured_output_that_does_not_validate_fails_once(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.structured = {"title": "no steps"}
    node = openai_node(model_server, output=Plan, retries=3)
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("plan", node), make_context("f"))
    assert info.value.path == "f.plan"
    assert "does not validate against Plan" in str(info.value)
    assert len(model_server.requests) == 1  # not a transient failure: no retry


# -- retries ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_node", [openai_node, anthropic_node], ids=["openai", "anthropic"])
async def test_rate_limit_then_success_counts_two_attempts(
    make_node: Callable[..., AIModelNode], model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.queue(Reply(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}))
    result = await run_flow(FlowDefinition().node("ask", make_node(model_server, retries=2)), make_context("f"))

    assert result.outcome == "Hello from the model."
    assert len(model_server.requests) == 2
    res = read_result(result.run_dir, "ask")
    assert res["attempts"] == 2
    assert res["usage"]["calls"] == 1
    node_span = next(s for s in spans(result.run_dir) if s["name"] == "node f.ask")
    assert [e["name"] for e in node_span.get("events", [])] == ["retry"]


async def test_server_error_is_retried_client_error_is_not(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.queue(
        Reply(503, {"error": {"message": "overloaded"}}), Reply(400, {"error": {"message": "bad request"}})
    )
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("ask", openai_node(model_server, retries=5)), make_context("f"))
    assert "HTTP 400" in str(info.value)
    assert len(model_server.requests) == 2
    assert read_result(info.value.result.run_dir, "ask")["attempts"] == 2  # type: ignore[attr-defined]


@pytest.mark.parametrize("make_node", [openai_node, anthropic_node], ids=["openai", "anthropic"])
@pytest.mark.parametrize(
    "header", [{"retry-after": "0.4"}, {"retry-after-ms": "400"}], ids=["retry-after", "retry-after-ms"]
)
async def test_the_servers_retry_after_is_waited_for(
    make_node: Callable[..., AIModelNode],
    header: dict[str, str],
    model_server: ModelServer,
    make_context: Callable[..., RunContext],
) -> None:
    # The node's own backoff is 10 ms; the server asks for 0.4 s.
    model_server.queue(Reply(429, {"error": {"message": "Rate limit reached"}}, headers=header))
    result = await run_flow(FlowDefinition().node("ask", make_node(model_server, retries=1)), make_context("f"))
    assert result.outcome == "Hello from the model."
    first, second = (r["at"] for r in model_server.requests)
    assert second - first >= 0.38


async def test_retry_after_is_capped_by_max_backoff(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    model_server.queue(Reply(503, {"error": {"message": "overloaded"}}, headers={"retry-after": "6"}))
    node = openai_node(model_server, retries=1, max_backoff=0.05)
    result = await run_flow(FlowDefinition().node("ask", node), make_context("f"))
    assert result.outcome == "Hello from the model."
    first, second = (r["at"] for r in model_server.requests)
    assert second - first < 3  # not the 6 s the server asked for (an uncapped wait fails, not hangs)


def test_retry_after_values() -> None:
    from datetime import UTC, datetime
    from email.utils import format_datetime

    from reprise.nodes._providers import retry_after_seconds

    now = 1_800_000_000.0
    date = format_datetime(datetime.fromtimestamp(now + 7, UTC), usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(7)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    for bad in ({"retry-after": "soon"}, {"retry-after": "nan"}, {}, None):
        assert retry_after_seconds(bad) is None


def test_retry_after_header_odd_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from reprise.nodes._providers import retry_after_seconds

    # A dict spelled as HTTP spells it (a provider's own error, a test double) is read too.
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"Retry-After-Ms": "250"}) == 0.25
    # An unreadable retry-after-ms does not hide a readable Retry-After.
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0
    for bad in ("nan", "inf", "-inf", "1e400"):
        assert retry_after_seconds({"retry-after-ms": bad}) is None
    # "-0000" (RFC 2822: UTC, source zone unknown) gives a naive datetime; it is not local time.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        now = 1_800_000_000.0
        date = time.strftime("%a, %d %b %Y %H:%M:%S -0000", time.gmtime(now + 7))
        assert retry_after_seconds({"retry-after": date}, now=now) == pytest.approx(7)
    finally:
        monkeypatch.undo()
        time.tzset()


async def test_retries_exhausted(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    model_server.queue(*[Reply(429, {"error": {"message": "slow down"}})] * 3)
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("ask", openai_node(model_server, retries=2)), make_context("f"))
    assert "HTTP 429" in str(info.value)
    assert read_result(info.value.result.run_dir, "ask")["attempts"] == 3  # type: ignore[attr-defined]


# -- malformed responses ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make_node", "reply", "message"),
    [
        (openai_node, Reply(body={"id": "x", "object": "chat.completion"}), "no 'choices'"),
        (openai_node, Reply(body="{not json"), "not valid JSON"),
        (openai_node, Reply(body="<html>gateway</html>", content_type="text/html"), "body is not JSON"),
        (anthropic_node, Reply(body={"id": "x", "type": "message"}), "no 'content'"),
        (anthropic_node, Reply(body="{not json"), "not valid JSON"),
    ],
    ids=["openai-shape", "openai-json", "openai-html", "anthropic-shape", "anthropic-json"],
)
async def test_malformed_response_is_a_clear_error(
    make_node: Callable[..., AIModelNode],
    reply: Reply,
    message: str,
    model_server: ModelServer,
    make_context: Callable[..., RunContext],
) -> None:
    model_server.queue(reply)
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("ask", make_node(model_server)), make_context("f"))
    error = info.value
    assert error.path == "f.ask"
    assert "malformed response" in str(error) and message in str(error)
    res = read_result(error.result.run_dir, "ask")  # type: ignore[attr-defined]
    assert res["status"] == "failed" and res["attempts"] == 1
    assert res["error"]["type"] == "NodeExecutionError"
    assert "f.ask: malformed response" in res["error"]["message"]


# -- telemetry -------------------------------------------------------------------------------------
async def test_genai_attributes_and_metrics(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    node = openai_node(model_server, temperature=0.5, max_tokens=64)
    result = await run_flow(FlowDefinition().node("ask", node), make_context("f"))

    chat = next(s for s in spans(result.run_dir) if s["name"] == "chat gpt-4o")
    attrs = chat["attrs"]
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o"
    assert attrs["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert attrs["gen_ai.usage.input_tokens"] == 12
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.response.finish_reasons"] == ["stop"]
    assert attrs["server.address"] == "127.0.0.1"
    node_span = next(s for s in spans(result.run_dir) if s["name"] == "node f.ask")
    assert chat["parentSpanId"] == node_span["spanId"]

    metrics = (result.run_dir / ".trace" / "metrics.jsonl").read_text()
    names = {
        m["name"]
        for line in metrics.splitlines()
        for rm in json.loads(line)["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for m in sm["metrics"]
    }
    assert {"gen_ai.client.token.usage", "gen_ai.client.operation.duration", "ai.cost_usd"} <= names


# -- credentials -----------------------------------------------------------------------------------
async def test_canary_key_never_reaches_the_run_directory(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    """A key planted in the environment: a successful call, a retried one and a failing call whose
    server echoes the key in its error. No file of the run (trace, logs, results) may hold it."""
    model_server.queue(Reply(500, {"error": {"message": "boom"}}))
    ok = (
        FlowDefinition()
        .node("ok", openai_node(model_server))
        .node("echo", openai_node(model_server, model="echo-key-401"))
    )
    ctx = make_context("f")
    with pytest.raises(RunFailedError) as info:
        await run_flow(ok, ctx)
    assert CANARY not in str(info.value)
    assert "[redacted]" in str(info.value)
    run_dir = ctx.require_run_dir().path
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {".trace/trace.jsonl", ".trace/logs.jsonl", "f/ok/result.json", "f/echo/result.json"} <= {
        str(p.relative_to(run_dir)) for p in files
    }
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


CANARY_FLOWS = """
import os

from pydantic import BaseModel

from reprise import FlowDefinition
from reprise.nodes import AIModelNode


class Plan(BaseModel):
    title: str
    steps: list[str]


URL = os.environ["CANARY_MODEL_URL"]
structured = FlowDefinition().node(
    "ask", AIModelNode(model="gpt-4o", base_url=URL + "/v1", prompt="Plan.", output=Plan, retries=0)
)
"""


def _openai_answer(content: Any, **message: Any) -> dict[str, Any]:
    return {
        "id": "$KEY",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-$KEY",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


#: Every way a server can hand the key back, each in a run of its own: (openai?, output=Plan?,
#: replies, whether the run completes). "$KEY" stands for the key the server received.
ECHOES: dict[str, tuple[bool, bool, list[Reply], bool]] = {
    "reply-text-model-id-header": (
        True, False, [Reply(body=_openai_answer("hello $KEY"), headers={"x-echo": "$KEY"})], True,
    ),
    "retried-5xx": (
        True, False, [Reply(500, {"error": {"message": "overloaded for $KEY"}}, headers={"x-echo": "$KEY"})], True,
    ),
    "structured-data": (True, True, [Reply(body=_openai_answer('{"title": "$KEY", "steps": ["$KEY"]}'))], True),
    "structured-invalid": (True, True, [Reply(body=_openai_answer('{"title": "$KEY", "steps": 3}'))], False),
    "html-body": (True, False, [Reply(body="<html>$KEY</html>", content_type="text/html")], False),
    "refusal": (True, False, [Reply(body=_openai_answer(None, refusal="not for $KEY"))], False),
    "error-body-401": (
        True, False, [Reply(401, {"error": {"message": "invalid key $KEY", "type": "auth"}})], False,
    ),
    "anthropic-tool-input": (
        False, True,
        [Reply(body={
            "id": "$KEY", "type": "message", "role": "assistant", "model": "$KEY", "stop_reason": "tool_use",
            "content": [{"type": "tool_use", "id": "t", "name": "Plan", "input": {"title": "$KEY", "steps": []}}],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        })],
        True,
    ),
    "anthropic-error-400": (
        False, False,
        [Reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad: $KEY"}})],
        False,
    ),
    "anthropic-body-not-json": (False, False, [Reply(body="{not json $KEY")], False),
}  # fmt: skip


def test_canary_key_appears_nowhere(model_server: ModelServer, tmp_path: Path) -> None:
    """A server that echoes the key in every place it can (replies, structured output, model
    names, ids, headers, error bodies, bodies that are not JSON, refusals, 5xx that are retried):
    after the runs, the key is in no file under the run root (run directories, the SQLite index,
    HTML views), no git object or commit message of the outcome repository, and no CLI output."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "canary_flows.py").write_text(CANARY_FLOWS)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("REPRISE_", "OPENAI_", "ANTHROPIC_"))},
        "OPENAI_API_KEY": CANARY,
        "CANARY_MODEL_URL": model_server.url,
        "REPRISE_CREDENTIALS": str(tmp_path / "no-credentials.toml"),
        "PYTHONPATH": str(REPO / "src"),  # this checkout, whatever the venv has installed
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [sys.executable, "-m", "reprise.cli", *args],
            cwd=project, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert CANARY not in proc.stdout + proc.stderr, f"the API key leaked into `reprise {args[0]}`"
        return proc

    outputs: list[str] = []
    # The path of the report: structured output whose reply is not JSON, run by the CLI.
    model_server.queue(Reply(body=_openai_answer("not JSON at all: $KEY")))
    run = cli("run", "canary_flows:structured", "--json")
    assert run.returncode == 1, run.stderr
    run_ids = [json.loads(run.stdout)["data"]["run_id"]]
    assert "[redacted]" in run.stdout

    async def run_echoes() -> None:
        for name, (openai, structured, replies, completes) in ECHOES.items():
            model_server.queue(*replies)
            make = openai_node if openai else anthropic_node
            node = make(model_server, output=Plan if structured else None, retries=1)
            ctx = RunContext(root_component_id="f", project_root=project, tags={"case": name})
            try:
                await FlowRunner(FlowDefinition().node("ask", node), ctx).run()
                status = "completed"
            except RunFailedError as exc:
                status = "failed"
                outputs.append(str(exc))
            assert status == ("completed" if completes else "failed"), name
            run_ids.append(ctx.require_run_dir().path.name)

    anyio.run(run_echoes)
    assert not model_server.replies  # every echo was served

    run_root = project / "runs"
    for rid in run_ids:
        write_run_view(run_root / rid, run_root / ".views" / f"{rid}.html")
    with ThreadPoolExecutor(max_workers=4) as pool:
        shown = list(pool.map(lambda rid: cli("show", rid, "--json"), run_ids))
    outputs.extend(proc.stdout for proc in shown)
    outputs.append(cli("runs", "--json", "--limit", "100").stdout)
    for text in outputs:
        assert CANARY not in text

    run_root = project / "runs"
    files = [p for p in run_root.rglob("*") if p.is_file()]
    assert any(p.name == ".index.sqlite" for p in files) and any(p.suffix == ".html" for p in files)
    for path in files:
        assert CANARY.encode() not in path.read_bytes(), f"the API key leaked into {path}"
    repo = run_root / "outcome" / "proj"
    git = ["git", "-C", str(repo)]
    history = subprocess.run([*git, "log", "--all", "-p"], capture_output=True, check=True).stdout
    assert history.count(b"\ncommit ") + history.startswith(b"commit ") == len(run_ids)
    objects = subprocess.run(
        [*git, "cat-file", "--batch", "--batch-all-objects"], capture_output=True, check=True
    ).stdout
    assert CANARY.encode() not in history + objects, "the API key leaked into the outcome repository"


class RawSDKProvider:
    """A provider as a user might write one: the official SDK, its exceptions left as they are."""

    name = "openai"

    async def complete(self, request: ModelRequest, credentials: Credentials) -> ModelResponse:
        import openai

        assert credentials.api_key is not None
        key = credentials.api_key.get_secret_value()
        async with openai.AsyncOpenAI(api_key=key, base_url=request.base_url, max_retries=0) as client:
            completion = await client.chat.completions.create(
                model=request.model, messages=[{"role": "user", "content": request.prompt}]
            )
        return ModelResponse(text=completion.choices[0].message.content, model=completion.model)


async def test_an_own_providers_exceptions_are_scrubbed(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    """The SDK's own exception (its message quotes the server's 401 body, which echoes the key)
    escapes a provider of the user's: the node scrubs it like any other."""
    model_server.queue(Reply(401, {"error": {"message": "invalid key $KEY", "type": "auth"}}))
    node = AIModelNode(
        provider=RawSDKProvider(), model="gpt-4o", base_url=model_server.url + "/v1", prompt="hi", backoff=0.01
    )
    ctx = make_context("f")
    with pytest.raises(RunFailedError) as info:
        await run_flow(FlowDefinition().node("ask", node), ctx)
    assert "AuthenticationError" in str(info.value) and "[redacted]" in str(info.value)
    run_dir = ctx.require_run_dir().path
    assert read_result(run_dir, "ask")["error"]["type"] == "NodeExecutionError"
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), f"the API key leaked into {path}"


def test_redaction_covers_escaped_forms_and_spares_placeholders() -> None:
    key = 'sk-"odd"\nkey-0123456789'
    creds = Credentials(SecretStr(key), "test")
    echoes = {
        "plain": key,
        "json": json.dumps({"k": key}),
        "repr": repr(key),
        "header": repr(f"Bearer {key}".encode()),
        "url": "https://x/?key=" + quote(key, safe=""),
        "environment": f"also {CANARY}",  # OPENAI_API_KEY, set by the _keys fixture
    }
    scrubbed = redact_value({"echoes": [echoes], "tuple": (key,)}, creds)
    for name, text in scrubbed["echoes"][0].items():
        assert "0123456789" not in text and CANARY not in text and "[redacted]" in text, name
    assert scrubbed["tuple"] == ("[redacted]",)
    # A placeholder key is not a secret: words of an answer stay as they are.
    assert redact_value("unused variables", Credentials(SecretStr("unused"), "test")) == "unused variables"


async def test_credentials_file_profile(
    model_server: ModelServer, make_context: Callable[..., RunContext], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    creds = tmp_path / "credentials.toml"
    creds.write_text(f'[local]\napi_key = "file-key"\nbase_url = "{model_server.url}/v1"\n')
    node = AIModelNode(model="llama3", prompt="hi", credentials_profile="local", credentials_file=creds)
    result = await run_flow(FlowDefinition().node("ask", node), make_context("f"))
    assert result.outcome == "Hello from the model."
    assert model_server.requests[0]["headers"]["authorization"] == "Bearer file-key"
    res = read_result(result.run_dir, "ask")
    assert res["ai"]["credentials_source"] == f"file:{creds}[local]"
    assert res["cost_usd"] is None and res["ai"]["price_known"] is False  # llama3 has no price


async def test_api_key_env_must_be_set(model_server: ModelServer, make_context: Callable[..., RunContext]) -> None:
    node = openai_node(model_server, api_key_env="REPRISE_TEST_UNSET_KEY")
    with pytest.raises(RunFailedError, match="REPRISE_TEST_UNSET_KEY"):
        await run_flow(FlowDefinition().node("ask", node), make_context("f"))
    assert model_server.requests == []


async def test_api_key_env_is_used(
    model_server: ModelServer, make_context: Callable[..., RunContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_GATEWAY_KEY", "gateway-key")
    node = anthropic_node(model_server, api_key_env="MY_GATEWAY_KEY")
    await run_flow(FlowDefinition().node("ask", node), make_context("f"))
    headers = model_server.requests[0]["headers"]
    assert "gateway-key" in headers.get("x-api-key", "") + headers.get("authorization", "")


# -- pricing and imports ---------------------------------------------------------------------------
def test_price_table_matching() -> None:
    table = PriceTable({"gpt-4o": (2.5, 10.0), "gpt-4o-mini": (0.15, 0.6), "claude-opus-4": (15.0, 75.0)})
    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("gpt-4o-2024-08-06", 0, 1_000_000) == pytest.approx(10.0)
    assert table.cost("claude-opus-4-20250514", 1_000_000, 0) == pytest.approx(15.0)
    assert table.cost("gpt-4-0613", 1, 1) is None
    # A newer model is not priced as an older one whose name it starts with.
    assert table.cost("gpt-4o-audio", 10, 10) is None
    assert table.cost("claude-opus-4-6", 10, 10) is None
    assert table.cost("llama3", 10, 10) is None
    assert table.cost("gpt-4o", None, 10) is None
    table.register("llama3", 0.0, 0.0)
    assert table.cost("llama3", 10, 10) == 0.0


def test_register_price_extends_the_default_table() -> None:
    assert "reprise-test-model" not in DEFAULT_PRICES
    register_price("reprise-test-model", 1.0, 2.0)
    assert DEFAULT_PRICES.cost("reprise-test-model", 1_000_000, 1_000_000) == pytest.approx(3.0)


def test_import_reprise_imports_no_model_sdk() -> None:
    code = (
        "import reprise, reprise.nodes, sys; "
        "assert 'openai' not in sys.modules and 'anthropic' not in sys.modules, "
        "[m for m in sys.modules if m.startswith(('openai', 'anthropic'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the example agent -----------------------------------------------------------------------------
EXAMPLE_ENV_VARS = ("REPRISE_OPENAI_MODEL", "REPRISE_OPENAI_BASE_URL", "OPENAI_API_KEY")
REPO = Path(__file__).resolve().parents[2]


def run_example(env: dict[str, str], run_root: Path) -> subprocess.CompletedProcess[str]:
    base_env = {k: v for k, v in os.environ.items() if k not in EXAMPLE_ENV_VARS}
    return subprocess.run(
        [sys.executable, "-m", "examples.ai_agent", "--run-root", str(run_root)],
        env={**base_env, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_example_says_what_to_set(tmp_path: Path) -> None:
    proc = run_example({}, tmp_path)
    assert proc.returncode == 2
    for var in EXAMPLE_ENV_VARS:
        assert var in proc.stderr
    assert not (tmp_path).joinpath("runs").exists()


def test_example_agent_end_to_end(model_server: ModelServer, tmp_path: Path) -> None:
    model_server.structured = {
        "title": "Notes briefing",
        "summary": "A few notes.",
        "action_items": ["fix the bug"],
        "open_questions": [],
    }
    env = {
        "REPRISE_OPENAI_MODEL": "local-model",
        "REPRISE_OPENAI_BASE_URL": model_server.url + "/v1",
        "OPENAI_API_KEY": CANARY,
    }
    proc = run_example(env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    briefing = Path(proc.stdout.split("briefing:")[1].strip())
    assert briefing.read_text().startswith("# Notes briefing\n\nA few notes.\n\n## Action items\n\n- fix the bug\n")
    prompt = model_server.requests[0]["body"]["messages"][-1]["content"]
    assert "lentil-soup.txt" in prompt  # the folder's digest reached the model
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
