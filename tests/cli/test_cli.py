"""The `reprise` command, run for real in subprocesses against real runs in a temporary project."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from _cli_flows import FLOWS


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cli_flows.py").write_text(FLOWS)
    return tmp_path


def reprise_cmd(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "reprise.cli", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
    )


def envelope(proc: subprocess.CompletedProcess[str], command: str, *, ok: bool = True) -> Any:
    """The parsed --json envelope; checks its shape."""
    assert proc.stdout.count("\n") == 1, proc.stdout  # exactly one JSON document, one line
    env = json.loads(proc.stdout)
    assert set(env) == {"command", "query", "ok", "data", "error"}
    assert env["command"] == command
    assert env["ok"] is ok, (proc.stdout, proc.stderr)
    if ok:
        assert env["error"] is None
    else:
        assert env["error"]["message"]
    return env


def one_line_error(proc: subprocess.CompletedProcess[str], command: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"reprise {command}: error: "), proc.stderr
    return lines[0]


def run_json(project: Path, *args: str) -> dict[str, Any]:
    proc = reprise_cmd(project, *args, "--json")
    data: dict[str, Any] = envelope(proc, args[0], ok=True)["data"]
    return data


def test_run_runs_show_trace_logs(project: Path) -> None:
    proc = reprise_cmd(project, "run", "cli_flows:flow", "--input", "n=3", "--input", "factor=5", "--json")
    assert proc.returncode == 0, proc.stderr
    env = envelope(proc, "run")
    assert env["query"]["target"] == "cli_flows:flow"
    assert env["query"]["inputs"] == ["n=3", "factor=5"]
    assert env["query"]["run_root"] == str(project / "runs")
    run = env["data"]
    assert run["status"] == "completed" and run["root_component_id"] == "flow"
    assert run["executed"] == 3 and run["reused"] == 0
    assert run["outcome"] == {"y": 20}
    assert Path(run["run_dir"]) == project / "runs" / run["run_id"]
    # Progress went to stderr, one line per node (stderr is not a terminal here).
    assert f"run {run['run_id']} started" in proc.stderr
    assert "completed flow.double" in proc.stderr

    # Human output: the three lines people read.
    text = reprise_cmd(project, "run", "cli_flows:flow", "--input", "n=1", "--progress", "none")
    assert text.returncode == 0 and text.stderr == ""
    assert [line.split()[0] for line in text.stdout.splitlines()] == ["run", "status", "run"]
    assert "completed (3 executed, 0 reused)" in text.stdout

    # The read commands are independent: run them a few at a time.
    rid = run["run_id"]
    reads = {
        "runs": ("runs", "--json"),
        "show": ("show", rid, "--json"),
        "show_text": ("show", rid),
        "trace": ("trace", rid, "--json"),
        "trace_text": ("trace", rid),
        "logs": ("logs", rid, "--node", "flow.double", "--json"),
        "logs_error": ("logs", rid, "--level", "error", "--json"),
        "metrics": ("metrics", rid, "--json"),
        "alerts": ("alerts", "--run", rid, "--json"),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        done = dict(zip(reads, pool.map(lambda args: reprise_cmd(project, *args), reads.values()), strict=True))
    got = {key: envelope(proc, reads[key][0])["data"] for key, proc in done.items() if "--json" in reads[key]}

    runs = got["runs"]
    assert len(runs) == 2 and runs[1]["run_id"] == rid
    assert runs[1]["tags"]["reprise.target"] == "cli_flows:flow"

    shown = got["show"]
    assert shown["run"]["status"] == "completed"
    assert shown["totals"] == {
        "nodes": 3, "executed": 3, "reused": 0, "failed": 0,
        "input_tokens": 120, "output_tokens": 30, "cost": 0.0025,
    }  # fmt: skip
    tree = shown["tree"]
    assert tree["path"] == "flow" and [c["name"] for c in tree["children"]] == ["fetch", "double", "report"]
    double = tree["children"][1]
    assert (double["status"], double["input_tokens"], double["cost"], double["node_kind"]) == (
        "completed", 120, 0.0025, "python",
    )  # fmt: skip
    show_text = done["show_text"].stdout
    assert "├── double" in show_text and "$0.0025" in show_text and "120/30" in show_text

    paths = {s["attributes"].get("reprise.hierarchy_path") for s in got["trace"]}
    assert {"flow", "flow.fetch", "flow.double", "flow.report"} <= paths
    trace_text = done["trace_text"].stdout
    assert "flow.double" in trace_text and trace_text.index("flow.fetch") < trace_text.index("flow.report")

    logs = got["logs"]
    assert logs and all(line["hierarchy_path"] == "flow.double" for line in logs)
    assert any(line["event"] == "alert" and line["alert_title"] == "Doubled" for line in logs)
    assert got["logs_error"] == []

    assert [m["metrics"] for m in got["metrics"]] == [{"n": 3}]
    alerts = got["alerts"]
    assert [(a["title"], a["text"], a["hierarchy_path"]) for a in alerts] == [
        ("Doubled", "x=4 factor=5", "flow.double")
    ]

    page = run_json(project, "view", run["run_id"])
    assert Path(page["path"]).read_text().lstrip().lower().startswith("<!doctype html")


def test_failed_run_resume_rerun_and_diff(project: Path) -> None:
    proc = reprise_cmd(
        project, "run", "cli_flows:flow", "--input", "n=3", "--input", "fail=true", "--prefix", "bad", "--json"
    )
    assert proc.returncode == 1, proc.stderr
    failed = envelope(proc, "run")["data"]  # the command worked; the run failed
    assert failed["status"] == "failed" and failed["run_id"].startswith("bad_run_")
    assert failed["failed_path"] == "flow.double" and "double refused" in failed["error"]
    assert [r["run_id"] for r in run_json(project, "runs", "--status", "failed")] == [failed["run_id"]]

    # resume: the recorded target is used; fetch is reused, the rest runs again.
    resumed = run_json(project, "resume", failed["run_id"], "--input", "n=3", "--input", "fail=false")
    assert resumed["status"] == "completed" and resumed["reused"] == 1 and resumed["executed"] == 2
    assert resumed["previous_run_id"] == failed["run_id"] and resumed["start_hierarchy_path"] == "flow.double"
    tree = run_json(project, "show", resumed["run_id"])["tree"]
    fetch = tree["children"][0]
    assert fetch["reused"] is True and fetch["reused_from"] == failed["run_id"]

    # rerun from a path with another factor: double and report change, fetch does not.
    rerun = run_json(
        project, "rerun", resumed["run_id"], "--from", "flow.double", "--input", "n=3", "--input", "factor=3"
    )
    assert rerun["status"] == "completed" and rerun["reused"] == 1 and rerun["outcome"] == {"y": 12}
    changes = run_json(project, "diff", resumed["run_id"], rerun["run_id"], "--values")
    assert [(c["status"], c["hierarchy_path"]) for c in changes] == [("M", "flow.double"), ("M", "flow.report")]
    assert changes[0]["before"] == 8 and changes[0]["after"] == 12
    diff_text = reprise_cmd(project, "diff", resumed["run_id"], rerun["run_id"]).stdout
    assert diff_text.splitlines() == ["M  flow.double", "M  flow.report"]
    assert run_json(project, "diff", rerun["run_id"], rerun["run_id"]) == []


SPAN_FLOWS = """
from reprise import FlowDefinition, Initial, Ref


