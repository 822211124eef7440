"""HierarchyPath: parsing, validation and the path forms of loops, branches and conditionals."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from reprise import DefinitionError, HierarchyPath
from reprise.dsl import definition_path
from reprise.dsl._paths import validate_id


@pytest.mark.parametrize(
    "text",
    [
        "agent",
        "agent.flow1.node3",
        "_private.x_1",
        "agent.flow.loop.0.node",
        "agent.flow.loop.12.inner.3.node",
        "flow.check.then.fix",
        "flow.check.else.fix",
        "flow.fanout.left.count",
    ],
)
def test_valid_paths_round_trip(text: str) -> None:
    path = HierarchyPath(text)
    assert str(path) == text
    assert path.parts == tuple(text.split("."))
    assert HierarchyPath(path) == path
    assert HierarchyPath(path.parts) == path
    assert HierarchyPath(list(path.parts)) == path
    assert repr(path) == f"HierarchyPath({text!r})"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("a..b", "segment ''"),
        ("a.b-c", "segment 'b-c'"),
        ("a.b c", "segment 'b c'"),
        ("1abc", "segment '1abc'"),
        ("0.node", "must start with an id"),
        ("a.01.b", "segment '01'"),
        ("a.-1", "segment '-1'"),
        ("a.", "segment ''"),
        (".a", "segment ''"),
        ("a/b", "segment 'a/b'"),
        ("a.ü", "segment 'ü'"),
    ],
)
def test_invalid_paths_are_definition_errors(text: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as info:
        HierarchyPath(text)
    assert fragment in str(info.value)


def test_empty_parts_are_rejected() -> None:
    with pytest.raises(DefinitionError, match="empty"):
        HierarchyPath(())


def test_navigation() -> None:
    path = HierarchyPath("agent.flow1.loop.2.node3")
    assert path.name == "node3"
    assert path.root == "agent"
    assert len(path) == 5
    assert path.parent == HierarchyPath("agent.flow1.loop.2")
    assert HierarchyPath("agent").parent is None
    assert path.child("x") == "agent.flow1.loop.2.node3.x"
    assert HierarchyPath("agent.loop").child(4) == HierarchyPath("agent.loop.4")
    assert HierarchyPath("agent.flow1").is_ancestor_of(path)
    assert not path.is_ancestor_of(path)
    # A shared text prefix is not ancestry: 'agent.flow' is not above 'agent.flow1'.
    assert not HierarchyPath("agent.flow").is_ancestor_of(path)
    assert path.relative_to(HierarchyPath("agent.flow1")) == ("loop", "2", "node3")
    assert path.relative_to(path) == ()
    with pytest.raises(ValueError):
        path.relative_to(HierarchyPath("agent.other"))


def test_equality_hashing_and_order() -> None:
    a = HierarchyPath("agent.a")
    assert a == "agent.a"
    assert a != "agent.b"
    assert {a: 1}[HierarchyPath("agent.a")] == 1
    assert hash(a) == hash("agent.a")
    paths = [HierarchyPath(p) for p in ("agent.b", "agent.a.z", "agent.a", "agent")]
    assert [str(p) for p in sorted(paths)] == ["agent", "agent.a", "agent.a.z", "agent.b"]


def test_pydantic_field_validates_and_serialises() -> None:
    class Target(BaseModel):
        path: HierarchyPath

    model = Target(path="agent.flow.loop.1.node")  # type: ignore[arg-type]
    assert isinstance(model.path, HierarchyPath)
    assert model.model_dump(mode="json") == {"path": "agent.flow.loop.1.node"}
    assert Target.model_validate_json('{"path": "agent.x"}').path == "agent.x"
    with pytest.raises(DefinitionError):
        Target(path="agent..x")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "1x", "a-b", "a.b", "with space", "é"])
def test_validate_id_rejects(bad: str) -> None:
    with pytest.raises(DefinitionError, match="invalid id"):
        validate_id(bad, where="flow.x")


def test_validate_id_names_where() -> None:
    with pytest.raises(DefinitionError) as info:
        validate_id("a-b", where="flow.loop")
    assert info.value.path == "flow.loop"
    assert str(info.value).startswith("flow.loop: ")


def test_definition_path_replaces_loop_indexes() -> None:
    assert definition_path("agent.loop.3.inner.12.node") == "agent.loop.*.inner.*.node"
    assert definition_path(HierarchyPath("agent.par.left.node")) == "agent.par.left.node"
