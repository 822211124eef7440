"""The HTML views in a real browser: Debian's Chromium, headless, driven by Playwright.

No ``playwright install``: Playwright launches /usr/bin/chromium (``.ci/run`` installs it). The
pages are views of real runs made here: a failing node, a parallel block, a loop, nodes reused by
a re-run, and a 10,000-node run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from pathlib import Path
from typing import Any

import anyio
import pytest

from _meeting import meet
from _model_server import serve_models
from reprise import FlowDefinition, FlowRunner, Initial, NodeContext, RunContext, RunFailedError, Var, node
from reprise.nodes import AIModelNode
from reprise.view import write_compare_view, write_experiment_view, write_run_view, write_runs_view

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"Debian's chromium is not installed at {CHROMIUM} (.ci/run installs it)"
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EVIL = "</script><script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"


# -- runs ----------------------------------------------------------------------------------------


@node
async def start(n: int, ctx: NodeContext) -> dict[str, Any]:
    ctx.logger.info("starting up", n=n)
    ctx.annotate_result(usage={"input_tokens": 1200, "output_tokens": 300, "calls": 1}, cost_usd=0.0123)
    return {"v": n * 2, "note": EVIL}


@node
async def step(item: int) -> int:
    return item * 10


@node
async def boom(x: int) -> int:
    raise ValueError(f"kaboom {x}")


FLOW = (
    FlowDefinition()
    .node("start", start, inputs={"n": 3})
    .parallel(
        "par",
        {
            "left": FlowDefinition().node("s1", meet, inputs={"side": "left"}),
            "right": FlowDefinition().node("s2", meet, inputs={"side": "right"}),
        },
    )
    .for_each("loop", [1, 2, 3], FlowDefinition().node("step", step, inputs={"item": Var("item")}))
    .node("boom", boom, inputs={"x": 1})
)


def run_flow(flow: FlowDefinition, ctx: RunContext) -> None:
    """Run in a thread of its own: Playwright's sync API keeps an event loop running in this
    one, and an event loop cannot be started inside another."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(FlowRunner(flow, ctx).run_sync).result()


