"""``reprise experiment``: run, resume, compare, errors, and Ctrl-C on a real process (issue 8)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

FLOWS = """
import os
from pathlib import Path

import anyio

from reprise import FlowDefinition, Initial


async def answer(q: str) -> str:
    if q == "raise":
        raise ValueError("no answer")
    if q.startswith("slow") and Path(os.environ.get("SLOW_FLAG", "/nonexistent")).exists():
        await anyio.sleep(60)
    return q.upper()


flow = FlowDefinition("cli_flow").node("answer", answer, inputs={"q": Initial("q")})
"""


def reprise(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprise.cli", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def envelope(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cli_flows.py").write_text(FLOWS)
    (tmp_path / "inputs.jsonl").write_text(
        "".join(json.dumps({"id": q, "initial_inputs": {"q": q}}) + "\n" for q in ("a", "b", "raise"))
    )
    return tmp_path


def test_run_then_compare_with_json(project: Path) -> None:
    first = reprise(
        project,
        "experiment",
        "cli_flows:flow",
        "--inputs",
        "inputs.jsonl",
        "--iterations",
        "2",
        "--parallel",
        "2",
        "--name",
        "base",
        "--json",
        "--progress",
        "plain",
    )
    assert first.returncode == 1, first.stderr  # one input fails: exit code 1
    body = envelope(first)
    assert body["command"] == "experiment" and body["ok"] is True and body["error"] is None
    summary = body["data"]
    assert (summary["total"], summary["successes"], summary["failures"]) == (6, 4, 2)
    assert summary["folder"].startswith("base_")
    # Progress lines on stderr.
    assert "experiment base finished: [" + "\u2593" * 10 + "] 6/6 (100%), 2 failed" in first.stderr
    folder = project / "experiments" / summary["folder"]
    assert len((folder / "runs.jsonl").read_text().splitlines()) == 6
    assert (project / "runs").is_dir()  # the CLI's run root: ./runs

    (project / "inputs.jsonl").write_text(
        "".join(json.dumps({"id": q, "initial_inputs": {"q": q}}) + "\n" for q in ("a", "b"))
    )
    second = reprise(
        project,
        "experiment",
        "cli_flows.py:flow",
        "--inputs",
        "inputs.jsonl",
        "--name",
        "next",
        "--executor",
        "inline",
        "--progress",
        "none",
    )
    assert second.returncode == 0, second.stderr
    assert "experiment next_" in second.stdout and "2/2 runs, 2 completed, 0 failed (100.0%)" in second.stdout

    compared = reprise(project, "experiment", "compare", "base", "next", "--json")
    assert compared.returncode == 0, compared.stderr
    data = envelope(compared)["data"]
    assert data["a"]["success_rate"] == pytest.approx(4 / 6) and data["b"]["success_rate"] == 1.0
    assert data["changed"] == [] and data["only_in_a"] == ["raise"]
    text = reprise(project, "experiment", "compare", "base", "next")
    assert "success rate" in text.stdout and "66.7%" in text.stdout and "only in A: raise" in text.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment", "cli_flows:flow"], "no inputs file"),
        (["experiment", "cli_flows:nothing", "--inputs", "inputs.jsonl"], "has no attribute 'nothing'"),
        (["experiment", "cli_flows:flow", "--inputs", "missing.yaml"], "cannot read inputs file"),
        (["experiment", "cli_flows:flow", "--inputs", "inputs.jsonl", "--parallel", "0"], "--parallel must be > 0"),
        (["experiment", "cli_flows:flow", "--inputs", "inputs.jsonl", "--executor", "ftp://x"], "invalid Dask"),
        (["experiment", "resume", "nothing_here"], "no experiment named 'nothing_here'"),
        (["experiment", "compare", "a"], "the following arguments are required: B"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    project: Path, args: list[str], message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from reprise.cli import main

    # In this process (fast): keep the command's sys.path and module imports from leaking out.
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        assert main([*args, "--json"]) == 2
    finally:
        sys.modules.pop("cli_flows", None)
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.strip().splitlines()) == 1
    body = json.loads(captured.out)
    assert body["ok"] is False and message in body["error"]["message"]


def test_ctrl_c_then_resume(project: Path) -> None:
    (project / "inputs.jsonl").write_text(
        "".join(json.dumps({"id": q, "initial_inputs": {"q": q}}) + "\n" for q in ("fast", "slow1", "slow2", "last"))
    )
    flag = project / "slow.flag"
    flag.touch()
    env = {**os.environ, "SLOW_FLAG": str(flag)}
    process = subprocess.Popen(
        [sys.executable, "-m", "reprise.cli", "experiment", "cli_flows:flow", "--inputs", "inputs.jsonl",
         "--parallel", "2", "--name", "stopme", "--json", "--progress", "none"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Wait for "fast" to finish and both slow runs to be running, then Ctrl-C.
        deadline = time.monotonic() + 60
        while not (
            sum(len(p.read_text().splitlines()) for p in (project / "experiments").glob("*/runs.jsonl")) >= 1
            and sum('"running"' in p.read_text() for p in (project / "runs").glob("*/.trace/metadata.json")) >= 2
        ):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    summary = json.loads(stdout)["data"]
    assert summary["interrupted"] is True
    assert (summary["successes"], summary["cancelled"], summary["not_run"]) == (1, 2, 1)
    assert json.loads((project / "experiments" / summary["folder"] / "summary.json").read_text()) == summary

    flag.unlink()
    resumed = reprise(project, "experiment", "resume", "stopme", "--json", "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    after = envelope(resumed)["data"]
    assert after["folder"] == summary["folder"] and after["complete"] is True
    assert (after["finished"], after["successes"]) == (4, 4)
    lines = [json.loads(line) for line in (project / "experiments" / summary["folder"] / "runs.jsonl").open()]
    assert [line["input_id"] for line in lines if line["status"] == "completed"].count("fast") == 1


def test_an_experiment_run_can_be_resumed_by_run_id_alone(project: Path) -> None:
    (project / "inputs.jsonl").write_text(json.dumps({"id": "raise", "initial_inputs": {"q": "raise"}}) + "\n")
    first = reprise(project, "experiment", "cli_flows.py:flow", "--inputs", "inputs.jsonl", "--name", "tags", "--json")
    assert first.returncode == 1, first.stderr
    folder = project / "experiments" / envelope(first)["data"]["folder"]
    (line,) = [json.loads(x) for x in (folder / "runs.jsonl").read_text().splitlines()]
    meta = json.loads((project / "runs" / line["run_id"] / ".trace" / "metadata.json").read_text())
    assert meta["tags"]["reprise.target"] == f"{project / 'cli_flows.py'}:flow"
    # The failed item's run resumes without --target: the run's tags say what ran.
    resumed = reprise(project, "resume", line["run_id"], "--json")
    assert resumed.returncode == 1, resumed.stderr  # it ran, and the node fails again
    runs = [p for p in (project / "runs").iterdir() if p.name.startswith("tags_rerun_") or "rerun_" in p.name]
    (rerun,) = runs
    rerun_meta = json.loads((rerun / ".trace" / "metadata.json").read_text())
    assert rerun_meta["previous_run_id"] == line["run_id"] and rerun_meta["status"] == "failed"
