"""FolderAnalyzerNode: a directory's structure, file statistics and (optionally) contents.

::

    analyze = FolderAnalyzerNode(include_contents=True, max_file_bytes=20_000, max_words=2_000)
    flow = FlowDefinition().node("scan", analyze, inputs={"root": Initial("folder")})

The walk is deterministic (names sorted), skips ``.git``, respects ``.gitignore`` files (see
:class:`IgnoreRules`) plus extra ``ignore`` patterns in the same syntax, and never follows a
symlinked directory (no loops, no escape from the root). Symlinked files are listed, but their
contents are read only when they point to a regular file inside the root.

A user's folder may hold more than regular files: FIFOs, sockets, devices, symlink loops, names
that are not UTF-8. Nothing of that may block or fail the walk: every file is opened
non-blocking and checked to be a regular file on the open descriptor before it is read, every
read is bounded, and what was left out is listed in ``skipped`` with the reason. Names that are
not valid UTF-8 are shown with their undecodable bytes as ``\\xNN`` escapes.

Limits keep the outcome small enough for a prompt and for ``outcome.json``: ``max_files``
entries (the rest is counted as ``files_not_listed``), and with ``include_contents`` at most
``max_file_bytes`` and ``max_words`` per file and ``max_total_content_bytes`` in all. Files with
a NUL byte in their first 8 KiB are binary: counted, never read as text.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from pathspec import GitIgnoreSpec
from pydantic import BaseModel, ConfigDict

from reprise.errors import DefinitionError, NodeExecutionError
from reprise.nodes._base import ModelOutcomeNode
from reprise.nodes._render import input_variables, render_text

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext

__all__ = [
    "ExtensionStats",
    "FileInfo",
    "FolderAnalysis",
    "FolderAnalysisOptions",
    "FolderAnalyzerNode",
    "FolderInput",
    "IgnoreRules",
    "SkippedPath",
    "analyze_folder",
]

_BINARY_SNIFF = 8192
#: A ``.gitignore`` larger than this is not read (and listed in ``skipped``).
_MAX_GITIGNORE_BYTES = 1024 * 1024
_WORD = re.compile(r"\S+")


class FolderInput(BaseModel):
    """The input of a :class:`FolderAnalyzerNode`: ``root`` overrides the node's own."""

    model_config = ConfigDict(extra="allow")

    root: str | None = None


class FileInfo(BaseModel):
    """One file of the analysis. ``path`` is POSIX, relative to the root."""

    path: str
    size: int
    extension: str
    binary: bool = False
    symlink: bool = False
    #: Words in the text that was read (``None`` when contents were not read).
    words: int | None = None
    content: str | None = None
    #: The content stops before the end of the file (a byte or word limit).
    content_truncated: bool = False


class ExtensionStats(BaseModel):
    """Files and bytes of one extension (``""`` for files without one)."""

    files: int = 0
    bytes: int = 0


class SkippedPath(BaseModel):
    """A path the walk left out or did not read, and why (``"not a regular file: a FIFO"``)."""

    path: str
    reason: str


class FolderAnalysis(BaseModel):
    """The outcome of a :class:`FolderAnalyzerNode`."""

    root: str
    file_count: int
    dir_count: int
    total_bytes: int
    extensions: dict[str, ExtensionStats]
    directories: list[str]
    files: list[FileInfo]
    #: An indented listing of the tree, for prompts and for people.
    tree: str
    #: Paths skipped by ``.gitignore`` or ``ignore`` rules (an ignored directory counts once).
    ignored: int
    #: Files counted in the statistics but not listed, past ``max_files``.
    files_not_listed: int = 0
    #: Some contents were left out because ``max_total_content_bytes`` was reached.
    contents_truncated: bool = False
    #: Entries that are not regular files (FIFOs, sockets, devices), symlinks whose target was
    #: not read, ``.gitignore`` files whose rules were not read, directories that could not be
    #: listed: each with the reason.
    skipped: list[SkippedPath] = []


