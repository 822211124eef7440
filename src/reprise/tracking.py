"""Metrics and alerts a run records on purpose: ``reprise.log`` and ``reprise.alert``.

Inside a node (the runner makes its run the *current* run for as long as it runs)::

    import reprise

    @reprise.node
    async def evaluate(answer: str) -> float:
        score = grade(answer)
        reprise.log({"score": score, "length": len(answer)})
        if score < 0.2:
            reprise.alert("Low score", f"score={score:.2f}; the prompt may be too vague",
                          level=reprise.AlertLevel.WARN)
        return score

or explicitly through the node's context (``ctx.log(...)``, ``ctx.alert(...)``), or in the code
around a run by passing the run (``reprise.log({...}, run=ctx)``) or inside
``with RunContext(...) as ctx:``.

Each call appends one JSON line to the run directory (``.trace/user_metrics.jsonl``,
``.trace/alerts.jsonl``; the files are append-only, one ``write`` per line so concurrent writers
never interleave), records numeric metrics as OpenTelemetry histograms through the run's
telemetry, and emits a structlog event into ``.trace/logs.jsonl`` (and live OTLP logs when
configured). An alert at or above a configured level is also POSTed to a webhook
(``REPRISE_ALERT_WEBHOOK``, see :class:`AlertSettings`), on a background thread: a slow or
failing webhook never slows or fails the run.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.errors import RepriseError, RunFileError
from reprise.run._current import current_scope, enter_scope, exit_scope, running_in
from reprise.run._reading import read_run_jsonl

if TYPE_CHECKING:
    from reprise.run._context import RunContext
    from reprise.runners._node_context import ExecutorNodeContext as NodeContext

__all__ = [
    "ALERTS_FILE",
    "USER_METRICS_FILE",
    "AlertLevel",
    "AlertSettings",
    "WEBHOOK_FORMATS",
    "alert",
    "current_run",
    "enter_scope",
    "exit_scope",
    "log",
    "parse_instant",
    "read_alerts",
    "read_metrics",
    "running_in",
    "set_alert_settings",
    "wait_for_webhooks",
    "webhook_format",
    "webhook_payload",
]

USER_METRICS_FILE = "user_metrics.jsonl"
ALERTS_FILE = "alerts.jsonl"


class AlertLevel(StrEnum):
    """How serious an alert is. ``ERROR``: stop and change approach; ``WARN``: something
    should change; ``INFO``: a milestone."""

    INFO = "info"
    WARN = "warn"
    ERROR = "error"

    @property
    def rank(self) -> int:
        """0, 1, 2 for info, warn, error: ``a.rank >= b.rank`` means at least as serious."""
        return _RANKS[self]

    @classmethod
    def parse(cls, value: AlertLevel | str) -> AlertLevel:
        """``info``/``warn``/``error`` in any case (``warning`` is accepted for ``warn``)."""
        if isinstance(value, AlertLevel):
            return value
        text = str(value).strip().lower()
        if text == "warning":
            text = "warn"
        try:
            return cls(text)
        except ValueError:
            raise ValueError(f"unknown alert level {value!r}: use info, warn or error") from None


_RANKS = {AlertLevel.INFO: 0, AlertLevel.WARN: 1, AlertLevel.ERROR: 2}
_LOG_METHOD = {AlertLevel.INFO: "info", AlertLevel.WARN: "warning", AlertLevel.ERROR: "error"}


# -- the current run ---------------------------------------------------------------------------
def current_run() -> RunContext | None:
    """The run ``log``/``alert`` write to when none is passed, or ``None`` outside a run."""
    scope = current_scope()
    if scope is None:
        return None
    return _split(scope)[0]


def _split(scope: RunContext | NodeContext) -> tuple[RunContext, NodeContext | None]:
    from reprise.run._context import RunContext

    if isinstance(scope, RunContext):
        return scope, None
    return scope.run, scope


def _resolve(run: RunContext | NodeContext | None, what: str) -> tuple[RunContext, NodeContext | None]:
    scope = run if run is not None else current_scope()
    if scope is None:
        raise RepriseError(
            f"reprise.{what}() found no current run: call it inside a node, inside "
            f"'with RunContext(...)', or pass run=<RunContext>"
        )
    ctx, node = _split(scope)
    if not ctx.is_setup:
        raise RepriseError(f"reprise.{what}(): the run is not set up yet (no run directory to write to)")
    return ctx, node


# -- writing -----------------------------------------------------------------------------------
def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _append_line(path: Path, record: Mapping[str, Any]) -> None:
    # One write on an O_APPEND descriptor: lines from concurrent writers never interleave and
    # a reader never sees half a line (the file is append-only).
    line = (json.dumps(record, ensure_ascii=False, default=str, allow_nan=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class _StepCounter:
    """The next automatic step of each run in this process (like ``wandb.log``)."""

    def __init__(self) -> None:
        self._next: weakref.WeakKeyDictionary[RunContext, int] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def take(self, ctx: RunContext, step: int | None) -> int:
        with self._lock:
            if step is None:
                step = self._next.get(ctx, 0)
            self._next[ctx] = max(self._next.get(ctx, 0), step + 1)
            return step


_STEPS = _StepCounter()
_INSTRUMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_./-]{0,254}\Z")


def _instrument_name(name: str) -> str:
    """An OpenTelemetry-valid instrument name for a user metric key (which may hold spaces)."""
    if _INSTRUMENT_NAME.match(name):
        return name
    cleaned = re.sub(r"[^A-Za-z0-9_./-]", "_", name)
    if not cleaned or not cleaned[0].isalpha():
        cleaned = f"m_{cleaned}"
    return cleaned[:255]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def log(metrics: Mapping[str, Any], step: int | None = None, *, run: RunContext | NodeContext | None = None) -> int:
    """Record ``metrics`` (name to value) at ``step`` in the current run (or ``run``).

    ``step`` defaults to one more than the last step logged in this run by this process.
    Numeric values become OpenTelemetry histogram points named after the key; every value
    (numbers, strings, lists) is kept in ``.trace/user_metrics.jsonl``. Returns the step."""
    if not isinstance(metrics, Mapping) or not metrics:
        raise RepriseError("reprise.log() takes a non-empty mapping of metric names to values")
    if any(not isinstance(k, str) or not k for k in metrics):
        raise RepriseError("reprise.log(): metric names must be non-empty strings")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        raise RepriseError(f"reprise.log(): step must be a non-negative integer, got {step!r}")
    ctx, node = _resolve(run, "log")
    run_dir = ctx.require_run_dir()
    step = _STEPS.take(ctx, step)
    path = str(node.path) if node is not None else None
    record: dict[str, Any] = {"timestamp": _now_iso(), "run_id": run_dir.run_id, "step": step}
    if path is not None:
        record["hierarchy_path"] = path
    record["metrics"] = dict(metrics)
    _append_line(run_dir.trace_dir / USER_METRICS_FILE, record)

    tel = ctx.telemetry
    if tel is not None and ctx.status is not None and not ctx.status.finished:
        # After completion the run's meter is shut down: the JSONL line is the record then.
        attrs: dict[str, Any] = {"reprise.hierarchy_path": path or ctx.root_component_id}
        for name, value in metrics.items():
            if _is_number(value):
                try:
                    tel.user_metric(_instrument_name(name), float(value), attrs)
                except RepriseError:
                    pass  # a name the exporter refuses (reserved 'reprise.*'): the JSONL line keeps it
        numeric = {k: v for k, v in metrics.items() if _is_number(v) or isinstance(v, str)}
        _logger(tel, node).info("metrics", step=step, **{f"metric.{k}": v for k, v in numeric.items()})
    return step


def record_measurement(node: NodeContext, name: str, value: float, attributes: Mapping[str, Any]) -> None:
    """Keep a ``ctx.metric`` value in ``.trace/user_metrics.jsonl`` beside the ``reprise.log``
    lines, so one reader (``reprise metrics``, :meth:`reprise.Api.metrics`) shows both.
    Called by ``ctx.metric``; not part of the public API (not in ``__all__``).

    The line has ``"step": null`` (a measurement takes no step of the run's ``reprise.log``
    sequence) and the value's ``attributes``; the histogram point is the telemetry's business."""
    ctx = node.run
    record: dict[str, Any] = {
        "timestamp": _now_iso(),
        "run_id": ctx.require_run_dir().run_id,
        "step": None,
        "hierarchy_path": str(node.path),
        "metrics": {name: value},
    }
    if attributes:
        record["attributes"] = dict(attributes)
    _append_line(ctx.require_run_dir().trace_dir / USER_METRICS_FILE, record)


def _logger(tel: Any, node: NodeContext | None) -> Any:
    return node.logger if node is not None else tel.logger


def alert(
    title: str,
    text: str = "",
    level: AlertLevel | str = AlertLevel.INFO,
    *,
    run: RunContext | NodeContext | None = None,
) -> dict[str, Any]:
    """Raise an alert in the current run (or ``run``): a structured signal a person or an agent
    reads later with ``reprise alerts`` or :meth:`reprise.Api.alerts`.

    Put numbers and a suggestion in ``text`` ("loss=9.3 at step 120; lower the learning rate").
    Returns the stored record."""
    if not isinstance(title, str) or not title.strip():
        raise RepriseError("reprise.alert() needs a non-empty title")
    try:
        lvl = AlertLevel.parse(level)
    except ValueError as exc:
        raise RepriseError(f"reprise.alert(): {exc}") from None
    ctx, node = _resolve(run, "alert")
    run_dir = ctx.require_run_dir()
    record: dict[str, Any] = {
        "timestamp": _now_iso(),
        "run_id": run_dir.run_id,
        "level": lvl.value,
        "title": title,
        "text": str(text),
        "hierarchy_path": str(node.path) if node is not None else None,
    }
    _append_line(run_dir.trace_dir / ALERTS_FILE, record)

    tel = ctx.telemetry
    if tel is not None and ctx.status is not None and not ctx.status.finished:
        getattr(_logger(tel, node), _LOG_METHOD[lvl])(
            "alert", alert_title=title, alert_text=str(text), alert_level=lvl.value
        )
        span = node.current_span if node is not None else tel.root_span
        if span is not None and span.is_recording():
            span.add_event("reprise.alert", {"reprise.alert.title": title, "reprise.alert.level": lvl.value})
    _maybe_post(ctx, record)
    return record


# -- webhooks ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    """Where alerts are pushed as they happen.

    Args:
        webhook_url: an ``http(s)://`` URL that receives a JSON POST per alert, in the format
            its target expects (see :func:`webhook_payload`). It is never written to the run.
        min_level: alerts below this level are not posted.
        timeout_s: how long one POST may take.
        format: ``"slack"``, ``"discord"`` or ``"generic"``; ``None`` (the default) tells
            from the URL's host (:func:`webhook_format`). Set it for a relay or proxy whose
            host says nothing.

    :meth:`from_env` reads ``REPRISE_ALERT_WEBHOOK``, ``REPRISE_ALERT_WEBHOOK_LEVEL`` (default
    ``warn``) and ``REPRISE_ALERT_WEBHOOK_FORMAT``; :func:`set_alert_settings` gives one run its
    own settings.
    """

    webhook_url: str | None = None
    min_level: AlertLevel = AlertLevel.WARN
    timeout_s: float = 5.0
    format: str | None = None

    def __post_init__(self) -> None:
        if self.format is not None and self.format not in WEBHOOK_FORMATS:
            raise ValueError(f"unknown webhook format {self.format!r}: use {', '.join(WEBHOOK_FORMATS)}")

    @classmethod
    def from_env(cls) -> AlertSettings:
        """Settings from the environment."""
        url = os.environ.get("REPRISE_ALERT_WEBHOOK") or None
        raw_level = os.environ.get("REPRISE_ALERT_WEBHOOK_LEVEL")
        try:
            level = AlertLevel.parse(raw_level) if raw_level else AlertLevel.WARN
        except ValueError:
            level = AlertLevel.WARN
        fmt = (os.environ.get("REPRISE_ALERT_WEBHOOK_FORMAT") or "").strip().lower() or None
        return cls(webhook_url=url, min_level=level, format=fmt if fmt in WEBHOOK_FORMATS else None)


#: The bodies :func:`webhook_payload` can make.
WEBHOOK_FORMATS = ("slack", "discord", "generic")
_SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
_DISCORD_HOSTS = ("discord.com", "discordapp.com", "ptb.discord.com", "canary.discord.com")


def webhook_format(url: str) -> str:
    """The format the target of ``url`` expects, from its host: ``slack`` for Slack incoming
    webhooks (``hooks.slack.com``), ``discord`` for Discord webhooks (``discord.com``,
    ``discordapp.com``), else ``generic``."""
    from urllib.parse import urlsplit

    host = (urlsplit(url).hostname or "").lower()
    if host in _SLACK_HOSTS:
        return "slack"
    if host in _DISCORD_HOSTS:
        return "discord"
    return "generic"


_EMOJI = {"info": ":information_source:", "warn": ":warning:", "error": ":rotating_light:"}
_COLOURS = {"info": 0x3498DB, "warn": 0xF1C40F, "error": 0xE74C3C}


def _slack_escape(text: str) -> str:
    # The three characters Slack's mrkdwn reserves (its "escaping text" rules).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(record: Mapping[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON body posted for the alert ``record`` in format ``fmt``:

    * ``slack``: ``{"text": "[WARN] title: text", "blocks": [...]}``: a section with the
      title and text, and a context line with the level, run and node.
    * ``discord``: ``{"content": "[WARN] title: text", "embeds": [{title, description, color,
      timestamp, fields: level, run, node}], "allowed_mentions": {"parse": []}}`` (an alert's
      text never pings anyone).
    * ``generic``: ``{"text": "[WARN] title: text", "alert": {...the stored record...}}``
      (``text`` also makes it a valid Mattermost or Rocket.Chat message).

    Text is cut to each service's limits."""
    level = str(record.get("level", "info"))
    title = str(record.get("title", ""))
    body = str(record.get("text", ""))
    line = f"[{level.upper()}] {title}" + (f": {body}" if body else "")
    node = record.get("hierarchy_path") or "-"
    if fmt == "slack":
        text = f"{_EMOJI.get(level, '')} *{_slack_escape(title)}*" + (f"\n{_slack_escape(body)}" if body else "")
        context = f"level `{level}` | run `{record.get('run_id')}` | node `{node}` | {record.get('timestamp')}"
        return {
            "text": _slack_escape(line)[:3000],
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": _slack_escape(context)[:3000]}]},
            ],
        }
    if fmt == "discord":
        fields = [("level", level), ("run", str(record.get("run_id"))), ("node", str(node))]
        embed: dict[str, Any] = {
            "title": title[:256],
            "color": _COLOURS.get(level, 0),
            "fields": [{"name": name, "value": value[:1024], "inline": True} for name, value in fields],
        }
        if body:
            embed["description"] = body[:4096]
        if record.get("timestamp"):
            embed["timestamp"] = record["timestamp"]
        return {"content": line[:2000], "embeds": [embed], "allowed_mentions": {"parse": []}}
    return {"text": line, "alert": dict(record)}


