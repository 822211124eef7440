"""FileOperationNode: create, update, delete, move and patch text files under a base directory.

::

    edit = FileOperationNode(
        [
            CreateFile(path="src/app.py", content="print('hi')\\n"),
            PatchFile(path="README.md", search="Version 1", replace="Version 2"),
        ],
        base_dir="$var{repo}",
    )
    # or operations as data from an earlier node (a model's proposed edits):
    FlowDefinition().node("apply", FileOperationNode(base_dir="work"), inputs={"operations": Ref("plan", "edits")})

**Confinement.** Every path is relative to the base directory and must stay inside it: an
absolute path, a ``..`` segment, a path that resolves outside through a symlink (a linked file
or a linked directory on the way), or one git refuses (``.git`` in any case or file-system
spelling, ``.gitmodules``, a control character) is an error, checked for every operation before
any is applied.

**Patches** are search/replace edits: ``search`` must occur exactly ``expected`` times (default
once) and every occurrence is replaced; an exact search text either matches or fails clearly.
**Diffs** (:class:`DiffFile`) apply the hunks of a unified diff to one file by their content:
a hunk's context and removed lines must appear in the file, in order after the previous hunk;
its line numbers only choose between several places (a model rarely gets them exactly right).
No fuzz: a line that differs is an error naming the hunk.

**All or nothing.** The operations of one execution run in order; if one fails, the files touched
so far are restored to what they were, so a retried or re-run node starts from the same state.

**Outcome.** A :class:`FileChanges`: one :class:`FileChange` per operation with a unified diff,
and ``declared_outcome_files``, the files that exist after the operations (created, updated,
patched, moved-to), relative to the base directory. With ``declare_outcomes=True`` (default)
they are declared as outcome files of the run and committed to git with its outcomes.

The base directory defaults to the node's own directory in the run; a relative one is taken
from the project root. Operations given to the constructor may use templates in their text
fields; operations that arrive as input data are used exactly as they are.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from reprise.dsl._node import NodeSettings
from reprise.dsl._paths import git_path_problem
from reprise.errors import DefinitionError, NodeExecutionError
from reprise.nodes._base import ModelOutcomeNode
from reprise.nodes._files import write_bytes_atomic
from reprise.nodes._render import input_variables, render_text

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext

__all__ = [
    "CreateFile",
    "DeleteFile",
    "DiffFile",
    "FileChange",
    "FileChanges",
    "FileOperation",
    "FileOperationNode",
    "FileOperationsInput",
    "MoveFile",
    "PatchFile",
    "UpdateFile",
    "confine",
]

#: Longest diff kept per change, in characters (a rewrite of a large file is summarized).
MAX_DIFF_CHARS = 200_000


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str


class CreateFile(_Op):
    """Create a file (and its parent directories). Fails if it exists, unless ``overwrite``."""

    op: Literal["create"] = "create"
    content: str
    overwrite: bool = False


class UpdateFile(_Op):
    """Replace the content of an existing file."""

    op: Literal["update"] = "update"
    content: str


class DeleteFile(_Op):
    """Delete a file (not a directory). Fails if it is missing, unless ``missing_ok``."""

    op: Literal["delete"] = "delete"
    missing_ok: bool = False


class MoveFile(_Op):
    """Move (rename) a file to ``to``. Fails if ``to`` exists, unless ``overwrite``."""

    op: Literal["move"] = "move"
    to: str
    overwrite: bool = False


class PatchFile(_Op):
    """Replace ``search`` by ``replace`` in a file; ``search`` must occur exactly ``expected`` times."""

    op: Literal["patch"] = "patch"
    search: str = Field(min_length=1)
    replace: str
    expected: int = Field(default=1, ge=1)


class DiffFile(_Op):
    """Apply the hunks of a unified diff (``@@ -l,n +l,n @@`` blocks; ``---``/``+++`` headers are
    allowed and ignored: ``path`` names the file) to an existing text file."""

    op: Literal["diff"] = "diff"
    diff: str = Field(min_length=1)


FileOperation = Annotated[
    CreateFile | UpdateFile | DeleteFile | MoveFile | PatchFile | DiffFile, Field(discriminator="op")
]
_OPERATIONS: TypeAdapter[list[FileOperation]] = TypeAdapter(list[FileOperation])


class FileOperationsInput(BaseModel):
    """The input of a :class:`FileOperationNode`: operations to run after the node's own."""

    model_config = ConfigDict(extra="allow")

    operations: list[FileOperation] = []


