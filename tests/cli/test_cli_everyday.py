"""The `reprise` command as a newcomer meets it: help, versions, listing, levels, signals.

Every test drives the real command in a subprocess against real runs in a temporary project
(the fixtures and helpers are those of ``test_cli.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from tests.cli.test_cli import envelope, one_line_error, project, reprise_cmd, run_json
from tests.observability.test_observability_export import Receiver, http_receiver

__all__ = ["http_receiver", "project"]  # the fixtures, imported for pytest


def test_reprise_alone_prints_its_help(tmp_path: Path) -> None:
    proc = reprise_cmd(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: reprise") and "runs" in proc.stdout
    assert proc.stderr == ""


def test_version_has_a_short_flag(tmp_path: Path) -> None:
    for flag in ("-V", "--version"):
        proc = reprise_cmd(tmp_path, flag)
        assert proc.returncode == 0 and proc.stdout.startswith("reprise "), proc


def test_usage_errors_name_the_command_once(tmp_path: Path) -> None:
    proc = reprise_cmd(tmp_path, "--bogus")
    assert proc.returncode == 2 and proc.stderr.startswith("reprise: error: "), proc.stderr
    line = one_line_error(reprise_cmd(tmp_path, "runs", "--bogus"), "runs")
    assert "unrecognized arguments: --bogus" in line and "reprise runs --help" in line
    proc = reprise_cmd(tmp_path, "runs", "--bogus", "--json")
    env = envelope(proc, "runs", ok=False)
    assert env["error"]["type"] == "UsageError"


def test_runs_lists_the_newest_20_and_hides_experiment_runs(project: Path) -> None:
    (project / "inputs.jsonl").write_text('{"id": "a", "initial_inputs": {"n": 1}}\n')
    proc = reprise_cmd(project, "experiment", "cli_flows:flow", "--inputs", "inputs.jsonl", "--name", "sweep")
    assert proc.returncode == 0, proc.stderr
    # 21 runs of our own, written quickly from one process.
    code = (
        "import cli_flows\nfrom reprise import FlowRunner, RunContext\n"
        "for n in range(21):\n"
        "    ctx = RunContext(root_component_id='flow', project_root='.', initial_inputs={'n': n})\n"
        "    FlowRunner(cli_flows.flow, ctx).run_sync()\n"
    )
    made = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr

    listed = run_json(project, "runs")
    assert len(listed) == 20 and all("experiment" not in r["tags"] for r in listed)
    text = reprise_cmd(project, "runs")
    assert text.stdout.count("\n") == 21 and "--all" in text.stderr  # a header, 20 runs, a hint
    assert len(run_json(project, "runs", "--all")) == 21
    assert len(run_json(project, "runs", "--limit", "3")) == 3
    with_experiments = run_json(project, "runs", "--all", "--experiments")
    assert [r["tags"].get("experiment") for r in with_experiments].count("sweep") == 1
    assert [r["tags"]["experiment"] for r in run_json(project, "runs", "--tag", "experiment=sweep")] == ["sweep"]
    table = reprise_cmd(project, "runs", "--experiments", "--limit", "30").stdout.splitlines()
    assert "EXPERIMENT" in table[0]
    assert sum(1 for line in table if " sweep " in line) == 1
    one_line_error(reprise_cmd(project, "runs", "--all", "--limit", "3"), "runs")


def test_logs_and_alerts_share_one_set_of_level_names(project: Path) -> None:
    run_id = run_json(project, "run", "cli_flows:flow", "--input", "n=1")["run_id"]
    for command in (["alerts"], ["logs", run_id]):
        help_text = reprise_cmd(project, *command, "--help").stdout
        assert "debug, info, warning, error" in " ".join(help_text.split()), help_text
        by_level = {
            level: run_json(project, *command, "--level", level)
            for level in ("debug", "info", "warn", "warning", "WARNING", "error")
        }
        assert by_level["warn"] == by_level["warning"] == by_level["WARNING"]
        assert len(by_level["debug"]) >= len(by_level["info"]) >= len(by_level["warning"]) >= len(by_level["error"])
        one_line_error(reprise_cmd(project, *command, "--level", "loud"), command[0])
    # The alert raised at "warn" is at "warning" in both, and printed with that name.
    assert [a["title"] for a in run_json(project, "alerts", "--level", "warning")] == ["Doubled"]
    alerts_table = reprise_cmd(project, "alerts").stdout.splitlines()
    assert alerts_table[1].split()[1] == "warning", alerts_table
    log_lines = reprise_cmd(project, "logs", run_id).stdout.splitlines()
    assert any(" warning " in line and "alert" in line for line in log_lines)


def test_trace_folds_long_child_lists_as_the_viewer_did(project: Path) -> None:
    run_id = run_json(project, "run", "cli_flows:flow", "--input", "n=1")["run_id"]
    folded = reprise_cmd(project, "trace", run_id, "--max-children", "1").stdout
    assert "fetch" in folded and "double" not in folded and "... 2 more" in folded
    everything = reprise_cmd(project, "trace", run_id, "--max-children", "1", "--all").stdout
    assert all(name in everything for name in ("fetch", "double", "report")) and "more" not in everything
    assert reprise_cmd(project, "trace", run_id).stdout == everything  # 100 by default
    one_line_error(reprise_cmd(project, "trace", run_id, "--max-children", "0"), "trace")
    # With no terminal that can show box characters, the tree is drawn in ASCII.
    ascii_only = reprise_cmd(project, "trace", run_id, env={"PYTHONIOENCODING": "ascii"}).stdout
    assert "`-- " in ascii_only and "└" not in ascii_only


def test_the_modules_command_lines_are_gone() -> None:
    for module in ("reprise.observability", "reprise.view"):
        proc = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0 and "cannot be directly executed" in proc.stderr, proc.stderr


LOOP_FLOWS = """
from reprise import FlowDefinition, Ref, Var


