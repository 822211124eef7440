"""The run directory: layout and files, atomic writes, statuses and crash detection."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import reprise
from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext, RunSetupError, RunStatus, Var
from reprise.run import RunDirectory
from reprise.run._files import read_json, write_json_atomic
from reprise.run._status import HOST, process_alive, process_start_marker


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def words(text: str) -> int:
    return len(text.split())


def total(counts: list[int]) -> int:
    return sum(counts)


def test_layout_mirrors_hierarchy_paths(tmp_path: Path) -> None:
    body = FlowDefinition().node("count", words, inputs={"text": Var("item")})
    flow = (
        FlowDefinition()
        .node("load", lambda texts: texts, inputs={"texts": Initial("texts")})
        .for_each("per_text", Ref("load"), body, max_iterations=10)
        .parallel(
            "stats",
            {
                "sum": FlowDefinition().node("total", total, inputs={"counts": Ref("per_text")}),
                "max": _largest_flow(),
            },
        )
        .conditional("check", True, FlowDefinition().node("ok", lambda: "ok"))
    )
    ctx = RunContext(root_component_id="report", project_root=tmp_path, initial_inputs={"texts": ["a b", "c"]})
    result = FlowRunner(flow, ctx).run_sync()
    run = result.run_dir
    assert run == tmp_path.resolve() / "runs" / result.run_id

    nodes = [
        "report/load",
        "report/per_text/0/count",
        "report/per_text/1/count",
        "report/stats/sum/total",
        "report/stats/max/largest",
        "report/check/then/ok",
    ]
    for node in nodes:
        for name in ("input.json", "outcome.json", "result.json"):
            assert (run / node / name).is_file(), f"{node}/{name}"
        res = _json(run / node / "result.json")
        assert res["path"] == node.replace("/", ".")
        assert res["status"] == "completed" and res["element_type"] == "node"
        assert set(res) >= {"started_at", "ended_at", "duration_s", "attempts", "node_kind", "reused"}
        assert res["duration_s"] >= 0
    # Composite elements get a result.json of their own (no input or outcome file).
    for composite, kind in [
        ("report", "flow"),
        ("report/per_text", "loop"),
        ("report/stats", "parallel"),
        ("report/stats/sum", "branch"),
        ("report/check", "conditional"),
    ]:
        res = _json(run / composite / "result.json")
        assert (res["element_type"], res["status"]) == (kind, "completed")
        assert not (run / composite / "input.json").exists()
    assert _json(run / "report/per_text/1/count/input.json") == {"text": "c"}
    assert _json(run / "report/stats/sum/total/outcome.json") == 3

    trace = run / ".trace"
    assert {"metadata.json", "trace.jsonl", "metrics.jsonl", "logs.jsonl"} <= {p.name for p in trace.iterdir()}
    meta = _json(trace / "metadata.json")
    assert meta["run_id"] == result.run_id
    assert meta["root_component_id"] == "report"
    assert meta["status"] == "completed"
    assert meta["started_at"] <= meta["ended_at"]
    assert meta["duration_s"] >= 0
    assert meta["pid"] == os.getpid() and meta["host"] == HOST
    assert meta["reprise_version"] == reprise.__version__
    assert meta["previous_run_id"] is None and meta["start_hierarchy_path"] is None
    assert (run / "static_inputs" / "static_inputs.json").is_file()
    assert _json(run / "static_inputs" / "initial_inputs.json") == {"texts": ["a b", "c"]}
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in run.rglob("*.tmp")]

    directory = RunDirectory.find(tmp_path / "runs", result.run_id)
    assert directory.read_outcome(reprise.HierarchyPath("report.per_text.0.count")) == 2
    assert directory.read_result(reprise.HierarchyPath("report.nothing")) is None
    assert directory.read_metadata().status is RunStatus.COMPLETED


def _largest_flow() -> FlowDefinition:
    return FlowDefinition().node("largest", _largest, inputs={"counts": Ref("per_text")})


def _largest(counts: list[int]) -> int:
    return max(counts)


def test_find_rejects_bad_and_unknown_run_ids(tmp_path: Path) -> None:
    with pytest.raises(RunSetupError, match="is not a run id"):
        RunDirectory.find(tmp_path, "../../etc")
    with pytest.raises(RunSetupError, match="no run 'run_20240101_000000_abcdef'"):
        RunDirectory.find(tmp_path, "run_20240101_000000_abcdef")
    with pytest.raises(RunSetupError, match="not a run directory"):
        RunDirectory(tmp_path).read_metadata()


# -- atomic writes -------------------------------------------------------------------------------


def _payload(tag: str) -> dict[str, Any]:
    # Big enough that a plain write() would be visible half-done to a concurrent reader.
    return {"tag": tag, "data": [tag * 40] * 4000}


def _hammer(path: Path, stop: threading.Event, seen: list[str], torn: list[str]) -> None:
    while not stop.is_set():
        try:
            data = read_json(path)
        except FileNotFoundError:
            torn.append("missing")  # a rename never leaves the path absent
            continue
        except ValueError as exc:
            torn.append(str(exc))
            continue
        seen.append(data["tag"])


def test_reader_never_sees_a_torn_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, _payload("a"))
    stop = threading.Event()
    seen: list[str] = []
    torn: list[str] = []
    reader = threading.Thread(target=_hammer, args=(path, stop, seen, torn))
    reader.start()
    try:
        for i in range(300):
            write_json_atomic(path, _payload("ab"[i % 2]))
    finally:
        stop.set()
        reader.join()
    assert torn == []
    assert seen, "the reader never read the file"
    assert not list(tmp_path.glob(".*.tmp"))


def test_concurrent_writers_in_one_process_never_tear_a_file(tmp_path: Path) -> None:
    # Two threads of one process rewriting the same file (e.g. a node thread and the loop).
    path = tmp_path / "metadata.json"
    write_json_atomic(path, _payload("a"))
    stop = threading.Event()
    seen: list[str] = []
    torn: list[str] = []
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for _ in range(200):
                write_json_atomic(path, _payload(tag))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=_hammer, args=(path, stop, seen, torn))
    writers = [threading.Thread(target=writer, args=(tag,)) for tag in ("x", "y")]
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert errors == []
    assert torn == []
    assert read_json(path)["tag"] in ("x", "y")
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "outcome.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": _Unserialisable()})
    assert read_json(path) == {"v": 1}
    assert not list(tmp_path.glob(".*.tmp"))


class _Unserialisable:
    def __str__(self) -> str:
        raise TypeError("cannot be written")


# -- statuses and crash detection ----------------------------------------------------------------

_SET_UP_AND_WAIT = """
import sys, time
from pathlib import Path
from reprise import RunContext

