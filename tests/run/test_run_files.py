"""Corrupt run files, read by the real commands: every error names the run and the file.

One real run is recorded once; each test copies its run root, damages one file in one way
(empty, ``[]``, binary, cut in half) and runs the commands that read that file. A command that
cannot go on exits 2 with one line naming the run and the file; one that can (a bad line in a
JSON Lines file, one unreadable run among many) goes on and says what it skipped. Never a
traceback, never ``internal error``.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from test_cli import FLOWS

import reprise as reprise_package
from reprise import Api
from reprise.cli import main
from reprise.errors import RunFileError
from reprise.run._reading import read_run_json, read_run_jsonl

CORRUPTIONS = ("empty", "list", "binary", "truncated")
SOURCE = str(Path(reprise_package.__file__).resolve().parents[1])


def corrupt(path: Path, kind: str) -> None:
    data = path.read_bytes()
    path.write_bytes(
        {
            "empty": b"",
            "list": b"[]\n",
            "binary": b"\x00\xff\xfe\x80garbage\x00\n\x93\n",
            "truncated": data[: len(data) // 2],
        }[kind]
    )


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A project with one completed run of ``cli_flows:flow`` (fetch -> double -> report)."""
    project = tmp_path_factory.mktemp("recorded")
    (project / "cli_flows.py").write_text(FLOWS)
    proc = reprise(project, "run", "cli_flows:flow", "--input", "n=3", "--progress", "none", in_process=False)
    assert proc.returncode == 0, proc.stderr
    run_id = next(p.name for p in (project / "runs").iterdir() if p.name.startswith("run_"))
    return project, run_id


@pytest.fixture
def project(recorded: tuple[Path, str], tmp_path: Path) -> Path:
    """A copy of the recorded project, to damage."""
    source, _ = recorded
    copy = tmp_path / "project"
    shutil.copytree(source, copy, symlinks=True)
    for name in (".index.sqlite", ".index.sqlite-wal", ".index.sqlite-shm"):
        (copy / "runs" / name).unlink(missing_ok=True)
    return copy


