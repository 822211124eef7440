"""The run index: correct listings of 10,000 runs, always in line with the run directories."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reprise import FlowDefinition, FlowRunner, RunContext
from reprise._api import Api
from reprise.run._index import INDEX_FILE, RunIndex
from reprise.run._status import HOST, RunStatus, process_start_marker

N_RUNS = 10_000
_STATUSES = ("completed", "failed", "cancelled")


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def _write_run(root: Path, run_id: str, **fields: Any) -> None:
    trace = root / run_id / ".trace"
    os.makedirs(trace.parent, exist_ok=True)
    os.mkdir(trace)
    meta = {
        "run_id": run_id,
        "root_component_id": "flow",
        "status": "completed",
        "started_at": "2025-01-01T00:00:00.000000Z",
        "pid": 1,
        "host": "another-host",
        "reprise_version": "0.1.0",
        "tags": {},
        **fields,
    }
    fd = os.open(trace / "metadata.json", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, json.dumps(meta).encode())
    os.close(fd)


def _stamp(i: int) -> tuple[str, str]:
    """Run i's id and start time: one second apart, so newest first is descending i."""
    t = 1_735_689_600 + i  # 2025-01-01T00:00:00Z
    day = time.strftime("%Y%m%d_%H%M%S", time.gmtime(t))
    return f"run_{day}_{i:06x}", time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(t))


