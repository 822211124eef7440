"""The floor: the file-system work reprise does per node with its defaults, and nothing else.

Per node, as ``Executor._node`` and ``reprise.run.files`` do it: one ``mkdir`` of the node's
directory, three small JSON files (``input.json``, ``outcome.json``, ``result.json``) each written
atomically (open a temporary file beside it, write, close, ``os.replace``), and one trace line
(the size of reprise's OTLP/JSON span line) appended to ``trace.jsonl`` with a single ``write``
on an ``O_APPEND`` descriptor. The bytes are formatted with ``json.dumps`` and an f-string, the
cheapest honest way to produce them; there is no framework, no event loop, no validation, no
span objects.

Per branch of ``fanout-1000`` the floor adds what a branch costs reprise on top of its node: the
branch's own directory, its ``result.json`` and its span line. Per iteration of ``loop-10000``
it adds the iteration's directory level and its span line.

Standard library only, so it runs in any interpreter; ``reprise_peer.py`` imports it to measure
the floor interleaved with reprise (same process, same moment, same disk).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["chain", "fanout", "loop"]

_PID = os.getpid()
# A span line as reprise writes it is ~1.3 kB: resource attributes, scope, ids, times, attributes.
_PAD = "x" * 900


def _write_atomic(path: str, name: str, data: bytes) -> None:
    tmp = f"{path}/.{name}.{_PID}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, f"{path}/{name}")


def _span_line(hpath: str, kind: str) -> bytes:
    now = time.time_ns()
    return (
        f'{{"resourceSpans":[{{"resource":{{"pad":"{_PAD}"}},"scopeSpans":[{{"spans":[{{"name":"{kind} {hpath}",'
        f'"startTimeUnixNano":"{now}","endTimeUnixNano":"{now}","attributes":[{{"key":"reprise.hierarchy_path",'
        f'"value":{{"stringValue":"{hpath}"}}}}]}}]}}]}}]}}\n'
    ).encode()


def _result(hpath: str, element_type: str) -> bytes:
    now = time.time()
    return (
        json.dumps(
            {
                "path": hpath,
                "element_type": element_type,
                "node_kind": "python",
                "node": "inc",
                "status": "completed",
                "started_at": now,
                "ended_at": now,
                "duration_s": 0.0001,
                "attempts": 1,
                "reused": False,
            },
            indent=2,
        )
        + "\n"
    ).encode()


def _node(run_dir: str, hpath: str, trace_fd: int, x: int, *, parents: bool = False) -> int:
    d = f"{run_dir}/{hpath.replace('.', '/')}"
    if parents:
        os.makedirs(d, exist_ok=True)
    else:
        os.mkdir(d)
    _write_atomic(d, "input.json", (json.dumps({"x": x}, indent=2) + "\n").encode())
    out = x + 1
    _write_atomic(d, "outcome.json", (json.dumps(out) + "\n").encode())
    _write_atomic(d, "result.json", _result(hpath, "node"))
    os.write(trace_fd, _span_line(hpath, "node"))
    return out


def _run_dir(base: Path) -> tuple[str, int]:
    run = base / f"floor_{time.time_ns()}"
    (run / ".trace").mkdir(parents=True)
    (run / "root").mkdir()
    fd = os.open(run / ".trace" / "trace.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    return str(run), fd


def chain(base: Path, n: int) -> int:
    """``n`` nodes in a row under a new run directory in ``base``; returns the last outcome."""
    run, fd = _run_dir(base)
    try:
        x = 0
        for i in range(n):
            x = _node(run, f"root.n{i}", fd, x)
        return x
    finally:
        os.close(fd)


def fanout(base: Path, n: int) -> int:
    """``n`` branches of one node each (done one after another: the floor has no concurrency)."""
    run, fd = _run_dir(base)
    try:
        os.mkdir(f"{run}/root/fan")
        total = 0
        for i in range(n):
            branch = f"root.fan.b{i}"
            os.mkdir(f"{run}/{branch.replace('.', '/')}")
            total += _node(run, f"{branch}.inc", fd, i)
            _write_atomic(f"{run}/{branch.replace('.', '/')}", "result.json", _result(branch, "branch"))
            os.write(fd, _span_line(branch, "branch"))
        return total
    finally:
        os.close(fd)


def loop(base: Path, n: int) -> int:
    """``n`` iterations of a one-node body (``root/loop/<i>/inc``)."""
    run, fd = _run_dir(base)
    try:
        os.mkdir(f"{run}/root/loop")
        total = 0
        for i in range(n):
            total += _node(run, f"root.loop.{i}.inc", fd, i, parents=True)
            os.write(fd, _span_line(f"root.loop.{i}", "iteration"))
        return total
    finally:
        os.close(fd)
