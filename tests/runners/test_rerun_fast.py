"""The fast path of re-runs (issue 7): in copy mode, reused nodes' result.json edited as bytes and
node directories made in one go; in both modes, the outcomes a re-run hands on exactly those of
the earlier run. Link-mode specifics are in test_rerun_links.py.

Every test counts node calls, so a reused node that was called instead would fail it."""

from __future__ import annotations

import json
import os
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
    Computed,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeContext,
    Ref,
    RunContext,
    RunStatus,
    Var,
)
from reprise.dsl._definition import validate_definition
from reprise.dsl._paths import HierarchyPath
from reprise.run._directory import RunDirectory
from reprise.run._previous import PreviousRun
from reprise.runners._reuse import ReusePlan

pytestmark = pytest.mark.anyio

MODES = pytest.mark.parametrize("mode", ["link", "copy"])


def read_result(run_dir: Path, path: str) -> dict[str, Any]:
    """An element's result as readers see it (a linked node's overlaid with the reuse)."""
    result = PreviousRun(RunDirectory(run_dir)).result(HierarchyPath(path))
    assert result is not None, path
    return result


class Calls:
    """Counts node calls by name."""

    def __init__(self) -> None:
        self.counter: Counter[str] = Counter()

    def inc(self, name: str) -> Any:
        def fn(n: int) -> int:
            self.counter[name] += 1
            return n + 1

        fn.__name__ = name
        return fn


