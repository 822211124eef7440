"""Re-runs from a hierarchy path, resume, lineage and crash safety (issue 4)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from _crash_script import CRASH_SCRIPT
from reprise import (
    AgentDefinition,
    AgentRunner,
    Computed,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeContext,
    Ref,
    RerunError,
    RunContext,
    RunFailedError,
    RunStatus,
    Var,
)
from reprise.dsl._paths import HierarchyPath
from reprise.run._directory import RunDirectory
from reprise.run._previous import PreviousRun, ancestors

pytestmark = pytest.mark.anyio

#: Every re-run test runs with both layouts of reused nodes (docs/reruns.md).
MODES = pytest.mark.parametrize("mode", ["link", "copy"])


def result_of(run_dir: Path, path: str) -> dict[str, Any]:
    """An element's result as readers see it: in a link-mode re-run, a reused node's
    result.json (read through its link) overlaid with this run's reuse fields."""
    result = PreviousRun(RunDirectory(run_dir)).result(HierarchyPath(path))
    assert result is not None, path
    return result


class Calls:
    """Counts node calls by name, so tests can prove which nodes ran."""

    def __init__(self) -> None:
        self.counter: Counter[str] = Counter()
        self.fail: set[str] = set()

    def inc(self, name: str) -> Any:
        def fn(n: int) -> int:
            self.counter[name] += 1
            if name in self.fail:
                raise RuntimeError(f"{name} exploded")
            return n + 1

        fn.__name__ = name
        return fn

    def reset(self) -> None:
        self.counter.clear()


def chain_flow(calls: Calls) -> FlowDefinition:
    body = FlowDefinition().node("double", calls.inc("double"), inputs={"n": Var("item")})
    return (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": Initial("x")})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
        .subflow(
            "sub",
            FlowDefinition()
            .node("s1", calls.inc("s1"), inputs={"n": Ref("b")})
            .node("s2", calls.inc("s2"), inputs={"n": Ref("s1")}),
        )
        .for_each("loop", Computed(lambda v: list(range(v)), Ref("b")), body, max_iterations=20)
        .node("c", calls.inc("c"), inputs={"n": Ref("sub")})
    )


async def first_run(calls: Calls, tmp_path: Path, flow: FlowDefinition, **kw: Any) -> Any:
    ctx = RunContext("root", tmp_path, initial_inputs={"x": 1}, **kw)
    return await FlowRunner(flow, ctx).run()


