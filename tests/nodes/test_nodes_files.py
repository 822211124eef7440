"""FileOperationNode and FolderAnalyzerNode on real files in temporary directories."""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reprise import FlowDefinition, FlowRunner, Initial, Ref, RunContext, RunFailedError
from reprise.errors import DefinitionError, NodeExecutionError
from reprise.nodes import (
    CreateFile,
    DeleteFile,
    DiffFile,
    ExtensionStats,
    FileChanges,
    FileOperationNode,
    FolderAnalysis,
    FolderAnalyzerNode,
    MoveFile,
    PatchFile,
    UpdateFile,
)
from reprise.nodes._file_ops import apply_unified_diff, confine
from reprise.nodes._folder_analyzer import FolderAnalysisOptions, IgnoreRules, analyze_folder

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
    # Declared files from outside the node directory are copied into it at declaration.
    (copy,) = declared
    assert copy.repo_path == "f/files/files/a/b.txt"
    assert (
        copy.source.parts[-4:] == ("files", "files", "a", "b.txt") and copy.source != (base / "a" / "b.txt").resolve()
    )
    assert copy.source.read_bytes() == (base / "a" / "b.txt").read_bytes()
    result = json.loads((ctx.require_run_dir().path / "f" / "files" / "result.json").read_text())
    assert result["outcome_files"][0]["repo_path"] == "f/files/files/a/b.txt"


async def test_default_base_is_the_node_directory(make_context: Callable[..., RunContext]) -> None:
    ctx = make_context("f")
    outcome = await run_ops(FileOperationNode([CreateFile(path="notes.md", content="# hi\n")]), ctx)
    node_dir = ctx.require_run_dir().path / "f" / "files"
    assert (node_dir / "notes.md").read_text() == "# hi\n"
    # Named "." in the outcome (its path differs in every run); result.json has the path.
    assert outcome.base_dir == "."
    assert json.loads((node_dir / "result.json").read_text())["base_dir"] == str(node_dir.resolve())


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


# -- .gitignore rules ----------------------------------------------------------------------------
def ignored(patterns: str, path: str, is_dir: bool = False, nested: dict[str, str] | None = None) -> bool:
    rules = IgnoreRules()
    rules.add("", patterns)
    for directory, text in (nested or {}).items():
        rules.add(directory, text)
    return rules.ignored(path, is_dir)


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "expected"),
    [
        # globs match the name at any depth
        ("*.log", "debug.log", False, True),
        ("*.log", "a/b/debug.log", False, True),
        ("*.log", "debug.log.txt", False, False),
        ("debug?.log", "debug1.log", False, True),
        ("debug?.log", "debug10.log", False, False),
        ("debug[0-9].log", "debug7.log", False, True),
        ("debug[!0-9].log", "debuga.log", False, True),
        ("debug[!0-9].log", "debug7.log", False, False),
        # directory-only patterns
        ("build/", "build", True, True),
        ("build/", "build", False, False),
        ("build/", "src/build", True, True),
        # anchored patterns: a leading or middle slash
        ("/todo.txt", "todo.txt", False, True),
        ("/todo.txt", "sub/todo.txt", False, False),
        ("doc/frotz", "doc/frotz", True, True),
        ("doc/frotz", "a/doc/frotz", True, False),
        ("doc/*.txt", "doc/notes.txt", False, True),
        ("doc/*.txt", "doc/sub/notes.txt", False, False),
        # '**'
        ("**/logs", "logs", True, True),
        ("**/logs", "deep/down/logs", True, True),
        ("**/logs/debug.log", "x/logs/debug.log", False, True),
        ("abc/**", "abc/x/y.txt", False, True),
        ("abc/**", "abc", True, False),
        ("a/**/b", "a/b", False, True),
        ("a/**/b", "a/x/y/b", False, True),
        ("a/**/b", "a/x/c", False, False),
        # negation: the last matching rule wins
        ("*.log\n!keep.log", "keep.log", False, False),
        ("*.log\n!keep.log", "drop.log", False, True),
        ("!keep.log\n*.log", "keep.log", False, True),
        # comments, escapes, blank lines, trailing spaces
        ("# comment\n\n*.tmp   ", "x.tmp", False, True),
        ("\\#file", "#file", False, True),
        ("\\!important", "!important", False, True),
        ("name\\ ", "name ", False, True),
    ],
)
def test_gitignore_rules(patterns: str, path: str, is_dir: bool, expected: bool) -> None:
    assert ignored(patterns, path, is_dir) is expected


