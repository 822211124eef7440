"""CommandNode with real subprocesses, on asyncio and trio."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from reprise import FlowDefinition, FlowRunner, RunContext, RunFailedError
from reprise.errors import DefinitionError
from reprise.nodes import CommandNode, CommandResult
from reprise.nodes._command import OutputBuffer

pytestmark = pytest.mark.anyio
PY = sys.executable


async def run_node(node: CommandNode, ctx: RunContext, **kw: object) -> CommandResult:
    result = await FlowRunner(FlowDefinition().node("cmd", node, **kw), ctx).run()  # type: ignore[arg-type]
    assert isinstance(result.outcome, CommandResult)
    return result.outcome


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (a zombie waiting for a reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_captures_output_and_return_code(make_context: Callable[..., RunContext]) -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(3)"
    outcome = await run_node(CommandNode([PY, "-c", code], check=False), make_context("f"))
    assert outcome.returncode == 3
    assert outcome.stdout == "out\n" and outcome.stderr == "err\n"
    assert outcome.args == [PY, "-c", code]
    assert not outcome.stdout_truncated and outcome.stdout_bytes == 4


async def test_default_cwd_is_the_node_directory(make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("f")
    outcome = await run_node(CommandNode([PY, "-c", "import os; print(os.getcwd())"]), ctx)
    assert Path(outcome.stdout.strip()) == (ctx.require_run_dir().path / "f" / "cmd").resolve()


async def test_cwd_and_env(make_context: Callable[..., RunContext], tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    code = "import os; print(os.getcwd()); print(os.environ['GREETING']); print('HOME' in os.environ)"
    node = CommandNode([PY, "-c", code], cwd="work", env={"GREETING": "hi"}, inherit_env=False)
    outcome = await run_node(node, make_context("f"))
    assert outcome.stdout.split() == [str((tmp_path / "work").resolve()), "hi", "False"]


async def test_env_values_are_not_recorded(make_context: Callable[..., RunContext]) -> None:
    secret = "env-secret-4b1d"
    ctx = make_context("f")
    await run_node(CommandNode([PY, "-c", "pass"], env={"TOKEN": secret}), ctx)
    for path in ctx.require_run_dir().path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


async def test_non_zero_exit_fails_fast_with_stderr(make_context: Callable[..., RunContext]) -> None:
    code = "import sys; print('broken thing', file=sys.stderr); sys.exit(2)"
    flow = FlowDefinition().node("cmd", CommandNode([PY, "-c", code])).node("after", CommandNode([PY, "-c", "pass"]))
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, make_context("f")).run()
    assert info.value.path == "f.cmd"
    assert "exited with 2" in str(info.value) and "broken thing" in str(info.value)
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    result = json.loads((run_dir / "f" / "cmd" / "result.json").read_text())
    assert result["returncode"] == 2 and result["status"] == "failed"
    assert not (run_dir / "f" / "after" / "result.json").exists()


async def test_no_shell_unless_asked(make_context: Callable[..., RunContext], tmp_path: Path) -> None:
    # Without a shell, ';' and '>' are plain argument text.
    outcome = await run_node(CommandNode(["echo", "a;", "touch", "pwned", ">x"], cwd=str(tmp_path)), make_context("f"))
    assert outcome.stdout == "a; touch pwned >x\n"
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(DefinitionError, match="list of arguments"):
        CommandNode("echo hi")
    shelled = await run_node(CommandNode("echo one && echo two", shell=True), make_context("g"))
    assert shelled.stdout == "one\ntwo\n" and shelled.args == ["echo one && echo two"]


async def test_missing_program_is_a_clear_error(make_context: Callable[..., RunContext]) -> None:
    with pytest.raises(RunFailedError, match="cannot start 'no-such-program-xyz'"):
        await run_node(CommandNode(["no-such-program-xyz"]), make_context("f"))


async def test_stdin(make_context: Callable[..., RunContext]) -> None:
    node = CommandNode([PY, "-c", "import sys; print(sys.stdin.read().upper())"], stdin="hello")
    assert (await run_node(node, make_context("f"))).stdout == "HELLO\n"


async def test_output_is_bounded_head_and_tail(make_context: Callable[..., RunContext]) -> None:
    code = "import sys; sys.stdout.write('A' * 1000 + 'B' * 100000 + 'C' * 1000)"
    outcome = await run_node(CommandNode([PY, "-c", code], max_output_bytes=2000), make_context("f"))
    assert outcome.stdout_truncated and outcome.stdout_bytes == 102000
    assert outcome.stdout.startswith("A" * 1000) and outcome.stdout.endswith("C" * 1000)
    assert "[... 100000 bytes dropped ...]" in outcome.stdout


def test_output_buffer_small_chunks() -> None:
    buffer = OutputBuffer(6)
    for ch in "abcdefghij":
        buffer.write(ch.encode())
    assert buffer.text() == "abc\n[... 4 bytes dropped ...]\nhij"
    exact = OutputBuffer(6)
    exact.write(b"abcdef")
    assert exact.text() == "abcdef" and exact.dropped == 0


async def test_timeout_kills_the_whole_process_group(make_context: Callable[..., RunContext], tmp_path: Path) -> None:
    """The command starts a grandchild and waits for it; the timeout must kill both."""
    pid_file = tmp_path / "grandchild.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started; wait"
    node = CommandNode(["/bin/sh", "-c", script], timeout=0.5, kill_grace=0.5)
    with pytest.raises(RunFailedError) as info:
        await run_node(node, make_context("f"))
    assert "timed out after 0.5s" in str(info.value)
    grandchild = int(pid_file.read_text())
    with anyio.fail_after(10):  # the kernel delivers SIGKILL asynchronously
        while not gone(grandchild):
            await anyio.sleep(0.02)
    result = json.loads((info.value.result.run_dir / "f" / "cmd" / "result.json").read_text())  # type: ignore[attr-defined]
    assert result["timed_out"] is True


async def test_sigterm_first_then_sigkill(make_context: Callable[..., RunContext], tmp_path: Path) -> None:
    """A command that handles SIGTERM gets to clean up within the grace period."""
    marker = tmp_path / "cleaned"
    code = (
        "import signal, sys, time, pathlib\n"
        f"def bye(*a):\n    pathlib.Path({str(marker)!r}).write_text('yes'); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    with pytest.raises(RunFailedError, match="timed out"):
        # The timeout leaves the interpreter time to start and install its handler.
        await run_node(CommandNode([PY, "-c", code], timeout=2.0, kill_grace=5.0), make_context("f"))
    assert marker.read_text() == "yes"


async def test_background_children_do_not_outlive_the_node(
    make_context: Callable[..., RunContext], tmp_path: Path
) -> None:
    """A command that exits leaving a child that holds stdout open: the node still ends."""
    pid_file = tmp_path / "bg.pid"
    outcome = await run_node(
        CommandNode(["/bin/sh", "-c", f"sleep 60 & echo $! > {pid_file}; echo done"], timeout=30), make_context("f")
    )
    assert outcome.returncode == 0 and outcome.stdout == "done\n"
    background = int(pid_file.read_text())
    with anyio.fail_after(10):
        while not gone(background):
            await anyio.sleep(0.02)


async def test_cancelled_run_kills_the_command(make_context: Callable[..., RunContext], tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    node = CommandNode(["/bin/sh", "-c", f"echo $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}; sleep 60"])
    ctx = make_context("f")
    async with anyio.create_task_group() as tg:
        tg.start_soon(run_node, node, ctx)
        with anyio.fail_after(10):
            while not pid_file.exists():
                await anyio.sleep(0.02)
        tg.cancel_scope.cancel()  # as Ctrl-C or an enclosing timeout would
    child = int(pid_file.read_text())
    with anyio.fail_after(10):
        while not gone(child):
            await anyio.sleep(0.02)
    assert ctx.status is not None and ctx.status.value == "cancelled"


async def test_templates_in_args(make_context: Callable[..., RunContext]) -> None:
    pytest.importorskip("reprise.dsl._template")
    node = CommandNode([PY, "-c", "import sys; print(sys.argv[1:])", "$var{name}", "$expr{1 + 2}"])
    outcome = await run_node(node, make_context("f", initial_inputs={"name": "world"}), inputs={})
    assert outcome.stdout == "['world', '3']\n"


async def test_outcome_round_trips(make_context: Callable[..., RunContext]) -> None:
    node = CommandNode([PY, "-c", "print('x')"])
    outcome = await run_node(node, make_context("f"))
    assert node.load_outcome(json.loads(json.dumps(node.dump_outcome(outcome)))) == outcome
