"""Experiments on this machine (issue 8): folder format, isolation, timeouts, concurrency,
Ctrl-C, resume, compare, progress."""

from __future__ import annotations

import ctypes
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import anyio
import git
import pytest
import yaml

from reprise import FlowDefinition, Initial, NodeContext, RunFailedError
from reprise.experiments import (
    BarProgress,
    Experiment,
    ExperimentError,
    ExperimentFolder,
    ExperimentInputError,
    ItemResult,
    LineProgress,
    LocalExecutor,
    RunRecord,
    WorkerCrashedError,
    compare_experiments,
    format_comparison,
    load_inputs,
)
from reprise.experiments._item import root_cause

pytestmark = pytest.mark.anyio

FULL = "\u2593" * 10  # a full text progress bar


# -- flows (module level: worker processes import them as `test_experiment:<name>`) ---------
def greet(name: str, punctuation: str, ctx: NodeContext) -> str:
    # A model-like node: report usage and cost the way AI nodes do.
    ctx.annotate_result(usage={"input_tokens": 10, "output_tokens": len(name)}, cost_usd=0.001)
    return f"hello {name}{punctuation}"


greeter = FlowDefinition("greeter").node("greet", greet, inputs={"name": Initial("name"), "punctuation": "."})


async def misbehave(q: str) -> str:
    if q == "raise":
        raise ValueError("bad question")
    if q == "exit":
        os._exit(3)
    if q == "segfault":
        ctypes.string_at(0)
    if q == "sleep":
        await anyio.sleep(60)  # notices cancellation: the in-worker timeout stops it
    if q == "block":
        time.sleep(60)  # blocks the worker's event loop: only killing the process stops it
    return q.upper()


unruly = FlowDefinition("unruly").node("answer", misbehave, inputs={"q": Initial("q")})


async def occupy(q: str) -> int:
    """Counts how many items run at once, across processes, with marker files."""
    board = Path(os.environ["REPRISE_TEST_BOARD"])
    marker = board / f"{os.getpid()}-{q}"
    marker.touch()
    try:
        running = sum(1 for p in board.iterdir() if p.is_file())
        with open(board.parent / "seen.log", "a") as log:
            log.write(f"{running} {os.getpid()}\n")
        await anyio.sleep(0.2)
    finally:
        marker.unlink()
    return running


occupier = FlowDefinition("occupier").node("occupy", occupy, inputs={"q": Initial("q")})


def items(*names: str) -> list[dict[str, Any]]:
    return [{"id": n, "initial_inputs": {"q": n}} for n in names]


def lines_of(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]


def metadata(run_root: Path, run_id: str) -> dict[str, Any]:
    return json.loads((run_root / run_id / ".trace" / "metadata.json").read_text())


def branches(run_root: Path, project: Path) -> set[str]:
    repo = git.Repo(run_root / "outcome" / project.name)
    return {h.name for h in repo.heads}


