"""Link-mode re-runs (the default): a reused node is one relative symbolic link to its directory
in the run where it executed, the run records what it reused in ``.trace/reused.json``, and
every reader reports the node as reused. Copy mode stays self-contained.

Every test counts node calls, so a reused node whose code was called would fail it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from reprise import (
    Api,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeContext,
    ObservabilitySettings,
    Ref,
    RerunError,
    RunContext,
    RunSetupError,
)
from reprise.cli import main as cli_main
from reprise.dsl._definition import validate_definition
from reprise.dsl._paths import HierarchyPath
from reprise.run._directory import RunDirectory
from reprise.run._files import dump_json
from reprise.run._previous import PreviousRun
from reprise.run._reused import RunOutcomes, read_reused
from reprise.runners._reuse import ReusePlan, materialize_reused
from reprise.view._build import build_run_view_data

pytestmark = pytest.mark.anyio


class Calls:
    """Counts node calls by name."""

    def __init__(self) -> None:
        self.counter: Counter[str] = Counter()

    def inc(self, name: str) -> Any:
        def fn(n: int) -> int:
            self.counter[name] += 1
            return n + 1

        fn.__name__ = name
        return fn


class Box(BaseModel):
    values: list[int]


def chain(calls: Calls, n: int = 4) -> FlowDefinition:
    flow = FlowDefinition()
    for i in range(n):
        flow.node(f"n{i}", calls.inc(f"n{i}"), inputs={"n": Initial("x") if i == 0 else Ref(f"n{i - 1}")})
    return flow


def ctx(tmp_path: Path, previous: str | None = None, start: str | None = None, **kw: Any) -> RunContext:
    return RunContext(
        "root", tmp_path, initial_inputs={"x": 0}, previous_run_id=previous, start_hierarchy_path=start, **kw
    )


def reader_result(run_dir: Path, path: str) -> dict[str, Any]:
    result = PreviousRun(RunDirectory(run_dir)).result(HierarchyPath(path))
    assert result is not None
    return result


async def test_links_are_relative_and_point_at_the_origin_through_two_reruns(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    calls.counter.clear()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n2")).run()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3")).run()
    # n0, n1 reused twice (never called), n2 executed in r2 and reused in r3, n3 executed twice.
    assert calls.counter == Counter({"n2": 1, "n3": 2})
    assert (r2.reused, r2.executed, r3.reused, r3.executed) == (2, 2, 3, 1)
    assert r3.outcomes == r2.outcomes == r1.outcomes

    for name, holder in (("n0", r1), ("n1", r1), ("n2", r2)):
        link = r3.run_dir / "root" / name
        target = os.readlink(link)
        assert target == f"../../{holder.run_id}/root/{name}"  # relative, into the run holding it
        resolved = (link.parent / target).resolve()
        assert resolved == (holder.run_dir / "root" / name).resolve()
        assert resolved.is_dir() and not (holder.run_dir / "root" / name).is_symlink()  # no link to a link
        assert (link / "outcome.json").read_text() == (holder.run_dir / "root" / name / "outcome.json").read_text()
    assert not (r3.run_dir / "root" / "n3").is_symlink()

    # What r3 recorded, and what readers make of it.
    recorded = read_reused(r3.run_dir)
    assert recorded is not None
    assert {p: (w.dir_run_id, w.origin_run_id) for p, w in recorded.items()} == {
        "root.n0": (r1.run_id, r1.run_id),
        "root.n1": (r1.run_id, r1.run_id),
        "root.n2": (r2.run_id, r2.run_id),
    }
    n1 = reader_result(r3.run_dir, "root.n1")
    assert (n1["reused"], n1["reused_from"], n1["origin_run_id"]) == (True, r2.run_id, r1.run_id)
    assert n1["status"] == "completed" and n1["path"] == "root.n1"
    n2 = reader_result(r3.run_dir, "root.n2")
    assert (n2["reused"], n2["reused_from"], n2["origin_run_id"]) == (True, r2.run_id, r2.run_id)
    assert reader_result(r3.run_dir, "root.n3")["reused"] is False
    # The files each run holds for later re-runs: its own completed nodes only.
    for run, own in ((r1, {"root.n0", "root.n1", "root.n2", "root.n3"}), (r2, {"root.n2", "root.n3"})):
        held = RunOutcomes.read(run.run_dir)
        assert held is not None and set(held.values) == own
    # Nothing was deleted from the earlier runs.
    for run in (r1, r2):
        assert sorted(os.listdir(run.run_dir / "root")) == ["n0", "n1", "n2", "n3", "result.json"]


async def test_reused_outcomes_keep_their_types_and_code_is_not_called(tmp_path: Path) -> None:
    seen: list[Any] = []
    count = Counter[str]()

    def make(n: int) -> Box:
        count["make"] += 1
        return Box(values=[n, n + 1])

    def use(b: Box, k: int) -> int:
        count["use"] += 1
        seen.append(b)
        return sum(b.values) + k

    def big(k: int) -> list[int]:
        count["big"] += 1
        return list(range(2000 * k))  # more than the outcome bytes a run keeps in outcomes.json

    def last(b: Box, xs: list[int]) -> int:
        count["last"] += 1
        return len(xs) + b.values[0]

    flow = (
        FlowDefinition()
        .node("make", make, inputs={"n": Initial("x")})
        .node("use", use, inputs={"b": Ref("make"), "k": 1})
        .node("big", big, inputs={"k": 1})
        .node("last", last, inputs={"b": Ref("make"), "xs": Ref("big")})
    )
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    held = RunOutcomes.read(r1.run_dir)
    assert held is not None and held.on_disk == {"root.big"} and "root.make" in held.values
    count.clear()
    seen.clear()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.last")).run()
    assert count == Counter({"last": 1})
    assert type(r2.outcomes["root.make"]) is Box and r2.outcomes["root.make"] == Box(values=[0, 1])
    assert r2.outcomes["root.big"] == list(range(2000))
    assert r2.outcomes == r1.outcomes and r2.outcome == 2000


async def test_readers_report_linked_nodes_as_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    calls = Calls()
    flow = chain(calls)
    off = ObservabilitySettings.disabled()  # no spans: the view reads result.json alone
    r1 = await FlowRunner(flow, ctx(tmp_path, observability_settings=off)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n2", observability_settings=off)).run()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3", observability_settings=off)).run()

    api = Api(tmp_path / "runs")
    tree = {e.path: e for e in api.elements(r3.run_id).walk()}
    assert [p for p, e in tree.items() if e.reused] == ["root.n0", "root.n1", "root.n2"]
    assert (tree["root.n0"].reused_from, tree["root.n0"].origin_run_id) == (r2.run_id, r1.run_id)
    assert (tree["root.n2"].reused_from, tree["root.n2"].origin_run_id) == (r2.run_id, r2.run_id)
    assert tree["root.n0"].status == "completed" and tree["root.n3"].reused is False

    data = build_run_view_data(r3.run_dir)
    els = {e["p"]: e for e in data.model["elements"]}
    assert els["root.n0"].get("r") == 1 and els["root.n0"]["rf"] == r2.run_id and els["root.n0"]["or"] == r1.run_id
    assert "r" not in els["root.n3"]
    assert data.model["run"]["reused"] == 3
    # The node's files, read through the link.
    details = data.details[str(els["root.n0"]["i"])]
    assert json.loads(details["outcome"]) == 1

    assert cli_main(["show", r3.run_id, "--run-root", str(tmp_path / "runs"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["data"]
    assert shown["totals"]["reused"] == 3 and shown["totals"]["executed"] == 1
    assert cli_main(["show", r3.run_id, "--run-root", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert f"from {r2.run_id} (ran in {r1.run_id})" in text

    # The next re-run's plan finds where each node is without reading the node files.
    index = validate_definition(flow, "root")
    plan = ReusePlan(index, PreviousRun.open(tmp_path / "runs", r3.run_id), HierarchyPath("root.n3"))
    where = plan._where("root.n1", "root/n1")
    assert where is not None and (where.dir_run_id, where.origin_run_id) == (r1.run_id, r1.run_id)
    where = plan._where("root.n2", "root/n2")
    assert where is not None and where.dir_run_id == r2.run_id
    assert calls.counter == Counter({"n0": 1, "n1": 1, "n2": 2, "n3": 3})


async def test_a_crashed_link_rerun_reads_and_resumes_from_its_links(tmp_path: Path) -> None:
    """What SIGKILL leaves of a link-mode re-run (tests/test_rerun_fast.py kills one for real):
    links made, but no reused.json or outcomes.json, and no result.json for the run's root."""
    calls = Calls()
    flow = chain(calls, 5)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    for name in ("reused.json", "outcomes.json"):
        (r2.run_dir / ".trace" / name).unlink()
    shutil.rmtree(r2.run_dir / "root" / "n4")
    (r2.run_dir / "root" / "result.json").unlink()

    n1 = reader_result(r2.run_dir, "root.n1")
    assert (n1["reused"], n1["reused_from"], n1["origin_run_id"]) == (True, r1.run_id, r1.run_id)
    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert tree["root.n2"].reused and tree["root.n2"].origin_run_id == r1.run_id

    calls.counter.clear()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id)).run()  # resume
    assert calls.counter == Counter({"n4": 1})
    assert r3.outcomes == r1.outcomes
    assert os.readlink(r3.run_dir / "root/n0") == f"../../{r1.run_id}/root/n0"
    assert os.readlink(r3.run_dir / "root/n3") == f"../../{r2.run_id}/root/n3"
    n3 = reader_result(r3.run_dir, "root.n3")
    assert (n3["reused_from"], n3["origin_run_id"]) == (r2.run_id, r2.run_id)


