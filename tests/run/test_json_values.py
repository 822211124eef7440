"""Values a node's JSON files cannot hold as they are (NaN and infinity): refused with an error
naming the node and the place in the value, never written as a bare ``NaN`` (not JSON) or
turned into ``null`` (a re-run reusing the node would read ``None``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from reprise import FlowDefinition, FlowRunner, NodeContext, RunContext, RunFailedError, RunStatus, Var
from reprise.run._files import json_problem

NAN, INF = float("nan"), float("inf")


class Scores(BaseModel):
    best: float
    extra: dict[str, Any] = {}


def _strict_json(path: Path) -> Any:
    """``path`` read as JSON proper: Python's reader takes ``NaN`` and ``Infinity``, JSON does not."""

    def refuse(token: str) -> Any:
        raise AssertionError(f"{path}: {token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _run_failing(tmp_path: Path, bad: Any) -> tuple[RunFailedError, Path]:
    flow = FlowDefinition().node("a", lambda: {"kept": 1.5}).node("b", lambda: bad).node("c", lambda: 2)
    with pytest.raises(RunFailedError) as info:
        FlowRunner(flow, RunContext("flow", tmp_path)).run_sync()
    result = info.value.result  # type: ignore[attr-defined]
    return info.value, result.run_dir


@pytest.mark.parametrize(
    ("bad", "place"),
    [
        (NAN, "outcome: nan"),
        (INF, "outcome: inf"),
        (-INF, "outcome: -inf"),
        ({"loss": 0.5, "score": NAN}, r"outcome\['score'\]: nan"),
        ({"deep": {"x": -INF}}, r"outcome\['deep'\]\['x'\]: -inf"),
        ([1.0, INF], r"outcome\[1\]: inf"),
        (Scores(best=NAN), r"outcome\.best: nan"),
        (Scores(best=1.0, extra={"k": [INF]}), r"outcome\.extra\['k'\]\[0\]: inf"),
    ],
)
def test_an_outcome_with_nan_or_infinity_fails_its_node_by_name(tmp_path: Path, bad: Any, place: str) -> None:
    error, run_dir = _run_failing(tmp_path, bad)
    assert error.path == "flow.b"
    assert re.search(place + r" is not a JSON number", str(error)), str(error)
    # The run failed (not completed), the node before it kept its outcome, nothing after ran.
    meta = _strict_json(run_dir / ".trace" / "metadata.json")
    assert meta["status"] == RunStatus.FAILED.value
    assert _strict_json(run_dir / "flow" / "a" / "outcome.json") == {"kept": 1.5}
    assert not (run_dir / "flow" / "b" / "outcome.json").exists()
    result = _strict_json(run_dir / "flow" / "b" / "result.json")
    assert result["status"] == "failed"
    assert "not a JSON number" in result["error"]["message"]
    assert not (run_dir / "flow" / "c").exists()
    # Every file the run wrote is JSON proper.
    for path in run_dir.rglob("*.json"):
        _strict_json(path)


def test_finite_floats_and_strings_that_read_nan_are_kept_as_they_are(tmp_path: Path) -> None:
    value = {"x": 1e308, "y": -0.0, "label": "NaN", "tiny": 5e-324}
    flow = FlowDefinition().node("a", lambda: value)
    result = FlowRunner(flow, RunContext("flow", tmp_path)).run_sync()
    assert _strict_json(result.run_dir / "flow" / "a" / "outcome.json") == value


def test_an_input_with_nan_fails_its_node_by_name(tmp_path: Path) -> None:
    def half(x: float) -> float:
        return x / 2

    flow = FlowDefinition().node("a", lambda: 1).node("half", half, inputs={"x": NAN})
    with pytest.raises(RunFailedError, match=r"flow\.half: .*input\.x: nan is not a JSON number") as info:
        FlowRunner(flow, RunContext("flow", tmp_path)).run_sync()
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    for path in run_dir.rglob("*.json"):
        _strict_json(path)


def test_a_result_field_with_infinity_fails_its_node_by_name(tmp_path: Path) -> None:
    def scored(ctx: NodeContext) -> str:
        ctx.annotate_result(ratio=INF)
        return "done"

    flow = FlowDefinition().node("scored", scored)
    with pytest.raises(RunFailedError, match=r"flow\.scored: .*annotate_result\(ratio\): inf is not a JSON number"):
        FlowRunner(flow, RunContext("flow", tmp_path)).run_sync()


def test_json_problem_names_the_place() -> None:
    assert json_problem({"a": [1, {"b": NAN}]}) == ("['a'][1]['b']", "nan is not a JSON number")
    assert json_problem({"o": object()}) == ("['o']", "object of type object is not JSON-serialisable")
    assert json_problem({"o": object()}, objects=False) is None
    cycle: list[Any] = [1.0]
    cycle.append(cycle)
    assert json_problem(cycle) is None  # a cycle ends the walk (pydantic refuses it when encoding)


def test_a_loop_iteration_with_nan_fails_by_its_path_and_keeps_the_iterations_before(tmp_path: Path) -> None:
    def ratio(item: float) -> float:
        return 1 / item if item else NAN

    body = FlowDefinition().node("r", ratio, inputs={"item": Var("item")})
    flow = FlowDefinition().for_each("loop", [2.0, 0.0, 4.0], body)
    with pytest.raises(RunFailedError, match=r"flow\.loop\.1\.r: .*outcome: nan") as info:
        FlowRunner(flow, RunContext("flow", tmp_path)).run_sync()
    run_dir = info.value.result.run_dir  # type: ignore[attr-defined]
    assert _strict_json(run_dir / "flow" / "loop" / "0" / "r" / "outcome.json") == 0.5
    assert _strict_json(run_dir / "flow" / "loop" / "result.json")["status"] == "failed"
