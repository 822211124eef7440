"""What an experiment runs, in a form that travels to worker processes and Dask workers.

A target is a :class:`~reprise.dsl._container.FlowDefinition`,
:class:`~reprise.dsl._container.AgentDefinition` or a function (run as its one-node flow, see
:func:`reprise.entrypoint`). Workers get it by *reference* when they can:

* ``package.module:name``: imported by name (the usual case; ``resume`` can rebuild it from
  ``config.yaml``);
* ``path/to/flows.py:name`` (the CLI's form), or a flow defined in the script that started the
  experiment (``__main__``): the file is loaded by path as the module ``reprise_target_<stem>``,
  so its ``if __name__ == "__main__":`` block does not run again in the workers.

Otherwise (a flow built inside a function, with lambdas) it is pickled, with ``cloudpickle``
when installed.
"""

from __future__ import annotations

import hashlib
import pickle
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise import _targets as targets
from reprise.dsl._container import AgentDefinition, Container, FlowDefinition
from reprise.errors import TargetError
from reprise.experiments._errors import ExperimentError

__all__ = ["TargetSpec", "import_target"]

# Resolved targets of this process: a worker resolves each target once, not once per item.
# Threads of one worker may resolve the same target together; the first one stored wins.
_RESOLVED: dict[str, Container] = {}


def _split(ref: str) -> tuple[str, str]:
    try:
        return targets.split_reference(ref)
    except TargetError as exc:
        raise ExperimentError(f"invalid target: {exc.message}") from None


def _check(obj: Any, ref: str) -> Container:
    if not isinstance(obj, (FlowDefinition, AgentDefinition)):
        raise ExperimentError(f"target {ref!r} is a {type(obj).__name__}, not a FlowDefinition or AgentDefinition")
    return obj


def _from_file(path: Path, attr: str, ref: str) -> Container:
    try:
        return targets.attribute(targets.load_file_module(path), attr, ref)
    except TargetError as exc:
        raise ExperimentError(f"target {exc.message}") from exc


def import_target(ref: str, base: Path | None = None) -> Container:
    """The flow or agent ``ref`` names (see :mod:`reprise._targets`), as an experiment error."""
    try:
        return targets.import_target(ref, base)
    except TargetError as exc:
        raise ExperimentError(f"target {exc.message}") from exc


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target as workers receive it: a reference, or pickled bytes."""

    #: ``module:object``, ``file.py:object`` or ``__main__:object``; ``None`` when pickled.
    ref: str | None
    pickled: bytes | None = None
    #: The absolute path of the file that defines the target (file and ``__main__`` targets).
    file: str | None = None
    #: A target that only exists in this process (inline experiments need nothing more).
    local_id: str | None = None

    @classmethod
    def of(
        cls, target: Container | Callable[..., Any] | str, *, portable: bool = True, base: Path | None = None
    ) -> TargetSpec:
        """Describe ``target`` (an object, or a reference string resolved against ``base``).
        ``portable=False`` (items run in this process) skips pickling a target that has no
        reference."""
        if isinstance(target, str):
            obj = import_target(target, base)  # fail here, in the client, not once per item
            module_name, _ = _split(target)
            is_file = targets.is_file_reference(module_name)
            file = str(((base or Path.cwd()) / module_name).resolve()) if is_file else None
            spec = cls(ref=target, file=file)
        elif isinstance(target, (FlowDefinition, AgentDefinition)) or callable(target):
            try:
                obj = targets.as_container(target, getattr(target, "__qualname__", "the target"))
            except TargetError as exc:
                raise ExperimentError(f"target {exc.message}") from None
            found = _find_reference(target)  # a function: workers import it and make its flow
            if found is not None:
                spec = cls(ref=found[0], file=found[1])
            elif portable:
                spec = cls(ref=None, pickled=_pickle(obj))
            else:
                spec = cls(ref=None, local_id=secrets.token_hex(8))
        else:
            raise ExperimentError(
                f"an experiment runs a FlowDefinition, an AgentDefinition or a function, got {type(target).__name__}"
            )
        # This process already has the object: items run here use it as it is.
        _RESOLVED[spec.key] = obj
        return spec

    @property
    def key(self) -> str:
        """A short stable key (for the per-process cache)."""
        body = self.ref.encode() if self.ref else (self.pickled or (self.local_id or "").encode())
        return hashlib.sha1(body + (self.file or "").encode()).hexdigest()

    @property
    def name(self) -> str:
        """The object's name (``target`` when it was pickled)."""
        return self.ref.rsplit(":", 1)[1].rsplit(".", 1)[-1] if self.ref else "target"

    def resolve(self) -> Container:
        """The target object (in a worker: imported, loaded or unpickled once, then cached)."""
        key = self.key
        cached = _RESOLVED.get(key)
        if cached is not None:
            return cached
        target: Container
        if self.local_id is not None:
            raise ExperimentError("this target exists only in the experiment's own process (inline isolation)")
        if self.pickled is not None:
            target = _check(pickle.loads(self.pickled), "the pickled target")
        elif self.file is not None and self.ref is not None:
            target = _from_file(Path(self.file), _split(self.ref)[1], self.ref)
        else:
            assert self.ref is not None
            target = import_target(self.ref)
        return _RESOLVED.setdefault(key, target)


def _find_reference(target: object) -> tuple[str, str | None] | None:
    """``(reference, file or None)`` for a module-level name bound to ``target``."""
    # __main__ last: a flow imported into a script is found in its own (importable) module;
    # one defined in the script itself is then loaded from the script's file in workers.
    modules: list[tuple[str, object]] = [(n, m) for n, m in list(sys.modules.items()) if n != "__main__"]
    modules.append(("__main__", sys.modules.get("__main__")))
    for mod_name, module in modules:
        namespace = getattr(module, "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for attr, value in list(namespace.items()):
            if value is not target or attr.startswith("__"):
                continue
            file = getattr(module, "__file__", None)
            if mod_name.startswith("reprise_target_") and file:
                return f"{mod_name}:{attr}", str(Path(file).resolve())  # a file loaded by path
            if mod_name != "__main__":
                return f"{mod_name}:{attr}", None
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.name and spec.name != "__main__":
                return f"{spec.name}:{attr}", None  # `python -m package.module`
            if file:
                return f"__main__:{attr}", str(Path(file).resolve())
    return None


def _pickle(target: Container) -> bytes:
    try:
        import cloudpickle  # type: ignore[import-untyped]

        return bytes(cloudpickle.dumps(target))
    except ImportError:
        pass
    except Exception as exc:
        raise ExperimentError(f"cannot send the target to worker processes: {exc}") from exc
    try:
        return pickle.dumps(target)
    except Exception as exc:
        raise ExperimentError(
            "cannot send the target to worker processes: it is not a module-level name of an importable "
            f"module and does not pickle ({exc}); define it at module level, install cloudpickle, or use "
            "LocalExecutor(isolation='inline')"
        ) from exc