@dataclass(frozen=True, slots=True, kw_only=True)
class FolderAnalysisOptions:
    """What a walk reads and how much; see :class:`FolderAnalyzerNode` for each field."""

    respect_gitignore: bool = True
    ignore: tuple[str, ...] = ()
    include_contents: bool = False
    max_file_bytes: int = 64 * 1024
    max_words: int | None = None
    max_total_content_bytes: int = 1024 * 1024
    max_files: int = 5000
    max_depth: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_file_bytes", "max_files", "max_words"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DefinitionError(f"{name} must be >= 1, got {value}")


class FolderAnalyzerNode(ModelOutcomeNode):
    """Walks a directory; see the module docstring.

    Args:
        root: the directory (a template); relative roots are taken from the project root.
            The input field ``root`` overrides it.
        respect_gitignore: read ``.gitignore`` files.
        ignore: more patterns in ``.gitignore`` syntax, applied from the root.
        include_contents: read text files.
        max_file_bytes, max_words: limits per file when reading contents.
        max_total_content_bytes: limit on all contents together.
        max_files: files listed in the outcome (statistics count all of them).
        max_depth: directories deeper than this are not entered (``None``: no limit).
    """

    outcome_model = FolderAnalysis
    kind = "folder_analyzer"
    input_model: type[BaseModel] | None = FolderInput

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        respect_gitignore: bool = True,
        ignore: Sequence[str] = (),
        include_contents: bool = False,
        max_file_bytes: int = 64 * 1024,
        max_words: int | None = None,
        max_total_content_bytes: int = 1024 * 1024,
        max_files: int = 5000,
        max_depth: int | None = None,
    ) -> None:
        self.root = root
        self.options = FolderAnalysisOptions(
            respect_gitignore=respect_gitignore,
            ignore=tuple(ignore),
            include_contents=include_contents,
            max_file_bytes=max_file_bytes,
            max_words=max_words,
            max_total_content_bytes=max_total_content_bytes,
            max_files=max_files,
            max_depth=max_depth,
        )

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> FolderAnalysis:
        variables = input_variables(input)
        given = variables.get("root") or self.root
        if given is None:
            raise NodeExecutionError("no folder to analyze: give the node root= or bind an input field named 'root'")
        root = Path(render_text(str(given), ctx, variables)).expanduser()
        if not root.is_absolute():
            root = ctx.project_root / root
        # A walk of a large tree blocks; in a worker thread, and abandoned if the node is
        # cancelled (it only reads).
        analysis = await anyio.to_thread.run_sync(analyze_folder, root, self.options, abandon_on_cancel=True)
        ctx.annotate_result(file_count=analysis.file_count, total_bytes=analysis.total_bytes)
        return analysis


class IgnoreRules:
    """The ``.gitignore`` rules met while walking a tree, by directory (``pathspec`` matches them).

    Paths are POSIX and relative to the walk's root (``""`` is the root itself). The rules of a
    ``.gitignore`` apply relative to its directory; deeper files win over those above, and within
    a file the last matching rule wins. As in git, a file inside an ignored directory cannot be
    re-included (the walk never enters the directory). ``.git/info/exclude`` and the user's
    global excludes file are not read, so a flow's result does not depend on who runs it.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._lines: dict[str, list[str]] = {}
        self._specs: dict[str, tuple[GitIgnoreSpec, GitIgnoreSpec]] = {}
        self._add("", list(extra))

    def add(self, directory: str, text: str) -> None:
        """Add the rules of the ``.gitignore`` in ``directory`` (after any added before for it)."""
        self._add(directory, text.splitlines())

    def _add(self, directory: str, lines: list[str]) -> None:
        if not lines:
            return
        all_lines = self._lines.setdefault(directory, [])
        all_lines.extend(lines)
        # pathspec reports a directory ``d/`` as matched by ``d/**``; in git that pattern
        # excludes what is under ``d``, not ``d`` itself (pathspec issue #137). Directories are
        # therefore matched with ``d/**`` written as ``d/*/**``, which is git's meaning for them.
        dir_lines = [_below(line) for line in all_lines]
        self._specs[directory] = (GitIgnoreSpec.from_lines(all_lines), GitIgnoreSpec.from_lines(dir_lines))

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` is ignored (its parent directories are assumed not to be)."""
        parts = path.split("/")
        verdict: bool | None = None
        for depth in range(len(parts)):
            specs = self._specs.get("/".join(parts[:depth]))
            if specs is None:
                continue
            relative = "/".join(parts[depth:])
            include = (specs[1].check_file(relative + "/") if is_dir else specs[0].check_file(relative)).include
            if include is not None:
                verdict = include
        return bool(verdict)


