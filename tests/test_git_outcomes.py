"""Outcomes committed to git: one branch per run, re-run parents, concurrency (issue 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import git
import pytest

from reprise import Computed, FlowDefinition, FlowRunner, Initial, NodeContext, Ref, RunContext, RunFailedError
from reprise.run import outcome_repo
from reprise.run.outcome_repo import (
    COMMITTED_FILE,
    OutcomeFile,
    OutcomeRepository,
    OutcomeSettings,
    OutcomeStream,
    collect_outcome_files,
    committed_document,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def fast_import_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """git fast-import from a stream's start, however few its outcomes: for the tests of its
    streaming (checkpoints, early answers, broken pipes). Small runs are otherwise committed
    without it (test_git_pack.py)."""
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", 0)


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


async def test_many_packs_are_folded_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from reprise.run import compaction

    monkeypatch.setattr(compaction, "MAX_PACKS", 3)
    # Each commit writes one pack (reprise sets fastimport.unpackLimit=0); 120 outcomes each.
    flow = FlowDefinition().node("n0", lambda x: x, inputs={"x": Initial("x")})
    for i in range(1, 120):
        flow.node(f"n{i}", lambda n: n + 1, inputs={"n": Ref(f"n{i - 1}")})
    ids = []
    for x in range(6):
        ids.append((await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1000 * x})).run()).run_id)
    # Folding goes on behind the runs, and a run that ends while one runs starts no other:
    # the next commit's fold takes what is left.
    compaction.wait_for_compactions()
    OutcomeRepository(repo_of(tmp_path).working_dir)._maybe_compact(repo_of(tmp_path).git_dir)
    compaction.wait_for_compactions()
    repo = repo_of(tmp_path)
    packs = list(Path(repo.git_dir, "objects", "pack").glob("*.pack"))
    assert 1 <= len(packs) <= 3
    for x, run_id in enumerate(ids):  # nothing was lost by folding
        blob = repo.commit(f"run/{run_id}").tree / "root/n119/outcome.json"
        assert blob.data_stream.read().strip() == str(1000 * x + 119).encode()
    assert not [r for r in repo.refs if r.path.startswith("refs/reprise/")]  # no staging ref left


async def test_a_run_with_nothing_new_but_its_commit_writes_no_loose_object(tmp_path: Path) -> None:
    # The same flow on the same input: every outcome is in the repository already, and the run
    # adds its commit alone. git would turn that one-object pack into a loose object by running
    # a second process (unpack-objects, ~2.5 ms at the end of every such run): not wanted.
    flow = FlowDefinition().node("a", lambda x: x + 1, inputs={"x": Initial("x")})
    flow.node("b", lambda n: n * 2, inputs={"n": Ref("a")})
    first = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    second = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    repo = repo_of(tmp_path)
    objects = Path(repo.git_dir, "objects")
    loose = [p for p in objects.glob("[0-9a-f][0-9a-f]/*")]
    assert loose == []
    assert repo.commit(f"run/{second.run_id}").tree == repo.commit(f"run/{first.run_id}").tree
    assert repo.commit(f"run/{second.run_id}").hexsha != repo.commit(f"run/{first.run_id}").hexsha


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


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="reads Linux's per-process I/O counters")
async def test_outcomes_reach_git_while_the_run_goes_on(tmp_path: Path) -> None:
    # 120 outcomes of ~600 bytes: more than one chunk, so fast-import gets blobs mid-run.
    ctx = RunContext("root", tmp_path)
    read_by_git: list[int] = []

    def watch() -> str:
        stream = ctx.outcome_stream
        assert stream is not None and stream._proc is not None, "git should have started at the 100th outcome"
        # What fast-import has read from us so far (Linux's per-process I/O counters): wait,
        # bounded, for the first chunk of blobs.
        io = Path(f"/proc/{stream._proc.pid}/io")
        deadline = time.monotonic() + 10
        read = 0
        while time.monotonic() < deadline:
            read = int(io.read_text().split("rchar:")[1].split()[0])
            if read > 30_000:
                break
            time.sleep(0.01)
        read_by_git.append(read)
        return "watched"

    flow = _chain(120, size=600).node("watch", watch)
    result = await FlowRunner(flow, ctx).run()
    assert read_by_git and read_by_git[0] > 30_000, "no blob reached git before the run ended"
    commit = repo_of(tmp_path).commit(f"run/{result.run_id}")
    blobs = {b.path: b.data_stream.read() for b in commit.tree.traverse() if b.type == "blob"}
    assert len(blobs) == 121
    assert blobs["root/n7/outcome.json"] == (result.run_dir / "root/n7/outcome.json").read_bytes()
    assert blobs["root/watch/outcome.json"].strip() == b'"watched"'


@pytest.mark.usefixtures("fast_import_only")
async def test_a_reruns_commit_keeps_reused_outcomes_from_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await FlowRunner(_chain(40), RunContext("root", tmp_path)).run()
    sent: list[bytes] = []
    original = OutcomeStream._commit_stream

    def recording(self: OutcomeStream, *args: Any) -> tuple[bytes, int]:
        stream, mark = original(self, *args)
        sent.append(stream)
        return stream, mark

    monkeypatch.setattr(OutcomeStream, "_commit_stream", recording)
    again = await FlowRunner(
        _chain(40), RunContext("root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.n39")
    ).run()
    assert again.executed == 1 and again.reused == 39
    # Only the executed outcome is named; the 39 reused ones stay from the parent's tree.
    (stream,) = sent
    assert b"root/n39/outcome.json" in stream
    assert b"root/n0/outcome.json" not in stream and b"root/n38/outcome.json" not in stream
    repo = repo_of(tmp_path)
    c1, c2 = repo.commit(f"run/{first.run_id}"), repo.commit(f"run/{again.run_id}")
    assert c2.parents == (c1,)
    assert c2.tree.hexsha == c1.tree.hexsha  # the same outcomes, byte for byte
    subprocess.run(["git", "--git-dir", repo.git_dir, "fsck", "--strict"], check=True, capture_output=True)


async def test_a_broken_commit_stream_is_replaced_by_a_fresh_commit(tmp_path: Path) -> None:
    ctx = RunContext("root", tmp_path)

    def kill_git() -> str:
        stream = ctx.outcome_stream
        assert stream is not None and stream._proc is not None  # git starts at the 100th outcome
        stream._proc.kill()
        stream._proc.wait()
        return "killed"

    flow = _chain(110).node("kill", kill_git)
    flow.node("after", lambda: "after")
    result = await FlowRunner(flow, ctx).run()
    meta = json.loads((result.run_dir / ".trace/metadata.json").read_text())
    assert "outcome_commit_error" not in meta
    commit = repo_of(tmp_path).commit(f"run/{result.run_id}")
    assert meta["outcome_commit"] == commit.hexsha
    blobs = sorted(b.path for b in commit.tree.traverse() if b.type == "blob")
    names = ["after", "kill", *(f"n{i}" for i in range(110))]
    assert blobs == sorted(f"root/{n}/outcome.json" for n in names)


def _tree_of(repo_dir: Path, commit: str) -> str:
    out = subprocess.run(
        ["git", "--git-dir", str(repo_dir / ".git"), "rev-parse", f"{commit}^{{tree}}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


async def test_a_long_runs_commit_is_built_from_checkpoints_with_the_same_tree(tmp_path: Path) -> None:
    # 150 outcomes in a subflow, and a declared file: past the checkpoint interval, so git
    # builds the trees during the run; the commit must be exactly the commit of these files.
    def write(ctx: NodeContext) -> str:
        (ctx.node_dir / "notes.txt").write_text("declared")
        ctx.declare_outcome_file("notes.txt")
        return "written"

    flow = FlowDefinition().subflow("sub", _chain(150)).node("write", write)
    result = await FlowRunner(flow, RunContext("root", tmp_path)).run()
    repo = repo_of(tmp_path)
    commit = repo.commit(f"run/{result.run_id}")
    assert commit.parents == ()  # the checkpoints are not its history
    assert len(list(repo.iter_commits(f"run/{result.run_id}"))) == 1
    blobs = sorted(b.path for b in commit.tree.traverse() if b.type == "blob")
    assert len(blobs) == 152 and "root/write/notes.txt" in blobs and "root/sub/n149/outcome.json" in blobs
    # The same files committed in one go, without checkpoints, give the same tree.
    files = collect_outcome_files(
        result.run_dir, [OutcomeFile(result.run_dir / "root/write/notes.txt", "root/write/notes.txt")]
    )
    fresh = OutcomeRepository(tmp_path / "fresh")
    again = fresh.commit_run("x", files, message="m")
    assert _tree_of(tmp_path / "fresh", again) == commit.tree.hexsha
    subprocess.run(["git", "--git-dir", repo.git_dir, "fsck", "--strict"], check=True, capture_output=True)


@pytest.mark.usefixtures("fast_import_only")
def test_a_checkpointed_stream_commits_exactly_the_files_it_is_given(tmp_path: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(70):  # one checkpoint at 64
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    # n3 and n66 (before and after the checkpoint) were sent but are not among the files (their
    # nodes' outcomes were dropped); one file is new.
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(70) if i not in (3, 66)]
    files.append(OutcomeFile("", "root/extra.txt", data=b"extra"))
    commit = stream.finish(files, message="m")
    assert commit is not None
    tree = subprocess.run(
        ["git", "--git-dir", repo.git_dir(), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(tree) == sorted(f.repo_path for f in files)
    assert _tree_of(tmp_path / "repo", commit) == _tree_of(tmp_path / "repo", repo.commit_run("r2", files, message="m"))


@pytest.mark.usefixtures("fast_import_only")
def test_a_checkpointed_stream_with_a_bad_answer_lets_the_caller_commit_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(65):
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    monkeypatch.setattr(OutcomeStream, "_read_line", lambda self: b"missing root\n")
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(65)]
    assert stream.finish(files, message="m") is None
    assert stream.broken and "missing root" in stream.broken
    assert repo.head_of("r1") is None  # nothing half-made
    assert repo.commit_run("r1", files, message="m") == repo.head_of("r1")


CRASHING_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext

    ctx = RunContext("root", sys.argv[1], initial_inputs={"x": 1})

    def die(k: int) -> int:
        Path(sys.argv[2]).write_text(str(ctx.outcome_stream._proc.pid))
        os.kill(os.getpid(), signal.SIGKILL)
        return k

    flow = FlowDefinition()
    for i in range(100):
        flow.node(f"n{i}", lambda k: k + 1, inputs={"k": Initial("x") if i == 0 else Ref(f"n{i - 1}")})
    flow.node("die", die, inputs={"k": Ref("n99")})
    FlowRunner(flow, ctx).run_sync()
    """
)


