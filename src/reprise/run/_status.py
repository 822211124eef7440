"""Run and element statuses, and telling a crashed run from a running one."""

from __future__ import annotations

import os
import socket
from enum import StrEnum

__all__ = ["ElementStatus", "RunStatus", "process_alive", "process_start_marker"]


class RunStatus(StrEnum):
    """The lifecycle of a run: ``running`` until ``complete_run`` records one of the others.

    ``crashed`` is never written by a live process: it is how a run reads when its metadata
    still says ``running`` but the process that ran it is gone."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"

    @property
    def finished(self) -> bool:
        """True for every status but ``running``."""
        return self is not RunStatus.RUNNING


class ElementStatus(StrEnum):
    """The status of one node or composite element in ``result.json``."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


HOST = socket.gethostname()


def process_start_marker(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), so a recycled pid is not taken for our run."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode(errors="replace")
    except OSError:
        return None
    # Field 22 (starttime); the command name in field 2 may contain spaces, so split after ')'.
    return stat.rsplit(")", 1)[-1].split()[19]


def process_alive(pid: int, host: str, start_marker: str | None) -> bool:
    """Whether the process that wrote a run's metadata still runs. Another host's process is
    assumed alive (we cannot see it)."""
    if host != HOST:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if start_marker is not None:
        current = process_start_marker(pid)
        if current is not None and current != start_marker:
            return False
    return True