class FileChange(BaseModel):
    """What one operation changed. ``diff`` is a unified diff (``a/<path>`` -> ``b/<path>``)."""

    op: str
    path: str
    to: str | None = None
    diff: str
    bytes_before: int | None
    bytes_after: int | None


class FileChanges(BaseModel):
    """The outcome of a :class:`FileOperationNode`."""

    #: The directory the paths are relative to, resolved; ``"."`` for the node's own directory.
    base_dir: str
    changes: list[FileChange]
    #: Files that exist after the operations, relative to ``base_dir``.
    declared_outcome_files: list[str]


def confine(base: Path, relative: str, *, link: bool = False) -> Path:
    """The path ``relative`` names inside the (resolved) directory ``base``.

    Raises :class:`NodeExecutionError` for an empty, absolute or ``..`` path, and for one that
    leaves ``base`` through a symlink, and for one git refuses (``.git``, ``.gitmodules``, a
    newline: see :func:`~reprise.dsl._paths.git_path_problem`). With ``link=True`` a final symlink is not followed (the
    path of the link itself is returned, for delete and move), but its target must still be
    inside ``base``."""
    if not relative or not relative.strip():
        raise NodeExecutionError("empty path")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("~"):
        raise NodeExecutionError(f"{relative!r}: absolute paths are not allowed; give a path inside the base directory")
    if ".." in pure.parts:
        raise NodeExecutionError(f"{relative!r}: '..' is not allowed in paths")
    candidate = base.joinpath(*pure.parts)
    parent = candidate.parent.resolve()
    if not parent.is_relative_to(base):
        raise NodeExecutionError(f"{relative!r} leaves the base directory through a symlink")
    resolved = candidate.resolve()
    if not resolved.is_relative_to(base):
        raise NodeExecutionError(f"{relative!r} is a symlink pointing outside the base directory")
    if resolved == base:
        raise NodeExecutionError(f"{relative!r} names the base directory itself")
    target = parent / candidate.name if link else resolved
    # Where the file really is, after symlinks: a name git refuses there is refused here,
    # before anything is written (a base directory may be a git working tree).
    problem = git_path_problem(target.relative_to(base).as_posix())
    if problem is not None:
        raise NodeExecutionError(f"{relative!r}: {problem}")
    return target


def _diff(relative: str, before: str | None, after: str | None, to: str | None = None) -> str:
    fromfile = "/dev/null" if before is None else f"a/{relative}"
    tofile = "/dev/null" if after is None else f"b/{to or relative}"
    old = (before or "").splitlines(keepends=True)
    new = (after or "").splitlines(keepends=True)
    lines: Iterable[str] | None = None
    if len(old) + len(new) > _GIT_DIFF_LINES:
        # difflib takes seconds on a large file with many changes (21 s for 1,000 changes in
        # 100,000 lines); git's diff takes milliseconds. difflib when git is not there.
        lines = _git_diff(before or "", after or "", fromfile, tofile)
    if lines is None:
        lines = difflib.unified_diff(old, new, fromfile=fromfile, tofile=tofile)
    out: list[str] = []
    size = 0
    for line in lines:
        if not line.endswith("\n"):
            line += "\n\\ No newline at end of file\n"
        size += len(line)
        if size > MAX_DIFF_CHARS:
            out.append(f"[... diff truncated at {MAX_DIFF_CHARS} characters ...]\n")
            break
        out.append(line)
    return "".join(out)


#: Above this many lines (before and after together) a change's diff is made by git.
_GIT_DIFF_LINES = 5_000