def _wait_gone(pid: int) -> None:
    """Wait (bounded) until process ``pid`` has ended: gone, or a zombie nobody reaps."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} still running")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_run_killed_after_checkpoints_leaves_no_branch(tmp_path: Path) -> None:
    # The run's process dies after 100 outcomes (checkpoint commits were sent): git must not
    # take the end of its input for the end of the stream and publish a checkpoint as the run.
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_RUN)
    pid_file = tmp_path / "git.pid"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), str(pid_file)], capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    _wait_gone(int(pid_file.read_text()))
    (run_id,) = [p.name for p in (tmp_path / "runs").iterdir() if p.name.startswith("run_")]
    assert OutcomeRepository(repo_of(tmp_path).working_dir).head_of(run_id) is None
    # git may leave a crash report for the early end (when it can still write its error: here
    # the dead run's pipe kills it first); the next commit tidies any away.
    git_dir = Path(repo_of(tmp_path).git_dir)
    (git_dir / "fast_import_crash_4242").write_text("fast-import crash report")
    anyio.run(FlowRunner(_chain(2), RunContext("root", tmp_path)).run)
    assert not list(git_dir.glob("fast_import_crash_*"))


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


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_rerun_that_reuses_nothing_leaves_no_git_process(tmp_path: Path) -> None:
    # A re-run starts listing its parent's tree for the outcomes it will reuse; from the first
    # node it reuses none, and the listing (more than a pipe holds) must not be left behind.
    flow = FlowDefinition()
    for i in range(1200):
        flow.node(f"a_node_with_a_rather_long_identifier_{i:04d}", lambda: "x")
    first = FlowRunner(flow, RunContext("root", tmp_path)).run_sync()
    before = _children()
    start = "root.a_node_with_a_rather_long_identifier_0000"
    again = FlowRunner(
        flow, RunContext("root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path=start)
    ).run_sync()
    assert again.executed == 1200
    assert _children() - before == set()


def _spy_git_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the git commands the outcome repository starts (they still run)."""
    started: list[list[str]] = []
    original = OutcomeRepository._popen

    def spying(self: OutcomeRepository, args: list[str], git_dir: str, *, stdin: bool) -> Any:
        started.append(list(args))
        return original(self, args, git_dir, stdin=stdin)

    monkeypatch.setattr(OutcomeRepository, "_popen", spying)
    return started


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


