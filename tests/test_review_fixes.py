"""Regression tests for problems found reviewing the per-node speed work (issue #7): node
directories written when a node finishes, the outcome commit through one fast-import."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from reprise.run.outcome_repo import collect_outcome_files

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
