"""Comparing two experiments: figures side by side, and the inputs whose outcome changed.

An input *changed* when its success count per iteration differs (``3/3`` became ``1/3``) or
when the set of distinct outcomes of its completed runs differs (the flow now answers
something else). Outcomes are compared as canonical JSON (sorted keys).
"""

from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from reprise.experiments._folder import ExperimentFolder
from reprise.experiments._summary import percentile

__all__ = ["ExperimentComparison", "InputChange", "SideFigures", "compare_experiments", "format_comparison"]

_EXAMPLE_CHARS = 200


class SideFigures(BaseModel):
    """One experiment's figures in a comparison."""

    folder: str
    name: str
    runs: int
    successes: int
    success_rate: float | None
    duration_p50_s: float | None
    duration_p95_s: float | None
    duration_mean_s: float | None
    tokens: int | None
    cost_usd: float | None


class InputChange(BaseModel):
    """An input whose outcome changed between A and B."""

    input_id: str
    a_runs: int
    a_successes: int
    b_runs: int
    b_successes: int
    #: The success rate changed.
    status_changed: bool
    #: The set of distinct outcomes of completed runs changed.
    outcome_changed: bool
    #: One outcome of each side (JSON, clipped), to show what changed.
    a_example: str | None = None
    b_example: str | None = None


class ExperimentComparison(BaseModel):
    """What ``reprise experiment compare A B`` shows."""

    a: SideFigures
    b: SideFigures
    changed: list[InputChange]
    unchanged: int
    only_in_a: list[str]
    only_in_b: list[str]


@dataclass(slots=True)
class _PerInput:
    runs: int = 0
    successes: int = 0
    outcomes: set[str] = field(default_factory=set)
    example: str | None = None


def _read(folder: ExperimentFolder) -> tuple[SideFigures, dict[str, _PerInput]]:
    per_input: dict[str, _PerInput] = {}
    seen: set[tuple[str, int]] = set()
    durations: array[float] = array("d")
    tokens: int | None = None
    cost: float | None = None
    runs = successes = 0
    for line in folder.iter_lines():
        if line.get("status") == "cancelled":
            continue
        key = (str(line["input_id"]), int(line["iteration"]))
        if key in seen:
            continue
        seen.add(key)
        entry = per_input.setdefault(key[0], _PerInput())
        entry.runs += 1
        runs += 1
        if isinstance(line.get("duration_s"), (int, float)):
            durations.append(float(line["duration_s"]))
        if isinstance(line.get("tokens"), int):
            tokens = (tokens or 0) + line["tokens"]
        if isinstance(line.get("cost_usd"), (int, float)):
            cost = (cost or 0.0) + float(line["cost_usd"])
        if line.get("status") == "completed":
            entry.successes += 1
            successes += 1
            text = json.dumps(line.get("outcome"), sort_keys=True, ensure_ascii=False, default=str)
            # A digest, not the outcome: inputs x distinct outcomes stays small in memory.
            entry.outcomes.add(hashlib.sha1(text.encode()).hexdigest())
            if entry.example is None:
                entry.example = text[:_EXAMPLE_CHARS]
    ordered = array("d", sorted(durations))
    figures = SideFigures(
        folder=folder.path.name,
        name=folder.name,
        runs=runs,
        successes=successes,
        success_rate=round(successes / runs, 6) if runs else None,
        duration_p50_s=percentile(ordered, 0.5),
        duration_p95_s=percentile(ordered, 0.95),
        duration_mean_s=round(sum(durations) / len(durations), 6) if durations else None,
        tokens=tokens,
        cost_usd=round(cost, 10) if cost is not None else None,
    )
    return figures, per_input


def compare_experiments(a: ExperimentFolder, b: ExperimentFolder) -> ExperimentComparison:
    """Compare experiment ``a`` (before) with ``b`` (after) from their ``runs.jsonl``."""
    a_figures, a_inputs = _read(a)
    b_figures, b_inputs = _read(b)
    changed: list[InputChange] = []
    unchanged = 0
    for input_id, left in a_inputs.items():
        right = b_inputs.get(input_id)
        if right is None:
            continue
        status_changed = left.successes * right.runs != right.successes * left.runs
        outcome_changed = left.outcomes != right.outcomes
        if not (status_changed or outcome_changed):
            unchanged += 1
            continue
        changed.append(
            InputChange(
                input_id=input_id,
                a_runs=left.runs,
                a_successes=left.successes,
                b_runs=right.runs,
                b_successes=right.successes,
                status_changed=status_changed,
                outcome_changed=outcome_changed,
                a_example=left.example,
                b_example=right.example,
            )
        )
    return ExperimentComparison(
        a=a_figures,
        b=b_figures,
        changed=changed,
        unchanged=unchanged,
        only_in_a=sorted(set(a_inputs) - set(b_inputs)),
        only_in_b=sorted(set(b_inputs) - set(a_inputs)),
    )


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value * 100:.1f}%"
    if kind == "s":
        return f"{value:.3f}s"
    if kind == "usd":
        return f"${value:.4f}"
    return str(value)


def format_comparison(comparison: ExperimentComparison) -> str:
    """The comparison as text for a terminal."""
    a, b = comparison.a, comparison.b
    rows = [
        ("", f"A: {a.folder}", f"B: {b.folder}"),
        ("runs", _fmt(a.runs, ""), _fmt(b.runs, "")),
        ("success rate", _fmt(a.success_rate, "rate"), _fmt(b.success_rate, "rate")),
        ("duration p50", _fmt(a.duration_p50_s, "s"), _fmt(b.duration_p50_s, "s")),
        ("duration p95", _fmt(a.duration_p95_s, "s"), _fmt(b.duration_p95_s, "s")),
        ("tokens", _fmt(a.tokens, ""), _fmt(b.tokens, "")),
        ("cost", _fmt(a.cost_usd, "usd"), _fmt(b.cost_usd, "usd")),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}".rstrip() for r in rows]
    total = len(comparison.changed) + comparison.unchanged
    lines.append("")
    lines.append(f"inputs that changed outcome: {len(comparison.changed)} of {total}")
    for change in comparison.changed:
        what = []
        if change.status_changed:
            what.append(f"success {change.a_successes}/{change.a_runs} -> {change.b_successes}/{change.b_runs}")
        if change.outcome_changed:
            what.append(f"outcome {change.a_example or '-'} -> {change.b_example or '-'}")
        lines.append(f"  {change.input_id}: " + "; ".join(what))
    if comparison.only_in_a:
        lines.append(f"only in A: {', '.join(comparison.only_in_a)}")
    if comparison.only_in_b:
        lines.append(f"only in B: {', '.join(comparison.only_in_b)}")
    return "\n".join(lines)
