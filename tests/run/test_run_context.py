"""RunContext: set-up, run ids (unique across processes), completion, static inputs and the
sync and async context managers."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

import reprise
from reprise import (
    FlowDefinition,
    FlowRunner,
    Initial,
    ObservabilitySettings,
    RunContext,
    RunFailedError,
    RunSetupError,
    RunStatus,
    StaticInputError,
)
from reprise.run import RunDirectory, new_run_id
from reprise.run._directory import RUN_ID_PATTERN

RUN_ID = r"run_\d{8}_\d{6}_[0-9a-f]{6}"


class Style(BaseModel):
    tone: str
    max_words: int = 50


def summarize(inp: Style) -> str:
    return f"{inp.tone}/{inp.max_words}"


def _flow() -> FlowDefinition:
    return (
        FlowDefinition()
        .node("summarize", summarize, inputs={"tone": Initial("tone", default="plain")})
        .node("noop", lambda: None)
    )


def _meta(ctx: RunContext) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ctx.require_run_dir().path / ".trace" / "metadata.json").read_text())
    return data


# -- construction and set-up ---------------------------------------------------------------------


def test_defaults_and_setup(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="agent", project_root=tmp_path, initial_inputs={"folder": Path("/data")})
    assert ctx.run_root == tmp_path.resolve() / "runs"
    assert not ctx.is_setup and ctx.status is None
    with pytest.raises(RunSetupError, match="not set up"):
        _ = ctx.run_id
    run_dir = ctx.setup_run()
    assert ctx.is_setup and ctx.status is RunStatus.RUNNING
    assert run_dir.path.parent == tmp_path.resolve() / "runs"
    assert run_dir.run_id == ctx.run_id and RUN_ID_PATTERN.match(ctx.run_id)
    assert (run_dir.path / ".trace").is_dir() and (run_dir.path / "static_inputs").is_dir()
    assert json.loads((run_dir.path / "static_inputs" / "initial_inputs.json").read_text()) == {"folder": "/data"}
    meta = _meta(ctx)
    assert meta["status"] == "running"
    assert meta["run_id"] == ctx.run_id
    assert meta["root_component_id"] == "agent"
    assert meta["pid"] == os.getpid()
    assert meta["host"] and meta["reprise_version"] == reprise.__version__
    assert meta["started_at"].endswith("Z") and meta["ended_at"] is None
    with pytest.raises(RunSetupError, match="already set up"):
        ctx.setup_run()
    ctx.complete_run()


def test_explicit_run_root_and_prefix(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="agent", project_root=tmp_path / "proj", run_root=tmp_path / "elsewhere")
    run_dir = ctx.setup_run(run_id_prefix="nightly-eval")
    assert run_dir.path.parent == (tmp_path / "elsewhere").resolve()
    assert ctx.run_id.startswith("nightly-eval_run_")
    match = RUN_ID_PATTERN.match(ctx.run_id)
    assert match is not None and match["prefix"] == "nightly-eval" and match["kind"] == "run"
    ctx.complete_run()
    with pytest.raises(RunSetupError, match="invalid run id prefix"):
        RunContext(root_component_id="agent", project_root=tmp_path).setup_run(run_id_prefix="../escape")


def test_run_id_format() -> None:
    fixed = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    run_id = new_run_id(now=fixed)
    assert run_id.startswith("run_20231114_221320_")
    assert RUN_ID_PATTERN.match(run_id)
    assert new_run_id("exp", rerun=True, now=fixed).startswith("exp_rerun_20231114_221320_")
    assert RUN_ID_PATTERN.match(new_run_id("exp", rerun=True))
    for bad in ("", "-x", "_x", "a b", "a/b", "..", "ü"):
        with pytest.raises(RunSetupError, match="invalid run id prefix"):
            new_run_id(bad)


def test_run_directory_create_draws_again_on_a_clash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Force the random suffix to repeat so the second run in the same second would clash.
    suffixes = iter(["aaaaaa", "aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr("reprise.run._directory.secrets.token_hex", lambda n: next(suffixes))
    monkeypatch.setattr("reprise.run._directory.time.time", lambda: 1_700_000_000.0)
    first = RunDirectory.create(tmp_path)
    second = RunDirectory.create(tmp_path)
    assert first.run_id == "run_20231114_221320_aaaaaa"
    assert second.run_id == "run_20231114_221320_bbbbbb"


_MANY_RUNS = """
import sys, time
from pathlib import Path
from reprise import ObservabilitySettings, RunContext

