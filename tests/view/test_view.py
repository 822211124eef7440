"""The HTML view: the data read from real run directories and experiment folders, the page's
escaping and content policy, and ``python -m reprise.view``. The browser tests are in
test_view_browser.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reprise.view
from _meeting import meet
from _model_server import serve_models
from reprise import (
    AgentDefinition,
    AgentRunner,
    Computed,
    FlowDefinition,
    FlowRunner,
    Initial,
    NodeContext,
    Ref,
    RunContext,
    RunFailedError,
    Var,
    node,
)
from reprise.errors import RepriseError, RunSetupError
from reprise.nodes import AIModelNode
from reprise.view import (
    RunViewData,
    build_experiment_view_data,
    build_run_view_data,
    cost_of,
    embed_json,
    render_run_view,
    tokens_of,
    write_experiment_view,
    write_run_view,
)

EVIL = "</script><script>window.__pwned = 1</script><img src=x onerror='window.__pwned=2'> \u2028 &amp; <!--"


# -- a real run with everything the view shows ---------------------------------------------------


@node
async def start(n: int, ctx: NodeContext) -> dict[str, Any]:
    ctx.logger.info("starting", n=n)
    # The shape the AI model node writes: usage and cost_usd in result.json.
    ctx.annotate_result(usage={"input_tokens": 100, "output_tokens": 20, "calls": 1}, cost_usd=0.0012)
    with ctx.span("parse", step=1):
        pass
    return {"v": n * 2, "text": EVIL}


@node
async def step(item: int, ctx: NodeContext) -> int:
    ctx.annotate_result(usage={"input_tokens": 10, "output_tokens": 5}, cost_usd=0.0001)
    return item * 10


@node
async def boom(x: int) -> int:
    raise ValueError(f"kaboom {x}")


def demo_flow() -> FlowDefinition:
    left = FlowDefinition().node("s1", meet, inputs={"side": "left"})
    right = FlowDefinition().node("s2", meet, inputs={"side": "right"})
    body = FlowDefinition().node("step", step, inputs={"item": Var("item")})
    return (
        FlowDefinition()
        .node("start", start, inputs={"n": 3})
        .parallel("par", {"left": left, "right": right})
        .for_each("loop", [1, 2, 3], body)
        .node("boom", boom, inputs={"x": 7})
    )


def run_demo(tmp_path: Path, **kwargs: Any) -> Path:
    ctx = RunContext(root_component_id="demo", project_root=tmp_path, outcome_repo=False, **kwargs)
    with pytest.raises(RunFailedError):
        FlowRunner(demo_flow(), ctx).run_sync()
    return ctx.require_run_dir().path


def by_path(data: RunViewData) -> dict[str, dict[str, Any]]:
    return {e["p"]: e for e in data.model["elements"]}


def test_run_data_tree_statuses_timings_and_details(tmp_path: Path) -> None:
    run_dir = run_demo(tmp_path)
    data = build_run_view_data(run_dir)
    els = by_path(data)
    assert data.model["run"]["status"] == "failed"
    assert data.model["run"]["run_id"] == run_dir.name

    # The tree mirrors the definition: iterations and branches included, children in order.
    root = els["demo"]
    assert [data.model["elements"][c]["p"] for c in root["ch"]] == ["demo.start", "demo.par", "demo.loop", "demo.boom"]
    assert els["demo.loop"]["t"] == "loop"
    assert [els[f"demo.loop.{i}"]["t"] for i in range(3)] == ["iteration"] * 3
    assert [data.model["elements"][c]["n"] for c in els["demo.loop"]["ch"]] == ["0", "1", "2"]
    assert els["demo.par.left"]["t"] == "branch"

    # The failure is marked on the node and counted up the tree, with its traceback.
    assert els["demo.boom"]["s"] == "failed"
    assert els["demo.boom"]["er"] == "ValueError: kaboom 7"
    assert root["nf"] == 1 and root["s"] == "failed"
    error = data.details[str(els["demo.boom"]["i"])]["error"]
    assert error["type"] == "ValueError"
    assert "raise ValueError" in error["traceback"]

    # Parallel branches overlap on the time axis; sequential elements do not.
    left, right = els["demo.par.left.s1"], els["demo.par.right.s2"]
    assert left["a"] < right["b"] and right["a"] < left["b"]
    assert els["demo.start"]["b"] <= els["demo.par"]["a"]
    assert all(0 <= e["a"] <= e["b"] <= data.model["span_ms"] for e in els.values() if "a" in e)

    # Tokens and cost: per node, summed up the tree.
    assert els["demo.start"]["tk"] == 120 and els["demo.start"]["c"] == pytest.approx(0.0012)
    assert els["demo.loop"]["tk"] == 45 and els["demo.loop"]["c"] == pytest.approx(0.0003)
    assert data.model["run"]["tokens"] == 165
    assert data.model["run"]["cost"] == pytest.approx(0.0015)

    # Details: input, outcome, logs of the node, and the user span as a row under its node.
    start_details = data.details[str(els["demo.start"]["i"])]
    assert json.loads(start_details["input"]) == {"n": 3}
    assert json.loads(start_details["outcome"]) == {"v": 6, "text": EVIL}
    assert [line["event"] for line in start_details["logs"]] == ["starting"]
    span_row = els["demo.start > parse"]
    assert span_row["t"] == "span" and span_row["u"] == els["demo.start"]["i"]
    # Run-level log lines go to the root.
    assert "run started" in [line["event"] for line in data.details["0"]["logs"]]


def test_ai_model_node_shows_its_messages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The details of an AI model node hold its conversation (system, user, assistant) read from
    request.json and outcome.json, and the page embeds them; the key is in neither."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-view-test-0123456789")
    monkeypatch.setenv("REPRISE_CREDENTIALS", str(tmp_path / "none.toml"))
    with serve_models() as server:
        ask = AIModelNode(
            model="gpt-4o", base_url=server.url + "/v1", system="Be $var{tone}.", prompt="Greet $var{who}."
        )
        flow = FlowDefinition().node("ask", ask, inputs={"tone": "kind", "who": Initial("who")})
        ctx = RunContext(root_component_id="f", project_root=tmp_path, outcome_repo=False, initial_inputs={"who": EVIL})
        run_dir = FlowRunner(flow, ctx).run_sync().run_dir
    data = build_run_view_data(run_dir)
    chat = data.details[str(by_path(data)["f.ask"]["i"])]["chat"]
    assert chat == [
        {"role": "system", "text": "Be kind."},
        {"role": "user", "text": f"Greet {EVIL}."},
        {"role": "assistant", "text": "Hello from the model."},
    ]
    page = write_run_view(run_dir, tmp_path / "run.html").read_text()
    assert _model(page, "reprise-details") == json.loads(json.dumps(data.details))
    assert "sk-view-test" not in page


def test_reused_nodes_and_lineage(tmp_path: Path) -> None:
    first = run_demo(tmp_path)
    second = run_demo(tmp_path, previous_run_id=first.name, start_hierarchy_path="demo.loop")
    third = run_demo(tmp_path, previous_run_id=second.name, start_hierarchy_path="demo.boom")

    data = build_run_view_data(third)
    els = by_path(data)
    assert els["demo.start"]["r"] == 1 and els["demo.start"]["rf"] == second.name
    assert els["demo.loop.0.step"]["r"] == 1
    assert "r" not in els["demo.boom"]
    assert data.model["run"]["reused"] == els["demo"]["nr"] == 6
    assert data.model["run"]["previous_run_id"] == second.name
    assert data.model["run"]["start_hierarchy_path"] == "demo.boom"
    lineage = data.model["lineage"]
    assert [(x["run_id"], x["from_path"], x["found"]) for x in lineage] == [
        (second.name, "demo.boom", True),
        (first.name, "demo.loop", True),
    ]
    # A reused node keeps its earlier outcome in the details.
    assert json.loads(data.details[str(els["demo.start"]["i"])]["outcome"])["v"] == 6


def test_agent_flows_subflows_and_conditionals(tmp_path: Path) -> None:
    @node
    async def count() -> int:
        return 5

    inner = FlowDefinition().node("count", count)
    check = (
        FlowDefinition()
        .subflow("inner", inner)
        .conditional(
            "big",
            Computed(lambda n: n > 3, Ref("inner")),
            FlowDefinition().node("yes", step, inputs={"item": 1}),
            FlowDefinition().node("no", step, inputs={"item": 0}),
        )
    )
    agent = AgentDefinition().flow("check", check)
    ctx = RunContext(root_component_id="agent", project_root=tmp_path, outcome_repo=False)
    AgentRunner(agent, ctx).run_sync()
    data = build_run_view_data(ctx.require_run_dir().path)
    els = by_path(data)
    assert (els["agent"]["t"], els["agent.check"]["t"], els["agent.check.inner"]["t"]) == ("agent", "flow", "subflow")
    assert els["agent.check.big"]["t"] == "conditional"
    assert els["agent.check.big.then"]["t"] == "branch"
    assert els["agent.check.big.then.yes"]["s"] == "completed"
    assert "agent.check.big.else" not in els
    assert json.loads(data.details[str(els["agent.check.big"]["i"])]["fields"]) == {"branch": "then", "condition": True}


CRASHING_FLOW = """
import os, sys
from pathlib import Path
from reprise import FlowDefinition, FlowRunner, RunContext, node

