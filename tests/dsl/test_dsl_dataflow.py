"""Data flow between elements: static inputs, initial inputs, Ref (relative, outward, absolute,
field access), Var in loops, Computed, and the paths of loops, branches and conditionals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from reprise import (
    AgentDefinition,
    AgentRunner,
    Computed,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeInputError,
    Ref,
    RunContext,
    RunFailedError,
    RunResult,
    Var,
)
from reprise.dsl._sources import access

pytestmark = pytest.mark.anyio


class Greeting(BaseModel):
    name: str
    punctuation: str = "!"


class FileInfo(BaseModel):
    name: str
    words: list[str]


class Listing(BaseModel):
    files: list[FileInfo]
    meta: dict[str, int]


def greet(inp: Greeting) -> str:
    return f"hello {inp.name}{inp.punctuation}"


def listing() -> Listing:
    return Listing(
        files=[FileInfo(name="a.txt", words=["x", "y"]), FileInfo(name="b.txt", words=["z"])],
        meta={"count": 2},
    )


def echo(value: Any) -> Any:
    return value


def add(a: int, b: int) -> int:
    return a + b


def _json(path: Path) -> Any:
    return json.loads(path.read_text())


async def _run(flow: FlowDefinition, tmp_path: Path, root: str = "flow", **kwargs: Any) -> RunResult:
    return await FlowRunner(flow, RunContext(root_component_id=root, project_root=tmp_path, **kwargs)).run()


async def test_initial_inputs_with_fields_and_defaults(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("whole", echo, inputs={"value": Initial("config")})
        .node("field", echo, inputs={"value": Initial("config", "limits.max")})
        .node("defaulted", echo, inputs={"value": Initial("absent", default="fallback")})
    )
    result = await _run(flow, tmp_path, initial_inputs={"config": {"limits": {"max": 5}}})
    assert result.outcomes["flow.whole"] == {"limits": {"max": 5}}
    assert result.outcomes["flow.field"] == 5
    assert result.outcomes["flow.defaulted"] == "fallback"
    assert _json(result.run_dir / "static_inputs" / "initial_inputs.json") == {"config": {"limits": {"max": 5}}}


async def test_static_input_overrides_bindings_and_is_recorded(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("greet", greet, inputs={"name": Initial("who")})
        .node("other", greet, inputs={"name": Initial("who")})
    )
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, initial_inputs={"who": "bound"})
    ctx.register_node_static_input("greet", Greeting(name="static", punctuation="?"))
    result = await FlowRunner(flow, ctx).run()
    assert result.outcomes["flow.greet"] == "hello static?"
    assert result.outcomes["flow.other"] == "hello bound!"
    assert _json(result.run_dir / "flow" / "greet" / "input.json") == {"name": "static", "punctuation": "?"}
    assert _json(result.run_dir / "static_inputs" / "static_inputs.json") == {
        "flow.greet": {"name": "static", "punctuation": "?"}
    }


async def test_static_input_applies_to_every_iteration_of_a_loop_node(tmp_path: Path) -> None:
    body = FlowDefinition().node("greet", greet, inputs={"name": Var("item")})
    flow = FlowDefinition().for_each("loop", ["a", "b"], body)
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    ctx.register_node_static_input("flow.loop.*.greet", {"name": "fixed"})
    result = await FlowRunner(flow, ctx).run()
    assert result.outcomes["flow.loop"] == ["hello fixed!", "hello fixed!"]


async def test_ref_relative_outward_absolute_and_into_containers(tmp_path: Path) -> None:
    prep = FlowDefinition().node("load", lambda: 10).node("twice", add, inputs={"a": Ref("load"), "b": Ref("load")})
    inner = FlowDefinition().node(
        "deep",
        add,
        # 'prep' is not in 'inner' nor in 'outer': it is found two levels up, in the root flow.
        inputs={"a": Ref("prep.twice"), "b": Ref("flow.prep.load")},
    )
    flow = (
        FlowDefinition()
        .subflow("prep", prep)
        .subflow("outer", FlowDefinition().subflow("inner", inner))
        .node("from_sub", add, inputs={"a": Ref("outer.inner.deep"), "b": 0})
    )
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.prep.twice"] == 20
    assert result.outcomes["flow.outer.inner.deep"] == 30
    assert result.outcomes["flow.from_sub"] == 30
    # A container's own outcome is its last element's outcome.
    assert result.outcomes["flow.outer"] == 30


async def test_nearest_match_wins_when_ids_repeat(tmp_path: Path) -> None:
    sub = FlowDefinition().node("value", lambda: "inner").node("use", echo, inputs={"value": Ref("value")})
    flow = (
        FlowDefinition()
        .node("value", lambda: "outer")
        .subflow("sub", sub)
        .node("abs_inner", echo, inputs={"value": Ref("flow.sub.value")})
    )
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.sub.use"] == "inner"
    assert result.outcomes["flow.abs_inner"] == "inner"


async def test_ref_field_access_into_models_dicts_and_lists(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("list", listing)
        .node("first_name", echo, inputs={"value": Ref("list", "files.0.name")})
        .node("last_word", echo, inputs={"value": Ref("list", "files.-1.words.0")})
        .node("count", echo, inputs={"value": Ref("list", "meta.count")})
        .node("nested", echo, inputs={"value": {"n": Ref("list", "meta.count"), "all": [Ref("first_name"), 1]}})
    )
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.first_name"] == "a.txt"
    assert result.outcomes["flow.last_word"] == "z"
    assert result.outcomes["flow.count"] == 2
    assert result.outcomes["flow.nested"] == {"n": 2, "all": ["a.txt", 1]}


async def test_ref_to_a_missing_field_fails_naming_the_node(tmp_path: Path) -> None:
    flow = FlowDefinition().node("list", listing).node("bad", echo, inputs={"value": Ref("list", "files.7.name")})
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path)
    cause = info.value.__cause__
    assert isinstance(cause, NodeInputError)
    assert cause.path == "flow.bad"
    assert "no field '7' in list" in cause.message


def test_field_access_refuses_dunder_names() -> None:
    with pytest.raises(NodeInputError, match="access to '__class__' is not allowed"):
        access(Listing(files=[], meta={}), ["__class__"], what="ref")
    with pytest.raises(NodeInputError, match="no field 'nope'"):
        access({"a": 1}, ["nope"], what="ref")


async def test_whole_input_from_one_source(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("make", lambda: {"name": "model", "punctuation": "."})
        .node("greet", greet, inputs=Ref("make"))
        .node("from_initial", greet, inputs=Initial("person"))
    )
    result = await _run(flow, tmp_path, initial_inputs={"person": {"name": "ada"}})
    assert result.outcomes["flow.greet"] == "hello model."
    assert result.outcomes["flow.from_initial"] == "hello ada!"


async def test_var_item_index_fields_and_nested_loops(tmp_path: Path) -> None:
    inner = FlowDefinition().node(
        "cell",
        echo,
        inputs={
            "value": Computed(
                lambda row, col, i, j: f"{row}{col}:{i}{j}", Var("row", "name"), Var("col"), Var("i"), Var("j")
            )
        },
    )
    outer = (
        FlowDefinition()
        .node("label", echo, inputs={"value": Var("row", "name")})
        .for_each("cols", ["x", "y"], inner, item_var="col", index_var="j")
    )
    flow = FlowDefinition().for_each("rows", Initial("rows"), outer, item_var="row", index_var="i", max_iterations=5)
    result = await _run(flow, tmp_path, initial_inputs={"rows": [{"name": "A"}, {"name": "B"}]})
    assert result.outcomes["flow.rows"] == [["Ax:00", "Ay:01"], ["Bx:10", "By:11"]]
    # Iterations appear in paths as <loop>.<index>, nested loops as <loop>.<i>.<inner>.<j>.
    assert _json(result.run_dir / "flow" / "rows" / "1" / "cols" / "0" / "cell" / "outcome.json") == "Bx:10"
    assert _json(result.run_dir / "flow" / "rows" / "0" / "label" / "outcome.json") == "A"
    assert result.load_outcome("flow.rows.1.cols.1.cell") == "By:11"
    loop_result = _json(result.run_dir / "flow" / "rows" / "result.json")
    assert loop_result["element_type"] == "loop" and loop_result["iterations"] == 2


async def test_loop_outcome_and_refs_within_an_iteration(tmp_path: Path) -> None:
    body = (
        FlowDefinition()
        .node("double", add, inputs={"a": Var("item"), "b": Var("item")})
        .node("plus_index", add, inputs={"a": Ref("double"), "b": Var("index")})
    )
    flow = FlowDefinition().for_each("loop", [1, 2, 3], body).node("sum", _sum, inputs={"values": Ref("loop")})
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.loop"] == [2, 5, 8]
    assert result.outcomes["flow.sum"] == 15
    # Nodes inside iterations are on disk, not in the in-memory outcomes.
    assert "flow.loop.0.double" not in result.outcomes


def _sum(values: list[int]) -> int:
    return sum(values)


async def test_loop_over_more_items_than_its_bound_fails(tmp_path: Path) -> None:
    body = FlowDefinition().node("n", echo, inputs={"value": Var("item")})
    flow = FlowDefinition().for_each("loop", Initial("items"), body, max_iterations=2)
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path, initial_inputs={"items": [1, 2, 3]})
    cause = info.value.__cause__
    assert isinstance(cause, NodeInputError) and cause.path == "flow.loop"
    assert "3 items, more than max_iterations=2" in cause.message
    with pytest.raises(RunFailedError, match="loop items must be a list, got str"):
        await _run(flow, tmp_path, initial_inputs={"items": "abc"})


async def test_computed_and_conditional_branch_paths(tmp_path: Path) -> None:
    then_flow = FlowDefinition().node("big", echo, inputs={"value": Computed(lambda n: n * 10, Ref("count"))})
    else_flow = FlowDefinition().node("small", echo, inputs={"value": "tiny"})
    flow = (
        FlowDefinition()
        .node("count", echo, inputs={"value": Initial("n")})
        .conditional("check", Computed(lambda n: n > 3, Ref("count")), then_flow, else_flow)
        .node("after", echo, inputs={"value": Ref("check")})
    )
    big = await _run(flow, tmp_path, initial_inputs={"n": 5})
    assert big.outcomes["flow.check"] == 50 and big.outcomes["flow.after"] == 50
    assert _json(big.run_dir / "flow" / "check" / "then" / "big" / "outcome.json") == 50
    assert not (big.run_dir / "flow" / "check" / "else").exists()
    check = _json(big.run_dir / "flow" / "check" / "result.json")
    assert (check["branch"], check["condition"]) == ("then", True)

    small = await _run(flow, tmp_path, initial_inputs={"n": 1})
    assert small.outcomes["flow.after"] == "tiny"
    assert _json(small.run_dir / "flow" / "check" / "else" / "small" / "outcome.json") == "tiny"
    assert not (small.run_dir / "flow" / "check" / "then").exists()


async def test_conditional_without_else_skips_to_none(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .conditional("maybe", Initial("go"), FlowDefinition().node("n", lambda: 1))
        .node("after", echo, inputs={"value": Ref("maybe")})
    )
    result = await _run(flow, tmp_path, initial_inputs={"go": False})
    assert result.outcomes["flow.after"] is None
    assert _json(result.run_dir / "flow" / "maybe" / "result.json")["branch"] == "else"


async def test_computed_error_is_a_node_input_error(tmp_path: Path) -> None:
    flow = FlowDefinition().node("n", echo, inputs={"value": Computed(lambda: 1 / 0)})
    with pytest.raises(RunFailedError) as info:
        await _run(flow, tmp_path)
    cause = info.value.__cause__
    assert isinstance(cause, NodeInputError) and cause.path == "flow.n"
    assert "ZeroDivisionError" in cause.message


async def test_parallel_branch_paths_and_outcome(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("base", lambda: 3)
        .parallel(
            "par",
            {
                "left": FlowDefinition().node("l", add, inputs={"a": Ref("base"), "b": 1}),
                "right": FlowDefinition().node("r", add, inputs={"a": Ref("flow.base"), "b": 2}),
            },
        )
        .node("join", add, inputs={"a": Ref("par.left.l"), "b": Ref("par", "right")})
    )
    result = await _run(flow, tmp_path)
    assert result.outcomes["flow.par"] == {"left": 4, "right": 5}
    assert result.outcomes["flow.join"] == 9
    assert _json(result.run_dir / "flow" / "par" / "left" / "l" / "outcome.json") == 4
    branch = _json(result.run_dir / "flow" / "par" / "right" / "result.json")
    assert (branch["element_type"], branch["status"]) == ("branch", "completed")


async def test_agent_flows_subagents_and_agent_level_control_flow(tmp_path: Path) -> None:
    collect = FlowDefinition().node("names", echo, inputs={"value": Initial("names")})
    greet_each = FlowDefinition().node("greet", greet, inputs={"name": Var("item")})
    summarise = AgentDefinition().flow("sum", FlowDefinition().node("n", _count, inputs={"values": Ref("agent.each")}))
    agent = (
        AgentDefinition()
        .flow("collect", collect)
        .for_each("each", Ref("collect.names"), greet_each, max_iterations=10)
        .subagent("summary", summarise)
        .conditional(
            "many",
            Computed(lambda n: n > 1, Ref("summary.sum.n")),
            FlowDefinition().node("yes", lambda: "many"),
            FlowDefinition().node("no", lambda: "few"),
        )
    )
    ctx = RunContext(root_component_id="agent", project_root=tmp_path, initial_inputs={"names": ["ada", "bob"]})
    result = await AgentRunner(agent, ctx).run()
    assert result.outcomes["agent.each"] == ["hello ada!", "hello bob!"]
    assert result.outcomes["agent.summary.sum.n"] == 2
    assert result.outcome == "many"
    assert _json(result.run_dir / "agent" / "each" / "1" / "greet" / "outcome.json") == "hello bob!"
    assert _json(result.run_dir / "agent" / "summary" / "result.json")["element_type"] == "subagent"
    assert _json(result.run_dir / "agent" / "collect" / "result.json")["element_type"] == "flow"
    assert _json(result.run_dir / "agent" / "result.json")["element_type"] == "agent"


def _count(values: list[Any]) -> int:
    return len(values)


async def test_loop_over_no_items(tmp_path: Path) -> None:
    body = FlowDefinition().node("n", echo, inputs={"value": Var("item")})
    flow = (
        FlowDefinition()
        .for_each("loop", Initial("items"), body, max_iterations=3)
        .node("after", echo, inputs={"value": Ref("loop")})
    )
    result = await _run(flow, tmp_path, initial_inputs={"items": []})
    assert result.outcomes["flow.after"] == []
    assert _json(result.run_dir / "flow" / "loop" / "result.json")["iterations"] == 0
    assert [p.name for p in (result.run_dir / "flow" / "loop").iterdir()] == ["result.json"]