def test_nested_gitignore_overrides_and_is_relative() -> None:
    nested = {"pkg": "!important.log\n/local.txt\n"}
    assert ignored("*.log", "pkg/important.log", nested=nested) is False
    assert ignored("*.log", "pkg/other.log", nested=nested) is True
    assert ignored("*.log", "important.log", nested=nested) is True  # only below pkg/
    assert ignored("", "pkg/local.txt", nested=nested) is True
    assert ignored("", "pkg/sub/local.txt", nested=nested) is False  # anchored to pkg/


# -- the folder analyzer -------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    files = {
        ".gitignore": "*.log\nbuild/\n/secret.txt\n!keep.log\n",
        "README.md": "# Title\n\nsome words here\n",
        "secret.txt": "top secret\n",
        "keep.log": "kept\n",
        "debug.log": "noise\n",
        "build/out.bin": "compiled\n",
        "src/app.py": "print('hi')\n",
        "src/util.py": "x = 1\n",
        "src/.gitignore": "generated/\n!debug.log\n",
        "src/generated/g.py": "g = 1\n",
        "src/debug.log": "wanted here\n",
        "src/nested/secret.txt": "not anchored here\n",
        "data/blob.dat": "",
        ".git/config": "[core]\n",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "data" / "blob.dat").write_bytes(b"\x00\x01binary" * 10)
    return root


async def test_folder_analysis_respects_gitignore(project: Path, make_context: Callable[..., RunContext]) -> None:
    node = FolderAnalyzerNode()
    result = await FlowRunner(
        FlowDefinition().node("scan", node, inputs={"root": Initial("folder")}),
        make_context("f", initial_inputs={"folder": str(project)}),
    ).run()
    analysis = result.outcome
    assert isinstance(analysis, FolderAnalysis)
    assert [f.path for f in analysis.files] == [
        ".gitignore",
        "README.md",
        "data/blob.dat",
        "keep.log",
        "src/.gitignore",
        "src/app.py",
        "src/debug.log",
        "src/nested/secret.txt",
        "src/util.py",
    ]
    assert analysis.directories == ["data", "src", "src/nested"]
    assert analysis.file_count == 9 and analysis.dir_count == 3
    # .git, secret.txt, debug.log, build/, src/generated/
    assert analysis.ignored == 5
    assert analysis.extensions[".py"] == ExtensionStats(files=2, bytes=len("print('hi')\n") + len("x = 1\n"))
    assert analysis.extensions[""].files == 2  # the two .gitignore files
    assert analysis.total_bytes == sum(f.size for f in analysis.files)
    assert all(f.content is None for f in analysis.files)
    assert analysis.tree.splitlines()[:4] == ["project/", "  .gitignore", "  README.md", "  data/"]
    assert node.load_outcome(node.dump_outcome(analysis)) == analysis


def test_contents_with_limits(project: Path) -> None:
    analysis = analyze_folder(project, FolderAnalysisOptions(include_contents=True, max_words=2))
    by_path = {f.path: f for f in analysis.files}
    readme = by_path["README.md"]
    assert readme.content == "# Title" and readme.words == 2 and readme.content_truncated
    app = by_path["src/app.py"]
    assert app.content == "print('hi')\n" and app.words == 1 and not app.content_truncated
    blob = by_path["data/blob.dat"]
    assert blob.binary and blob.content is None

    small = analyze_folder(project, FolderAnalysisOptions(include_contents=True, max_file_bytes=4))
    assert {f.path: f.content for f in small.files}["README.md"] == "# Ti"

    budget = analyze_folder(project, FolderAnalysisOptions(include_contents=True, max_total_content_bytes=20))
    assert budget.contents_truncated
    assert sum(len((f.content or "").encode()) for f in budget.files) <= 20