@node
async def fine() -> int:
    return 1

@node
async def crash() -> int:
    os._exit(3)  # the process dies mid-run: no result.json, no span, metadata says running

flow = (FlowDefinition().node("fine", fine)
        .for_each("loop", [1, 2], FlowDefinition().node("crash", crash)))
FlowRunner(flow, RunContext(root_component_id="dies", project_root=Path(sys.argv[1]), outcome_repo=False)).run_sync()
"""


def test_crashed_run_still_reads(tmp_path: Path) -> None:
    script = tmp_path / "crashing.py"
    script.write_text(CRASHING_FLOW)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, check=False)
    assert done.returncode == 3
    (run_dir,) = (tmp_path / "runs").glob("run_*")
    # A torn last line, as a crash during a write would leave.
    with open(run_dir / ".trace" / "trace.jsonl", "a") as f:
        f.write('{"resourceSpans": [{"scopeSp')
    data = build_run_view_data(run_dir)
    els = by_path(data)
    assert data.model["run"]["status"] == "crashed"
    assert els["dies.fine"]["s"] == "completed"
    assert els["dies.loop.0.crash"]["t"] == "node" and els["dies.loop.0.crash"]["s"] == "unfinished"
    assert els["dies.loop.0"]["t"] == "iteration"
    assert els["dies.loop"]["s"] == "unfinished" and els["dies"]["s"] == "unfinished"
    assert json.loads(data.details[str(els["dies.loop.0.crash"]["i"])]["input"]) is None


def test_node_files_are_listed_not_walked(tmp_path: Path) -> None:
    @node
    async def writer(ctx: NodeContext) -> str:
        (ctx.node_dir / "report.txt").write_text("hello")
        (ctx.node_dir / "sub").mkdir()
        (ctx.node_dir / "sub" / "result.json").write_text("{}")
        return "ok"

    ctx = RunContext(root_component_id="files", project_root=tmp_path, outcome_repo=False)
    FlowRunner(FlowDefinition().node("writer", writer), ctx).run_sync()
    data = build_run_view_data(ctx.require_run_dir().path)
    els = by_path(data)
    assert set(els) == {"files", "files.writer"}
    files = data.details[str(els["files.writer"]["i"])]["files"]
    assert [tuple(f) for f in files] == [("report.txt", 5), ("sub/", 0)]


def test_large_values_are_cut(tmp_path: Path) -> None:
    @node
    async def big() -> str:
        return "x" * 10_000

    ctx = RunContext(root_component_id="big", project_root=tmp_path, outcome_repo=False)
    FlowRunner(FlowDefinition().node("big", big), ctx).run_sync()
    data = build_run_view_data(ctx.require_run_dir().path, max_value_bytes=1000)
    outcome = data.details[str(by_path(data)["big.big"]["i"])]["outcome"]
    assert outcome.startswith('"xxx') and len(outcome) < 1100
    assert "cut: 10,003 bytes in outcome.json" in outcome


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(RunSetupError, match="not a run directory"):
        build_run_view_data(tmp_path)


# -- the page --------------------------------------------------------------------------------------


def test_embed_json_cannot_break_out_of_its_script_block() -> None:
    data = {"outcome": EVIL, "nested": [EVIL], "nan": float("nan")}
    text = embed_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"outcome": EVIL, "nested": [EVIL], "nan": None}


def _inline_scripts(page: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", page, flags=re.S)


def test_page_is_self_contained_and_its_policy_admits_only_its_script(tmp_path: Path) -> None:
    page = render_run_view(run_demo(tmp_path))
    # Exactly our three blocks end: the outcome's "</script>" is escaped.
    assert page.lower().count("</script") == 3
    assert "window.__pwned" in page  # still there, as escaped JSON text
    assert "<img src=x" not in page
    # Nothing that could fetch: no src/href to anywhere, no @import, no url() but data:.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "@import" not in page and not re.search(r"url\((?!data:)", page)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in policy
    (script,) = _inline_scripts(page)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy


def test_write_run_view_links_lineage_views_beside_it(tmp_path: Path) -> None:
    first = run_demo(tmp_path)
    second = run_demo(tmp_path, previous_run_id=first.name, start_hierarchy_path="demo.boom")
    out_dir = tmp_path / "views"
    write_run_view(first, out_dir / f"{first.name}.html")
    written = write_run_view(second, out_dir / f"{second.name}.html")
    model = _model(written.read_text(), "reprise-run")
    assert model["links"] == {first.name: f"{first.name}.html"}
    assert model["lineage"][0]["run_id"] == first.name


def _model(page: str, block: str) -> Any:
    found = re.search(rf'<script type="application/json" id="{block}">(.*?)</script>', page, flags=re.S)
    assert found is not None
    return json.loads(found.group(1))


# -- tokens and cost -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "tokens", "cost"),
    [
        ({"usage": {"input_tokens": 7, "output_tokens": 3, "calls": 2}, "cost_usd": 0.5}, 10, 0.5),
        ({"usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 9}}, 9, None),
        ({"tokens": 12, "cost": {"total": 1.25, "currency": "USD"}}, 12, 1.25),
        ({"usage": [{"input_tokens": 1}, {"input_tokens": 2}], "cost": [0.1, 0.2]}, 3, pytest.approx(0.3)),
        ({"tokens": True, "cost": float("nan"), "usage": "lots"}, None, None),
        ({"status": "completed"}, None, None),
    ],
)
def test_tokens_and_cost_fields(result: dict[str, Any], tokens: float | None, cost: float | None) -> None:
    assert tokens_of(result) == tokens
    assert cost_of(result) == cost


# -- experiments -----------------------------------------------------------------------------------


def make_experiment(tmp_path: Path, runs: list[Path], statuses: list[str]) -> Path:
    """An experiment folder in the format of the experiments issue, over real runs."""
    folder = tmp_path / "experiments" / "triage_20250101_120000"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: triage\niterations: 2\nparallel: 4\n")
    lines = []
    for k, (run_dir, status) in enumerate(zip(runs, statuses, strict=True)):
        line: dict[str, Any] = {
            "input_id": f"case-{k // 2}",
            "iteration": k % 2,
            "run_id": run_dir.name,
            "status": status,
            "duration_s": 0.5 + k,
            "outcome": {"answer": k},
            "tokens": 100 * k,
            "cost": 0.01 * k,
        }
        if status != "completed":
            line.update(error_type="ValueError", error_message=f"kaboom {k}")
        lines.append(json.dumps(line))
    # A hostile run id must not name a file outside the views folder; a torn last line is skipped.
    lines.append(json.dumps({"input_id": "evil", "iteration": 0, "run_id": "../../etc/passwd", "status": "failed"}))
    (folder / "runs.jsonl").write_text("\n".join(lines) + '\n{"input_id": "torn')
    (folder / "summary.json").write_text(json.dumps({"total": len(runs), "start": "2025-01-01T12:00:00Z"}))
    return folder


def test_experiment_data_and_run_pages(tmp_path: Path) -> None:
    runs = [run_demo(tmp_path) for _ in range(3)]
    folder = make_experiment(tmp_path, runs, ["completed", "failed", "completed"])
    data = build_experiment_view_data(folder)
    assert data["name"] == "triage"
    assert data["unreadable_lines"] == 1
    figures = data["figures"]
    assert (figures["finished"], figures["successes"], figures["failures"]) == (4, 2, 2)
    assert figures["success_rate"] == 0.5
    assert figures["p50"] == 1.5 and figures["p95"] == 2.5
    assert figures["cost"] == pytest.approx(0.03)
    assert data["runs"][1]["et"] == "ValueError" and data["runs"][1]["em"] == "kaboom 1"

    out = tmp_path / "site" / "triage.html"
    assert write_experiment_view(folder, out, tmp_path / "runs") == out
    rows = _model(out.read_text(), "reprise-experiment")["runs"]
    hrefs = {r["id"]: r.get("href") for r in rows}
    for run_dir in runs:
        assert hrefs[run_dir.name] == f"triage_runs/{run_dir.name}.html"
        page = (out.parent / hrefs[run_dir.name]).read_text()
        assert _model(page, "reprise-run")["back"] == {"href": "../triage.html", "label": "experiment triage"}
    assert hrefs["../../etc/passwd"] is None
    assert sorted(p.name for p in (out.parent / "triage_runs").iterdir()) == sorted(f"{r.name}.html" for r in runs)


@node
async def answer(q: str, ctx: NodeContext) -> str:
    ctx.annotate_result(usage={"input_tokens": 7, "output_tokens": 3}, cost_usd=0.002)
    if q == "bad":
        raise ValueError("no answer")
    return q.upper()


@pytest.mark.anyio
async def test_view_of_a_real_experiment_agrees_with_its_summary(tmp_path: Path) -> None:
    from reprise.experiments import Experiment, LocalExecutor

    flow = FlowDefinition("qa").node("answer", answer, inputs={"q": Initial("q")})
    inputs = [{"id": q, "initial_inputs": {"q": q}} for q in ("good", "bad", "fine")]
    summary = await Experiment(
        flow,
        inputs,
        iterations=2,
        project_root=tmp_path,
        executor=LocalExecutor("inline"),
        outcome_repo=False,
        progress=False,
    ).run()
    folder = Path(summary.path)
    data = build_experiment_view_data(folder)
    figures = data["figures"]
    assert data["name"] == "qa"
    assert (
        (figures["finished"], figures["planned"], figures["successes"], figures["failures"])
        == (
            summary.finished,
            summary.total,
            summary.successes,
            summary.failures,
        )
        == (6, 6, 4, 2)
    )
    assert figures["success_rate"] == pytest.approx(summary.success_rate)
    assert (figures["p50"], figures["p95"]) == (summary.duration_p50_s, summary.duration_p95_s)
    assert figures["tokens"] == summary.tokens == 60
    assert figures["cost"] == pytest.approx(summary.cost_usd)
    bad = [r for r in data["runs"] if r["in"] == "bad"]
    assert [(r["s"], r["et"], r["em"]) for r in bad] == [("failed", "ValueError", "no answer")] * 2
    assert bad[0]["ep"] == "qa.answer"

    out = write_experiment_view(folder, tmp_path / "qa.html", tmp_path / "runs")
    rows = _model(out.read_text(), "reprise-experiment")["runs"]
    assert all((out.parent / row["href"]).is_file() for row in rows)


def test_experiment_run_pages_are_limited_failed_first_and_kept(tmp_path: Path) -> None:
    runs = [run_demo(tmp_path) for _ in range(3)]
    folder = make_experiment(tmp_path, runs, ["completed", "completed", "failed"])
    out = tmp_path / "exp.html"
    write_experiment_view(folder, out, tmp_path / "runs", max_run_views=1)
    assert [p.name for p in (tmp_path / "exp_runs").iterdir()] == [f"{runs[2].name}.html"]
    # Written again: the existing page (newer than its run) is kept, the others are added.
    kept = tmp_path / "exp_runs" / f"{runs[2].name}.html"
    kept.write_text("kept")
    write_experiment_view(folder, out, tmp_path / "runs", max_run_views=None)
    assert kept.read_text() == "kept"
    assert len(list((tmp_path / "exp_runs").iterdir())) == 3


def test_not_an_experiment_folder(tmp_path: Path) -> None:
    with pytest.raises(RepriseError, match="not an experiment folder"):
        build_experiment_view_data(tmp_path)


# -- the command and the module's surface ----------------------------------------------------------


def test_python_m_reprise_view(tmp_path: Path) -> None:
    run_dir = run_demo(tmp_path)
    out = tmp_path / "out" / "page.html"
    done = subprocess.run(
        [sys.executable, "-m", "reprise.view", str(run_dir), "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    assert _model(out.read_text(), "reprise-run")["run"]["run_id"] == run_dir.name

    bad = subprocess.run(
        [sys.executable, "-m", "reprise.view", str(tmp_path)], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert bad.returncode == 1
    assert "not a run directory" in bad.stderr


def test_all_names_public_api() -> None:
    defined_here = {
        name
        for name, value in vars(reprise.view).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "reprise.view"
    }
    assert defined_here <= set(reprise.view.__all__)
    for name in reprise.view.__all__:
        assert hasattr(reprise.view, name)


# -- metrics, alerts, runs and compare data (issue 20) -------------------------------------------


@node
async def logged(n: int, ctx: NodeContext) -> int:
    for s in range(n):
        ctx.log({"loss": 10.0 - s, "tag": "text"}, step=s * 2)
        ctx.metric("width", float(s))
    ctx.alert("Halfway", "loss=5", level="error")
    return n


def logged_run(project: Path, n: int) -> Path:
    ctx = RunContext(root_component_id="m", project_root=project, outcome_repo=False, initial_inputs={"n": n})
    FlowRunner(FlowDefinition().node("logged", logged, inputs={"n": Initial("n")}), ctx).run_sync()
    return ctx.require_run_dir().path


def test_run_view_data_has_metric_series_histograms_and_alerts(tmp_path: Path) -> None:
    run_dir = logged_run(tmp_path, 5)
    model = build_run_view_data(run_dir).model
    # reprise.log: numeric values by step; text values are not charted.
    assert model["metrics"]["series"] == {"loss": [[0, 10.0], [2, 9.0], [4, 8.0], [6, 7.0], [8, 6.0]]}
    (hist,) = model["metrics"]["histograms"]
    assert (hist["name"], hist["path"], hist["count"], hist["sum"], hist["min"], hist["max"]) == (
        "width", "m.logged", 5, 10.0, 0.0, 4.0,
    )  # fmt: skip
    assert sum(hist["buckets"]) == 5 and len(hist["buckets"]) == len(hist["bounds"]) + 1
    (alert,) = model["alerts"]
    assert (alert["level"], alert["title"], alert["text"], alert["path"]) == ("error", "Halfway", "loss=5", "m.logged")


def test_long_series_are_thinned_keeping_both_ends() -> None:
    from reprise.view._metrics import thin

    points = [[float(s), float(s * s)] for s in range(10_001)]
    kept = thin(points, 100)
    assert len(kept) == 100 and kept[0] == points[0] and kept[-1] == points[-1]
    assert thin(points[:50], 100) == points[:50]


def test_runs_and_compare_data(tmp_path: Path) -> None:
    from reprise.view import build_compare_view_data, build_runs_view_data

    first, second = logged_run(tmp_path, 3), logged_run(tmp_path, 4)
    root = tmp_path / "runs"
    data = build_runs_view_data(root)
    assert [r["id"] for r in data["runs"]] == [second.name, first.name]
    assert data["metrics"] == ["loss"] and data["runs"][0]["metrics"] == {"loss": 7.0}
    assert build_runs_view_data(root, metrics=["other"], limit=1)["metrics"] == ["other"]

    compare = build_compare_view_data(root, [first.name, second.name])
    assert [r["config_source"] for r in compare["runs"]] == ["initial inputs", "initial inputs"]
    assert compare["config"] == [{"key": "n", "values": ["3", "4"], "differs": True}]
    assert [len(s["points"]) for s in compare["series"]["loss"]] == [3, 4]
    (outcome,) = compare["outcomes"]
    assert outcome["path"] == "m.logged"
    assert [c["outcome"] for c in outcome["cells"]] == ["3", "4"]
    assert compare["same_outcomes"] == 0
    with pytest.raises(RepriseError, match="two or more runs"):
        build_compare_view_data(root, [first.name])
    with pytest.raises(RunSetupError):
        build_compare_view_data(root, [first.name, "run_20000101_000000_000000"])


def test_cli_view_runs_and_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reprise.cli import main

    first, second = logged_run(tmp_path, 3), logged_run(tmp_path, 4)
    root = str(tmp_path / "runs")
    assert main(["view", "--runs", "--metric", "loss", "--run-root", root, "--json"]) == 0
    runs_page = Path(json.loads(capsys.readouterr().out)["data"]["path"])
    assert runs_page == (tmp_path / "runs" / ".views" / "runs.html").absolute()
    # The run pages sit beside it, where `reprise view RUN_ID` puts them.
    assert (runs_page.parent / f"{first.name}.html").is_file()
    assert main(["view", "--compare", first.name, second.name, "--run-root", root, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["run_ids"] == [first.name, second.name]
    assert Path(data["path"]).name == f"compare_{first.name[-6:]}_{second.name[-6:]}.html"
    assert main(["view", "--compare", first.name, "--run-root", root]) == 2
    assert "two or more runs" in capsys.readouterr().err
    assert main(["view", first.name, "--runs", "--run-root", root]) == 2
    assert main(["view", first.name, "--metric", "loss", "--run-root", root]) == 2


def test_values_without_a_step_are_charted_in_order(tmp_path: Path) -> None:
    """A user_metrics.jsonl line without a step (how a ctx.metric value may be stored) is
    charted in the order recorded, and its histogram is not shown a second time."""
    run_dir = logged_run(tmp_path, 2)
    with open(run_dir / ".trace" / "user_metrics.jsonl", "a") as f:
        for value in (0.5, 0.25):
            f.write(json.dumps({"timestamp": "2025-01-01T00:00:00Z", "step": None, "metrics": {"width": value}}) + "\n")
    metrics = build_run_view_data(run_dir).model["metrics"]
    assert metrics["values"] == {"width": [[1.0, 0.5], [2.0, 0.25]]}
    assert metrics["histograms"] == []
    assert list(metrics["series"]) == ["loss"]