# -- inputs ----------------------------------------------------------------------------------
def test_inputs_from_yaml_jsonl_and_json(tmp_path: Path) -> None:
    (tmp_path / "in.yaml").write_text(
        textwrap.dedent(
            """\
            - id: 7
              persona: novice
              tags: [smoke]
              initial_inputs: {name: Ada}
              static_inputs: {greet: {name: Bob, punctuation: "?"}}
            - initial_inputs: {name: Cy}
            """
        )
    )
    loaded = load_inputs(tmp_path / "in.yaml")
    assert [i.id for i in loaded] == ["7", "input-2"]
    assert loaded[0].persona == "novice" and loaded[0].tags == ["smoke"]
    assert loaded[0].static_inputs == {"greet": {"name": "Bob", "punctuation": "?"}}
    (tmp_path / "in.jsonl").write_text('{"id": "a", "initial_inputs": {"name": "A"}}\n\n{"initial_inputs": {}}\n')
    assert [i.id for i in load_inputs(tmp_path / "in.jsonl")] == ["a", "input-2"]
    (tmp_path / "in.json").write_text('{"inputs": [{"id": "x"}]}')
    assert [i.id for i in load_inputs(tmp_path / "in.json")] == ["x"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("dup.yaml", "- {id: a}\n- {id: a}\n", "item 2: duplicate input id 'a'"),
        ("typo.yaml", "- {id: a, initial_input: {}}\n", "item 1"),
        ("bad.jsonl", '{"id": "a"}\n{oops\n', "bad.jsonl:2: not valid JSON"),
        ("empty.yaml", "[]\n", "no inputs"),
        ("scalar.yaml", "just text\n", "expected a list"),
        ("in.csv", "a,b\n", "unknown inputs format"),
    ],
)
def test_invalid_inputs_name_the_file_and_item(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(ExperimentInputError) as info:
        load_inputs(tmp_path / name)
    assert message in str(info.value)
    assert name in str(info.value)


def test_settings_are_checked(tmp_path: Path) -> None:
    for kwargs in ({"iterations": 0}, {"max_concurrency": 0}, {"timeout": 0}, {"name": "../up"}):
        with pytest.raises(ExperimentError):
            Experiment(greeter, [{"id": "a"}], project_root=tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ExperimentError, match=r"items: \*args and \*\*kwargs cannot be node inputs"):
        Experiment("test_experiment:items", [{"id": "a"}], project_root=tmp_path)


# -- one experiment, end to end (inline) ---------------------------------------------------
async def test_inline_experiment_writes_its_folder_and_normal_runs(tmp_path: Path) -> None:
    inputs = [
        {"id": "ada", "initial_inputs": {"name": "Ada"}, "persona": "novice", "tags": ["a", "b"]},
        {
            "id": "static",
            "initial_inputs": {"name": "x"},
            "static_inputs": {"greet": {"name": "Bo", "punctuation": "?"}},
        },
    ]
    seen: list[ItemResult] = []
    experiment = Experiment(
        greeter, inputs, iterations=2, project_root=tmp_path, executor=LocalExecutor("inline"), on_result=seen.append
    )
    summary = await experiment.run()

    folder = Path(summary.path)
    assert folder.parent == tmp_path / "experiments"
    assert ExperimentFolder(folder).name == "greeter" and folder.name.startswith("greeter_")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.yaml",
        "errors.json",
        "inputs.jsonl",
        "runs.jsonl",
        "summary.json",
        "trace_summary.jsonl",
    ]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["target"] == "test_experiment:greeter"
    assert config["iterations"] == 2 and config["total_runs"] == 4 and config["max_concurrency"] == 4
    assert config["executor"] == {"kind": "local", "isolation": "inline", "workers": None, "max_items_per_worker": 1000}

    lines = lines_of(folder)
    assert sorted((line["input_id"], line["iteration"]) for line in lines) == [
        ("ada", 1),
        ("ada", 2),
        ("static", 1),
        ("static", 2),
    ]
    by_input = {line["input_id"]: line for line in lines}
    assert by_input["ada"]["outcome"] == "hello Ada." and by_input["ada"]["persona"] == "novice"
    assert by_input["static"]["outcome"] == "hello Bo?"  # the static input beat the binding
    assert by_input["ada"]["tokens"] == 13 and by_input["ada"]["cost_usd"] == pytest.approx(0.001)
    assert all(line["status"] == "completed" and line["duration_s"] > 0 for line in lines)
    assert len(seen) == 4 and all(r.error is None for r in seen)

    # Each line is a normal run: its directory, tags and git branch.
    run_root = tmp_path / "runs"
    for line in lines:
        meta = metadata(run_root, line["run_id"])
        assert meta["status"] == "completed"
        assert line["run_id"].startswith("greeter_run_")
        assert meta["tags"]["experiment"] == "greeter"
        assert meta["tags"]["input_id"] == line["input_id"]
        assert meta["tags"]["iteration"] == str(line["iteration"])
        assert meta["tags"]["experiment_folder"] == folder.name
    assert metadata(run_root, by_input["ada"]["run_id"])["tags"]["input_tags"] == "a,b"
    assert branches(run_root, tmp_path) == {f"run/{line['run_id']}" for line in lines}

    on_disk = json.loads((folder / "summary.json").read_text())
    assert on_disk == summary.model_dump(mode="json")
    assert summary.total == summary.finished == summary.successes == 4
    assert summary.success_rate == 1.0 and summary.failures == 0 and summary.not_run == 0
    assert summary.tokens == 2 * (13 + 12) and summary.cost_usd == pytest.approx(0.004)
    assert summary.duration_p50_s is not None and summary.duration_p95_s is not None
    assert summary.duration_p50_s <= summary.duration_p95_s
    assert summary.complete and not summary.interrupted
    assert json.loads((folder / "errors.json").read_text()) == {"errors": [], "count": 0, "by_type": {}}