def failing_run(project: Path, **kwargs: Any) -> Path:
    ctx = RunContext(root_component_id="demo", project_root=project, outcome_repo=False, **kwargs)
    with pytest.raises(RunFailedError):
        run_flow(FLOW, ctx)
    return ctx.require_run_dir().path


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Views of a failing run, of its re-run from ``demo.loop`` (so ``start`` and the parallel
    block are reused), and of an experiment over three runs."""
    project = tmp_path_factory.mktemp("project")
    first = failing_run(project)
    rerun = failing_run(project, previous_run_id=first.name, start_hierarchy_path="demo.loop")
    views = project / "views"
    out = {
        "first": write_run_view(first, views / f"{first.name}.html"),
        "rerun": write_run_view(rerun, views / f"{rerun.name}.html"),
    }
    experiment = experiment_folder(project)
    out["experiment"] = write_experiment_view(experiment, views / "exp.html", project / "runs")
    return out


@node
async def answer(q: str) -> str:
    if q == "bad":
        raise ValueError("no answer")
    return q.upper()


def experiment_folder(project: Path) -> Path:
    """A real experiment: three inputs, two iterations each, one input failing."""
    from reprise.experiments import Experiment, LocalExecutor

    flow = FlowDefinition("qa").node("answer", answer, inputs={"q": Initial("q")})
    experiment = Experiment(
        flow,
        [{"id": q, "initial_inputs": {"q": q}} for q in ("good", "bad", "fine")],
        iterations=2,
        project_root=project,
        executor=LocalExecutor("inline"),
        outcome_repo=False,
        progress=False,
    )
    with ThreadPoolExecutor(1) as pool:
        summary = pool.submit(anyio.run, experiment.run).result()
    return Path(summary.path)


# -- the browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium with a fresh profile."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


class Opened:
    """A page opened on a view, with the errors its scripts raised."""

    def __init__(self, browser: Any, file: Path) -> None:
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", lambda msg: self.errors.append(msg.text) if msg.type == "error" else None)
        self.page.goto(file.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready=true]")

    def dom_size(self) -> int:
        return int(self.page.evaluate("document.getElementsByTagName('*').length"))


@pytest.fixture
def open_page(browser: Any) -> Iterator[Any]:
    opened: list[Opened] = []

    def open_(file: Path) -> Opened:
        page = Opened(browser, file)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        page.page.close()


# -- tests ---------------------------------------------------------------------------------------


def test_run_page_marks_failure_and_reuse_and_shows_details(
    pages: dict[str, Path], open_page: Any, tmp_path: Path
) -> None:
    view = open_page(pages["rerun"])
    page = view.page
    assert page.inner_text("#run-status") == "failed"
    # Lineage: the run this one re-ran from, and from which path.
    lineage = page.inner_text("#lineage")
    assert pages["first"].stem in lineage and "demo.loop" in lineage
    # The failed node is marked, and so is every reused node.
    failed = page.locator('[data-path="demo.boom"]')
    assert failed.get_attribute("data-status") == "failed"
    assert "failed" in (failed.get_attribute("class") or "").split()
    for path in ("demo.start", "demo.par.left.s1", "demo.par.right.s2"):
        row = page.locator(f'[data-path="{path}"]')
        assert row.get_attribute("data-reused") == "true"
        assert row.locator(".mark.reused").inner_text() == "reused"
    assert page.get_attribute('[data-path="demo.boom"]', "data-reused") is None

    # Selecting a node shows its outcome (the hostile string as plain text), tokens and cost.
    page.click('[data-path="demo.start"]')
    assert page.get_attribute("#details", "data-selected") == "demo.start"
    assert json.loads(page.inner_text("#details pre.outcome")) == {"v": 6, "note": EVIL}
    details = page.inner_text("#details")
    assert "1,500" in details or "1500" in details
    assert "$0.0123" in details
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#details img").count() == 0

    # The failed node: error, traceback and its log line.
    page.click('[data-path="demo.boom"]')
    assert page.inner_text("#details .err-head") == "ValueError: kaboom 1"
    assert 'raise ValueError(f"kaboom {x}")' in page.inner_text("#details pre.traceback")
    assert "node failed" in page.inner_text("#details .logs")
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)
    assert view.errors == []


def test_ai_model_node_shows_its_messages(open_page: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AI model node's details show the conversation as chat messages, role and text, with
    the hostile prompt as plain text."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-view-test-0123456789")
    monkeypatch.setenv("REPRISE_CREDENTIALS", str(tmp_path / "none.toml"))
    with serve_models() as server:
        ask = AIModelNode(model="gpt-4o", base_url=server.url + "/v1", system="Be brief.", prompt="Say $var{what}.")
        ctx = RunContext(root_component_id="f", project_root=tmp_path, outcome_repo=False)
        run_flow(FlowDefinition().node("ask", ask, inputs={"what": EVIL}), ctx)
    view = open_page(write_run_view(ctx.require_run_dir().path, tmp_path / "ai.html"))
    page = view.page
    page.click('[data-path="f.ask"]')
    messages = page.locator("#details .chat .msg")
    assert messages.count() == 3
    shown = [(m.locator(".role").inner_text().lower(), m.locator("pre").inner_text()) for m in messages.all()]
    assert shown == [
        ("system", "Be brief."),
        ("user", f"Say {EVIL}."),
        ("assistant", "Hello from the model."),
    ]
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(tmp_path / "ai.png"), full_page=True)
    assert view.errors == []


def test_waterfall_shows_parallel_branches_overlapping(pages: dict[str, Path], open_page: Any) -> None:
    page = open_page(pages["first"]).page
    left = page.locator('[data-path="demo.par.left.s1"] .bar').bounding_box()
    right = page.locator('[data-path="demo.par.right.s2"] .bar').bounding_box()
    first = page.locator('[data-path="demo.start"] .bar').bounding_box()
    assert left is not None and right is not None and first is not None
    # The two branches share most of their time span; the node before them ends before both.
    overlap = min(left["x"] + left["width"], right["x"] + right["width"]) - max(left["x"], right["x"])
    assert overlap > 0.5 * min(left["width"], right["width"]) > 0
    assert first["x"] + first["width"] <= min(left["x"], right["x"]) + 1
    # The concurrency overview needs two lanes for them.
    assert int(page.get_attribute("#overview", "data-lanes") or 0) >= 2

    # Loops start collapsed: their iterations get rows only when opened.
    assert page.locator('[data-path="demo.loop.0"]').count() == 0
    page.click('[data-path="demo.loop"] .twisty')
    assert page.locator('[data-path^="demo.loop."]').count() == 3
    page.click('[data-path="demo.loop.1"] .twisty')
    page.click('[data-path="demo.loop.1.step"]')
    assert page.inner_text("#details pre.outcome").strip() == "20"


def test_pages_make_no_network_request(pages: dict[str, Path], open_page: Any, browser: Any) -> None:
    seen: list[str] = []

    def watch(page: Any) -> None:
        page.on("request", lambda request: seen.append(request.url))

    # The watch works: a page that does load something is seen doing it.
    control = browser.new_page()
    watch(control)
    control.set_content('<img src="http://127.0.0.1:9/pixel.png">')
    control.close()
    assert any(url.startswith("http://127.0.0.1:9/") for url in seen)
    seen.clear()

    for name in ("rerun", "experiment"):
        page = browser.new_page()
        watch(page)
        page.goto(pages[name].resolve().as_uri())
        page.wait_for_selector("body[data-ready=true]")
        if name == "rerun":
            for selector in ('[data-path="demo.start"]', '[data-path="demo.boom"]', "text=Expand all", "#zoom"):
                page.click(selector)
            # Even a script that tries cannot reach out: the page's policy forbids any fetch.
            blocked = page.evaluate("fetch('http://127.0.0.1:9/x').then(() => 'fetched', () => 'blocked')")
            assert blocked == "blocked"
        page.close()
        assert seen == [pages[name].resolve().as_uri()], seen
        seen.clear()


def test_experiment_page_table_charts_and_links(pages: dict[str, Path], open_page: Any, tmp_path: Path) -> None:
    view = open_page(pages["experiment"])
    page = view.page
    assert page.inner_text("#card-total .v") == "6"
    assert page.inner_text("#card-rate .v") == "66.7%"
    assert page.locator("#chart-success rect").count() >= 3
    assert page.locator("#chart-duration rect").count() >= 2
    assert page.locator("#runs-rows .rrow").count() == 6
    page.click('[data-filter="failed"]')
    assert page.locator("#runs-rows .rrow").count() == 2
    assert page.inner_text("#runs-count") == "2 of 6 runs"
    # The input's text and the outcome have columns; errors are grouped by type.
    page.click('[data-filter="all"]')
    good = page.locator('#runs-rows .rrow:has(.input-text:text-is("good"))')
    assert good.count() == 2
    assert good.first.locator(".outcome-cell").inner_text() == '"GOOD"'
    group = page.locator('#error-groups tr.error-group[data-type="ValueError"]')
    assert group.locator("td").nth(1).inner_text() == "2"
    assert "no answer" in group.inner_text()
    group.locator("a").click()
    assert page.locator("#runs-rows .rrow").count() == 2
    assert page.inner_text("#runs-count") == "2 of 6 runs (ValueError)"
    page.screenshot(path=str(tmp_path / "experiment.png"), full_page=True)
    # A row opens its run's page, which links back.
    page.locator("#runs-rows .rrow a.run-link").first.click()
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#run-status") == "failed"
    assert page.get_attribute("#back", "href") == "../exp.html"
    assert view.errors == []


# -- scale -----------------------------------------------------------------------------------------


@node(thread=False)
def tick(item: int) -> int:
    if item == 9_999:
        raise RuntimeError("the last one fails")
    return item


@pytest.fixture(scope="module")
def big_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10,000-node run: a loop whose last iteration fails."""
    project = tmp_path_factory.mktemp("big")
    flow = FlowDefinition().for_each(
        "loop", list(range(10_000)), FlowDefinition().node("tick", tick, inputs={"item": Var("item")})
    )
    # No git commit of 10,000 outcomes: the view does not read the outcome repository.
    ctx = RunContext(root_component_id="big", project_root=project, outcome_repo=False)
    with pytest.raises(RunFailedError):
        run_flow(flow, ctx)
    run_dir = ctx.require_run_dir().path
    return write_run_view(run_dir, project / "big.html")


