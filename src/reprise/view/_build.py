"""Read a run directory into the data a run view shows.

The run directory is the source of truth (element directories with ``result.json``,
``input.json`` and ``outcome.json``); ``.trace/trace.jsonl`` adds timings of elements that have no
``result.json`` (loop iterations), user spans and span events, and ``.trace/logs.jsonl`` adds log
lines. A run without a trace (tracing off) or still running (composite results are written when
the composite ends) still gives a complete tree: what is missing is inferred from the directories.

The data comes in two parts so a page opens fast: :attr:`RunViewData.model` (the tree, timings,
statuses, costs, lineage) is read when the page loads, :attr:`RunViewData.details` (inputs,
outcomes, errors, log lines, an AI model node's messages per element) only when an element is
first selected.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from reprise.errors import RunFileError, RunSetupError
from reprise.nodes._ai_model import REQUEST_FILE
from reprise.run._directory import INPUT_FILE, METADATA_FILE, OUTCOME_FILE, RESULT_FILE, RUN_ID_PATTERN, RunDirectory
from reprise.run._journal import InFlight, in_flight
from reprise.run._reading import read_run_json, read_run_jsonl, read_run_object, run_file_error
from reprise.run._reused import ReusedNodes
from reprise.run._status import RunStatus
from reprise.view._metrics import read_run_alerts, read_run_metrics

__all__ = ["DEFAULT_MAX_VALUE_BYTES", "RunViewData", "build_run_view_data", "cost_of", "tokens_of"]

#: Inputs, outcomes and log lines longer than this many bytes are cut in the page (the run
#: directory keeps them whole); it keeps a page with large outcomes openable.
DEFAULT_MAX_VALUE_BYTES = 64 * 1024
#: Log lines kept per element; a chatty node's page stays small.
MAX_LOG_LINES = 500
#: How many runs back the lineage goes (it also stops at a cycle or a missing run).
MAX_LINEAGE = 50
#: Files listed per node directory besides reprise's own.
MAX_FILES = 50

_STANDARD_FILES = {INPUT_FILE, OUTCOME_FILE, RESULT_FILE}
# Fields of result.json the page shows in their own place; the rest go under "other fields".
_SHOWN_FIELDS = {
    "path", "element_type", "node_kind", "node", "status", "started_at", "ended_at", "duration_s",
    "attempts", "reused", "reused_from", "origin_run_id", "error",
}  # fmt: skip
# Worst first: a container shows the worst status among its children when it has none itself.
_STATUS_RANK = {"failed": 0, "cancelled": 1, "crashed": 2, "unfinished": 2, "running": 3, "completed": 4, "skipped": 5}
_USER_SPAN_TYPES = {"user_span", "span"}
_LOG_NOISE = {"run_id", "trace_id", "span_id", "hierarchy_path"}


@dataclass(frozen=True, slots=True, kw_only=True)
class RunViewData:
    """What a run view embeds.

    ``model``: run metadata, lineage and the element tree as a flat list (index 0 is the root;
    each element names its children by index). ``details``: per element index (as a string), its
    input and outcome text, error, log lines, span events and other result fields.
    """

    model: dict[str, Any]
    details: dict[str, Any] = field(default_factory=dict)
    #: Run files (or lines of them) that could not be read and were left out of the view.
    problems: list[RunFileError] = field(default_factory=list)


# -- small readers ---------------------------------------------------------------------------


def _read_json(path: Path, problems: list[RunFileError] | None = None) -> Any:
    """The JSON in ``path``; ``None`` if it is missing or bad (then added to ``problems``)."""
    try:
        return read_run_json(path)
    except FileNotFoundError:
        return None
    except RunFileError as exc:
        if problems is not None:
            problems.append(exc)
        return None


def _read_text(path: Path, limit: int) -> tuple[str, int]:
    """The first ``limit`` bytes of ``path`` as text, and the file's size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(limit)
    text = data.decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n… cut: {size:,} bytes in {path.name}"
    return text, size


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n… cut: {len(text):,} characters"


def _pretty(value: Any, limit: int) -> str:
    return _clip(json.dumps(value, indent=2, ensure_ascii=False, default=str), limit)