def reprise(project: Path, *args: str, in_process: bool = True) -> subprocess.CompletedProcess[str]:
    """``reprise ARGS`` in ``project``: in this process (faster), or in a subprocess."""
    if not in_process:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")}
        env["PYTHONPATH"] = SOURCE  # the reprise under test, from any working directory
        return subprocess.run(
            [sys.executable, "-m", "reprise.cli", *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(project)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main([*args] if "--run-root" in args else [*args, "--run-root", str(project / "runs")])
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def check(proc: subprocess.CompletedProcess[str], run_id: str, file: str, *, code: int) -> str:
    """The command exited ``code`` and its stderr names the run and the file, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert f"run {run_id}: {file}" in proc.stderr, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_metadata(project: Path, recorded: tuple[Path, str], kind: str) -> None:
    _, run_id = recorded
    corrupt(project / "runs" / run_id / ".trace" / "metadata.json", kind)
    for command in (["show", run_id], ["view", run_id], ["show", run_id, "--json"]):
        err = check(reprise(project, *command), run_id, ".trace/metadata.json", code=2)
        assert len(err.strip().splitlines()) == 1
    # The listing goes on without the run, and says why it is missing.
    listing = reprise(project, "runs")
    assert check(listing, run_id, ".trace/metadata.json", code=0)
    assert "skipped" in listing.stderr and run_id not in listing.stdout
    rerun = reprise(project, "rerun", run_id, "--from", "flow.double", "--progress", "none", in_process=False)
    check(rerun, run_id, ".trace/metadata.json", code=2)


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize("node", ["flow/double", "flow"])
def test_result(project: Path, recorded: tuple[Path, str], kind: str, node: str) -> None:
    _, run_id = recorded
    corrupt(project / "runs" / run_id / node / "result.json", kind)
    show = reprise(project, "show", run_id)
    check(show, run_id, f"{node}/result.json", code=0)
    assert "unreadable" in show.stdout  # the element says so in the tree
    view = reprise(project, "view", run_id, "-o", str(project / "v.html"))
    check(view, run_id, f"{node}/result.json", code=0)


@pytest.mark.parametrize("kind", ["list", "binary", "truncated"])
def test_trace(project: Path, recorded: tuple[Path, str], kind: str) -> None:
    _, run_id = recorded
    trace = project / "runs" / run_id / ".trace" / "trace.jsonl"
    good = trace.read_bytes()
    corrupt(trace, kind)
    if kind != "truncated":
        trace.write_bytes(trace.read_bytes() + good)  # bad lines first, then the real spans
    proc = reprise(project, "trace", run_id)
    check(proc, run_id, ".trace/trace.jsonl line", code=0)
    assert "flow.double" in proc.stdout or kind == "truncated"
    view = reprise(project, "view", run_id, "-o", str(project / "v.html"))
    check(view, run_id, ".trace/trace.jsonl", code=0)


def test_binary_trace_in_a_subprocess(project: Path, recorded: tuple[Path, str]) -> None:
    """The reproduction from the issue (then ``python -m reprise.observability``, now
    ``reprise trace``) on a binary trace."""
    _, run_id = recorded
    (project / "runs" / run_id / ".trace" / "trace.jsonl").write_bytes(b"\x00\xff\xfe\x80\n" * 3)
    proc = reprise(project, "trace", run_id, in_process=False)
    check(proc, run_id, ".trace/trace.jsonl line 1", code=0)
    assert "not UTF-8" in proc.stderr


@pytest.mark.parametrize("kind", ["list", "binary", "truncated"])
@pytest.mark.parametrize(
    ("file", "command"),
    [("logs.jsonl", "logs"), ("user_metrics.jsonl", "metrics"), ("alerts.jsonl", "alerts")],
)
def test_jsonl_lines(project: Path, recorded: tuple[Path, str], kind: str, file: str, command: str) -> None:
    _, run_id = recorded
    corrupt(project / "runs" / run_id / ".trace" / file, kind)
    args = [command] if command == "alerts" else [command, run_id]
    check(reprise(project, *args), run_id, f".trace/{file} line", code=0)


@pytest.mark.parametrize("kind", CORRUPTIONS)
@pytest.mark.parametrize(
    "file", [".trace/definition.json", "static_inputs/static_inputs.json", "static_inputs/initial_inputs.json"]
)
def test_rerun_inputs(project: Path, recorded: tuple[Path, str], kind: str, file: str) -> None:
    _, run_id = recorded
    corrupt(project / "runs" / run_id / file, kind)
    rerun = reprise(project, "rerun", run_id, "--from", "flow.double", "--progress", "none")
    check(rerun, run_id, file, code=2)


def test_run_root_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("")
    for command in (["runs"], ["alerts"], ["show", "run_20260101_000000_abcdef"], ["run", "cli_flows:flow"]):
        proc = reprise(tmp_path, *command, "--run-root", str(tmp_path / "not-a-dir"))
        assert proc.returncode == 2, proc.stderr
        assert "is not a directory" in proc.stderr and "internal error" not in proc.stderr


def test_api_raises_run_file_error(project: Path, recorded: tuple[Path, str]) -> None:
    """Without a ``problems`` list the Api raises, naming the run and the file."""
    _, run_id = recorded
    (project / "runs" / run_id / ".trace" / "logs.jsonl").write_bytes(b"[]\n{}\n")
    with pytest.raises(RunFileError, match=rf"run {run_id}: \.trace/logs\.jsonl line 1 holds a list") as caught:
        Api(project / "runs").logs(run_id)
    assert caught.value.run_id == run_id
    problems: list[RunFileError] = []
    assert Api(project / "runs").logs(run_id, problems=problems) == [{}]
    assert len(problems) == 1


def test_reader_messages(tmp_path: Path) -> None:
    run = tmp_path / "run_20260101_000000_abcdef"
    (run / ".trace").mkdir(parents=True)
    file = run / ".trace" / "metadata.json"
    for data, message in [
        (b"", "is empty"),
        (b"\xff\xfe", "is not UTF-8"),
        (b'{"a": ', "is cut short"),
        (b"{} x", "is not valid JSON"),
    ]:
        file.write_bytes(data)
        with pytest.raises(RunFileError, match=f"^run {run.name}: .trace/metadata.json {message}"):
            read_run_json(file)
    file.write_bytes(b'{"a": 1}\n{"b": ')  # a torn last line: skipped without a problems list
    assert list(read_run_jsonl(file)) == [{"a": 1}]
    with pytest.raises(FileNotFoundError):
        read_run_json(run / "missing.json")
