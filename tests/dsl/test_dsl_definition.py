"""The builder and the definition check: every definition error is raised before anything runs,
as a DefinitionError naming the offending path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from reprise import (
    AgentDefinition,
    AgentRunner,
    Computed,
    DefinitionError,
    FlowDefinition,
    FlowRunner,
    FunctionNode,
    Initial,
    NodeSettings,
    Ref,
    RunContext,
    Var,
)
from reprise.dsl import (
    ConditionalElement,
    ContainerElement,
    ForEachElement,
    NodeElement,
    ParallelElement,
    validate_definition,
)


def one() -> int:
    return 1


def inc(x: int) -> int:
    return x + 1


class Two(BaseModel):
    a: int
    b: int


def two(inp: Two) -> int:
    return inp.a + inp.b


class Stats(BaseModel):
    total: int


def stats() -> Stats:
    return Stats(total=3)


def leaf(node_id: str = "n") -> FlowDefinition:
    return FlowDefinition().node(node_id, one)


# -- the builder ---------------------------------------------------------------------------------


def test_flow_builder_records_every_element_kind_in_order() -> None:
    body = FlowDefinition().node("sq", inc, inputs={"x": Var("item")})
    inner = FlowDefinition().node("a", one)
    flow = FlowDefinition(description="all kinds")
    returned = (
        flow.node("first", one)
        .subflow("sub", inner)
        .conditional("check", Computed(lambda v: v > 0, Ref("first")), leaf("t"), leaf("e"))
        .for_each("loop", Ref("sub.a", None), body, item_var="item", max_iterations=10, max_concurrency=3)
        .parallel("par", {"left": leaf("l"), "right": leaf("r")})
    )
    assert returned is flow
    assert [e.id for e in flow] == ["first", "sub", "check", "loop", "par"]
    assert len(flow) == 5
    kinds = [type(e) for e in flow.elements]
    assert kinds == [NodeElement, ContainerElement, ConditionalElement, ForEachElement, ParallelElement]
    assert [e.element_type for e in flow] == ["node", "subflow", "conditional", "loop", "parallel"]
    loop = flow.get("loop")
    assert isinstance(loop, ForEachElement)
    assert (loop.max_iterations, loop.max_concurrency, loop.item_var, loop.index_var) == (10, 3, "item", "index")
    assert flow.position("par") == 4
    assert flow.get("missing") is None
    assert flow.description == "all kinds"
    assert repr(flow) == "FlowDefinition([first, sub, check, loop, par])"
    first = flow.get("first")
    assert isinstance(first, NodeElement) and isinstance(first.node, FunctionNode)


def test_agent_builder_with_flows_subagents_and_agent_level_control_flow() -> None:
    helper = AgentDefinition().flow("work", leaf())
    agent = (
        AgentDefinition("assistant")
        .flow("prep", leaf("load"))
        .subagent("helper", helper)
        .conditional("maybe", True, AgentDefinition().flow("extra", leaf()))
        .for_each("each", [1, 2], FlowDefinition().node("n", inc, inputs={"x": Var("item")}))
        .parallel("both", {"a": AgentDefinition().flow("f", leaf()), "b": leaf()})
    )
    assert agent.id == "assistant"
    assert [e.element_type for e in agent] == ["flow", "subagent", "conditional", "loop", "parallel"]
    index = validate_definition(agent, "assistant")
    assert set(index.nodes) == {
        "assistant.prep.load",
        "assistant.helper.work.n",
        "assistant.maybe.then.extra.n",
        "assistant.each.*.n",
        "assistant.both.a.f.n",
        "assistant.both.b.n",
    }
    # The index lists elements in execution order, with definition paths.
    order = [p for p in index.elements if p != "assistant"]
    assert order[:3] == ["assistant.prep", "assistant.prep.load", "assistant.helper"]
    assert index.element("assistant.each.7.n") is index.nodes["assistant.each.*.n"]


def test_literal_items_give_their_own_bound() -> None:
    flow = FlowDefinition().for_each("loop", (1, 2, 3), FlowDefinition().node("n", inc, inputs={"x": Var("item")}))
    loop = flow.get("loop")
    assert isinstance(loop, ForEachElement)
    assert loop.items == [1, 2, 3]
    assert loop.max_iterations == 3


def test_node_overrides_apply_only_where_given() -> None:
    node = FunctionNode(one, settings=NodeSettings(timeout=9, retries=1))
    flow = FlowDefinition().node("a", node, retries=4, backoff=0.5).node("b", node)
    a, b = flow.get("a"), flow.get("b")
    assert isinstance(a, NodeElement) and isinstance(b, NodeElement)
    assert (a.node.settings.retries, a.node.settings.backoff, a.node.settings.timeout) == (4, 0.5, 9)
    assert b.node is node and node.settings.retries == 1


# -- errors raised while building ----------------------------------------------------------------


def test_duplicate_ids_among_siblings() -> None:
    flow = FlowDefinition().node("a", one)
    with pytest.raises(DefinitionError, match="duplicate id 'a'") as info:
        flow.node("a", one)
    assert info.value.path == "a"
    agent = AgentDefinition().flow("f", leaf())
    with pytest.raises(DefinitionError, match="duplicate id 'f'"):
        agent.subagent("f", AgentDefinition().flow("x", leaf()))
    # The same id in different containers is fine: uniqueness is among siblings.
    FlowDefinition().node("a", one).subflow("sub", FlowDefinition().node("a", one))


@pytest.mark.parametrize("bad", ["1st", "has space", "dash-ed", "dot.ted", ""])
def test_invalid_element_ids(bad: str) -> None:
    with pytest.raises(DefinitionError, match="invalid id"):
        FlowDefinition().node(bad, one)


def test_invalid_ids_in_loops_and_branches_name_the_element() -> None:
    with pytest.raises(DefinitionError, match="invalid id 'the item'") as info:
        FlowDefinition().for_each("loop", [1], leaf(), item_var="the item")
    assert info.value.path == "loop"
    with pytest.raises(DefinitionError, match="invalid id 'left-branch'") as info:
        FlowDefinition().parallel("par", {"left-branch": leaf()})
    assert info.value.path == "par"
    with pytest.raises(DefinitionError, match="invalid id"):
        RunContext(root_component_id="my-agent", project_root=".")


def test_loops_need_a_bound_and_sane_limits() -> None:
    with pytest.raises(DefinitionError, match="loop without a bound") as info:
        FlowDefinition().node("list", one).for_each("loop", Ref("list"), leaf())
    assert info.value.path == "loop"
    with pytest.raises(DefinitionError, match="max_iterations must be >= 1"):
        FlowDefinition().for_each("loop", Ref("x"), leaf(), max_iterations=0)
    with pytest.raises(DefinitionError, match="max_concurrency must be >= 1"):
        FlowDefinition().for_each("loop", [1], leaf(), max_concurrency=0)


def test_bodies_must_be_containers_of_the_right_kind() -> None:
    with pytest.raises(DefinitionError, match="then_flow must be a FlowDefinition") as info:
        FlowDefinition().conditional("c", True, one)  # type: ignore[arg-type]
    assert info.value.path == "c"
    with pytest.raises(DefinitionError, match="branches"):
        FlowDefinition().parallel("p", {})
    with pytest.raises(DefinitionError, match="flow must be a FlowDefinition"):
        AgentDefinition().flow("f", AgentDefinition())  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="subagent must be an AgentDefinition"):
        AgentDefinition().subagent("s", FlowDefinition())  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="expected a node or a function") as info:
        FlowDefinition().node("n", 42)  # type: ignore[arg-type]
    assert info.value.path == "n"


def test_bad_node_settings() -> None:
    with pytest.raises(DefinitionError, match="retries must be >= 0"):
        FlowDefinition().node("n", one, retries=-1)
    with pytest.raises(DefinitionError, match="timeout must be > 0"):
        FlowDefinition().node("n", one, timeout=0)


def test_functions_that_cannot_be_nodes() -> None:
    def star(*values: int) -> int:
        return sum(values)

    with pytest.raises(DefinitionError, match=r"\*args and \*\*kwargs"):
        FunctionNode(star)

    def unresolved(x: NoSuchType) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 0

    with pytest.raises(DefinitionError, match="cannot read the type hints"):
        FunctionNode(unresolved)
    with pytest.raises(DefinitionError, match="Computed needs a callable"):
        Computed(3)  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="invalid hierarchy path"):
        Ref("a..b")


# -- errors found by the whole-tree check, before anything runs ----------------------------------

Builder = Callable[[], FlowDefinition]


def _cases() -> list[tuple[str, Builder, str, str]]:
    """(name, build, expected path, message fragment)."""

    return [
        (
            "unknown ref with a suggestion",
            lambda: FlowDefinition().node("count_words", one).node("use", inc, inputs={"x": Ref("count_word")}),
            "root.use",
            "does not exist; did you mean count_words?",
        ),
        (
            "ref to a later element",
            lambda: FlowDefinition().node("use", inc, inputs={"x": Ref("later")}).node("later", one),
            "root.use",
            "runs after this element",
        ),
        (
            "ref to itself",
            lambda: FlowDefinition().node("me", inc, inputs={"x": Ref("me")}),
            "root.me",
            "is this element or one that encloses it",
        ),
        (
            "ref to an enclosing element",
            lambda: FlowDefinition().subflow("outer", FlowDefinition().node("n", inc, inputs={"x": Ref("outer")})),
            "root.outer.n",
            "encloses it",
        ),
        (
            "ref to a concurrent branch",
            lambda: FlowDefinition().parallel(
                "par",
                {"a": leaf("x"), "b": FlowDefinition().node("y", inc, inputs={"x": Ref("par.a.x")})},
            ),
            "root.par.b.y",
            "runs concurrently",
        ),
        (
            "ref into a loop body",
            lambda: (
                FlowDefinition()
                .for_each("loop", [1, 2], FlowDefinition().node("sq", inc, inputs={"x": Var("item")}))
                .node("use", inc, inputs={"x": Ref("loop.sq")})
            ),
            "root.use",
            "reaches inside loop 'loop'",
        ),
        (
            "ref into a conditional branch",
            lambda: (
                FlowDefinition().conditional("check", True, leaf("t")).node("use", inc, inputs={"x": Ref("check.t")})
            ),
            "root.use",
            "reaches inside conditional 'check'",
        ),
        (
            "ref to a missing branch",
            lambda: FlowDefinition().parallel("par", {"a": leaf()}).node("use", inc, inputs={"x": Ref("par.c.n")}),
            "root.use",
            "has no branch 'c'",
        ),
        (
            "ref below a node",
            lambda: FlowDefinition().node("a", one).node("use", inc, inputs={"x": Ref("a.b")}),
            "root.use",
            "'a' is a node; it has no element 'b'",
        ),
        (
            "ref to a missing element of a subflow",
            lambda: FlowDefinition().subflow("sub", leaf("x")).node("use", inc, inputs={"x": Ref("sub.y")}),
            "root.use",
            "'sub' has no element 'y'",
        ),
        (
            "ref in a conditional's condition",
            lambda: FlowDefinition().conditional("c", Computed(bool, Ref("nope")), leaf()),
            "root.c",
            "does not exist",
        ),
        (
            "ref in loop items",
            lambda: FlowDefinition().for_each("loop", Ref("nope"), leaf(), max_iterations=3),
            "root.loop",
            "does not exist",
        ),
        (
            "empty root flow",
            lambda: FlowDefinition(),
            "root",
            "empty flow",
        ),
        (
            "empty nested flow",
            lambda: FlowDefinition().node("a", one).subflow("sub", FlowDefinition()),
            "root.sub",
            "empty flow",
        ),
        (
            "empty loop body",
            lambda: FlowDefinition().for_each("loop", [1], FlowDefinition()),
            "root.loop.*",
            "empty flow",
        ),
        (
            "empty else branch",
            lambda: FlowDefinition().conditional("c", True, leaf(), FlowDefinition()),
            "root.c.else",
            "empty flow",
        ),
        (
            "empty parallel branch",
            lambda: FlowDefinition().parallel("par", {"a": leaf(), "b": FlowDefinition()}),
            "root.par.b",
            "empty flow",
        ),
        (
            "unknown input field",
            lambda: FlowDefinition().node("sum", two, inputs={"a": 1, "c": 2}),
            "root.sum",
            "inputs ['c'] are not fields of Two (fields: a, b)",
        ),
        (
            "model parameter bound by its name",
            lambda: FlowDefinition().node("sum", two, inputs={"inp": {"a": 1, "b": 2}}),
            "root.sum",
            "inputs ['inp'] are not fields of Two (fields: a, b); to give the whole input from one source",
        ),
        (
            "unknown annotation-style field",
            lambda: FlowDefinition().node("n", inc, inputs={"y": 1}),
            "root.n",
            "inputs ['y'] are not fields of IncInput (fields: x)",
        ),
        (
            "inputs for a node without input",
            lambda: FlowDefinition().node("n", one, inputs={"x": 1}),
            "root.n",
            "takes no input, but inputs were bound",
        ),
        (
            "Var outside a loop",
            lambda: FlowDefinition().node("n", inc, inputs={"x": Var("item")}),
            "root.n",
            "loop variable 'item' is not defined (loop variables: none here)",
        ),
        (
            "Var with a name the loop does not define",
            lambda: FlowDefinition().for_each(
                "loop", [1], FlowDefinition().node("n", inc, inputs={"x": Var("file")}), item_var="path"
            ),
            "root.loop.*.n",
            "loop variable 'file' is not defined (loop variables: index, path)",
        ),
        (
            "Var of a loop used after the loop",
            lambda: (
                FlowDefinition()
                .for_each("loop", [1], FlowDefinition().node("n", inc, inputs={"x": Var("item")}))
                .node("after", inc, inputs={"x": Var("item")})
            ),
            "root.after",
            "loop variable 'item' is not defined",
        ),
        (
            "Var inside Computed outside a loop",
            lambda: FlowDefinition().node("n", inc, inputs={"x": Computed(len, Var("item"))}),
            "root.n",
            "loop variable 'item'",
        ),
        (
            "ref nested in a literal list",
            lambda: FlowDefinition().node("n", _takes_list, inputs={"values": [1, Ref("ghost")]}),
            "root.n",
            "does not exist",
        ),
    ]


def _takes_list(values: list[int]) -> int:
    return sum(values)


@pytest.mark.parametrize(("name", "build", "path", "fragment"), _cases(), ids=[c[0] for c in _cases()])
def test_definition_errors_name_the_path_and_nothing_runs(
    name: str, build: Builder, path: str, fragment: str, tmp_path: Path
) -> None:
    flow = build()
    with pytest.raises(DefinitionError) as info:
        FlowRunner(flow, RunContext(root_component_id="root", project_root=tmp_path))
    assert info.value.path == path, name
    assert fragment in info.value.message, info.value.message
    assert str(info.value).startswith(f"{path}: ")
    # Nothing ran: no run directory was even made.
    assert not (tmp_path / "runs").exists()


def test_definition_error_before_the_first_node_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    def side_effect() -> int:
        marker.write_text("yes")
        return 1

    flow = FlowDefinition().node("first", side_effect).node("bad", inc, inputs={"x": Ref("nowhere")})
    context = RunContext(root_component_id="root", project_root=tmp_path)
    with pytest.raises(DefinitionError):
        FlowRunner(flow, context).run_sync()
    assert not marker.exists()
    assert not context.is_setup


def test_valid_references_are_accepted() -> None:
    sub = FlowDefinition().node("load", stats).node("again", inc, inputs={"x": Ref("load", "total")})
    flow = (
        FlowDefinition()
        .subflow("prep", sub)
        .parallel(
            "par",
            {
                # outward (the parallel's earlier sibling), into a subflow, and absolute
                "a": FlowDefinition().node("x", inc, inputs={"x": Ref("prep.again")}),
                "b": FlowDefinition().node("y", inc, inputs={"x": Ref("root.prep.load", "total")}),
            },
        )
        .node("into_branch", inc, inputs={"x": Ref("par.a.x")})
        .for_each(
            "loop",
            [1, 2],
            FlowDefinition()
            .node("first", inc, inputs={"x": Var("item")})
            .node("second", inc, inputs={"x": Ref("first")})
            .node("outer", inc, inputs={"x": Ref("into_branch")}),
        )
        .node("loop_result", _takes_list, inputs={"values": Ref("loop")})
        .conditional("check", Computed(lambda v: v > 1, Ref("loop_result")), leaf("t"))
        .node("after_check", _any, inputs={"v": Ref("check")})
    )
    index = validate_definition(flow, "root")
    assert "root.loop.*.second" in index.nodes
    assert index.resolve_node("second") == "root.loop.*.second"
    with pytest.raises(DefinitionError, match="valid nodes"):
        index.resolve_node("nope")
    assert index.suggest("root.prep.lod")[0] == "root.prep.load"


def _any(v: object) -> object:
    return v


def test_agent_runner_checks_the_agent_too(tmp_path: Path) -> None:
    agent = (
        AgentDefinition()
        .flow("f", FlowDefinition().node("n", inc, inputs={"x": Initial("x")}))
        .flow("g", FlowDefinition().node("m", inc, inputs={"x": Ref("f.z")}))
    )
    with pytest.raises(DefinitionError) as info:
        AgentRunner(agent, RunContext(root_component_id="agent", project_root=tmp_path))
    assert info.value.path == "agent.g.m"
    with pytest.raises(DefinitionError, match="AgentRunner runs a AgentDefinition"):
        AgentRunner(leaf(), RunContext(root_component_id="agent", project_root=tmp_path))  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="FlowRunner runs a FlowDefinition"):
        FlowRunner(agent, RunContext(root_component_id="agent", project_root=tmp_path))  # type: ignore[arg-type]


def test_ambiguous_node_ids() -> None:
    flow = FlowDefinition().node("n", one).subflow("sub", FlowDefinition().node("n", one))
    index = validate_definition(flow, "root")
    with pytest.raises(DefinitionError, match=r"ambiguous; use one of the paths: root\.n, root\.sub\.n"):
        index.resolve_node("n")
    assert index.resolve_node("root.sub.n") == "root.sub.n"


def test_validation_is_cached_until_any_container_changes() -> None:
    from reprise.dsl._definition import validate_definition

    body = FlowDefinition().node("inner", lambda: 1)
    flow = FlowDefinition().node("a", lambda: 1).subflow("sub", body)
    first = validate_definition(flow, "root")
    assert validate_definition(flow, "root") is first
    assert validate_definition(FlowDefinition().node("x", lambda: 2), "other") is not first
    assert validate_definition(flow, "root") is first  # validating another definition changes nothing
    assert validate_definition(flow, "other_root") is not first
    # A change deep inside (the body of a subflow) is seen, and checked, on the next validation.
    body.node("bad", lambda x: x, inputs={"x": Ref("missing")})
    with pytest.raises(DefinitionError, match="missing"):
        validate_definition(flow, "root")
