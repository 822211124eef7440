"""Concurrency, timeouts, retries and cancellation. Overlap is proven with anyio events (a node
waits for one its sibling sets), never with timings: run one after the other, such a flow
would deadlock, and the per-node timeout turns that into a failure."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from reprise import (
    FlowDefinition,
    FlowRunner,
    NodeContext,
    NodeExecutionError,
    RunContext,
    RunFailedError,
    RunResult,
    RunStatus,
    Var,
    node,
)
from reprise.dsl import NodeSettings

pytestmark = pytest.mark.anyio

# Long enough never to fire on a slow machine when things work; reached only on a deadlock.
DEADLOCK = 20


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def _ctx(tmp_path: Path, **kwargs: Any) -> RunContext:
    return RunContext(root_component_id="flow", project_root=tmp_path, **kwargs)


def _meta(run_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = _json(run_dir / ".trace" / "metadata.json")
    return data


# -- parallel ------------------------------------------------------------------------------------


async def test_parallel_branches_overlap(tmp_path: Path) -> None:
    left_in, right_in = anyio.Event(), anyio.Event()

    async def left() -> str:
        left_in.set()
        await right_in.wait()  # only returns if 'right' runs while 'left' is still running
        return "left"

    async def right() -> str:
        right_in.set()
        await left_in.wait()
        return "right"

    flow = FlowDefinition().parallel(
        "par",
        {
            "a": FlowDefinition().node("left", left, timeout=DEADLOCK),
            "b": FlowDefinition().node("right", right, timeout=DEADLOCK),
        },
    )
    result = await FlowRunner(flow, _ctx(tmp_path)).run()
    assert result.outcomes["flow.par"] == {"a": "left", "b": "right"}
    assert _json(result.run_dir / "flow" / "par" / "result.json")["branches"] == {"a": "completed", "b": "completed"}


async def test_failing_branch_cancels_the_others_and_is_recorded(tmp_path: Path) -> None:
    slow_started = anyio.Event()
    done_first = anyio.Event()

    async def slow() -> str:
        slow_started.set()
        await anyio.sleep_forever()
        return "never"

    async def bad() -> str:
        await slow_started.wait()
        raise ValueError("branch broke")

    async def quick() -> str:
        done_first.set()
        return "quick"

    flow = (
        FlowDefinition()
        .node("before", quick)
        .parallel(
            "par",
            {
                "slow": FlowDefinition().node("sleeper", slow).node("after_sleep", quick),
                "bad": FlowDefinition().node("boom", bad),
            },
        )
        .node("after", quick)
    )
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, _ctx(tmp_path)).run()
    assert info.value.path == "flow.par.bad.boom"
    result: RunResult = info.value.result  # type: ignore[attr-defined]
    run = result.run_dir
    assert result.status is RunStatus.FAILED and result.failed_path == "flow.par.bad.boom"
    assert _meta(run)["status"] == "failed"
    par = _json(run / "flow" / "par" / "result.json")
    assert par["status"] == "failed"
    assert par["branches"] == {"slow": "cancelled", "bad": "failed"}
    assert _json(run / "flow" / "par" / "slow" / "sleeper" / "result.json")["status"] == "cancelled"
    assert _json(run / "flow" / "par" / "slow" / "result.json")["status"] == "cancelled"
    assert _json(run / "flow" / "par" / "bad" / "result.json")["status"] == "failed"
    boom = _json(run / "flow" / "par" / "bad" / "boom" / "result.json")
    assert boom["status"] == "failed" and boom["error"]["message"] == "branch broke"
    assert not (run / "flow" / "par" / "slow" / "after_sleep").exists()
    assert not (run / "flow" / "after").exists()
    assert _json(run / "flow" / "before" / "result.json")["status"] == "completed"


# -- for_each ------------------------------------------------------------------------------------


async def test_for_each_iterations_overlap_up_to_max_concurrency(tmp_path: Path) -> None:
    active = 0
    most = 0
    two_in = anyio.Event()

    async def work(item: int) -> int:
        nonlocal active, most
        active += 1
        most = max(most, active)
        if active == 2:
            two_in.set()
        # Iterations 0 and 1 can only get past this point together: proof that they overlap.
        await two_in.wait()
        await anyio.sleep(0)  # let any other iteration that could start, start
        active -= 1
        return item * 10

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")}, timeout=DEADLOCK)
    flow = FlowDefinition().for_each("loop", [1, 2, 3, 4, 5], body, max_concurrency=2)
    result = await FlowRunner(flow, _ctx(tmp_path)).run()
    assert result.outcomes["flow.loop"] == [10, 20, 30, 40, 50]  # in item order, whatever finished first
    assert most == 2  # overlapped, and never more than max_concurrency


async def test_for_each_with_full_concurrency_runs_all_at_once(tmp_path: Path) -> None:
    count = 6
    arrived = 0
    everyone = anyio.Event()

    async def work(item: int) -> int:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()
        await everyone.wait()  # a barrier: nobody leaves before all have arrived
        return item

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")}, timeout=DEADLOCK)
    flow = FlowDefinition().for_each("loop", list(range(count)), body, max_concurrency=count)
    result = await FlowRunner(flow, _ctx(tmp_path)).run()
    assert result.outcomes["flow.loop"] == list(range(count))


async def test_for_each_default_is_one_at_a_time_in_order(tmp_path: Path) -> None:
    order: list[str] = []

    async def work(item: int) -> int:
        order.append(f"start {item}")
        await anyio.sleep(0)
        order.append(f"end {item}")
        return item

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")})
    await FlowRunner(FlowDefinition().for_each("loop", [0, 1, 2], body), _ctx(tmp_path)).run()
    assert order == ["start 0", "end 0", "start 1", "end 1", "start 2", "end 2"]


async def test_failing_iteration_cancels_the_running_ones(tmp_path: Path) -> None:
    waiting = anyio.Event()

    async def work(item: int) -> int:
        if item == 1:
            await waiting.wait()
            raise RuntimeError("item 1 is bad")
        waiting.set()
        await anyio.sleep_forever()
        return item

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")})
    flow = FlowDefinition().for_each("loop", [0, 1], body, max_concurrency=2)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, _ctx(tmp_path)).run()
    assert info.value.path == "flow.loop.1.work"
    run = info.value.result.run_dir  # type: ignore[attr-defined]
    assert _json(run / "flow" / "loop" / "1" / "work" / "result.json")["status"] == "failed"
    assert _json(run / "flow" / "loop" / "0" / "work" / "result.json")["status"] == "cancelled"
    assert _json(run / "flow" / "loop" / "result.json")["status"] == "failed"
    assert _meta(run)["status"] == "failed"


# -- timeouts and retries ------------------------------------------------------------------------


async def test_timeout_fails_the_node(tmp_path: Path) -> None:
    async def hang() -> None:
        await anyio.sleep_forever()

    flow = FlowDefinition().node("hang", hang, timeout=0.05)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, _ctx(tmp_path)).run()
    cause = info.value.__cause__
    assert isinstance(cause, NodeExecutionError) and cause.path == "flow.hang"
    assert "timed out after 0.05s (attempt 1)" in cause.message
    res = _json(info.value.result.run_dir / "flow" / "hang" / "result.json")  # type: ignore[attr-defined]
    assert (res["status"], res["attempts"]) == ("failed", 1)
    assert "timed out" in res["error"]["message"]


async def test_timeout_applies_to_sync_nodes_in_threads(tmp_path: Path) -> None:
    release = threading.Event()

    def blocking() -> str:
        release.wait(60)  # stands for a slow library call that ignores cancellation
        return "late"

    flow = FlowDefinition().node("blocking", blocking, timeout=0.05)
    try:
        with pytest.raises(RunFailedError) as info:
            await FlowRunner(flow, _ctx(tmp_path)).run()
    finally:
        release.set()  # let the abandoned worker thread finish
    cause = info.value.__cause__
    assert isinstance(cause, NodeExecutionError) and "timed out" in cause.message


async def test_retries_until_success_and_records_attempts(tmp_path: Path) -> None:
    calls: list[tuple[int, float]] = []

    async def flaky(ctx: NodeContext) -> str:
        calls.append((ctx.attempt, anyio.current_time()))
        if ctx.attempt < 3:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return "ok"

    flow = FlowDefinition().node("flaky", flaky, retries=3, backoff=0.05)
    result = await FlowRunner(flow, _ctx(tmp_path)).run()
    assert result.outcomes["flow.flaky"] == "ok"
    res = _json(result.run_dir / "flow" / "flaky" / "result.json")
    assert (res["status"], res["attempts"]) == ("completed", 3)
    assert [a for a, _ in calls] == [1, 2, 3]
    # Backoff: the waits grow 0.05 then 0.1 (factor 2). Lower bounds only: sleeping never ends
    # early, but a busy machine may make it end late.
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(calls)]
    assert gaps[0] >= 0.05 * 0.9 and gaps[1] >= 0.1 * 0.9


async def test_retries_exhausted_and_timeouts_are_retried(tmp_path: Path) -> None:
    attempts = 0

    async def always_slow() -> None:
        nonlocal attempts
        attempts += 1
        await anyio.sleep_forever()

    flow = FlowDefinition().node("slow", always_slow, timeout=0.02, retries=2, backoff=0.01)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, _ctx(tmp_path)).run()
    assert attempts == 3
    cause = info.value.__cause__
    assert isinstance(cause, NodeExecutionError) and "(attempt 3)" in cause.message
    res = _json(info.value.result.run_dir / "flow" / "slow" / "result.json")  # type: ignore[attr-defined]
    assert (res["status"], res["attempts"]) == ("failed", 3)


async def test_retry_on_limits_which_errors_are_retried(tmp_path: Path) -> None:
    attempts = 0

    @node(retries=5, backoff=0.01, retry_on=(ConnectionError,))
    async def wrong() -> None:
        nonlocal attempts
        attempts += 1
        raise ValueError("not worth retrying")

    with pytest.raises(RunFailedError):
        await FlowRunner(FlowDefinition().node("wrong", wrong), _ctx(tmp_path)).run()
    assert attempts == 1


def test_backoff_schedule() -> None:
    settings = NodeSettings(retries=5, backoff=0.5, backoff_factor=3, max_backoff=4)
    assert [settings.delay_before(n) for n in range(1, 6)] == [0.0, 0.5, 1.5, 4.0, 4.0]


# -- cancellation --------------------------------------------------------------------------------


async def test_cancel_scope_around_run_records_cancelled_and_keeps_results(tmp_path: Path) -> None:
    started = anyio.Event()

    async def sleeper() -> None:
        started.set()
        await anyio.sleep_forever()

    flow = FlowDefinition().node("first", lambda: "done").node("sleep", sleeper).node("never", lambda: 0)
    ctx = _ctx(tmp_path)
    runner = FlowRunner(flow, ctx)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(runner.run)
            await started.wait()
            scope.cancel()
    assert scope.cancelled_caught
    run = ctx.require_run_dir().path
    assert ctx.status is RunStatus.CANCELLED
    assert _meta(run)["status"] == "cancelled" and _meta(run)["ended_at"]
    assert runner.result is not None and runner.result.status is RunStatus.CANCELLED
    assert runner.result.outcomes == {"flow.first": "done"}
    assert _json(run / "flow" / "first" / "result.json")["status"] == "completed"
    assert _json(run / "flow" / "first" / "outcome.json") == "done"
    assert _json(run / "flow" / "sleep" / "result.json")["status"] == "cancelled"
    assert not (run / "flow" / "sleep" / "outcome.json").exists()
    assert not (run / "flow" / "never").exists()


_INTERRUPTIBLE = """
import sys
import anyio
from reprise import FlowDefinition, FlowRunner, NodeContext, RunContext