def test_gitignore_off_extra_ignores_and_max_files(project: Path) -> None:
    everything = analyze_folder(project, FolderAnalysisOptions(respect_gitignore=False))
    assert "debug.log" in {f.path for f in everything.files}
    assert "build/out.bin" in {f.path for f in everything.files}
    assert ".git/config" not in {f.path for f in everything.files}  # .git is always skipped

    extra = analyze_folder(project, FolderAnalysisOptions(ignore=("*.py", "data/")))
    assert not {f.path for f in extra.files} & {"src/app.py", "src/util.py", "data/blob.dat"}

    limited = analyze_folder(project, FolderAnalysisOptions(max_files=2))
    assert len(limited.files) == 2 and limited.files_not_listed == 7 and limited.file_count == 9


def test_symlinked_directories_are_not_followed(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "private.txt").write_text("private\n")
    (project / "link-out").symlink_to(outside)
    (project / "loop").symlink_to(project)
    (project / "file-out").symlink_to(outside / "private.txt")
    analysis = analyze_folder(project, FolderAnalysisOptions(include_contents=True))
    paths = {f.path: f for f in analysis.files}
    assert not any("private" in p for p in paths)
    assert paths["file-out"].symlink and paths["file-out"].content is None  # points outside: not read
    assert paths["loop"].symlink and "loop" not in analysis.directories
    assert all("private" not in (f.content or "") for f in analysis.files)


async def test_missing_root_is_an_error(tmp_path: Path, make_context: Callable[..., RunContext]) -> None:
    node = FolderAnalyzerNode(str(tmp_path / "nope"))
    with pytest.raises(RunFailedError, match="not a directory"):
        await FlowRunner(FlowDefinition().node("scan", node), make_context("f")).run()


# -- unified diffs -------------------------------------------------------------------------------
def _unified(before: str, after: str, path: str = "f.txt") -> str:
    """A unified diff as `diff -u` writes it (difflib leaves out the no-newline marker)."""
    out = []
    for line in difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


TEXT = "".join(f"line {i}\n" for i in range(1, 41))


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t.replace("line 3\n", "line three\n").replace("line 30\n", "line thirty\nand more\n"),
        lambda t: t.replace("line 1\n", ""),  # first line removed
        lambda t: t + "line 41\n",  # appended
        lambda t: "line 0\n" + t,  # prepended
        lambda t: t.replace("line 20\n", "").replace("line 21\n", "line 21 changed\n"),
    ],
    ids=["two-hunks", "remove-first", "append", "prepend", "remove-and-change"],
)
def test_a_unified_diff_applies_to_give_the_edited_text(edit: Callable[[str], str]) -> None:
    after = edit(TEXT)
    assert apply_unified_diff(TEXT, _unified(TEXT, after)) == after


def test_wrong_line_numbers_are_corrected_by_the_context() -> None:
    after = TEXT.replace("line 25\n", "line 25!\n")
    diff = _unified(TEXT, after).replace("@@ -22,7 +22,7 @@", "@@ -5,7 +5,7 @@")
    assert "@@ -5,7 +5,7 @@" in diff
    assert apply_unified_diff(TEXT, diff) == after


def test_of_several_matching_places_the_one_nearest_the_line_number_is_changed() -> None:
    text = "a\nx\nb\n" * 5  # the block "a x b" five times
    diff = "@@ -10,3 +10,3 @@\n a\n-x\n+y\n b\n"  # the fourth block starts at line 10
    blocks = apply_unified_diff(text, diff).split("a\n")[1:]
    assert [b.startswith("y") for b in blocks] == [False, False, False, True, False]


def test_newline_at_end_of_file_markers_and_crlf() -> None:
    assert apply_unified_diff("a\nb", _unified("a\nb", "a\nc")) == "a\nc"
    assert apply_unified_diff("a\nb", _unified("a\nb", "a\nb\n")) == "a\nb\n"
    assert apply_unified_diff("a\nb\n", _unified("a\nb\n", "a\nb")) == "a\nb"
    crlf = "one\r\ntwo\r\nthree\r\n"
    diff = "@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
    assert apply_unified_diff(crlf, diff) == "one\r\nTWO\r\nthree\r\n"


