"""The HTML views in a real browser: Debian's Chromium, headless, driven by Playwright.

No ``playwright install``: Playwright launches /usr/bin/chromium (``.ci/run`` installs it). The
pages are views of real runs made here: a failing node, a parallel block, a loop, nodes reused by
a re-run, and a 10,000-node run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from _meeting import meet
from _model_server import serve_models
from reprise import FlowDefinition, FlowRunner, Initial, NodeContext, RunContext, RunFailedError, Var, node
from reprise.nodes import AIModelNode
from reprise.view import write_experiment_view, write_run_view

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