def one(item: int) -> int:
    return item + 1


def second(x: int) -> int:
    return x * 2


body = FlowDefinition().node("one", one, inputs={"item": Var("item")}).node("second", second, inputs={"x": Ref("one")})
review = FlowDefinition().for_each("loop", [1, 2, 3], body)
not_a_flow = 3
"""


def test_a_mistyped_target_or_start_path_gets_a_suggestion_to_paste_back(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(LOOP_FLOWS)
    line = one_line_error(reprise_cmd(tmp_path, "run", "flows.py:reviw"), "run")
    assert "flows.py has no attribute 'reviw'; did you mean 'review'?" in line, line
    assert "reprise_target" not in line
    line = one_line_error(reprise_cmd(tmp_path, "run", "flows:reviw"), "run")
    assert "flows has no attribute 'reviw'; did you mean 'review'?" in line, line
    line = one_line_error(reprise_cmd(tmp_path, "run", "flows.py:not_a_flow"), "run")
    expected = "is a int, not a flow, an agent or a function; the definitions in flows.py: body, review"
    assert line.endswith(expected), line

    first = run_json(tmp_path, "run", "flows.py:review")
    assert first["status"] == "completed", first
    run_id = first["run_id"]
    line = one_line_error(reprise_cmd(tmp_path, "rerun", run_id, "--from", "review.loop.2.secnd"), "rerun")
    assert "nearest valid paths: review.loop.2.second" in line, line
    # The suggestion, pasted back, works.
    rerun = run_json(tmp_path, "rerun", run_id, "--from", "review.loop.2.second")
    assert rerun["status"] == "completed"


METRIC_FLOWS = """
import reprise
from reprise import FlowDefinition


def measure(ctx) -> int:
    reprise.log({"loss": 0.123456789, "label": "first"})
    ctx.metric("fetch.bytes", 1234.56789, host="example.org")
    reprise.log({"loss": 2 / 3})
    return 1


