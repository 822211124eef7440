"""reprise.log / reprise.alert: where they write, which run they find, `since`, webhooks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest

import reprise
from reprise import FlowDefinition, FlowRunner, Initial, NodeContext, Ref, RepriseError, RunContext
from reprise._api import Api
from reprise.run._status import RunStatus
from reprise.tracking import (
    AlertLevel,
    AlertSettings,
    current_run,
    parse_instant,
    set_alert_settings,
    wait_for_webhooks,
    webhook_format,
)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _metric_names(run_dir: Path) -> set[str]:
    names: set[str] = set()
    for line in _lines(run_dir / ".trace" / "metrics.jsonl"):
        for rm in line["resourceMetrics"]:
            for sm in rm["scopeMetrics"]:
                names.update(m["name"] for m in sm["metrics"])
    return names


def _context(tmp_path: Path, **kwargs: Any) -> RunContext:
    return RunContext(root_component_id="flow", project_root=tmp_path, outcome_repo=False, **kwargs)


# -- writing from nodes ---------------------------------------------------------------------------


def _train(epochs: int) -> float:
    """A sync node (it runs in a worker thread): the current run must still be found."""
    loss = 10.0
    for _ in range(epochs):
        loss /= 2
        reprise.log({"loss": loss, "phase": "train"})
    if loss < 2:
        reprise.alert("Converged", f"loss={loss:.3f} after {epochs} epochs", level=reprise.AlertLevel.INFO)
    return loss


async def _evaluate(loss: float, ctx: NodeContext) -> str:
    ctx.log({"val_loss": loss * 1.5}, step=100)
    ctx.alert("Overfitting", f"val_loss={loss * 1.5:.3f}", level="warn")
    reprise.alert("Diverged", "val_loss too high", level=AlertLevel.ERROR)
    return "done"


@pytest.mark.anyio
async def test_node_metrics_and_alerts_reach_files_otel_and_logs(tmp_path: Path) -> None:
    flow = (
        FlowDefinition()
        .node("train", _train, inputs={"epochs": Initial("epochs")})
        .node("evaluate", _evaluate, inputs={"loss": Ref("train")})
    )
    ctx = _context(tmp_path, initial_inputs={"epochs": 3})
    result = await FlowRunner(flow, ctx).run()
    assert result.ok
    trace = result.run_dir / ".trace"

    metrics = _lines(trace / "user_metrics.jsonl")
    assert [m["step"] for m in metrics] == [0, 1, 2, 100]  # automatic steps, then an explicit one
    assert [m["metrics"].get("loss") for m in metrics[:3]] == [5.0, 2.5, 1.25]
    assert {m["hierarchy_path"] for m in metrics} == {"flow.train", "flow.evaluate"}
    assert all(m["run_id"] == result.run_id for m in metrics)

    alerts = _lines(trace / "alerts.jsonl")
    assert [(a["title"], a["level"], a["hierarchy_path"]) for a in alerts] == [
        ("Converged", "info", "flow.train"),
        ("Overfitting", "warn", "flow.evaluate"),
        ("Diverged", "error", "flow.evaluate"),
    ]
    assert alerts[0]["text"] == "loss=1.250 after 3 epochs"

    # OpenTelemetry: numeric values became histograms; the string 'phase' did not.
    names = _metric_names(result.run_dir)
    assert {"loss", "val_loss"} <= names
    assert "phase" not in names

    # Log events, at the alert's level, bound to the node (with its trace and span ids).
    logs = _lines(trace / "logs.jsonl")
    alert_logs = [line for line in logs if line["event"] == "alert"]
    assert [(line["level"], line["alert_title"]) for line in alert_logs] == [
        ("info", "Converged"),
        ("warning", "Overfitting"),
        ("error", "Diverged"),
    ]
    assert all(line["hierarchy_path"] == "flow.evaluate" and line["span_id"] for line in alert_logs[1:])
    assert any(line["event"] == "metrics" and line.get("metric.loss") == 5.0 for line in logs)


def _branch_alert(name: str) -> str:
    reprise.alert(f"from {name}", level="warn")
    return name


async def _async_branch(name: str) -> str:
    await anyio.sleep(0.01)  # let the other branch interleave
    reprise.alert(f"from {name}", level="warn")
    return name


@pytest.mark.anyio
async def test_parallel_branches_and_concurrent_runs_never_mix(tmp_path: Path) -> None:
    def flow_for(tag: str) -> FlowDefinition:
        return FlowDefinition().parallel(
            "fan",
            {
                "left": FlowDefinition().node("a", _async_branch, inputs={"name": f"{tag}-left"}),
                "right": FlowDefinition().node("b", _branch_alert, inputs={"name": f"{tag}-right"}),
            },
        )

    results: dict[str, Any] = {}

    async def one(tag: str) -> None:
        ctx = RunContext(root_component_id="flow", project_root=tmp_path, run_root=tmp_path / tag, outcome_repo=False)
        results[tag] = await FlowRunner(flow_for(tag), ctx).run()

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "x")
        tg.start_soon(one, "y")
    for tag in ("x", "y"):
        alerts = _lines(results[tag].run_dir / ".trace" / "alerts.jsonl")
        assert sorted((a["title"], a["hierarchy_path"]) for a in alerts) == [
            (f"from {tag}-left", "flow.fan.left.a"),
            (f"from {tag}-right", "flow.fan.right.b"),
        ]
    assert current_run() is None


def test_outside_a_run_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RepriseError, match="no current run"):
        reprise.log({"x": 1})
    with pytest.raises(RepriseError, match="no current run"):
        reprise.alert("nothing to attach to")
    ctx = _context(tmp_path)
    with pytest.raises(RepriseError, match="not set up"):
        reprise.log({"x": 1}, run=ctx)
    ctx.setup_run()
    with pytest.raises(RepriseError, match="non-empty"):
        reprise.log({}, run=ctx)
    with pytest.raises(RepriseError, match="unknown alert level"):
        reprise.alert("t", level="catastrophic", run=ctx)
    ctx.complete_run()


def test_code_around_a_run(tmp_path: Path) -> None:
    flow = FlowDefinition().node("one", lambda: 1)
    with _context(tmp_path) as ctx:
        assert current_run() is ctx
        reprise.log({"before": 1})  # found through `with RunContext(...)`
        FlowRunner(flow, ctx).run_sync()
        reprise.alert("inside the block", level="info")
    assert current_run() is None
    assert ctx.status is RunStatus.COMPLETED
    # After completion the run can still be given explicitly: the JSONL line is the record.
    reprise.log({"score": 0.9}, run=ctx)
    run_dir = ctx.require_run_dir().path
    metrics = _lines(run_dir / ".trace" / "user_metrics.jsonl")
    assert [m["metrics"] for m in metrics] == [{"before": 1}, {"score": 0.9}]
    assert "hierarchy_path" not in metrics[0]
    assert [a["title"] for a in Api(ctx.run_root).alerts(run=ctx.run_id)] == ["inside the block"]


# -- since: instants, not strings -----------------------------------------------------------------


def _synthetic_run(run_root: Path, run_id: str, alerts: list[tuple[str, str, str]]) -> None:
    trace = run_root / run_id / ".trace"
    trace.mkdir(parents=True)
    meta = {
        "run_id": run_id,
        "root_component_id": "flow",
        "status": "completed",
        "started_at": "2025-06-15T10:00:00.000000Z",
        "pid": 1,
        "host": "elsewhere",
        "reprise_version": "0",
    }
    (trace / "metadata.json").write_text(json.dumps(meta))
    lines = [
        json.dumps(
            {"timestamp": ts, "run_id": run_id, "level": level, "title": title, "text": "", "hierarchy_path": None}
        )
        for ts, level, title in alerts
    ]
    (trace / "alerts.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def alert_root(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _synthetic_run(
        root,
        "run_20250615_100000_aaaaaa",
        [("2025-06-15T11:00:00.000000Z", "info", "early"), ("2025-06-15T12:00:00.000000Z", "warn", "noon")],
    )
    _synthetic_run(root, "run_20250615_100000_bbbbbb", [("2025-06-15T12:30:00.000000Z", "error", "late")])
    return root


@pytest.mark.parametrize(
    ("since", "expected"),
    [
        # 13:30+02:00 is 11:30Z: 'noon' and 'late' are after it, although as strings
        # "2025-06-15T12:00..." < "2025-06-15T13:30..." would drop them both.
        ("2025-06-15T13:30:00+02:00", ["late", "noon"]),
        ("2025-06-15T12:00:00Z", ["late"]),  # strictly after: polling with the last timestamp seen
        ("2025-06-15T12:00:00.000000Z", ["late"]),
        ("2025-06-15T11:59:59", ["late", "noon"]),  # naive: UTC
        ("2025-06-15T14:00:00+02:00", ["late"]),  # = 12:00Z
        ("2025-06-15T08:00:00-04:00", ["late"]),  # = 12:00Z: 'noon' is not strictly after it
        ("2025-06-15T10:00:00z", ["late", "noon", "early"]),
        ("2025-06-16", []),
    ],
)
def test_since_compares_instants(alert_root: Path, since: str, expected: list[str]) -> None:
    titles = [a["title"] for a in Api(alert_root).alerts(since=since)]
    assert titles == expected


def test_alert_filters_and_order(alert_root: Path) -> None:
    api = Api(alert_root)
    assert [a["title"] for a in api.alerts()] == ["late", "noon", "early"]  # newest first
    assert [a["title"] for a in api.alerts(level="warn")] == ["late", "noon"]
    assert [a["title"] for a in api.alerts(level=AlertLevel.ERROR)] == ["late"]
    assert [a["title"] for a in api.alerts(run="run_20250615_100000_aaaaaa")] == ["noon", "early"]
    assert [a["title"] for a in api.alerts(limit=1)] == ["late"]
    with pytest.raises(ValueError, match="not a timestamp"):
        api.alerts(since="yesterday")
    assert parse_instant("2025-06-15T13:30:00+02:00") == parse_instant("2025-06-15T11:30:00")


def test_cli_alerts_since_with_offset(alert_root: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "alerts", "--run-root", str(alert_root), "--json",
         "--since", "2025-06-15T13:30:00+02:00", "--level", "warn"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    envelope = json.loads(proc.stdout)
    assert envelope["ok"] is True and envelope["error"] is None
    assert envelope["query"]["since"] == "2025-06-15T13:30:00+02:00"
    assert [a["title"] for a in envelope["data"]] == ["late", "noon"]


# -- webhooks -------------------------------------------------------------------------------------


class _Receiver:
    """An HTTP server on 127.0.0.1 that records every POST (or answers with ``status``)."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.paths.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/SECRET-TOKEN-123"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def _alerting(ctx: NodeContext) -> int:
    ctx.alert("just info", level="info")
    ctx.alert("look at this", "x=1", level="warn")
    ctx.alert("broken", "y=2", level="error")
    assert wait_for_webhooks(timeout=10)  # only so a failure is logged while the run is open
    return 1


