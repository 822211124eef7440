"""Model calls at scale: rate limits shared by nodes, runs and processes, Retry-After for every
caller, and the response cache, against the loopback model server (tests/_model_server.py)
playing a provider's rate limit."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _model_server import ModelServer, Reply, serve_models
from reprise import FlowDefinition, FlowRunner, Initial, RunContext, Var
from reprise.errors import DefinitionError
from reprise.experiments import Experiment
from reprise.nodes import AIModelNode, RateLimit
from reprise.nodes._model_cache import CACHE_FILE

pytestmark = pytest.mark.anyio

SRC = Path(__file__).resolve().parents[2] / "src"
TESTS = Path(__file__).resolve().parent
#: What worker processes and scripts need on their path: reprise, this module and _model_server.
PATH = os.pathsep.join([str(SRC), str(TESTS), str(TESTS.parent)])


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key-0123456789")
    monkeypatch.setenv("REPRISE_CREDENTIALS", str(tmp_path / "no-credentials.toml"))
    for var in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with serve_models() as server:
        yield server


def fan_out(node: AIModelNode, items: list[str], concurrency: int) -> FlowDefinition:
    """A flow asking ``node`` once per item, ``concurrency`` at a time."""
    body = FlowDefinition().node("ask", node, inputs={"prompt": Var("item")})
    return FlowDefinition().for_each("each", items, body, max_concurrency=concurrency)


def results(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(run_dir.glob("f/each/*/ask/result.json"))]


def answered_at(server: ModelServer) -> list[float]:
    return sorted(r["at"] for r in server.requests if r.get("status") != 429)


def most_in_one_second(times: list[float]) -> int:
    return max(sum(1 for u in times if t <= u < t + 1.0) for t in times)


# -- RateLimit -------------------------------------------------------------------------------------
def test_rate_limit_settings_are_checked() -> None:
    with pytest.raises(DefinitionError, match="requests_per_minute"):
        RateLimit(requests_per_minute=0)
    with pytest.raises(DefinitionError, match="per="):
        RateLimit(per="everything")  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="rate_limit"):
        AIModelNode(model="m", rate_limit={"requests_per_minute": 1})  # type: ignore[arg-type]
    with pytest.raises(DefinitionError, match="cache"):
        AIModelNode(model="m", cache="sometimes")


_PROCESS_SCRIPT = """
import sys
import anyio
sys.path[:0] = {tests!r}
from test_model_calls import fan_out
from reprise import FlowRunner, RunContext
from reprise.nodes import AIModelNode, RateLimit

async def main() -> None:
    node = AIModelNode(model="gpt-4o", base_url={url!r}, retries=0, rate_limit=RateLimit(**{limit!r}))
    items = [f"{{sys.argv[1]}} question {{i}}" for i in range({calls})]
    ctx = RunContext("f", {root!r}, model_cache={cache!r})
    result = await FlowRunner(fan_out(node, items, {calls}), ctx).run()
    print(result.run_id)