async def test_a_run_records_its_commits_tree_and_a_rerun_starts_from_that_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = _conditional_flow(tmp_path / "report.md")
    first = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    repo = repo_of(tmp_path)

    def blobs(run_id: str) -> list[str]:
        return sorted(b.path for b in repo.commit(f"run/{run_id}").tree.traverse() if b.type == "blob")

    record = json.loads((first.run_dir / ".trace" / "committed.json").read_text())
    assert record["commit"] == repo.commit(f"run/{first.run_id}").hexsha
    assert record["files"] == blobs(first.run_id)
    assert "root/load/files/report.md" in record["files"] and "root/load/notes.txt" in record["files"]

    # The re-run takes the other branch: the parent's files come from that record, not from a
    # second git process, and the branch the first run took is gone from the re-run's tree.
    started = _spy_git_commands(monkeypatch)
    again = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.sign", initial_inputs={"x": -1}
        ),
    ).run()
    assert again.reused == 1  # load, with its declared files
    assert [args for args in started if "ls-tree" in args] == []
    expected = [
        "root/last/outcome.json",
        "root/load/files/report.md",
        "root/load/notes.txt",
        "root/load/outcome.json",
        "root/sign/else/neg/outcome.json",
    ]
    assert blobs(again.run_id) == expected
    again_record = json.loads((again.run_dir / ".trace" / "committed.json").read_text())
    assert again_record["files"] == expected