def _all_text(run_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in run_dir.rglob("*") if p.is_file())


def test_webhook_receives_alerts_at_or_above_its_level(tmp_path: Path, receiver: _Receiver) -> None:
    ctx = _context(tmp_path)
    ctx.setup_run()
    set_alert_settings(ctx, AlertSettings(webhook_url=receiver.url, min_level=AlertLevel.WARN))
    result = FlowRunner(FlowDefinition().node("alerting", _alerting), ctx).run_sync()
    assert result.ok
    assert wait_for_webhooks(timeout=10)
    assert sorted(b["alert"]["title"] for b in receiver.bodies) == ["broken", "look at this"]
    posted = {b["alert"]["title"]: b for b in receiver.bodies}
    assert posted["broken"]["text"] == "[ERROR] broken: y=2"
    assert posted["broken"]["alert"]["hierarchy_path"] == "flow.alerting"
    assert posted["broken"]["alert"]["run_id"] == result.run_id
    assert "SECRET-TOKEN-123" not in _all_text(result.run_dir)


def test_webhook_from_environment(tmp_path: Path, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPRISE_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("REPRISE_ALERT_WEBHOOK_LEVEL", "error")
    result = FlowRunner(FlowDefinition().node("alerting", _alerting), _context(tmp_path)).run_sync()
    assert result.ok
    assert wait_for_webhooks(timeout=10)
    assert [b["alert"]["title"] for b in receiver.bodies] == ["broken"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("failure", ["refused", "http-500"])
def test_a_failing_webhook_never_fails_the_run(tmp_path: Path, failure: str) -> None:
    server = _Receiver(status=500) if failure == "http-500" else None
    url = server.url if server else f"http://127.0.0.1:{_free_port()}/hook/SECRET-TOKEN-123"
    try:
        ctx = _context(tmp_path)
        ctx.setup_run()
        set_alert_settings(ctx, AlertSettings(webhook_url=url, min_level=AlertLevel.INFO, timeout_s=5))
        result = FlowRunner(FlowDefinition().node("alerting", _alerting), ctx).run_sync()
    finally:
        if server:
            server.close()
    assert result.ok
    assert len(_lines(result.run_dir / ".trace" / "alerts.jsonl")) == 3  # stored whatever the webhook did
    failures = [
        line for line in _lines(result.run_dir / ".trace" / "logs.jsonl") if line["event"] == "alert webhook failed"
    ]
    assert len(failures) == 3
    assert "SECRET-TOKEN-123" not in _all_text(result.run_dir)


# -- each target's own format -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("https://hooks.slack.com/services/T000/B000/XXXX", "slack"),
        ("https://HOOKS.SLACK.COM/services/T000/B000/XXXX", "slack"),
        ("https://discord.com/api/webhooks/123/abc", "discord"),
        ("https://discordapp.com/api/webhooks/123/abc", "discord"),
        ("https://ptb.discord.com/api/webhooks/123/abc", "discord"),
        ("https://hooks.slack.com.evil.example/services/x", "generic"),
        ("https://mattermost.example/hooks/xyz", "generic"),
        ("http://127.0.0.1:9999/hook", "generic"),
    ],
)
def test_webhook_format_from_the_host(url: str, fmt: str) -> None:
    assert webhook_format(url) == fmt