def first(n: int, ctx) -> bool:
    return ctx.current_span.is_recording()


def second(before: bool, fail: bool, ctx) -> dict:
    if fail:
        raise ValueError("second refused")
    return {"first": before, "second": ctx.current_span.is_recording()}


flow = (
    FlowDefinition()
    .node("first", first, inputs={"n": Initial("n")})
    .node("second", second, inputs={"before": Ref("first"), "fail": Initial("fail", default=False)})
)
"""


def test_run_progress_follows_every_node_through_an_element_listener(project: Path) -> None:
    """``reprise run`` follows its nodes through an element listener, with progress on or off
    (the nodes see their own recording span either way), and the progress shows every node:
    run, failed, reused."""
    (project / "span_flows.py").write_text(SPAN_FLOWS)
    plain = reprise_cmd(project, "run", "span_flows:flow", "--input", "n=1", "--progress", "plain", "--json")
    run = envelope(plain, "run")["data"]
    assert run["outcome"] == {"first": True, "second": True}
    lines = plain.stderr.splitlines()
    assert lines[0] == f"run {run['run_id']} started in {run['run_dir']}"
    assert [line.split()[:2] for line in lines[1:]] == [["completed", "flow.first"], ["completed", "flow.second"]]
    assert all(re.fullmatch(r"  completed +flow\.\w+ \d+\.\d{3}s", line) for line in lines[1:]), lines

    quiet = reprise_cmd(project, "run", "span_flows:flow", "--input", "n=1", "--progress", "none", "--json")
    assert envelope(quiet, "run")["data"]["outcome"] == {"first": True, "second": True}
    assert quiet.stderr == ""

    failed = reprise_cmd(project, "run", "span_flows:flow", "--input", "n=1", "--input", "fail=true", "--json")
    bad = envelope(failed, "run")["data"]
    assert bad["status"] == "failed"
    assert [line.split()[:2] for line in failed.stderr.splitlines()[1:]] == [
        ["completed", "flow.first"],
        ["failed", "flow.second"],
    ]
    resumed = reprise_cmd(project, "resume", bad["run_id"], "--input", "n=1", "--progress", "plain", "--json")
    again = envelope(resumed, "resume")["data"]
    assert again["status"] == "completed" and again["reused"] == 1
    assert again["outcome"] == {"first": True, "second": True}
    lines = resumed.stderr.splitlines()
    assert len(lines) == 3 and lines[1] == f"  reused    flow.first (from {bad['run_id']})"
    assert re.fullmatch(r"  completed flow\.second \d+\.\d{3}s", lines[2]), lines


def test_progress_counts_nodes_for_the_live_display(tmp_path: Path) -> None:
    """What the live (rich) display counts, heard as an element listener: done, reused, failed,
    and nothing left running."""
    from reprise import FlowDefinition, FlowRunner, ObservabilitySettings, Ref, RunContext, RunFailedError
    from reprise.cli._progress import RunProgress

    fail = {"c": True}

    def a() -> int:
        return 1

    def c(x: int) -> int:
        if fail["c"]:
            raise ValueError("c refused")
        return x

    flow = FlowDefinition().node("a", a).node("b", a).node("c", c, inputs={"x": Ref("a")})

    def run(progress: RunProgress, **kwargs: Any) -> RunContext:
        settings = ObservabilitySettings(element_listeners=[progress])
        ctx = RunContext("flow", tmp_path, observability_settings=settings, outcome_repo=False, **kwargs)
        try:
            FlowRunner(flow, ctx).run_sync()
        except RunFailedError:
            pass
        return ctx

    first = RunProgress(io.StringIO(), "rich")
    failed = run(first)
    assert first.counts == {"completed": 2, "reused": 0, "failed": 1, "cancelled": 0}
    assert first.running == {} and first.last == "flow.c failed"
    assert "done 2  reused 0  failed 1" in first._render().plain

    fail["c"] = False
    drawn = io.StringIO()
    second = RunProgress(drawn, "rich")
    run(second, previous_run_id=failed.run_id, start_hierarchy_path="flow.c")
    assert second.counts == {"completed": 1, "reused": 2, "failed": 0, "cancelled": 0}
    assert "done 1  reused 2" in second._render().plain and "failed" not in second._render().plain
    assert drawn.getvalue() == ""  # nothing drawn: the display was never started


def test_errors_are_one_line_and_exit_2(project: Path) -> None:
    ok = run_json(project, "run", "cli_flows:flow", "--input", "n=1")
    cases = [
        (("show", "run_20200101_000000_abcdef"), "show", "no run 'run_20200101_000000_abcdef'"),
        (("show", "not-a-run"), "show", "no run 'not-a-run'"),
        (("run", "no_such_module:flow"), "run", "no module named 'no_such_module'"),
        (("run", "cli_flows:missing"), "run", "has no attribute 'missing'"),
        (("run", "cli_flows:greeting"), "run", "is a Greeting, not a flow, an agent or a function"),
        (("run", "cli_flows"), "run", "is not MODULE:OBJECT"),
        (("run", "cli_flows:flow", "--input", "novalue"), "run", "expected KEY=VALUE"),
        (("rerun", ok["run_id"], "--from", "flow.nowhere"), "rerun", "flow.nowhere"),
        (("rerun", ok["run_id"], "--from", "flow..x"), "rerun", "flow..x"),
        (("alerts", "--since", "last tuesday"), "alerts", "not a timestamp"),
        (("runs", "--status", "bogus"), "runs", "invalid choice"),
        (("diff", ok["run_id"], "run_20200101_000000_abcdef"), "diff", "no run"),
        (("logs",), "logs", "required"),
    ]
    # Independent processes: run them a few at a time (each one mostly imports Python modules).
    with ThreadPoolExecutor(max_workers=4) as pool:
        texts = list(pool.map(lambda case: reprise_cmd(project, *case[0]), cases))
        jsons = list(pool.map(lambda case: reprise_cmd(project, *case[0], "--json"), cases[::2]))
    for (args, command, fragment), proc in zip(cases, texts, strict=True):
        line = one_line_error(proc, command)
        assert fragment in line, (args, line)
    for (_args, command, fragment), proc in zip(cases[::2], jsons, strict=True):
        assert proc.returncode == 2
        env = envelope(proc, command, ok=False)
        assert fragment in env["error"]["message"]
    # A rerun refused before it started leaves no run directory behind.
    assert len(run_json(project, "runs")) == 1


def test_run_root_from_environment_agent_ids_and_static_inputs(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    env = {"REPRISE_RUN_ROOT": str(elsewhere)}
    proc = reprise_cmd(project, "run", "cli_flows:agent", "--json", env=env)
    run = envelope(proc, "run")["data"]
    assert run["root_component_id"] == "helper_agent"  # the agent's own id, not the attribute name
    assert Path(run["run_dir"]).parent == elsewhere
    listed = envelope(reprise_cmd(project, "runs", "--json", env=env), "runs")["data"]
    assert [r["run_id"] for r in listed] == [run["run_id"]]

    static = project / "static.json"
    static.write_text(json.dumps({"double": {"x": 10, "factor": 10, "fail": False}}))
    run = run_json(project, "run", "cli_flows:flow", "--input", "n=1", "--static-inputs", str(static))
    assert run["outcome"] == {"y": 100}


def test_a_killed_run_lists_as_crashed_and_resumes(project: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprise.cli", "run", "cli_flows:flow", "--input", "n=2", "--input", "hang=true"],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")},
    )
    try:
        deadline = time.monotonic() + 60
        while not (project / "hanging").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert [r["status"] for r in run_json(project, "runs")] == ["running"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    crashed = run_json(project, "runs", "--status", "crashed")
    assert len(crashed) == 1
    assert run_json(project, "show", crashed[0]["run_id"])["tree"]["children"][2]["status"] == "interrupted"
    resumed = run_json(project, "resume", crashed[0]["run_id"], "--input", "n=2", "--input", "hang=false")
    assert resumed["status"] == "completed" and resumed["reused"] == 2 and resumed["outcome"] == {"y": 6}


def test_ctrl_c_records_a_cancelled_run_and_exits_130(project: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reprise.cli",
            "run",
            "cli_flows:flow",
            "--json",
            "--input",
            "n=2",
            "--input",
            "hang=true",
        ],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")},
    )
    deadline = time.monotonic() + 60
    while not (project / "hanging").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    # The node sleeps for 120 s in a worker thread: the command must not wait for it.
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = json.loads(out)["data"]
    assert run["status"] == "cancelled" and run["executed"] == 2
    assert "Traceback" not in err


def test_import_reprise_loads_neither_the_cli_nor_rich() -> None:
    code = textwrap.dedent(
        """
        import sys, reprise
        assert callable(reprise.log) and callable(reprise.alert) and reprise.Api
        loaded = sorted(m for m in sys.modules if m == "rich" or m.startswith(("rich.", "reprise.cli")))
        print(loaded)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_console_script(project: Path) -> None:
    script = Path(sys.executable).parent / "reprise"
    if not script.exists():
        pytest.skip("the reprise console script is not installed next to this Python")
    proc = subprocess.run([str(script), "runs", "--json"], cwd=project, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert envelope(proc, "runs")["data"] == []
    assert subprocess.run([str(script), "--version"], capture_output=True, text=True).stdout.startswith("reprise ")


def test_show_tree_of_loops_conditionals_and_parallel_blocks(tmp_path: Path) -> None:
    """The data `reprise show` prints (from Api.elements), for every kind of composite."""
    from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext, RunFailedError, Var
    from reprise._api import Api

    def work(x: int) -> int:
        if x == 3:
            raise ValueError("three")
        return x

    flow = (
        FlowDefinition()
        .node("first", lambda: 1)
        .conditional("cond", Ref("first"), FlowDefinition().node("yes", lambda: "y"))
        .parallel("par", {"l": FlowDefinition().node("a", lambda: 1), "r": FlowDefinition().node("b", lambda: 2)})
        .for_each(
            "loop", Initial("items"), FlowDefinition().node("work", work, inputs={"x": Var("item")}), max_iterations=5
        )
    )
    ctx = RunContext(
        root_component_id="flow", project_root=tmp_path, outcome_repo=False, initial_inputs={"items": [1, 2, 3]}
    )
    with pytest.raises(RunFailedError):
        FlowRunner(flow, ctx).run_sync()
    tree = Api(tmp_path / "runs").elements(ctx.run_id)

    def row(path: str) -> tuple[str, str]:
        found = next(e for e in tree.walk() if e.path == path)
        return found.element_type, found.status

    assert [c.name for c in tree.children] == ["first", "cond", "par", "loop"]
    assert row("flow") == ("flow", "failed")
    assert row("flow.cond") == ("conditional", "completed")
    assert row("flow.cond.then") == ("branch", "completed")
    assert row("flow.par.r") == ("branch", "completed")
    assert row("flow.loop") == ("loop", "failed")
    assert [c.name for c in next(e for e in tree.walk() if e.path == "flow.loop").children] == ["0", "1", "2"]
    assert row("flow.loop.1") == ("iteration", "completed")
    assert row("flow.loop.2") == ("iteration", "failed")
    failed = next(e for e in tree.walk() if e.path == "flow.loop.2.work")
    assert failed.error == "ValueError: three"


def test_envelope_is_strict_json_even_with_nan() -> None:
    import argparse
    import io
    import math

    from reprise.cli._common import Output

    stdout, stderr = io.StringIO(), io.StringIO()
    args = argparse.Namespace(json=True, run_root="runs", run_id="x")
    Output("metrics", args, stdout=stdout, stderr=stderr).emit([{"metrics": {"loss": math.nan, "p": Path("a")}}])

    def refuse(token: str) -> None:
        raise AssertionError(f"not strict JSON: {token}")

    env = json.loads(stdout.getvalue(), parse_constant=refuse)
    assert env["data"] == [{"metrics": {"loss": None, "p": "a"}}]
    assert env["query"] == {"run_root": str(Path("runs").absolute()), "run_id": "x"}
