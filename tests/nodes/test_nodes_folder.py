"""The folder analyzer on folders that are not plain trees of text files.

FIFOs, devices behind symlinks, symlink loops, a directory named ``.gitignore`` and names that
are not UTF-8 are all things a user's folder can hold. Each test runs under a short timeout, so a
walk that blocks on a FIFO fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from reprise import FlowDefinition, FlowRunner, RunContext
from reprise.nodes import FolderAnalysis, FolderAnalyzerNode, SkippedPath
from reprise.nodes._folder_analyzer import FolderAnalysisOptions, analyze_folder

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

CONTENTS = FolderAnalysisOptions(include_contents=True)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "folder"
    root.mkdir()
    (root / "a.txt").write_text("alpha\n")
    return root


def skipped(analysis: FolderAnalysis) -> dict[str, str]:
    return {s.path: s.reason for s in analysis.skipped}


async def run_node(root: Path, ctx: RunContext) -> tuple[FolderAnalysis, Path]:
    """The analysis through a real run, and the run's ``outcome.json`` for the node."""
    node = FolderAnalyzerNode(str(root), include_contents=True)
    result = await FlowRunner(FlowDefinition().node("scan", node), ctx).run()
    assert isinstance(result.outcome, FolderAnalysis)
    outcome_files = list(ctx.run_dir.path.rglob("outcome.json"))
    assert len(outcome_files) == 1
    return result.outcome, outcome_files[0]


def test_a_fifo_is_skipped_and_said_so(folder: Path) -> None:
    os.mkfifo(folder / "pipe")
    analysis = analyze_folder(folder, CONTENTS)
    assert [f.path for f in analysis.files] == ["a.txt"]
    assert "FIFO" in skipped(analysis)["pipe"]


def test_a_symlink_to_a_fifo_is_not_read(folder: Path) -> None:
    os.mkfifo(folder / "pipe")
    (folder / "link").symlink_to(folder / "pipe")
    analysis = analyze_folder(folder, CONTENTS)
    link = {f.path: f for f in analysis.files}["link"]
    assert link.symlink and link.content is None
    assert "FIFO" in skipped(analysis)["link"]


def test_a_gitignore_that_is_a_fifo_is_skipped(folder: Path) -> None:
    os.mkfifo(folder / ".gitignore")
    analysis = analyze_folder(folder)
    assert [f.path for f in analysis.files] == ["a.txt"]
    assert "FIFO" in skipped(analysis)[".gitignore"]


def test_a_gitignore_symlink_to_dev_zero_is_not_read(folder: Path) -> None:
    (folder / ".gitignore").symlink_to("/dev/zero")
    analysis = analyze_folder(folder, CONTENTS)
    assert "not read" in skipped(analysis)[".gitignore"]
    assert {f.path for f in analysis.files} == {".gitignore", "a.txt"}


def test_a_symlink_to_dev_zero_is_not_read(folder: Path) -> None:
    (folder / "zero").symlink_to("/dev/zero")
    analysis = analyze_folder(folder, CONTENTS)
    assert {f.path: f.content for f in analysis.files}["zero"] is None
    assert "outside the root" in skipped(analysis)["zero"]


def test_a_huge_gitignore_is_read_only_up_to_a_bound(folder: Path) -> None:
    with open(folder / ".gitignore", "wb") as f:
        f.truncate(64 * 1024 * 1024)  # sparse: 64 MiB of NUL bytes, no disk used
    analysis = analyze_folder(folder)
    assert "larger than" in skipped(analysis)[".gitignore"]


async def test_a_symlink_loop_is_listed_not_followed(folder: Path, make_context: Callable[..., RunContext]) -> None:
    (folder / "x").symlink_to(folder / "y")
    (folder / "y").symlink_to(folder / "x")
    (folder / "self").symlink_to("self")
    analysis, _ = await run_node(folder, make_context("f"))
    assert {f.path for f in analysis.files} == {"a.txt", "self", "x", "y"}
    assert all("loop" in skipped(analysis)[p] for p in ("self", "x", "y"))


async def test_a_directory_named_gitignore_is_walked(folder: Path, make_context: Callable[..., RunContext]) -> None:
    (folder / ".gitignore").mkdir()
    (folder / ".gitignore" / "inside.txt").write_text("in\n")
    analysis, _ = await run_node(folder, make_context("f"))
    assert analysis.directories == [".gitignore"]
    assert {f.path for f in analysis.files} == {".gitignore/inside.txt", "a.txt"}
    assert analysis.skipped == []


async def test_a_name_that_is_not_utf8_is_reported(folder: Path, make_context: Callable[..., RunContext]) -> None:
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name\n")
    os.mkdir(os.path.join(os.fsencode(folder), b"d\xff"))
    with open(os.path.join(os.fsencode(folder), b"d\xff", b"in.txt"), "wb") as f:
        f.write(b"inside\n")
    analysis, outcome = await run_node(folder, make_context("f"))
    files = {f.path: f for f in analysis.files}
    assert files["caf\\xe9.txt"].content == "latin-1 name\n"
    assert files["d\\xff/in.txt"].content == "inside\n"
    assert analysis.directories == ["d\\xff"]
    assert "caf\\xe9.txt" in json.loads(outcome.read_text("utf-8"))["files"][1]["path"]


def test_a_root_given_as_str(folder: Path) -> None:
    analysis = analyze_folder(str(folder))
    assert [f.path for f in analysis.files] == ["a.txt"]


def test_skipped_entries_round_trip(folder: Path) -> None:
    os.mkfifo(folder / "pipe")
    node = FolderAnalyzerNode()
    analysis = analyze_folder(folder)
    assert node.load_outcome(node.dump_outcome(analysis)) == analysis
    assert analysis.skipped == [SkippedPath(path="pipe", reason=skipped(analysis)["pipe"])]