# -- isolation: exceptions, crashes and timeouts fail one item only ---------------------------
async def test_process_isolation_survives_exceptions_crashes_and_timeouts(tmp_path: Path) -> None:
    seen: list[ItemResult] = []
    experiment = Experiment(
        unruly,
        items("ok", "raise", "exit", "segfault", "sleep", "block", "fine"),
        project_root=tmp_path,
        max_concurrency=3,
        timeout=0.5,
        on_result=seen.append,
    )
    summary = await experiment.run()

    lines = {line["input_id"]: line for line in lines_of(Path(summary.path))}
    status = {k: v["status"] for k, v in lines.items()}
    assert status == {
        "ok": "completed",
        "fine": "completed",
        "raise": "failed",
        "exit": "crashed",
        "segfault": "crashed",
        "sleep": "timeout",
        "block": "timeout",
    }
    assert lines["ok"]["outcome"] == "OK"
    assert (lines["raise"]["error_type"], lines["raise"]["error_message"]) == ("ValueError", "bad question")
    assert lines["raise"]["error_path"] == "unruly.answer"
    assert lines["exit"]["error_message"] == "worker process exited with code 3"
    assert lines["segfault"]["error_message"] == "worker process killed by signal SIGSEGV"
    assert lines["block"]["error_message"] == "timed out after 0.5s; worker process killed"
    assert lines["sleep"]["error_message"] == "timed out after 0.5s"

    assert (summary.finished, summary.successes, summary.failures) == (7, 2, 5)
    assert summary.by_status == {"completed": 2, "crashed": 2, "failed": 1, "timeout": 2}
    errors = json.loads((Path(summary.path) / "errors.json").read_text())
    assert errors["count"] == 5
    assert errors["by_type"] == {"ItemTimeoutError": 2, "ValueError": 1, "WorkerCrashedError": 2}
    # The segfault's Python stack is in the workers' log.
    assert "string_at" in (Path(summary.path) / "workers.log").read_text()

    # Every item is a run with a final status and a git branch, crashed ones included.
    run_root = tmp_path / "runs"
    run_status = {k: metadata(run_root, v["run_id"])["status"] for k, v in lines.items()}
    assert run_status == {
        "ok": "completed",
        "fine": "completed",
        "raise": "failed",
        "exit": "crashed",
        "segfault": "crashed",
        "sleep": "cancelled",
        "block": "cancelled",
    }
    assert branches(run_root, tmp_path) == {f"run/{v['run_id']}" for v in lines.values()}

    # Errors come back from the worker processes with their original types.
    errors_by_input = {r.record.input_id: r.error for r in seen}
    failed = errors_by_input["raise"]
    assert isinstance(failed, RunFailedError) and failed.path == "unruly.answer"
    assert isinstance(root_cause(failed), ValueError)
    assert isinstance(errors_by_input["exit"], WorkerCrashedError)


async def test_inline_isolation_times_out_items_that_await(tmp_path: Path) -> None:
    summary = await Experiment(
        unruly, items("ok", "sleep"), project_root=tmp_path, timeout=0.2, executor=LocalExecutor("inline")
    ).run()
    assert {line["input_id"]: line["status"] for line in lines_of(Path(summary.path))} == {
        "ok": "completed",
        "sleep": "timeout",
    }


# -- max_concurrency is honoured ---------------------------------------------------------------
@pytest.mark.parametrize("isolation", ["inline", "process"])
async def test_max_concurrency_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolation: str, anyio_backend: str
) -> None:
    if isolation == "process" and anyio_backend == "trio":
        pytest.skip("worker processes are covered on asyncio here and on trio in the isolation test")
    board = tmp_path / "board"
    board.mkdir()
    monkeypatch.setenv("REPRISE_TEST_BOARD", str(board))
    summary = await Experiment(
        occupier,
        items(*(f"q{i}" for i in range(8))),
        project_root=tmp_path,
        max_concurrency=3,
        outcome_repo=False,
        executor=LocalExecutor(isolation),  # type: ignore[arg-type]
    ).run()
    assert summary.successes == 8
    seen = [line.split() for line in (tmp_path / "seen.log").read_text().splitlines()]
    most = max(int(count) for count, _ in seen)
    assert most <= 3  # never more than max_concurrency at once ...
    assert most >= 2  # ... and items really ran side by side
    if isolation == "process":
        assert len({pid for _, pid in seen}) <= 3  # a pool of max_concurrency workers, reused


