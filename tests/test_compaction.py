"""Packs folded behind the runs that wrote them (reprise.run.compaction)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import git
import pytest

from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext
from reprise.run import compaction, wait_for_compactions
from reprise.run.outcome_repo import OutcomeRepository

REAL_GIT = shutil.which("git")


def _chain(n: int) -> FlowDefinition:
    flow = FlowDefinition().node("n0", lambda x: x, inputs={"x": Initial("x")})
    for i in range(1, n):
        flow.node(f"n{i}", lambda v: v + 1, inputs={"v": Ref(f"n{i - 1}")})
    return flow


def _run(tmp_path: Path, x: int) -> str:
    return FlowRunner(_chain(3), RunContext("root", tmp_path, initial_inputs={"x": x})).run_sync().run_id


def _git_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs" / "outcome" / tmp_path.name / ".git"


def _packs(git_dir: Path) -> list[Path]:
    return list((git_dir / "objects" / "pack").glob("*.pack"))


def _wrapper(tmp_path: Path, body: str) -> Path:
    """A ``git`` that runs ``body`` (sh) before handing over to the real git: to hold a repack
    back, or to refuse an option as an old git does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "git"
    script.write_text(f'#!/bin/sh\n{textwrap.dedent(body)}\nexec {REAL_GIT} "$@"\n')
    script.chmod(0o755)
    return script


def _packs_to_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runs: int) -> None:
    """``runs`` runs (a pack each) with no fold on the way, then a limit of one pack."""
    monkeypatch.setattr(compaction, "MAX_PACKS", 1000)
    for x in range(runs):
        _run(tmp_path, x)
    assert len(_packs(_git_dir(tmp_path))) == runs
    monkeypatch.setattr(compaction, "MAX_PACKS", 1)


@pytest.fixture(autouse=True)
def _no_repack_left() -> object:
    yield
    wait_for_compactions()