def result_of(run_dir: Path, rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run_dir / rel / "result.json").read_text())
    return data


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files or directories anywhere in a run directory."""
    return [str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


async def test_reused_result_is_the_earlier_one_plus_the_reuse_fields_in_order(tmp_path: Path) -> None:
    calls = Calls()

    def annotated(n: int, ctx: NodeContext) -> int:
        calls.counter["annotated"] += 1
        # Values that look like the members the re-run edits, nested and inside strings.
        ctx.annotate_result(
            note='\n  "reused": false,\n  "status": "failed"',
            nested={"status": "completed", "reused": False, "reused_from": "x"},
            tokens=12,
        )
        return n + 1

    flow = (
        FlowDefinition()
        .node("a", annotated, inputs={"n": Initial("x")})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    old = result_of(r1.run_dir, "root/a")
    calls.counter.clear()

    r2 = await FlowRunner(
        flow,
        RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.b", reused_nodes="copy"),
    ).run()
    assert calls.counter == Counter({"b": 1})
    new = result_of(r2.run_dir, "root/a")
    assert new == {**old, "reused": True, "reused_from": r1.run_id, "origin_run_id": r1.run_id}
    assert list(new) == [*old, "reused_from", "origin_run_id"]  # members kept in place, new ones last
    assert (r2.run_dir / "root/a/result.json").read_bytes().endswith(b"\n}\n")

    # A re-run of the re-run: reused from r2, but executed in r1.
    r3 = await FlowRunner(
        flow,
        RunContext("root", tmp_path, previous_run_id=r2.run_id, start_hierarchy_path="root.b", reused_nodes="copy"),
    ).run()
    assert calls.counter == Counter({"b": 2})
    again = result_of(r3.run_dir, "root/a")
    assert again == {**new, "reused_from": r2.run_id, "origin_run_id": r1.run_id}
    assert list(again) == list(new)
    assert r3.outcomes == r2.outcomes == r1.outcomes
    for run in (r2, r3):
        assert leftovers(run.run_dir) == []


async def test_earlier_results_that_did_not_complete_or_are_written_differently(tmp_path: Path) -> None:
    calls = Calls()
    flow = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": 1})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
        .node("c", calls.inc("c"), inputs={"n": Ref("b")})
        .node("d", calls.inc("d"), inputs={"n": Ref("c")})
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    # a: written by something else than reprise (compact JSON): still reused.
    a = result_of(r1.run_dir, "root/a")
    (r1.run_dir / "root/a/result.json").write_text(json.dumps(a))
    # b: the earlier run says it failed (with an outcome.json beside it): executed again.
    b = result_of(r1.run_dir, "root/b")
    (r1.run_dir / "root/b/result.json").write_text(json.dumps({**b, "status": "failed"}, indent=2) + "\n")
    # c: a result.json without a status at all: not completed, executed again.
    c = result_of(r1.run_dir, "root/c")
    del c["status"]
    (r1.run_dir / "root/c/result.json").write_text(json.dumps(c, indent=2) + "\n")
    calls.counter.clear()

    r2 = await FlowRunner(
        flow,
        RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.d", reused_nodes="copy"),
    ).run()
    assert calls.counter == Counter({"b": 1, "c": 1, "d": 1})
    assert r2.reused == 1 and r2.executed == 3
    assert result_of(r2.run_dir, "root/a") == {
        **a,
        "reused": True,
        "reused_from": r1.run_id,
        "origin_run_id": r1.run_id,
    }
    assert result_of(r2.run_dir, "root/b")["reused"] is False
    assert r2.outcomes == r1.outcomes


async def test_node_files_subdirectories_and_symlinks_are_carried_over(tmp_path: Path) -> None:
    calls = Calls()

    def writer(n: int, ctx: NodeContext) -> int:
        calls.counter["writer"] += 1
        (ctx.node_dir / "note.txt").write_text("hello")
        (ctx.node_dir / "sub" / "deeper").mkdir(parents=True)
        (ctx.node_dir / "sub" / "deeper" / "data.bin").write_bytes(b"\x00\x01")
        (ctx.node_dir / "link").symlink_to("note.txt")
        return n + 1

    flow = FlowDefinition().node("w", writer, inputs={"n": 1}).node("z", calls.inc("z"), inputs={"n": Ref("w")})
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    calls.counter.clear()
    r2 = await FlowRunner(
        flow,
        RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.z", reused_nodes="copy"),
    ).run()
    assert calls.counter == Counter({"z": 1})
    old, new = r1.run_dir / "root/w", r2.run_dir / "root/w"
    for rel in ("note.txt", "sub/deeper/data.bin", "input.json", "outcome.json"):
        assert os.stat(new / rel).st_ino == os.stat(old / rel).st_ino, rel
    assert os.path.islink(new / "link") and os.readlink(new / "link") == "note.txt"
    assert (new / "link").read_text() == "hello"
    assert sorted(p.name for p in new.iterdir()) == sorted(p.name for p in old.iterdir())
    assert leftovers(r2.run_dir) == []


@MODES
async def test_outcomes_handed_on_by_reused_nodes_are_the_real_ones(tmp_path: Path, mode: str) -> None:
    """References two levels back, a condition, loop items and the root's own outcome, all fed
    by reused nodes: each sees the earlier run's value (a model as its model)."""

    class Box(BaseModel):
        values: list[int]

    calls = Calls()
    seen: list[Any] = []

    def box(n: int) -> Box:
        calls.counter["box"] += 1
        return Box(values=[n, n + 1, n + 2])

    def use_box(b: Box, n: int) -> int:
        calls.counter["use_box"] += 1
        seen.append(b)
        return sum(b.values) + n

    body = FlowDefinition().node("sq", calls.inc("sq"), inputs={"n": Var("item")})
    flow = (
        FlowDefinition()
        .node("a", box, inputs={"n": Initial("x")})
        .node("b", calls.inc("b"), inputs={"n": 10})
        .node("c", use_box, inputs={"b": Ref("a"), "n": Ref("b")})  # a is two elements back
        .conditional(
            "check",
            Computed(lambda v: len(v.values) == 3, Ref("a")),
            FlowDefinition().node("yes", calls.inc("yes"), inputs={"n": Ref("b")}),
            FlowDefinition().node("no", calls.inc("no"), inputs={"n": 0}),
        )
        .for_each("loop", Computed(lambda v: v.values, Ref("a")), body, max_iterations=5)
        .parallel(
            "par",
            {
                "left": FlowDefinition().node("l", calls.inc("l"), inputs={"n": Ref("c")}),
                "right": FlowDefinition().node("r", calls.inc("r"), inputs={"n": Ref("b")}),
            },
        )
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    calls.counter.clear()
    seen.clear()

    # From c: a and b reused, c gets them as inputs; the condition and the loop items read a.
    r2 = await FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.c", reused_nodes=mode)
    ).run()
    assert calls.counter == Counter({"use_box": 1, "yes": 1, "sq": 3, "l": 1, "r": 1})
    assert seen == [Box(values=[1, 2, 3])] and type(seen[0]) is Box
    assert type(r2.outcomes["root.a"]) is Box
    assert result_of(r2.run_dir, "root/check")["branch"] == "then"
    assert r2.outcomes["root.loop"] == [2, 3, 4]
    assert r2.outcomes == r1.outcomes

    # From the left branch of the last element: the right branch - the last node of the run,
    # and part of the root's own outcome - is reused.
    calls.counter.clear()
    r3 = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.par.left.l", reused_nodes=mode
        ),
    ).run()
    assert calls.counter == Counter({"l": 1})
    assert read_result(r3.run_dir, "root.par.right.r")["reused"] is True
    assert r3.outcome == r1.outcome == {"left": 18, "right": 12}
    assert r3.outcomes == r1.outcomes
    # Iterations before the start inside a loop are reused, and their outcomes make the list.
    calls.counter.clear()
    r4 = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.loop.2.sq", reused_nodes=mode
        ),
    ).run()
    assert calls.counter == Counter({"sq": 1, "l": 1, "r": 1})
    assert r4.outcomes["root.loop"] == [2, 3, 4]
    assert r4.outcome == r1.outcome