async def wait(ctx: NodeContext) -> None:
    print(ctx.run_id, flush=True)
    await anyio.sleep(120)

flow = FlowDefinition().node("first", lambda: "kept").node("wait", wait)
ctx = RunContext(root_component_id="flow", project_root=sys.argv[1])
try:
    FlowRunner(flow, ctx).run_sync(backend=sys.argv[2])
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigint_records_cancelled(tmp_path: Path, backend: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTIBLE, str(tmp_path), backend], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()  # printed by the node: it is sleeping now
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    run = tmp_path / "runs" / run_id
    meta = _meta(run)
    assert meta["status"] == "cancelled"
    assert meta["ended_at"]
    assert _json(run / "flow" / "first" / "outcome.json") == "kept"
    assert _json(run / "flow" / "wait" / "result.json")["status"] == "cancelled"


async def test_failing_iteration_stops_a_sequential_loop(tmp_path: Path) -> None:
    def work(item: int) -> int:
        if item == 1:
            raise ValueError("no ones")
        return item

    body = FlowDefinition().node("work", work, inputs={"item": Var("item")})
    flow = FlowDefinition().for_each("loop", [0, 1, 2], body)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, _ctx(tmp_path)).run()
    assert info.value.path == "flow.loop.1.work"
    run = info.value.result.run_dir  # type: ignore[attr-defined]
    assert _json(run / "flow" / "loop" / "0" / "work" / "outcome.json") == 0
    assert not (run / "flow" / "loop" / "2").exists()
