"""What a node's ``result.json`` says it used (tokens) and cost, and how a run adds them up.

Every reader (``reprise show``, :class:`reprise.Api`, the HTML view, experiments) reads a
node's usage through these functions, so they all show the same totals:

* a node's own figures are what it recorded: ``usage`` (``input_tokens``/``output_tokens``,
  or ``prompt_``/``completion_tokens``, or a total) and ``cost_usd`` (or ``cost``), as the AI
  model node and ``ctx.annotate_result(usage=..., cost_usd=...)`` write them;
* a composite's and a run's totals are the sums over the nodes below that **executed in this
  run**: a reused node shows what it cost when it ran, but it cost nothing this time, so its
  figures are left out of the sums.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["cost_of", "input_output_tokens", "tokens_of"]

_TOKEN_TOTALS = ("total_tokens", "total", "tokens")
_INPUT_KEYS = ("input_tokens", "prompt_tokens")
_OUTPUT_KEYS = ("output_tokens", "completion_tokens")
_COST_KEYS = ("total", "total_cost", "usd", "total_usd", "amount", "cost")


def _num(value: Any) -> float | None:
    """``value`` if it is a finite number (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def input_output_tokens(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The input and output tokens a node's ``result.json`` records (``usage.input_tokens`` or
    ``prompt_tokens``, ``usage.output_tokens`` or ``completion_tokens``); ``None`` where absent."""
    usage = result.get("usage")
    if not isinstance(usage, Mapping):
        return None, None
    return _first(usage, _INPUT_KEYS), _first(usage, _OUTPUT_KEYS)


def tokens_of(result: Mapping[str, Any]) -> float | None:
    """The token count a ``result.json`` records, if any.

    Reads ``tokens`` (a number or a mapping like ``usage``) and ``usage``: its ``total_tokens``
    (or ``total``), else the sum of the input and output tokens. A list of such mappings (one
    per model call) is summed."""
    for key in ("tokens", "usage"):
        found = _token_count(result.get(key))
        if found is not None:
            return found
    return None


def cost_of(result: Mapping[str, Any]) -> float | None:
    """The cost a ``result.json`` records, if any: ``cost_usd``, else ``cost`` (a number, or a
    mapping with ``total``/``total_cost``/``usd``/``total_usd``/``amount``), else a ``cost``
    inside ``usage``."""
    for value in (result.get("cost_usd"), result.get("cost")):
        found = _cost_amount(value)
        if found is not None:
            return found
    usage = result.get("usage")
    if isinstance(usage, Mapping):
        return _cost_amount(usage.get("cost"))
    return None


def _first(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        number = _num(mapping.get(key))
        if number is not None:
            return number
    return None


def _token_count(value: Any) -> float | None:
    number = _num(value)
    if number is not None:
        return number
    if isinstance(value, Mapping):
        total = _first(value, _TOKEN_TOTALS)
        if total is not None:
            return total
        parts = [n for n in (_first(value, _INPUT_KEYS), _first(value, _OUTPUT_KEYS)) if n is not None]
        return sum(parts) if parts else None
    if isinstance(value, list):
        counts = [n for n in (_token_count(v) for v in value) if n is not None]
        return sum(counts) if counts else None
    return None


def _cost_amount(value: Any) -> float | None:
    number = _num(value)
    if number is not None:
        return number
    if isinstance(value, Mapping):
        return _first(value, _COST_KEYS)
    if isinstance(value, list):
        amounts = [n for n in (_cost_amount(v) for v in value) if n is not None]
        return sum(amounts) if amounts else None
    return None