async def test_worker_processes_are_replaced_after_max_items(tmp_path: Path, anyio_backend: str) -> None:
    if anyio_backend == "trio":
        pytest.skip("process recycling does not depend on the backend")
    summary = await Experiment(
        greeter,
        [{"id": f"n{i}", "initial_inputs": {"name": str(i)}} for i in range(4)],
        project_root=tmp_path,
        max_concurrency=1,
        outcome_repo=False,
        executor=LocalExecutor(max_items_per_worker=2),
    ).run()
    assert summary.successes == 4
    workers = [line["worker"] for line in lines_of(Path(summary.path))]
    assert workers[0] == workers[1] != workers[2] == workers[3]


async def test_a_target_without_import_reference_is_pickled_for_workers(tmp_path: Path) -> None:
    factor = 3
    local_flow = FlowDefinition("local").node("triple", lambda x: x * factor, inputs={"x": Initial("x")})
    summary = await Experiment(
        local_flow, [{"id": "one", "initial_inputs": {"x": 2}}], project_root=tmp_path, outcome_repo=False
    ).run()
    line = lines_of(Path(summary.path))[0]
    assert (line["status"], line["outcome"]) == ("completed", 6)
    assert yaml.safe_load((Path(summary.path) / "config.yaml").read_text())["target"] is None


# -- Ctrl-C, then resume -----------------------------------------------------------------------
SIGINT_FLOWS = """
import os
from pathlib import Path

import anyio

from reprise import FlowDefinition, Initial


async def work(q: str) -> str:
    if q.startswith("slow") and Path(os.environ["SLOW_FLAG"]).exists():
        await anyio.sleep(60)
    return q.upper()


flow = FlowDefinition("sigint").node("work", work, inputs={"q": Initial("q")})
"""

SIGINT_SCRIPT = """
import sys

import anyio

from sigint_flows import flow
from reprise.experiments import Experiment

items = [{"id": q, "initial_inputs": {"q": q}} for q in ["fast1", "slow1", "slow2", "fast2", "fast3"]]
experiment = Experiment(flow, items, project_root=sys.argv[1], max_concurrency=2, outcome_repo=False)
try:
    anyio.run(experiment.run)
except KeyboardInterrupt:
    sys.exit(130)
"""


async def test_ctrl_c_writes_the_summary_and_resume_finishes_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, anyio_backend: str
) -> None:
    if anyio_backend == "trio":
        pytest.skip("the interrupted process runs on asyncio whatever the test backend: once is enough")
    (tmp_path / "sigint_flows.py").write_text(SIGINT_FLOWS)
    (tmp_path / "script.py").write_text(SIGINT_SCRIPT)
    flag = tmp_path / "slow.flag"
    flag.touch()
    env = {
        **os.environ,
        "SLOW_FLAG": str(flag),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    process = subprocess.Popen([sys.executable, str(tmp_path / "script.py"), str(tmp_path)], env=env)
    try:
        # fast1 finishes; slow1 and slow2 then hold both slots: wait for that, then Ctrl-C.
        deadline = time.monotonic() + 60
        runs_files = list((tmp_path / "experiments").glob("*/runs.jsonl"))
        while not (runs_files and runs_files[0].read_text().count("\n") >= 1):
            assert process.poll() is None and time.monotonic() < deadline
            await anyio.sleep(0.05)
            runs_files = list((tmp_path / "experiments").glob("*/runs.jsonl"))
        running = 0
        while running < 2:
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)
            running = sum(1 for p in (tmp_path / "runs").glob("*/.trace/metadata.json") if '"running"' in p.read_text())
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130
    folder = runs_files[0].parent
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["complete"] is False
    assert summary["successes"] == 1 and summary["cancelled"] == 2 and summary["not_run"] == 2
    lines = lines_of(folder)
    assert {(line["input_id"], line["status"]) for line in lines} == {
        ("fast1", "completed"),
        ("slow1", "cancelled"),
        ("slow2", "cancelled"),
    }
    # The cancelled runs recorded themselves as cancelled in their worker processes.
    for line in lines:
        if line["status"] == "cancelled":
            assert metadata(tmp_path / "runs", line["run_id"])["status"] == "cancelled"

    # A session killed mid-write leaves half a line: resume must not glue onto it.
    with open(folder / "runs.jsonl", "a") as f:
        f.write('{"input_id": "half')
    flag.unlink()
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SLOW_FLAG", str(flag))
    resumed = await Experiment.resume(folder, executor=LocalExecutor("inline"))
    assert resumed.complete and not resumed.interrupted
    assert (resumed.finished, resumed.successes, resumed.cancelled, resumed.not_run) == (5, 5, 0, 0)
    final = list(ExperimentFolder(folder).iter_lines())
    completed = [line["input_id"] for line in final if line["status"] == "completed"]
    assert sorted(completed) == ["fast1", "fast2", "fast3", "slow1", "slow2"]  # fast1 ran once only
    again = await Experiment.resume(folder, executor=LocalExecutor("inline"))
    assert again.finished == 5 and len((folder / "runs.jsonl").read_text().splitlines()) == len(final) + 1


