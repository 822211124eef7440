"""Shared by every per-peer script: argument parsing, timing and the JSON they print.

Standard library only: each peer script runs inside its peer's own venv (and dhenara-agent on
another Python), where neither reprise nor the bench package is importable. A peer script is
started as ``python bench/peers/<peer>.py --benchmark chain-200 --runs 5 --tmp DIR`` and prints
one JSON object on its last stdout line::

    {"system": "langgraph", "versions": {...}, "python": "3.11.7",
     "results": [{"benchmark": "chain-200", "config": "no-checkpointer", "units": 200,
                  "samples_s": [...], "extra": {...}}]}

``samples_s`` are seconds of whole runs on :data:`clock` (wall time, or CPU time with
``BENCH_CLOCK=cpu``); the orchestrator divides by ``units`` (nodes or branches) to get µs per
node. A config that cannot run reports ``"error"`` instead.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import resource
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["CHAIN_SIZES", "FANOUT", "Report", "clock", "interleaved", "main_args", "time_async", "versions"]

#: chain-1 is one node: what a run costs apart from its nodes (set-up, records, telemetry, git).
CHAIN_SIZES = {"chain-1": 1, "chain-200": 200, "chain-2000": 2000}
FANOUT = 1000


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of the children it has waited for (a git
    process), in seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


#: The clock of every timed run: wall time, or CPU time with ``BENCH_CLOCK=cpu`` (set by
#: ``python -m bench --cpu-time``), for a machine whose other load stretches wall time.
clock: Callable[[], float] = cpu_seconds if os.environ.get("BENCH_CLOCK") == "cpu" else time.perf_counter


def main_args() -> argparse.Namespace:
    """The arguments every peer script takes."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--benchmark", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tmp", required=True, help="a scratch directory this process may fill")
    return parser.parse_args()


def versions(*dists: str) -> dict[str, str | None]:
    """Installed versions of ``dists`` (``None`` when absent)."""
    out: dict[str, str | None] = {}
    for d in dists:
        try:
            out[d] = importlib.metadata.version(d)
        except importlib.metadata.PackageNotFoundError:
            out[d] = None
    return out


async def time_async(
    make: Callable[[Any], Awaitable[Any]],
    runs: int,
    warmup: int = 1,
    prepare: Callable[[int], Any] | None = None,
) -> list[float]:
    """Seconds per ``await make(x)``, ``runs`` times after ``warmup`` untimed calls.

    ``x`` is ``prepare(i)`` (built before the clock starts: a new application, a new run
    context) or, without ``prepare``, the call number ``i``. The garbage collector runs between
    calls, not during them, so one run does not pay for the garbage of the one before (every
    system gets the same treatment)."""
    samples: list[float] = []
    for i in range(warmup + runs):
        arg = prepare(i) if prepare is not None else i
        gc.collect()
        t0 = clock()
        await make(arg)
        elapsed = clock() - t0
        if i >= warmup:
            samples.append(elapsed)
    return samples


async def interleaved(
    jobs: dict[str, tuple[Callable[[int], Any], Callable[[Any], Awaitable[Any]]]],
    runs: int,
    warmup: int = 1,
) -> dict[str, list[float] | BaseException]:
    """Like :func:`time_async` for several jobs ``{name: (prepare, make)}``, taking turns: run
    ``i`` of every job happens before run ``i + 1`` of any, so a burst of load from elsewhere on
    the machine hits all of them alike and their ratios stay meaningful. A job that raises is
    reported as its exception and dropped from later rounds."""
    out: dict[str, list[float] | BaseException] = {name: [] for name in jobs}
    for i in range(warmup + runs):
        for name, (prepare, make) in jobs.items():
            samples = out[name]
            if isinstance(samples, BaseException):
                continue
            try:
                arg = prepare(i)
                gc.collect()
                t0 = clock()
                await make(arg)
                elapsed = clock() - t0
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                out[name] = exc
                continue
            if i >= warmup:
                samples.append(elapsed)
    return out


class Report:
    """Collects results and prints the JSON line the orchestrator reads."""

    def __init__(self, system: str, dists: tuple[str, ...]) -> None:
        self.system = system
        self.dists = dists
        self.results: list[dict[str, Any]] = []

    def add(
        self, benchmark: str, config: str, units: int, samples: list[float], system: str | None = None, **extra: Any
    ) -> None:
        """Record the samples of one (benchmark, config); ``system`` overrides the report's."""
        self.results.append(
            {
                "system": system or self.system,
                "benchmark": benchmark,
                "config": config,
                "units": units,
                "samples_s": samples,
                "extra": extra,
            }
        )

    def add_all(
        self, benchmark: str, units: int, samples: dict[str, list[float] | BaseException], **extra: Any
    ) -> None:
        """Record the outcome of :func:`interleaved`; a job name ``system:config`` names another system."""
        for name, got in samples.items():
            system, _, config = name.rpartition(":")
            if isinstance(got, BaseException):
                self.error(benchmark, config, got, system=system or None)
            else:
                self.add(benchmark, config, units, got, system=system or None, **extra)

    def error(self, benchmark: str, config: str, exc: BaseException | str, system: str | None = None) -> None:
        """Record that a (benchmark, config) could not run."""
        text = exc if isinstance(exc, str) else "".join(traceback.format_exception_only(exc)).strip()
        if not isinstance(exc, str):
            traceback.print_exception(exc, file=sys.stderr)
        self.results.append(
            {"system": system or self.system, "benchmark": benchmark, "config": config, "error": text[-2000:]}
        )

    def emit(self) -> None:
        """Print the report as the last line of stdout."""
        sys.stdout.flush()
        print(
            json.dumps(
                {
                    "system": self.system,
                    "python": platform.python_version(),
                    "versions": versions(*self.dists),
                    "results": self.results,
                }
            ),
            flush=True,
        )