ctx = RunContext(root_component_id="agent", project_root=Path(sys.argv[1]))
ctx.setup_run()
print(ctx.run_id, flush=True)
time.sleep(120)
"""


def test_a_killed_run_reads_as_crashed(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", _SET_UP_AND_WAIT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        run_id = proc.stdout.readline().strip()
        run = RunDirectory.find(tmp_path / "runs", run_id)
        assert run.read_metadata().pid == proc.pid
        assert run.status() is RunStatus.RUNNING  # its process is alive
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # The metadata still says running (nobody could write anything else) ...
    assert run.read_metadata().status is RunStatus.RUNNING
    # ... but the process is gone, so the run reads as crashed.
    assert run.status() is RunStatus.CRASHED


def test_finished_runs_keep_their_status_after_the_process_is_gone(tmp_path: Path) -> None:
    script = (
        "import sys; from reprise import RunContext\n"
        "ctx = RunContext(root_component_id='agent', project_root=sys.argv[1]); ctx.setup_run()\n"
        "ctx.complete_run('failed', error_msg='bad input'); print(ctx.run_id)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    run = RunDirectory.find(tmp_path / "runs", out.stdout.strip())
    assert run.status() is RunStatus.FAILED


def test_process_alive_rules() -> None:
    me = os.getpid()
    assert process_alive(me, HOST, process_start_marker(me))
    # Same pid but another start time: the pid was recycled by another process.
    assert not process_alive(me, HOST, "not-the-same-start")
    # A process on another host cannot be checked, so it is assumed alive.
    assert process_alive(999_999_999, "some-other-host", None)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not process_alive(int(finished.stdout), HOST, None)


def test_statuses() -> None:
    assert [s.value for s in RunStatus] == ["running", "completed", "failed", "cancelled", "crashed"]
    assert not RunStatus.RUNNING.finished
    assert all(s.finished for s in RunStatus if s is not RunStatus.RUNNING)