def test_a_commit_past_the_limit_starts_the_fold_and_returns_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "MAX_PACKS", 2)
    ids = [_run(tmp_path, x) for x in range(2)]
    assert wait_for_compactions() == 0  # two packs: nothing to fold
    ids.append(_run(tmp_path, 2))
    # The third commit made a third pack: its run returned with the fold started, not done
    # (done in line, it would have been waited for and reaped, and there would be none here).
    repo = OutcomeRepository(_git_dir(tmp_path).parent)
    assert repo.head_of(ids[-1]) is not None
    assert wait_for_compactions() == 1
    git_dir = _git_dir(tmp_path)
    assert len(_packs(git_dir)) <= 2
    readable = git.Repo(git_dir.parent)
    for x, run_id in enumerate(ids):  # nothing was lost by folding
        blob = readable.commit(f"run/{run_id}").tree / "root/n2/outcome.json"
        assert blob.data_stream.read().strip() == str(x + 2).encode()
    fsck = subprocess.run(["git", "fsck", "--strict"], cwd=git_dir.parent, capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_a_repack_still_running_is_not_started_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _packs_to_fold(tmp_path, monkeypatch, 3)
    git_dir = _git_dir(tmp_path)
    gate, log = tmp_path / "gate", tmp_path / "started"
    held = _wrapper(
        tmp_path,
        f"""
        echo "$@" >> {log}
        while [ ! -e {gate} ]; do sleep 0.01; done
        """,
    )
    env = dict(os.environ)
    compaction.compact_in_background(str(held), str(git_dir), env)
    compaction.compact_in_background(str(held), str(git_dir), env)  # the first still runs
    gate.touch()
    assert wait_for_compactions() == 1
    assert len(log.read_text().splitlines()) == 1
    assert len(_packs(git_dir)) == 1


def test_a_git_without_geometric_repack_folds_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compaction, "_NO_GEOMETRIC", False)
    _packs_to_fold(tmp_path, monkeypatch, 3)
    git_dir = _git_dir(tmp_path)
    old_git = _wrapper(
        tmp_path,
        """
        for a in "$@"; do
          if [ "$a" = "--geometric=2" ]; then echo "error: unknown option \\`geometric=2'" >&2; exit 129; fi
        done
        """,
    )
    compaction.compact_in_background(str(old_git), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert len(_packs(git_dir)) == 3  # refused: nothing folded
    assert compaction._NO_GEOMETRIC
    # The next commit folds everything the old way.
    compaction.compact_in_background(str(old_git), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert len(_packs(git_dir)) == 1


def test_another_failure_of_a_repack_does_not_give_up_geometric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compaction, "_NO_GEOMETRIC", False)
    _packs_to_fold(tmp_path, monkeypatch, 3)
    git_dir = _git_dir(tmp_path)
    busy = _wrapper(tmp_path, "echo \"fatal: Unable to create 'packed-refs.lock': File exists.\" >&2; exit 128")
    compaction.compact_in_background(str(busy), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert not compaction._NO_GEOMETRIC
    assert len(_packs(git_dir)) == 3  # failed: tried again by the next commit
    compaction.compact_in_background(str(REAL_GIT), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert len(_packs(git_dir)) < 3


def test_a_failure_naming_a_path_with_geometric_in_it_does_not_give_up_geometric(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two processes folding one repository at once: the later repack dies (exit 128) naming a
    # pack the other removed, by its path. A project called "geometric_flows" puts the word in
    # that path; only git's refusal of the option itself (a usage error, 129) means an old git.
    project = tmp_path / "geometric_flows"
    project.mkdir()
    monkeypatch.setattr(compaction, "_NO_GEOMETRIC", False)
    _packs_to_fold(project, monkeypatch, 3)
    git_dir = _git_dir(project)
    pack = _packs(git_dir)[0]
    busy = _wrapper(
        tmp_path,
        f"""
        echo "error: packfile {pack} index unavailable" >&2
        echo "fatal: packfile {pack} cannot be accessed" >&2
        exit 128
        """,
    )
    compaction.compact_in_background(str(busy), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert not compaction._NO_GEOMETRIC
    compaction.compact_in_background(str(REAL_GIT), str(git_dir), dict(os.environ))
    assert wait_for_compactions() == 1
    assert len(_packs(git_dir)) == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_neither_waits_for_nor_reaps_its_parents_repack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _packs_to_fold(tmp_path, monkeypatch, 2)
    gate = tmp_path / "gate"
    held = _wrapper(tmp_path, f"while [ ! -e {gate} ]; do sleep 0.01; done")
    compaction.compact_in_background(str(held), str(_git_dir(tmp_path)), dict(os.environ))
    pid = os.fork()
    if pid == 0:  # the child: it must find no repack of its own to wait for
        os._exit(wait_for_compactions(timeout=0.5))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    gate.touch()
    assert wait_for_compactions() == 1  # still the parent's to reap


SCRIPT = """
import sys
from reprise import FlowDefinition, FlowRunner, Initial, RunContext
from reprise.run import compaction

compaction.MAX_PACKS = 1
flow = FlowDefinition().node("a", lambda x: x, inputs={"x": Initial("x")})
for x in range(2):
    FlowRunner(flow, RunContext("root", sys.argv[1], initial_inputs={"x": x})).run_sync()
print("returned", flush=True)
"""


def test_a_process_waits_for_its_repack_before_it_exits(tmp_path: Path) -> None:
    done = tmp_path / "repack-done"
    slow = _wrapper(
        tmp_path,
        f"""
        case "$*" in
          *repack*) sleep 0.5; {REAL_GIT} "$@"; s=$?; echo $s > {done}; exit $s;;
        esac
        """,
    )
    script = tmp_path / "two_runs.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PATH": f"{slow.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "proj")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "returned"
    assert done.read_text().strip() == "0"  # finished before the process that started it exited


def test_a_repack_that_writes_a_lot_of_errors_does_not_stall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With GIT_TRACE* set, git writes far more than a pipe holds; nobody reads its errors before
    # it ends, so written to a pipe they would hold it forever.
    _packs_to_fold(tmp_path, monkeypatch, 3)
    git_dir = _git_dir(tmp_path)
    chatty = _wrapper(tmp_path, "head -c 300000 /dev/zero | tr '\\\\0' x >&2")
    compaction.compact_in_background(str(chatty), str(git_dir), dict(os.environ))
    deadline = time.monotonic() + 30
    while len(_packs(git_dir)) > 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # nobody reads its errors meanwhile, as between two commits
    assert len(_packs(git_dir)) == 1  # it finished without anyone reading: folded
    assert wait_for_compactions() == 1


def test_packs_are_counted_every_few_commits_and_still_folded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MAX_PACKS 8: counted at the first commit and then every second one (8 // 4).
    from reprise.run.outcome_repo import OutcomeFile

    monkeypatch.setattr(compaction, "MAX_PACKS", 8)
    repo = OutcomeRepository(tmp_path / "repo")
    git_dir = Path(repo.git_dir())
    seen = []
    for i in range(30):
        repo.commit_run(f"r{i}", [OutcomeFile("", "root/x", data=b"%d" % i)], message="m")
        seen.append(len(_packs(git_dir)))
        wait_for_compactions()  # each fold done before the next commit: the count alone decides
    assert max(seen) <= 8 + 2  # at most one uncounted commit past the limit
    assert seen[-1] < 30
