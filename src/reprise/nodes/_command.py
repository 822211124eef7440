"""CommandNode: run a program as a node, with a timeout that kills its whole process group.

::

    tests = CommandNode(["pytest", "-q", "tests"], cwd="$var{repo}", timeout=600, check=True)
    flow = FlowDefinition().node("tests", tests)

* The command is an argument list and runs without a shell; ``shell=True`` must be asked for
  explicitly (then ``args`` is one string for ``/bin/sh -c``).
* Each argument, ``cwd`` and each ``env`` value may be a template.
* ``cwd`` defaults to the node's own directory in the run (``ctx.node_dir``); a relative ``cwd``
  is taken from the project root.
* The process starts in a new session (its own process group). On timeout, or when the run is
  cancelled, the whole group gets ``SIGTERM`` and, after ``kill_grace`` seconds, ``SIGKILL``:
  children and grandchildren die with it.
* stdout and stderr are captured up to ``max_output_bytes`` each: the first and last halves are
  kept and a marker says how many bytes were dropped in between.
* With ``check=True`` (the default) a non-zero exit fails the node; with ``check=False`` the
  return code is part of the outcome.

POSIX only (process groups and signals).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import BaseModel, ConfigDict

from reprise.dsl._node import NodeSettings
from reprise.errors import DefinitionError, NodeExecutionError
from reprise.nodes._base import ModelOutcomeNode
from reprise.nodes._render import input_variables, render_text

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext

__all__ = ["CommandNode", "CommandResult", "CommandVariables", "OutputBuffer"]

_ERROR_TAIL = 2000


class CommandVariables(BaseModel):
    """The input of a :class:`CommandNode`: any fields, which its templates read as ``$var{name}``."""

    model_config = ConfigDict(extra="allow")


class CommandResult(BaseModel):
    """The outcome of a :class:`CommandNode`: what the command did, not how long it took (that
    is the node's ``duration_s`` in ``result.json``), so the same work makes the same outcome
    and two runs of it diff empty."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    #: Total bytes the command wrote to each stream (the text above may hold fewer).
    stdout_bytes: int
    stderr_bytes: int
    stdout_truncated: bool
    stderr_truncated: bool


class OutputBuffer:
    """Keeps the first and the last ``limit // 2`` bytes of a stream and counts the rest."""

    __slots__ = ("_half", "_head", "_tail", "total")

    def __init__(self, limit: int) -> None:
        self._half = max(limit // 2, 1)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        """Add a chunk of output."""
        self.total += len(data)
        room = self._half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > self._half:
                del self._tail[: len(self._tail) - self._half]

    @property
    def dropped(self) -> int:
        """Bytes neither in the head nor in the tail."""
        return self.total - len(self._head) - len(self._tail)

    def text(self) -> str:
        """The kept output as text (UTF-8, undecodable bytes replaced), with a marker where
        bytes were dropped."""
        head = self._head.decode("utf-8", "replace")
        if not self._tail:
            return head
        tail = self._tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes dropped ...]\n{tail}"
        return head + tail


class CommandNode(ModelOutcomeNode):
    """Runs a command; see the module docstring.

    Args:
        args: the program and its arguments (each a template), or one string with ``shell=True``.
        shell: run ``args`` with ``/bin/sh -c``. Only for commands you wrote yourself: a shell
            interprets whatever a template substitutes.
        cwd: the working directory (a template); default the node's directory.
        env: environment variables to set (values are templates). They are never recorded.
        inherit_env: start from this process's environment (``False``: only ``env``, plus ``PATH``).
        timeout: seconds before the process group is killed and the node fails.
        kill_grace: seconds between ``SIGTERM`` and ``SIGKILL``.
        check: fail the node on a non-zero exit.
        stdin: text written to the command's standard input (a template); default: none.
        max_output_bytes: bytes kept of each of stdout and stderr.
        retries, backoff: retry failed attempts (a non-zero exit with ``check``, a timeout).
    """

    outcome_model = CommandResult
    kind = "command"
    input_model: type[BaseModel] | None = CommandVariables

    def __init__(
        self,
        args: Sequence[str] | str,
        *,
        shell: bool = False,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        timeout: float | None = None,
        kill_grace: float = 2.0,
        check: bool = True,
        stdin: str | None = None,
        max_output_bytes: int = 256 * 1024,
        retries: int = 0,
        backoff: float = 0.5,
    ) -> None:
        if shell:
            if not isinstance(args, str):
                raise DefinitionError("with shell=True, args must be one command string")
            self.args: list[str] = [args]
        else:
            if isinstance(args, (str, bytes)):
                raise DefinitionError(
                    "args must be a list of arguments, e.g. ['ls', '-l']; "
                    "pass shell=True to run a command string through /bin/sh"
                )
            self.args = [str(a) for a in args]
            if not self.args:
                raise DefinitionError("args must not be empty")
        if timeout is not None and timeout <= 0:
            raise DefinitionError(f"timeout must be > 0 seconds, got {timeout}")
        if max_output_bytes < 2:
            raise DefinitionError(f"max_output_bytes must be >= 2, got {max_output_bytes}")
        self.shell = shell
        self.cwd = cwd
        self.env = dict(env or {})
        self.inherit_env = inherit_env
        self.timeout = timeout
        self.kill_grace = kill_grace
        self.check = check
        self.stdin = stdin
        self.max_output_bytes = max_output_bytes
        # The command enforces its own timeout (to kill the process group); the executor's
        # timeout stays unset so the two never race.
        self.settings = NodeSettings(retries=retries, backoff=backoff)

    @property
    def name(self) -> str:
        return f"CommandNode({self.args[0].split()[0] if self.args else ''})"

    def _command(self, ctx: NodeContext, variables: Mapping[str, Any]) -> tuple[list[str], Path, dict[str, str]]:
        args = [render_text(a, ctx, variables) for a in self.args]
        if self.shell:
            args = ["/bin/sh", "-c", args[0]]
        if self.cwd is None:
            cwd = ctx.node_dir
        else:
            cwd = Path(render_text(str(self.cwd), ctx, variables)).expanduser()
            if not cwd.is_absolute():
                cwd = ctx.project_root / cwd
        if not cwd.is_dir():
            raise NodeExecutionError(f"working directory does not exist: {cwd}")
        env = dict(os.environ) if self.inherit_env else {"PATH": os.environ.get("PATH", os.defpath)}
        env.update({k: render_text(v, ctx, variables) for k, v in self.env.items()})
        return args, cwd, env

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> CommandResult:
        variables = input_variables(input)
        args, cwd, env = self._command(ctx, variables)
        stdin_text = render_text(self.stdin, ctx, variables) if self.stdin is not None else None
        shown = args[2:] if self.shell else args
        out, err = OutputBuffer(self.max_output_bytes), OutputBuffer(self.max_output_bytes)
        started = time.perf_counter()
        try:
            process = await anyio.open_process(
                args,
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise NodeExecutionError(f"cannot start {args[0]!r}: {exc.strerror or exc}") from None
        ctx.logger.info("command started", args=shown, cwd=str(cwd), pid=process.pid)
        timed_out = False
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None and process.stderr is not None
                tg.start_soon(_drain, process.stdout, out)
                tg.start_soon(_drain, process.stderr, err)
                if stdin_text is not None:
                    tg.start_soon(_feed, process, stdin_text.encode())
                with anyio.move_on_after(self.timeout) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    timed_out = True
                    await _terminate(process, self.kill_grace)
                # Background children the command left in its group would hold the pipes open
                # (and outlive the node): they go too. Then the readers get what is left in the
                # pipes, for at most a second.
                _signal_group(process.pid, signal.SIGKILL)
                tg.cancel_scope.deadline = anyio.current_time() + 1.0
        finally:
            # Also on failure and on cancellation of the run: no process of the group survives.
            with anyio.CancelScope(shield=True):
                _signal_group(process.pid, signal.SIGKILL)
                with anyio.move_on_after(5.0):
                    await process.aclose()
        duration = time.perf_counter() - started
        returncode = process.returncode if process.returncode is not None else -signal.SIGKILL
        result = CommandResult(
            args=shown,
            returncode=returncode,
            stdout=out.text(),
            stderr=err.text(),
            stdout_bytes=out.total,
            stderr_bytes=err.total,
            stdout_truncated=out.dropped > 0,
            stderr_truncated=err.dropped > 0,
        )
        ctx.annotate_result(
            returncode=returncode, command=shown[:1], timed_out=timed_out, command_duration_s=round(duration, 6)
        )
        ctx.logger.info("command finished", returncode=returncode, duration_s=round(duration, 3), timed_out=timed_out)
        if timed_out:
            raise NodeExecutionError(
                f"command {shown[0]!r} timed out after {self.timeout}s; its process group was killed"
                + _stderr_tail(result.stderr)
            )
        if self.check and returncode != 0:
            raise NodeExecutionError(f"command {shown[0]!r} exited with {returncode}" + _stderr_tail(result.stderr))
        return result

    def __repr__(self) -> str:
        return self.name


def _stderr_tail(stderr: str) -> str:
    tail = stderr.strip()[-_ERROR_TAIL:]
    return f"; stderr ends with:\n{tail}" if tail else ""


async def _drain(stream: ByteReceiveStream, buffer: OutputBuffer) -> None:
    try:
        async for chunk in stream:
            buffer.write(chunk)
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass


async def _feed(process: Process, data: bytes) -> None:
    assert process.stdin is not None
    try:
        await process.stdin.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError):
        pass  # the command exited without reading all of its input
    finally:
        await process.stdin.aclose()


def _signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid``; False if the group is gone."""
    try:
        os.killpg(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def _terminate(process: Process, grace: float) -> None:
    """``SIGTERM`` to the process group, then ``SIGKILL`` if the command is still there after
    ``grace`` seconds."""
    if _signal_group(process.pid, signal.SIGTERM):
        with anyio.move_on_after(grace):
            await process.wait()
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()