# -- compare -----------------------------------------------------------------------------------
VARIANT = {"q2": "changed", "q3": "raise"}


def variant_answer(q: str) -> str:
    if VARIANT.get(q) == "raise" and os.environ.get("REPRISE_VARIANT") == "b":
        raise ValueError("now failing")
    if VARIANT.get(q) == "changed" and os.environ.get("REPRISE_VARIANT") == "b":
        return "something else"
    return q.upper()


variant = FlowDefinition("variant").node("answer", variant_answer, inputs={"q": Initial("q")})


async def test_compare_shows_figures_and_inputs_that_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    common: dict[str, Any] = {"project_root": tmp_path, "executor": LocalExecutor("inline"), "outcome_repo": False}
    monkeypatch.setenv("REPRISE_VARIANT", "a")
    a = await Experiment(variant, items("q1", "q2", "q3", "only_a"), iterations=2, name="va", **common).run()
    monkeypatch.setenv("REPRISE_VARIANT", "b")
    b = await Experiment(variant, items("q1", "q2", "q3", "only_b"), iterations=2, name="vb", **common).run()

    comparison = compare_experiments(ExperimentFolder(Path(a.path)), ExperimentFolder(Path(b.path)))
    assert comparison.a.success_rate == 1.0 and comparison.b.success_rate == 0.75
    assert comparison.a.runs == comparison.b.runs == 8
    changed = {c.input_id: c for c in comparison.changed}
    assert set(changed) == {"q2", "q3"} and comparison.unchanged == 1
    assert changed["q2"].outcome_changed and not changed["q2"].status_changed
    assert changed["q2"].a_example == '"Q2"' and changed["q2"].b_example == '"something else"'
    assert changed["q3"].status_changed and (changed["q3"].b_successes, changed["q3"].b_runs) == (0, 2)
    assert comparison.only_in_a == ["only_a"] and comparison.only_in_b == ["only_b"]
    text = format_comparison(comparison)
    assert "success rate" in text and "100.0%" in text and "75.0%" in text
    assert "q3: success 2/2 -> 0/2" in text and "inputs that changed outcome: 2 of 3" in text


# -- progress ----------------------------------------------------------------------------------
def test_progress_lines_and_bar() -> None:
    record = RunRecord(input_id="a", iteration=1, status="failed")
    out = io.StringIO()
    lines = LineProgress(out)
    lines.start("exp", 2, 0, 0)
    lines.advance(record)
    lines.advance(record.model_copy(update={"status": "completed"}))
    lines.finish(False)
    text = out.getvalue()
    assert "experiment exp: 2 runs" in text and f"[{FULL}] 2/2 (100%), 1 failed" in text and "exp finished" in text

    screen = io.StringIO()
    bar = BarProgress(screen, force_terminal=True)
    bar.start("exp", 4, 2, 1)
    bar.advance(record)
    bar.finish(True)
    drawn = screen.getvalue()
    assert "\x1b[" in drawn  # drawn for a terminal
    assert "3/4" in drawn and "75%" in drawn and "2 failed" in drawn and "exp (interrupted)" in drawn
