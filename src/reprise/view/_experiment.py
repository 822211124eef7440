"""Read an experiment folder into the data its view shows.

An experiment folder ``experiments/<name>_<YYYYMMDD_HHMMSS>/`` holds ``config.yaml``,
``runs.jsonl`` (one line per finished run) and ``summary.json`` (see
:mod:`reprise.experiments._folder`). The table and charts are computed from ``runs.jsonl`` with
the rules ``summary.json`` is computed by (the first final line of an (input, iteration) counts;
a ``cancelled`` line is not final; ``completed`` is a success), so a view of an experiment that is
still running, or was interrupted before writing its summary, shows what has finished and agrees
with the summary once it is written.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprise.errors import RepriseError
from reprise.experiments._folder import INPUTS_FILE
from reprise.view._build import _clip, _num, _read_json, cost_of, tokens_of

__all__ = ["SUCCESS_STATUSES", "build_experiment_view_data"]

#: Statuses counted as a success.
SUCCESS_STATUSES = frozenset({"completed"})
#: A line with this status is not final: ``resume`` runs that (input, iteration) again.
NOT_FINAL = "cancelled"
_FOLDER = re.compile(r"(?P<name>.+)_(?P<stamp>\d{8}_\d{6})\Z")
_MAX_CONFIG = 64 * 1024
_MAX_INPUT_TEXT = 400


def _first(line: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if line.get(key) is not None:
            return line[key]
    return None


def _percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (the value a run actually took)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def _row(line: Mapping[str, Any]) -> dict[str, Any]:
    error = line.get("error")
    error_type = _first(line, "error_type")
    error_message = _first(line, "error_message", "error_msg")
    if isinstance(error, Mapping):
        error_type = error_type or error.get("type")
        error_message = error_message or error.get("message")
    elif isinstance(error, str) and not error_message:
        error_message = error
    run_id = _first(line, "run_id")
    error_path = _first(line, "error_path")
    row: dict[str, Any] = {
        "in": str(_first(line, "input_id", "input", "item_id", "id") or ""),
        "it": _num(_first(line, "iteration", "iter")),
        "id": str(run_id) if run_id is not None else "",
        "s": str(_first(line, "status") or "unknown"),
        "d": _num(_first(line, "duration_s", "duration")),
        "tk": tokens_of(line),
        "c": cost_of(line),
    }
    if row["it"] is not None:
        row["it"] = int(row["it"])
    if error_type:
        row["et"] = str(error_type)
    if error_message:
        row["em"] = _clip(str(error_message), 400)
    if error_path:
        row["ep"] = str(error_path)
    if line.get("persona"):
        row["pe"] = str(line["persona"])
    if line.get("outcome") is not None:
        row["o"] = _clip(json.dumps(line["outcome"], ensure_ascii=False, default=str), 300)
    return row


def _input_texts(inputs_file: Path, ids: set[str]) -> dict[str, str]:
    """The text of each input in ``ids`` (its initial inputs as compact JSON, clipped), from the
    experiment's ``inputs.jsonl``."""
    texts: dict[str, str] = {}
    try:
        f = open(inputs_file, "rb")
    except OSError:
        return texts
    with f:
        for raw in f:
            try:
                item = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(item, dict) or str(item.get("id", "")) not in ids:
                continue
            value = item.get("initial_inputs") or item.get("static_inputs") or {}
            if isinstance(value, dict) and len(value) == 1:
                (value,) = value.values()  # one input: its value says it all
            text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
            texts[str(item["id"])] = _clip(text, _MAX_INPUT_TEXT)
    return texts


def build_experiment_view_data(experiment_dir: Path) -> dict[str, Any]:
    """The data of an experiment's view: name, config text, summary, one row per run, and
    figures computed from the rows (totals, success rate, duration percentiles, tokens, cost).

    Raises :class:`~reprise.errors.RepriseError` if the folder has no ``runs.jsonl`` and no
    ``summary.json``."""
    folder = Path(experiment_dir)
    runs_file = folder / "runs.jsonl"
    summary = _read_json(folder / "summary.json")
    if not runs_file.is_file() and summary is None:
        raise RepriseError(f"{folder} is not an experiment folder (no runs.jsonl or summary.json)")
    rows: list[dict[str, Any]] = []
    skipped = 0
    final: dict[tuple[str, Any], dict[str, Any]] = {}
    cancelled: dict[tuple[str, Any], dict[str, Any]] = {}
    if runs_file.is_file():
        with open(runs_file, "rb") as f:
            for raw in f:
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                except ValueError:
                    # A line being appended while we read, or a crash mid-write.
                    skipped += 1
                    continue
                if not isinstance(line, dict):
                    continue
                row = _row(line)
                key = (row["in"], row["it"])
                if row["s"] == NOT_FINAL:
                    cancelled.setdefault(key, row)
                else:
                    # Two sessions can race on one item: the first final line counts.
                    final.setdefault(key, row)
    rows = list(final.values())
    # Cancelled and not run again (yet): shown, not counted.
    rows += [row for key, row in cancelled.items() if key not in final]
    counted = list(final.values())
    config = ""
    config_file = folder / "config.yaml"
    if config_file.is_file():
        config = _clip(config_file.read_text(encoding="utf-8", errors="replace"), _MAX_CONFIG)
    match = _FOLDER.match(folder.name)
    successes = sum(1 for r in counted if r["s"] in SUCCESS_STATUSES)
    durations = sorted(r["d"] for r in counted if r["d"] is not None)
    tokens = [r["tk"] for r in counted if r["tk"] is not None]
    costs = [r["c"] for r in counted if r["c"] is not None]
    planned = _num(summary.get("total")) if isinstance(summary, dict) else None
    figures = {
        "finished": len(counted),
        "planned": int(planned) if planned is not None else None,
        "cancelled": len(rows) - len(counted),
        "successes": successes,
        "failures": len(counted) - successes,
        "success_rate": successes / len(counted) if counted else None,
        "p50": _percentile(durations, 0.5),
        "p95": _percentile(durations, 0.95),
        "tokens": sum(tokens) if tokens else None,
        "cost": sum(costs) if costs else None,
        "inputs": len({r["in"] for r in rows}),
    }
    return {
        "kind": "experiment",
        "inputs": _input_texts(folder / INPUTS_FILE, {r["in"] for r in rows}),
        "name": match.group("name") if match else folder.name,
        "folder": folder.name,
        "config": config,
        "summary": summary if isinstance(summary, dict) else {},
        "figures": figures,
        "runs": rows,
        "unreadable_lines": skipped,
    }
