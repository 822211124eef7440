"""Live progress of ``reprise run``: which nodes run, finished, failed or were reused.

The progress is an element listener of the run's telemetry
(:class:`~reprise.observability._settings.ElementListener`), so it sees each element the moment it
starts and ends, in this process, without polling files. It draws with ``rich`` on a terminal
and prints one plain line per finished node otherwise (a log file, a pipe, an agent reading
stderr).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import IO, Any

from reprise.cli._common import format_duration
from reprise.dsl._paths import HierarchyPath

__all__ = ["RunProgress"]

_MAX_SHOWN = 6


class RunProgress:
    """Counts nodes as they start and end, and shows them (``mode``: ``rich``, ``plain`` or
    ``none``). An :class:`~reprise.observability._settings.ElementListener`: pass it in
    ``ObservabilitySettings(element_listeners=[...])``."""

    def __init__(self, stream: IO[str], mode: str) -> None:
        self.stream = stream
        self.mode = mode
        self._lock = threading.Lock()
        self.running: dict[str, float] = {}
        self.counts = {"completed": 0, "reused": 0, "failed": 0, "cancelled": 0}
        self.last: str | None = None
        self.run_id = ""
        self._t0 = time.monotonic()
        self._live: Any = None

    @classmethod
    def choose(cls, stream: IO[str], requested: str) -> RunProgress:
        """``auto`` picks ``rich`` on a terminal (when rich is installed), else ``plain``."""
        mode = requested
        if mode in ("auto", "rich"):
            try:
                import rich  # noqa: F401
            except ImportError:
                mode = "plain"
            else:
                if requested == "auto":
                    mode = "rich" if stream.isatty() else "plain"
        return cls(stream, mode)

    # -- element listener ------------------------------------------------------------------
    def on_element_start(self, path: HierarchyPath, element_type: str, attributes: Mapping[str, Any]) -> None:
        """A node started: show it as running."""
        if element_type == "node":
            with self._lock:
                self.running[str(path)] = time.monotonic()

    def on_element_end(
        self, path: HierarchyPath, element_type: str, status: str, attributes: Mapping[str, Any]
    ) -> None:
        """A node ended: count it (as ``reused`` for a node taken from an earlier run)."""
        if element_type != "node":
            return
        ended = time.monotonic()
        text = str(path)
        reused = attributes.get("reprise.reused") is True
        key = "reused" if reused else status
        with self._lock:
            started = self.running.pop(text, None)
            self.counts[key] = self.counts.get(key, 0) + 1
            self.last = f"{text} {key}"
        if self.mode == "plain":
            if reused:
                note = f" (from {attributes.get('reprise.reused_from') or attributes.get('reprise.origin_run_id')})"
            else:
                note = f" {format_duration(ended - started if started is not None else None)}"
            self._write(f"  {key:<9} {text}{note}\n")

    # -- display ---------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # a closed stderr must never fail the run

    def start(self, run_id: str, run_dir: str) -> None:
        """Show that run ``run_id`` started."""
        self.run_id = run_id
        self._t0 = time.monotonic()
        if self.mode == "plain":
            self._write(f"run {run_id} started in {run_dir}\n")
        elif self.mode == "rich":
            from rich.console import Console
            from rich.live import Live

            console = Console(file=self.stream, stderr=True)
            self._live = Live(get_renderable=self._render, console=console, refresh_per_second=8, transient=True)
            self._live.start()

    def stop(self) -> None:
        """Stop showing progress."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _render(self) -> Any:
        from rich.text import Text

        with self._lock:
            counts = dict(self.counts)
            running = sorted(self.running.items(), key=lambda item: item[1])
            last = self.last
        now = time.monotonic()
        text = Text()
        text.append(f"run {self.run_id}", style="bold")
        text.append(f"  {format_duration(now - self._t0)}  ")
        text.append(f"done {counts['completed']}", style="green")
        text.append("  ")
        text.append(f"reused {counts['reused']}", style="cyan")
        if counts["failed"]:
            text.append("  ")
            text.append(f"failed {counts['failed']}", style="bold red")
        for path, started in running[:_MAX_SHOWN]:
            text.append(f"\n  running {path}  {format_duration(now - started)}", style="yellow")
        if len(running) > _MAX_SHOWN:
            text.append(f"\n  ... {len(running) - _MAX_SHOWN} more running", style="yellow")
        if last and not running:
            text.append(f"\n  last: {last}", style="dim")
        return text
