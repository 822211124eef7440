"""FolderAnalyzerNode: a directory's structure, file statistics and (optionally) contents.

::

    analyze = FolderAnalyzerNode(include_contents=True, max_file_bytes=20_000, max_words=2_000)
    flow = FlowDefinition().node("scan", analyze, inputs={"root": Initial("folder")})

The walk is deterministic (names sorted), skips ``.git``, respects ``.gitignore`` files (see
:mod:`reprise.nodes.gitignore`) plus extra ``ignore`` patterns in the same syntax, and
never follows a symlinked directory (no loops, no escape from the root). Symlinked files are
listed, but their contents are read only when they point inside the root.

Limits keep the outcome small enough for a prompt and for ``outcome.json``: ``max_files``
entries (the rest is counted as ``files_not_listed``), and with ``include_contents`` at most
``max_file_bytes`` and ``max_words`` per file and ``max_total_content_bytes`` in all. Files with
a NUL byte in their first 8 KiB are binary: counted, never read as text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from pydantic import BaseModel, ConfigDict

from reprise.errors import DefinitionError, NodeExecutionError
from reprise.nodes._base import ModelOutcomeNode
from reprise.nodes._render import input_variables, render_text
from reprise.nodes.gitignore import IgnoreRules

if TYPE_CHECKING:
    from reprise.dsl.context import NodeContext

__all__ = [
    "ExtensionStats",
    "FileInfo",
    "FolderAnalysis",
    "FolderAnalysisOptions",
    "FolderAnalyzerNode",
    "FolderInput",
    "analyze_folder",
]

_BINARY_SNIFF = 8192
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
        if not root.is_dir():
            raise NodeExecutionError(f"not a directory: {root}")
        # A walk of a large tree blocks; in a worker thread, and abandoned if the node is
        # cancelled (it only reads).
        analysis = await anyio.to_thread.run_sync(analyze_folder, root, self.options, abandon_on_cancel=True)
        ctx.annotate_result(file_count=analysis.file_count, total_bytes=analysis.total_bytes)
        return analysis


def _read_content(
    path: Path, max_bytes: int, max_words: int | None, budget: int
) -> tuple[bool, str | None, int | None, bool, int]:
    """(binary, content, words, truncated, bytes used) of a file."""
    limit = min(max_bytes, budget)
    with open(path, "rb") as f:
        data = f.read(limit + 1)
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


def analyze_folder(root: Path | str, options: FolderAnalysisOptions = FolderAnalysisOptions()) -> FolderAnalysis:
    """Walk ``root`` (a path or a string) and describe it (synchronous; the node runs it in a
    worker thread)."""
    respect_gitignore, include_contents, max_depth = (
        options.respect_gitignore,
        options.include_contents,
        options.max_depth,
    )
    max_file_bytes, max_words, max_files = options.max_file_bytes, options.max_words, options.max_files
    max_total_content_bytes = options.max_total_content_bytes
    root = Path(root).resolve()
    rules = IgnoreRules(options.ignore)
    files: list[FileInfo] = []
    directories: list[str] = []
    tree: list[str] = [f"{root.name}/"]
    extensions: dict[str, ExtensionStats] = {}
    counts = {"files": 0, "bytes": 0, "ignored": 0, "content": 0}
    contents_truncated = False

    def walk(directory: Path, relative: str, depth: int) -> None:
        nonlocal contents_truncated
        if respect_gitignore:
            try:
                rules.add(relative, (directory / ".gitignore").read_text("utf-8", "replace"))
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                pass
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except PermissionError:
            return
        indent = "  " * (depth + 1)
        for entry in entries:
            name = entry.name
            path = f"{relative}/{name}" if relative else name
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=False)
            if name == ".git" or rules.ignored(path, is_dir):
                counts["ignored"] += 1
                continue
            if is_dir:
                directories.append(path)
                tree.append(f"{indent}{name}/")
                if max_depth is None or depth < max_depth:
                    walk(Path(entry.path), path, depth + 1)
                continue
            if not (is_link or entry.is_file(follow_symlinks=False)):
                continue  # sockets, fifos, devices
            size = entry.stat(follow_symlinks=False).st_size
            extension = os.path.splitext(name)[1].lower()
            counts["files"] += 1
            counts["bytes"] += size
            stats = extensions.setdefault(extension, ExtensionStats())
            stats.files += 1
            stats.bytes += size
            if len(files) >= max_files:
                continue
            tree.append(f"{indent}{name}" + (" -> (link)" if is_link else ""))
            info = FileInfo(path=path, size=size, extension=extension, symlink=is_link)
            readable = not is_link or _inside(Path(entry.path), root)
            if include_contents and readable:
                budget = max_total_content_bytes - counts["content"]
                if budget <= 0:
                    contents_truncated = True
                else:
                    try:
                        binary, content, words, truncated, used = _read_content(
                            Path(entry.path), max_file_bytes, max_words, budget
                        )
                    except OSError:
                        binary, content, words, truncated, used = False, None, None, False, 0
                    info.binary, info.content, info.words, info.content_truncated = binary, content, words, truncated
                    counts["content"] += used
                    if truncated and used == budget < max_file_bytes:
                        contents_truncated = True
            files.append(info)

    walk(root, "", 0)
    return FolderAnalysis(
        root=str(root),
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
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except OSError:
        return False
