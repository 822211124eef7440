"""reprise.init: the active run of a script, its lifecycle in real processes, names and config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import reprise
from reprise import Api, RepriseError, RunSetupError, RunStatus
from reprise.run._index import RunIndex
from reprise.tracking import current_run

SRC = str(Path(reprise.__file__).resolve().parent.parent)


def _script(tmp_path: Path, body: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``body`` as a script in ``tmp_path`` (its ./runs is the default run root)."""
    script = tmp_path / "train.py"
    script.write_text("import reprise, sys, time\n" + textwrap.dedent(body))
    full_env = {k: v for k, v in os.environ.items() if k != "REPRISE_RUN_ROOT"}
    full_env.update({"PYTHONPATH": SRC, **(env or {})})
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=full_env, capture_output=True, text=True, timeout=90
    )


def _only_run(run_root: Path) -> dict[str, Any]:
    runs = Api(run_root).runs()
    assert len(runs) == 1, runs
    return Api(run_root).metadata(runs[0].run_id)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- the lifecycle, in real processes ---------------------------------------------------------------


def test_with_block_completes_and_records_like_any_run(tmp_path: Path) -> None:
    proc = _script(
        tmp_path,
        """
        with reprise.init(project="cifar10-hparam-search", name="run-lr0.001", config={"lr": 0.001, "bs": 64}) as run:
            run.log("train_loss", 0.9)
            run.log("train_loss", 0.5, step=10)
            reprise.log({"val_loss": 0.7, "val_accuracy": 0.8})
            run.alert("High accuracy reached", "val_accuracy=0.8", level="info")
            print(run.run_id)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    run_root = tmp_path / "runs"
    meta = _only_run(run_root)
    assert meta["run_id"] == proc.stdout.strip()
    assert meta["status"] == "completed" and meta["error_msg"] is None
    assert (meta["name"], meta["project"], meta["config"]) == (
        "run-lr0.001",
        "cifar10-hparam-search",
        {"lr": 0.001, "bs": 64},
    )
    run_dir = run_root / meta["run_id"]
    metrics = _lines(run_dir / ".trace" / "user_metrics.jsonl")
    assert [(m["step"], m["metrics"]) for m in metrics] == [
        (0, {"train_loss": 0.9}),
        (10, {"train_loss": 0.5}),
        (11, {"val_loss": 0.7, "val_accuracy": 0.8}),
    ]
    assert [a["title"] for a in Api(run_root).alerts(run=meta["run_id"])] == ["High accuracy reached"]
    # A trace with the run's root span, OpenTelemetry metrics, and a git outcome branch holding
    # the config and the last value of each metric.
    assert (run_dir / ".trace" / "trace.jsonl").stat().st_size > 0
    assert "train_loss" in (run_dir / ".trace" / "metrics.jsonl").read_text()
    assert meta["outcome_branch"] == f"run/{meta['run_id']}"
    shown = subprocess.run(
        ["git", "-C", meta["outcome_repo"], "show", f"{meta['outcome_branch']}:cifar10_hparam_search/outcome.json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(shown.stdout) == {
        "config": {"lr": 0.001, "bs": 64},
        "metrics": {"train_loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.8},
    }
    # The index holds name, project and config too.
    (info,) = Api(run_root).runs("cifar10-hparam-search")
    assert (info.name, info.config, info.status) == ("run-lr0.001", {"lr": 0.001, "bs": 64}, RunStatus.COMPLETED)
    assert Api(run_root).elements(meta["run_id"]).status == "completed"


def test_uncaught_exception_records_failed_with_the_error(tmp_path: Path) -> None:
    proc = _script(
        tmp_path,
        """
        reprise.init(project="p")
        reprise.log({"loss": 12.5})
        raise ValueError("loss diverged at epoch 3")
        """,
    )
    assert proc.returncode == 1 and "ValueError" in proc.stderr
    meta = _only_run(tmp_path / "runs")
    assert meta["status"] == "failed"
    assert meta["error_msg"] == "ValueError: loss diverged at epoch 3"


def test_exception_in_with_block_fails_the_run(tmp_path: Path) -> None:
    proc = _script(
        tmp_path,
        """
        try:
            with reprise.init(project="p") as run:
                raise RuntimeError("out of memory")
        except RuntimeError:
            pass
        print(run.status.value)
        """,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "failed"
    assert _only_run(tmp_path / "runs")["error_msg"] == "RuntimeError: out of memory"


def test_exit_without_finish_is_recorded_by_the_exit_handler(tmp_path: Path) -> None:
    proc = _script(tmp_path, 'reprise.init(project="p", config={"epochs": 2})\nreprise.log({"loss": 1.0})\n')
    assert proc.returncode == 0, proc.stderr
    meta = _only_run(tmp_path / "runs")
    assert meta["status"] == "completed" and meta["ended_at"] is not None


@pytest.mark.parametrize(("code", "status"), [("sys.exit(3)", "failed"), ("sys.exit(0)", "completed")])
def test_sys_exit_in_the_block(tmp_path: Path, code: str, status: str) -> None:
    proc = _script(tmp_path, f'with reprise.init(project="p"):\n    {code}\n')
    assert proc.returncode == (3 if status == "failed" else 0)
    meta = _only_run(tmp_path / "runs")
    assert meta["status"] == status
    if status == "failed":
        assert meta["error_msg"] == "SystemExit: exit code 3"


def test_ctrl_c_records_cancelled(tmp_path: Path) -> None:
    proc = _script(tmp_path, 'reprise.init(project="p")\nraise KeyboardInterrupt\n')
    assert proc.returncode != 0
    assert _only_run(tmp_path / "runs")["status"] == "cancelled"


def test_killed_process_reads_crashed(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import reprise, sys, time\n"
        "run = reprise.init(project='p')\n"
        "reprise.alert('started', level='info')\n"
        "print(run.run_id, flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("REPRISE_RUN_ROOT", None)
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        api = Api(tmp_path / "runs")
        assert api.run(run_id).status is RunStatus.RUNNING
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert api.run(run_id).status is RunStatus.CRASHED
    assert [r.status for r in api.runs("p")] == [RunStatus.CRASHED]
    assert api.metadata(run_id)["status"] == "crashed"


def test_a_new_init_finishes_the_previous_run(tmp_path: Path) -> None:
    proc = _script(
        tmp_path,
        """
        first = reprise.init(project="sweep", config={"lr": 0.1})
        reprise.log({"loss": 3.0})
        second = reprise.init(project="sweep", config={"lr": 0.01})
        reprise.log({"loss": 1.0})
        print(first.status.value, first.run_id, second.run_id)
        second.finish()
        """,
    )
    assert proc.returncode == 0, proc.stderr
    status, first_id, second_id = proc.stdout.split()
    assert status == "completed"
    api = Api(tmp_path / "runs")
    assert {r.run_id: r.status.value for r in api.runs("sweep")} == {first_id: "completed", second_id: "completed"}
    assert [m["metrics"] for m in api.metrics(first_id)] == [{"loss": 3.0}]
    assert [m["metrics"] for m in api.metrics(second_id)] == [{"loss": 1.0}]


def test_run_root_from_environment(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    proc = _script(tmp_path, 'reprise.init(project="p").finish()\n', env={"REPRISE_RUN_ROOT": str(elsewhere)})
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "runs").exists()
    assert _only_run(elsewhere)["status"] == "completed"


# -- in this process ----------------------------------------------------------------------------


@dataclass
class TrainConfig:
    learning_rate: float
    optimizer: str = "adamw"


def test_current_run_of_the_process_reaches_other_threads(tmp_path: Path) -> None:
    run = reprise.init("threads", config=TrainConfig(0.001), run_root=tmp_path / "runs", outcome_repo=False)
    try:
        assert reprise.active_run() is run and current_run() is run.context
        worker = threading.Thread(target=lambda: reprise.log({"from_thread": 1}))
        worker.start()
        worker.join()
        with pytest.raises(RepriseError, match="needs a value"):
            run.log("loss")
        with pytest.raises(RepriseError, match="takes no value"):
            run.log({"loss": 1}, 2)
    finally:
        reprise.finish()
    assert reprise.active_run() is None and current_run() is None
    assert run.status is RunStatus.COMPLETED
    assert [m["metrics"] for m in Api(tmp_path / "runs").metrics(run.run_id)] == [{"from_thread": 1}]
    assert run.config == {"learning_rate": 0.001, "optimizer": "adamw"}
    with pytest.raises(RepriseError, match="no current run"):
        reprise.log({"after": 1})


def test_names_are_unique_within_a_project(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    with reprise.init("proj", name="baseline", run_root=root, outcome_repo=False):
        pass
    with pytest.raises(RunSetupError, match="already exists in project 'proj'"):
        reprise.init("proj", name="baseline", run_root=root, outcome_repo=False)
    assert reprise.active_run() is None
    with reprise.init("other", name="baseline", run_root=root, outcome_repo=False) as other:
        assert other.name == "baseline"
    with reprise.init("proj", run_root=root, outcome_repo=False) as drawn:
        parts = drawn.name.split("-")
        assert len(parts) == 3 and parts[2].isdigit()
    for bad in ("latest", "-2", "run_20250615_143000_abcdef", " padded", ""):
        with pytest.raises(RunSetupError):
            reprise.init("proj", name=bad, run_root=root, outcome_repo=False)
    with pytest.raises(RunSetupError, match=r"config\['loss'\]"):
        reprise.init("proj", config={"loss": float("nan")}, run_root=root, outcome_repo=False)
    assert [r.name for r in Api(root).runs("proj")] == [drawn.name, "baseline"]
    assert RunIndex(root).name_taken("other", "baseline")


def test_flow_runs_get_a_name_too(tmp_path: Path) -> None:
    flow = reprise.FlowDefinition().node("one", lambda: 1)
    ctx = reprise.RunContext(root_component_id="flow", project_root=tmp_path, outcome_repo=False)
    result = reprise.FlowRunner(flow, ctx).run_sync()
    (info,) = Api(tmp_path / "runs").runs("flow")
    assert info.run_id == result.run_id and info.name == ctx.name and info.project == "flow"
