"""Readable results: ``trace_summary.jsonl`` and the per-input report of ``reprise experiment parse``.

``trace_summary.jsonl`` holds one short line per run, appended beside ``runs.jsonl`` as runs
finish: what went in, what came out, how long it took::

    {"trace_id": "run_run_20250301_142301_a41f0c", "input_id": "input-1", "iteration": 1,
     "input": "How do I start?", "persona": "novice_user", "output": "...", "duration_ms": 245.1,
     "status": "completed", "error": null}

The trace id is the run id: the run's trace is ``runs/<run id>/.trace/``.

:func:`write_report` writes ``report.md`` (and ``report.html``): per input, its text and
persona, then each iteration's output, duration, status and error, read from the folder's
``inputs.jsonl`` and ``runs.jsonl`` (so it works on any experiment folder, old ones included).
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from reprise.experiments._folder import ExperimentFolder
from reprise.experiments._inputs import ExperimentInput, input_text, load_inputs
from reprise.experiments._item import RunRecord
from reprise.run._files import write_bytes_atomic

__all__ = ["TraceSummaryLine", "write_report"]

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


class TraceSummaryLine(BaseModel):
    """One line of ``trace_summary.jsonl``."""

    model_config = ConfigDict(extra="allow")

    #: The run id (the run's trace is ``runs/<run id>/.trace/``); ``None`` if no run started.
    trace_id: str | None
    input_id: str
    iteration: int
    #: The item's ``input`` text, its only initial input, or all of them.
    input: Any = None
    persona: str | None = None
    output: Any = None
    duration_ms: float | None = None
    status: str
    error: str | None = None

    @classmethod
    def of(cls, item: ExperimentInput, record: RunRecord) -> TraceSummaryLine:
        """The line of one finished run of ``item``."""
        error = f"{record.error_type}: {record.error_message}" if record.error_type else None
        return cls(
            trace_id=record.run_id,
            input_id=record.input_id,
            iteration=record.iteration,
            input=input_text(item),
            persona=item.persona,
            output=record.outcome,
            duration_ms=round(record.duration_s * 1000, 3) if record.duration_s is not None else None,
            status=record.status,
            error=error,
        )


# -- the report ------------------------------------------------------------------------------
@dataclass
class _InputRuns:
    item: ExperimentInput
    #: iteration -> its final record (a later session's line replaces a cancelled one).
    runs: dict[int, RunRecord] = field(default_factory=dict)


def _collect(folder: ExperimentFolder) -> list[_InputRuns]:
    by_id = {item.id: _InputRuns(item) for item in load_inputs(folder.inputs_path)}
    for line in folder.iter_lines():
        try:
            record = RunRecord.model_validate(line)
        except ValidationError:
            continue
        entry = by_id.get(record.input_id)
        if entry is None:
            continue
        known = entry.runs.get(record.iteration)
        if known is None or known.status == "cancelled":
            entry.runs[record.iteration] = record
    return list(by_id.values())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _fenced(text: str) -> str:
    """A Markdown code block whose fence no backtick run inside ``text`` can close."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _headline(folder: ExperimentFolder) -> tuple[str, list[str]]:
    config = folder.read_config() if folder.config_path.is_file() else {}
    summary = folder.read_summary() or {}
    facts = []
    if config.get("target"):
        facts.append(f"target {config['target']}")
    if config.get("iterations"):
        facts.append(f"{config.get('inputs', {}).get('count', '?')} inputs x {config['iterations']} iterations")
    if summary:
        rate = summary.get("success_rate")
        shown = f"{rate * 100:.1f}%" if isinstance(rate, (int, float)) else "-"
        facts.append(
            f"{summary.get('finished')}/{summary.get('total')} runs finished, {summary.get('successes')} completed, "
            f"{summary.get('failures')} failed ({shown})"
        )
    return f"Experiment {folder.path.name}", facts


def _markdown(folder: ExperimentFolder, entries: list[_InputRuns]) -> str:
    title, facts = _headline(folder)
    out = [f"# {title}", ""]
    out += [f"- {fact}" for fact in facts]
    for entry in entries:
        item = entry.item
        out += ["", f"## {item.id}", ""]
        out.append(f"**Persona:** {item.persona or '-'}")
        out += ["", "**Input:**", "", _fenced(_text(input_text(item)))]
        if not entry.runs:
            out += ["", "_no finished run_"]
        for iteration, record in sorted(entry.runs.items()):
            out += ["", f"### Iteration {iteration}: {record.status}, {_duration(record.duration_s)}", ""]
            if record.run_id:
                out.append(f"Run `{record.run_id}`")
                out.append("")
            if record.status == "completed":
                out.append(_fenced(_text(record.outcome)))
            elif record.error_type:
                where = f" at `{record.error_path}`" if record.error_path else ""
                out.append(f"**Error{where}:** {record.error_type}: {record.error_message}")
    return "\n".join(out) + "\n"


def _html(folder: ExperimentFolder, entries: list[_InputRuns]) -> str:
    e = html.escape
    title, facts = _headline(folder)
    body = [f"<h1>{e(title)}</h1>", "<ul>", *(f"<li>{e(f)}</li>" for f in facts), "</ul>"]
    for entry in entries:
        item = entry.item
        body.append(f'<section id="{e(item.id)}"><h2>{e(item.id)}</h2>')
        body.append(f"<p><b>Persona:</b> {e(item.persona or '-')}</p>")
        body.append(f"<p><b>Input:</b></p><pre>{e(_text(input_text(item)))}</pre>")
        body.append("<table><tr><th>iteration</th><th>status</th><th>duration</th><th>output or error</th></tr>")
        for iteration, record in sorted(entry.runs.items()):
            if record.status == "completed":
                shown = f"<pre>{e(_text(record.outcome))}</pre>"
            else:
                where = f" at {record.error_path}" if record.error_path else ""
                shown = f'<span class="error">{e(f"{record.error_type}{where}: {record.error_message}")}</span>'
            body.append(
                f'<tr class="{e(record.status)}"><td>{iteration}</td><td>{e(record.status)}</td>'
                f"<td>{e(_duration(record.duration_s))}</td><td>{shown}</td></tr>"
            )
        body.append("</table></section>")
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}pre{white-space:pre-wrap;margin:0}"
        "table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.3em;vertical-align:top}"
        "tr.failed,tr.timeout,tr.crashed{background:#fee}.error{color:#a00}"
    )
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>{style}</style>'
        f"</head><body>{''.join(body)}</body></html>\n"
    )


def write_report(folder: ExperimentFolder, directory: Path | None = None, *, html: bool = False) -> list[Path]:
    """Write ``report.md`` (and ``report.html``) for ``folder`` into ``directory`` (default: the
    folder itself); the paths written."""
    entries = _collect(folder)
    target = directory or folder.path
    target.mkdir(parents=True, exist_ok=True)
    written = [target / REPORT_MD]
    write_bytes_atomic(written[0], _markdown(folder, entries).encode())
    if html:
        written.append(target / REPORT_HTML)
        write_bytes_atomic(written[1], _html(folder, entries).encode())
    return written