_RUN_SETTINGS: weakref.WeakKeyDictionary[RunContext, AlertSettings] = weakref.WeakKeyDictionary()
_PENDING: set[threading.Thread] = set()
_PENDING_LOCK = threading.Lock()


def set_alert_settings(run: RunContext, settings: AlertSettings) -> None:
    """Use ``settings`` for the alerts of ``run`` instead of the environment's."""
    _RUN_SETTINGS[run] = settings


def _maybe_post(ctx: RunContext, record: Mapping[str, Any]) -> None:
    settings = _RUN_SETTINGS.get(ctx) or AlertSettings.from_env()
    url = settings.webhook_url
    if not url or AlertLevel.parse(record["level"]).rank < settings.min_level.rank:
        return
    # A non-daemon thread: the POST neither blocks the event loop nor is cut off when a short
    # script exits right after alerting (the interpreter waits for it, at most timeout_s).
    fmt = settings.format or webhook_format(url)
    thread = threading.Thread(
        target=_post, args=(url, dict(record), fmt, settings.timeout_s, ctx), name="reprise-alert-webhook"
    )
    with _PENDING_LOCK:
        _PENDING.add(thread)
    thread.start()


def _post(url: str, record: dict[str, Any], fmt: str, timeout_s: float, ctx: RunContext) -> None:
    import urllib.error
    import urllib.request

    try:
        if not url.startswith(("http://", "https://")):
            raise ValueError("the webhook URL must start with http:// or https://")
        body = json.dumps(webhook_payload(record, fmt), default=str).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json", "User-Agent": "reprise"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (OSError, ValueError, urllib.error.URLError) as exc:
        # Never fail (or even slow) the run for a webhook; say so in the run's log, without the
        # URL, which often carries a secret token.
        tel = ctx.telemetry
        if tel is not None and ctx.status is not None and not ctx.status.finished:
            tel.logger.warning("alert webhook failed", error=f"{type(exc).__name__}: {_redact(str(exc), url)}")
    finally:
        with _PENDING_LOCK:
            _PENDING.discard(threading.current_thread())


