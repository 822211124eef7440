"""FileOperationNode and FolderAnalyzerNode on real files in temporary directories."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reprise import FlowDefinition, FlowRunner, Ref, RunContext, RunFailedError
from reprise.dsl.nodes import (
    CreateFile,
    DeleteFile,
    FileChanges,
    FileOperationNode,
    MoveFile,
    PatchFile,
    UpdateFile,
)
from reprise.dsl.nodes.file_ops import confine
from reprise.errors import DefinitionError, NodeExecutionError

pytestmark = pytest.mark.anyio


async def run_ops(node: FileOperationNode, ctx: RunContext, **kw: Any) -> FileChanges:
    result = await FlowRunner(FlowDefinition().node("files", node, **kw), ctx).run()
    assert isinstance(result.outcome, FileChanges)
    return result.outcome


@pytest.fixture
def base(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


# -- operations ----------------------------------------------------------------------------------
async def test_create_update_patch_move_delete(base: Path, make_context: Callable[..., RunContext]) -> None:
    (base / "old.txt").write_text("bye\n")
    node = FileOperationNode(
        [
            CreateFile(path="pkg/app.py", content="print('hello')\n"),
            PatchFile(path="pkg/app.py", search="hello", replace="world"),
            UpdateFile(path="old.txt", content="still here\n"),
            MoveFile(path="old.txt", to="moved/new.txt"),
            CreateFile(path="tmp.txt", content="x"),
            DeleteFile(path="tmp.txt"),
        ],
        base_dir=str(base),
    )
    outcome = await run_ops(node, make_context("f"))

    assert (base / "pkg" / "app.py").read_text() == "print('world')\n"
    assert (base / "moved" / "new.txt").read_text() == "still here\n"
    assert not (base / "old.txt").exists() and not (base / "tmp.txt").exists()
    assert [c.op for c in outcome.changes] == ["create", "patch", "update", "move", "create", "delete"]
    assert outcome.changes[1].diff == (
        "--- a/pkg/app.py\n+++ b/pkg/app.py\n@@ -1 +1 @@\n-print('hello')\n+print('world')\n"
    )
    assert outcome.changes[0].diff.startswith("--- /dev/null\n+++ b/pkg/app.py\n")
    assert outcome.changes[5].diff.startswith("--- a/tmp.txt\n+++ /dev/null\n")
    assert outcome.declared_outcome_files == ["moved/new.txt", "pkg/app.py"]
    assert outcome.base_dir == str(base.resolve())


async def test_written_files_are_declared_outcome_files(base: Path, make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("f")
    await run_ops(FileOperationNode([CreateFile(path="a/b.txt", content="1")], base_dir=str(base)), ctx)
    declared = ctx.declared_outcome_files
    assert [(d.source, d.repo_path) for d in declared] == [((base / "a" / "b.txt").resolve(), "f/files/files/a/b.txt")]
    result = json.loads((ctx.require_run_dir().path / "f" / "files" / "result.json").read_text())
    assert result["outcome_files"][0]["repo_path"] == "f/files/files/a/b.txt"


async def test_default_base_is_the_node_directory(make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("f")
    outcome = await run_ops(FileOperationNode([CreateFile(path="notes.md", content="# hi\n")]), ctx)
    node_dir = ctx.require_run_dir().path / "f" / "files"
    assert (node_dir / "notes.md").read_text() == "# hi\n"
    assert outcome.base_dir == str(node_dir.resolve())


async def test_operations_from_an_earlier_node(base: Path, make_context: Callable[..., RunContext]) -> None:
    def propose() -> list[dict[str, str]]:
        # Data, never a template: '$var{x}' is written literally.
        return [{"op": "create", "path": "out.txt", "content": "cost: $var{x}\n"}]

    flow = (
        FlowDefinition()
        .node("propose", propose)
        .node("files", FileOperationNode(base_dir=str(base)), inputs={"operations": Ref("propose")})
    )
    await FlowRunner(flow, make_context("f")).run()
    assert (base / "out.txt").read_text() == "cost: $var{x}\n"


async def test_outcome_round_trips(base: Path, make_context: Callable[..., RunContext]) -> None:
    node = FileOperationNode([CreateFile(path="x.txt", content="x\n")], base_dir=str(base))
    ctx = make_context("f")
    outcome = await run_ops(node, ctx)
    stored = json.loads((ctx.require_run_dir().path / "f" / "files" / "outcome.json").read_text())
    assert node.load_outcome(stored) == outcome


async def test_update_keeps_permissions(base: Path, make_context: Callable[..., RunContext]) -> None:
    script = base / "run.sh"
    script.write_text("echo 1\n")
    script.chmod(0o755)
    await run_ops(
        FileOperationNode([PatchFile(path="run.sh", search="1", replace="2")], base_dir=str(base)), make_context("f")
    )
    assert script.read_text() == "echo 2\n" and os.access(script, os.X_OK)


@pytest.mark.parametrize(
    ("op", "message"),
    [
        (CreateFile(path="exists.txt", content="new"), "file exists"),
        (UpdateFile(path="missing.txt", content="x"), "does not exist"),
        (DeleteFile(path="missing.txt"), "does not exist"),
        (PatchFile(path="exists.txt", search="absent", replace="x"), "found 0 times, expected 1"),
        (PatchFile(path="exists.txt", search="o", replace="0"), "found 2 times, expected 1"),
        (MoveFile(path="exists.txt", to="other.txt"), "target 'other.txt' exists"),
    ],
)
async def test_failing_operation_undoes_the_batch(
    op: Any, message: str, base: Path, make_context: Callable[..., RunContext]
) -> None:
    (base / "exists.txt").write_text("old foo\n")
    (base / "other.txt").write_text("other\n")
    node = FileOperationNode(
        [
            CreateFile(path="new/first.txt", content="1"),
            UpdateFile(path="exists.txt", content="changed foo\n"),
            op,
        ],
        base_dir=str(base),
    )
    with pytest.raises(RunFailedError) as info:
        await run_ops(node, make_context("f"))
    assert info.value.path == "f.files"
    assert f"operation 3 ({op.op} " in str(info.value) and message in str(info.value)
    # The first two operations were undone.
    assert (base / "exists.txt").read_text() == "old foo\n"
    assert not (base / "new").exists()
    assert sorted(p.name for p in base.iterdir()) == ["exists.txt", "other.txt"]


async def test_patch_expected_count(base: Path, make_context: Callable[..., RunContext]) -> None:
    (base / "a.txt").write_text("x x x\n")
    await run_ops(
        FileOperationNode([PatchFile(path="a.txt", search="x", replace="y", expected=3)], base_dir=str(base)),
        make_context("f"),
    )
    assert (base / "a.txt").read_text() == "y y y\n"


def test_invalid_operation_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match="invalid file operation"):
        FileOperationNode([{"op": "chmod", "path": "x"}])


# -- confinement ---------------------------------------------------------------------------------
@pytest.fixture
def outside(tmp_path: Path) -> Path:
    target = tmp_path / "outside"
    target.mkdir()
    (target / "secret.txt").write_text("secret\n")
    return target


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("../outside/secret.txt", "'..' is not allowed"),
        ("sub/../../outside/secret.txt", "'..' is not allowed"),
        ("/etc/passwd", "absolute paths are not allowed"),
        ("~/x.txt", "absolute paths are not allowed"),
        ("", "empty path"),
    ],
)
def test_confine_rejects_paths_that_leave(path: str, message: str, base: Path) -> None:
    with pytest.raises(NodeExecutionError, match=message):
        confine(base.resolve(), path)


def test_confine_rejects_symlinks_pointing_outside(base: Path, outside: Path) -> None:
    (base / "link-file").symlink_to(outside / "secret.txt")
    (base / "link-dir").symlink_to(outside)
    root = base.resolve()
    with pytest.raises(NodeExecutionError, match="symlink pointing outside"):
        confine(root, "link-file")
    with pytest.raises(NodeExecutionError, match="symlink pointing outside"):
        confine(root, "link-file", link=True)
    with pytest.raises(NodeExecutionError, match="leaves the base directory through a symlink"):
        confine(root, "link-dir/secret.txt")
    with pytest.raises(NodeExecutionError, match="leaves the base directory through a symlink"):
        confine(root, "link-dir/new.txt")


def test_confine_allows_symlinks_inside(base: Path) -> None:
    (base / "real").mkdir()
    (base / "alias").symlink_to(base / "real")
    root = base.resolve()
    assert confine(root, "alias/f.txt") == root / "real" / "f.txt"
    assert confine(root, "./real/f.txt") == root / "real" / "f.txt"


@pytest.mark.parametrize(
    "op",
    [
        CreateFile(path="../outside/new.txt", content="x"),
        UpdateFile(path="link-dir/secret.txt", content="pwned"),
        PatchFile(path="link-file", search="secret", replace="pwned"),
        DeleteFile(path="link-file"),
        MoveFile(path="ok.txt", to="link-dir/ok.txt"),
        MoveFile(path="/etc/hostname", to="ok2.txt"),
    ],
    ids=["dotdot", "dir-symlink", "file-symlink", "delete-symlink", "move-into-symlink", "move-absolute"],
)
async def test_no_operation_escapes_the_base(
    op: Any, base: Path, outside: Path, make_context: Callable[..., RunContext]
) -> None:
    (base / "link-file").symlink_to(outside / "secret.txt")
    (base / "link-dir").symlink_to(outside)
    (base / "ok.txt").write_text("ok\n")
    node = FileOperationNode([CreateFile(path="first.txt", content="1"), op], base_dir=str(base))
    with pytest.raises(RunFailedError, match=r"operation 2 \("):
        await run_ops(node, make_context("f"))
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "secret\n"
    assert not (base / "first.txt").exists()  # paths are checked before anything is written