@pytest.mark.slow
def test_10k_node_run_opens_with_a_small_dom(big_page: Path, open_page: Any, tmp_path: Path) -> None:
    view = open_page(big_page)
    page = view.page
    initial = view.dom_size()
    # 10,000 nodes and 10,000 iterations, yet only the rows in sight exist.
    assert initial < 1_000, initial
    assert page.locator("#rows .row").count() < 80
    # The way to the failure is open; "Next failure" brings it into view and selects it.
    page.click("#next-failure")
    row = page.locator('[data-path="big.loop.9999.tick"]')
    assert row.get_attribute("data-status") == "failed"
    assert row.is_visible()
    assert page.inner_text("#details .err-head") == "RuntimeError: the last one fails"
    # Find by path: the match is brought into view and selected.
    page.fill(".toolbar input", "loop.5000.tick")
    page.press(".toolbar input", "Enter")
    assert page.locator('#rows [data-path="big.loop.5000.tick"]').is_visible()
    assert page.get_attribute("#details", "data-selected") == "big.loop.5000.tick"
    # Everything expanded: still a window of rows.
    page.click("text=Expand all")
    assert page.locator("#rows .row").count() < 80
    page.evaluate("document.getElementById('rows').scrollTop = 0")
    page.wait_for_selector('#rows [data-path="big.loop.0.tick"]')
    assert view.dom_size() < 1_500
    page.screenshot(path=str(tmp_path / "big.png"))
    assert view.errors == []