def _num(value: Any) -> float | None:
    """``value`` if it is a finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _epoch_ms(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000.0
    except ValueError:
        return None


def _index_key(name: str) -> tuple[int, str]:
    return (int(name), "") if name.isdigit() else (-1, name)


# -- tokens and cost ------------------------------------------------------------------------

_TOKEN_TOTALS = ("total_tokens", "total", "tokens")
_TOKEN_PARTS = ("input_tokens", "output_tokens", "prompt_tokens", "completion_tokens")
_COST_KEYS = ("total", "total_cost", "usd", "total_usd", "amount", "cost")


def tokens_of(result: Mapping[str, Any]) -> float | None:
    """The token count a ``result.json`` records, if any.

    Reads ``tokens`` (a number or a mapping like ``usage``) and ``usage``: its ``total_tokens``
    (or ``total``), else the sum of ``input_tokens``/``output_tokens`` (or ``prompt_``/
    ``completion_tokens``). A list of such mappings (one per model call) is summed."""
    for key in ("tokens", "usage"):
        found = _token_count(result.get(key))
        if found is not None:
            return found
    return None


def _token_count(value: Any) -> float | None:
    number = _num(value)
    if number is not None:
        return number
    if isinstance(value, Mapping):
        for key in _TOKEN_TOTALS:
            number = _num(value.get(key))
            if number is not None:
                return number
        parts = [n for n in (_num(value.get(k)) for k in _TOKEN_PARTS) if n is not None]
        return sum(parts) if parts else None
    if isinstance(value, list):
        counts = [n for n in (_token_count(v) for v in value) if n is not None]
        return sum(counts) if counts else None
    return None


def cost_of(result: Mapping[str, Any]) -> float | None:
    """The cost a ``result.json`` records, if any: ``cost`` (a number, or a mapping with
    ``total``/``total_cost``/``usd``/``total_usd``/``amount``), else ``cost_usd``, else a
    ``cost`` inside ``usage``."""
    for value in (result.get("cost"), result.get("cost_usd")):
        found = _cost_amount(value)
        if found is not None:
            return found
    usage = result.get("usage")
    if isinstance(usage, Mapping):
        return _cost_amount(usage.get("cost"))
    return None


def _cost_amount(value: Any) -> float | None:
    number = _num(value)
    if number is not None:
        return number
    if isinstance(value, Mapping):
        for key in _COST_KEYS:
            number = _num(value.get(key))
            if number is not None:
                return number
    if isinstance(value, list):
        amounts = [n for n in (_cost_amount(v) for v in value) if n is not None]
        return sum(amounts) if amounts else None
    return None


# -- the trace ------------------------------------------------------------------------------


def _attr_value(value: Mapping[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in value:
            return value[key]
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return value["intValue"]
    if "arrayValue" in value:
        return [_attr_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values", []))
    return None


def _attributes(items: Any) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {kv["key"]: _attr_value(kv.get("value", {})) for kv in items if isinstance(kv, dict) and "key" in kv}


@dataclass(slots=True)
class _Span:
    span_id: str
    parent_id: str
    name: str
    start_ms: float | None
    end_ms: float | None
    attributes: dict[str, Any]
    status: dict[str, Any]
    events: list[dict[str, Any]]


def _ns_to_ms(value: Any) -> float | None:
    try:
        return int(value) / 1e6
    except (TypeError, ValueError):
        return None


def iter_spans(trace_file: Path, problems: list[RunFileError]) -> Iterator[_Span]:
    """The spans of an OTLP/JSON lines file; lines that do not parse are skipped (and added to
    ``problems``)."""
    try:
        requests = list(read_run_jsonl(trace_file, problems))
    except FileNotFoundError:
        return
    for request in requests:
        try:
            spans = list(_spans_of(request))
        except (AttributeError, TypeError):
            problems.append(run_file_error(trace_file, "holds a line that is not an OTLP/JSON trace request"))
            continue
        yield from spans


def _spans_of(request: dict[str, Any]) -> Iterator[_Span]:
    for rs in request.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                yield _Span(
                    span_id=str(sp.get("spanId", "")),
                    parent_id=str(sp.get("parentSpanId", "")),
                    name=str(sp.get("name", "")),
                    start_ms=_ns_to_ms(sp.get("startTimeUnixNano")),
                    end_ms=_ns_to_ms(sp.get("endTimeUnixNano")),
                    attributes=_attributes(sp.get("attributes")),
                    status=sp.get("status") or {},
                    events=sp.get("events") or [],
                )


# -- the element tree -----------------------------------------------------------------------

#: The folder of a node's directory holding the files it declared as outcomes.
NODE_FILES_DIR = "files"


def _files_under(directory: Path, prefix: str, budget: int) -> list[tuple[str, int]]:
    """Up to ``budget`` files below ``directory`` as ``(prefix + relative path, size)``, in name
    order; symbolic links are listed, not followed."""
    found: list[tuple[str, int]] = []
    stack = [(directory, prefix)]
    while stack and len(found) < budget:
        folder, at = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        subfolders = []
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append((Path(entry.path), f"{at}{entry.name}/"))
            elif len(found) < budget:
                try:
                    found.append((at + entry.name, entry.stat(follow_symlinks=False).st_size))
                except OSError:
                    continue
        stack.extend(reversed(subfolders))
    return found


class _Builder:
    def __init__(self, run: RunDirectory, max_value_bytes: int, previous_run_id: str | None = None) -> None:
        self.run = run
        self.limit = max_value_bytes
        self.elements: list[dict[str, Any]] = []
        self.details: dict[str, Any] = {}
        self.by_path: dict[str, int] = {}
        self.spans: dict[str, _Span] = {}
        self.run_span: _Span | None = None
        #: Started nodes without a result.json (a running or crashed run), from the journal.
        self.started: InFlight | None = None
        #: Run files (or lines) that could not be read.
        self.problems: list[RunFileError] = []
        self.user_spans: dict[str, list[_Span]] = {}
        #: The nodes a re-run reused (links read as the run's that holds them otherwise).
        self.reused = ReusedNodes(run.path, previous_run_id)

    # The tree comes from the directories: an element is a directory with a result.json, or a
    # directory holding elements (a loop iteration, a conditional's branch, a composite that has
    # not finished). A node's directory is not descended into: nodes may write their own files.
    def walk(self, directory: Path, path: str, parent: int, depth: int, linked: bool = False) -> int | None:
        # One listing per directory tells which files exist: no stat per expected file (this
        # runs once per element, 20,000 times for a 10,000-node loop).
        subdirs: list[os.DirEntry[str]] = []
        others: list[os.DirEntry[str]] = []
        # Symbolic links: in a composite's directory, the nodes a link-mode re-run reused; in
        # a node's, files of the node's own.
        links: list[os.DirEntry[str]] = []
        names: set[str] = set()
        started = self.started
        if linked and not self.reused.followable(directory):
            return None  # a link out of the run root, read as one whose target is gone
        record = started.record(directory) if started is not None else None
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry)
                    elif entry.name in _STANDARD_FILES:
                        names.add(entry.name)
                    elif entry.is_symlink():
                        links.append(entry)
                    elif len(others) < MAX_FILES:
                        others.append(entry)
        except OSError:
            # A started node's directory appears when it finishes: the journal stands in.
            if record is None and (started is None or not started.children(directory)):
                return None
        # Directories that lead to started nodes which have none yet.
        virtual = sorted(started.children(directory) - {e.name for e in subdirs}) if started is not None else []
        result: dict[str, Any] | None = None
        if RESULT_FILE in names:
            try:
                result = read_run_object(directory / RESULT_FILE)
            except (FileNotFoundError, RunFileError) as exc:
                if isinstance(exc, RunFileError):
                    self.problems.append(exc)
        if result is not None and result.get("element_type") == "node":
            result = self.reused.overlay(path, result, directory, linked)
        has_input = INPUT_FILE in names or record is not None
        is_node = (result is not None and result.get("element_type") == "node") or (result is None and has_input)
        linked_children: set[str] = set()
        if is_node:
            others = (others + links)[:MAX_FILES]
        else:
            linked_children = {entry.name for entry in links}
        files: list[tuple[str, int]] = []
        if is_node:
            # Files the node wrote into its directory (folders with a trailing "/").
            files = [(entry.name, entry.stat(follow_symlinks=False).st_size) for entry in others]
            for entry in subdirs:
                if entry.name == NODE_FILES_DIR:
                    # Files the node declared (``ctx.declare_outcome_file``): listed one by one.
                    files += _files_under(Path(entry.path), f"{entry.name}/", MAX_FILES - len(files))
                else:
                    files.append((entry.name + "/", 0))
            files = files[:MAX_FILES]
        if result is None and not is_node and not subdirs and not virtual and not linked_children:
            return None
        index = len(self.elements)
        element: dict[str, Any] = {"i": index, "p": path, "n": path.rsplit(".", 1)[-1], "u": parent, "dp": depth}
        self.elements.append(element)
        self.by_path[path] = index
        self._describe(element, result, is_node, directory, files, names, record)
        children: list[int] = []
        if not is_node:
            for child_name in sorted([e.name for e in subdirs] + virtual + list(linked_children)):
                child = self.walk(
                    directory / child_name, f"{path}.{child_name}", index, depth + 1, child_name in linked_children
                )
                if child is not None:
                    children.append(child)
        if children:
            children.sort(key=lambda c: (self._start_key(c), _index_key(self.elements[c]["n"])))
            element["ch"] = children
        return index

    def _start_key(self, index: int) -> float:
        e = self.elements[index]
        start = e.get("a")
        return start if isinstance(start, float) else math.inf

    def _describe(
        self,
        e: dict[str, Any],
        result: dict[str, Any] | None,
        is_node: bool,
        directory: Path,
        files: list[tuple[str, int]],
        names: set[str],
        record: dict[str, Any] | None,
    ) -> None:
        path = e["p"]
        span = self.spans.get(path)
        detail: dict[str, Any] = {}
        name = e["n"]
        if result is not None:
            e["t"] = str(result.get("element_type", "node" if is_node else "element"))
            e["s"] = str(result.get("status", "unknown"))
            if result.get("node_kind"):
                e["k"] = str(result["node_kind"])
            if result.get("node"):
                detail["node"] = str(result["node"])
            duration = _num(result.get("duration_s"))
            if duration is not None:
                e["d"] = duration
            attempts = _num(result.get("attempts"))
            if attempts is not None:
                e["at"] = int(attempts)
            if result.get("reused"):
                e["r"] = 1
                if result.get("reused_from"):
                    e["rf"] = str(result["reused_from"])
                if result.get("origin_run_id"):
                    e["or"] = str(result["origin_run_id"])
            tokens, cost = tokens_of(result), cost_of(result)
            if tokens is not None:
                e["tk"] = tokens
            if cost is not None:
                e["c"] = cost
            error = result.get("error")
            if isinstance(error, dict):
                e["er"] = _clip(f"{error.get('type', 'Error')}: {error.get('message', '')}", 300)
                detail["error"] = {
                    "type": str(error.get("type", "")),
                    "message": _clip(str(error.get("message", "")), self.limit),
                    "traceback": _clip(str(error.get("traceback", "")), self.limit),
                }
            elif error:
                e["er"] = _clip(str(error), 300)
                detail["error"] = {"type": "", "message": _clip(str(error), self.limit), "traceback": ""}
            for key in ("started_at", "ended_at"):
                if isinstance(result.get(key), str):
                    detail[key] = result[key]
            extra = {k: v for k, v in result.items() if k not in _SHOWN_FIELDS}
            if extra:
                detail["fields"] = _pretty(extra, self.limit)
        else:
            # No result.json: an iteration, a conditional's branch, or an element that never
            # finished (still running, or the run crashed). The span, if any, says which.
            span_type = span.attributes.get("reprise.element_type") if span is not None else None
            if is_node:
                e["t"] = "node"
            elif isinstance(span_type, str):
                e["t"] = span_type
            elif name.isdigit():
                e["t"] = "iteration"
            elif name in ("then", "else"):
                e["t"] = "branch"
            else:
                e["t"] = "element"
            span_status = span.attributes.get("reprise.status") if span is not None else None
            if isinstance(span_status, str):
                e["s"] = span_status
            else:
                e["s"] = ""  # filled in from the children, or "unfinished"
        if span is not None:
            if span.attributes.get("reprise.reused"):
                e["r"] = 1
                rf = span.attributes.get("reprise.reused_from")
                if rf and "rf" not in e:
                    e["rf"] = str(rf)
                origin = span.attributes.get("reprise.origin_run_id")
                if origin and "or" not in e:
                    e["or"] = str(origin)
            if span.start_ms is not None and span.end_ms is not None:
                e["a"], e["b"] = span.start_ms, span.end_ms
            if "d" not in e and e.get("a") is not None:
                e["d"] = round((e["b"] - e["a"]) / 1000.0, 6)
            if span.events:
                detail["events"] = [self._event(ev) for ev in span.events[:100]]
        elif result is not None and not e.get("r"):
            # No span (tracing off): result.json times. A reused element's times are those of
            # the run it came from, so it gets no bar rather than a misplaced one.
            start, end = _epoch_ms(result.get("started_at")), _epoch_ms(result.get("ended_at"))
            if start is not None and end is not None:
                e["a"], e["b"] = start, end
        if is_node:
            for file_name, key in ((INPUT_FILE, "input"), (OUTCOME_FILE, "outcome")):
                if file_name in names:
                    try:
                        detail[key], _ = _read_text(directory / file_name, self.limit)
                    except OSError:
                        pass
            if record is not None and "input" not in detail:
                detail["input"] = _clip(json.dumps(record.get("input"), indent=2), self.limit)
                if isinstance(record.get("started_at"), str):
                    detail.setdefault("started_at", record["started_at"])
            if files:
                detail["files"] = sorted(files)
            if e.get("k") == "ai_model" and any(file_name == REQUEST_FILE for file_name, _ in files):
                chat = self._chat(directory, OUTCOME_FILE in names)
                if chat:
                    detail["chat"] = chat
        if detail:
            self.details[str(e["i"])] = detail

    def _chat(self, directory: Path, has_outcome: bool) -> list[dict[str, str]]:
        """An AI model node's conversation as chat messages (``role``, ``text``): the system
        instructions and messages of its ``request.json``, then its answer (``outcome.json``;
        structured output as JSON)."""
        request = _read_json(directory / REQUEST_FILE)
        if not isinstance(request, dict):
            return []
        chat: list[dict[str, str]] = []
        if isinstance(request.get("system"), str) and request["system"]:
            chat.append({"role": "system", "text": _clip(request["system"], self.limit)})
        messages = request.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                chat.append({"role": str(message.get("role", "user")), "text": _clip(message["content"], self.limit)})
        if has_outcome:
            answer = _read_json(directory / OUTCOME_FILE)
            if answer is not None:
                text = answer if isinstance(answer, str) else _pretty(answer, self.limit)
                chat.append({"role": "assistant", "text": _clip(text, self.limit)})
        return chat

    def _event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        attributes = _attributes(event.get("attributes"))
        return {
            "name": str(event.get("name", "")),
            "t": _ns_to_ms(event.get("timeUnixNano")),
            "attributes": _pretty(attributes, self.limit) if attributes else "",
        }

    def add_user_spans(self) -> None:
        """Spans a node opened itself (``ctx.span(...)``) become rows under that node."""
        owner = {sp.span_id: self.by_path[p] for p, sp in self.spans.items() if p in self.by_path}
        pending = [(sid, idx) for sid, idx in owner.items() if sid in self.user_spans]
        while pending:
            span_id, parent = pending.pop()
            pe = self.elements[parent]
            for sp in sorted(self.user_spans.get(span_id, []), key=lambda s: s.start_ms or 0.0):
                index = len(self.elements)
                error = sp.status.get("code") == 2
                e: dict[str, Any] = {
                    "i": index, "p": f"{pe['p']} > {sp.name}", "n": sp.name, "u": parent, "dp": pe["dp"] + 1,
                    "t": "span", "s": "failed" if error else "completed",
                }  # fmt: skip
                if sp.start_ms is not None and sp.end_ms is not None:
                    e["a"], e["b"] = sp.start_ms, sp.end_ms
                    e["d"] = round((sp.end_ms - sp.start_ms) / 1000.0, 6)
                self.elements.append(e)
                pe.setdefault("ch", []).append(index)
                detail: dict[str, Any] = {}
                if sp.attributes:
                    detail["fields"] = _pretty(sp.attributes, self.limit)
                if sp.events:
                    detail["events"] = [self._event(ev) for ev in sp.events[:100]]
                if error and sp.status.get("message"):
                    detail["error"] = {"type": "", "message": str(sp.status["message"]), "traceback": ""}
                if detail:
                    self.details[str(index)] = detail
                pending.append((sp.span_id, index))

    def aggregate(self, index: int, run_status: str) -> None:
        """Bottom-up: counts, tokens and cost of containers; statuses of containers without one.
        Iterative, so a deep tree cannot hit the recursion limit."""
        order: list[int] = []
        stack = [index]
        while stack:
            i = stack.pop()
            order.append(i)
            stack.extend(self.elements[i].get("ch", []))
        for i in reversed(order):
            e = self.elements[i]
            kids = [self.elements[c] for c in e.get("ch", []) if self.elements[c]["t"] != "span"]
            if e["t"] == "node":
                e["nn"], e["nf"], e["nr"] = 1, int(e["s"] == "failed"), int(bool(e.get("r")))
            else:
                e["nn"] = sum(k.get("nn", 0) for k in kids)
                e["nf"] = sum(k.get("nf", 0) for k in kids)
                e["nr"] = sum(k.get("nr", 0) for k in kids)
                for key in ("tk", "c"):
                    values = [k[key] for k in kids if key in k]
                    if values:
                        e[key] = sum(values)
                if not e["s"]:
                    statuses = [k["s"] for k in kids if k["s"]]
                    if statuses:
                        e["s"] = min(statuses, key=lambda s: _STATUS_RANK.get(s, 9))
            if e["s"] == "running" and run_status != RunStatus.RUNNING.value:
                # A loop records "running" as soon as its items are known; if the run is over,
                # the loop never got to finish.
                e["s"] = ""
            if not e["s"]:
                e["s"] = "running" if run_status == RunStatus.RUNNING.value else "unfinished"
            if e.get("a") is None and kids:
                starts = [k["a"] for k in kids if k.get("a") is not None]
                ends = [k["b"] for k in kids if k.get("b") is not None]
                if starts and ends:
                    e["a"], e["b"] = min(starts), max(ends)


def _lineage(run: RunDirectory, meta: Mapping[str, Any], problems: list[RunFileError]) -> list[dict[str, Any]]:
    """The runs this one descends from, nearest first, as far as they exist under the run root."""
    chain: list[dict[str, Any]] = []
    seen = {run.run_id}
    previous = meta.get("previous_run_id")
    start_path = meta.get("start_hierarchy_path")
    while isinstance(previous, str) and previous and len(chain) < MAX_LINEAGE:
        entry: dict[str, Any] = {"run_id": previous, "from_path": start_path, "found": False}
        chain.append(entry)
        if previous in seen or not RUN_ID_PATTERN.match(previous):
            # Only a well-formed run id names a directory: metadata is data, not a path.
            break
        seen.add(previous)
        data = _read_json(run.path.parent / previous / ".trace" / METADATA_FILE, problems)
        if not isinstance(data, dict):
            break
        entry.update(found=True, status=data.get("status"), started_at=data.get("started_at"))
        previous, start_path = data.get("previous_run_id"), data.get("start_hierarchy_path")
    return chain


def build_run_view_data(run_dir: Path, *, max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES) -> RunViewData:
    """Read the run at ``run_dir`` into the data of its view.

    Raises :class:`~reprise.errors.RunSetupError` if ``run_dir`` is not a run directory."""
    run = RunDirectory(Path(run_dir))
    meta = run.read_metadata()
    try:
        status = run.status().value
    except RunSetupError:  # pragma: no cover - read_metadata just succeeded
        status = meta.status.value
    builder = _Builder(run, max_value_bytes, meta.previous_run_id)
    for span in iter_spans(run.trace_dir / "trace.jsonl", builder.problems):
        path = span.attributes.get("reprise.hierarchy_path")
        element_type = span.attributes.get("reprise.element_type")
        if element_type == "run":
            builder.run_span = span
        elif isinstance(path, str) and isinstance(element_type, str) and element_type not in _USER_SPAN_TYPES:
            builder.spans.setdefault(path, span)
        elif span.parent_id:
            # A span a node opened itself (it may carry the node's path, but is not the node).
            builder.user_spans.setdefault(span.parent_id, []).append(span)

    root_dir = run.path / meta.root_component_id
    if status in ("running", "crashed"):
        builder.started = in_flight(run.path, builder.problems)
    root = builder.walk(root_dir, meta.root_component_id, -1, 0)
    if root is None:
        # Nothing executed yet (or the run failed before its first element).
        builder.elements.append(
            {
                "i": 0,
                "p": meta.root_component_id,
                "n": meta.root_component_id,
                "u": -1,
                "dp": 0,
                "t": "element",
                "s": "",
            }
        )
        builder.by_path[meta.root_component_id] = 0
    builder.add_user_spans()
    builder.aggregate(0, status)
    _attach_logs(builder, run.trace_dir / "logs.jsonl", max_value_bytes)

    t0 = _epoch_ms(meta.started_at)
    t1 = _epoch_ms(meta.ended_at)
    if builder.run_span is not None and builder.run_span.start_ms is not None:
        t0 = builder.run_span.start_ms
        t1 = builder.run_span.end_ms if builder.run_span.end_ms is not None else t1
    starts = [e["a"] for e in builder.elements if e.get("a") is not None]
    ends = [e["b"] for e in builder.elements if e.get("b") is not None]
    if starts and ends:
        # The axis fits the elements: set-up before the root starts and the git commit after it
        # ends are part of the run's duration (in the header), not of the waterfall.
        t0, t1 = min(starts), max(ends)
    if t0 is not None:
        for e in builder.elements:
            if e.get("a") is not None:
                # Milliseconds from the start of the run, rounded: smaller page, same picture.
                e["a"] = round(e["a"] - t0, 3)
                e["b"] = round(e["b"] - t0, 3)
        for detail in builder.details.values():
            for ev in detail.get("events", []):
                if ev.get("t") is not None:
                    ev["t"] = round(ev["t"] - t0, 3)

    root_e = builder.elements[0]
    run_info: dict[str, Any] = {
        "run_id": meta.run_id,
        "status": status,
        "root": meta.root_component_id,
        "started_at": meta.started_at,
        "ended_at": meta.ended_at,
        "duration_s": meta.duration_s,
        "error": meta.error_msg,
        "previous_run_id": meta.previous_run_id,
        "start_hierarchy_path": meta.start_hierarchy_path,
        "tags": dict(meta.tags),
        "host": meta.host,
        "version": meta.reprise_version,
        "nodes": root_e.get("nn", 0),
        "failed": root_e.get("nf", 0),
        "reused": root_e.get("nr", 0),
        "tokens": root_e.get("tk"),
        "cost": root_e.get("c"),
    }
    model = {
        "kind": "run",
        "run": run_info,
        "lineage": _lineage(run, meta.model_dump(mode="json"), builder.problems),
        "span_ms": round(t1 - t0, 3) if t0 is not None and t1 is not None else 0.0,
        "elements": builder.elements,
        "metrics": read_run_metrics(run.path),
        "alerts": read_run_alerts(run.path),
    }
    return RunViewData(model=model, details=builder.details, problems=builder.problems)


def _attach_logs(builder: _Builder, logs_file: Path, limit: int) -> None:
    try:
        lines = list(read_run_jsonl(logs_file, builder.problems))
    except FileNotFoundError:
        return
    for line in lines:
        path = line.get("hierarchy_path")
        index = builder.by_path.get(path, 0) if isinstance(path, str) else 0
        detail = builder.details.setdefault(str(index), {})
        logs = detail.setdefault("logs", [])
        if len(logs) >= MAX_LOG_LINES:
            detail["logs_cut"] = detail.get("logs_cut", 0) + 1
            continue
        extra = {k: v for k, v in line.items() if k not in _LOG_NOISE and k not in ("event", "level", "timestamp")}
        entry = {
            "ts": str(line.get("timestamp", "")),
            "level": str(line.get("level", "")),
            "event": _clip(str(line.get("event", "")), limit),
        }
        if extra:
            entry["extra"] = _clip(json.dumps(extra, ensure_ascii=False, default=str), limit)
        logs.append(entry)
