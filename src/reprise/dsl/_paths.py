"""Hierarchy paths: where an element sits in a component tree.

An element's path is the dotted list of ids from the root component down to it, e.g.
``agent.flow1.node3``. Ids match ``[A-Za-z_][A-Za-z0-9_]*``. Two kinds of segment are not ids:

* a loop iteration is its zero-based index: ``agent.flow1.loop.3.node2`` is ``node2`` in the
  fourth iteration of ``loop``;
* a conditional's branch is ``then`` or ``else``: ``flow.check.then.fix``.

Parallel branches use their branch id: ``flow.fanout.left.node``. The same path is used for the
run directory (``<run_dir>/agent/flow1/node3/``), span names and re-run start points.
"""

from __future__ import annotations

import re
from functools import total_ordering
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from reprise.errors import DefinitionError

__all__ = ["HierarchyPath", "validate_id", "ID_PATTERN", "git_path_problem"]

ID_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INDEX = re.compile(r"(0|[1-9][0-9]*)\Z")


# A component that is ``.git`` on some file system: case-insensitive, its NTFS short name
# ``git~1``, and NTFS's trailing dots and spaces or an alternate stream (``.git::$DATA``)
# dropped.
_DOT_GIT = re.compile(r"(\.git|git~1)[. ]*(:.*)?\Z", re.IGNORECASE)
# The same for ``.gitmodules`` (NTFS short names ``gitmod~N``, ``gi7eba~N``): git reads every
# blob of that name as submodule configuration, and fsck fails a repository holding a bad one.
_DOT_GITMODULES = re.compile(r"(\.gitmodules|gitmod~[0-9]+|gi7eba~[0-9]+)[. ]*(:.*)?\Z", re.IGNORECASE)
# Code points HFS+ ignores in names, so ``.g\u200cit`` is ``.git`` there.
_HFS_IGNORED = dict.fromkeys([*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF])
# Bytes a name must not hold: control characters (a newline ends a line of git's commit
# stream and of many tools' output).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def git_path_problem(path: str) -> str | None:
    """Why git would refuse the file path ``path`` (``/``-separated, relative) in a commit, or
    ``None`` when it takes it.

    The rules of git's own ``verify_path`` and ``fsck``, for every file system a repository
    may be checked out on: no empty, ``.`` or ``..`` component; no component that is ``.git``
    on a case-insensitive, NTFS (``git~1``, ``.git.``, ``.git::$DATA``) or HFS+ (ignorable
    code points) file system, with ``\\`` taken as a separator as on Windows; no
    ``.gitmodules`` (git parses it as submodule configuration); no control characters, and
    only text that encodes as UTF-8 (run records are JSON). Outcome files are committed as
    regular files, never as symbolic links. Checked by the file operations before they write
    and by the outcome commit, so no such name ever reaches the repository::

        >>> git_path_problem("src/app.py") is None
        True
        >>> git_path_problem(".GIT/config")
        "'.GIT' is git's own directory on some file systems"
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    control = _CONTROL.search(path)
    if control is not None:
        return f"the name holds the control character {control.group()!r}"
    if path.startswith("/"):
        return "the path is absolute"
    for component in re.split(r"[/\\]", path):
        if component in ("", ".", ".."):
            return f"the path has an empty, '.' or '..' component: {path!r}"
        bare = component.translate(_HFS_IGNORED)
        if _DOT_GIT.match(bare):
            return f"{component!r} is git's own directory on some file systems"
        if _DOT_GITMODULES.match(bare):
            return f"{component!r} is read by git as submodule configuration"
    return None


def validate_id(element_id: str, *, where: str | None = None) -> str:
    """Return ``element_id`` if it is a valid id, else raise :class:`DefinitionError`."""
    if not isinstance(element_id, str) or not ID_PATTERN.match(element_id):
        raise DefinitionError(f"invalid id {element_id!r}: ids must match [A-Za-z_][A-Za-z0-9_]*", path=where)
    return element_id


@total_ordering
class HierarchyPath:
    """A parsed, validated hierarchy path such as ``agent.flow1.loop.2.node3``.

    >>> p = HierarchyPath("agent.flow1.node3")
    >>> p.parent, p.name, len(p)
    (HierarchyPath('agent.flow1'), 'node3', 3)
    >>> p.child("x")
    HierarchyPath('agent.flow1.node3.x')
    """

    __slots__ = ("_parts", "_text")

    def __init__(self, path: str | HierarchyPath | tuple[str, ...] | list[str]) -> None:
        if isinstance(path, HierarchyPath):
            self._parts: tuple[str, ...] = path._parts
            self._text: str = path._text
            return
        parts = tuple(path.split(".")) if isinstance(path, str) else tuple(path)
        if not parts or parts == ("",):
            raise DefinitionError("empty hierarchy path")
        for part in parts:
            if not (ID_PATTERN.match(part) or _INDEX.match(part)):
                shown = ".".join(parts)
                raise DefinitionError(
                    f"invalid hierarchy path {shown!r}: segment {part!r} is neither an id "
                    "([A-Za-z_][A-Za-z0-9_]*) nor a loop index"
                )
        if _INDEX.match(parts[0]):
            raise DefinitionError(f"invalid hierarchy path {'.'.join(parts)!r}: it must start with an id")
        self._parts = parts
        self._text = ".".join(parts)

    @classmethod
    def _trusted(cls, parts: tuple[str, ...], text: str) -> HierarchyPath:
        # The executor builds paths from already-validated ids; skip re-validation on the hot path.
        obj = cls.__new__(cls)
        obj._parts = parts
        obj._text = text
        return obj

    @property
    def parts(self) -> tuple[str, ...]:
        """The segments, root first."""
        return self._parts

    @property
    def name(self) -> str:
        """The last segment."""
        return self._parts[-1]

    @property
    def root(self) -> str:
        """The first segment: the root component's id."""
        return self._parts[0]

    @property
    def relpath(self) -> str:
        """The path as a relative file-system path (``agent/flow1/node3``): ids never contain
        dots, so this is a plain character swap."""
        return self._text.replace(".", "/")

    @property
    def parent(self) -> HierarchyPath | None:
        """The enclosing path, or ``None`` for the root."""
        if len(self._parts) == 1:
            return None
        parts = self._parts[:-1]
        return HierarchyPath._trusted(parts, ".".join(parts))

    def child(self, segment: str | int) -> HierarchyPath:
        """The path of a child element (an id) or loop iteration (an int)."""
        seg = str(segment)
        return HierarchyPath._trusted((*self._parts, seg), f"{self._text}.{seg}")

    def is_ancestor_of(self, other: HierarchyPath) -> bool:
        """True if ``other`` lies strictly below this path."""
        n = len(self._parts)
        return len(other._parts) > n and other._parts[:n] == self._parts

    def relative_to(self, ancestor: HierarchyPath) -> tuple[str, ...]:
        """The segments below ``ancestor``."""
        if not (ancestor == self or ancestor.is_ancestor_of(self)):
            raise ValueError(f"{self} is not under {ancestor}")
        return self._parts[len(ancestor._parts) :]

    def __len__(self) -> int:
        return len(self._parts)

    def __str__(self) -> str:
        return self._text

    def __repr__(self) -> str:
        return f"HierarchyPath({self._text!r})"

    def __hash__(self) -> int:
        return hash(self._text)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, HierarchyPath):
            return self._text == other._text
        if isinstance(other, str):
            return self._text == other
        return NotImplemented

    def __lt__(self, other: HierarchyPath) -> bool:
        return self._parts < other._parts

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            lambda v: v if isinstance(v, HierarchyPath) else HierarchyPath(v),
            serialization=core_schema.to_string_ser_schema(),
        )
