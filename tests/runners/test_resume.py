"""Resume after a real crash (issue 17, items 4 and 5).

Each test runs a flow of ``_resume_flows`` in a subprocess, waits until chosen nodes are
running (they block) and others completed, kills the process with SIGKILL, then resumes the
crashed run in the test's process and checks which node bodies ran: exactly those that had not
completed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from _resume_flows import FLOWS, blocked_marker, item_step, total
from reprise import FlowDefinition, FlowRunner, Ref, RerunError, RunContext, RunDirectory, RunResult, RunStatus, Var

MODES = pytest.mark.parametrize("mode", ["link", "copy"])

TESTS_DIR = Path(__file__).resolve().parents[1]


class KilledRun:
    """A flow of ``_resume_flows`` running in a subprocess, to be killed at a chosen moment."""

    def __init__(self, tmp_path: Path, flow: str, *, block: tuple[str, ...] = (), hook: str | None = None) -> None:
        self.project = tmp_path
        self.calls = tmp_path / "calls.log"
        path = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "RESUME_CALLS": str(self.calls), "RESUME_BLOCK": ",".join(block)}
        args = [sys.executable, "-m", "_resume_flows", flow, str(tmp_path), *([hook] if hook else [])]
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_for(self, *labels: str, results: tuple[str, ...] = ()) -> None:
        """Wait until the nodes ``labels`` block and the elements at ``results`` (relative
        directories in the run) have their ``result.json``."""
        deadline = time.monotonic() + 60
        while True:
            run = self._run_dir()
            if all(blocked_marker(self.calls, label).exists() for label in labels) and (
                run is not None and all(_completed(run / rel / "result.json") for rel in results)
            ):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"the run ended before it was killed: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the run did not get there in time"
            time.sleep(0.02)

    def kill(self) -> Path:
        """SIGKILL the run; returns its run directory (which reads ``crashed``)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        run = self._run_dir()
        assert run is not None
        assert RunDirectory(run).status() is RunStatus.CRASHED
        self.calls.unlink()
        return run

    def _run_dir(self) -> Path | None:
        runs = (
            [p for p in (self.project / "runs").glob("run_*") if p.is_dir()] if (self.project / "runs").exists() else []
        )
        assert len(runs) <= 1
        return runs[0] if runs else None


def _completed(result: Path) -> bool:
    try:
        return bool(json.loads(result.read_text())["status"] == "completed")
    except (FileNotFoundError, ValueError):
        return False  # not there yet, or being replaced


def resume(tmp_path: Path, flow: str, run: Path, mode: str, monkeypatch: pytest.MonkeyPatch) -> RunResult:
    monkeypatch.setenv("RESUME_CALLS", str(tmp_path / "calls.log"))
    monkeypatch.delenv("RESUME_BLOCK", raising=False)
    ctx = RunContext("root", tmp_path, previous_run_id=run.name, reused_nodes=mode)
    return FlowRunner(FLOWS[flow](), ctx).run_sync()


def calls(tmp_path: Path) -> Counter[str]:
    log = tmp_path / "calls.log"
    return Counter(log.read_text().split()) if log.exists() else Counter()


def git(tmp_path: Path, *args: str) -> str:
    git_dir = tmp_path / "runs" / "outcome" / tmp_path.name / ".git"
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, text=True, check=True).stdout