@pytest.mark.parametrize("damage", ["missing", "another commit", "not a list"])
async def test_a_rerun_lists_its_parents_tree_with_git_when_the_record_does_not_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    outside = tmp_path / "report.md"
    flow = _conditional_flow(outside)
    first = await FlowRunner(flow, RunContext("root", tmp_path, initial_inputs={"x": 1})).run()
    path = first.run_dir / ".trace" / "committed.json"
    record = json.loads(path.read_text())
    if damage == "missing":
        path.unlink()
    elif damage == "another commit":
        # A record that leaves out the first run's conditional branch: believed, it would leave
        # that branch's outcome in the re-run's tree.
        record["commit"] = "0" * 40
        record["files"] = [f for f in record["files"] if "/sign/" not in f]
        path.write_text(json.dumps(record))
    else:
        record["files"] = "root/load/outcome.json"
        path.write_text(json.dumps(record))
    started = _spy_git_commands(monkeypatch)
    again = await FlowRunner(
        flow,
        RunContext(
            "root", tmp_path, previous_run_id=first.run_id, start_hierarchy_path="root.sign", initial_inputs={"x": -1}
        ),
    ).run()
    assert len([args for args in started if "ls-tree" in args]) == 1
    tree = repo_of(tmp_path).commit(f"run/{again.run_id}").tree
    got = sorted(b.path for b in tree.traverse() if b.type == "blob")
    assert got == [
        "root/last/outcome.json",
        "root/load/files/report.md",
        "root/load/notes.txt",
        "root/load/outcome.json",
        "root/sign/else/neg/outcome.json",
    ]


