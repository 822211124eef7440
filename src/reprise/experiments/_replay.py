"""Argument replay: call the target with arguments recorded from real calls, the input at one path.

Record real calls (a web handler's, say) with :class:`ArgumentRecorder`, as a decorator::

    from reprise.experiments import ArgumentRecorder

    @ArgumentRecorder("recordings/args.jsonl")
    def handle(data: dict, user_id: str) -> str: ...

or explicitly, as a context manager::

    with ArgumentRecorder("recordings/args.jsonl") as recorder:
        recorder.record({"data": {"content": "hi", "lang": "en"}, "user_id": "u1"})

Each call appends one JSON line ``{"function": ..., "kwargs": {...}, "recorded_at": ...}``;
calls made by an experiment's runs are not recorded.
An experiment with ``replay_args`` (``ArgumentReplay(file, "data.content")``) then calls its
target with those keyword arguments, each input's text put at ``data.content``: input *k* takes
recording *k* modulo the number of recordings. The substituted arguments become the items'
initial inputs, so the experiment's ``inputs.jsonl`` holds what each run really received.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter

from reprise.experiments._errors import ExperimentConfigError
from reprise.experiments._inputs import ExperimentInput, input_text
from reprise.experiments._item import IN_ITEM, now_iso

__all__ = ["ArgumentRecorder", "ArgumentReplay"]

F = TypeVar("F", bound=Callable[..., Any])

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


class ArgumentRecorder:
    """Appends the keyword arguments of real calls to a JSON-lines file (see the module's
    documentation). Values that are not JSON (a model, a date) are recorded as pydantic dumps
    them, and anything else as its ``str``."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def record(self, kwargs: Mapping[str, Any], *, function: str | None = None) -> None:
        """Append one call's keyword arguments (not while an experiment item runs: replaying a
        recording must not grow it)."""
        if IN_ITEM.get():
            return
        data = _ANY.dump_python(dict(kwargs), mode="json", fallback=str)
        line = json.dumps({"function": function, "kwargs": data, "recorded_at": now_iso()}, ensure_ascii=False)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            # One write of the whole line on an O_APPEND descriptor: processes never interleave.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode() + b"\n")
            finally:
                os.close(fd)

    def __call__(self, fn: F) -> F:
        """Decorate ``fn``: every call records its arguments by parameter name, then runs."""
        signature = inspect.signature(fn)
        name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"

        def arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return dict(bound.arguments)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def recorded_async(*args: Any, **kwargs: Any) -> Any:
                self.record(arguments(args, kwargs), function=name)
                return await fn(*args, **kwargs)

            return recorded_async  # type: ignore[return-value]

        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.record(arguments(args, kwargs), function=name)
            return fn(*args, **kwargs)

        return recorded  # type: ignore[return-value]

    def __enter__(self) -> ArgumentRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class ArgumentReplay:
    """Recorded keyword arguments with each input's text at ``override_param_path``.

    The file is read and every recording checked when this is made, so a missing file, a bad
    line or a path that cannot be set stops the experiment before it runs, naming ``source``
    (the configuration key) and the file's line."""

    def __init__(self, recording_file: Path | str, override_param_path: str, *, source: str = "replay_args") -> None:
        self.recording_file = Path(recording_file)
        self.override_param_path = override_param_path
        self.source = source
        self._path = override_param_path.split(".")
        if not override_param_path or not all(self._path):
            raise ExperimentConfigError(f"{source}: override_param_path {override_param_path!r} is not a dotted path")
        self.recordings = self._read()

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.recording_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ExperimentConfigError(
                f"{self.source}: cannot read recording_file {self.recording_file}: {exc.strerror or exc}"
            ) from None
        recordings = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.source}: {self.recording_file}:{lineno}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise ExperimentConfigError(f"{where}: not valid JSON: {exc}") from None
            kwargs = data.get("kwargs") if isinstance(data, dict) else None
            if not isinstance(kwargs, dict):
                raise ExperimentConfigError(f'{where}: expected {{"kwargs": {{...}}}} (what ArgumentRecorder writes)')
            self._parent(kwargs, where)  # the path can be set in every recording
            recordings.append(kwargs)
        if not recordings:
            raise ExperimentConfigError(f"{self.source}: {self.recording_file} holds no recording")
        return recordings

    def _parent(self, kwargs: dict[str, Any], where: str) -> dict[str, Any]:
        """The mapping that holds the last key of the path (made where the path is missing)."""
        node: Any = kwargs
        for depth, key in enumerate(self._path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                at = ".".join(self._path[: depth + 1])
                raise ExperimentConfigError(
                    f"{where}: override_param_path {self.override_param_path!r}: {at!r} is a "
                    f"{type(child).__name__}, not a mapping"
                )
            node = child
        return node  # type: ignore[no-any-return]

    def apply(self, items: Sequence[ExperimentInput]) -> list[ExperimentInput]:
        """The items with their initial inputs replaced by recorded arguments, each item's text
        at the path."""
        out = []
        for k, item in enumerate(items):
            kwargs = copy.deepcopy(self.recordings[k % len(self.recordings)])
            self._parent(kwargs, self.source)[self._path[-1]] = input_text(item)
            out.append(item.model_copy(update={"initial_inputs": kwargs}))
        return out

    def describe(self) -> dict[str, Any]:
        """What ``config.yaml`` records."""
        return {
            "recording_file": str(self.recording_file.resolve()),
            "override_param_path": self.override_param_path,
            "recordings": len(self.recordings),
        }