@pytest.fixture(scope="module")
def big_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """10,000 synthetic run directories: statuses cycle, run 0 crashed (a dead pid on this
    host), run 1 is running (this process), a few carry tags.

    Made on /dev/shm when there is one: 20,000 directories and 10,000 files cost several
    seconds on a busy disk and a fraction of that in memory, and the test is about the index."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        base = Path(tempfile.mkdtemp(prefix="reprise-index-test-", dir=shm))
    else:
        base = tmp_path_factory.mktemp("big")
    root = base / "runs"
    root.mkdir()
    dead = _dead_pid()
    expected: dict[str, str] = {}
    t0 = time.perf_counter()
    for i in range(N_RUNS):
        run_id, started = _stamp(i)
        fields: dict[str, Any] = {"started_at": started, "status": _STATUSES[i % 3]}
        if i == 0:
            fields.update(status="running", pid=dead, host=HOST, pid_start=None)
        elif i == 1:
            fields.update(status="running", pid=os.getpid(), host=HOST, pid_start=process_start_marker(os.getpid()))
        if i % 1000 == 7:
            fields["tags"] = {"experiment": "grid"}
        _write_run(root, run_id, **fields)
        expected[run_id] = "crashed" if i == 0 else "running" if i == 1 else fields["status"]
    print(f"\nwrote {N_RUNS} run directories in {time.perf_counter() - t0:.2f}s")
    yield root, expected
    if base.parent == shm:
        shutil.rmtree(base, ignore_errors=True)


def test_listing_ten_thousand_runs(big_root: tuple[Path, dict[str, str]]) -> None:
    root, expected = big_root
    index = RunIndex(root)
    t0 = time.perf_counter()
    first = index.runs()  # builds the index from nothing
    t1 = time.perf_counter()
    again = index.runs()  # the usual case: sync finds nothing new
    t2 = time.perf_counter()
    print(f"first listing (index built) {t1 - t0:.3f}s, next listing {t2 - t1:.3f}s")

    assert len(first) == len(again) == N_RUNS
    assert {r.run_id: r.status.value for r in again} == expected
    ids = [r.run_id for r in again]
    assert ids == sorted(expected, reverse=True)  # newest first
    assert again[0].run_dir == root / ids[0]

    failed = index.runs(status="failed")
    assert {r.run_id for r in failed} == {k for k, v in expected.items() if v == "failed"}
    assert [r.run_id for r in index.runs(status="crashed")] == [_stamp(0)[0]]
    assert [r.run_id for r in index.runs(status="running")] == [_stamp(1)[0]]
    assert len(index.runs(status=["running", "crashed", "cancelled"])) == 2 + sum(
        1 for v in expected.values() if v == "cancelled"
    )
    assert [r.run_id for r in index.runs(limit=3)] == ids[:3]
    tagged = index.runs(tags={"experiment": "grid"})
    assert len(tagged) == 10 and all(r.tags == {"experiment": "grid"} for r in tagged)
    assert index.runs(root="other") == []

    with sqlite3.connect(root / INDEX_FILE) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == N_RUNS


def test_cli_lists_ten_thousand_runs(big_root: tuple[Path, dict[str, str]]) -> None:
    root, expected = big_root
    RunIndex(root).sync()
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "runs", "--all", "--experiments", "--json", "--run-root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    envelope = json.loads(proc.stdout)
    print(f"`reprise runs --json` over {N_RUNS} runs: {elapsed:.3f}s (process start and imports included)")
    assert envelope["command"] == "runs" and envelope["ok"] is True
    assert {r["run_id"]: r["status"] for r in envelope["data"]} == expected
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "runs", "--run-root", str(root), "--status", "crashed"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    # Runs recorded before runs had names show "-" in the NAME column.
    assert len(lines) == 2 and lines[1].split()[:3] == [_stamp(0)[0], "-", "crashed"]


def test_index_follows_the_run_directories(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for i in range(5):
        _write_run(root, _stamp(i)[0], started_at=_stamp(i)[1])
    index = RunIndex(root)
    assert len(index.runs()) == 5

    # A run directory the index never heard of is picked up.
    _write_run(root, _stamp(10)[0], started_at=_stamp(10)[1], status="failed", error_msg="boom")
    runs = index.runs()
    assert runs[0].run_id == _stamp(10)[0] and runs[0].status is RunStatus.FAILED and runs[0].error_msg == "boom"

    # A changed metadata file is read again; a deleted run directory disappears.
    meta_file = root / _stamp(0)[0] / ".trace" / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["status"] = "cancelled"
    meta_file.write_text(json.dumps(meta, indent=2))
    for p in sorted((root / _stamp(1)[0]).rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (root / _stamp(1)[0]).rmdir()
    statuses = {r.run_id: r.status for r in index.runs()}
    assert statuses[_stamp(0)[0]] is RunStatus.CANCELLED
    assert _stamp(1)[0] not in statuses and len(statuses) == 5

    # Not runs: other names in the run root, a directory without metadata, unreadable metadata.
    (root / "outcome").mkdir()
    (root / "run_20250101_000000_ffffff").mkdir()
    _write_run(root, _stamp(20)[0])
    (root / _stamp(20)[0] / ".trace" / "metadata.json").write_text("{not json")
    assert len(index.runs()) == 5


def test_corrupt_or_unusable_index(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for i in range(3):
        _write_run(root, _stamp(i)[0], started_at=_stamp(i)[1])
    index = RunIndex(root)
    assert len(index.runs()) == 3

    # Garbage in place of the database: thrown away and rebuilt, silently.
    for suffix in ("", "-wal", "-shm"):
        Path(f"{root / INDEX_FILE}{suffix}").unlink(missing_ok=True)
    (root / INDEX_FILE).write_bytes(b"this is not a database" * 100)
    assert len(RunIndex(root).runs()) == 3
    with sqlite3.connect(root / INDEX_FILE) as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 3

    # --rebuild-index, from the command line.
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "runs", "--rebuild-index", "--json", "--run-root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["data"]) == 3

    # An index that cannot be opened at all (here: a directory in its place): the listing
    # reads the run directories instead.
    other = tmp_path / "other"
    for i in range(2):
        _write_run(other, _stamp(i)[0], started_at=_stamp(i)[1])
    (other / INDEX_FILE).mkdir()
    assert [r.run_id for r in RunIndex(other).runs()] == [_stamp(1)[0], _stamp(0)[0]]


def test_runs_are_indexed_when_they_start_and_complete(tmp_path: Path) -> None:
    seen: list[str] = []

    def look() -> str:
        with sqlite3.connect(tmp_path / "runs" / INDEX_FILE) as conn:
            row = conn.execute("SELECT status FROM runs").fetchone()
        seen.append(row[0])
        return str(row[0])

    ctx = RunContext(root_component_id="flow", project_root=tmp_path, outcome_repo=False)
    result = FlowRunner(FlowDefinition().node("look", look), ctx).run_sync()
    assert result.ok
    assert seen == ["running"]  # recorded at set-up, before any node ran
    with sqlite3.connect(tmp_path / "runs" / INDEX_FILE) as conn:
        assert conn.execute("SELECT run_id, status FROM runs").fetchall() == [(result.run_id, "completed")]
    info = Api(tmp_path / "runs").run(result.run_id)
    assert info.status is RunStatus.COMPLETED and info.duration_s is not None


def test_a_process_keeps_only_a_few_index_connections_open(tmp_path: Path) -> None:
    """Experiment workers touch many run roots: cached connections stay bounded."""
    from reprise.run import _index as index_module

    for i in range(20):
        root = tmp_path / f"root{i}"
        root.mkdir()
        assert RunIndex(root).runs() == []
    mine = [k for k in index_module._CONNECTIONS if k.startswith(str(tmp_path))]
    assert 1 <= len(mine) <= index_module._MAX_CONNECTIONS
    assert str(tmp_path / "root19" / INDEX_FILE) in mine  # the newest stays