flow = FlowDefinition().node("measure", measure)
"""


def test_metrics_shows_logged_and_measured_values_rounded(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(METRIC_FLOWS)
    run_id = run_json(tmp_path, "run", "flows.py:flow")["run_id"]
    lines = run_json(tmp_path, "metrics", run_id)
    assert [(line["step"], line["metrics"]) for line in lines] == [
        (0, {"loss": 0.123456789, "label": "first"}),
        (None, {"fetch.bytes": 1234.56789}),
        (1, {"loss": 2 / 3}),
    ]
    assert lines[1]["attributes"] == {"host": "example.org"}
    assert lines[1]["hierarchy_path"] == "flow.measure"
    table = reprise_cmd(tmp_path, "metrics", run_id).stdout.splitlines()
    assert table[1].split() == ["0", "flow.measure", "loss=0.1235", 'label="first"']
    assert table[2].split() == ["-", "flow.measure", "fetch.bytes=1235", '{host="example.org"}']
    assert table[3].split() == ["1", "flow.measure", "loss=0.6667"]
    assert [line["step"] for line in run_json(tmp_path, "metrics", run_id, "--name", "fetch.bytes")] == [None]


def test_one_duration_and_the_same_totals_in_show_trace_commit_and_view(project: Path) -> None:
    from tests.view.test_view import _model

    first = run_json(project, "run", "cli_flows:flow", "--input", "n=1")
    # `double` (120/30 tokens, $0.0025) is reused: it cost nothing in this run.
    rerun = run_json(project, "rerun", first["run_id"], "--from", "flow.report")
    for run_id, tokens, cost in ((first["run_id"], 150, 0.0025), (rerun["run_id"], None, None)):
        shown = run_json(project, "show", run_id)
        page = project / f"{run_id}.html"
        run_json(project, "view", run_id, "-o", str(page))
        in_view = _model(page.read_text(), "reprise-run")["run"]
        totals = shown["totals"]
        summed = None if totals["input_tokens"] is None else totals["input_tokens"] + totals["output_tokens"]
        assert (summed, totals["cost"]) == (in_view["tokens"], in_view["cost"]) == (tokens, cost)

        duration = shown["run"]["duration_s"]
        assert in_view["duration_s"] == duration
        (root,) = [s for s in run_json(project, "trace", run_id) if s["parent_span_id"] is None]
        assert root["duration_s"] == pytest.approx(duration, abs=1e-6)
        repo = project / "runs" / "outcome" / project.name
        subject = subprocess.run(
            ["git", "-C", str(repo), "log", "-1", "--format=%s", f"run/{run_id}"], capture_output=True, text=True
        ).stdout.strip()
        assert subject == f"run {run_id}: completed in {duration:.3f}s"
        started, ended = (datetime.fromisoformat(shown["run"][k]) for k in ("started_at", "ended_at"))
        assert (ended - started).total_seconds() == pytest.approx(duration, abs=1e-6)
    # Where reused nodes sit beside counted ones, `show` says what the totals count.
    again = run_json(project, "rerun", first["run_id"], "--from", "flow.double")["run_id"]
    assert "(executed nodes only: reused ones cost nothing this time)" in reprise_cmd(project, "show", again).stdout


def _start_hanging(project: Path, *args: str) -> subprocess.Popen[str]:
    """``reprise ARGS`` in a subprocess, returned once a node is hanging in a worker thread."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "reprise.cli", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")},
    )
    deadline = time.monotonic() + 60
    while not (project / "hanging").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    return proc


def test_sigterm_cancels_a_run_as_ctrl_c_does_and_resume_finishes_it(project: Path) -> None:
    proc = _start_hanging(project, "run", "cli_flows:flow", "--json", "--input", "n=2", "--input", "hang=true")
    os.kill(proc.pid, signal.SIGTERM)
    # The node sleeps for 120 s in a worker thread: the command must not wait for it.
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    run = json.loads(out)["data"]
    assert run["status"] == "cancelled" and run["executed"] == 2
    assert "Traceback" not in err
    assert "abandoned worker thread(s) behind, still running flow.report" in err, err
    # What finished is committed to the run's branch.
    repo = project / "runs" / "outcome" / project.name
    tree = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", f"run/{run['run_id']}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert {"flow/fetch/outcome.json", "flow/double/outcome.json"} <= set(tree), tree
    resumed = run_json(project, "resume", run["run_id"], "--input", "n=2", "--input", "hang=false")
    assert resumed["status"] == "completed" and resumed["reused"] == 2 and resumed["outcome"] == {"y": 6}


