"""The run directory: where one run lives on disk.

::

    <run_root>/<run_id>/
    ├── .trace/
    │   ├── metadata.json        run id, name, project, config, root component, status, times,
    │   │                        pid, host, lineage
    │   ├── trace.jsonl          OTLP/JSON spans, one ExportTraceServiceRequest a line
    │   ├── metrics.jsonl        OTLP/JSON metrics
    │   └── logs.jsonl           structured logs, one JSON object a line
    ├── static_inputs/
    │   ├── static_inputs.json   the static inputs this run used, by node definition path
    │   └── initial_inputs.json  the run's initial inputs
    └── <root>/<element>/.../<node>/   one directory per executed element, mirroring its path
        ├── input.json           the validated input
        ├── outcome.json         the outcome (what the node returned)
        └── result.json          status, timings, attempts, error, reuse

Every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
import re
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from reprise.dsl._paths import HierarchyPath
from reprise.errors import RunSetupError
from reprise.run._files import write_json_atomic
from reprise.run._reading import read_run_json, read_run_object
from reprise.run._status import RunStatus, process_alive

__all__ = ["RunDirectory", "RunMetadata", "new_run_id", "RUN_ID_PATTERN"]

RUN_ID_PATTERN = re.compile(r"(?:(?P<prefix>[A-Za-z0-9][A-Za-z0-9_-]*)_)?(?P<kind>run|rerun)_\d{8}_\d{6}_[0-9a-f]{6}\Z")
_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")

METADATA_FILE = "metadata.json"
INPUT_FILE = "input.json"
OUTCOME_FILE = "outcome.json"
RESULT_FILE = "result.json"
STATIC_INPUTS_FILE = "static_inputs.json"
INITIAL_INPUTS_FILE = "initial_inputs.json"


def new_run_id(prefix: str | None = None, *, rerun: bool = False, now: float | None = None) -> str:
    """A run id ``[prefix_]run_YYYYMMDD_HHMMSS_<6 hex>`` (``rerun_`` for re-runs).

    The random suffix makes a clash unlikely; :meth:`RunDirectory.create` makes it impossible by
    creating the directory exclusively and drawing again on a clash."""
    if prefix is not None and not _PREFIX.match(prefix):
        raise RunSetupError(f"invalid run id prefix {prefix!r}: use letters, digits, '_' and '-'")
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%d_%H%M%S")
    kind = "rerun" if rerun else "run"
    body = f"{kind}_{stamp}_{secrets.token_hex(3)}"
    return f"{prefix}_{body}" if prefix else body


class RunMetadata(BaseModel):
    """``.trace/metadata.json``."""

    model_config = ConfigDict(extra="allow")

    run_id: str
    root_component_id: str
    status: RunStatus
    started_at: str
    ended_at: str | None = None
    duration_s: float | None = None
    error_msg: str | None = None
    pid: int
    pid_start: str | None = None
    host: str
    previous_run_id: str | None = None
    start_hierarchy_path: str | None = None
    reprise_version: str
    tags: dict[str, str] = {}
    #: The run's name, unique within its project (``hungry-brownie-557``); ``None`` for runs
    #: recorded before runs had names.
    name: str | None = None
    #: The project the run belongs to (``reprise.init(project=...)``); ``None`` means the root
    #: component id (see :attr:`project_name`).
    project: str | None = None
    #: The run's configuration (``reprise.init(config=...)``): JSON data.
    config: dict[str, Any] | None = None

    @property
    def project_name(self) -> str:
        """The project of the run: the one given, else the root component id."""
        return self.project or self.root_component_id


class RunDirectory:
    """One run's directory. Cheap to construct; reads nothing until asked."""

    __slots__ = ("path", "run_id", "static_inputs_dir", "trace_dir")

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.run_id = self.path.name
        self.trace_dir = self.path / ".trace"
        self.static_inputs_dir = self.path / "static_inputs"

    @classmethod
    def create(cls, run_root: Path, prefix: str | None = None, *, rerun: bool = False) -> RunDirectory:
        """Create a new, uniquely named run directory under ``run_root``."""
        try:
            run_root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunSetupError(f"cannot create run root {run_root}: {exc}") from exc
        for _ in range(100):
            path = run_root / new_run_id(prefix, rerun=rerun)
            try:
                path.mkdir()
            except FileExistsError:
                continue
            run = cls(path)
            run.trace_dir.mkdir()
            run.static_inputs_dir.mkdir()
            return run
        raise RunSetupError(f"could not find a free run id under {run_root}")  # pragma: no cover

    @classmethod
    def find(cls, run_root: Path, run_id: str) -> RunDirectory:
        """The existing run ``run_id`` under ``run_root``; :class:`RunSetupError` if there is none."""
        if not RUN_ID_PATTERN.match(run_id):
            raise RunSetupError(f"{run_id!r} is not a run id (expected [prefix_]run_YYYYMMDD_HHMMSS_xxxxxx)")
        run = cls(run_root / run_id)
        if not (run.trace_dir / METADATA_FILE).is_file():
            raise RunSetupError(f"no run {run_id!r} under {run_root}", run_id=run_id)
        return run

    # -- element files ---------------------------------------------------------------------
    def element_dir(self, path: HierarchyPath) -> Path:
        """The directory of the element at ``path``."""
        return self.path.joinpath(*path.parts)

    def read_result(self, path: HierarchyPath) -> dict[str, Any] | None:
        """The element's ``result.json``, or ``None`` if it has none (:class:`RunFileError` if it
        is not a JSON object)."""
        try:
            return read_run_object(self.element_dir(path) / RESULT_FILE)
        except FileNotFoundError:
            return None

    def read_outcome(self, path: HierarchyPath) -> Any:
        """The element's ``outcome.json`` data (raises ``FileNotFoundError`` if absent,
        :class:`RunFileError` if it is not JSON)."""
        return read_run_json(self.element_dir(path) / OUTCOME_FILE)

    # -- metadata --------------------------------------------------------------------------
    @property
    def metadata_path(self) -> Path:
        """``.trace/metadata.json``."""
        return self.trace_dir / METADATA_FILE

    def write_metadata(self, metadata: RunMetadata) -> None:
        """Atomically replace the metadata."""
        write_json_atomic(self.metadata_path, metadata.model_dump(mode="json"))

    def read_metadata(self) -> RunMetadata:
        """The stored metadata, exactly as written (``running`` stays ``running``);
        :class:`RunFileError` if the file is not a valid ``RunMetadata``."""
        try:
            return read_run_json(self.metadata_path, RunMetadata)
        except FileNotFoundError:
            raise RunSetupError(f"{self.path} is not a run directory (no .trace/{METADATA_FILE})") from None

    def status(self) -> RunStatus:
        """The run's status, reading a ``running`` run whose process is gone as ``crashed``."""
        meta = self.read_metadata()
        if meta.status is RunStatus.RUNNING and not process_alive(meta.pid, meta.host, meta.pid_start):
            return RunStatus.CRASHED
        return meta.status

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"


def pid_info() -> tuple[int, str | None]:
    """This process's pid and start marker (for crash detection)."""
    from reprise.run._status import process_start_marker

    pid = os.getpid()
    return pid, process_start_marker(pid)
