"""Atomic file writes: a reader sees the old file or the new one, never a torn one."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import json
import math
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, TypeAdapter

__all__ = [
    "dump_json",
    "exchange_paths",
    "json_problem",
    "read_json",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_new_dir",
]


def dump_json(data: Any) -> bytes:
    """The bytes reprise writes for a JSON document: indented, UTF-8, trailing newline.

    pydantic-core's encoder: about 8x faster than ``json.dumps`` with ``indent`` (which falls back
    to the pure-Python encoder), and it is on every node's hot path."""
    try:
        return pydantic_core.to_json(data, indent=2, fallback=str) + b"\n"
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(f"cannot encode as JSON: {exc}") from exc


_ANY: TypeAdapter[Any] = TypeAdapter(Any)
_PLAIN = frozenset({str, int, bool, type(None)})
_CONTAINERS = (dict, list, tuple, set, frozenset)


def json_problem(value: Any, *, objects: bool = True) -> tuple[str, str] | None:
    """The first part of ``value`` that a JSON file cannot hold as it is, as ``(where, what)``:
    ``where`` a Python-style place (``"['scores'][2]"``, ``".loss"``, ``""`` for ``value``
    itself), ``what`` the reason. ``None`` when reprise can write ``value`` and read it back.

    A float that is NaN or infinite is refused: JSON has no such number, and pydantic writes a
    bare ``NaN`` (not JSON) or ``null`` (a silent change) depending on where it sits. With
    ``objects`` (the default), so is an object pydantic cannot encode; callers that encode with
    a type of their own (a node's outcome type) pass ``objects=False``. Models and dataclasses
    are looked into field by field, as they hold their values.

    It runs on every node's outcome: a first walk only looks; the places are worked out by a
    second one when something is wrong."""
    if type(value) in _PLAIN or not _any_problem(value, objects):
        return None
    return _first_problem(value, objects)


def _any_problem(value: Any, objects: bool) -> bool:
    """Whether :func:`json_problem` finds something: the walk without places, to be cheap."""
    stack = [value]
    seen: set[int] = set()  # containers already looked into: a shared one once, a cycle ends
    while stack:
        item = stack.pop()
        if type(item) in _PLAIN:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return True
            continue
        if isinstance(item, _CONTAINERS):
            if id(item) in seen:
                continue
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
            continue
        fields = _fields(item)
        if fields is not None:
            stack.extend(v for _, v in fields)
        elif objects and not _encodable(item):
            return True
    return False


def _first_problem(value: Any, objects: bool) -> tuple[str, str] | None:
    """The same walk, keeping each part's place, in order: the first problem is reported."""
    stack: list[tuple[Any, str]] = [(value, "")]
    seen: set[int] = set()
    while stack:
        item, where = stack.pop()
        if type(item) in _PLAIN:
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return where, f"{item!r} is not a JSON number"
            continue
        if isinstance(item, _CONTAINERS):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, dict):
            parts = [(v, f"{where}[{k!r}]") for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            parts = [(v, f"{where}[{i}]") for i, v in enumerate(item)]
        elif isinstance(item, (set, frozenset)):
            parts = [(v, f"{where}{{...}}") for v in item]
        else:
            fields = _fields(item)
            if fields is None:
                if objects and not _encodable(item):
                    return where, f"object of type {type(item).__name__} is not JSON-serialisable"
                continue
            parts = [(v, f"{where}.{k}") for k, v in fields]
        stack.extend(reversed(parts))
    return None


def _fields(item: Any) -> list[tuple[str, Any]] | None:
    """``(name, value)`` of a model's or dataclass's fields, as it holds them; ``None`` for
    anything else."""
    if isinstance(item, BaseModel):
        return list(item)  # every field and extra
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return [(f.name, getattr(item, f.name)) for f in dataclasses.fields(item)]
    return None


def _encodable(item: Any) -> bool:
    try:
        _ANY.dump_python(item, mode="json")
    except pydantic_core.PydanticSerializationError:
        return False
    return True


# Per-process sequence for temporary names; next() on itertools.count is atomic under the GIL.
_SEQUENCE = itertools.count()
_PID = os.getpid()


def _after_fork() -> None:
    global _PID
    _PID = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        # os.write may write less than asked; loop until every byte is out.
        view = view[os.write(fd, view) :]


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so a concurrent reader never sees a partial file. No fsync:
    the guarantee is against torn reads and process crashes, not power loss (the OS keeps
    written pages), which keeps a node's bookkeeping cheap."""
    # A name of its own per write (not just per process): two threads rewriting the same file
    # would otherwise share one temporary and rename each other's half-written bytes.
    target = os.fspath(path)
    head, name = os.path.split(target)
    tmp = os.path.join(head, f".{name}.{_PID}.{next(_SEQUENCE)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_new_dir(
    target: str, files: Sequence[tuple[str, bytes]], fill: Callable[[str], None] | None = None
) -> None:
    """Create the directory ``target`` (an absolute path with ``/`` separators) holding ``files``
    (``(name, bytes)`` pairs) all at once.

    The files are written into a temporary sibling directory, which is then renamed to
    ``target``: a reader sees no directory or a complete one, never a half-written file. That
    costs one rename per directory instead of one per file (a rename is about as dear as a file
    creation on ext4). Missing parent directories are created. ``fill(directory)``, if given,
    adds more to the directory first (a re-run's hard links). If ``target`` already exists with
    something in it, ``fill`` runs on it and the files are written into it one by one, each
    atomically, in order (so the last one, a ``result.json``, lands last)."""
    head, _, name = target.rpartition("/")
    tmp = f"{head}/.{name}.{_PID}.{next(_SEQUENCE)}.tmp"
    try:
        os.mkdir(tmp)
    except FileNotFoundError:
        os.makedirs(head, exist_ok=True)
        os.mkdir(tmp)
    try:
        if fill is not None:
            fill(tmp)
        for file_name, data in files:
            fd = os.open(f"{tmp}/{file_name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        os.rename(tmp, target)  # replaces an empty directory; refuses a non-empty one
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        if fill is not None:
            fill(target)
        for file_name, data in files:
            write_bytes_atomic(f"{target}/{file_name}", data)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Atomically write ``data`` as JSON to ``path``."""
    write_bytes_atomic(path, dump_json(data))


def read_json(path: Path | str) -> Any:
    """Read a JSON file."""
    with open(path, "rb") as f:
        return json.loads(f.read())


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_renameat2: Any = None  # the C function once looked up; False where there is none


def exchange_paths(a: str, b: str) -> bool:
    """Swap what the paths ``a`` and ``b`` name (say a symbolic link and a directory) in one
    atomic step: Linux's ``renameat2(RENAME_EXCHANGE)``, so a reader of either path finds one
    of the two things there at every moment. ``False`` when this system or file system cannot
    (then nothing changed: the caller does it in steps); other failures raise ``OSError``."""
    global _renameat2
    if _renameat2 is None:
        _renameat2 = False
        if sys.platform.startswith("linux"):
            try:
                import ctypes  # optional: a Python built without libffi has none

                func = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28 and later
            except (ImportError, AttributeError, OSError):
                pass
            else:
                func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
                func.restype = ctypes.c_int
                _renameat2 = (func, ctypes.get_errno)
    if _renameat2 is False:
        return False
    func, get_errno = _renameat2
    if func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False  # an old kernel, or a file system without the flag
    raise OSError(code, os.strerror(code), a, None, b)