def test_sigterm_stops_an_experiment_as_ctrl_c_does(project: Path) -> None:
    (project / "inputs.jsonl").write_text('{"id": "a", "initial_inputs": {"n": 2, "hang": true}}\n')
    proc = _start_hanging(project, "experiment", "cli_flows:flow", "--inputs", "inputs.jsonl", "--json")
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    (item_run,) = run_json(project, "runs", "--experiments")
    assert item_run["status"] == "cancelled", item_run


def test_export_replays_a_finished_run_into_an_otlp_backend(tmp_path: Path, http_receiver: Receiver) -> None:
    (tmp_path / "flows.py").write_text(METRIC_FLOWS)
    run_id = run_json(tmp_path, "run", "flows.py:flow")["run_id"]
    sent = run_json(tmp_path, "export", run_id, "--otlp-endpoint", http_receiver.endpoint)
    got = http_receiver.collected

    # The spans as the run recorded them: ids, parents, names, times, attributes.
    spans = run_json(tmp_path, "trace", run_id)
    received = got.spans()
    assert sent["spans"] == len(spans) == len(received) > 0
    for span in spans:
        theirs = received[span["span_id"]]
        # Element spans under their id (backends draw the tree), the whole path an attribute.
        path, kind = span["attributes"]["reprise.hierarchy_path"], span["attributes"]["reprise.element_type"]
        short = span["name"] if kind in ("run", "user_span") else path.rsplit(".", 1)[-1]
        assert theirs.trace_id.hex() == span["trace_id"] and theirs.name == short
        assert (theirs.parent_span_id.hex() or None) == span["parent_span_id"]
        assert (theirs.start_time_unix_nano, theirs.end_time_unix_nano) == (span["start_ns"], span["end_ns"])
        attributes = {kv.key: kv.value for kv in theirs.attributes}
        assert attributes["reprise.hierarchy_path"].string_value == span["attributes"]["reprise.hierarchy_path"]
    resources = [rs.resource for r in got.traces for rs in r.resource_spans]
    assert {kv.key: kv.value.string_value for kv in resources[0].attributes}["reprise.run_id"] == run_id

    # Metrics: reprise's own, reprise.log's and ctx.metric's.
    assert {"reprise.node.duration", "loss", "fetch.bytes"} <= got.metric_names()
    assert sent["metric_points"] > 0

    # Log lines, at the time they were logged.
    logs_file = tmp_path / "runs" / run_id / ".trace" / "logs.jsonl"
    lines = [json.loads(line) for line in logs_file.read_text().splitlines()]
    records = got.log_records()
    assert sent["log_records"] == len(lines) == len(records)
    assert [r.body.string_value for r in records] == [line["event"] for line in lines]
    first = datetime.fromisoformat(lines[0]["timestamp"].replace("Z", "+00:00"))
    assert records[0].time_unix_nano // 1000 == int(first.timestamp()) * 1_000_000 + first.microsecond
    assert records[0].trace_id.hex() == lines[0]["trace_id"]

    # A backend that refuses is an error naming it (after the exporter's own warning).
    refused = reprise_cmd(tmp_path, "export", run_id, "--otlp-endpoint", f"{http_receiver.endpoint}/nowhere")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.splitlines()[-1] == (
        f"reprise export: error: the OTLP endpoint {http_receiver.endpoint}/nowhere/v1/traces "
        "did not take the run's traces"
    )
    assert "OTLP endpoint" in one_line_error(reprise_cmd(tmp_path, "export", run_id), "export")
