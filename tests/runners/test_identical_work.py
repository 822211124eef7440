"""Identical work diffs empty: outcomes hold what a node produced, not how long it took nor where
its run lies, so ``reprise diff`` and ``git diff`` of two runs show only what really changed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
from examples.folder_report import SAMPLE_FOLDER, run_report

from reprise import FlowDefinition, FlowRunner, RunContext, RunResult
from reprise.nodes import CommandNode, CreateFile, FileOperationNode

PY = sys.executable
# Slow enough that two runs cannot take the same time, to the microsecond.
SLOW_ECHO = "import sys, time; time.sleep(0.05); print(open(sys.argv[1]).read().strip())"


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def changed(run_root: Path, a: RunResult, b: RunResult) -> list[str]:
    """What ``reprise diff`` reports changed between runs ``a`` and ``b``, checked against what
    ``git diff`` of their outcome branches says."""
    proc = subprocess.run(
        [PY, "-m", "reprise.cli", "diff", a.run_id, b.run_id, "--run-root", str(run_root), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    by_reprise = sorted(c["path"] for c in json.loads(proc.stdout)["data"])
    repo = _json(a.run_dir / ".trace" / "metadata.json")["outcome_repo"]
    by_git = subprocess.run(
        ["git", "-C", repo, "diff", "--name-only", f"run/{a.run_id}", f"run/{b.run_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert by_reprise == sorted(by_git)
    return by_reprise


def _command_flow(data: Path) -> FlowDefinition:
    return (
        FlowDefinition()
        .node("fixed", CommandNode([PY, "-c", SLOW_ECHO, str(data / "fixed.txt")]))
        .node("varies", CommandNode([PY, "-c", SLOW_ECHO, str(data / "varies.txt")]))
    )


def test_two_runs_of_the_same_commands_diff_empty_and_a_rerun_shows_only_its_change(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "fixed.txt").write_text("same\n")
    (data / "varies.txt").write_text("one\n")
    runs = tmp_path / "runs"
    flow = _command_flow(data)
    first = FlowRunner(flow, RunContext("flow", tmp_path, run_root=runs)).run_sync()
    second = FlowRunner(flow, RunContext("flow", tmp_path, run_root=runs)).run_sync()
    assert changed(runs, first, second) == []
    # The command's time is in result.json (and so in `reprise show`), not in the outcome.
    for run in (first, second):
        node_dir = run.run_dir / "flow" / "fixed"
        assert "duration_s" not in _json(node_dir / "outcome.json")
        result = _json(node_dir / "result.json")
        assert result["command_duration_s"] >= 0.05 and result["duration_s"] >= result["command_duration_s"]

    (data / "varies.txt").write_text("two\n")
    ctx = RunContext("flow", tmp_path, run_root=runs, previous_run_id=second.run_id, start_hierarchy_path="flow.varies")
    rerun = FlowRunner(flow, ctx).run_sync()
    assert rerun.outcome.stdout == "two\n"
    assert changed(runs, second, rerun) == ["flow/varies/outcome.json"]


def test_the_demo_run_and_its_rerun_diff_empty(tmp_path: Path) -> None:
    # `make demo` runs the example and re-runs it from its overall statistics, then suggests
    # diffing the two: the re-run changed nothing, so the diff must show nothing. Neither must
    # a second run of the same report.
    runs = tmp_path / "runs"
    first = anyio.run(run_report, SAMPLE_FOLDER, runs)
    again = anyio.run(run_report, SAMPLE_FOLDER, runs)

    async def rerun_from_overall() -> RunResult:
        return await run_report(
            SAMPLE_FOLDER, runs, previous_run_id=first.run_id, start_hierarchy_path="folder_report.analyse.overall"
        )

    rerun = anyio.run(rerun_from_overall)
    assert rerun.executed > 0
    assert changed(runs, first, rerun) == []
    assert changed(runs, first, again) == []


def test_two_runs_of_the_same_file_operations_in_their_node_directory_diff_empty(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    flow = FlowDefinition().node("edit", FileOperationNode([CreateFile(path="notes.md", content="# hi\n")]))
    first = FlowRunner(flow, RunContext("flow", tmp_path, run_root=runs)).run_sync()
    second = FlowRunner(flow, RunContext("flow", tmp_path, run_root=runs)).run_sync()
    assert changed(runs, first, second) == []