# -- item 4: resume executes exactly what did not complete -----------------------------------
@MODES
def test_resume_of_a_concurrent_loop_runs_only_the_unfinished_iteration(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two iterations at a time; killed while iteration 0's b runs, after 1, 2 and 3 completed
    # in the other slot. Before the fix the resume started at root.loop.0.b and ran every later
    # iteration again: b0 a1 b1 a2 b2 a3 b3.
    killed = KilledRun(tmp_path, "loop", block=("b0",))
    killed.wait_for("b0", results=("root/loop/1/b", "root/loop/2/b", "root/loop/3/b"))
    run = killed.kill()

    resumed = resume(tmp_path, "loop", run, mode, monkeypatch)
    assert resumed.status is RunStatus.COMPLETED
    assert calls(tmp_path) == Counter({"b0": 1, "z": 1})
    assert resumed.outcomes["root.loop"] == [0, 1, 2, 3] and resumed.outcomes["root.z"] == 6
    assert (resumed.executed, resumed.reused) == (2, 7)
    meta = RunDirectory(resumed.run_dir).read_metadata()
    assert meta.start_hierarchy_path == "root.loop.0.b"  # the first element that did not complete


@MODES
def test_resume_runs_every_unfinished_iteration_and_those_that_never_started(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed while b0 and b2 run (both slots busy), after iteration 1 completed; iteration 3
    # never started.
    killed = KilledRun(tmp_path, "loop", block=("b0", "b2"))
    killed.wait_for("b0", "b2", results=("root/loop/1/b",))
    run = killed.kill()

    resumed = resume(tmp_path, "loop", run, mode, monkeypatch)
    assert resumed.status is RunStatus.COMPLETED
    assert calls(tmp_path) == Counter({"b0": 1, "b2": 1, "a3": 1, "b3": 1, "z": 1})
    assert resumed.outcomes["root.z"] == 6


@MODES
def test_resume_of_parallel_blocks_and_sub_flows_in_a_concurrent_loop(
    tmp_path: Path, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each iteration: a parallel block, branch left a node x, branch right a sub-flow s -> t.
    # Killed while x0 and t2 run, after iteration 1, iteration 0's sub-flow, and x2 and s2
    # completed.
    killed = KilledRun(tmp_path, "nested", block=("x0", "t2"))
    killed.wait_for(
        "x0",
        "t2",
        results=(
            "root/loop/1/par",
            "root/loop/0/par/right/sub",
            "root/loop/2/par/left/x",
            "root/loop/2/par/right/sub/s",
        ),
    )
    run = killed.kill()

    resumed = resume(tmp_path, "nested", run, mode, monkeypatch)
    assert resumed.status is RunStatus.COMPLETED
    assert calls(tmp_path) == Counter({"x0": 1, "t2": 1})
    assert resumed.outcomes["root.loop"] == [{"left": i, "right": i} for i in range(3)]


def test_resume_refuses_a_definition_changed_where_it_would_reuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed while a0 runs, after iterations 1 to 3 completed; then a node y is inserted into
    # the loop body between a and b. The b of the completed iterations would now read from y,
    # so reusing them would be wrong: a resume reuses completed nodes anywhere, so the whole
    # definition must match. (Before, y came after the first unfinished element, root.loop.0.a,
    # so the change went through, and every iteration ran again.)
    killed = KilledRun(tmp_path, "loop", block=("a0",))
    killed.wait_for("a0", results=("root/loop/1/b", "root/loop/2/b", "root/loop/3/b"))
    run = killed.kill()
    monkeypatch.setenv("RESUME_CALLS", str(tmp_path / "calls.log"))
    body = (
        FlowDefinition()
        .node("a", item_step("a"), inputs={"n": Var("item")})
        .node("y", item_step("y"), inputs={"n": Ref("a")})
        .node("b", item_step("b"), inputs={"n": Ref("y")})
    )
    changed = (
        FlowDefinition()
        .for_each("loop", [0, 1, 2, 3], body, max_concurrency=2)
        .node("z", total, inputs={"values": Ref("loop")})
    )
    with pytest.raises(RerunError, match=r"a resume reuses .*root\.loop\.\*\.y is new"):
        FlowRunner(changed, RunContext("root", tmp_path, previous_run_id=run.name)).run_sync()
    assert calls(tmp_path) == Counter()
    assert [p.name for p in (tmp_path / "runs").glob("*run_*")] == [run.name]


# -- item 5: a run killed after its last node -------------------------------------------------
@MODES
@pytest.mark.parametrize("moment", ["before-records", "before-commit", "after-commit"])
def test_resume_completes_a_run_killed_after_its_last_node(
    tmp_path: Path, mode: str, moment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Killed in a completion hook: every node completed, the metadata still says running.
    # "before-commit" / "after-commit": the hook runs before / after the outcome commit's.
    # "before-records": killed a moment earlier, before the executor wrote the root's
    # result.json and .trace/outcomes.json. No hook runs there, and the window is far too small
    # to hit with a signal, so the state such a kill leaves is made from a run killed in its
    # first completion hook by removing the two files written after the last node.
    killed = KilledRun(tmp_path, "loop", hook="after-commit" if moment == "after-commit" else "before-commit")
    killed.wait_for("finishing")
    run = killed.kill()
    if moment == "before-records":
        (run / "root" / "result.json").unlink()
        (run / ".trace" / "outcomes.json").unlink()
    # The outcome repository is made by the first commit: killed before it, there is none.
    repo_made = (tmp_path / "runs" / "outcome" / tmp_path.name / ".git").exists()
    branches = git(tmp_path, "for-each-ref", "--format=%(refname)", "refs/heads/run") if repo_made else ""
    assert (f"refs/heads/run/{run.name}" in branches) is (moment == "after-commit")

    resumed = resume(tmp_path, "loop", run, mode, monkeypatch)
    assert resumed.status is RunStatus.COMPLETED
    assert calls(tmp_path) == Counter()  # nothing runs again
    assert resumed.outcomes["root.z"] == 6 and (resumed.executed, resumed.reused) == (0, 9)
    meta = RunDirectory(resumed.run_dir).read_metadata()
    assert meta.status is RunStatus.COMPLETED and meta.ended_at is not None
    assert meta.previous_run_id == run.name and meta.start_hierarchy_path is None
    assert json.loads((resumed.run_dir / ".trace/metadata.json").read_text())["resumed"] is True
    # The outcomes are committed once, on the resume's branch: one commit on top of the killed
    # run's (when it had made it), holding every outcome.
    branch = f"run/{resumed.run_id}"
    since = f"run/{run.name}..{branch}" if moment == "after-commit" else branch
    assert git(tmp_path, "rev-list", "--count", since).strip() == "1"
    tree = git(tmp_path, "ls-tree", "-r", "--name-only", branch).split()
    expected = {f"root/loop/{i}/{n}/outcome.json" for i in range(4) for n in "ab"} | {"root/z/outcome.json"}
    assert set(tree) == expected
    subprocess.run(
        ["git", "--git-dir", str(tmp_path / "runs" / "outcome" / tmp_path.name / ".git"), "fsck", "--strict"],
        capture_output=True,
        check=True,
    )
    # The resume completed: resuming it is the usual error.
    with pytest.raises(RerunError, match="nothing to resume"):
        resume(tmp_path, "loop", resumed.run_dir, mode, monkeypatch)


# -- a crash in the first node of a conditional branch --------------------------------------------
CONDITIONAL_CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from reprise import FlowDefinition, FlowRunner, RunContext, Ref

    log = Path(sys.argv[2])

    def step(name):
        def fn(n: int) -> int:
            with open(log, "a") as f:
                f.write(name + "\\n")
            if name == os.environ.get("KILL_AT"):
                os.kill(os.getpid(), signal.SIGKILL)
            return n + 1
        fn.__name__ = name
        return fn

    then = FlowDefinition().node("x", step("x"), inputs={"n": 1})
    flow = FlowDefinition().node("a", step("a"), inputs={"n": 0}).conditional("cond", True, then)
    prev = os.environ.get("PREVIOUS") or None
    result = FlowRunner(flow, RunContext("crash", sys.argv[1], previous_run_id=prev)).run_sync()
    print(result.run_id, result.status.value)
    """
)


def test_resume_after_a_sigkill_in_the_first_node_of_a_conditional_branch(tmp_path: Path) -> None:
    # The branch's directory appears only when a node in it finishes: a crash in its first node
    # leaves the conditional with neither a result.json nor a branch directory. Resume must still
    # find that the conditional did not complete, not report "nothing to resume".
    script = tmp_path / "crash.py"
    script.write_text(CONDITIONAL_CRASH_SCRIPT)
    log = tmp_path / "calls.log"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(log)],
        env={**os.environ, "KILL_AT": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (crashed,) = [p for p in (tmp_path / "runs").iterdir() if p.name.startswith("run_")]
    log.unlink()
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(log)],
        env={**os.environ, "PREVIOUS": crashed.name},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[1] == "completed"
    assert log.read_text().split() == ["x"]  # a was reused, x executed again