@pytest.mark.parametrize(
    ("diff", "message"),
    [
        (
            "@@ -3,3 +3,3 @@\n line 2\n-line 3\n+x\n line 99\n",
            "hunk 1 (@@ -3,3 +3,3 @@): its context and removed lines",
        ),
        ("just some text\n", "neither a header nor in a hunk"),
        ("--- a/f.txt\n+++ b/f.txt\n", "no hunk"),
        ("@@ -1 +1 @@\n-line 1\n+one\n--- a/g.txt\n+++ b/g.txt\n@@ -1 +1 @@\n-x\n+y\n", "names a second file"),
        ("@@ -1 +1 @@\n*line 1\n", "expected ' ', '-' or '+'"),
    ],
    ids=["context-not-found", "not-a-diff", "headers-only", "two-files", "bad-line"],
)
def test_a_diff_that_does_not_apply_says_which_hunk_and_why(diff: str, message: str) -> None:
    with pytest.raises(NodeExecutionError, match=re.escape(message)):
        apply_unified_diff(TEXT, diff)


async def test_diff_operation_through_the_node_all_or_nothing(
    base: Path, make_context: Callable[..., RunContext]
) -> None:
    (base / "f.txt").write_text(TEXT)
    (base / "g.txt").write_text(TEXT)
    good = _unified(TEXT, TEXT.replace("line 7\n", "line seven\n"))

    def propose() -> list[dict[str, str]]:  # a model's proposed edits, as data
        return [{"op": "diff", "path": "f.txt", "diff": good}]

    flow = (
        FlowDefinition()
        .node("propose", propose)
        .node("files", FileOperationNode(base_dir=str(base)), inputs={"operations": Ref("propose")})
    )
    result = await FlowRunner(flow, make_context("f")).run()
    assert (base / "f.txt").read_text() == TEXT.replace("line 7\n", "line seven\n")
    change = result.outcome.changes[0]
    assert change.op == "diff" and "+line seven" in change.diff
    # A batch whose second diff does not apply leaves both files as they were.
    bad = "@@ -1,2 +1,2 @@\n nothing\n-like\n+this\n"
    node = FileOperationNode([DiffFile(path="g.txt", diff=good), DiffFile(path="g.txt", diff=bad)], base_dir=str(base))
    with pytest.raises(RunFailedError, match=r"operation 2 \(diff 'g.txt'\): hunk 1"):
        await run_ops(node, make_context("f"))
    assert (base / "g.txt").read_text() == TEXT
    with pytest.raises(RunFailedError, match=re.escape("'..' is not allowed")):
        await run_ops(FileOperationNode([DiffFile(path="../f.txt", diff=good)], base_dir=str(base)), make_context("f"))


@pytest.mark.parametrize("seed", range(40))
def test_any_diff_made_by_difflib_applies_back(seed: int) -> None:
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "", "delta", "beta"]  # repeats and blank lines on purpose
    before = [rng.choice(words) + str(rng.randrange(4)) for _ in range(rng.randrange(0, 30))]
    after = list(before)
    for _ in range(rng.randrange(1, 6)):
        at = rng.randrange(len(after) + 1)
        action = rng.choice(["insert", "delete", "replace"])
        if action == "insert" or not after:
            after.insert(at, rng.choice(words))
        elif action == "delete":
            del after[min(at, len(after) - 1)]
        else:
            after[min(at, len(after) - 1)] = "changed" + str(seed)
    old = "\n".join(before) + ("\n" if rng.random() < 0.7 else "")
    new = "\n".join(after) + ("\n" if rng.random() < 0.7 else "")
    if old == new:
        return
    assert apply_unified_diff(old, _unified(old, new)) == new


@pytest.mark.parametrize("odd", ["\x0c", "\u2028", "\x85", "\r", "\x1c"], ids=["ff", "u2028", "nel", "cr", "fs"])
def test_characters_python_takes_for_line_breaks_stay_inside_their_line(odd: str) -> None:
    # Only "\n" (with an optional "\r" before it) ends a line, in the file and in the diff: a
    # form feed or a lone "\r" inside a line is part of it, and an untouched one is kept.
    text = f"a{odd}b\n{odd}x\nc\n"
    after = f"a{odd}b\n{odd}x\nC{odd}d\n"
    diff = f"@@ -1,3 +1,3 @@\n a{odd}b\n {odd}x\n-c\n+C{odd}d\n"
    assert apply_unified_diff(text, diff) == after


