"""Exceptions raised by reprise.

Every error reprise raises derives from :class:`RepriseError` and carries keyword-only context
(``path=`` the hierarchy path it came from, ``run_id=`` the run) so a message can always say
where a problem is::

    RepriseError
    ├── DefinitionError        a flow or agent definition is invalid (raised before anything runs)
    ├── TemplateError          a template or expression could not be parsed or evaluated
    ├── RunSetupError          a run could not be set up (bad run root, unknown previous run,
    │   │                      initial inputs JSON cannot hold, ...)
    │   ├── StaticInputError   a static input names an unknown node or does not validate
    │   └── RerunError         a re-run cannot start from the requested path
    ├── RunFileError           a file of a run directory is unreadable or not what reprise wrote
    ├── NodeInputError         a node's input could not be built or did not validate
    ├── NodeExecutionError     a node raised, timed out or returned an invalid outcome
    ├── TargetError            a MODULE:OBJECT reference names no flow or agent definition
    ├── RunFailedError         a run ended failed; wraps the first node error
    └── RunCancelledError      a run was cancelled (Ctrl-C, a cancel scope, a timeout around it)
"""

from __future__ import annotations

__all__ = [
    "DefinitionError",
    "NodeExecutionError",
    "NodeInputError",
    "RepriseError",
    "RerunError",
    "RunCancelledError",
    "RunFailedError",
    "RunFileError",
    "RunSetupError",
    "StaticInputError",
    "TargetError",
    "TemplateError",
]


class RepriseError(Exception):
    """Base class of every reprise error.

    ``message`` is the bare message; ``str(error)`` prefixes it with the hierarchy path when one
    is known, so log lines and tracebacks always say where the problem is.
    """

    def __init__(self, message: str, *, path: str | None = None, run_id: str | None = None) -> None:
        self.message = message
        self.path = path
        self.run_id = run_id
        super().__init__(message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only context must survive pickling (Dask, multiprocessing).
        return (_rebuild, (type(self), self.message, self.path, self.run_id, self.__dict__))


def _rebuild(
    cls: type[RepriseError], message: str, path: str | None, run_id: str | None, state: dict[str, object]
) -> RepriseError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class DefinitionError(RepriseError):
    """A flow or agent definition is invalid. Raised before any node runs."""


class TemplateError(RepriseError):
    """A template or expression could not be parsed or evaluated."""

    def __init__(
        self, message: str, *, path: str | None = None, run_id: str | None = None, expression: str | None = None
    ) -> None:
        super().__init__(message, path=path, run_id=run_id)
        self.expression = expression

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base} (in {self.expression!r})" if self.expression else base


class RunSetupError(RepriseError):
    """A run could not be set up."""


class StaticInputError(RunSetupError):
    """A static input names an unknown node or does not validate against the node's input model."""


class RerunError(RunSetupError):
    """A re-run cannot start from the requested hierarchy path."""


class RunFileError(RepriseError):
    """A file of a run directory cannot be read, is not JSON, or is not what reprise wrote there
    (a truncated ``metadata.json``, a binary ``trace.jsonl``...). ``file`` is its path;
    ``run_id`` the run it belongs to, when it lies in a run directory."""

    def __init__(
        self, message: str, *, path: str | None = None, run_id: str | None = None, file: str | None = None
    ) -> None:
        super().__init__(message, path=path, run_id=run_id)
        self.file = file


class NodeInputError(RepriseError):
    """A node's input could not be built from its bindings or did not validate."""


class NodeExecutionError(RepriseError):
    """A node raised, timed out or returned an outcome that did not validate."""


class TargetError(RepriseError):
    """A ``MODULE:OBJECT`` reference names no importable flow or agent definition."""


class RunFailedError(RepriseError):
    """A run ended with status ``failed``. ``__cause__`` is the first error that failed it."""


class RunCancelledError(RepriseError):
    """A run was cancelled before it could finish."""