def _redact(message: str, url: str) -> str:
    return message.replace(url, "<webhook>")


def wait_for_webhooks(timeout: float | None = None) -> bool:
    """Wait until every alert POST started so far has finished; ``False`` on timeout."""
    with _PENDING_LOCK:
        threads = list(_PENDING)
    deadline = None if timeout is None else time.monotonic() + timeout
    for thread in threads:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        thread.join(remaining)
        if thread.is_alive():
            return False
    return True


# -- reading -----------------------------------------------------------------------------------
def parse_instant(value: str | datetime | float | int) -> datetime:
    """An aware UTC datetime from an ISO 8601 timestamp (``...Z``, ``...+02:00`` or naive, which
    is taken as UTC), a ``datetime`` (naive taken as UTC) or seconds since the epoch.

    Timestamps are compared as instants, never as strings: ``12:00Z`` is after ``13:30+02:00``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        except ValueError:
            raise ValueError(
                f"not a timestamp: {value!r} (use ISO 8601, e.g. 2025-06-15T14:30:00Z, "
                "2025-06-15T16:30:00+02:00 or 2025-06-15T14:30:00 for UTC)"
            ) from None
    else:
        raise ValueError(f"not a timestamp: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _lines(path: Path, problems: list[RunFileError] | None) -> Iterator[dict[str, Any]]:
    try:
        yield from read_run_jsonl(path, problems)
    except FileNotFoundError:
        return


def read_alerts(
    run_dir: Path,
    *,
    since: datetime | None = None,
    level: AlertLevel | None = None,
    problems: list[RunFileError] | None = None,
) -> list[dict[str, Any]]:
    """The alerts in ``run_dir/.trace/alerts.jsonl`` strictly after ``since`` (an aware
    datetime) and at or above ``level``, oldest first. Bad lines: see
    :func:`~reprise.run._reading.read_run_jsonl`."""
    out: list[dict[str, Any]] = []
    min_rank = level.rank if level is not None else 0
    for item in _lines(Path(run_dir) / ".trace" / ALERTS_FILE, problems):
        try:
            lvl = AlertLevel.parse(item.get("level", "info"))
            moment = parse_instant(item["timestamp"])
        except (KeyError, ValueError):
            continue
        if lvl.rank < min_rank or (since is not None and moment <= since):
            continue
        out.append(item)
    return out


def read_metrics(
    run_dir: Path, *, name: str | None = None, problems: list[RunFileError] | None = None
) -> list[dict[str, Any]]:
    """The lines of ``run_dir/.trace/user_metrics.jsonl`` (only those holding ``name``, if
    given), in the order they were logged. Bad lines: see
    :func:`~reprise.run._reading.read_run_jsonl`."""
    lines = list(_lines(Path(run_dir) / ".trace" / USER_METRICS_FILE, problems))
    if name is None:
        return lines
    return [line for line in lines if isinstance(line.get("metrics"), dict) and name in line["metrics"]]