@pytest.mark.usefixtures("fast_import_only")
def test_a_file_gone_before_the_commit_is_left_out_of_the_recorded_tree(tmp_path: Path) -> None:
    repo = OutcomeRepository(tmp_path / "repo")
    kept = tmp_path / "kept.txt"
    kept.write_text("here")
    files = [
        OutcomeFile(kept, "root/a/kept.txt"),
        OutcomeFile(tmp_path / "gone.txt", "root/a/gone.txt"),
        OutcomeFile("", "root/a/outcome.json", data=b"1\n"),
    ]
    stream = repo.open_stream("run_x")
    commit = stream.finish(files, message="m")
    assert commit is not None
    assert stream.committed_paths(files) == ["root/a/kept.txt", "root/a/outcome.json"]
    tree = git.Repo(tmp_path / "repo").commit(commit).tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == ["root/a/kept.txt", "root/a/outcome.json"]


@pytest.mark.usefixtures("fast_import_only")
def test_a_large_outcome_is_left_for_the_commit_to_read(tmp_path: Path) -> None:
    # Written to the pipe during the run, a large outcome would hold the event loop until git
    # had read it all; it is read from its file when the commit is made instead.
    from reprise.run import outcome_repo

    big = b'"' + b"x" * (outcome_repo._STREAM_BLOB_MAX + 10) + b'"\n'
    source = tmp_path / "big.json"
    source.write_bytes(big)
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("run_big")
    stream.add("root/small/outcome.json", b"1\n")
    stream.add("root/big/outcome.json", big)
    assert "root/big/outcome.json" not in stream._marks and "root/small/outcome.json" in stream._marks
    assert all(big not in part for part in stream._buffer)
    files = [
        OutcomeFile("", "root/small/outcome.json", data=b"1\n"),
        OutcomeFile(source, "root/big/outcome.json"),
    ]
    commit = stream.finish(files, message="m")
    assert commit is not None
    tree = git.Repo(tmp_path / "repo").commit(commit).tree
    assert (tree / "root/big/outcome.json").data_stream.read() == big
    assert (tree / "root/small/outcome.json").data_stream.read() == b"1\n"


async def test_a_run_with_a_large_outcome_commits_it_whole(tmp_path: Path) -> None:
    from reprise.run import outcome_repo

    size = outcome_repo._STREAM_BLOB_MAX * 2
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