anyio.run(main)
"""


def run_processes(
    tmp_path: Path, server: ModelServer, names: list[str], *, calls: int, limit: dict[str, Any], cache: bool = False
) -> list[str]:
    """Run the fan-out flow in one process per name, all at once, sharing ``tmp_path``'s run
    root; returns their run ids."""
    script = _PROCESS_SCRIPT.format(
        tests=[str(TESTS), str(TESTS.parent)],
        url=server.url + "/v1",
        limit=limit,
        calls=calls,
        root=str(tmp_path),
        cache=cache,
    )
    env = {**os.environ, "PYTHONPATH": PATH}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    run_ids = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        run_ids.append(out.strip().splitlines()[-1])
    return run_ids


def test_the_limiter_spaces_calls_of_two_processes(tmp_path: Path) -> None:
    # The server answers 10 a second and 3 at once; the limit is 6 a second and 2 at once, shared
    # by two processes of 6 calls each, all started together.
    with serve_models(rate_per_s=10, concurrency=3, delay=0.05) as server:
        limit = {"requests_per_minute": 360, "max_concurrency": 2}
        run_processes(tmp_path, server, ["a", "b"], calls=6, limit=limit)
    assert server.rejected == 0
    assert server.answered == 12
    # Slots are 1/6 s apart; the time from a slot to the request (a client to build) varies on
    # a busy machine, so a second can hold more than 6, never more than the server answers.
    assert most_in_one_second(answered_at(server)) <= 10
    assert list((tmp_path / "runs" / ".model-calls" / "limits").glob("*.json"))


async def test_without_a_limit_the_same_calls_are_answered_429(
    make_context: Callable[..., RunContext],
) -> None:
    # What the test above guards against: the same calls, unlimited, overrun the server.
    with serve_models(rate_per_s=10, concurrency=3, delay=0.05) as server:
        node = AIModelNode(model="gpt-4o", base_url=server.url + "/v1", retries=6, backoff=0.01)
        await FlowRunner(fan_out(node, [f"q{i}" for i in range(12)], 12), make_context("f")).run()
    assert server.rejected > 0


async def test_retry_after_pauses_every_caller(make_context: Callable[..., RunContext]) -> None:
    with serve_models(delay=0.02) as server:
        server.queue(Reply(429, {"error": {"message": "Rate limit reached"}}, headers={"retry-after": "1"}))
        limit = RateLimit(requests_per_minute=300, max_concurrency=4)
        node = AIModelNode(model="gpt-4o", base_url=server.url + "/v1", retries=0, rate_limit=limit)
        result = await FlowRunner(fan_out(node, ["a", "b", "c", "d"], 4), make_context("f")).run()
    first, *later = sorted(r["at"] for r in server.requests)
    assert len(later) == 4  # the one answered 429 was asked again, by the limiter, not the executor
    assert all(at - first >= 0.95 for at in later)  # nobody went while the limiter was paused
    records = results(result.run_dir)
    assert all(r["attempts"] == 1 for r in records)
    assert all(r["limiter_wait_s"] >= 0.9 for r in records)  # every caller waited, not just one
    assert sum(r["rate_limited"] for r in records) == 1


async def test_the_run_default_rate_limit_and_the_wait_on_the_span(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    node = AIModelNode(model="gpt-4o", base_url=model_server.url + "/v1")
    ctx = make_context("f", model_rate_limit=RateLimit(requests_per_minute=120))
    result = await FlowRunner(fan_out(node, ["a", "b", "c"], 3), ctx).run()
    records = results(result.run_dir)
    assert sorted(r["limiter_wait_s"] >= 0.25 for r in records) == [False, True, True]  # slots 0.5 s apart
    trace = (result.run_dir / ".trace" / "trace.jsonl").read_text()
    assert "reprise.limiter.wait_s" in trace


# -- the response cache ---------------------------------------------------------------------------
async def test_an_identical_call_is_answered_from_the_cache(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    node = AIModelNode(model="gpt-4o", base_url=model_server.url + "/v1", cache=True, prompt="Say hello.")
    flow = FlowDefinition().node("ask", node)
    first = await FlowRunner(flow, make_context("f")).run()
    second = await FlowRunner(flow, make_context("f")).run()
    assert second.outcome == first.outcome == "Hello from the model."
    assert len(model_server.requests) == 1
    record = json.loads((second.run_dir / "f" / "ask" / "result.json").read_text())
    assert record["cached"] == {"run_id": first.run_id, "path": "f.ask"}
    assert record["cost_usd"] == 0
    assert record["usage"] == {"input_tokens": 0, "output_tokens": 0, "calls": 0}
    assert "reprise.ai.cached" in (second.run_dir / ".trace" / "trace.jsonl").read_text()
    assert "cached" not in json.loads((first.run_dir / "f" / "ask" / "result.json").read_text())


async def test_only_identical_deterministic_calls_are_cached_unless_asked(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    url = model_server.url + "/v1"
    calls: list[tuple[dict[str, Any], bool]] = [  # (node settings, whether a request is made)
        ({}, True),
        ({}, False),
        ({"prompt": "Say hello!"}, True),
        ({"max_tokens": 5}, True),
        ({"system": "Be brief."}, True),
        ({"temperature": 0.7}, True),
        ({"temperature": 0.7}, True),  # temperature > 0: not cached unless asked
        ({"temperature": 0.7, "cache": "always"}, True),
        ({"temperature": 0.7, "cache": "always"}, False),
        ({"cache": False}, True),
    ]
    for settings, requested in calls:
        before = len(model_server.requests)
        node = AIModelNode(model="gpt-4o", base_url=url, **{"prompt": "Say hello.", **settings})
        await FlowRunner(FlowDefinition().node("ask", node), make_context("f", model_cache=True)).run()
        assert len(model_server.requests) - before == int(requested), settings


_CACHE_SCRIPT = """
import sys
import anyio
from reprise import FlowDefinition, FlowRunner, RunContext
from reprise.nodes import AIModelNode