def _below(line: str) -> str:
    """A ``.gitignore`` line as it applies to directories: ``d/**`` -> ``d/*/**``."""
    stripped = line.rstrip(" ")
    return stripped[:-3] + "/*/**" if stripped.endswith("/**") and len(stripped) > 3 else line


class _NotRead(Exception):
    """A file that was not read, with the reason (a sentence for :class:`SkippedPath`)."""


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, for a reason."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "an unknown kind of file"


def _read_regular(path: str, limit: int) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` (a symlink is not followed).

    Opened non-blocking, so a FIFO cannot block; checked on the open descriptor, so what is read
    is what was checked. Raises :class:`_NotRead` for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _NotRead(f"cannot open: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _NotRead(f"not a regular file: {_kind(mode)}")
        with open(fd, "rb", closefd=False) as f:
            return f.read(limit)
    except OSError as exc:
        raise _NotRead(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _read_content(
    path: str, max_bytes: int, max_words: int | None, budget: int
) -> tuple[bool, str | None, int | None, bool, int]:
    """(binary, content, words, truncated, bytes used) of a file."""
    limit = min(max_bytes, budget)
    data = _read_regular(path, limit + 1)
    if b"\0" in data[:_BINARY_SNIFF]:
        return True, None, None, False, 0
    truncated = len(data) > limit
    data = data[:limit]
    text = data.decode("utf-8", "replace")
    if truncated and text.endswith("\ufffd"):
        text = text.rstrip("\ufffd")  # a character cut by the byte limit
    words = 0
    for match in _WORD.finditer(text):
        words += 1
        if words == max_words:
            if text[match.end() :].strip():  # more words follow: cut after this one
                text = text[: match.end()]
                truncated = True
            break
    return False, text, words, truncated, len(data)


def _shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 become ``\\xNN`` escapes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")
    return name


def _link_target(path: str, root: str) -> str:
    """The regular-file path a symlink inside the walk resolves to, or :class:`_NotRead`."""
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _NotRead("a symlink loop: not followed") from None
        if exc.errno == errno.ENOENT:
            raise _NotRead("a broken symlink") from None
        raise _NotRead(f"a symlink that cannot be resolved: {exc.strerror}") from None
    if os.path.commonpath([target, root]) != root:
        raise _NotRead("a symlink to outside the root: not read")
    return target


def analyze_folder(
    root: str | os.PathLike[str], options: FolderAnalysisOptions = FolderAnalysisOptions()
) -> FolderAnalysis:
    """Walk ``root`` and describe it (synchronous; the node runs it in a worker thread)."""
    respect_gitignore, include_contents, max_depth = (
        options.respect_gitignore,
        options.include_contents,
        options.max_depth,
    )
    max_file_bytes, max_words, max_files = options.max_file_bytes, options.max_words, options.max_files
    max_total_content_bytes = options.max_total_content_bytes
    real_root = os.path.realpath(root)
    if not os.path.isdir(real_root):
        raise NodeExecutionError(f"not a directory: {_shown(os.fspath(root))}")
    rules = IgnoreRules(options.ignore)
    files: list[FileInfo] = []
    directories: list[str] = []
    skipped: list[SkippedPath] = []
    tree: list[str] = [f"{_shown(os.path.basename(real_root))}/"]
    extensions: dict[str, ExtensionStats] = {}
    counts = {"files": 0, "bytes": 0, "ignored": 0, "content": 0}
    contents_truncated = False

    def read_gitignore(directory: str, relative: str) -> None:
        path = os.path.join(directory, ".gitignore")
        shown = f"{relative}/.gitignore" if relative else ".gitignore"
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            skipped.append(SkippedPath(path=shown, reason=f"rules not read: {exc.strerror}"))
            return
        if stat.S_ISLNK(mode):
            # Git does not follow a symlinked .gitignore in the work tree either.
            skipped.append(SkippedPath(path=shown, reason="rules not read: a symlinked .gitignore is not followed"))
            return
        if not stat.S_ISREG(mode):
            return  # a directory is walked, anything else is skipped as an entry
        try:
            data = _read_regular(path, _MAX_GITIGNORE_BYTES + 1)
        except _NotRead as exc:
            skipped.append(SkippedPath(path=shown, reason=f"rules not read: {exc}"))
            return
        if len(data) > _MAX_GITIGNORE_BYTES:
            reason = f"rules not read: larger than {_MAX_GITIGNORE_BYTES} bytes"
            skipped.append(SkippedPath(path=shown, reason=reason))
            return
        rules.add(relative, data.decode("utf-8", "replace"))

    def read_into(info: FileInfo, path: str, is_link: bool) -> None:
        nonlocal contents_truncated
        budget = max_total_content_bytes - counts["content"]
        if budget <= 0:
            contents_truncated = True
            return
        try:
            target = _link_target(path, real_root) if is_link else path
            binary, content, words, truncated, used = _read_content(target, max_file_bytes, max_words, budget)
        except _NotRead as exc:
            skipped.append(SkippedPath(path=info.path, reason=str(exc)))
            return
        info.binary, info.content, info.words, info.content_truncated = binary, content, words, truncated
        counts["content"] += used
        if truncated and used == budget < max_file_bytes:
            contents_truncated = True

    def walk(directory: str, relative: str, depth: int) -> None:
        if respect_gitignore:
            read_gitignore(directory, relative)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(SkippedPath(path=relative or ".", reason=f"cannot list the directory: {exc.strerror}"))
            return
        indent = "  " * (depth + 1)
        for entry in entries:
            name = _shown(entry.name)
            path = f"{relative}/{name}" if relative else name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                skipped.append(SkippedPath(path=path, reason=f"cannot stat: {exc.strerror}"))
                continue
            is_link, is_dir = stat.S_ISLNK(st.st_mode), stat.S_ISDIR(st.st_mode)
            if entry.name == ".git" or rules.ignored(path, is_dir):
                counts["ignored"] += 1
                continue
            if is_dir:
                directories.append(path)
                tree.append(f"{indent}{name}/")
                if max_depth is None or depth < max_depth:
                    walk(entry.path, path, depth + 1)
                continue
            if not (is_link or stat.S_ISREG(st.st_mode)):
                skipped.append(SkippedPath(path=path, reason=f"not a regular file: {_kind(st.st_mode)}"))
                continue
            extension = os.path.splitext(name)[1].lower()
            counts["files"] += 1
            counts["bytes"] += st.st_size
            stats = extensions.setdefault(extension, ExtensionStats())
            stats.files += 1
            stats.bytes += st.st_size
            if len(files) >= max_files:
                continue
            tree.append(f"{indent}{name}" + (" -> (link)" if is_link else ""))
            info = FileInfo(path=path, size=st.st_size, extension=extension, symlink=is_link)
            if include_contents:
                read_into(info, entry.path, is_link)
            files.append(info)

    walk(real_root, "", 0)
    return FolderAnalysis(
        root=_shown(real_root),
        file_count=counts["files"],
        dir_count=len(directories),
        total_bytes=counts["bytes"],
        extensions=dict(sorted(extensions.items())),
        directories=directories,
        files=files,
        tree="\n".join(tree),
        ignored=counts["ignored"],
        files_not_listed=counts["files"] - len(files),
        contents_truncated=contents_truncated,
        skipped=skipped,
    )