def test_blank_lines_after_a_complete_hunk_are_not_context() -> None:
    # A model often ends its diff, or separates hunks, with a blank line; the header's counts say
    # the hunk is complete, so the blank line is no empty context line the file must have.
    text = "".join(f"{c}\n" for c in "abcdefgh")
    diff = "@@ -1,2 +1,2 @@\n a\n-b\n+B\n\n@@ -7,2 +7,2 @@\n g\n-h\n+H\n\n\n"
    assert apply_unified_diff(text, diff) == text.replace("b", "B").replace("h", "H")
    # Within a hunk's counts a blank line is an empty context line (its space was stripped).
    assert apply_unified_diff("a\n\nb\n", "@@ -1,3 +1,3 @@\n a\n\n-b\n+c\n") == "a\n\nc\n"


def test_context_lines_keep_their_own_line_ends() -> None:
    text = "a\r\nb\nc\n"  # mixed: the first line decides only for added lines
    assert apply_unified_diff(text, "@@ -1,3 +1,3 @@\n a\n b\n-c\n+d\n") == "a\r\nb\nd\r\n"


def test_a_no_newline_marker_not_at_the_end_of_a_side_is_an_error() -> None:
    diff = "@@ -1,3 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+B\n\\ No newline at end of file\n c\n"
    with pytest.raises(NodeExecutionError, match=re.escape("diff line 7")):
        apply_unified_diff("a\nb\nc\n", diff)


def test_git_mode_headers_are_headers() -> None:
    diff = "diff --git a/f b/f\nold mode 100644\nnew mode 100755\nindex 1..2\n--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+b\n"
    assert apply_unified_diff("a\n", diff) == "b\n"


def test_a_diff_that_creates_the_file_does_not_apply_to_a_file_with_content() -> None:
    creation = "--- /dev/null\n+++ b/f.txt\n@@ -0,0 +1 @@\n+new\n"
    assert apply_unified_diff("", creation) == "new\n"
    with pytest.raises(NodeExecutionError, match="creates the file"):
        apply_unified_diff("old\n", creation)  # prepending would duplicate what the model meant to write
    assert apply_unified_diff("old\n", "@@ -0,0 +1 @@\n+new\n") == "new\nold\n"  # diff -U0: insert at top


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("context", [0, 1])
def test_diffs_with_little_context_apply_back(seed: int, context: int) -> None:
    import random

    rng = random.Random(seed)
    words = ["alpha", "beta", "", "beta"]
    before = [rng.choice(words) for _ in range(rng.randrange(0, 25))]
    after = list(before)
    for _ in range(rng.randrange(1, 5)):
        at = rng.randrange(len(after) + 1)
        if rng.random() < 0.5 or not after:
            after.insert(at, "new" + str(rng.randrange(3)))
        else:
            del after[min(at, len(after) - 1)]
    old = "".join(f"{w}\n" for w in before)
    new = "".join(f"{w}\n" for w in after)
    if old == new:
        return
    diff = "".join(difflib.unified_diff(old.splitlines(True), new.splitlines(True), "a/f", "b/f", n=context))
    assert apply_unified_diff(old, diff) == new


@pytest.mark.parametrize("last_newline", [True, False])
async def test_a_large_files_recorded_diff_is_exact(
    last_newline: bool, base: Path, make_context: Callable[..., RunContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprise.nodes import _file_ops as file_ops

    made_by_git: list[bool] = []
    original = file_ops._git_diff

    def recording(*args: Any) -> Any:
        got = original(*args)
        made_by_git.append(got is not None)
        return got

    monkeypatch.setattr(file_ops, "_git_diff", recording)
    # 12,000 lines with 300 scattered changes: past the size where git makes the diff (difflib
    # takes seconds on such a change). The recorded diff must turn the old text into the new.
    before = "".join(f"line {i} text\n" for i in range(12_000))
    after = before
    for k in range(0, 12_000, 40):
        after = after.replace(f"line {k} text\n", f"line {k} TEXT\n" if k % 80 else "", 1)
    if not last_newline:
        after = after[:-1]
    (base / "big.txt").write_text(before, newline="")
    changes = await run_ops(
        FileOperationNode([UpdateFile(path="big.txt", content=after)], base_dir=str(base)), make_context("f")
    )
    diff = changes.changes[0].diff
    assert diff.startswith("--- a/big.txt\n+++ b/big.txt\n@@ -1,")
    assert "diff --git" not in diff and "index " not in diff
    assert apply_unified_diff(before, diff) == after
    assert made_by_git == [True]
