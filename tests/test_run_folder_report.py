"""The example agent (examples/folder_report.py), end to end on real folders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from examples import folder_report
from examples.folder_report import SAMPLE_FOLDER, agent, report_path, run_report

from reprise import AgentDefinition, RunFailedError, RunStatus
from reprise.dsl import validate_definition
from reprise.run import RunDirectory

REPO = Path(__file__).resolve().parent.parent


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


def test_agent_is_an_importable_definition() -> None:
    assert isinstance(agent, AgentDefinition)
    index = validate_definition(agent, folder_report.ROOT_ID)
    assert "folder_report.analyse.per_file.*.count" in index.nodes
    assert "folder_report.analyse.overall.vocabulary.vocabulary" in index.nodes
    assert "folder_report.report.write" in index.nodes


@pytest.mark.anyio
async def test_report_on_the_sample_notes(tmp_path: Path) -> None:
    result = await run_report(SAMPLE_FOLDER, tmp_path / "runs")
    assert result.status is RunStatus.COMPLETED
    assert RunDirectory(result.run_dir).read_metadata().status is RunStatus.COMPLETED
    report = report_path(result)
    assert report == result.run_dir / "folder_report" / "report" / "write" / "report.md"
    markdown = report.read_text()
    assert result.outcome.markdown == markdown
    assert _json(report.parent / "result.json")["report"] == "report.md"
    samples = sorted(p.name for p in SAMPLE_FOLDER.iterdir() if p.suffix == ".txt")
    assert len(samples) >= 3
    for name in samples:
        assert f"| {name} |" in markdown
    totals = result.outcomes["folder_report.analyse.overall"]["totals"]
    assert totals.files == len(samples)
    assert f"| {totals.files} | {totals.words} | {totals.lines} |" in markdown
    # One loop iteration per file, each with its own read and count node.
    per_file = result.run_dir / "folder_report" / "analyse" / "per_file"
    assert sorted(p.name for p in per_file.iterdir() if p.is_dir()) == [str(i) for i in range(len(samples))]
    assert _json(per_file / "0" / "count" / "outcome.json")["name"] == samples[0]
    overall = _json(result.run_dir / "folder_report" / "analyse" / "overall" / "result.json")
    assert overall["branches"] == {"longest": "completed", "vocabulary": "completed", "totals": "completed"}


@pytest.mark.anyio
async def test_report_counts_a_known_folder(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha beta alpha.\nGamma alpha!\n")
    (folder / "b.md").write_text("beta beta delta\n")
    (folder / "image.png").write_bytes(b"\x89PNG not text")
    (folder / "nested").mkdir()
    (folder / "nested" / "c.txt").write_text("not read: only the folder's own files count")
    result = await run_report(folder, tmp_path / "runs")
    per_file = result.outcomes["folder_report.analyse.per_file"]
    assert [f.name for f in per_file] == ["a.txt", "b.md"]
    assert (per_file[0].words, per_file[0].lines, per_file[0].top_words[0]) == (5, 2, ("alpha", 3))
    overall = result.outcomes["folder_report.analyse.overall"]
    assert overall["longest"].name == "a.txt"
    assert overall["vocabulary"].distinct == 4
    assert overall["vocabulary"].top_words[:2] == [("alpha", 3), ("beta", 3)]
    assert (overall["totals"].files, overall["totals"].words) == (2, 8)
    markdown = report_path(result).read_text()
    assert "Longest file: **a.txt** (5 words)." in markdown
    assert "alpha (3), beta (3), delta (1), gamma (1)" in markdown


@pytest.mark.anyio
async def test_a_folder_without_text_files_fails_at_the_listing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFailedError) as info:
        await run_report(empty, tmp_path / "runs")
    assert info.value.path == "folder_report.analyse.list"
    assert "no .txt or .md files" in str(info.value)
    assert info.value.result.status is RunStatus.FAILED  # type: ignore[attr-defined]


def test_reading_is_confined_to_the_folder(tmp_path: Path) -> None:
    (tmp_path / "inside").mkdir()
    (tmp_path / "secret.txt").write_text("not for the report")
    (tmp_path / "inside" / "link.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(PermissionError, match="outside"):
        folder_report.read_file(str(tmp_path / "inside"), "../secret.txt")
    with pytest.raises(PermissionError, match="outside"):
        folder_report.read_file(str(tmp_path / "inside"), "link.txt")
    # Symlinks are not even listed.
    (tmp_path / "inside" / "real.txt").write_text("fine")
    assert folder_report.list_files(str(tmp_path / "inside")).files == ["real.txt"]


def test_command_line(tmp_path: Path) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "one.txt").write_text("a short note about the command line")
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [sys.executable, "-m", "examples.folder_report", "--folder", str(folder), "--run-root", str(runs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split(":", 1) for line in proc.stdout.splitlines())
    run_dir = Path(out["run directory"].strip())
    assert run_dir.parent == runs.resolve()
    assert out["status"].strip() == "completed"
    assert Path(out["report"].strip()).read_text().startswith("# Folder report: notes")

    failing = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.folder_report",
            "--folder",
            str(tmp_path / "missing"),
            "--run-root",
            str(runs),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failing.returncode == 1
    assert "error: folder_report.analyse.list:" in failing.stderr and "not a folder" in failing.stderr
    assert "status:        failed" in failing.stderr


def test_demo_rerun_lists_the_reused_nodes(tmp_path: Path) -> None:
    # What `make demo` prints: the re-run from the overall analysis reuses everything before it.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "examples.folder_report",
            "--run-root",
            str(tmp_path / "runs"),
            "--then-rerun-from",
            "folder_report.analyse.overall",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rerun = proc.stdout.split("re-run from", 1)[1]
    reused = [line[4:] for line in rerun.splitlines() if line.startswith("  = ")]
    executed = [line[4:] for line in rerun.splitlines() if line.startswith("  > ")]
    assert f"reused ({len(reused)}, not called again)" in rerun and len(reused) > 5
    assert "folder_report.analyse.list" in reused
    assert all(p.startswith(("folder_report.analyse.overall", "folder_report.report")) for p in executed)
    assert len(executed) == 4


def test_the_demo_says_how_to_look_at_its_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert folder_report.main(["--run-root", str(runs), "--then-rerun-from", "folder_report.analyse.overall"]) == 0
    printed = capsys.readouterr().out
    commands = [line.split(":", 1)[-1].strip() for line in printed.splitlines() if "reprise " in line]
    kinds = sorted({c.split()[1] for c in commands})
    assert kinds == ["diff", "show", "trace", "view"], printed
    # Each one works as printed (--open aside: no browser here).
    for command in commands:
        args = [a for a in command.split()[1:] if a != "--open"]
        proc = subprocess.run([sys.executable, "-m", "reprise.cli", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (command, proc.stderr)