def _alert_with(settings: AlertSettings, tmp_path: Path) -> str:
    ctx = _context(tmp_path)
    ctx.setup_run()
    set_alert_settings(ctx, settings)
    reprise.alert("Loss <diverged> & stopped", "loss=12.5 at step 40; @everyone lower the lr", level="error", run=ctx)
    ctx.complete_run()
    assert wait_for_webhooks(timeout=10)
    return ctx.run_id


def test_slack_gets_text_and_blocks(tmp_path: Path, receiver: _Receiver) -> None:
    run_id = _alert_with(AlertSettings(webhook_url=receiver.url, format="slack"), tmp_path)
    (body,) = receiver.bodies
    assert set(body) == {"text", "blocks"}
    assert body["text"] == "[ERROR] Loss &lt;diverged&gt; &amp; stopped: loss=12.5 at step 40; @everyone lower the lr"
    section, context = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert section["text"]["text"] == (
        ":rotating_light: *Loss &lt;diverged&gt; &amp; stopped*\nloss=12.5 at step 40; @everyone lower the lr"
    )
    assert context["type"] == "context" and run_id in context["elements"][0]["text"]


def test_discord_gets_content_and_an_embed(tmp_path: Path, receiver: _Receiver) -> None:
    run_id = _alert_with(AlertSettings(webhook_url=receiver.url, format="discord"), tmp_path)
    (body,) = receiver.bodies
    assert set(body) == {"content", "embeds", "allowed_mentions"}
    assert body["content"] == "[ERROR] Loss <diverged> & stopped: loss=12.5 at step 40; @everyone lower the lr"
    assert body["allowed_mentions"] == {"parse": []}  # the alert's text pings no one
    (embed,) = body["embeds"]
    assert embed["title"] == "Loss <diverged> & stopped"
    assert embed["description"] == "loss=12.5 at step 40; @everyone lower the lr"
    assert embed["color"] == 0xE74C3C and embed["timestamp"].endswith("Z")
    assert {f["name"]: f["value"] for f in embed["fields"]} == {"level": "error", "run": run_id, "node": "-"}


def test_format_from_init_and_environment(tmp_path: Path, receiver: _Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with reprise.init("hooks", run_root=tmp_path / "runs", outcome_repo=False, webhook_url=receiver.url,
                      webhook_format="discord") as run:  # fmt: skip
        run.alert("from init", level="warn")
    monkeypatch.setenv("REPRISE_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("REPRISE_ALERT_WEBHOOK_FORMAT", "slack")
    with reprise.init("hooks", run_root=tmp_path / "runs", outcome_repo=False) as run:
        run.alert("from the environment", level="warn")
    assert wait_for_webhooks(timeout=10)
    formats = sorted(sorted(b) for b in receiver.bodies)  # two threads: either may post first
    assert formats == [["allowed_mentions", "content", "embeds"], ["blocks", "text"]]
    with pytest.raises(RepriseError, match="unknown webhook format 'teams'"):
        reprise.init("hooks", run_root=tmp_path / "runs", webhook_url=receiver.url, webhook_format="teams")
