"""The floor: the file-system work reprise does per node with its defaults, and nothing else.

Two layouts, so the floor can be reported before and after the change of 2026-11-22:

* ``one-dir`` (what ``Executor._node`` does now): one journal line appended to
  ``.trace/journal.jsonl`` as the node starts; when it finishes, a temporary directory beside the
  node's, three small JSON files (``input.json``, ``outcome.json``, ``result.json``) created in it
  with plain ``O_EXCL`` opens, and one ``rename`` of the directory into place; one trace line (the
  size of reprise's OTLP/JSON span line) appended to ``trace.jsonl``.
* ``per-file`` (reprise until then): one ``mkdir`` of the node's directory and the three files
  each written atomically (open a temporary file beside it, write, close, ``os.replace``), plus
  the trace line.

Every append is a single ``write`` on an ``O_APPEND`` descriptor. The bytes are formatted with
``json.dumps`` and an f-string, the cheapest honest way to produce them; there is no framework,
no event loop, no validation, no span objects.

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

__all__ = ["LAYOUTS", "chain", "fanout", "loop"]

LAYOUTS = ("one-dir", "per-file")
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


def _files(hpath: str, x: int) -> tuple[int, list[tuple[str, bytes]]]:
    out = x + 1
    return out, [
        ("input.json", (json.dumps({"x": x}, indent=2) + "\n").encode()),
        ("outcome.json", (json.dumps(out) + "\n").encode()),
        ("result.json", _result(hpath, "node")),
    ]


def _node(run: _Run, hpath: str, x: int, *, parents: bool = False) -> int:
    d = f"{run.path}/{hpath.replace('.', '/')}"
    if run.layout == "per-file":
        if parents:
            os.makedirs(d, exist_ok=True)
        else:
            os.mkdir(d)
        out, files = _files(hpath, x)
        for name, data in files:
            _write_atomic(d, name, data)
    else:
        line = json.dumps({"path": hpath, "started_at": time.time(), "input": {"x": x}}) + "\n"
        os.write(run.journal_fd, line.encode())
        out, files = _files(hpath, x)
        head, name = os.path.split(d)
        tmp = f"{head}/.{name}.{_PID}.tmp"
        try:
            os.mkdir(tmp)
        except FileNotFoundError:
            os.makedirs(head, exist_ok=True)
            os.mkdir(tmp)
        for file_name, data in files:
            fd = os.open(f"{tmp}/{file_name}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
        os.rename(tmp, d)
    os.write(run.trace_fd, _span_line(hpath, "node"))
    return out


class _Run:
    def __init__(self, base: Path, layout: str) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"unknown floor layout {layout!r}")
        self.layout = layout
        run = base / f"floor_{time.time_ns()}"
        (run / ".trace").mkdir(parents=True)
        (run / "root").mkdir()
        self.path = str(run)
        self.trace_fd = os.open(run / ".trace" / "trace.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.journal_fd = os.open(run / ".trace" / "journal.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def close(self) -> None:
        os.close(self.trace_fd)
        os.close(self.journal_fd)


def chain(base: Path, n: int, layout: str = "one-dir") -> int:
    """``n`` nodes in a row under a new run directory in ``base``; returns the last outcome."""
    run = _Run(base, layout)
    try:
        x = 0
        for i in range(n):
            x = _node(run, f"root.n{i}", x)
        return x
    finally:
        run.close()


def fanout(base: Path, n: int, layout: str = "one-dir") -> int:
    """``n`` branches of one node each (done one after another: the floor has no concurrency)."""
    run = _Run(base, layout)
    try:
        os.mkdir(f"{run.path}/root/fan")
        total = 0
        for i in range(n):
            branch = f"root.fan.b{i}"
            os.mkdir(f"{run.path}/{branch.replace('.', '/')}")
            total += _node(run, f"{branch}.inc", i)
            _write_atomic(f"{run.path}/{branch.replace('.', '/')}", "result.json", _result(branch, "branch"))
            os.write(run.trace_fd, _span_line(branch, "branch"))
        return total
    finally:
        run.close()


def loop(base: Path, n: int, layout: str = "one-dir") -> int:
    """``n`` iterations of a one-node body (``root/loop/<i>/inc``)."""
    run = _Run(base, layout)
    try:
        os.mkdir(f"{run.path}/root/loop")
        total = 0
        for i in range(n):
            total += _node(run, f"root.loop.{i}.inc", i, parents=True)
            os.write(run.trace_fd, _span_line(f"root.loop.{i}", "iteration"))
        return total
    finally:
        run.close()
