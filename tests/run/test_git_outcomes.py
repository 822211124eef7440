"""Outcomes committed to git: one branch per run, re-run parents, names git refuses, SHA-256
repositories, concurrency, no git process left behind, ``reprise gc``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import git
import pytest

from reprise import Computed, FlowDefinition, FlowRunner, Initial, NodeContext, Ref, RunContext, RunFailedError
from reprise.run._outcome_repo import OutcomeFile, OutcomeRepository, OutcomeSettings, collect_outcome_files

pytestmark = pytest.mark.anyio


def repo_of(tmp_path: Path) -> git.Repo:
    return git.Repo(tmp_path / "runs" / "outcome" / tmp_path.name)


def make_flow(factor: int = 2) -> FlowDefinition:
    def load(x: int) -> int:
        return x

    def scale(n: int) -> int:
        return n * factor

    return (
        FlowDefinition()
        .node("load", load, inputs={"x": Initial("x")})
        .subflow("work", FlowDefinition().node("scale", scale, inputs={"n": Ref("load")}))
    )


async def test_each_run_gets_a_branch_with_its_outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine's identity must never leak into commits.
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Somebody Else")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "else@example.invalid")
    result = await FlowRunner(make_flow(), RunContext("root", tmp_path, initial_inputs={"x": 3})).run()
    repo = repo_of(tmp_path)
    commit = repo.commit(f"run/{result.run_id}")
    files = sorted(b.path for b in commit.tree.traverse() if b.type == "blob")
    assert files == ["root/load/outcome.json", "root/work/scale/outcome.json"]
    assert (commit.tree / "root/work/scale/outcome.json").data_stream.read().strip() == b"6"
    assert commit.author.name == "reprise" and commit.committer.email == "reprise@localhost"
    assert result.run_id in commit.message and "completed" in commit.message
    assert commit.parents == ()
    meta = (result.run_dir / ".trace/metadata.json").read_text()
    assert commit.hexsha in meta


async def test_rerun_branch_starts_from_previous_commit_and_diff_shows_changes(tmp_path: Path) -> None:
    r1 = await FlowRunner(make_flow(2), RunContext("root", tmp_path, initial_inputs={"x": 3})).run()
    # The scale node's code changed: re-run from it.
    r2 = await FlowRunner(
        make_flow(10), RunContext("root", tmp_path, previous_run_id=r1.run_id, start_hierarchy_path="root.work.scale")
    ).run()
    repo = repo_of(tmp_path)
    c1, c2 = repo.commit(f"run/{r1.run_id}"), repo.commit(f"run/{r2.run_id}")
    assert c2.parents == (c1,)
    diff = repo.git.diff("--name-only", f"run/{r1.run_id}", f"run/{r2.run_id}")
    assert diff.split() == ["root/work/scale/outcome.json"]
    assert f"previous run: {r1.run_id}" in c2.message


async def test_failed_run_is_committed_with_its_status(tmp_path: Path) -> None:
    def boom(n: int) -> int:
        raise ValueError("no")

    flow = FlowDefinition().node("ok", lambda: 1).node("bad", boom, inputs={"n": Ref("ok")})
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, RunContext("root", tmp_path)).run()
    commit = repo_of(tmp_path).commit(f"run/{info.value.run_id}")
    assert "failed" in commit.message.splitlines()[0]
    assert [b.path for b in commit.tree.traverse() if b.type == "blob"] == ["root/ok/outcome.json"]


async def test_outcome_repository_can_be_turned_off(tmp_path: Path) -> None:
    await FlowRunner(make_flow(), RunContext("root", tmp_path, initial_inputs={"x": 1}, outcome_repo=False)).run()
    assert not (tmp_path / "runs" / "outcome").exists()


async def test_declared_files_and_commit_per_node(tmp_path: Path) -> None:
    outside = tmp_path / "report.md"

    def write(ctx: NodeContext) -> str:
        (ctx.node_dir / "notes.txt").write_text("inside")
        ctx.declare_outcome_file("notes.txt")
        outside.write_text("# report")
        ctx.declare_outcome_file(outside)
        return "ok"

    flow = FlowDefinition().node("a", lambda: 1).node("write", write).node("c", lambda: 3)
    settings = OutcomeSettings(commit_per_node=True, author_name="bot", author_email="bot@x.invalid")
    result = await FlowRunner(flow, RunContext("root", tmp_path, outcome_repo=settings)).run()
    repo = repo_of(tmp_path)
    tip = repo.commit(f"run/{result.run_id}")
    blobs = sorted(b.path for b in tip.tree.traverse() if b.type == "blob")
    assert blobs == [
        "root/a/outcome.json",
        "root/c/outcome.json",
        "root/write/files/report.md",
        "root/write/notes.txt",
        "root/write/outcome.json",
    ]
    history = list(repo.iter_commits(f"run/{result.run_id}"))
    assert len(history) == 4  # one per node, then the run's commit
    assert history[-1].message.startswith("node root.a")
    assert all(c.author.name == "bot" for c in history)
    # A re-run that reuses 'write' commits its declared files too, as the node produced them.
    outside.write_text("# changed after the run")
    r2 = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=result.run_id, start_hierarchy_path="root.c", outcome_repo=settings
        ),
    ).run()
    r2_tree = repo.commit(f"run/{r2.run_id}").tree
    blobs2 = sorted(b.path for b in r2_tree.traverse() if b.type == "blob")
    assert blobs2 == blobs
    assert (r2_tree / "root/write/files/report.md").data_stream.read() == b"# report"


WRITER = textwrap.dedent(
    """
    import sys
    from reprise import FlowDefinition, FlowRunner, RunContext, Initial, Ref
    flow = FlowDefinition().node("a", lambda x: x, inputs={"x": Initial("x")})
    for i in range(1, 6):
        flow.node(f"n{i}", lambda n: n + 1, inputs={"n": Ref(f"n{i-1}" if i > 1 else "a")})
    for k in range(int(sys.argv[3])):
        r = FlowRunner(flow, RunContext("root", sys.argv[1], run_root=sys.argv[2], initial_inputs={"x": k})).run_sync()
        print(r.run_id)
    """
)


def test_eight_processes_commit_concurrently_without_losing_anything(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    project = tmp_path / "proj"
    project.mkdir()
    run_root = tmp_path / "runs"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(project), str(run_root), "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(8)
    ]
    run_ids: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        run_ids += out.split()
    assert len(run_ids) == len(set(run_ids)) == 24
    repo = git.Repo(run_root / "outcome" / "proj")
    branches = {h.name for h in repo.heads}
    assert branches == {f"run/{r}" for r in run_ids}
    for r in run_ids:
        commit = repo.commit(f"run/{r}")
        assert r in commit.message
        assert len([b for b in commit.tree.traverse() if b.type == "blob"]) == 6
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo.working_dir, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    assert not list((run_root / "outcome" / "proj" / ".git").glob("*.lock"))
    assert os.listdir(run_root / "outcome" / "proj") == [".git"]  # no working tree was ever checked out


async def test_a_reruns_tree_holds_only_its_own_outcomes_not_its_parents(tmp_path: Path) -> None:
    # The re-run takes the other branch of a conditional: the branch the earlier run took must
    # not stay in the re-run's tree just because the earlier commit is its parent.
    def load(x: int) -> int:
        return x

    flow = (
        FlowDefinition()
        .node("load", load, inputs={"x": Initial("x")})
        .conditional(
            "sign",
            Computed(lambda v: v > 0, Ref("load")),
            FlowDefinition().node("pos", lambda: "positive"),
            FlowDefinition().node("neg", lambda: "negative"),
        )
    )
    first = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    again = await FlowRunner(
        flow,
        RunContext(
            "root",
            tmp_path,
            previous_run_id=first.run_id,
            start_hierarchy_path="root.load",
            initial_inputs={"x": -1},
        ),
    ).run()
    repo = repo_of(tmp_path)

    def blobs(run_id: str) -> list[str]:
        return sorted(b.path for b in repo.commit(f"run/{run_id}").tree.traverse() if b.type == "blob")

    assert blobs(first.run_id) == ["root/load/outcome.json", "root/sign/then/pos/outcome.json"]
    assert blobs(again.run_id) == ["root/load/outcome.json", "root/sign/else/neg/outcome.json"]
    assert repo.commit(f"run/{again.run_id}").parents[0].hexsha == repo.commit(f"run/{first.run_id}").hexsha


def _chain(n: int, size: int = 0) -> FlowDefinition:
    def step(k: int) -> str:
        return f"{k:0{size}d}" if size else str(k)

    flow = FlowDefinition()
    for i in range(n):
        flow.node(f"n{i}", step, inputs={"k": i})
    return flow


def _children() -> set[int]:
    """This process's child processes that have not been reaped (Linux's /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.add(int(entry))
    return found


