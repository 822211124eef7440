"""How a node's files reach the run directory: one directory written in one go when the node
finishes, the journal of node starts, and the outcome commit built from what the executor wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import git
import pytest

from reprise import Api, FlowDefinition, FlowRunner, Initial, NodeContext, Ref, RunContext, RunFailedError, Var
from reprise.run._files import write_new_dir
from reprise.run._journal import read_journal


def _dot_entries(run_dir: Path) -> list[Path]:
    """Temporary directories or files left under the run's element tree."""
    return [p for p in run_dir.rglob(".*") if ".trace" not in p.parts]


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def add(x: int) -> int:
    return x + 1


def boom(x: int) -> int:
    raise ValueError(f"no {x}")


@pytest.mark.anyio
async def test_node_directories_are_complete_and_leave_no_temporaries(
    make_context: Callable[..., RunContext],
) -> None:
    body = FlowDefinition().node("inc", add, inputs={"x": Var("item")})
    flow = (
        FlowDefinition()
        .node("a", add, inputs={"x": Initial("x")})
        .for_each("loop", [1, 2, 3], body)
        .node("b", add, inputs={"x": Ref("a")})
    )
    result = await FlowRunner(flow, make_context(initial_inputs={"x": 1})).run()
    run = result.run_dir
    for rel in ("root/a", "root/loop/0/inc", "root/loop/2/inc", "root/b"):
        assert sorted(os.listdir(run / rel)) == ["input.json", "outcome.json", "result.json"], rel
    assert _json(run / "root/b/input.json") == {"x": 2}
    assert _json(run / "root/b/outcome.json") == 3
    assert _json(run / "root/loop/1/inc/result.json")["status"] == "completed"
    assert _dot_entries(run) == []


@pytest.mark.anyio
async def test_a_failed_node_keeps_its_input_and_error_but_no_outcome(make_context: Callable[..., RunContext]) -> None:
    flow = FlowDefinition().node("a", add, inputs={"x": Initial("x")}).node("bad", boom, inputs={"x": Ref("a")})
    ctx = make_context(initial_inputs={"x": 1})
    with pytest.raises(RunFailedError):
        await FlowRunner(flow, ctx).run()
    bad = ctx.require_run_dir().path / "root" / "bad"
    assert sorted(os.listdir(bad)) == ["input.json", "result.json"]
    assert _json(bad / "input.json") == {"x": 2}
    assert _json(bad / "result.json")["error"]["message"] == "no 2"
    assert _dot_entries(ctx.require_run_dir().path) == []


@pytest.mark.anyio
async def test_a_node_that_uses_its_directory_has_it_with_its_input_while_it_runs(
    make_context: Callable[..., RunContext],
) -> None:
    seen: dict[str, Any] = {}

    async def writer(x: int, ctx: NodeContext) -> int:
        seen["input"] = _json(ctx.node_dir / "input.json")
        (ctx.node_dir / "notes.txt").write_text("mine")
        seen["listing"] = sorted(os.listdir(ctx.node_dir))
        return x * 10

    flow = FlowDefinition().node("w", writer, inputs={"x": Initial("x")})
    result = await FlowRunner(flow, make_context(initial_inputs={"x": 4})).run()
    node_dir = result.run_dir / "root" / "w"
    assert seen == {"input": {"x": 4}, "listing": ["input.json", "notes.txt"]}
    assert sorted(os.listdir(node_dir)) == ["input.json", "notes.txt", "outcome.json", "result.json"]
    assert _json(node_dir / "outcome.json") == 40


@pytest.mark.anyio
async def test_a_running_node_is_in_the_journal_and_reads_as_running(make_context: Callable[..., RunContext]) -> None:
    started = anyio.Event()
    release = anyio.Event()
    observed: dict[str, Any] = {}

    async def waits(x: int) -> int:
        started.set()
        await release.wait()
        return x

    body = FlowDefinition().node("wait", waits, inputs={"x": Var("item")})
    flow = FlowDefinition().node("a", add, inputs={"x": Initial("x")}).for_each("loop", [7], body)
    ctx = make_context(initial_inputs={"x": 1})

    async def watch() -> None:
        await started.wait()
        run = ctx.require_run_dir().path
        observed["dir_exists"] = (run / "root" / "loop" / "0" / "wait").exists()
        observed["journal"] = read_journal(run)
        tree = Api(ctx.run_root).elements(ctx.run_id)
        loop = next(c for c in tree.children if c.name == "loop")
        observed["iteration"] = loop.children[0].name, loop.children[0].status
        observed["node"] = loop.children[0].children[0].path, loop.children[0].children[0].status
        release.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await FlowRunner(flow, ctx).run()
    assert observed["dir_exists"] is False
    assert observed["journal"]["root.loop.0.wait"]["input"] == {"x": 7}
    assert set(observed["journal"]) == {"root.a", "root.loop.0.wait"}
    assert observed["iteration"] == ("0", "running")
    assert observed["node"] == ("root.loop.0.wait", "running")
    # Finished: the directory exists and the tree reads it from there.
    tree = Api(ctx.run_root).elements(ctx.run_id)
    assert tree.children[1].children[0].children[0].status == "completed"