run_root, start_at, count = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
off = ObservabilitySettings(tracing=False, metrics=False, logging=False)
time.sleep(max(0.0, start_at - time.time()))
for _ in range(count):
    ctx = RunContext(root_component_id="agent", project_root=run_root, run_root=run_root,
                     observability_settings=off, outcome_repo=False)
    ctx.setup_run(run_id_prefix="load")
    ctx.complete_run()
    print(ctx.run_id, flush=True)
"""


def test_run_ids_unique_across_processes_starting_in_the_same_second(tmp_path: Path) -> None:
    processes, per_process = 8, 20
    run_root = tmp_path / "runs"
    # Every process waits for the same whole second, then starts its runs as fast as it can.
    start_at = math.ceil(time.time()) + 2
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MANY_RUNS, str(run_root), str(start_at), str(per_process)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    printed: list[str] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        printed.extend(out.split())
    assert len(printed) == processes * per_process
    assert len(set(printed)) == len(printed), "two processes were handed the same run id"
    # Other entries (an index of runs, say) may live in the run root too; run directories are these.
    on_disk = sorted(p.name for p in run_root.iterdir() if p.is_dir() and RUN_ID_PATTERN.match(p.name))
    assert on_disk == sorted(printed)
    for run_id in printed:
        assert RUN_ID_PATTERN.match(run_id) and run_id.startswith("load_run_")
        assert RunDirectory(run_root / run_id).read_metadata().status is RunStatus.COMPLETED
    # Not asserted (it depends on the machine's speed), but this is the case the test is about:
    # many runs share one timestamp second, so only the random suffix tells them apart.
    busiest = Counter(r.split("_")[3] for r in printed).most_common(1)[0][1]
    print(f"{len(printed)} runs, up to {busiest} in one second")


# -- completion ----------------------------------------------------------------------------------


def test_complete_run_is_idempotent(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="agent", project_root=tmp_path)
    with pytest.raises(RunSetupError, match="not set up"):
        ctx.complete_run()
    ctx.setup_run()
    ctx.complete_run("completed")
    first = _meta(ctx)
    assert first["status"] == "completed"
    assert first["ended_at"] and first["duration_s"] >= 0
    ctx.complete_run("failed", error_msg="too late")
    ctx.complete_run(RunStatus.CANCELLED)
    assert _meta(ctx) == first
    assert ctx.status is RunStatus.COMPLETED and ctx.error_msg is None


def test_complete_run_rejects_statuses_it_cannot_record(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="agent", project_root=tmp_path)
    ctx.setup_run()
    for status in ("running", "crashed"):
        with pytest.raises(RunSetupError, match="cannot record"):
            ctx.complete_run(status)
    with pytest.raises(ValueError):
        ctx.complete_run("done")
    assert _meta(ctx)["status"] == "running"
    ctx.complete_run("failed", error_msg="gave up")
    meta = _meta(ctx)
    assert (meta["status"], meta["error_msg"]) == ("failed", "gave up")


def test_a_finished_context_cannot_run_again(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    FlowRunner(_flow(), ctx).run_sync()
    with pytest.raises(reprise.RepriseError, match="already completed; make a new RunContext"):
        FlowRunner(_flow(), ctx).run_sync()


# -- static inputs -------------------------------------------------------------------------------


def _write_static(project: Path, data: object) -> Path:
    file = project / "static_inputs" / "static_inputs.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(data))
    return file


def test_read_static_inputs_from_the_project_file(tmp_path: Path) -> None:
    _write_static(tmp_path, {"summarize": {"tone": "formal", "max_words": 10}})
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    assert ctx.read_static_inputs() == {"summarize": {"tone": "formal", "max_words": 10}}
    result = FlowRunner(_flow(), ctx).run_sync()
    assert result.outcomes["flow.summarize"] == "formal/10"
    assert ctx.static_inputs == {"flow.summarize": Style(tone="formal", max_words=10)}
    saved = json.loads((result.run_dir / "static_inputs" / "static_inputs.json").read_text())
    assert saved == {"flow.summarize": {"tone": "formal", "max_words": 10}}


def test_read_static_inputs_from_an_explicit_file_by_path(tmp_path: Path) -> None:
    file = tmp_path / "inputs.json"
    file.write_text(json.dumps({"flow.summarize": {"tone": "terse"}}))
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    ctx.read_static_inputs(file)
    assert FlowRunner(_flow(), ctx).run_sync().outcomes["flow.summarize"] == "terse/50"


def test_static_input_that_does_not_validate(tmp_path: Path) -> None:
    _write_static(tmp_path, {"summarize": {"tone": "x", "max_words": "lots"}})
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    ctx.read_static_inputs()
    with pytest.raises(StaticInputError) as info:
        FlowRunner(_flow(), ctx).run_sync()
    assert info.value.path == "flow.summarize"
    assert "does not validate against Style" in info.value.message and "max_words" in info.value.message
    assert not (tmp_path / "runs").exists()  # nothing was set up, nothing ran


def test_static_input_for_an_unknown_node_lists_the_valid_ones(tmp_path: Path) -> None:
    _write_static(tmp_path, {"summarise": {"tone": "x"}})
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    ctx.read_static_inputs()
    with pytest.raises(StaticInputError) as info:
        FlowRunner(_flow(), ctx).run_sync()
    assert "unknown node 'summarise'" in info.value.message
    assert "valid nodes: flow.summarize, flow.noop" in info.value.message


def test_static_input_validated_at_once_when_the_definition_is_bound(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    runner = FlowRunner(_flow(), ctx)
    runner.setup_run()
    with pytest.raises(StaticInputError, match=r"valid nodes: flow\.summarize, flow\.noop"):
        ctx.register_node_static_input("nope", {"tone": "x"})
    with pytest.raises(StaticInputError, match="takes no input"):
        ctx.register_node_static_input("noop", {"tone": "x"})
    with pytest.raises(StaticInputError, match="must be a pydantic model or a mapping"):
        ctx.register_node_static_input("summarize", "formal")  # type: ignore[arg-type]
    ctx.register_node_static_input("summarize", Style(tone="late"))
    assert runner.run_sync().outcomes["flow.summarize"] == "late/50"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "static inputs file not found"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected an object mapping node ids to input objects"),
        ('{"summarize": "formal"}', "expected an object mapping node ids to input objects"),
    ],
)
def test_bad_static_inputs_files(tmp_path: Path, content: str | None, fragment: str) -> None:
    if content is not None:
        file = tmp_path / "static_inputs" / "static_inputs.json"
        file.parent.mkdir()
        file.write_text(content)
    with pytest.raises(StaticInputError, match=fragment):
        RunContext(root_component_id="flow", project_root=tmp_path).read_static_inputs()


def test_run_set_up_by_hand_then_static_input_error_is_not_left_running(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="flow", project_root=tmp_path)
    ctx.register_node_static_input("ghost", {"tone": "x"})
    ctx.setup_run()
    with pytest.raises(StaticInputError):
        FlowRunner(_flow(), ctx).run_sync()
    # The run directory exists (the caller made it), so it must say how the run ended.
    assert _meta(ctx)["status"] == "failed"


# -- context managers ----------------------------------------------------------------------------


def test_sync_context_manager_records_completed_and_failed(tmp_path: Path) -> None:
    with RunContext(root_component_id="agent", project_root=tmp_path) as ctx:
        assert ctx.is_setup and _meta(ctx)["status"] == "running"
    assert _meta(ctx)["status"] == "completed"

    failing = RunContext(root_component_id="agent", project_root=tmp_path)
    with pytest.raises(ValueError, match="disk full"), failing:
        raise ValueError("disk full")
    meta = _meta(failing)
    assert (meta["status"], meta["error_msg"]) == ("failed", "disk full")


def test_sync_context_manager_records_keyboard_interrupt_as_cancelled(tmp_path: Path) -> None:
    ctx = RunContext(root_component_id="agent", project_root=tmp_path)
    with pytest.raises(KeyboardInterrupt), ctx:
        raise KeyboardInterrupt
    assert _meta(ctx)["status"] == "cancelled"


def test_sync_context_manager_around_a_runner(tmp_path: Path) -> None:
    with RunContext(root_component_id="flow", project_root=tmp_path) as ctx:
        result = FlowRunner(_flow(), ctx).run_sync()
        assert result.run_id == ctx.run_id
    assert _meta(ctx)["status"] == "completed"

    bad = FlowDefinition().node("boom", _boom)
    with pytest.raises(RunFailedError), RunContext(root_component_id="flow", project_root=tmp_path) as ctx2:
        FlowRunner(bad, ctx2).run_sync()
    assert _meta(ctx2)["status"] == "failed"


def _boom() -> None:
    raise RuntimeError("boom")


@pytest.mark.anyio
async def test_async_context_manager_records_completed_failed_and_cancelled(tmp_path: Path) -> None:
    async with RunContext(root_component_id="flow", project_root=tmp_path) as ok:
        result = await FlowRunner(_flow(), ok).run()
    assert result.status is RunStatus.COMPLETED and _meta(ok)["status"] == "completed"

    with pytest.raises(LookupError):
        async with RunContext(root_component_id="flow", project_root=tmp_path) as failed:
            raise LookupError("no such thing")
    assert (_meta(failed)["status"], _meta(failed)["error_msg"]) == ("failed", "no such thing")

    with anyio.CancelScope() as scope:
        async with RunContext(root_component_id="flow", project_root=tmp_path) as cancelled:
            scope.cancel()
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert _meta(cancelled)["status"] == "cancelled"


def test_observability_can_be_turned_off(tmp_path: Path) -> None:
    off = ObservabilitySettings(tracing=False, metrics=False, logging=False)
    ctx = RunContext(root_component_id="flow", project_root=tmp_path, observability_settings=off)
    result = FlowRunner(_flow(), ctx).run_sync()
    assert result.status is RunStatus.COMPLETED
    assert (result.run_dir / "flow" / "summarize" / "outcome.json").is_file()


@pytest.mark.parametrize("which", ["project root", "run root"])
def test_a_path_that_is_not_utf8_is_refused_by_name_before_anything_is_made(tmp_path: Path, which: str) -> None:
    odd = tmp_path / os.fsdecode(b"proj\xff")
    try:
        odd.mkdir()
    except OSError:
        pytest.skip("this file system takes only valid UTF-8 names")
    with pytest.raises(RunSetupError, match=f"the {which} .*proj.* is not valid UTF-8"):
        if which == "project root":
            RunContext("root", odd)
        else:
            RunContext("root", tmp_path, run_root=odd / "runs")
    assert not (odd / "runs").exists()


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (object(), r"initial_inputs\['o'\]: object of type object is not JSON-serialisable"),
        ({"deep": [1, object()]}, r"initial_inputs\['o'\]\['deep'\]\[1\]: object of type object"),
        (float("nan"), r"initial_inputs\['o'\]: nan is not a JSON number"),
        ({"score": float("-inf")}, r"initial_inputs\['o'\]\['score'\]: -inf is not a JSON number"),
        (Style(tone="x", max_words=1).model_copy(update={"tone": object()}), r"initial_inputs\['o'\]\.tone"),
    ],
)
def test_initial_inputs_json_cannot_hold_are_refused_by_key_before_anything_is_made(
    tmp_path: Path, value: Any, fragment: str
) -> None:
    # Not a raw pydantic error naming nothing, nor a run directory that reads "running" and
    # then "crashed": the key is named, and no directory or index entry is made.
    from reprise.run._index import RunIndex

    for start in ("runner", "setup_run"):
        ctx = RunContext("flow", tmp_path, initial_inputs={"tone": "plain", "o": value})
        with pytest.raises(RunSetupError, match=fragment):
            if start == "runner":
                FlowRunner(_flow(), ctx).run_sync()
            else:
                ctx.setup_run()
        assert not ctx.is_setup
    runs = tmp_path / "runs"
    assert not runs.exists() or not [p for p in runs.iterdir() if p.name.startswith("run_")]
    assert RunIndex(runs).runs() == []
