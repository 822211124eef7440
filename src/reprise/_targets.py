"""Finding a flow or agent definition (or a function, run as its one-node flow) from a
``MODULE:OBJECT`` reference.

The CLI (``reprise run``, ``rerun``, ``experiment``) and experiment workers name what they run
the same way:

* ``package.module:name`` - imported by name (``name`` may be dotted);
* ``path/to/flows.py:name`` - the file (relative to a base directory) loaded as the module
  ``reprise_target_<stem>``, registered in ``sys.modules`` so what it defines pickles by
  reference and its ``if __name__ == "__main__":`` block does not run.

Loading a file is safe from many threads at once (a Dask worker with several threads starts
several items together): the module sits in ``sys.modules`` while its body runs, as any
imported module does, so a thread that only checked ``sys.modules`` could take a module whose
names are not defined yet. A module counts as loaded only once its body has finished, and one
lock per process serialises the loading itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from reprise.dsl import function_flow
from reprise.dsl._container import AgentDefinition, Container, FlowDefinition
from reprise.errors import DefinitionError, TargetError

__all__ = [
    "PROJECT_TAG",
    "TARGET_TAG",
    "as_container",
    "attribute",
    "import_target",
    "is_file_reference",
    "load_file_module",
    "split_reference",
]

#: Run tags naming what ran and from where, so ``reprise rerun``/``resume`` need only a run id.
TARGET_TAG = "reprise.target"
PROJECT_TAG = "reprise.project_root"

_ATTR = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\Z")

# Re-entrant: a target file may itself load another target file while its body runs.
_LOAD_LOCK = threading.RLock()
# Module name -> the module whose body finished running (what sys.modules alone cannot tell).
_LOADED: dict[str, ModuleType] = {}


def split_reference(ref: str) -> tuple[str, str]:
    """``(module or file, attribute)`` of ``MODULE:OBJECT``; :class:`TargetError` otherwise."""
    module, sep, attr = ref.rpartition(":")
    if not sep or not module or not _ATTR.match(attr):
        raise TargetError(f"{ref!r} is not MODULE:OBJECT (e.g. myproject.flows:summarize or flows.py:summarize)")
    return module, attr


def is_file_reference(module: str) -> bool:
    """Whether the module part names a ``.py`` file rather than an importable module."""
    return module.endswith(".py") or "/" in module


def attribute(module: ModuleType, attr: str, ref: str) -> Container:
    """The (possibly dotted) attribute ``attr`` of ``module``, checked to be a definition."""
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{ref}: module {module.__name__!r} has no attribute {attr!r}") from None
    return as_container(obj, ref)


def as_container(obj: Any, ref: str) -> Container:
    """``obj`` as what runs: a flow or agent as it is, a function as its one-node flow."""
    if isinstance(obj, (AgentDefinition, FlowDefinition)):
        return obj
    if callable(obj) and not isinstance(obj, type):
        try:
            return function_flow(obj)
        except DefinitionError as exc:
            raise TargetError(f"{ref}: {exc.message}") from None
    raise TargetError(f"{ref} is a {type(obj).__name__}, not a flow, an agent or a function")


def load_file_module(path: Path) -> ModuleType:
    """Load a Python file as the module ``reprise_target_<stem>``, once per process; threads
    loading it at the same time all get it after its body has run."""
    name = "reprise_target_" + re.sub(r"\W", "_", path.stem)
    module = sys.modules.get(name)
    if module is not None and _LOADED.get(name) is module and _is_from(module, path):
        return module
    with _LOAD_LOCK:
        # Under the lock no other thread is running a body: a module found here was loaded
        # while this thread waited, or is this thread's own (a file that loads itself gets the
        # partly run module, as a circular import does).
        module = sys.modules.get(name)
        if module is not None and _is_from(module, path):
            return module
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise TargetError(f"cannot load {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        # Published while its body runs, as importlib does: dataclasses, typing and pickle look
        # the module up by name. Other threads wait on the lock, not on sys.modules.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise TargetError(f"loading {path} failed: {type(exc).__name__}: {exc}") from exc
        _LOADED[name] = module
    return module


def _is_from(module: ModuleType, path: Path) -> bool:
    return getattr(module, "__file__", None) == str(path)


def import_target(ref: str, base: Path | None = None) -> Container:
    """The flow or agent ``ref`` names; a file is taken relative to ``base`` (default: the
    current directory)."""
    module_name, attr = split_reference(ref)
    if is_file_reference(module_name):
        path = ((base or Path.cwd()) / module_name).resolve()
        if not path.is_file():
            raise TargetError(f"{ref}: no file {path}")
        return attribute(load_file_module(path), attr, ref)
    if not _ATTR.match(module_name):
        raise TargetError(f"{ref}: {module_name!r} is not a module name")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            where = f" (looked in {base} and the Python path)" if base else ""
            raise TargetError(f"no module named {module_name!r}{where}") from None
        raise TargetError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        raise TargetError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    return attribute(module, attr, ref)
