"""Experiments on a Dask cluster (issue 8): two worker processes on loopback; run directories
shipped back, git commits by the client, a worker that dies fails its item only."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import git
import pytest

from reprise import FlowDefinition, Initial, NodeContext, RunFailedError
from reprise.experiments import Experiment, ExperimentError, ItemResult, WorkerCrashedError
from reprise.experiments._item import root_cause

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

from reprise.experiments._dask_executor import DaskExecutor, dask_address  # noqa: E402

pytestmark = pytest.mark.anyio


def shipped(q: str, ctx: NodeContext) -> dict[str, Any]:
    if q == "raise":
        raise ValueError("bad question")
    if q == "exit":
        os._exit(3)  # kills the Dask worker process
    if q == "sleep":
        time.sleep(30)
    # A declared outcome file inside the node directory travels with the run directory.
    (ctx.node_dir / "note.txt").write_text(f"note for {q}")
    ctx.declare_outcome_file("note.txt")
    return {"answer": q.upper(), "pid": os.getpid()}


dask_flow = FlowDefinition("dflow").node("answer", shipped, inputs={"q": Initial("q")})


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # A task whose worker dies fails at once (the default retries it on 3 more workers).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
        ) as local_cluster:
            yield local_cluster


@pytest.fixture
def anyio_backend() -> str:
    # The executor talks to Dask from threads, so it works on either backend; the cluster is
    # slow to run twice, so these tests run on asyncio (trio is covered by the local tests).
    return "asyncio"


def test_dask_address_forms() -> None:
    assert dask_address("dask://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert dask_address("tcp://127.0.0.1:1") == "tcp://127.0.0.1:1"
    for bad in ("dask://nohost", "http://x:1", "10.0.0.5:8786"):
        with pytest.raises(ExperimentError):
            dask_address(bad)


async def test_items_run_on_workers_and_everything_lands_on_the_client(cluster: Any, tmp_path: Path) -> None:
    seen: list[ItemResult] = []
    executor = DaskExecutor(cluster.scheduler_address.replace("tcp://", "dask://"))
    summary = await Experiment(
        dask_flow,
        [{"id": q, "initial_inputs": {"q": q}} for q in ("a", "raise", "b", "exit", "c")],
        project_root=tmp_path,
        max_concurrency=2,
        executor=executor,
        on_result=seen.append,
    ).run()

    folder = Path(summary.path)
    lines = {line["input_id"]: line for line in map(json.loads, (folder / "runs.jsonl").read_text().splitlines())}
    assert {k: v["status"] for k, v in lines.items()} == {
        "a": "completed",
        "b": "completed",
        "c": "completed",
        "raise": "failed",
        "exit": "crashed",
    }
    assert (summary.finished, summary.successes, summary.failures) == (5, 3, 2)
    assert lines["raise"]["error_type"] == "ValueError" and lines["raise"]["error_path"] == "dflow.answer"
    assert lines["exit"]["error_type"] == "WorkerCrashedError"
    assert all(line["worker"].startswith("tcp://127.0.0.1:") for k, line in lines.items() if k != "exit")
    # The items ran in the workers, not here.
    assert {lines[k]["outcome"]["pid"] for k in "abc"}.isdisjoint({os.getpid()})

    # Every item's run directory, git branch and line exist on the client, the dead worker's too.
    run_root = tmp_path / "runs"
    repo = git.Repo(run_root / "outcome" / tmp_path.name)
    for input_id, line in lines.items():
        run_dir = run_root / line["run_id"]
        meta = json.loads((run_dir / ".trace" / "metadata.json").read_text())
        assert meta["tags"]["input_id"] == input_id and meta["tags"]["experiment"] == "dflow"
        assert meta["outcome_branch"] == f"run/{line['run_id']}"
        assert repo.commit(f"run/{line['run_id']}").hexsha == meta["outcome_commit"]
    assert json.loads((run_root / lines["exit"]["run_id"] / ".trace/metadata.json").read_text())["status"] == "crashed"
    a_dir = run_root / lines["a"]["run_id"]
    assert (a_dir / ".trace" / "trace.jsonl").stat().st_size > 0
    assert json.loads((a_dir / "dflow/answer/outcome.json").read_text())["answer"] == "A"
    tree = repo.commit(f"run/{lines['a']['run_id']}").tree
    assert sorted(b.path for b in tree.traverse() if b.type == "blob") == [
        "dflow/answer/note.txt",
        "dflow/answer/outcome.json",
    ]
    assert (tree / "dflow/answer/note.txt").data_stream.read() == b"note for a"

    # Errors come back with their original types.
    errors = {r.record.input_id: r.error for r in seen}
    assert isinstance(errors["raise"], RunFailedError) and errors["raise"].path == "dflow.answer"
    assert isinstance(root_cause(errors["raise"]), ValueError)
    assert isinstance(errors["exit"], WorkerCrashedError)
    assert isinstance(errors["exit"].__cause__, distributed.KilledWorker)


async def test_timeout_and_an_existing_client(cluster: Any, tmp_path: Path) -> None:
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        summary = await Experiment(
            dask_flow,
            [{"id": "slow", "initial_inputs": {"q": "sleep"}}, {"id": "ok", "initial_inputs": {"q": "ok"}}],
            project_root=tmp_path,
            timeout=0.5,
            executor=DaskExecutor(client),
        ).run()
        assert client.status == "running"  # the experiment does not close a client it was given
    assert summary.by_status == {"completed": 1, "timeout": 1}
    lines = [json.loads(line) for line in (Path(summary.path) / "runs.jsonl").read_text().splitlines()]
    slow = next(line for line in lines if line["input_id"] == "slow")
    assert slow["error_type"] == "ItemTimeoutError"
    assert (tmp_path / "runs" / slow["run_id"] / ".trace" / "metadata.json").is_file()
    await anyio.sleep(0)


async def test_workers_with_two_threads_load_a_file_target_once(tmp_path: Path) -> None:
    """Workers with two threads start two items at once, and both load the file target: each
    must get the whole module (its body sleeps to keep the loading window open)."""
    (tmp_path / "dask_slow_flows.py").write_text(
        "import threading, time\n"
        "from reprise import FlowDefinition, Initial\n"
        "time.sleep(0.5)\n"
        "def answer(q: str) -> dict:\n"
        "    return {'answer': q.upper(), 'thread': threading.get_ident()}\n"
        "flow = FlowDefinition('slowload').node('answer', answer, inputs={'q': Initial('q')})\n"
    )
    with distributed.LocalCluster(
        # A dashboard on a free port: the module's cluster may hold the default one.
        n_workers=2, processes=True, threads_per_worker=2, host="127.0.0.1", dashboard_address=":0"
    ) as local_cluster:
        summary = await Experiment(
            "dask_slow_flows.py:flow",
            [{"id": str(i), "initial_inputs": {"q": f"q{i}"}} for i in range(8)],
            project_root=tmp_path,
            max_concurrency=4,
            outcome_repo=False,
            executor=DaskExecutor(local_cluster.scheduler_address),
        ).run()
    lines = [json.loads(line) for line in (Path(summary.path) / "runs.jsonl").read_text().splitlines()]
    assert [(line["status"], line["error_message"]) for line in lines] == [("completed", None)] * 8
    assert sorted(line["outcome"]["answer"] for line in lines) == [f"Q{i}" for i in range(8)]