# -- metrics, alerts, outcomes as diffs and Markdown (issues 20 and 23) --------------------------

DIFF = """diff --git a/app.py b/app.py
--- a/app.py
+++ b/app.py
@@ -1,3 +1,3 @@
 import os
-print("old")
+print("new")
+print("more")
"""
MARKDOWN = (
    "# Report\n\nAll **good** here, see `app.py`.\n\n- one\n- two\n- three\n\n<script>window.__pwned = 3</script>\n"
)
STEPS = 7


@node
async def train(ctx: NodeContext) -> float:
    for s in range(STEPS):
        ctx.log({"loss": 1.0 / (s + 1), "note": "text is not charted"})
        ctx.metric("latency", 0.1 * (s + 1))
    ctx.alert("Loss plateau", "loss=0.14 at step 6; try a lower learning rate", level="warn")
    return 0.14


@node
async def patch() -> str:
    return DIFF


@node
async def report(ctx: NodeContext) -> str:
    source = ctx.node_dir.parent / "report-source.csv"
    source.write_text("a,b\n1,2\n")
    ctx.declare_outcome_file(source, name="tables/report.csv")
    return MARKDOWN


TRACKED = FlowDefinition().node("train", train).node("patch", patch).node("report", report)


@pytest.fixture(scope="module")
def tracked_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("tracked")
    ctx = RunContext(root_component_id="t", project_root=project, outcome_repo=False)
    run_flow(TRACKED, ctx)
    run_dir = ctx.require_run_dir().path
    return write_run_view(run_dir, project / "views" / f"{run_dir.name}.html")


