"""What an experiment runs, in a form that travels to worker processes and Dask workers.

A target is a :class:`~reprise.dsl.container.FlowDefinition` or
:class:`~reprise.dsl.container.AgentDefinition`. Workers get it by *import reference*
(``package.module:name``) when the object is a module-level name of an importable module (the
usual case, and the only one ``resume`` can rebuild from ``config.yaml``); otherwise it is
pickled (with ``cloudpickle`` when installed, so lambdas and local functions travel too).
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import re
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.dsl.container import AgentDefinition, Container, FlowDefinition
from reprise.experiments.errors import ExperimentError

__all__ = ["TargetSpec", "import_target"]

_REF = re.compile(r"(?P<module>[A-Za-z_][\w.]*):(?P<name>[A-Za-z_][\w.]*)\Z")

# Worker-side cache: a worker resolves each target once, not once per item.
_RESOLVED: dict[str, Container] = {}


def import_target(ref: str) -> Container:
    """Import ``module:object`` (``object`` may be dotted) and check it is a flow or an agent."""
    match = _REF.match(ref)
    if match is None:
        raise ExperimentError(f"invalid target {ref!r}: expected MODULE:OBJECT, e.g. 'my_project.flows:review'")
    try:
        obj: Any = importlib.import_module(match["module"])
    except ImportError as exc:
        raise ExperimentError(f"cannot import {match['module']!r} for target {ref!r}: {exc}") from exc
    for part in match["name"].split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExperimentError(f"target {ref!r}: {match['module']} has no attribute {match['name']!r}") from None
    if not isinstance(obj, (FlowDefinition, AgentDefinition)):
        raise ExperimentError(f"target {ref!r} is a {type(obj).__name__}, not a FlowDefinition or AgentDefinition")
    return obj


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A target as workers receive it: an import reference, or pickled bytes."""

    #: ``module:object``, or ``None`` when the target could only be pickled.
    ref: str | None
    pickled: bytes | None = None
    #: A ``__main__`` script's file, loaded by path in workers (like multiprocessing does).
    main_file: str | None = None
    #: A target that only exists in this process (inline experiments need nothing more).
    local_id: str | None = None

    @classmethod
    def of(cls, target: Container | str, *, portable: bool = True) -> TargetSpec:
        """Describe ``target`` (an object, or a ``module:object`` string). ``portable=False``
        (items run in this process) skips pickling a target that has no import reference."""
        if isinstance(target, str):
            obj = import_target(target)  # fail here, in the client, not once per item in the workers
            spec = cls(ref=target)
        elif isinstance(target, (FlowDefinition, AgentDefinition)):
            obj = target
            found = _find_reference(target)
            if found is not None:
                spec = cls(ref=found[0], main_file=found[1])
            elif portable:
                spec = cls(ref=None, pickled=_pickle(target))
            else:
                spec = cls(ref=None, local_id=secrets.token_hex(8))
        else:
            raise ExperimentError(
                f"an experiment runs a FlowDefinition or AgentDefinition, got {type(target).__name__}"
            )
        # This process already has the object: items run here use it as it is.
        _RESOLVED[spec.key] = obj
        return spec

    @property
    def key(self) -> str:
        """A short stable key (for the worker-side cache)."""
        body = self.ref.encode() if self.ref else (self.pickled or (self.local_id or "").encode())
        return hashlib.sha1(body + (self.main_file or "").encode()).hexdigest()

    @property
    def name(self) -> str:
        """The object's name in its module, or ``target`` when it was pickled."""
        return self.ref.rsplit(":", 1)[1].rsplit(".", 1)[-1] if self.ref else "target"

    def resolve(self) -> Container:
        """The target object (in a worker: imported, loaded or unpickled once, then cached)."""
        key = self.key
        cached = _RESOLVED.get(key)
        if cached is not None:
            return cached
        target: Any
        if self.local_id is not None:
            raise ExperimentError("this target exists only in the experiment's own process (inline isolation)")
        if self.pickled is not None:
            target = pickle.loads(self.pickled)
        elif self.main_file is not None and self.ref is not None:
            target = _load_main_file(self.main_file, self.ref)
        else:
            assert self.ref is not None
            target = import_target(self.ref)
        _RESOLVED[key] = target
        return target  # type: ignore[no-any-return]


def _find_reference(target: Container) -> tuple[str, str | None] | None:
    """``("module:name", main file or None)`` for a module-level name bound to ``target``."""
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
            if mod_name != "__main__":
                return f"{mod_name}:{attr}", None
            spec = getattr(module, "__spec__", None)
            if spec is not None and spec.name and spec.name != "__main__":
                return f"{spec.name}:{attr}", None  # `python -m package.module`
            file = getattr(module, "__file__", None)
            if file:
                return f"__main__:{attr}", str(Path(file).resolve())
    return None


def _load_main_file(file: str, ref: str) -> Any:
    import runpy

    # Like multiprocessing's spawn: the script runs under another name, so its
    # `if __name__ == "__main__":` block does not start a second experiment.
    namespace = runpy.run_path(file, run_name="__reprise_main__")
    name = ref.rsplit(":", 1)[1]
    if name not in namespace:
        raise ExperimentError(f"{file} defines no {name!r} at module level")
    return namespace[name]


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
