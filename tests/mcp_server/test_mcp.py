"""`reprise mcp`: the official MCP SDK's own client, over stdio and streamable HTTP, against a
real server process and a real script writing alerts in another process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

import reprise

SRC = str(Path(reprise.__file__).resolve().parent.parent)
TOOLS = {
    "list_runs", "get_run", "get_alerts", "get_metric", "get_logs", "list_experiments", "get_experiment",
    "start_run", "start_experiment", "rerun", "resume",
}  # fmt: skip


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the SDK's stdio client starts its server with asyncio's subprocesses


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REPRISE_RUN_ROOT"}
    env["PYTHONPATH"] = SRC
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def _session(transport: str, run_root: Path, *extra: str) -> AsyncIterator[ClientSession]:
    args = ["-m", "reprise.cli", "mcp", "--run-root", str(run_root), *extra]
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=args, env=_env(), cwd=str(run_root.parent))
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session
        return
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, *args, "--transport", "http", "--port", str(port)],
        env=_env(), cwd=run_root.parent, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the MCP HTTP server did not start") from None
                await anyio.sleep(0.1)
        async with streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session
    finally:
        server.terminate()
        server.wait(timeout=30)


def _data(result: Any) -> Any:
    assert not result.is_error, result.content
    structured = result.structured_content
    if isinstance(structured, dict) and set(structured) == {"result"}:
        return structured["result"]  # a list result, wrapped by the SDK
    if structured is not None:
        return structured
    return json.loads(result.content[0].text)


def _error(result: Any) -> str:
    assert result.is_error, result
    return " ".join(c.text for c in result.content)


def _cli_data(run_root: Path, *argv: str) -> Any:
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", *argv, "--run-root", str(run_root), "--json"],
        env=_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return json.loads(proc.stdout)["data"]


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A script in another process that writes five alerts, slowly, then finishes."""
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            import reprise

            run = reprise.init(project="poll", name="slow-writer", config={"lr": 0.1})
            print(run.run_id, flush=True)
            sys.stdin.readline()  # the test says when to start
            for i in range(5):
                run.log("loss", 1.0 / (i + 1))
                run.alert(f"alert {i}", f"loss={1.0 / (i + 1):.3f}", level="warn" if i % 2 else "info")
                time.sleep(0.25)
            run.finish()
            """
        )
    )
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE}
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=_env(), text=True, **pipes)
    yield proc, tmp_path / "runs"
    if proc.poll() is None:
        proc.kill()
    proc.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_agent_loop_over_mcp(transport: str, writer: tuple[subprocess.Popen[str], Path]) -> None:
    proc, run_root = writer
    assert proc.stdout is not None and proc.stdin is not None
    run_id = proc.stdout.readline().strip()
    async with _session(transport, run_root) as session:
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert tools == TOOLS

        # Poll the alerts of a run still writing them: each comes back exactly once.
        proc.stdin.write("go\n")
        proc.stdin.flush()
        seen: list[str] = []
        since: str | None = None
        while True:
            done = proc.poll() is not None  # read after this: nothing written before it is missed
            args: dict[str, Any] = {"run": "slow-writer", "project": "poll"}
            if since is not None:
                args["since"] = since
            alerts = _data(await session.call_tool("get_alerts", args))
            if alerts:
                since = alerts[0]["timestamp"]  # newest first
                seen.extend(a["title"] for a in reversed(alerts))
            if done:
                break
            await anyio.sleep(0.1)
        assert proc.returncode == 0
        assert seen == [f"alert {i}" for i in range(5)]

        # The same JSON as the CLI's --json data.
        run = _data(await session.call_tool("get_run", {"run": "latest"}))
        assert run == _cli_data(run_root, "show", run_id)
        assert run["run"]["name"] == "slow-writer" and run["run"]["config"] == {"lr": 0.1}
        runs = _data(await session.call_tool("list_runs", {"project": "poll"}))
        assert runs == _cli_data(run_root, "runs")
        metric = _data(await session.call_tool("get_metric", {"run": "slow", "metric": "loss"}))
        assert [m["metrics"]["loss"] for m in metric] == [1.0, 0.5, 1.0 / 3, 0.25, 0.2]
        assert _data(await session.call_tool("get_logs", {"run": run_id})) == _cli_data(run_root, "logs", run_id)
        assert _data(await session.call_tool("list_experiments", {})) == []

        # Refused without --allow-run, and saying why.
        message = _error(await session.call_tool("start_run", {"target": "flows:flow"}))
        assert "start_run is refused" in message and "--allow-run" in message
        message = _error(await session.call_tool("resume", {"run": run_id}))
        assert "--allow-run" in message

        # Bad arguments are tool errors with a clear message; the server goes on.
        assert "no run 'no-such-run'" in _error(await session.call_tool("get_run", {"run": "no-such-run"}))
        message = _error(await session.call_tool("get_alerts", {"run": run_id, "since": "yesterday"}))
        assert "not a timestamp: 'yesterday'" in message
        message = _error(await session.call_tool("get_alerts", {"level": "catastrophic"}))
        assert "unknown alert level" in message
        assert "not a timestamp" not in _error(await session.call_tool("get_metric", {"run": "-7"}))
        assert len(_data(await session.call_tool("list_runs", {}))) == 1


FLOW = """
from reprise import FlowDefinition, Initial

def double(x: int) -> int:
    return x * 2

flow = FlowDefinition(id="doubler").node("double", double, inputs={"x": Initial("x")})
"""


@pytest.mark.anyio
async def test_allow_run_starts_and_reruns(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(FLOW)
    run_root = tmp_path / "runs"
    async with _session("stdio", run_root, "--allow-run", "--project-root", str(tmp_path)) as session:
        done = _data(await session.call_tool("start_run", {"target": "flows:flow", "inputs": {"x": 21}, "wait": True}))
        assert done["status"] == "completed" and done["outcome"] == 42
        again = _data(await session.call_tool("rerun", {"run": "latest", "from_path": "doubler.double", "wait": True}))
        assert again["status"] == "completed" and again["previous_run_id"] == done["run_id"]
        started = _data(await session.call_tool("start_run", {"target": "flows:flow", "inputs": {"x": 1}}))
        assert started["pid"] > 0 and started["run_id"]
        message = _error(await session.call_tool("start_run", {"target": "flows:nothing", "wait": True}))
        assert "nothing" in message