def test_run_page_charts_metrics_and_shows_alerts(tracked_page: Path, open_page: Any, tmp_path: Path) -> None:
    view = open_page(tracked_page)
    page = view.page
    # reprise.log: one chart per numeric metric, one point per step.
    charts = page.locator("#metric-charts .metric-chart")
    assert charts.count() == 1
    assert charts.first.get_attribute("data-metric") == "loss"
    assert charts.first.locator("circle.pt").count() == STEPS
    assert charts.first.locator("g.series").get_attribute("data-points") == str(STEPS)
    # ctx.metric: its distribution, with every value counted.
    assert page.locator("#node-metric-charts .hist").count() == 1  # reprise.log values are not repeated
    hist = page.locator('#node-metric-charts [data-metric="latency"]')
    assert "count 7" in hist.inner_text()
    counts = [int(t.text_content().rsplit(": ", 1)[1]) for t in hist.locator("rect title").all()]
    assert sum(counts) == STEPS
    # The alert, with its level; its path selects the node.
    alert = page.locator("#details .alert")
    assert alert.count() == 1
    assert alert.get_attribute("data-level") == "warn"
    assert alert.locator(".badge").inner_text() == "warn"
    assert "Loss plateau" in alert.inner_text() and "lower learning rate" in alert.inner_text()
    alert.locator("a").click()
    sync_api.expect(page.locator("#details")).to_have_attribute("data-selected", "t.train")
    page.screenshot(path=str(tmp_path / "tracked.png"), full_page=True)
    assert view.errors == []


def test_selection_and_hash_stay_in_sync(tracked_page: Path, open_page: Any, browser: Any) -> None:
    page = open_page(tracked_page).page
    page.click('[data-path="t.patch"]')
    assert page.evaluate("location.hash") == "#t.patch"
    # The other way: a changed hash selects.
    page.evaluate("location.hash = '#t.report'")
    sync_api.expect(page.locator("#details")).to_have_attribute("data-selected", "t.report")
    assert "selected" in (page.get_attribute('[data-path="t.report"]', "class") or "").split()
    # A link opened elsewhere shows what its sender saw.
    url = page.evaluate("location.href")
    other = browser.new_page()
    try:
        other.goto(url)
        other.wait_for_selector("body[data-ready=true]")
        assert other.get_attribute("#details", "data-selected") == "t.report"
    finally:
        other.close()
    # Back to the summary: the hash is cleared.
    page.click("#show-summary")
    assert page.evaluate("location.hash") == ""
    assert page.get_attribute("#details", "data-selected") is None


def test_each_element_offers_its_rerun_command(tracked_page: Path, open_page: Any) -> None:
    view = open_page(tracked_page)
    page = view.page
    page.click('[data-path="t.patch"]')
    run_id = tracked_page.stem
    assert page.inner_text("#rerun-command") == f"reprise rerun {run_id} --from t.patch"
    page.click("#details .rerun button.copy")
    sync_api.expect(page.locator("#details .rerun button.copy")).to_have_text("copied")
    assert view.errors == []


def test_diff_and_markdown_outcomes_are_rendered_safely(tracked_page: Path, open_page: Any) -> None:
    view = open_page(tracked_page)
    page = view.page
    page.click('[data-path="t.patch"]')
    diff = page.locator("#details pre.diff")
    assert [line.inner_text().strip() for line in diff.locator(".add").all()] == ['+print("new")', '+print("more")']
    assert [line.inner_text().strip() for line in diff.locator(".del").all()] == ['-print("old")']
    assert diff.locator(".hunk").count() == 1

    page.click('[data-path="t.report"]')
    md = page.locator("#details .md")
    assert md.locator("h1").inner_text() == "Report"
    assert md.locator("strong").inner_text() == "good"
    assert md.locator("code").inner_text() == "app.py"
    assert md.locator("li").count() == 3
    # Markup in an outcome stays text: no element made, no script run.
    assert md.locator("script").count() == 0
    assert "<script>window.__pwned = 3</script>" in md.inner_text()
    assert page.evaluate("window.__pwned") is None
    # The raw JSON is one click away.
    page.click("#details .rendered-box >> xpath=.. >> button")
    assert json.loads(page.inner_text("#details pre.outcome")) == MARKDOWN
    # The node's files/, with their sizes.
    files = page.inner_text("#details table.files")
    assert "files/tables/report.csv" in files and "8 bytes" in files
    assert view.errors == []


