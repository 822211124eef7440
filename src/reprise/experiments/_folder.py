"""The experiment folder ``experiments/<name>_<YYYYMMDD_HHMMSS>/`` and its files.

::

    experiments/review_20250301_142233/
    ├── config.yaml     the resolved configuration (target, inputs, iterations, executor, ...)
    ├── inputs.jsonl    the experiment's own copy of its inputs (what ``resume`` runs)
    ├── runs.jsonl      one line per finished run, appended as it finishes (the record)
    ├── trace_summary.jsonl  one short line per run: trace id, input, output, duration, status
    ├── summary.json    totals, success rate, duration percentiles, tokens, cost, start and end
    ├── errors.json     every failed run's error, and counts by error type
    └── workers.log     stderr of the worker processes (tracebacks, segfault dumps, prints)

``runs.jsonl`` is the source of truth: ``summary.json`` and ``errors.json`` are computed from it
(at the end of every session, interrupted or not), and ``resume`` skips every (input,
iteration) it already holds a final line for.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from reprise.experiments._errors import ExperimentError
from reprise.run._files import write_bytes_atomic

__all__ = ["ExperimentFolder", "FOLDER_PATTERN", "NAME_PATTERN"]

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
FOLDER_PATTERN = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_-]*)_(?P<stamp>\d{8}_\d{6})\Z")

CONFIG_FILE = "config.yaml"
INPUTS_FILE = "inputs.jsonl"
RUNS_FILE = "runs.jsonl"
TRACE_SUMMARY_FILE = "trace_summary.jsonl"
SUMMARY_FILE = "summary.json"
ERRORS_FILE = "errors.json"
WORKERS_LOG = "workers.log"


def check_name(name: str) -> str:
    """An experiment name: letters, digits, ``_`` and ``-`` (it names a folder and prefixes run ids)."""
    if not NAME_PATTERN.match(name):
        raise ExperimentError(f"invalid experiment name {name!r}: use letters, digits, '_' and '-'")
    return name


class ExperimentFolder:
    """One experiment's folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    # -- finding and making ------------------------------------------------------------------
    @classmethod
    def create(cls, base: Path, name: str, *, now: float | None = None) -> ExperimentFolder:
        """Make ``<base>/<name>_<YYYYMMDD_HHMMSS>`` (UTC), exclusively: on a clash (two
        experiments of one name in one second) the next free second is taken."""
        check_name(name)
        base.mkdir(parents=True, exist_ok=True)
        moment = time.time() if now is None else now
        for step in range(3600):
            stamp = datetime.fromtimestamp(moment + step, UTC).strftime("%Y%m%d_%H%M%S")
            path = base / f"{name}_{stamp}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise ExperimentError(f"no free folder name for experiment {name!r} under {base}")  # pragma: no cover

    @classmethod
    def find(cls, base: Path, name: str) -> ExperimentFolder:
        """An existing experiment by folder path, by folder name (``review_20250301_142233``) or by
        experiment name (``review``: its latest folder) under ``base``."""
        candidate = Path(name)
        if (os.sep in name or name.startswith(".")) and candidate.is_dir():
            return cls._checked(candidate)
        if FOLDER_PATTERN.match(name):
            return cls._checked(base / name)
        check_name(name)
        matches = sorted(
            p
            for p in (base.iterdir() if base.is_dir() else ())
            if (m := FOLDER_PATTERN.match(p.name)) and m["name"] == name
        )
        if not matches:
            raise ExperimentError(f"no experiment named {name!r} under {base}")
        return cls._checked(matches[-1])

    @classmethod
    def _checked(cls, path: Path) -> ExperimentFolder:
        folder = cls(path)
        if not (folder.config_path.is_file() or folder.runs_path.is_file()):
            raise ExperimentError(f"{path} is not an experiment folder (no {CONFIG_FILE} or {RUNS_FILE})")
        return folder

    # -- names ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The experiment's name (the folder name without its time stamp)."""
        match = FOLDER_PATTERN.match(self.path.name)
        return match["name"] if match else self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def inputs_path(self) -> Path:
        return self.path / INPUTS_FILE

    @property
    def runs_path(self) -> Path:
        return self.path / RUNS_FILE

    @property
    def trace_summary_path(self) -> Path:
        return self.path / TRACE_SUMMARY_FILE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY_FILE

    @property
    def errors_path(self) -> Path:
        return self.path / ERRORS_FILE

    @property
    def workers_log(self) -> Path:
        return self.path / WORKERS_LOG

    # -- config ----------------------------------------------------------------------------------
    def write_config(self, config: dict[str, Any]) -> None:
        """Write ``config.yaml`` (atomically)."""
        import yaml

        text = "# reprise experiment configuration (as resolved when it started)\n"
        text += yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)
        write_bytes_atomic(self.config_path, text.encode())

    def read_config(self) -> dict[str, Any]:
        """The parsed ``config.yaml``."""
        import yaml

        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ExperimentError(f"cannot read {self.config_path}: {exc}") from None
        if not isinstance(data, dict):
            raise ExperimentError(f"{self.config_path}: expected a mapping")
        return data

    # -- runs.jsonl ------------------------------------------------------------------------------
    def prepare_runs_file(self) -> None:
        """Make sure ``runs.jsonl`` exists and ends with a newline (a session killed in the middle
        of a write must not glue its half line to the next session's first)."""
        with open(self.runs_path, "ab+") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def iter_lines(self) -> Iterator[dict[str, Any]]:
        """The lines of ``runs.jsonl`` as dicts, streamed; unreadable lines are skipped."""
        try:
            f = open(self.runs_path, "rb")
        except FileNotFoundError:
            return
        with f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(line, dict) and "input_id" in line and "iteration" in line:
                    yield line

    def finished_keys(self) -> set[tuple[str, int]]:
        """``(input_id, iteration)`` of every run with a final line (anything but ``cancelled``)."""
        return {
            (str(line["input_id"]), int(line["iteration"]))
            for line in self.iter_lines()
            if line.get("status") != "cancelled"
        }

    # -- summary -----------------------------------------------------------------------------
    def read_summary(self) -> dict[str, Any] | None:
        """``summary.json``, if written."""
        try:
            data = json.loads(self.summary_path.read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def __repr__(self) -> str:
        return f"ExperimentFolder({str(self.path)!r})"