@MODES
async def test_rerun_from_middle_node_reuses_everything_before(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    r1 = await first_run(calls, tmp_path, flow)
    calls.reset()
    ctx = RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.sub.s2", reused_nodes=mode)
    r2 = await FlowRunner(flow, ctx).run()

    assert r2.status is RunStatus.COMPLETED
    assert r2.run_id.startswith("rerun_")
    # a, b and s1 came from the earlier run; s2 and everything after ran again.
    assert calls.counter == Counter({"s2": 1, "double": 3, "c": 1})
    assert r2.outcomes == r1.outcomes
    assert r2.reused == 3
    reused = result_of(r2.run_dir, "root.sub.s1")
    assert reused["reused"] is True and reused["reused_from"] == reused["origin_run_id"] == r1.run_id
    again = json.loads((r2.run_dir / "root/sub/s2/result.json").read_text())
    assert again["reused"] is False
    # Reused outcomes are the earlier run's files: through a link, or hard links.
    assert os.stat(r2.run_dir / "root/a/outcome.json").st_ino == os.stat(r1.run_dir / "root/a/outcome.json").st_ino
    assert os.path.islink(r2.run_dir / "root/a") is (mode == "link")
    meta = json.loads((r2.run_dir / ".trace/metadata.json").read_text())
    assert meta["previous_run_id"] == r1.run_id and meta["start_hierarchy_path"] == "root.sub.s2"
    assert meta["reused_nodes"] == mode


@MODES
async def test_rerun_inside_loop_iteration(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    r1 = await first_run(calls, tmp_path, flow)
    calls.reset()
    ctx = RunContext(
        "root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.loop.1.double", reused_nodes=mode
    )
    r2 = await FlowRunner(flow, ctx).run()
    # Iteration 0 reused, iterations 1 and 2 executed, then c.
    assert calls.counter == Counter({"double": 2, "c": 1})
    assert result_of(r2.run_dir, "root.loop.0.double")["reused"] is True
    assert json.loads((r2.run_dir / "root/loop/1/double/result.json").read_text())["reused"] is False
    assert r2.outcomes["root.loop"] == r1.outcomes["root.loop"] == [1, 2, 3]


@MODES
async def test_rerun_in_parallel_branch_reuses_sibling_branches(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": 1})
        .parallel(
            "par",
            {
                "left": FlowDefinition()
                .node("l1", calls.inc("l1"), inputs={"n": Ref("a")})
                .node("l2", calls.inc("l2"), inputs={"n": Ref("l1")}),
                "right": FlowDefinition().node("r1", calls.inc("r1"), inputs={"n": Ref("a")}),
            },
        )
        .node("z", calls.inc("z"), inputs={"n": Ref("par", "left")})
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    calls.reset()
    r2 = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.par.left.l2", reused_nodes=mode
        ),
    ).run()
    assert calls.counter == Counter({"l2": 1, "z": 1})
    assert result_of(r2.run_dir, "root.par.right.r1")["reused"] is True
    assert r2.outcomes == r1.outcomes


@MODES
async def test_conditional_is_evaluated_again_against_reused_outcomes(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": Initial("x")})
        .conditional(
            "check",
            Computed(lambda v: v > 1, Ref("a")),
            FlowDefinition().node("big", calls.inc("big"), inputs={"n": Ref("a")}),
            FlowDefinition().node("small", calls.inc("small"), inputs={"n": Ref("a")}),
        )
        .node("z", calls.inc("z"), inputs={"n": Ref("check")})
    )
    r1 = await first_run(calls, tmp_path, flow)
    assert calls.counter["big"] == 1
    calls.reset()
    r2 = await FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.z", reused_nodes=mode)
    ).run()
    # The condition saw the reused outcome of a (2 > 1) and took the same branch, reusing 'big'.
    assert calls.counter == Counter({"z": 1})
    assert json.loads((r2.run_dir / "root/check/result.json").read_text())["branch"] == "then"
    assert result_of(r2.run_dir, "root.check.then.big")["reused"] is True
    # A start path in the branch that was not taken is an error, raised before anything runs.
    with pytest.raises(RerunError, match="did not execute"):
        await FlowRunner(
            flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.check.else.small")
        ).run()