def _overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return a["x"] < b["x"] + b["width"] - 0.5 and b["x"] < a["x"] + a["width"] - 0.5


FITS = "(selector) => [...document.querySelectorAll(selector)].every((e) => e.scrollWidth <= e.clientWidth)"
TEXT_WIDTH = "(t) => { const r = new Range(); r.selectNodeContents(t); return r.getBoundingClientRect().width }"


def test_run_page_is_usable_at_900_px(pages: dict[str, Path], browser: Any, tmp_path: Path) -> None:
    """At 900 px the column heads, the axis labels, the waterfall and the details panel neither
    overlap nor are cut."""
    page = browser.new_page()
    page.set_viewport_size({"width": 900, "height": 800})
    try:
        page.goto(pages["first"].resolve().as_uri())
        page.wait_for_selector("body[data-ready=true]")
        page.screenshot(path=str(tmp_path / "run-900.png"))
        heads = [box for box in (d.bounding_box() for d in page.locator("#grid-head > div").all()) if box]
        assert len(heads) == 5
        for left, right in pairwise(heads):
            assert left["x"] + left["width"] <= right["x"] + 0.5
        assert page.evaluate(FITS, "#grid-head > div:not(.axis)"), "a column title is cut"
        axis = heads[4]
        ticks = page.locator("#grid-head .tick").all()
        assert len(ticks) >= 2
        ends = []
        for tick in ticks:
            box = tick.bounding_box()
            assert box is not None
            assert axis["x"] - 0.5 <= box["x"] and box["x"] + box["width"] <= axis["x"] + axis["width"] + 0.5
            ends.append((box["x"], box["x"] + 3 + tick.evaluate(TEXT_WIDTH)))
        for (_, label_end), (next_start, _) in pairwise(ends):
            assert label_end <= next_start, "axis labels overlap"
        # The tree and the details side by side, neither over the other nor off the page.
        tree = page.locator("#tree-pane").bounding_box()
        details = page.locator("#details").bounding_box()
        assert tree is not None and details is not None
        assert not _overlaps(tree, details) and details["x"] + details["width"] <= 900.5
        track = page.locator('[data-path="demo.boom"] .track').bounding_box()
        assert track is not None and track["x"] + track["width"] <= tree["x"] + tree["width"] + 0.5
        assert page.evaluate(FITS, "#details"), "the summary is wider than its panel"
        page.click('[data-path="demo.boom"]')
        assert page.evaluate(FITS, "#details"), "the details are wider than their panel"
        page.screenshot(path=str(tmp_path / "run-900-selected.png"))
    finally:
        page.close()


# -- the runs page and the compare page (issue 20) ------------------------------------------------


@node
async def fit(lr: float, ctx: NodeContext) -> dict[str, Any]:
    for s in range(4):
        ctx.log({"loss": 1.0 / (s + 1) + lr})
    if lr > 1:
        raise ValueError("diverged")
    return {"lr": lr}


@node
async def constant() -> str:
    return "same everywhere"


