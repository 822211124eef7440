"""Read the runs of a run root, and two or more runs side by side, into the data of their pages.

* The **runs page**: every run of a run root, newest first (name, status, duration, tokens, cost,
  the latest value of chosen ``reprise.log`` metrics), read through :class:`reprise.Api`, so a
  run's status, tokens and cost are the ones ``reprise runs`` and ``reprise show`` print.
* The **compare page**: the metric curves of the runs overlaid, their configs side by side (the
  ``config`` in ``.trace/metadata.json`` when the run has one, else its initial inputs), and the
  node outcomes that differ between them (read from the run directories, so runs without an
  outcome repository compare too).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprise._api import Api
from reprise.dsl._paths import HierarchyPath
from reprise.errors import RepriseError
from reprise.run._directory import INITIAL_INPUTS_FILE, METADATA_FILE, RunDirectory
from reprise.view._build import _clip, _read_json
from reprise.view._metrics import latest_values, user_metric_series

__all__ = ["DEFAULT_METRIC_COLUMNS", "build_compare_view_data", "build_runs_view_data"]

#: Metric columns the runs page shows when none are chosen: the names most runs logged.
DEFAULT_METRIC_COLUMNS = 6
#: Characters of one config value or outcome shown on the compare page.
_VALUE_LIMIT = 4000


def _metadata(run_dir: Path) -> dict[str, Any]:
    """The run's ``metadata.json`` as stored, extra fields (``name``, ``config``) included."""
    data = _read_json(run_dir / ".trace" / METADATA_FILE)
    return data if isinstance(data, dict) else {}


def _name(metadata: Mapping[str, Any]) -> str:
    name = metadata.get("name")
    return name if isinstance(name, str) else ""


def _usage(api: Api, run_id: str) -> tuple[float | None, float | None]:
    """Tokens and cost of a run as ``reprise show`` counts them (nodes executed in this run)."""
    try:
        root = api.elements(run_id)
    except (RepriseError, OSError):
        return None, None
    parts = [n for n in (root.input_tokens, root.output_tokens) if n is not None]
    return (sum(parts) if parts else None), root.cost


def _summary(api: Api, run_id: str, run_dir: Path) -> dict[str, Any]:
    info = api.run(run_id)
    metadata = _metadata(run_dir)
    tokens, cost = _usage(api, run_id)
    return {
        "id": info.run_id,
        "name": _name(metadata),
        "root": info.root_component_id,
        "status": info.status.value,
        "started": info.started_at,
        "duration": info.duration_s,
        "tokens": tokens,
        "cost": cost,
        "error": _clip(info.error_msg, 300) if info.error_msg else None,
        "previous": info.previous_run_id,
        "tags": dict(info.tags),
    }


def build_runs_view_data(
    run_root: Path,
    *,
    metrics: Sequence[str] = (),
    limit: int | None = None,
    hrefs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The data of the runs page of ``run_root``: one row per run, newest first (at most
    ``limit``), with the latest value of each of ``metrics`` (default: the
    :data:`DEFAULT_METRIC_COLUMNS` names most runs logged). Rows whose run id is in ``hrefs``
    link there."""
    api = Api(Path(run_root))
    rows: list[dict[str, Any]] = []
    seen: Counter[str] = Counter()
    for info in api.runs(limit=limit):
        row = _summary(api, info.run_id, info.run_dir)
        latest = latest_values(user_metric_series(info.run_dir))
        seen.update(latest)
        row["metrics"] = latest
        if hrefs and info.run_id in hrefs:
            row["href"] = hrefs[info.run_id]
        rows.append(row)
    chosen = list(metrics) or [name for name, _ in seen.most_common(DEFAULT_METRIC_COLUMNS)]
    return {
        "kind": "runs",
        "run_root": str(Path(run_root).absolute()),
        "metrics": chosen,
        "all_metrics": sorted(seen),
        "runs": rows,
    }


def _config(run: RunDirectory, metadata: Mapping[str, Any]) -> tuple[str, Any]:
    """What a run was configured with: ``("config", ...)`` from its metadata, else
    ``("initial inputs", ...)``, else ``("", None)``."""
    if metadata.get("config") is not None:
        return "config", metadata["config"]
    initial = _read_json(run.static_inputs_dir / INITIAL_INPUTS_FILE)
    if initial is not None:
        return "initial inputs", initial
    return "", None


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings as dotted keys; anything else (lists included) is one value."""
    if isinstance(value, Mapping) and (value or not prefix):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix or "(value)", value


def _text(value: Any) -> str:
    return _clip(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str), _VALUE_LIMIT)


def _outcomes(api: Api, run_id: str, run: RunDirectory) -> dict[str, tuple[str, Any]]:
    """Each node of the run: ``path -> (status, outcome)`` (``outcome`` is ``None`` without
    an ``outcome.json``)."""
    found: dict[str, tuple[str, Any]] = {}
    try:
        root = api.elements(run_id)
    except (RepriseError, OSError):
        return found
    for element in root.walk():
        if element.element_type != "node":
            continue
        try:
            outcome = run.read_outcome(HierarchyPath(element.path))
        except (OSError, ValueError, RepriseError):
            outcome = None
        found[element.path] = (element.status, outcome)
    return found


def build_compare_view_data(
    run_root: Path, run_ids: Sequence[str], *, hrefs: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The data of the compare page of ``run_ids`` (two or more) under ``run_root``: the runs,
    their metric series by name, config rows (``key``, one value per run, ``differs``) and the
    node outcomes that differ (``path``, per run its status and outcome).

    Raises :class:`~reprise.errors.RepriseError` for fewer than two runs or an unknown run."""
    if len(run_ids) < 2:
        raise RepriseError("compare needs two or more runs")
    api = Api(Path(run_root))
    runs: list[dict[str, Any]] = []
    configs: list[dict[str, Any]] = []
    outcomes: list[dict[str, tuple[str, Any]]] = []
    series: dict[str, list[dict[str, Any]]] = {}
    for run_id in run_ids:
        run = api.run_dir(run_id)
        metadata = _metadata(run.path)
        row = _summary(api, run.run_id, run.path)
        source, config = _config(run, metadata)
        row["config_source"] = source
        if hrefs and run.run_id in hrefs:
            row["href"] = hrefs[run.run_id]
        runs.append(row)
        configs.append(dict(_flatten(config)) if source else {})
        for name, points in user_metric_series(run.path).items():
            series.setdefault(name, []).append({"run": run.run_id, "points": points})
        outcomes.append(_outcomes(api, run.run_id, run))

    config_rows = []
    for key in sorted(set().union(*configs)):
        values = [c.get(key) for c in configs]
        present = [key in c for c in configs]
        config_rows.append(
            {
                "key": key,
                "values": [_text(v) if p else None for v, p in zip(values, present, strict=True)],
                "differs": len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1 or not all(present),
            }
        )

    differing = []
    same = 0
    for path in sorted(set().union(*outcomes)):
        cells = [o.get(path) for o in outcomes]
        # A node that failed in one run and completed in another differs, whatever it returned.
        keys = {json.dumps(list(c), sort_keys=True, default=str) if c is not None else None for c in cells}
        if len(keys) == 1:
            same += 1
            continue
        differing.append(
            {
                "path": path,
                "cells": [
                    {"status": c[0], "outcome": _text(c[1]) if c[1] is not None else None} if c is not None else None
                    for c in cells
                ],
            }
        )
    return {
        "kind": "compare",
        "runs": runs,
        "series": series,
        "config": config_rows,
        "outcomes": differing,
        "same_outcomes": same,
    }