def _conditional_flow(outside: Path) -> FlowDefinition:
    def load(x: int, ctx: NodeContext) -> int:
        (ctx.node_dir / "notes.txt").write_text(f"x={x}")
        ctx.declare_outcome_file("notes.txt")
        outside.write_text(f"# report {x}")
        ctx.declare_outcome_file(outside)
        return x

    return (
        FlowDefinition()
        .node("load", load, inputs={"x": Initial("x")})
        .conditional(
            "sign",
            Computed(lambda v: v > 0, Initial("x")),
            FlowDefinition().node("pos", lambda: "positive"),
            FlowDefinition().node("neg", lambda: "negative"),
        )
        .node("last", lambda: "end")
    )


async def test_a_run_with_a_large_outcome_commits_it_whole(tmp_path: Path) -> None:
    size = 1 << 20
    flow = FlowDefinition().node("big", lambda: "y" * size).node("after", lambda: 2)
    result = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    tree = repo_of(tmp_path).commit(f"run/{result.run_id}").tree
    blob = (tree / "root/big/outcome.json").data_stream.read()
    assert blob == (result.run_dir / "root/big/outcome.json").read_bytes()
    assert len(blob) > size


async def test_a_completion_hook_that_raises_does_not_cost_the_run_its_commit(tmp_path: Path) -> None:
    ran: list[str] = []

    def broken(ctx: RunContext, status: Any) -> None:
        ran.append("broken")
        raise RuntimeError("the user's hook broke")

    def later(ctx: RunContext, status: Any) -> None:
        ran.append(f"later {status.value}")

    ctx = RunContext("root", tmp_path)
    ctx.add_completion_hook(broken)  # before set-up: it runs before the commit's hook
    ctx.add_completion_hook(later)
    with pytest.raises(RuntimeError, match="the user's hook broke"):
        await FlowRunner(FlowDefinition().node("a", lambda: 1), ctx).run()
    assert ran == ["broken", "later completed"]
    run_dir = ctx.require_run_dir()
    meta = json.loads((run_dir.path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "completed"
    commit = repo_of(tmp_path).commit(f"run/{run_dir.run_id}")
    assert meta["outcome_commit"] == commit.hexsha
    logs = [json.loads(line) for line in (run_dir.path / ".trace" / "logs.jsonl").read_text().splitlines()]
    failures = [entry for entry in logs if entry.get("event") == "completion hook failed"]
    assert len(failures) == 1 and "the user's hook broke" in failures[0]["error"]


def test_a_completion_hook_that_stops_the_run_leaves_no_git_process(tmp_path: Path) -> None:
    # A hook added before set-up runs before the commit's. One that raises a BaseException
    # (SystemExit, KeyboardInterrupt) stops the hooks after it, the commit's too: no git
    # process is left, and no commit is recorded.
    class Stop(BaseException):
        pass

    def stops(ctx: RunContext, status: Any) -> None:
        raise Stop

    ctx = RunContext("root", tmp_path)
    ctx.add_completion_hook(stops)
    before = _children()
    with pytest.raises(Stop):
        FlowRunner(FlowDefinition().node("a", lambda: 1), ctx).run_sync()
    assert _children() - before == set()
    meta = json.loads((ctx.require_run_dir().path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "completed" and "outcome_commit" not in meta


async def test_a_failed_runs_error_is_raised_even_when_a_completion_hook_fails_too(tmp_path: Path) -> None:
    def broken(ctx: RunContext, status: Any) -> None:
        raise RuntimeError("the user's hook broke")

    def fail() -> int:
        raise ValueError("the node broke")

    ctx = RunContext("root", tmp_path)
    ctx.add_completion_hook(broken)
    with pytest.raises(RunFailedError, match="the node broke") as caught:
        await FlowRunner(FlowDefinition().node("a", fail), ctx).run()
    assert caught.value.path == "root.a"
    run_dir = ctx.require_run_dir()
    meta = json.loads((run_dir.path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "failed" and meta["outcome_commit"]
    assert "the user's hook broke" in meta["completion_hook_error"] and "broken" in meta["completion_hook_error"]
    logs = (run_dir.path / ".trace" / "logs.jsonl").read_text()
    assert "completion hook failed" in logs and "the user's hook broke" in logs


async def test_a_hook_added_after_set_up_runs_after_the_commit_and_sees_its_branch(tmp_path: Path) -> None:
    # A hook after the commit's finds the branch made and the commit in the metadata.
    seen: list[Any] = []
    ctx = RunContext("root", tmp_path)
    ctx.setup_run()

    def after(c: RunContext, status: Any) -> None:
        repo = OutcomeRepository(tmp_path / "runs" / "outcome" / tmp_path.name)
        seen.append((repo.head_of(c.run_id), c._metadata.outcome_commit if c._metadata else None))

    ctx.add_completion_hook(after)
    result = await FlowRunner(FlowDefinition().node("a", lambda: 1), ctx).run()
    head = repo_of(tmp_path).commit(f"run/{result.run_id}").hexsha
    assert seen == [(head, head)]


async def test_a_failed_commit_is_logged_before_the_runs_last_log_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "repo-file"
    not_a_dir.write_text("not a repository")
    ctx = RunContext("root", tmp_path, outcome_repo=OutcomeSettings(path=not_a_dir / "repo"))
    result = await FlowRunner(FlowDefinition().node("a", lambda: 1), ctx).run()
    assert result.status.value == "completed"  # a failed commit does not fail the run
    meta = json.loads((result.run_dir / ".trace" / "metadata.json").read_text())
    assert meta.get("outcome_commit_error") and "outcome_commit" not in meta
    events = [json.loads(line)["event"] for line in (result.run_dir / ".trace" / "logs.jsonl").read_text().splitlines()]
    assert "outcome commit failed" in events
    assert events[-1] == "run finished"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_run_whose_trace_cannot_be_finished_still_records_its_commit_and_itself(tmp_path: Path) -> None:
    # Writing the trace and metrics fails after the commit: no git process is left, and the
    # commit and the run are recorded.
    def blocks_the_metrics(ctx: RunContext, status: Any) -> None:
        (ctx.require_run_dir().path / ".trace" / "metrics.jsonl").mkdir()

    ctx = RunContext("root", tmp_path)
    ctx.add_completion_hook(blocks_the_metrics)  # before set-up: it runs before the commit's
    before = _children()
    with pytest.raises(IsADirectoryError):
        FlowRunner(FlowDefinition().node("a", lambda: 1), ctx).run_sync()
    assert _children() - before == set()
    run_dir = ctx.require_run_dir()
    meta = json.loads((run_dir.path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "completed"
    assert meta["outcome_commit"] == repo_of(tmp_path).commit(f"run/{run_dir.run_id}").hexsha


async def test_a_cancelled_run_context_block_stays_cancelled_when_a_completion_hook_fails(tmp_path: Path) -> None:
    # As with a runner: the block's own cancellation (or error) is what the caller sees, not
    # a failing hook's error, which would escape the cancel scope meant to absorb it.
    def broken(ctx: RunContext, status: Any) -> None:
        raise RuntimeError("the user's hook broke")

    ctx = RunContext("root", tmp_path)
    with anyio.CancelScope() as scope:
        async with ctx:
            ctx.add_completion_hook(broken)
            scope.cancel()
            await anyio.sleep(1)  # raises the cancellation at once
    trace = ctx.require_run_dir().path / ".trace"
    assert json.loads((trace / "metadata.json").read_text())["status"] == "cancelled"
    assert "the user's hook broke" in (trace / "logs.jsonl").read_text()


def test_a_failed_run_context_block_raises_its_own_error_when_a_completion_hook_fails(tmp_path: Path) -> None:
    def broken(ctx: RunContext, status: Any) -> None:
        raise RuntimeError("the user's hook broke")

    ctx = RunContext("root", tmp_path)
    with pytest.raises(ValueError, match="the block broke"):
        with ctx:
            ctx.add_completion_hook(broken)
            raise ValueError("the block broke")
    meta = json.loads((ctx.require_run_dir().path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "failed" and meta["outcome_commit"]


async def test_a_failing_hook_is_recorded_in_the_metadata_even_without_telemetry(tmp_path: Path) -> None:
    from reprise import ObservabilitySettings

    def broken(ctx: RunContext, status: Any) -> None:
        raise RuntimeError("no log to tell")

    def fail() -> int:
        raise ValueError("the node broke")

    ctx = RunContext("root", tmp_path, observability_settings=ObservabilitySettings.disabled())
    ctx.add_completion_hook(broken)
    with pytest.raises(RunFailedError, match="the node broke"):
        await FlowRunner(FlowDefinition().node("a", fail), ctx).run()
    meta = json.loads((ctx.require_run_dir().path / ".trace" / "metadata.json").read_text())
    assert meta["status"] == "failed" and "no log to tell" in meta["completion_hook_error"]


# -- names git refuses (issue 17, item 2) ------------------------------------------------------
BAD_NAMES = [
    ".GIT/config",
    ".Git/hooks/post-checkout",
    "git~1/config",
    "GIT~1/config",
    ".git./config",
    ".git /config",
    ".git::$INDEX_ALLOCATION/config",
    ".g\u200cit/config",  # HFS+ ignores U+200C
    "sub\\.git\\config",  # a separator on Windows
    "sub/.gitmodules",
    "GITMOD~1",
    "line\nbreak.txt",
    "tab\there.txt",
]


def _fsck(repo_dir: Path) -> None:
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=repo_dir, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("own_base", [True, False], ids=["node-dir", "base-dir"])
async def test_a_name_git_refuses_fails_its_node_before_anything_is_written(
    tmp_path: Path, name: str, own_base: bool
) -> None:
    from reprise.nodes._file_ops import CreateFile, FileOperationNode

    base = tmp_path / "work"
    base.mkdir()
    flow = (
        FlowDefinition()
        .node("ok", lambda: 1)
        .node("w", FileOperationNode([CreateFile(path=name, content="x")], base_dir=None if own_base else str(base)))
    )
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, RunContext("root", tmp_path)).run()
    message = str(info.value)
    assert "root.w" in message and repr(name) in message
    assert list(base.iterdir()) == []
    node_dir = tmp_path / "runs" / info.value.run_id / "root" / "w"
    assert sorted(p.name for p in node_dir.iterdir()) == ["input.json", "result.json"]
    # The run's other outcomes are committed, and the repository stays clean.
    repo = repo_of(tmp_path)
    commit = repo.commit(f"run/{info.value.run_id}")
    assert [b.path for b in commit.tree.traverse() if b.type == "blob"] == ["root/ok/outcome.json"]
    _fsck(Path(repo.git_dir))


async def test_a_name_git_refuses_is_refused_where_a_symlink_leads(tmp_path: Path) -> None:
    from reprise.nodes._file_ops import CreateFile, FileOperationNode

    base = tmp_path / "work"
    (base / ".git").mkdir(parents=True)
    (base / "link").symlink_to(".git")
    write = FileOperationNode([CreateFile(path="link/config", content="x")], base_dir=str(base))
    flow = FlowDefinition().node("w", write)
    with pytest.raises(RunFailedError, match=r"'\.git' is git's own directory"):
        await FlowRunner(flow, RunContext("root", tmp_path)).run()
    assert list((base / ".git").iterdir()) == []


@pytest.mark.parametrize("name", [".GIT/config", "a\nb.txt", "git~1"])
async def test_a_declared_outcome_file_git_refuses_fails_its_node(tmp_path: Path, name: str) -> None:
    outside = tmp_path / "report.md"
    outside.write_text("# report")

    def declare(ctx: NodeContext) -> int:
        ctx.declare_outcome_file(outside, name=name)
        return 1

    flow = FlowDefinition().node("ok", lambda: 1).node("d", declare)
    with pytest.raises(RunFailedError) as info:
        await FlowRunner(flow, RunContext("root", tmp_path)).run()
    assert "root.d" in str(info.value) and repr(name) in str(info.value)
    run_dir = tmp_path / "runs" / info.value.run_id
    assert not (run_dir / "root" / "d" / "files").exists()
    commit = repo_of(tmp_path).commit(f"run/{info.value.run_id}")
    assert [b.path for b in commit.tree.traverse() if b.type == "blob"] == ["root/ok/outcome.json"]


def test_the_commit_leaves_out_a_name_git_refuses_and_keeps_the_rest(tmp_path: Path) -> None:
    # A run recorded by an older version may name such a file: the commit leaves it out.
    with RunContext("root", tmp_path) as ctx:
        node_dir = ctx.require_run_dir().path / "root" / "n"
        (node_dir / ".GIT").mkdir(parents=True)
        (node_dir / "outcome.json").write_text("1\n")
        (node_dir / ".GIT" / "config").write_text("[core]\n")
        ctx.declared_outcome_files.append(OutcomeFile(node_dir / ".GIT" / "config", "root/n/.GIT/config", "root.n"))
    repo = repo_of(tmp_path)
    commit = repo.commit(f"run/{ctx.run_id}")
    assert [b.path for b in commit.tree.traverse() if b.type == "blob"] == ["root/n/outcome.json"]
    _fsck(Path(repo.git_dir))
    logs = (ctx.require_run_dir().path / ".trace" / "logs.jsonl").read_text()
    assert "outcome file left out of the commit" in logs and "root/n/.GIT/config" in logs


@pytest.mark.parametrize(
    "path", ["src/app.py", ".github/workflows/ci.yml", ".gitignore", ".gitattributes", "git~2/x", "a.git", ".gitx"]
)
def test_names_git_takes_pass(path: str) -> None:
    from reprise.dsl._paths import git_path_problem

    assert git_path_problem(path) is None


@pytest.mark.parametrize("path", [*BAD_NAMES, "a//b", "./a", "a/../b", "/abs", "\udcff"])
def test_names_git_refuses_are_refused(path: str) -> None:
    from reprise.dsl._paths import git_path_problem

    assert git_path_problem(path) is not None


def _git(repo_dir: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo_dir), *args], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _blobs(repo_dir: Path, rev: str) -> list[str]:
    return sorted(_git(repo_dir, "ls-tree", "-r", "--name-only", rev).splitlines())


async def test_a_reruns_commit_keeps_reused_outcomes_from_its_parent(tmp_path: Path) -> None:
    first = await FlowRunner(_chain(40), RunContext("root", tmp_path)).run()
    again = await FlowRunner(
        _chain(40), RunContext("root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.n39")
    ).run()
    assert again.executed == 1 and again.reused == 39
    repo = repo_of(tmp_path)
    c1, c2 = repo.commit(f"run/{first.run_id}"), repo.commit(f"run/{again.run_id}")
    assert c2.parents == (c1,)
    assert c2.tree.hexsha == c1.tree.hexsha  # the same outcomes, byte for byte
    _fsck(Path(repo.git_dir))


async def test_a_rerun_down_the_other_branch_keeps_the_declared_files_it_reused(tmp_path: Path) -> None:
    flow = _conditional_flow(tmp_path / "report.md")
    first = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    again = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.sign", initial_inputs={"x": -1}
        ),
    ).run()
    assert again.reused == 1  # load, with its declared files
    repo_dir = Path(repo_of(tmp_path).git_dir)
    assert _blobs(repo_dir, f"run/{again.run_id}") == [
        "root/last/outcome.json",
        "root/load/files/report.md",
        "root/load/notes.txt",
        "root/load/outcome.json",
        "root/sign/else/neg/outcome.json",
    ]
    assert _git(repo_dir, "show", f"run/{again.run_id}:root/load/files/report.md") == "# report 1"


def test_a_file_gone_before_the_commit_is_left_out(tmp_path: Path) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("here")
    files = [OutcomeFile(kept, "root/a/kept.txt"), OutcomeFile(tmp_path / "gone.txt", "root/a/gone.txt")]
    done = OutcomeRepository(tmp_path / "repo").commit_run("run_x", files, message="m")
    assert _blobs(tmp_path / "repo", done.commit) == ["root/a/kept.txt"]


def test_names_git_takes_are_committed_as_they_are(tmp_path: Path) -> None:
    names = ['say "hi".txt', "naïve café.md", " lead and trail ", "-dash", '"quoted"']
    for i, name in enumerate(names):
        (tmp_path / f"f{i}").write_text(name)
    files = [OutcomeFile(tmp_path / f"f{i}", f"root/a/{name}") for i, name in enumerate(names)]
    done = OutcomeRepository(tmp_path / "repo").commit_run("run_x", files, message="m")
    got = subprocess.run(
        ["git", "-C", str(tmp_path / "repo"), "ls-tree", "-r", "-z", "--name-only", done.commit],
        capture_output=True,
        check=True,
    ).stdout.decode()
    assert sorted(got.split("\0")[:-1]) == sorted(f"root/a/{name}" for name in names)
    _fsck(tmp_path / "repo")


def test_a_reruns_commit_keeps_a_reused_file_from_its_parent_and_drops_its_own_gone_file(tmp_path: Path) -> None:
    # A reused node's file that cannot be read any more stays at the parent's version; a file of
    # the re-run's own (not reused) that is gone is not kept at the parent's version.
    repo = OutcomeRepository(tmp_path / "repo")
    outcome, notes = tmp_path / "outcome.json", tmp_path / "notes.txt"
    outcome.write_text("1\n")
    notes.write_text("first")
    files = [OutcomeFile(outcome, "root/a/outcome.json", "root.a"), OutcomeFile(notes, "root/b/notes.txt", "root.b")]
    parent = repo.commit_run("run_p", files, message="p").commit
    outcome.unlink()
    notes.unlink()
    child = repo.commit_run("run_c", files, message="c", parent_run_id="run_p", reused={"root.a"}).commit
    assert _blobs(tmp_path / "repo", child) == ["root/a/outcome.json"]
    assert _git(tmp_path / "repo", "rev-parse", f"{child}^") == parent
    assert _git(tmp_path / "repo", "show", f"{child}:root/a/outcome.json") == "1"


async def test_a_150_node_run_commits_once_to_a_sha256_repository(tmp_path: Path) -> None:
    repo_dir = tmp_path / "runs" / "outcome" / tmp_path.name
    subprocess.run(["git", "init", "-q", "--object-format=sha256", str(repo_dir)], check=True)
    first = await FlowRunner(_chain(150), RunContext("root", tmp_path)).run()
    branch = f"run/{first.run_id}"
    assert _git(repo_dir, "rev-list", "--count", branch) == "1"
    assert len(_blobs(repo_dir, branch)) == 150
    commit = _git(repo_dir, "rev-parse", branch)
    assert len(commit) == 64
    assert json.loads((first.run_dir / ".trace" / "metadata.json").read_text())["outcome_commit"] == commit
    # A re-run's commit has it as parent, and the two diff.
    flow = _chain(149).node("n149", lambda: "changed")
    again = await FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.n149")
    ).run()
    assert _git(repo_dir, "rev-parse", f"run/{again.run_id}^") == commit
    from reprise._api import Api

    (change,) = Api(tmp_path / "runs").diff(first.run_id, again.run_id, values=True)
    assert (change.path, change.before, change.after) == ("root/n149/outcome.json", "149", "changed")
    _fsck(repo_dir)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
async def test_many_commits_in_one_process_leave_no_git_process(tmp_path: Path) -> None:
    # GitPython keeps `git cat-file` processes for an open Repo: every one must be closed.
    from reprise._api import Api

    before = _children()
    ids = []
    for x in range(12):
        ids.append((await FlowRunner(make_flow(), RunContext("root", tmp_path, initial_inputs={"x": x})).run()).run_id)
        assert Api(tmp_path / "runs").diff(ids[0], ids[-1], values=True) is not None
    repository = OutcomeRepository(tmp_path / "runs" / "outcome" / tmp_path.name)
    with repository.open() as repo:  # the object model starts cat-file processes
        assert repo.commit(f"run/{ids[-1]}").tree / "root/load/outcome.json"
    assert _children() - before == set()


def test_gc_folds_the_outcome_repository_and_keeps_every_branch(tmp_path: Path) -> None:
    ids = [
        FlowRunner(make_flow(), RunContext("root", tmp_path, initial_inputs={"x": x})).run_sync().run_id
        for x in range(3)
    ]
    repo_dir = tmp_path / "runs" / "outcome" / tmp_path.name
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "gc", "--run-root", str(tmp_path / "runs"), "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] and envelope["command"] == "gc"
    (done,) = envelope["data"]
    assert done["repository"] == str(repo_dir)
    assert done["before"]["packs"] == 3  # one a commit
    assert done["after"]["count"] == 0 and done["after"]["packs"] == 1
    for run_id in ids:
        assert _git(repo_dir, "show", f"run/{run_id}:root/work/scale/outcome.json")
    _fsck(repo_dir)


def test_a_node_directory_not_named_in_utf8_is_left_out_of_the_commit(tmp_path: Path) -> None:
    # Without an executor the run directory is walked: a directory whose name is not UTF-8
    # is not committed (git would take it, a run's JSON records cannot), and the log says so.
    with RunContext("root", tmp_path) as ctx:
        node = ctx.require_run_dir().path / os.fsdecode(b"n\xff")
        node.mkdir()
        (node / "outcome.json").write_text("1")
        (ctx.require_run_dir().path / "ok").mkdir()
        (ctx.require_run_dir().path / "ok" / "outcome.json").write_text("2")
    trace = ctx.require_run_dir().path / ".trace"
    meta = json.loads((trace / "metadata.json").read_text())
    assert meta["status"] == "completed"
    assert _blobs(tmp_path / "runs" / "outcome" / tmp_path.name, meta["outcome_commit"]) == ["ok/outcome.json"]
    assert "outcome file left out of the commit" in (trace / "logs.jsonl").read_text()


def test_collect_outcome_files_skips_a_node_directory_never_renamed_into_place(tmp_path: Path) -> None:
    # A SIGKILL between writing a node's files and renaming its temporary directory leaves
    # ".<name>.<pid>.<n>.tmp/outcome.json" behind (what the client commits for a killed
    # experiment worker): it is not a node and must not land in the run's git tree.
    run = tmp_path / "run"
    (run / "root" / "a").mkdir(parents=True)
    (run / "root" / "a" / "outcome.json").write_text("1")
    leftover = run / "root" / ".b.1234.0.tmp"
    leftover.mkdir()
    (leftover / "outcome.json").write_text("2")
    (leftover / "result.json").write_text('{"status": "completed"}')
    files = collect_outcome_files(run)
    assert [f.repo_path for f in files] == ["root/a/outcome.json"]