def _count_ls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many ``ls`` commands the outcome streams send (they still send them)."""
    sent = [0]
    original = OutcomeStream._flush

    def counting(self: OutcomeStream) -> None:
        sent[0] += sum(part.count(b"\nls :") + part.startswith(b"ls :") for part in self._buffer)
        original(self)

    monkeypatch.setattr(OutcomeStream, "_flush", counting)
    return sent


@pytest.mark.parametrize("same_files", [True, False])
def test_a_stream_prepared_at_the_runs_end_uses_gits_early_answer_when_the_files_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, same_files: bool
) -> None:
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", 0)  # git from the start, however few outcomes
    sent = _count_ls(monkeypatch)
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(10):  # fewer than a checkpoint's worth: prepare_finish makes the first
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    stream.prepare_finish()
    assert sent[0] == 1  # asked before the commit
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(10)]
    if not same_files:  # a file git was not sent, and a sent one that is not committed
        files = [f for f in files if f.repo_path != "root/n4/outcome.json"]
        files.append(OutcomeFile("", "root/n2/notes.txt", data=b"declared"))
    commit = stream.finish(files, message="m")
    assert commit is not None
    assert sent[0] == (1 if same_files else 2)
    names = subprocess.run(
        ["git", "--git-dir", repo.git_dir(), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(names) == sorted(f.repo_path for f in files)
    assert _tree_of(tmp_path / "repo", commit) == _tree_of(tmp_path / "repo", repo.commit_run("r2", files, message="m"))
    assert git.Repo(tmp_path / "repo").commit(commit).parents == ()


@pytest.mark.parametrize("parent_files_from", ["record", "git"])
def test_a_file_gone_before_a_reruns_commit_is_not_kept_from_the_parents_tree(
    tmp_path: Path, parent_files_from: str
) -> None:
    # A file of the re-run (not of a reused node) that the parent's tree has too, gone before
    # the commit: it is left out of the re-run's tree, as the record says, not kept at the
    # parent's version (then the record and the tree would differ, and a re-run of this run
    # trusting the record would keep a file its own run does not have).
    repo = OutcomeRepository(tmp_path / "repo")
    notes = tmp_path / "notes.txt"
    notes.write_text("first")
    files = [
        OutcomeFile("", "root/a/outcome.json", "root.a", data=b"1\n"),
        OutcomeFile(notes, "root/b/notes.txt", "root.b"),
    ]
    parent = repo.open_stream("run_p")
    parent_commit = parent.finish(files, message="p")
    assert parent_commit is not None
    parent_dir = tmp_path / "run_p"
    (parent_dir / ".trace").mkdir(parents=True)
    (parent_dir / ".trace" / COMMITTED_FILE).write_bytes(
        committed_document(parent_commit, parent.committed_paths(files))
    )
    notes.unlink()
    child = repo.open_stream(
        "run_c", "run_p", keep_from_parent=True, parent_dir=parent_dir if parent_files_from == "record" else None
    )
    commit = child.finish(files, message="c", reused={"root.a"})
    assert commit is not None
    tree = git.Repo(tmp_path / "repo").commit(commit).tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == ["root/a/outcome.json"]
    assert child.committed_paths(files) == ["root/a/outcome.json"]


def test_a_completion_hook_that_stops_the_run_leaves_no_git_process(tmp_path: Path) -> None:
    # A hook added before set-up runs before the commit's. One that raises a BaseException
    # (SystemExit, KeyboardInterrupt) stops the hooks after it, the commit's too: the
    # fast-import the run started must not be left waiting for a commit that never comes.
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


@pytest.mark.usefixtures("fast_import_only")
def test_an_early_answer_for_an_older_checkpoint_is_not_used(tmp_path: Path) -> None:
    # prepare_finish, then a checkpoint's worth of outcomes more (a new checkpoint): the tree
    # of the early answer lacks them; the commit must ask for the tree again.
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(10):
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    stream.prepare_finish()
    for i in range(10, 10 + 64):
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(74)]
    commit = stream.finish(files, message="m")
    assert commit is not None
    names = subprocess.run(
        ["git", "--git-dir", repo.git_dir(), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(names) == sorted(f.repo_path for f in files)


@pytest.mark.parametrize("prepared", [False, True])
@pytest.mark.usefixtures("fast_import_only")
def test_a_stream_of_exactly_a_checkpoints_worth_of_outcomes_commits_without_falling_back(
    tmp_path: Path, prepared: bool
) -> None:
    # 64 outcomes: the last checkpoint holds them all and nothing is left for the final one.
    # An empty checkpoint followed by ``ls`` once made git read the ``ls`` as part of that
    # commit and die; the commit was then made afresh (same tree, a crash report, ~2x time).
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(64):
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
    if prepared:
        stream.prepare_finish()
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(64)]
    commit = stream.finish(files, message="m")
    assert commit is not None and stream.broken is None
    assert not list(Path(repo.git_dir()).glob("fast_import_crash_*"))
    names = subprocess.run(
        ["git", "--git-dir", repo.git_dir(), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(names) == sorted(f.repo_path for f in files)


async def test_a_hook_added_after_set_up_runs_after_the_commit_and_sees_its_branch(tmp_path: Path) -> None:
    # git finishes the commit while the run completes; a hook after the commit's must still
    # find the branch made (and the commit recorded in the metadata).
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


@pytest.mark.parametrize("hook_after", [False, True])
def test_an_unexpected_error_of_the_commit_is_a_hook_failure(tmp_path: Path, hook_after: bool) -> None:
    # Without an executor the whole commit is made when the run completes. An error it did
    # not expect (a node directory named in bytes that are not UTF-8) is the commit hook's
    # failure: logged, the hooks after it still run, the run recorded, the error raised.
    ran: list[str] = []
    ctx = RunContext("root", tmp_path)
    with pytest.raises(UnicodeEncodeError):
        with ctx:
            if hook_after:
                ctx.add_completion_hook(lambda c, status: ran.append(status.value))
            node = ctx.require_run_dir().path / os.fsdecode(b"n\xff")
            node.mkdir()
            (node / "outcome.json").write_text("1")
    assert ran == (["completed"] if hook_after else [])
    trace = ctx.require_run_dir().path / ".trace"
    assert json.loads((trace / "metadata.json").read_text())["status"] == "completed"
    logs = [json.loads(line) for line in (trace / "logs.jsonl").read_text().splitlines()]
    failures = [entry for entry in logs if entry.get("event") == "completion hook failed"]
    assert len(failures) == 1 and failures[0]["hook"] == "_commit_outcomes"
    assert logs[-1]["event"] == "run finished"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_run_whose_trace_cannot_be_finished_still_settles_its_commit_and_records_itself(tmp_path: Path) -> None:
    # git finishes the commit while the trace and metrics are written; when writing them
    # fails, its process must still be waited for, the commit recorded, and the run too.
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


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_a_commit_stream_whose_input_closes_at_the_end_is_reported_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The end of the commit fits in the pipe's buffer: the write succeeds, and the broken
    # pipe shows when it is closed. The stream is then broken (the caller commits afresh),
    # and its process is stopped and reaped.
    monkeypatch.setattr(outcome_repo, "_DIRECT_MAX", 0)  # git from the start
    repo = OutcomeRepository(tmp_path / "repo")
    repo.git_dir()
    fake = tmp_path / "bin"
    fake.mkdir()
    closed = tmp_path / "closed"
    # A "git" that closes its input at once and stays: git's own end, held open.
    (fake / "git").write_text(f"#!/bin/sh\nexec 0<&-\n: > '{closed}'\nexec sleep 60\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    before = _children()
    stream = repo.open_stream("r1")
    for _ in range(3000):  # the pipe's reader is gone only then
        if closed.exists():
            break
        time.sleep(0.01)
    wait = stream.begin_finish([OutcomeFile(tmp_path / "x", "root/outcome.json", data=b"1")], message="m")
    assert wait() is None
    assert stream.broken
    assert _children() - before == set()


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


@pytest.mark.usefixtures("fast_import_only")
def test_an_early_answer_for_one_top_directory_does_not_stand_for_a_commit_of_two(tmp_path: Path) -> None:
    # Outcomes under two top directories: the early ``ls`` names the first one only; the
    # commit (a tree of both) must not take it, and its own answer must still be found.
    repo = OutcomeRepository(tmp_path / "repo")
    stream = repo.open_stream("r1")
    for i in range(5):
        stream.add(f"root/n{i}/outcome.json", b"%d" % i)
        stream.add(f"other/m{i}/outcome.json", b"%d" % i)
    stream.prepare_finish()
    files = [OutcomeFile("", f"root/n{i}/outcome.json", data=b"%d" % i) for i in range(5)]
    files += [OutcomeFile("", f"other/m{i}/outcome.json", data=b"%d" % i) for i in range(5)]
    commit = stream.finish(files, message="m")
    assert commit is not None and len(commit) == 40
    names = subprocess.run(
        ["git", "--git-dir", repo.git_dir(), "ls-tree", "-r", "--name-only", commit],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(names) == sorted(f.repo_path for f in files)
    assert git.Repo(tmp_path / "repo").commit(commit).parents == ()


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
    from reprise.dsl.nodes.file_ops import CreateFile, FileOperationNode

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
    from reprise.dsl.nodes.file_ops import CreateFile, FileOperationNode

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
    from reprise.dsl.paths import git_path_problem

    assert git_path_problem(path) is None


@pytest.mark.parametrize("path", [*BAD_NAMES, "a//b", "./a", "a/../b", "/abs", "\udcff"])
def test_names_git_refuses_are_refused(path: str) -> None:
    from reprise.dsl.paths import git_path_problem

    assert git_path_problem(path) is not None
