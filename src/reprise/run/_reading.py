"""Reading the files of a run directory: one place that says what is wrong, and where.

Every reader of a run (the CLI, :class:`~reprise.Api`, the HTML view, experiments, re-runs)
reads run files through :func:`read_run_json` and :func:`read_run_jsonl`. A file that cannot be
read, is empty, is not UTF-8, is not JSON, is cut short or has the wrong shape then gives a
:class:`~reprise.errors.RunFileError` that names the run, the file and the problem, instead of a
bare ``JSONDecodeError`` from somewhere below. A missing file stays ``FileNotFoundError``: most
readers treat "not written" differently from "written wrong".

JSON Lines files (``trace.jsonl``, ``logs.jsonl``, ``journal.jsonl``...) are appended to line by
line, so a reader can go on past a bad line: given a ``problems`` list, each bad line is recorded
there and skipped, for the caller to report.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ValidationError

from reprise.errors import RunFileError

__all__ = ["read_run_json", "read_run_jsonl", "read_run_object", "run_file_error"]

M = TypeVar("M", bound=BaseModel)


def _run_of(path: Path) -> tuple[str | None, str]:
    """The run id a file belongs to and the file's path inside the run directory (the run
    directory is the nearest parent holding a ``.trace`` directory)."""
    for parent in path.parents:
        if (parent / ".trace").is_dir():
            return parent.name, path.relative_to(parent).as_posix()
    return None, str(path)


def run_file_error(path: Path | str, problem: str) -> RunFileError:
    """A :class:`RunFileError` for ``path``: ``run RUN_ID: FILE problem (full path)``."""
    path = Path(os.path.abspath(path))
    run_id, name = _run_of(path)
    where = f"run {run_id}: {name}" if run_id else name
    suffix = f" ({path})" if run_id else ""
    return RunFileError(f"{where} {problem}{suffix}", run_id=run_id, file=str(path))


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    return "a number" if isinstance(value, (int, float)) and not isinstance(value, bool) else "a boolean"


def _parse(data: bytes) -> tuple[Any, str | None]:
    """The JSON value in ``data``, or ``(None, what is wrong)``."""
    if not data.strip():
        return None, "is empty"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"is not UTF-8 text (byte {exc.start}: a binary file?)"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
            return None, f"is cut short: the JSON ends early ({exc.msg}; truncated?)"
        return None, f"is not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise run_file_error(path, f"cannot be read: {exc.strerror or exc}") from None


@overload
def read_run_json(path: Path | str) -> Any: ...
@overload
def read_run_json(path: Path | str, model: type[M]) -> M: ...
def read_run_json(path: Path | str, model: type[M] | None = None) -> Any:
    """The JSON document in the run file ``path``, validated against ``model`` if given.

    Raises ``FileNotFoundError`` if there is no such file, :class:`RunFileError` for anything
    else wrong with it."""
    path = Path(path)
    value, problem = _parse(_read_bytes(path))
    if problem is not None:
        raise run_file_error(path, problem)
    if model is None:
        return value
    if not isinstance(value, dict):
        raise run_file_error(path, f"holds {_kind(value)}, not the JSON object of a {model.__name__}")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise run_file_error(path, f"is not a valid {model.__name__}: {where}: {first['msg']}{more}") from None


def read_run_object(path: Path | str) -> dict[str, Any]:
    """The JSON object in the run file ``path`` (:class:`RunFileError` if it holds anything else)."""
    value = read_run_json(path)
    if not isinstance(value, dict):
        raise run_file_error(path, f"holds {_kind(value)}, not a JSON object")
    return value


def read_run_jsonl(path: Path | str, problems: list[RunFileError] | None = None) -> Iterator[dict[str, Any]]:
    """The JSON objects of the JSON Lines run file ``path``, one a line, in order.

    A bad line (not UTF-8, not JSON, not an object) is added to ``problems`` and skipped; without
    a ``problems`` list it raises :class:`RunFileError`, except a last line cut short, which a
    process that died while writing it leaves behind. Raises ``FileNotFoundError`` if there is
    no such file."""
    path = Path(path)
    lines = _read_bytes(path).split(b"\n")
    last = len(lines) - 1  # the text after the last newline: empty unless the file ends mid-line
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        value, problem = _parse(raw)
        if problem is None and not isinstance(value, dict):
            problem = f"holds {_kind(value)}, not a JSON object"
        if problem is None:
            yield value
            continue
        if number - 1 == last:
            problem = f"{problem}; the line has no end (the run was writing it, or died doing so)"
            if problems is None:
                return
        error = run_file_error(path, f"line {number} {problem}")
        if problems is None:
            raise error
        problems.append(error)
