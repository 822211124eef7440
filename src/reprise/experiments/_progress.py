"""Progress of a running experiment: a ``rich`` bar on a terminal, plain lines otherwise.

Both show done/total, the percentage, failures, rate and ETA, and write to standard error, so
``--json`` output on standard output stays clean. Neither keeps anything per run. A plain line
draws the bar in text, as the seed shows it::

    experiment review: [▓▓▓▓▓▓▓▓░░] 250/500 (50%), 3 failed, 12.0/s - ETA: 2m 15s
"""

from __future__ import annotations

import sys
import time
from typing import IO, Protocol

from reprise.experiments._item import FAILURE_STATUSES, RunRecord

__all__ = ["BarProgress", "LineProgress", "Progress", "auto_progress"]


class Progress(Protocol):
    """Receives the experiment's progress."""

    def start(self, name: str, total: int, done: int, failures: int) -> None:
        """The experiment (re)starts with ``done`` of ``total`` runs already finished."""

    def advance(self, record: RunRecord) -> None:
        """One run finished."""

    def finish(self, interrupted: bool) -> None:
        """The session ended."""


class _Counts:
    def __init__(self) -> None:
        self.name = ""
        self.total = 0
        self.done = 0
        self.failures = 0
        self.cancelled = 0
        self.session_done = 0
        self.t0 = time.monotonic()

    def start(self, name: str, total: int, done: int, failures: int) -> None:
        self.name, self.total, self.done, self.failures = name, total, done, failures
        self.t0 = time.monotonic()

    def count(self, record: RunRecord) -> None:
        if record.status == "cancelled":
            self.cancelled += 1
            return
        self.done += 1
        self.session_done += 1
        if record.status in FAILURE_STATUSES:
            self.failures += 1

    def rate_eta(self) -> tuple[float, str]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.session_done / elapsed
        remaining = self.total - self.done
        if rate <= 0 or remaining <= 0:
            return rate, "?" if remaining > 0 else "0s"
        return rate, _span(remaining / rate)

    def text(self) -> str:
        rate, eta = self.rate_eta()
        share = self.done / self.total if self.total else 1.0
        filled = min(_BAR_WIDTH, int(share * _BAR_WIDTH))
        bar = "\u2593" * filled + "\u2591" * (_BAR_WIDTH - filled)
        extra = f", {self.cancelled} cancelled" if self.cancelled else ""
        return (
            f"[{bar}] {self.done}/{self.total} ({share:.0%}), {self.failures} failed{extra}, "
            f"{rate:.1f}/s - ETA: {eta}"
        )


_BAR_WIDTH = 10


def _span(seconds: float) -> str:
    """``45s``, ``2m 15s``, ``1h 02m``."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


class LineProgress:
    """Plain progress lines (logs, CI, pipes): one every ``every`` seconds or 10% of the runs."""

    def __init__(self, stream: IO[str] | None = None, *, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self.counts = _Counts()
        self._last_time = 0.0
        self._last_decile = -1

    def start(self, name: str, total: int, done: int, failures: int) -> None:
        self.counts.start(name, total, done, failures)
        self._last_time = time.monotonic()
        self._last_decile = done * 10 // max(total, 1)
        resumed = f" (resuming: {done} already done)" if done else ""
        self._write(f"experiment {name}: {total} runs{resumed}")

    def advance(self, record: RunRecord) -> None:
        self.counts.count(record)
        decile = self.counts.done * 10 // max(self.counts.total, 1)
        now = time.monotonic()
        if decile != self._last_decile or now - self._last_time >= self.every:
            self._last_decile, self._last_time = decile, now
            self._write(f"experiment {self.counts.name}: {self.counts.text()}")

    def finish(self, interrupted: bool) -> None:
        state = "interrupted" if interrupted else "finished"
        self._write(f"experiment {self.counts.name} {state}: {self.counts.text()}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()


class BarProgress:
    """A ``rich`` progress bar (done/total, failures, rate, ETA), redrawn in place on a terminal."""

    def __init__(self, stream: IO[str] | None = None, *, force_terminal: bool | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.counts = _Counts()
        console = Console(file=stream or sys.stderr, force_terminal=force_terminal)
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TextColumn("{task.fields[cancelled]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID | None = None

    def start(self, name: str, total: int, done: int, failures: int) -> None:
        self.counts.start(name, total, done, failures)
        self._task = self._bar.add_task(name, total=total, completed=done, failed=failures, cancelled="")
        self._bar.start()

    def advance(self, record: RunRecord) -> None:
        self.counts.count(record)
        if self._task is not None:
            c = self.counts
            cancelled = f"{c.cancelled} cancelled" if c.cancelled else ""
            self._bar.update(self._task, completed=c.done, failed=c.failures, cancelled=cancelled)

    def finish(self, interrupted: bool) -> None:
        if self._task is not None:
            self._bar.update(self._task, description=f"{self.counts.name} (interrupted)" if interrupted else None)
        self._bar.stop()


def auto_progress(stream: IO[str] | None = None) -> Progress:
    """A bar on a terminal, plain lines otherwise."""
    out = stream or sys.stderr
    isatty = getattr(out, "isatty", None)
    return BarProgress(out) if isatty is not None and isatty() else LineProgress(out)