async def test_reuse_node_makes_the_directory_whether_or_not_it_exists(tmp_path: Path) -> None:
    calls = Calls()
    flow = (
        FlowDefinition()
        .node("a", calls.inc("a"), inputs={"n": 1})
        .node("b", calls.inc("b"), inputs={"n": Ref("a")})
        .node("c", calls.inc("c"), inputs={"n": Ref("b")})
        .node("d", calls.inc("d"), inputs={"n": Ref("c")})
    )
    r1 = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    index = validate_definition(flow, "root")
    ctx = RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.d", reused_nodes="copy")
    ctx.bind(index)
    plan = ReusePlan.prepare(ctx, index)
    target = tmp_path / "elsewhere"
    node = index.nodes["root.a"].node

    # Neither the directory nor its parents exist (an executor that makes directories lazily).
    got = plan.reuse_node(HierarchyPath("root.a"), node, f"{target}/one/root/a")
    assert got is not None and got[0] == 2
    assert got[1]["reused_from"] == got[1]["origin_run_id"] == r1.run_id
    assert sorted(os.listdir(target / "one/root/a")) == ["input.json", "outcome.json", "result.json"]
    # An empty directory made beforehand.
    (target / "two/root/b").mkdir(parents=True)
    assert plan.reuse_node(HierarchyPath("root.b"), index.nodes["root.b"].node, f"{target}/two/root/b") is not None
    assert result_of(target / "two", "root/b")["reused"] is True
    # A directory with something in it already: kept, the node's files added beside it.
    (target / "three/root/c").mkdir(parents=True)
    (target / "three/root/c/stray.txt").write_text("x")
    assert plan.reuse_node(HierarchyPath("root.c"), index.nodes["root.c"].node, f"{target}/three/root/c") is not None
    assert sorted(os.listdir(target / "three/root/c")) == ["input.json", "outcome.json", "result.json", "stray.txt"]
    # The start itself is not reused, and nothing is made for it.
    assert plan.reuse_node(HierarchyPath("root.d"), index.nodes["root.d"].node, f"{target}/four/root/d") is None
    assert not (target / "four").exists()
    assert leftovers(target) == []
    assert sum(calls.counter.values()) == 4  # the first run only




@MODES
def test_resume_of_a_resume_that_was_killed_reexecutes_no_completed_node(tmp_path: Path, mode: str) -> None:
    """Killed at n3; resumed and killed again at n4 (n0..n2 reused); resumed again: n0..n2 are
    reused from a run that had reused them itself, n3 from the run that executed it."""
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    log = tmp_path / "calls.log"

    def run(previous: str | None, kill_at: str | None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PREVIOUS": previous or "", "KILL_AT": kill_at or "", "REUSED_NODES": mode}
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path), str(log)], env=env, capture_output=True, text=True, timeout=60
        )

    def runs() -> set[Path]:
        return {p for p in (tmp_path / "runs").iterdir() if p.name.startswith(("run_", "rerun_"))}

    assert run(None, "n3").returncode == -signal.SIGKILL
    (first,) = runs()
    assert run(first.name, "n4").returncode == -signal.SIGKILL
    (second,) = runs() - {first}
    assert log.read_text().split() == ["n0", "n1", "n2", "n3", "n3", "n4"]
    from reprise import RunDirectory

    assert RunDirectory(second).status() is RunStatus.CRASHED
    # The crashed re-run recorded nothing at its end: readers find its reused nodes all the same.
    assert not (second / ".trace/reused.json").exists()
    assert read_result(second, "crash.n1")["reused"] is True
    assert read_result(second, "crash.n1")["origin_run_id"] == first.name
    log.unlink()

    done = run(second.name, None)
    assert done.returncode == 0, done.stderr
    run_id, status, final = done.stdout.split()
    assert status == "completed"
    assert log.read_text().split() == ["n4", "n5"]
    third = tmp_path / "runs" / run_id
    n1 = read_result(third, "crash.n1")
    assert n1["reused_from"] == second.name and n1["origin_run_id"] == first.name
    n3 = read_result(third, "crash.n3")
    assert n3["reused_from"] == n3["origin_run_id"] == second.name
    assert final == "127"  # n5 of an uninterrupted run: six times n -> 2n + 1 from 1
    assert leftovers(third) == []
    if mode == "link":
        # Links point at the run holding the directory, never at another link.
        assert os.readlink(third / "crash/n1") == f"../../{first.name}/crash/n1"
        assert os.readlink(third / "crash/n3") == f"../../{second.name}/crash/n3"