FIT = FlowDefinition("fit").node("constant", constant).node("fit", fit, inputs={"lr": Initial("lr")})


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Three runs of one flow under one run root, oldest first, each with a config in its
    metadata: lr 0.1 and 0.01 complete, lr 5 fails."""
    project = tmp_path_factory.mktemp("root")
    ids = []
    for lr in (0.1, 0.01, 5.0):
        ctx = RunContext(root_component_id="fit", project_root=project, outcome_repo=False, initial_inputs={"lr": lr})
        if lr > 1:
            with pytest.raises(RunFailedError):
                run_flow(FIT, ctx)
        else:
            run_flow(FIT, ctx)
        run_dir = ctx.require_run_dir().path
        # A run's config, as reprise.init(config=...) records it.
        meta_file = run_dir / ".trace" / "metadata.json"
        meta = json.loads(meta_file.read_text())
        meta["config"] = {"optimizer": {"lr": lr, "name": "sgd"}, "epochs": 4}
        meta_file.write_text(json.dumps(meta))
        ids.append(run_dir.name)
    return project / "runs", ids


def test_runs_page_lists_runs_newest_first_with_metrics(
    run_root: tuple[Path, list[str]], open_page: Any, tmp_path: Path
) -> None:
    root, ids = run_root
    view = open_page(write_runs_view(root, tmp_path / "runs.html", metrics=["loss"]))
    page = view.page
    rows = page.locator("#runs-table tbody tr")
    assert [r.get_attribute("data-run") for r in rows.all()] == ids[::-1]
    first = page.locator(f'#runs-table tr[data-run="{ids[0]}"]')
    assert first.locator("td.metric").inner_text() == "0.35"  # the last step: 1/4 + 0.1
    assert page.locator(f'#runs-table tr[data-run="{ids[2]}"]').get_attribute("data-status") == "failed"
    # Filters: by status and by text.
    page.click('[data-filter="failed"]')
    assert rows.count() == 1 and page.inner_text("#runs-count") == "1 of 3 runs"
    page.click('[data-filter="all"]')
    page.fill("#runs-filter", ids[1][-6:])
    assert [r.get_attribute("data-run") for r in rows.all()] == [ids[1]]
    page.fill("#runs-filter", "")
    # Two runs picked: the command that compares them.
    for run_id in ids[:2]:
        page.locator(f'#runs-table tr[data-run="{run_id}"] input[type=checkbox]').check()
    command = page.inner_text("#compare-command code")
    assert command.startswith("reprise view --compare ") and ids[0] in command and ids[1] in command
    # Each row links to its run's page.
    page.locator(f'#runs-table tr[data-run="{ids[2]}"] a.run-link').click()
    page.wait_for_selector("body[data-ready=true]")
    assert page.inner_text("#run-status") == "failed"
    page.go_back()
    page.wait_for_selector("body[data-ready=true]")
    page.screenshot(path=str(tmp_path / "runs.png"), full_page=True)
    assert view.errors == []


def test_compare_page_overlays_metrics_and_lists_differences(
    run_root: tuple[Path, list[str]], open_page: Any, tmp_path: Path
) -> None:
    root, ids = run_root
    view = open_page(write_compare_view(root, ids, tmp_path / "compare.html"))
    page = view.page
    # One chart per metric, one line per run, one point per step.
    chart = page.locator('#compare-charts [data-metric="loss"]')
    series = chart.locator("g.series")
    assert series.count() == 3
    assert [s.get_attribute("data-points") for s in series.all()] == ["4", "4", "4"]
    assert chart.locator("circle.pt").count() == 12
    # Configs side by side: the key that differs is marked, the one alike is not shown.
    assert page.locator('#compare-config tr.differs[data-key="optimizer.lr"]').count() == 1
    assert page.locator('#compare-config tr[data-key="optimizer.name"]').count() == 0
    page.uncheck("#only-differences")
    assert page.locator('#compare-config tr[data-key="optimizer.name"]').count() == 1
    # The outcome that differs is listed; the one that is the same everywhere is not.
    differing = page.locator("#compare-outcomes .outcome-diff")
    assert [d.get_attribute("data-path") for d in differing.all()] == ["fit.fit"]
    cells = differing.first.inner_text()
    assert '"lr": 0.1' in cells and '"lr": 0.01' in cells and "failed" in cells
    assert "2 node outcome(s) are the same" not in page.inner_text("body")
    assert "1 node outcome(s) are the same in every run." in page.inner_text("body")
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert view.errors == []
