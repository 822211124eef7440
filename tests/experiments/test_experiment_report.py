"""Readable results (issue 22): ``trace_summary.jsonl`` beside ``runs.jsonl``, and
``reprise experiment parse NAME`` writing a Markdown (and HTML) report per input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from reprise.cli import main
from reprise.experiments import Experiment, LocalExecutor


def reply(input_text: str) -> str:
    if input_text == "fail":
        raise ValueError("cannot answer <this>")
    return f"line one\n```\ncode in {input_text}\n```"


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def experiment(tmp_path: Path) -> Path:
    summary = Experiment(
        reply,
        [{"input": "hello", "persona": "novice_user"}, {"id": "broken", "input": "fail"}],
        iterations=2,
        name="report",
        executor=LocalExecutor("inline"),
        project_root=tmp_path,
        outcome_repo=False,
    ).run_sync()
    return tmp_path / "experiments" / summary.folder


def test_trace_summary_has_one_line_per_run(experiment: Path) -> None:
    runs = lines(experiment / "runs.jsonl")
    summary = lines(experiment / "trace_summary.jsonl")
    assert len(summary) == len(runs) == 4
    by_run = {line["trace_id"]: line for line in summary}
    for run in runs:
        line = by_run[run["run_id"]]
        assert (line["input_id"], line["iteration"], line["status"]) == (
            run["input_id"],
            run["iteration"],
            run["status"],
        )
        assert line["duration_ms"] == pytest.approx(run["duration_s"] * 1000, abs=0.001)
        assert line["output"] == run["outcome"]
    ok = next(line for line in summary if line["input_id"] == "input-1")
    assert (ok["input"], ok["persona"], ok["error"]) == ("hello", "novice_user", None)
    bad = next(line for line in summary if line["input_id"] == "broken")
    assert (bad["input"], bad["status"], bad["output"]) == ("fail", "failed", None)
    assert bad["error"] == "ValueError: cannot answer <this>"


def test_parse_writes_a_report_per_input(
    experiment: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(experiment.parent.parent)
    assert main(["experiment", "parse", "report", "--html"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {experiment / 'report.md'}",
        f"wrote {experiment / 'report.html'}",
    ]
    md = (experiment / "report.md").read_text()
    assert md.startswith(f"# Experiment {experiment.name}\n")
    assert "- 4/4 runs finished, 2 completed, 2 failed (50.0%)" in md
    hello = md[md.index("## input-1") : md.index("## broken")]
    assert "**Persona:** novice_user" in hello and "```text\nhello\n```" in hello
    assert hello.count("### Iteration") == 2 and "### Iteration 1: completed, " in hello
    # An output holding a fence gets a longer one, so it stays one block.
    assert "````text\nline one\n```\ncode in hello\n```\n````" in hello
    broken = md[md.index("## broken") :]
    assert (
        "### Iteration 2: failed" in broken and "**Error at `reply.reply`:** ValueError: cannot answer <this>" in broken
    )
    page = (experiment / "report.html").read_text()
    assert "cannot answer &lt;this&gt;" in page and "<this>" not in page
    assert page.count('<tr class="completed">') == 2 and page.count('<tr class="failed">') == 2

    out_dir = experiment.parent.parent / "reports"
    assert main(["experiment", "parse", experiment.name, "--output", str(out_dir), "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["data"]["reports"] == [str(out_dir / "report.md")] and (out_dir / "report.md").is_file()

    assert main(["experiment", "parse", "nothing"]) == 2
    assert "no experiment named 'nothing'" in capsys.readouterr().err


def test_old_folders_without_a_summary_still_parse(experiment: Path) -> None:
    from reprise.experiments import ExperimentFolder, write_report

    (experiment / "summary.json").unlink()
    (experiment / "trace_summary.jsonl").unlink()
    (path,) = write_report(ExperimentFolder(experiment))
    assert path.read_text().count("### Iteration") == 4