def _git_diff(before: str, after: str, fromfile: str, tofile: str) -> list[str] | None:
    """The unified diff of two texts by ``git diff --no-index`` (no user or system git
    configuration: no external diff tool, no colour), with difflib's file headers and without
    git's own header lines or the section names it adds after ``@@``; ``None`` if git cannot."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C"}
    try:
        with tempfile.TemporaryDirectory(prefix="reprise-diff-") as tmp:
            a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            with open(a, "w", encoding="utf-8", newline="") as fh:
                fh.write(before)
            with open(b, "w", encoding="utf-8", newline="") as fh:
                fh.write(after)
            done = subprocess.run(
                ["git", "diff", "--no-index", "--no-color", "--no-ext-diff", "--text", "-U3", a, b],
                capture_output=True,
                env=env,
                cwd=tmp,
            )
    except OSError:
        return None
    if done.returncode not in (0, 1):  # 1: the files differ
        return None
    lines = _lines(done.stdout.decode("utf-8", errors="replace"))
    first = next((i for i, line in enumerate(lines) if line.startswith("@@")), None)
    if first is None:
        return []
    body: list[str] = [f"--- {fromfile}\n", f"+++ {tofile}\n"]
    for line in lines[first:]:
        if line.startswith("@@"):
            header = _HUNK.match(line)  # the range part, without the section name git adds
            if header is None:
                return None
            line = header.group(0) + "\n"
        elif line.startswith("\\"):
            body[-1] = body[-1].rstrip("\n")  # the marker is added back by _diff
            continue
        body.append(line)
    return body


def _read_text(path: Path, relative: str) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NodeExecutionError(f"{relative!r} does not exist") from None
    except IsADirectoryError:
        raise NodeExecutionError(f"{relative!r} is a directory, not a file") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise NodeExecutionError(f"{relative!r} is not UTF-8 text") from None


class _Journal:
    """The original state of every path an execution touched, to undo a failed batch."""

    def __init__(self) -> None:
        self._saved: dict[Path, tuple[bytes, int] | None] = {}
        self._made_dirs: list[Path] = []

    def save(self, path: Path) -> None:
        if path in self._saved:
            return
        try:
            if path.is_symlink():
                self._saved[path] = (os.readlink(path).encode(), -1)
            else:
                self._saved[path] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
        except FileNotFoundError:
            self._saved[path] = None

    def make_parents(self, path: Path, base: Path) -> None:
        missing = [p for p in path.parents if p.is_relative_to(base) and not p.exists()]
        for directory in reversed(missing):
            directory.mkdir()
            self._made_dirs.append(directory)

    def undo(self) -> None:
        for path, state in reversed(list(self._saved.items())):
            if path.is_symlink() or path.exists():
                path.unlink()
            if state is None:
                continue
            data, mode = state
            path.parent.mkdir(parents=True, exist_ok=True)
            if mode == -1:
                os.symlink(data.decode(), path)
            else:
                write_bytes_atomic(path, data)
                os.chmod(path, mode)
        for directory in reversed(self._made_dirs):
            try:
                directory.rmdir()
            except OSError:
                pass


def _write(path: Path, text: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else None
    write_bytes_atomic(path, text.encode())
    if mode is not None:
        os.chmod(path, mode)  # an update keeps the file's permissions (an executable stays one)


class FileOperationNode(ModelOutcomeNode):
    """Applies file operations under a base directory; see the module docstring.

    Args:
        operations: operations to run on every execution (their text fields are templates).
        base_dir: the directory all paths are relative to (a template); created if missing.
        declare_outcomes: declare the written files as outcome files of the run (git).
        retries: retry a failed execution (each attempt starts from the restored files).
    """

    outcome_model = FileChanges
    kind = "file_operations"
    input_model: type[BaseModel] | None = FileOperationsInput

    def __init__(
        self,
        operations: Sequence[FileOperation | dict[str, Any]] = (),
        *,
        base_dir: str | Path | None = None,
        declare_outcomes: bool = True,
        retries: int = 0,
    ) -> None:
        try:
            self.operations: list[FileOperation] = _OPERATIONS.validate_python(
                [op.model_dump() if isinstance(op, BaseModel) else op for op in operations]
            )
        except ValueError as exc:
            raise DefinitionError(f"invalid file operation: {exc}") from None
        self.base_dir = base_dir
        self.declare_outcomes = declare_outcomes
        self.settings = NodeSettings(retries=retries)

    def _base(self, ctx: NodeContext, variables: dict[str, Any]) -> Path:
        if self.base_dir is None:
            return ctx.node_dir.resolve()
        base = Path(render_text(str(self.base_dir), ctx, variables)).expanduser()
        if not base.is_absolute():
            base = ctx.project_root / base
        base.mkdir(parents=True, exist_ok=True)
        return base.resolve()

    def _rendered(self, ctx: NodeContext, variables: dict[str, Any]) -> list[FileOperation]:
        rendered: list[FileOperation] = []
        for op in self.operations:
            changes = {
                k: render_text(v, ctx, variables)
                for k, v in op.model_dump().items()
                if isinstance(v, str) and k != "op"
            }
            rendered.append(op.model_copy(update=changes))
        return rendered

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> FileChanges:
        variables = input_variables(input)
        operations = self._rendered(ctx, variables)
        if isinstance(input, FileOperationsInput):
            operations += input.operations
        base = self._base(ctx, variables)
        # Worker thread: file I/O would block the event loop. Not abandoned on cancellation, so
        # a batch is always finished or undone, never left half applied.
        changes, written = await anyio.to_thread.run_sync(_apply, operations, base)
        declared = sorted(written)
        if self.declare_outcomes:
            for relative in declared:
                ctx.declare_outcome_file(base / relative, name=relative)
        ctx.annotate_result(file_changes=len(changes), base_dir=str(base))
        # The node's own directory is named "." in the outcome: its path differs in every run
        # (result.json has it), and the same changes must make the same outcome.
        shown = str(base) if self.base_dir is not None else "."
        return FileChanges(base_dir=shown, changes=changes, declared_outcome_files=declared)


def _apply(operations: list[FileOperation], base: Path) -> tuple[list[FileChange], set[str]]:
    # Every path is checked before anything is touched.
    for i, op in enumerate(operations):
        try:
            confine(base, op.path, link=isinstance(op, (DeleteFile, MoveFile)))
            if isinstance(op, MoveFile):
                confine(base, op.to, link=True)
        except NodeExecutionError as exc:
            raise NodeExecutionError(f"operation {i + 1} ({op.op}): {exc.message}") from None
    journal = _Journal()
    changes: list[FileChange] = []
    written: set[str] = set()
    try:
        for i, op in enumerate(operations):
            try:
                changes.append(_apply_one(op, base, journal, written))
            except NodeExecutionError as exc:
                raise NodeExecutionError(f"operation {i + 1} ({op.op} {op.path!r}): {exc.message}") from None
            except OSError as exc:
                raise NodeExecutionError(f"operation {i + 1} ({op.op} {op.path!r}): {exc.strerror or exc}") from None
    except BaseException:
        journal.undo()
        raise
    return changes, written


def _apply_one(op: FileOperation, base: Path, journal: _Journal, written: set[str]) -> FileChange:
    rel = op.path
    if isinstance(op, CreateFile):
        path = confine(base, rel)
        before = None
        if path.exists():
            if not op.overwrite:
                raise NodeExecutionError("file exists (set overwrite=True to replace it)")
            before = _read_text(path, rel)
        journal.save(path)
        journal.make_parents(path, base)
        _write(path, op.content)
        written.add(path.relative_to(base).as_posix())
        return FileChange(
            op="create",
            path=rel,
            diff=_diff(rel, before, op.content),
            bytes_before=len(before.encode()) if before is not None else None,
            bytes_after=len(op.content.encode()),
        )
    if isinstance(op, UpdateFile):
        path = confine(base, rel)
        before = _read_text(path, rel)
        journal.save(path)
        _write(path, op.content)
        written.add(path.relative_to(base).as_posix())
        return FileChange(
            op="update",
            path=rel,
            diff=_diff(rel, before, op.content),
            bytes_before=len(before.encode()),
            bytes_after=len(op.content.encode()),
        )
    if isinstance(op, PatchFile):
        path = confine(base, rel)
        before = _read_text(path, rel)
        found = before.count(op.search)
        if found != op.expected:
            raise NodeExecutionError(f"search text found {found} times, expected {op.expected}: {op.search[:200]!r}")
        after = before.replace(op.search, op.replace)
        journal.save(path)
        _write(path, after)
        written.add(path.relative_to(base).as_posix())
        return FileChange(
            op="patch",
            path=rel,
            diff=_diff(rel, before, after),
            bytes_before=len(before.encode()),
            bytes_after=len(after.encode()),
        )
    if isinstance(op, DiffFile):
        path = confine(base, rel)
        before = _read_text(path, rel)
        after = apply_unified_diff(before, op.diff)
        journal.save(path)
        _write(path, after)
        written.add(path.relative_to(base).as_posix())
        return FileChange(
            op="diff",
            path=rel,
            diff=_diff(rel, before, after),
            bytes_before=len(before.encode()),
            bytes_after=len(after.encode()),
        )
    if isinstance(op, DeleteFile):
        path = confine(base, rel, link=True)
        if not (path.exists() or path.is_symlink()):
            if op.missing_ok:
                return FileChange(op="delete", path=rel, diff="", bytes_before=None, bytes_after=None)
            raise NodeExecutionError("file does not exist (set missing_ok=True to allow that)")
        if path.is_dir() and not path.is_symlink():
            raise NodeExecutionError("is a directory; only files are deleted")
        before = None if path.is_symlink() else _read_text(path, rel)
        journal.save(path)
        path.unlink()
        written.discard(path.relative_to(base).as_posix())
        return FileChange(
            op="delete",
            path=rel,
            diff=_diff(rel, before, None) if before is not None else "",
            bytes_before=len(before.encode()) if before is not None else None,
            bytes_after=None,
        )
    assert isinstance(op, MoveFile)
    source = confine(base, rel, link=True)
    target = confine(base, op.to, link=True)
    if not (source.exists() or source.is_symlink()):
        raise NodeExecutionError("file does not exist")
    if source.is_dir() and not source.is_symlink():
        raise NodeExecutionError("is a directory; only files are moved")
    if target.exists() and not op.overwrite:
        raise NodeExecutionError(f"target {op.to!r} exists (set overwrite=True to replace it)")
    if target.is_dir():
        raise NodeExecutionError(f"target {op.to!r} is a directory")
    size = source.lstat().st_size
    journal.save(source)
    journal.save(target)
    journal.make_parents(target, base)
    shutil.move(source, target)
    written.discard(source.relative_to(base).as_posix())
    written.add(target.relative_to(base).as_posix())
    return FileChange(
        op="move",
        path=rel,
        to=op.to,
        diff=f"rename from {rel}\nrename to {op.to}\n",
        bytes_before=size,
        bytes_after=size,
    )


# -- unified diffs ---------------------------------------------------------------------------------
_HUNK = re.compile(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HEADER_PREFIXES = (
    "--- ",
    "+++ ",
    "diff ",
    "index ",
    "new file mode",
    "deleted file mode",
    "old mode ",
    "new mode ",
    "similarity",
    "dissimilarity",
    "rename ",
    "copy ",
)
_NO_NEWLINE = "\\ No newline at end of file"


class _Hunk:
    __slots__ = ("blank_tail", "header", "new", "new_ends", "old", "old_ends", "old_start", "sizes")

    def __init__(self, header: str, old_start: int, sizes: tuple[int, int]) -> None:
        self.header = header
        self.old_start = old_start
        self.sizes = sizes  # the line counts the header states (a model may miscount them)
        self.old: list[str] = []  # context and removed lines, without line ends
        #: context and added lines: an int is the index in ``old`` of a context line (the file's
        #: own line, line end included, is kept), a str an added line
        self.new: list[int | str] = []
        self.old_ends = True  # whether the last old line ends with a newline
        self.new_ends = True
        self.blank_tail = 0  # blank diff lines at the end of the body, taken as empty context

    def close(self) -> None:
        """Drop the blank lines that follow a complete body (a model's trailing blank line)."""
        while self.blank_tail and len(self.old) > self.sizes[0] and len(self.new) > self.sizes[1]:
            self.old.pop()
            self.new.pop()
            self.blank_tail -= 1


def _lines(text: str) -> list[str]:
    """``text`` split after each ``"\n"`` only (``str.splitlines`` also splits at form feeds,
    lone ``"\r"``, U+2028 and other characters that are part of a line of source text)."""
    lines = text.split("\n")
    last = lines.pop()
    out = [line + "\n" for line in lines]
    if last:
        out.append(last)
    return out


def _bare(line: str) -> str:
    if line.endswith("\n"):
        line = line[:-1]
    return line[:-1] if line.endswith("\r") else line


def _parse_hunks(diff: str) -> tuple[list[_Hunk], bool]:
    """The hunks of ``diff``, and whether its headers say it creates the file (``--- /dev/null``)."""
    hunks: list[_Hunk] = []
    creates = False
    last = ""  # the kind of the previous body line, for "\ No newline at end of file"
    for number, line in enumerate(_lines(diff), 1):
        raw = _bare(line)
        match = _HUNK.match(raw)
        if match:
            if hunks:
                hunks[-1].close()
            old_n, new_n = match.group(2), match.group(4)
            sizes = (1 if old_n is None else int(old_n), 1 if new_n is None else int(new_n))
            hunks.append(_Hunk(raw[: match.end()], int(match.group(1)), sizes))
            last = ""
            continue
        if not hunks:
            if raw.startswith(_HEADER_PREFIXES) or not raw.strip():
                creates = creates or raw.split("\t")[0].rstrip() == "--- /dev/null"
                continue
            raise NodeExecutionError(f"diff line {number} is neither a header nor in a hunk: {raw[:120]!r}")
        hunk = hunks[-1]
        if raw.startswith("\\"):
            if raw.strip() != _NO_NEWLINE:
                raise NodeExecutionError(f"diff line {number}: unknown marker {raw[:120]!r}")
            if last in (" ", "-"):
                hunk.old_ends = False
            if last in (" ", "+"):
                hunk.new_ends = False
            continue
        complete = len(hunk.old) >= hunk.sizes[0] and len(hunk.new) >= hunk.sizes[1]
        if complete and raw.startswith(_HEADER_PREFIXES):  # the next file's headers: not ours
            raise NodeExecutionError(f"diff line {number}: the diff names a second file; give one DiffFile per file")
        kind, text = (raw[0], raw[1:]) if raw else (" ", "")  # a blank context line lost its space
        # A side whose last line was marked as without newline cannot go on.
        if (not hunk.old_ends and kind in " -") or (not hunk.new_ends and kind in " +"):
            raise NodeExecutionError(
                f"diff line {number} in {hunk.header}: a line after {_NO_NEWLINE!r} on its side: {raw[:120]!r}"
            )
        if kind == " ":
            hunk.new.append(len(hunk.old))
            hunk.old.append(text)
        elif kind == "-":
            hunk.old.append(text)
        elif kind == "+":
            hunk.new.append(text)
        else:
            raise NodeExecutionError(f"diff line {number} in {hunk.header}: expected ' ', '-' or '+': {raw[:120]!r}")
        hunk.blank_tail = hunk.blank_tail + 1 if not raw else 0
        last = kind
    if not hunks:
        raise NodeExecutionError("the diff has no hunk (no '@@ -l,n +l,n @@' line)")
    hunks[-1].close()
    return hunks, creates


def _find(bare: list[str], old: list[str], lo: int, wanted: int) -> int | None:
    """The start at or after ``lo`` of ``old`` in ``bare`` nearest ``wanted`` (the lower of two
    as near), searched outwards from ``wanted``: a hunk whose line number is right, or nearly,
    costs its own length, not the file's."""
    hi = len(bare) - len(old)  # the last possible start
    if hi < lo:
        return None
    wanted = min(max(wanted, lo), hi)
    first, size = old[0], len(old)
    for distance in range(max(wanted - lo, hi - wanted) + 1):
        i = wanted - distance
        if i >= lo and bare[i] == first and bare[i : i + size] == old:
            return i
        i = wanted + distance
        if distance and i <= hi and bare[i] == first and bare[i : i + size] == old:
            return i
    return None


def apply_unified_diff(text: str, diff: str) -> str:
    """``text`` with the hunks of ``diff`` applied (see :class:`DiffFile`).

    Each hunk's old lines (context and removed) are looked for from where the previous hunk
    ended; where they occur more than once, the occurrence nearest the hunk's line number is
    taken. Only ``\\n`` ends a line (a ``\\r`` before it is ignored when comparing). Context
    lines keep the file's own line ends; added lines take the first line's (``\\n`` or
    ``\\r\\n``)."""
    lines = _lines(text)
    newline = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    bare = [_bare(line) for line in lines]
    hunks, creates = _parse_hunks(diff)
    if creates and text:
        raise NodeExecutionError("the diff creates the file ('--- /dev/null') but the file is not empty")
    out: list[str] = []
    pos = 0  # the first line of the file no hunk has used, in the file's own numbering
    for index, hunk in enumerate(hunks, 1):
        old = hunk.old
        if not old:  # pure addition: after the stated line
            at = min(max(hunk.old_start, pos), len(bare))
        else:
            found = _find(bare, old, pos, hunk.old_start - 1)
            if found is None:
                raise NodeExecutionError(
                    f"hunk {index} ({hunk.header}): its context and removed lines are not in the file"
                    f" after line {pos}; first of them: {old[0][:120]!r}"
                )
            at = found
        end = at + len(old)
        out.extend(lines[pos:at])
        if out and not out[-1].endswith("\n"):
            out[-1] += newline  # appending after a last line without its newline
        out.extend(lines[at + entry] if isinstance(entry, int) else entry + newline for entry in hunk.new)
        for i in range(len(out) - len(hunk.new), len(out) - 1):
            if not out[i].endswith("\n"):  # a context line that was the last one, now followed
                out[i] += newline
        if end == len(bare) and hunk.new and not hunk.new_ends:
            out[-1] = _bare(out[-1])  # "\\ No newline at end of file" after the last new line
        pos = end
    out.extend(lines[pos:])
    return "".join(out)
