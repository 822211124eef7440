"""Read a run's metrics and alerts into the data its charts show.

Two kinds of metrics land in a run directory:

* ``reprise.log({...}, step=...)`` lines in ``.trace/user_metrics.jsonl`` (read with
  :func:`reprise.tracking.read_metrics`): one value per name and step, charted as value over step;
* ``ctx.metric(name, value)`` values, which have no step. Where ``user_metrics.jsonl`` holds them
  (a line without a step), they are charted in the order they were recorded. Otherwise what there
  is of them is the OpenTelemetry histogram the run's meter aggregates per metric and node
  definition path into ``.trace/metrics.jsonl`` when the run ends, shown as a distribution
  (bucket counts, count, mean, min, max). (``reprise.log`` values are recorded as histograms there
  too; those are left out, being charted over steps already.)

Alerts come from ``.trace/alerts.jsonl`` (:func:`reprise.tracking.read_alerts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from reprise.observability._telemetry import METRICS_FILE
from reprise.tracking import read_alerts, read_metrics

__all__ = [
    "MAX_POINTS",
    "latest_values",
    "node_metric_histograms",
    "read_run_alerts",
    "read_run_metrics",
    "thin",
    "user_metric_series",
]

#: Points per chart line: a series logged at more steps is thinned to this many (evenly, the
#: first and last kept), so a run logged every step of a long training stays a small page.
MAX_POINTS = 2000
#: Alerts embedded in a page (the newest).
MAX_ALERTS = 500
_RESERVED = "reprise."
_TEXT_LIMIT = 2000


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def thin(points: list[list[float]], limit: int = MAX_POINTS) -> list[list[float]]:
    """At most ``limit`` of ``points``, evenly spaced, the first and last kept."""
    if len(points) <= limit:
        return points
    stride = (len(points) - 1) / (limit - 1)
    return [points[round(k * stride)] for k in range(limit)]


def user_metric_series(run_dir: Path) -> dict[str, list[list[float]]]:
    """``reprise.log`` values by metric name: ``[[step, value], ...]`` sorted by step (numeric
    values only; a step logged twice keeps its last value)."""
    return _series(run_dir)[0]


def _series(run_dir: Path) -> tuple[dict[str, list[list[float]]], dict[str, list[list[float]]]]:
    """The numeric values of ``user_metrics.jsonl`` by name: those logged at a step
    (``[[step, value], ...]`` by step), and those recorded without one (``[[n, value], ...]`` in
    the order they were recorded, ``n`` counting from 1)."""
    stepped: dict[str, dict[float, float]] = {}
    unstepped: dict[str, list[list[float]]] = {}
    for line in read_metrics(run_dir):
        step = _finite(line.get("step"))
        metrics = line.get("metrics")
        if not isinstance(metrics, Mapping):
            continue
        for name, value in metrics.items():
            number = _finite(value)
            if number is None or not isinstance(name, str):
                continue
            if step is not None:
                stepped.setdefault(name, {})[step] = number
            else:
                values = unstepped.setdefault(name, [])
                values.append([float(len(values) + 1), number])
    return (
        {name: thin([[s, v] for s, v in sorted(points.items())]) for name, points in sorted(stepped.items())},
        {name: thin(points) for name, points in sorted(unstepped.items())},
    )


def latest_values(series: Mapping[str, list[list[float]]]) -> dict[str, float]:
    """The value at the last step of each series."""
    return {name: points[-1][1] for name, points in series.items() if points}


def _attr_text(value: Mapping[str, Any]) -> Any:
    for key in ("stringValue", "boolValue", "doubleValue", "intValue"):
        if key in value:
            return value[key]
    return None


def _otlp_lines(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except OSError:
        return
    for raw in data.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if isinstance(line, dict):
            yield line


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def node_metric_histograms(run_dir: Path) -> list[dict[str, Any]]:
    """``ctx.metric`` histograms of the run: one entry per metric name and attribute set
    (``name``, ``path`` (the node definition path), ``attrs`` (the others), ``count``, ``sum``,
    ``min``, ``max``, ``bounds``, ``buckets``). reprise's own metrics (``reprise.*``) are left out."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for line in _otlp_lines(Path(run_dir) / ".trace" / METRICS_FILE):
        for rm in _dicts(line.get("resourceMetrics")):
            for sm in _dicts(rm.get("scopeMetrics")):
                for metric in _dicts(sm.get("metrics")):
                    name = str(metric.get("name", ""))
                    histogram = metric.get("histogram")
                    if not name or name.startswith(_RESERVED) or not isinstance(histogram, dict):
                        continue
                    for point in histogram.get("dataPoints") or []:
                        entry = _histogram_point(name, point)
                        if entry is not None:
                            # Cumulative points: a later line (a later export) supersedes.
                            found[(name, json.dumps(entry["attrs"], sort_keys=True) + entry["path"])] = entry
    return sorted(found.values(), key=lambda e: (e["name"], e["path"], json.dumps(e["attrs"], sort_keys=True)))


def _histogram_point(name: str, point: Any) -> dict[str, Any] | None:
    if not isinstance(point, dict):
        return None
    attrs: dict[str, Any] = {}
    for kv in point.get("attributes") or []:
        if isinstance(kv, dict) and "key" in kv and isinstance(kv.get("value"), dict):
            attrs[str(kv["key"])] = _attr_text(kv["value"])
    if "reprise.definition_path" not in attrs and "reprise.hierarchy_path" in attrs:
        return None  # a reprise.log value: charted over steps from user_metrics.jsonl
    path = attrs.pop("reprise.definition_path", None)
    try:
        count = int(point.get("count", 0))
        buckets = [int(b) for b in point.get("bucketCounts") or []]
    except (TypeError, ValueError):
        return None
    bounds = [b for b in (_finite(x) for x in point.get("explicitBounds") or []) if b is not None]
    return {
        "name": name,
        "path": str(path) if path is not None else "",
        "attrs": attrs,
        "count": count,
        "sum": _finite(point.get("sum")),
        "min": _finite(point.get("min")),
        "max": _finite(point.get("max")),
        "bounds": bounds,
        "buckets": buckets if len(buckets) == len(bounds) + 1 else [],
    }


def read_run_metrics(run_dir: Path) -> dict[str, Any]:
    """What the run page charts: ``series`` (values logged at a step, by name), ``values``
    (values recorded without a step, by name, in order) and ``histograms`` (the ``ctx.metric``
    histograms of names whose single values are not in ``values``)."""
    series, values = _series(run_dir)
    histograms = [h for h in node_metric_histograms(run_dir) if h["name"] not in values]
    return {"series": series, "values": values, "histograms": histograms}


def read_run_alerts(run_dir: Path) -> list[dict[str, Any]]:
    """The run's alerts, oldest first (the newest :data:`MAX_ALERTS`): ``ts``, ``level``,
    ``title``, ``text``, ``path``."""
    alerts = read_alerts(Path(run_dir))[-MAX_ALERTS:]
    return [
        {
            "ts": str(a.get("timestamp", "")),
            "level": str(a.get("level", "info")),
            "title": str(a.get("title", ""))[:_TEXT_LIMIT],
            "text": str(a.get("text", ""))[:_TEXT_LIMIT],
            "path": a.get("hierarchy_path") or "",
        }
        for a in alerts
    ]