async def test_copy_mode_is_self_contained(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3", reused_nodes="copy")).run()
    assert not any(p.is_symlink() for p in r2.run_dir.rglob("*"))
    shutil.rmtree(r1.run_dir)  # the earlier run is gone: the copy still reads

    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert tree["root.n1"].reused and tree["root.n1"].origin_run_id == r1.run_id
    assert json.loads((r2.run_dir / "root/n1/outcome.json").read_text()) == 2
    recorded = read_reused(r2.run_dir)
    assert recorded is not None and recorded["root.n1"].dir_run_id == r2.run_id

    # A link-mode re-run of the copy links into the copy, and still names the origin.
    calls.counter.clear()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3")).run()
    assert calls.counter == Counter({"n3": 1})
    assert os.readlink(r3.run_dir / "root/n1") == f"../../{r2.run_id}/root/n1"
    n1 = reader_result(r3.run_dir, "root.n1")
    assert (n1["reused_from"], n1["origin_run_id"]) == (r2.run_id, r1.run_id)
    assert r3.outcomes == r2.outcomes


async def test_a_deleted_origin_makes_its_nodes_execute_again(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    shutil.rmtree(r1.run_dir)  # r2's links dangle now (docs/reruns.md: use "copy" to archive)
    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert tree["root.n0"].status == "unavailable" and tree["root.n0"].origin_run_id == r1.run_id
    calls.counter.clear()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3")).run()
    # n0..n2 are held by the deleted run: nothing to reuse, so they execute; n3 is the start.
    assert calls.counter == Counter({"n0": 1, "n1": 1, "n2": 1, "n3": 1})
    assert r3.outcome == 4


async def test_declared_outcome_files_of_linked_nodes_are_committed(tmp_path: Path) -> None:
    def write(n: int, ctx: NodeContext) -> int:
        (ctx.node_dir / "report.md").write_text(f"report {n}")
        ctx.declare_outcome_file("report.md")
        return n + 1

    calls = Calls()
    flow = FlowDefinition().node("w", write, inputs={"n": 1}).node("z", calls.inc("z"), inputs={"n": Ref("w")})
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    context = ctx(tmp_path, r1.run_id, "root.z")
    r2 = await FlowRunner(flow, context).run()
    assert [(f.repo_path, f.node_path) for f in context.declared_outcome_files] == [("root/w/report.md", "root.w")]
    assert context.declared_outcome_files[0].source == r2.run_dir / "root/w/report.md"  # through the link
    meta = json.loads((r2.run_dir / ".trace/metadata.json").read_text())
    assert "outcome_commit" in meta, meta.get("outcome_commit_error")


async def test_reused_spans_are_marked_alike_in_both_modes(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    attributes: dict[str, dict[str, Any]] = {}
    for mode in ("link", "copy"):
        run = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3", reused_nodes=mode)).run()
        lines = [json.loads(line) for line in (run.run_dir / ".trace/trace.jsonl").read_text().splitlines()]
        spans = [sp for line in lines for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]]
        for span in spans:
            attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
            if attrs.get("reprise.hierarchy_path") == "root.n1":
                assert span["name"] == "node root.n1" and span["parentSpanId"]
                attrs.pop("reprise.run_id")
                attributes[mode] = attrs
    assert attributes["link"] == attributes["copy"]
    assert list(attributes["link"]) == list(attributes["copy"])
    assert attributes["link"]["reprise.reused"] is True
    assert attributes["link"]["reprise.origin_run_id"] == attributes["link"]["reprise.reused_from"] == r1.run_id


async def test_reused_nodes_is_checked(tmp_path: Path) -> None:
    with pytest.raises(RunSetupError, match="reused_nodes must be 'link' or 'copy', not 'hardlink'"):
        RunContext("root", tmp_path, reused_nodes="hardlink")


def test_cli_rerun_takes_reused_nodes(tmp_path: Path) -> None:
    from reprise.cli import build_parser

    args = build_parser().parse_args(["rerun", "run_x", "--from", "a.b", "--reused-nodes", "copy"])
    assert args.reused_nodes == "copy"
    assert build_parser().parse_args(["resume", "run_x"]).reused_nodes == "link"


async def test_reused_nodes_are_traced_one_span_each(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls, 300)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n299")).run()
    assert r2.reused == 299
    lines = [json.loads(line) for line in (r2.run_dir / ".trace/trace.jsonl").read_text().splitlines()]
    per_line = [[sp for rs in line["resourceSpans"] for ss in rs["scopeSpans"] for sp in ss["spans"]] for line in lines]
    reused = [
        sp["name"] for spans in per_line for sp in spans if any(a["key"] == "reprise.reused" for a in sp["attributes"])
    ]
    assert sorted(reused) == sorted(f"node root.n{i}" for i in range(299))
    for line in lines:  # every line is still a whole request with its resource
        assert line["resourceSpans"][0]["resource"]["attributes"]


async def test_the_definition_check_compares_bytes_first_and_parses_when_they_differ(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls, 3)
    index = validate_definition(flow, "root")
    assert index.outline_json() == dump_json(index.outline())  # what runs record, byte for byte
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    recorded = r1.run_dir / ".trace/definition.json"
    assert recorded.read_bytes() == index.outline_json()
    # The same outline written another way (by hand, by an older version): still the same.
    recorded.write_text(json.dumps(json.loads(recorded.read_text())))
    again = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n2")).run()
    assert again.reused == 2
    # A different outline is still refused.
    recorded.write_text(json.dumps({**json.loads(recorded.read_text()), "root.n1": {"type": "flow"}}))
    with pytest.raises(RerunError, match=r"root\.n1 changed"):
        await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n2")).run()


def _outside_node(base: Path, value: int) -> Path:
    """A completed node's directory outside the run root, as a crafted run could point at."""
    node = base / "root" / "n0"
    node.mkdir(parents=True)
    (node / "result.json").write_text(
        json.dumps({"path": "root.n0", "element_type": "node", "status": "completed", "error": "outside"})
    )
    (node / "outcome.json").write_text(json.dumps(value))
    (base / ".trace").mkdir()
    (base / ".trace" / "outcomes.json").write_text(json.dumps({"outcomes": {"root.n0": value}}))
    return node


async def test_a_crafted_reused_json_cannot_point_outside_the_run_root(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    _outside_node(tmp_path / "outside", 999)
    document = json.loads((r2.run_dir / ".trace/reused.json").read_text())
    for group in document["groups"]:
        group["dir_run_id"] = group["origin_run_id"] = "../outside"
    (r2.run_dir / ".trace/reused.json").write_text(json.dumps(document))

    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3")).run()
    assert r3.outcomes == r1.outcomes  # nothing read from outside
    runs = (tmp_path / "runs").resolve()
    for link in (r3.run_dir / "root").iterdir():
        assert link.resolve().is_relative_to(runs), link
    assert read_reused(r2.run_dir) is None  # not a record reprise wrote: the links tell instead


async def test_readers_do_not_follow_a_link_out_of_the_run_root(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    off = ObservabilitySettings.disabled()
    r1 = await FlowRunner(flow, ctx(tmp_path, observability_settings=off)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3", observability_settings=off)).run()
    outside = _outside_node(tmp_path / "outside", 987654321)  # no timestamp holds these digits
    (r2.run_dir / "root/n0").unlink()
    os.symlink(os.path.relpath(outside, r2.run_dir / "root"), r2.run_dir / "root/n0")

    assert PreviousRun(RunDirectory(r2.run_dir)).result(HierarchyPath("root.n0")) is None
    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert tree["root.n0"].status == "unavailable" and tree["root.n0"].error != "outside"
    data = build_run_view_data(r2.run_dir)
    assert "987654321" not in json.dumps(data.details) and "outside" not in json.dumps(data.model)


@pytest.mark.parametrize("mode", ["link", "copy"])
async def test_declared_files_of_reused_nodes_are_committed_after_the_run_root_moved(tmp_path: Path, mode: str) -> None:
    def write(n: int, ctx: NodeContext) -> int:
        (ctx.node_dir / "report.md").write_text(f"report {n}")
        ctx.declare_outcome_file("report.md")
        return n + 1

    calls = Calls()
    flow = FlowDefinition().node("w", write, inputs={"n": 1}).node("z", calls.inc("z"), inputs={"n": Ref("w")})
    before, after = tmp_path / "before" / "proj", tmp_path / "after" / "proj"
    before.mkdir(parents=True)
    r1 = await FlowRunner(flow, ctx(before)).run()
    os.rename(before.parent, after.parent)  # the project and its run root, moved as a whole
    context = ctx(after, r1.run_id, "root.z", reused_nodes=mode)
    r2 = await FlowRunner(flow, context).run()
    assert [f.repo_path for f in context.declared_outcome_files] == ["root/w/report.md"]
    assert Path(context.declared_outcome_files[0].source).read_text() == "report 1"
    repo = after / "runs" / "outcome" / "proj"
    listed = subprocess.run(
        ["git", "--git-dir", str(repo / ".git"), "ls-tree", "-r", "--name-only", f"run/{r2.run_id}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert sorted(listed) == ["root/w/outcome.json", "root/w/report.md", "root/z/outcome.json"]


async def test_declared_files_of_reused_nodes_stay_in_the_reused_node(tmp_path: Path) -> None:
    # A result.json naming a source elsewhere (a run directory from elsewhere) must not make
    # the re-run commit a file from outside the node.
    def write(n: int, ctx: NodeContext) -> int:
        (ctx.node_dir / "report.md").write_text(f"report {n}")
        ctx.declare_outcome_file("report.md")
        return n + 1

    calls = Calls()
    flow = FlowDefinition().node("w", write, inputs={"n": 1}).node("z", calls.inc("z"), inputs={"n": Ref("w")})
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    result_file = r1.run_dir / "root/w/result.json"
    result = json.loads(result_file.read_text())
    result["outcome_files"] = [{"source": str(secret), "repo_path": "root/w/report.md"}]
    result_file.write_text(json.dumps(result))
    (r1.run_dir / ".trace/outcomes.json").unlink()  # the node files are read, as after a crash
    context = ctx(tmp_path, r1.run_id, "root.z")
    await FlowRunner(flow, context).run()
    assert [Path(f.source).read_text() for f in context.declared_outcome_files] == ["report 1"]


async def test_materialize_makes_a_link_rerun_stand_alone(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n2")).run()
    r3 = await FlowRunner(flow, ctx(tmp_path, r2.run_id, "root.n3")).run()  # n2 links into r2
    assert (r3.run_dir / "root/n0").is_symlink()
    runs = str(tmp_path / "runs")
    assert cli_main(["materialize", r3.run_id, "--run-root", runs, "--json"]) == 0
    assert not any(p.is_symlink() for p in r3.run_dir.rglob("*"))
    n0 = json.loads((r3.run_dir / "root/n0/result.json").read_text())
    n2 = json.loads((r3.run_dir / "root/n2/result.json").read_text())
    assert (n0["reused"], n0["reused_from"], n0["origin_run_id"]) == (True, r2.run_id, r1.run_id)
    assert (n2["reused"], n2["reused_from"], n2["origin_run_id"]) == (True, r2.run_id, r2.run_id)
    # Hard links to the same files, not copies.
    assert (r3.run_dir / "root/n0/outcome.json").stat().st_ino == (r1.run_dir / "root/n0/outcome.json").stat().st_ino
    recorded = read_reused(r3.run_dir)
    assert recorded is not None and {n.dir_run_id for n in recorded.values()} == {r3.run_id}
    assert recorded["root.n2"].origin_run_id == r2.run_id

    # The earlier runs can go now: r3 reads alone, and a re-run of it links into it.
    shutil.rmtree(r1.run_dir)
    shutil.rmtree(r2.run_dir)
    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r3.run_id).walk()}
    assert all(tree[f"root.n{i}"].status == "completed" for i in range(4))
    assert tree["root.n0"].reused and tree["root.n0"].origin_run_id == r1.run_id
    calls.counter.clear()
    r4 = await FlowRunner(flow, ctx(tmp_path, r3.run_id, "root.n3")).run()
    assert calls.counter == Counter({"n3": 1})
    assert os.readlink(r4.run_dir / "root/n0") == f"../../{r3.run_id}/root/n0"
    assert r4.outcomes == r3.outcomes
    # Again: nothing to do.
    assert materialize_reused(r3.run_dir) == []


async def test_materialize_names_a_link_that_leads_nowhere(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    shutil.rmtree(r1.run_dir / "root" / "n1")
    with pytest.raises(RunSetupError, match=r"cannot make root\.n1 of .*: its link leads nowhere"):
        materialize_reused(r2.run_dir)
    # n0 (before it) was made a directory; n1 is still the link, nothing half-made.
    assert not (r2.run_dir / "root/n0").is_symlink() and (r2.run_dir / "root/n1").is_symlink()
    assert sorted(p.name for p in (r2.run_dir / "root").iterdir()) == ["n0", "n1", "n2", "n3", "result.json"]


@pytest.mark.parametrize("crash_at", ["second-rename", "unlink", "after-exchange"])
async def test_materialize_after_a_crash_between_its_renames_finishes_the_node(
    tmp_path: Path, crash_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reprise.runners import _reuse as reuse_module

    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    real_rename, real_unlink = os.rename, os.unlink
    if crash_at == "after-exchange":
        if not _can_exchange(tmp_path):
            pytest.skip("this system cannot exchange two paths in one step")
    else:  # the swap in three renames, as where the exchange is not available
        monkeypatch.setattr(reuse_module, "exchange_paths", lambda a, b: False)

    class Killed(BaseException):
        pass

    def rename(src: Any, dst: Any, *a: Any, **kw: Any) -> None:
        if crash_at == "second-rename" and str(src).endswith(".n1.materialized"):
            raise Killed
        real_rename(src, dst, *a, **kw)

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        if crash_at == "unlink" and str(path).endswith(".n1.link"):
            raise Killed
        if crash_at == "after-exchange" and str(path).endswith(".n1.materialized"):
            raise Killed
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Killed):
        materialize_reused(r2.run_dir)
    monkeypatch.undo()
    # Readers do not see the leftovers; the node is there or it is reported missing, never twice.
    hidden = sorted(p.name for p in (r2.run_dir / "root").iterdir() if p.name.startswith("."))
    left = {"second-rename": [".n1.link", ".n1.materialized"], "unlink": [".n1.link"]}
    assert hidden == left.get(crash_at, [".n1.materialized"])
    seen = {e.path for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert seen <= {"root", *(f"root.n{i}" for i in range(4))}
    # The next call finishes what the killed one began and cleans up.
    materialize_reused(r2.run_dir)
    assert sorted(p.name for p in (r2.run_dir / "root").iterdir()) == ["n0", "n1", "n2", "n3", "result.json"]
    assert not any(p.is_symlink() for p in r2.run_dir.rglob("*"))
    recorded = read_reused(r2.run_dir)
    assert recorded is not None and sorted(recorded) == ["root.n0", "root.n1", "root.n2"]
    assert {n.dir_run_id for n in recorded.values()} == {r2.run_id}
    shutil.rmtree(r1.run_dir)
    tree = {e.path: e for e in Api(tmp_path / "runs").elements(r2.run_id).walk()}
    assert all(tree[f"root.n{i}"].status == "completed" for i in range(4)) and tree["root.n1"].reused


def _can_exchange(tmp_path: Path) -> bool:
    from reprise.run._files import exchange_paths

    a, b = tmp_path / ".probe-a", tmp_path / ".probe-b"
    a.write_text("a")
    b.write_text("b")
    try:
        return exchange_paths(str(a), str(b)) and a.read_text() == "b"
    finally:
        a.unlink()
        b.unlink()


@pytest.mark.parametrize("exchange", [True, False])
async def test_materialize_never_leaves_a_moment_without_the_node(
    tmp_path: Path, exchange: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After every step of every swap, each reused node is at its path (a link or a directory).
    # Without the exchange, the three-rename swap has such a moment: the test shows it.
    from reprise.run import _files as files_module
    from reprise.runners import _reuse as reuse_module

    if exchange and not _can_exchange(tmp_path):
        pytest.skip("this system cannot exchange two paths in one step")
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    nodes = [r2.run_dir / "root" / f"n{i}" for i in range(3)]
    missing: list[str] = []

    def check(step: str) -> None:
        missing.extend(f"{p.name} after {step}" for p in nodes if not os.path.lexists(p))

    def watched(name: str, real: Any) -> Any:
        def step(*a: Any, **kw: Any) -> Any:
            out = real(*a, **kw)
            check(name)
            return out

        return step

    monkeypatch.setattr(os, "rename", watched("rename", os.rename))
    monkeypatch.setattr(os, "unlink", watched("unlink", os.unlink))
    swap = watched("exchange", files_module.exchange_paths) if exchange else (lambda a, b: False)
    monkeypatch.setattr(reuse_module, "exchange_paths", swap)
    assert materialize_reused(r2.run_dir) == ["root.n0", "root.n1", "root.n2"]
    monkeypatch.undo()
    assert not any(p.is_symlink() for p in nodes) and all(p.is_dir() for p in nodes)
    if exchange:
        assert missing == []
    else:
        assert "n0 after rename" in missing


async def test_materialize_stopped_by_a_broken_link_records_the_nodes_it_made(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    shutil.rmtree(r1.run_dir / "root" / "n1")
    with pytest.raises(RunSetupError, match="leads nowhere"):
        materialize_reused(r2.run_dir)
    recorded = read_reused(r2.run_dir)
    assert recorded is not None
    # n0 is r2's own directory now (a later re-run links to it there); n1 and n2 are still links.
    assert (recorded["root.n0"].dir_run_id, recorded["root.n1"].dir_run_id) == (r2.run_id, r1.run_id)
    assert recorded["root.n0"].origin_run_id == r1.run_id


async def test_materialize_leaves_a_link_an_executed_node_made_in_its_directory(tmp_path: Path) -> None:
    calls = Calls()
    earlier: list[str] = []

    def keeps_a_link(n: int, node_ctx: NodeContext) -> int:
        # A node's own file: a link into the earlier run (say, a cache), not a reused node.
        if earlier:
            os.symlink(f"../../../{earlier[0]}/root/n0/outcome.json", node_ctx.node_dir / "cached.json")
        return n

    flow = chain(calls).node("own", keeps_a_link, inputs={"n": Ref("n3")})
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    earlier.append(r1.run_id)
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.own")).run()
    assert (r2.run_dir / "root/own/cached.json").is_symlink()
    assert materialize_reused(r2.run_dir) == ["root.n0", "root.n1", "root.n2", "root.n3"]
    assert (r2.run_dir / "root/own/cached.json").is_symlink()


async def test_materialize_refuses_a_run_it_links_into_that_is_outside_the_run_root(tmp_path: Path) -> None:
    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    # The links are reprise's own, but the run they lead into is (now) a link to elsewhere.
    (tmp_path / "elsewhere").mkdir()
    moved = r1.run_dir.rename(tmp_path / "elsewhere" / r1.run_id)
    r1.run_dir.symlink_to(moved)
    with pytest.raises(RunSetupError, match=r"cannot make root\.n0 of .*: its link leads out of the run root"):
        materialize_reused(r2.run_dir)
    assert (r2.run_dir / "root/n0").is_symlink()


async def test_materialize_swaps_in_steps_on_a_python_without_ctypes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ctypes is optional (a Python built without libffi has none): the exchange is then
    # unavailable, not an error that stops materialize.
    import sys

    from reprise.run import _files as files_module

    calls = Calls()
    flow = chain(calls)
    r1 = await FlowRunner(flow, ctx(tmp_path)).run()
    r2 = await FlowRunner(flow, ctx(tmp_path, r1.run_id, "root.n3")).run()
    monkeypatch.setitem(sys.modules, "ctypes", None)  # ``import ctypes`` raises ImportError
    monkeypatch.setattr(files_module, "_renameat2", None)  # not looked up yet in this process
    assert materialize_reused(r2.run_dir) == ["root.n0", "root.n1", "root.n2"]
    nodes = [r2.run_dir / "root" / f"n{i}" for i in range(3)]
    assert all(p.is_dir() and not p.is_symlink() for p in nodes)