def test_write_new_dir_into_an_existing_directory_keeps_what_is_there(tmp_path: Path) -> None:
    target = tmp_path / "node"
    write_new_dir(str(target), [("a.json", b"1"), ("b.json", b"2")])
    assert sorted(os.listdir(target)) == ["a.json", "b.json"]
    (target / "mine.txt").write_text("kept")
    write_new_dir(str(target), [("a.json", b"10")])
    assert (target / "a.json").read_bytes() == b"10" and (target / "mine.txt").read_text() == "kept"
    empty = tmp_path / "deep" / "er" / "empty"
    empty.mkdir(parents=True)
    write_new_dir(str(empty), [("x", b"x")])  # an empty directory is replaced whole
    write_new_dir(str(tmp_path / "new" / "parents" / "made"), [("y", b"y")])
    assert (tmp_path / "new/parents/made/y").read_bytes() == b"y"
    assert [p.name for p in tmp_path.rglob(".*")] == []


COMMITTING = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from reprise import FlowDefinition, FlowRunner, RunContext, Initial, Ref, NodeContext

    def deep(x: int, ctx: NodeContext) -> int:
        # A file of the node's own that happens to be named like a node's outcome.
        (ctx.node_dir / "sub").mkdir()
        (ctx.node_dir / "sub" / "outcome.json").write_text("{}")
        return x

    flow = (FlowDefinition().node("a", lambda x: x + 1, inputs={"x": Initial("x")})
            .node("b", deep, inputs={"x": Ref("a")}))
    r = FlowRunner(flow, RunContext("root", Path(sys.argv[1]), initial_inputs={"x": 1})).run_sync()
    print(r.run_id)
    """
)


def test_the_commit_holds_the_nodes_outcomes_not_a_nodes_own_file_named_alike(tmp_path: Path) -> None:
    script = tmp_path / "committing.py"
    script.write_text(COMMITTING)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True)
    (run_id,) = done.stdout.split()
    repo = git.Repo(tmp_path / "runs" / "outcome" / tmp_path.name)
    tree = repo.commit(f"run/{run_id}").tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == ["root/a/outcome.json", "root/b/outcome.json"]
    assert json.loads((tree / "root/b/outcome.json").data_stream.read()) == 2
    metadata = _json(tmp_path / "runs" / run_id / ".trace" / "metadata.json")
    assert metadata["outcome_commit"] == repo.commit(f"run/{run_id}").hexsha


def test_element_timestamps_are_iso_utc_with_microseconds() -> None:
    import random
    from datetime import UTC, datetime

    from reprise.runners._executor import _iso

    stamps = [0.0, 1.5, 1_795_000_000.999_999, 1_795_000_000.000_001] + [random.uniform(0, 2e9) for _ in range(500)]
    for ts in stamps:
        text = _iso(ts)
        assert text.endswith("Z") and len(text) == len("2026-11-21T21:49:20.979502Z"), text
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert abs(parsed.timestamp() - ts) < 2e-6, (ts, text)
        second = "%Y-%m-%dT%H:%M:%S"
        assert parsed.strftime(second) == datetime.fromtimestamp(int(ts), UTC).strftime(second)


def test_journal_lines_that_are_not_hierarchy_paths_name_no_directory(tmp_path: Path) -> None:
    from reprise.run._journal import in_flight

    run = tmp_path / "run"
    (run / ".trace").mkdir(parents=True)
    lines = [
        {"path": "root.a", "started_at": "2026-11-22T00:00:00.000000Z", "input": None},
        {"path": "root....etc", "started_at": "x", "input": None},
        {"path": "root./tmp", "started_at": "x", "input": None},
        {"path": "root.loop.3.b", "started_at": "x", "input": {"x": 1}},
    ]
    torn = '{"path": "root.c"'  # a last line cut by a crash
    (run / ".trace" / "journal.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + torn)
    found = in_flight(run)
    assert sorted(found.records) == sorted([str(run / "root" / "a"), str(run / "root" / "loop" / "3" / "b")])
    assert found.children(run / "root") == {"a", "loop"}
    assert found.children(run / "root" / "loop") == {"3"}


def test_usage_of_a_run_ignores_a_node_directory_left_before_its_rename(tmp_path: Path) -> None:
    from reprise.experiments._item import run_usage

    node = tmp_path / "root" / "a"
    node.mkdir(parents=True)
    (node / "result.json").write_text(json.dumps({"element_type": "node", "usage": {"input_tokens": 5}}))
    left = tmp_path / "root" / ".b.123.0.tmp"
    left.mkdir()
    (left / "result.json").write_text(json.dumps({"element_type": "node", "usage": {"input_tokens": 1000}}))
    assert run_usage(tmp_path)[0] == 5


@pytest.mark.anyio
async def test_small_and_large_outcomes_are_committed_as_written(make_context: Callable[..., RunContext]) -> None:
    # Small outcomes reach the commit from memory, large ones from their file: both as on disk.
    flow = (
        FlowDefinition()
        .node("small", lambda: {"n": 1})
        .node("large", lambda: "x" * 10_000)
    )
    result = await FlowRunner(flow, make_context()).run()
    repo = git.Repo(result.run_dir.parent / "outcome" / result.run_dir.parent.parent.name)
    tree = repo.commit(f"run/{result.run_id}").tree
    for name in ("small", "large"):
        on_disk = (result.run_dir / "root" / name / "outcome.json").read_bytes()
        assert (tree / f"root/{name}/outcome.json").data_stream.read() == on_disk