async def main() -> None:
    node = AIModelNode(model="gpt-4o", base_url=sys.argv[1], prompt="Say hello.")
    result = await FlowRunner(FlowDefinition().node("ask", node), RunContext("f", sys.argv[2], model_cache=True)).run()
    print(result.run_id, result.outcome)

anyio.run(main)
"""


def test_the_cache_is_shared_by_processes(model_server: ModelServer, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    outputs = []
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-c", _CACHE_SCRIPT, model_server.url + "/v1", str(tmp_path)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout.split(maxsplit=1))
    assert len(model_server.requests) == 1
    (first_id, first_text), (second_id, second_text) = outputs
    assert first_text == second_text
    record = json.loads((tmp_path / "runs" / second_id / "f" / "ask" / "result.json").read_text())
    assert record["cached"]["run_id"] == first_id


@pytest.mark.parametrize(
    "damage",
    [
        'UPDATE responses SET response = \'{"text": "poisoned"}\'',  # checksum no longer matches
        "UPDATE responses SET response = substr(response, 1, 10), checksum = 'x'",  # half-written
        "UPDATE responses SET response = '[1]', checksum = '{sha}'",  # right checksum, not an answer
    ],
    ids=["tampered", "truncated", "not-an-answer"],
)
async def test_a_damaged_entry_is_replaced_never_returned(
    damage: str, model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    import hashlib

    node = AIModelNode(model="gpt-4o", base_url=model_server.url + "/v1", prompt="Say hello.")
    flow = FlowDefinition().node("ask", node)
    await FlowRunner(flow, make_context("f", model_cache=True)).run()
    cache = make_context("f").model_calls_dir / CACHE_FILE
    with sqlite3.connect(cache) as conn:
        conn.execute(damage.replace("{sha}", hashlib.sha256(b"[1]").hexdigest()))
    second = await FlowRunner(flow, make_context("f", model_cache=True)).run()
    assert second.outcome == "Hello from the model."
    assert len(model_server.requests) == 2  # the damaged entry was not an answer
    third = await FlowRunner(flow, make_context("f", model_cache=True)).run()
    assert len(model_server.requests) == 2  # ... and the new answer replaced it
    record = json.loads((third.run_dir / "f" / "ask" / "result.json").read_text())
    assert record["cached"]["run_id"] == second.run_id


async def test_a_database_sqlite_cannot_read_is_moved_aside(
    model_server: ModelServer, make_context: Callable[..., RunContext]
) -> None:
    cache = make_context("f").model_calls_dir / CACHE_FILE
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"this is not a database" * 100)
    flow = FlowDefinition().node("ask", AIModelNode(model="gpt-4o", base_url=model_server.url + "/v1", prompt="Hi"))
    await FlowRunner(flow, make_context("f", model_cache=True)).run()
    await FlowRunner(flow, make_context("f", model_cache=True)).run()
    assert len(model_server.requests) == 1
    assert list(cache.parent.glob(CACHE_FILE + ".corrupt-*"))


# -- experiments -----------------------------------------------------------------------------------
#: Worker processes import it as ``test_model_calls:asker``; the server is ``OPENAI_BASE_URL``.
asker = FlowDefinition("asker").node("ask", AIModelNode(model="gpt-4o"), inputs={"prompt": Initial("q")})


async def test_an_experiments_workers_share_the_cache_and_the_limit(
    model_server: ModelServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", model_server.url + "/v1")
    monkeypatch.setenv("PYTHONPATH", PATH)
    inputs = [{"id": name, "initial_inputs": {"q": "the same question"}} for name in ("a", "b", "c")]
    experiment = Experiment(
        "test_model_calls:asker",
        inputs,
        iterations=2,
        max_concurrency=1,
        project_root=tmp_path,
        outcome_repo=False,
        model_cache=True,
        model_rate_limit=RateLimit(requests_per_minute=600),
    )
    summary = await experiment.run()
    assert summary.successes == 6
    assert len(model_server.requests) == 1  # the first run paid, the other five read the cache
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/asker/ask/result.json")]
    assert len(records) == 6
    assert sum("cached" in r for r in records) == 5
    assert all("limiter_wait_s" in r for r in records if "cached" not in r)
    assert yaml.safe_load((Path(summary.path) / "config.yaml").read_text())["model_cache"] is True
    resumed = Experiment.from_folder(summary.path)  # resume keeps both settings
    assert (resumed.model_cache, resumed.model_rate_limit) == (True, RateLimit(requests_per_minute=600))


# -- Dask ------------------------------------------------------------------------------------------
def test_dask_workers_share_the_limiter_through_the_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    distributed = pytest.importorskip("distributed")
    from reprise.experiments import DaskExecutor

    monkeypatch.setenv("PYTHONPATH", PATH)  # the workers import asker
    with serve_models(rate_per_s=10, concurrency=3, delay=0.05) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
        with distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=3, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            summary = Experiment(
                "test_model_calls:asker",
                [{"id": f"i{i}", "initial_inputs": {"q": f"question {i}"}} for i in range(12)],
                max_concurrency=6,
                project_root=tmp_path,
                outcome_repo=False,
                executor=DaskExecutor(cluster.scheduler_address.replace("tcp://", "dask://")),
                model_rate_limit=RateLimit(requests_per_minute=360, max_concurrency=2),
            ).run_sync()
    assert summary.successes == 12
    assert (server.answered, server.rejected) == (12, 0)
    assert most_in_one_second(answered_at(server)) <= 10
    # The limiter's state lived in the scheduler, not in a file beside the run root.
    assert not list((tmp_path / "runs" / ".model-calls").glob("limits/*.json"))


def test_the_experiment_command_takes_model_cache(model_server: ModelServer, tmp_path: Path) -> None:
    (tmp_path / "inputs.jsonl").write_text(
        "".join(json.dumps({"id": name, "initial_inputs": {"q": "same"}}) + "\n" for name in ("a", "b", "c"))
    )
    env = {
        **os.environ,
        "PYTHONPATH": PATH,
        "OPENAI_BASE_URL": model_server.url + "/v1",
    }
    command = [sys.executable, "-m", "reprise.cli", "experiment", "test_model_calls:asker", "--inputs", "inputs.jsonl"]
    command += ["--executor", "inline", "--parallel", "1", "--no-git", "--model-cache", "--progress", "none"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(model_server.requests) == 1
    (config,) = (tmp_path / "experiments").glob("*/config.yaml")
    assert yaml.safe_load(config.read_text())["model_cache"] is True