@MODES
async def test_rerun_inside_subagent(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    inner = AgentDefinition().flow(
        "f",
        FlowDefinition()
        .node("n1", calls.inc("n1"), inputs={"n": 1})
        .node("n2", calls.inc("n2"), inputs={"n": Ref("n1")}),
    )
    agent = (
        AgentDefinition()
        .flow("prep", FlowDefinition().node("p", calls.inc("p"), inputs={"n": 0}))
        .subagent("helper", inner)
    )
    r1 = await AgentRunner(agent, RunContext("agent", tmp_path)).run()
    calls.reset()
    r2 = await AgentRunner(
        agent,
        RunContext(
            "agent", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="agent.helper.f.n2", reused_nodes=mode
        ),
    ).run()
    assert calls.counter == Counter({"n2": 1})
    assert r2.outcomes["agent.helper.f.n2"] == 3


@MODES
async def test_static_inputs_and_node_files_carry_over(tmp_path: Path, mode: str) -> None:
    class Greeting(BaseModel):
        name: str

    seen: list[str] = []

    def greet(inp: Greeting, ctx: NodeContext) -> str:
        (ctx.node_dir / "note.txt").write_text(f"hello {inp.name}")
        return f"hello {inp.name}"

    def shout(text: str) -> str:
        seen.append(text)
        return text.upper()

    flow = (
        FlowDefinition().node("greet", greet).node("shout", shout, inputs={"text": Ref("greet")}).node("again", greet)
    )
    ctx = RunContext("root", tmp_path)
    ctx.register_node_static_input("greet", Greeting(name="ada"))
    ctx.register_node_static_input("again", Greeting(name="bob"))
    r1 = await FlowRunner(flow, ctx).run()
    ctx2 = RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.shout", reused_nodes=mode)
    ctx2.register_node_static_input("again", Greeting(name="cy"))  # overrides the earlier one
    r2 = await FlowRunner(flow, ctx2).run()
    assert (r2.run_dir / "root/greet/note.txt").read_text() == "hello ada"
    assert r2.outcomes["root.again"] == "hello cy"
    static = json.loads((r2.run_dir / "static_inputs/static_inputs.json").read_text())
    assert static == {"root.greet": {"name": "ada"}, "root.again": {"name": "cy"}}


async def test_rerun_errors_are_raised_before_anything_runs(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    r1 = await first_run(calls, tmp_path, flow)
    before = sorted(p.name for p in (tmp_path / "runs").iterdir())
    calls.reset()

    with pytest.raises(RerunError, match="no run 'run_20200101_000000_abcdef'"):
        await FlowRunner(
            flow,
            RunContext("root", tmp_path, previous_run_id="run_20200101_000000_abcdef", start_hierarchy_path="root.b"),
        ).run()
    with pytest.raises(RerunError, match=r"root\.sub\.s3 does not exist.*nearest valid paths: root\.sub\.s[12]"):
        await FlowRunner(
            flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.sub.s3")
        ).run()
    with pytest.raises(RerunError, match="did not execute"):
        await FlowRunner(
            flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.loop.9.double")
        ).run()
    with pytest.raises(RerunError, match="does not exist"):
        await FlowRunner(
            flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.a.3")
        ).run()
    changed = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": Initial("x")})
        .node("extra", calls.inc("extra"), inputs={"n": 1})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
    )
    with pytest.raises(RerunError, match=r"no longer matches.*root\.extra is new"):
        await FlowRunner(
            changed, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.b")
        ).run()
    assert sum(calls.counter.values()) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == before


@MODES
async def test_resume_after_failure_starts_at_first_incomplete_node(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    calls.fail = {"s2"}
    with pytest.raises(RunFailedError) as info:
        await first_run(calls, tmp_path, flow)
    failed_id = info.value.run_id
    assert info.value.path == "root.sub.s2"
    calls.fail = set()
    calls.reset()
    resumed = await FlowRunner(flow, RunContext("root", tmp_path, previous_run_id=failed_id, reused_nodes=mode)).run()
    assert resumed.status is RunStatus.COMPLETED
    assert calls.counter == Counter({"s2": 1, "double": 3, "c": 1})
    meta = json.loads((resumed.run_dir / ".trace/metadata.json").read_text())
    assert meta["start_hierarchy_path"] == "root.sub.s2" and meta["resumed"] is True
    # Resuming a run that completed is an error, not a silent no-op.
    with pytest.raises(RerunError, match="nothing to resume"):
        await FlowRunner(flow, RunContext("root", tmp_path, previous_run_id=resumed.run_id)).run()
    lineage = ancestors(tmp_path / "runs", resumed.run_id)
    assert [m.run_id for m in lineage] == [failed_id]


@MODES
async def test_reused_nodes_are_marked_in_the_trace(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    r1 = await first_run(calls, tmp_path, flow)
    r2 = await FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.c", reused_nodes=mode)
    ).run()
    reused: dict[str, bool] = {}
    for line in (r2.run_dir / ".trace/trace.jsonl").read_text().splitlines():
        for rs in json.loads(line)["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    attrs = {a["key"]: a["value"] for a in span.get("attributes", [])}
                    if attrs.get("reprise.element_type", {}).get("stringValue") == "node":
                        path = attrs["reprise.hierarchy_path"]["stringValue"]
                        reused[path] = attrs.get("reprise.reused", {}).get("boolValue", False)
    assert reused["root.a"] is True and reused["root.loop.2.double"] is True
    assert reused["root.c"] is False




@MODES
def test_sigkill_midway_then_resume_reexecutes_no_completed_node(tmp_path: Path, mode: str) -> None:
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    log = tmp_path / "calls.log"
    env = {**os.environ, "KILL_AT": "n3"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(log)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL
    (crashed,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("run_")]
    from reprise import RunDirectory

    assert RunDirectory(crashed).status() is RunStatus.CRASHED
    assert log.read_text().split() == ["n0", "n1", "n2", "n3"]
    # The outcome commit is made when a run completes: nothing of this one exists.
    assert not (tmp_path / "runs" / "outcome").exists()
    log.unlink()

    env = {**os.environ, "PREVIOUS": crashed.name, "REUSED_NODES": mode}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(log)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    _run_id, status, final = proc.stdout.split()
    assert status == "completed"
    # n0..n2 completed before the kill: reused, not called. n3 was cut off: executed again.
    assert log.read_text().split() == ["n3", "n4", "n5"]

    log.unlink()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "clean"), str(log)],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split()[2] == final  # same outcome as an uninterrupted run


@MODES
async def test_resume_after_a_crash_between_two_elements(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": 1})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
        .node("c", calls.inc("c"), inputs={"n": Ref("b")})
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    # What a SIGKILL after b finished and before c started leaves behind: no c, no root result.
    shutil.rmtree(r1.run_dir / "root" / "c")
    (r1.run_dir / "root" / "result.json").unlink()
    (r1.run_dir / ".trace" / "outcomes.json").unlink()  # written when a run ends, never by a crash
    calls.reset()
    resumed = await FlowRunner(flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, reused_nodes=mode)).run()
    assert calls.counter == Counter({"c": 1})
    assert resumed.outcomes == r1.outcomes


@MODES
async def test_resume_after_a_crash_inside_a_loop_runs_the_iterations_that_never_started(
    tmp_path: Path, mode: str
) -> None:
    calls = Calls()
    body = FlowDefinition().node("double", calls.inc("double"), inputs={"n": Var("item")})
    flow = FlowDefinition().for_each("loop", [1, 2, 3, 4], body).node("z", calls.inc("z"), inputs={"n": 0})
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    # Cut off during iteration 1: iterations 1..3 and everything after never happened; the loop
    # had only written its "running" result with the iteration count.
    for i in (1, 2, 3):
        shutil.rmtree(r1.run_dir / "root" / "loop" / str(i))
    shutil.rmtree(r1.run_dir / "root" / "z")
    (r1.run_dir / "root" / "result.json").unlink()
    (r1.run_dir / ".trace" / "outcomes.json").unlink()
    loop_result = json.loads((r1.run_dir / "root/loop/result.json").read_text())
    (r1.run_dir / "root/loop/result.json").write_text(json.dumps({**loop_result, "status": "running"}))
    calls.reset()
    resumed = await FlowRunner(flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, reused_nodes=mode)).run()
    assert calls.counter == Counter({"double": 3, "z": 1})
    assert resumed.outcomes["root.loop"] == [2, 3, 4, 5]


@MODES
async def test_branch_named_like_its_parallel_block(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    branch = (
        FlowDefinition()
        .node("x", calls.inc("x"), inputs={"n": 1})
        .node("y", calls.inc("y"), inputs={"n": Ref("x")})
        .node("w", calls.inc("w"), inputs={"n": Ref("y")})
    )
    flow = FlowDefinition().parallel(
        "p", {"p": branch, "q": FlowDefinition().node("v", calls.inc("v"), inputs={"n": 0})}
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    calls.reset()
    ctx = RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.p.p.y", reused_nodes=mode)
    await FlowRunner(flow, ctx).run()
    assert calls.counter == Counter({"y": 1, "w": 1})  # x and the sibling branch reused, w after y ran


@MODES
async def test_rerun_on_a_context_the_caller_set_up_records_what_it_carried_over(tmp_path: Path, mode: str) -> None:
    calls = Calls()
    flow = chain_flow(calls)
    r1 = await first_run(calls, tmp_path, flow)
    ctx = RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.c", reused_nodes=mode)
    ctx.setup_run()  # set up before the runner carried the earlier run's inputs over
    r2 = await FlowRunner(flow, ctx).run()
    assert json.loads((r2.run_dir / "static_inputs/initial_inputs.json").read_text()) == {"x": 1}
    # ... so a re-run of the re-run still has its inputs.
    r3 = await FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=r2.run_id, start_hierarchy_path="root.a", reused_nodes=mode)
    ).run()
    assert r3.outcomes == r1.outcomes
