"""reprise: every benchmark, run in the project's own venv.

Configs: ``defaults`` (run directory files, trace/metrics/logs in ``.trace/``, outcomes committed
to git when the run completes), ``tracing-off`` (``ObservabilitySettings.disabled()``: no
``.trace/`` files; run directory and git as by default), ``git-off`` (defaults without the
outcome repository, to show what the commit costs a run) and, for the chains, ``bare`` (both
off: what is left over the floor is the executor's own Python and the run's records).

Every node is ``async def inc(x: int) -> int: return x + 1`` (async, as in every peer, so no
worker-thread hop), fed by ``Ref`` to the node before it.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import floor
from _common import CHAIN_SIZES, FANOUT, Report, interleaved, main_args, time_async

from reprise import FlowDefinition, FlowRunner, Initial, ObservabilitySettings, Ref, RunContext, Var

LOOP = 10_000
RERUN_CHAIN = 1000


async def inc(x: int) -> int:
    return x + 1


def chain(n: int) -> FlowDefinition:
    flow = FlowDefinition()
    for i in range(n):
        flow.node(f"n{i}", inc, inputs={"x": Initial("x") if i == 0 else Ref(f"n{i - 1}")})
    return flow


def fanout(n: int) -> FlowDefinition:
    branches = {f"b{i}": FlowDefinition().node("inc", inc, inputs={"x": i}) for i in range(n)}
    return FlowDefinition().parallel("fan", branches)


def loop(n: int) -> FlowDefinition:
    body = FlowDefinition().node("inc", inc, inputs={"x": Var("item")})
    return FlowDefinition().for_each("loop", list(range(n)), body)


CONFIGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "tracing-off": {"observability_settings": ObservabilitySettings.disabled()},
    "git-off": {"outcome_repo": False},
    # Neither: the executor and the run's own records (journal, node files, metadata, index),
    # which is what the floor does, plus reprise's Python around it.
    "bare": {"outcome_repo": False, "observability_settings": ObservabilitySettings.disabled()},
}


class Runs:
    """Makes run contexts under one scratch project directory."""

    def __init__(self, tmp: str) -> None:
        self.project = Path(tempfile.mkdtemp(prefix="reprise-", dir=tmp))

    def context(self, config: str, **more: Any) -> RunContext:
        return RunContext("root", self.project, initial_inputs={"x": 0}, **CONFIGS[config], **more)

    async def run(self, flow: FlowDefinition, ctx: RunContext) -> Any:
        return await FlowRunner(flow, ctx).run()


async def bench_flow(
    report: Report,
    runs: Runs,
    benchmark: str,
    flow: FlowDefinition,
    units: int,
    expect: Any,
    configs: tuple[str, ...],
    n_runs: int,
    floor_fn: Callable[[Path, int, str], int] | None = None,
    **extra: Any,
) -> None:
    """Time ``flow`` under each config, interleaved with the floor doing the same work."""
    jobs: dict[str, tuple[Callable[[int], Any], Callable[[Any], Awaitable[Any]]]] = {}
    if floor_fn is not None:
        floor_base = runs.project / "floor"
        floor_base.mkdir()

        def floor_job(layout: str) -> Callable[[Any], Awaitable[None]]:
            async def job(_: Any) -> None:
                floor_fn(floor_base, units, layout)

            return job

        # The floor of reprise's node layout, and of the layout before 2026-11-22 (one
        # atomic write per file), to report the floor before and after.
        jobs["floor:bare-loop"] = (lambda i: None, floor_job("one-dir"))
        jobs["floor:per-file-layout"] = (lambda i: None, floor_job("per-file"))
    for config in configs:
        try:
            result = await runs.run(flow, runs.context(config))
            if result.outcome != expect:
                raise RuntimeError(f"outcome {str(result.outcome)[:80]} != expected {str(expect)[:80]}")
        except Exception as exc:
            report.error(benchmark, config, exc)
            continue
        jobs[config] = (lambda i, c=config: runs.context(c), lambda ctx: runs.run(flow, ctx))
    got = await interleaved(jobs, n_runs)
    # Memory figures and the like belong to reprise's rows; the floor keeps only its unit.
    floor_got = {k: v for k, v in got.items() if k.startswith("floor:")}
    report.add_all(benchmark, units, floor_got, **{k: v for k, v in extra.items() if k == "unit"})
    report.add_all(benchmark, units, {k: v for k, v in got.items() if k not in floor_got}, **extra)


async def bench_rerun(report: Report, runs: Runs, n_runs: int) -> None:
    """Re-run a 1,000-node chain from its last node; compare with the full run."""
    flow = chain(RERUN_CHAIN)
    last = f"root.n{RERUN_CHAIN - 1}"
    try:
        base = await runs.run(flow, runs.context("defaults"))

        def rerun_ctx(i: int) -> RunContext:
            return runs.context("defaults", previous_run_id=base.run_id, start_hierarchy_path=last)

        check = await runs.run(flow, rerun_ctx(-1))
        if check.outcome != RERUN_CHAIN or check.executed != 1 or check.reused != RERUN_CHAIN - 1:
            raise RuntimeError(f"re-run executed {check.executed}, reused {check.reused}, outcome {check.outcome}")
        # Full runs and re-runs take turns, so a burst of load hits both alike.
        got = await interleaved(
            {
                "full": (lambda i: runs.context("defaults"), lambda ctx: runs.run(flow, ctx)),
                "rerun": (rerun_ctx, lambda ctx: runs.run(flow, ctx)),
            },
            n_runs,
        )
        full, samples = got["full"], got["rerun"]
        for value in (full, samples):
            if isinstance(value, BaseException):
                raise value
        assert isinstance(full, list) and isinstance(samples, list)
        full_median = sorted(full)[len(full) // 2]
        rerun_median = sorted(samples)[len(samples) // 2]
        report.add(
            "rerun-last",
            "defaults",
            RERUN_CHAIN,
            samples,
            full_run_median_s=full_median,
            ratio_to_full_run=rerun_median / full_median,
        )
    except Exception as exc:
        report.error("rerun-last", "defaults", exc)


def rss_child(n: int, tmp: str) -> dict[str, float]:
    """Peak RSS of a fresh interpreter that imports reprise and runs one loop of ``n``."""
    done = subprocess.run(
        [sys.executable, __file__, "--benchmark", f"_rss-{n}", "--runs", "1", "--tmp", tmp],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"RSS child failed: {done.stderr[-1500:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def rss_main(n: int, tmp: str) -> None:
    runs = Runs(tmp)
    flow = loop(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await runs.run(flow, runs.context("defaults"))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert len(result.outcome) == n
    print(json.dumps({"before_mb": before / 1024, "peak_mb": after / 1024}))


async def bench_loop(report: Report, runs: Runs, n_runs: int, tmp: str) -> None:
    try:
        small, big = rss_child(LOOP // 10, tmp), rss_child(LOOP, tmp)
        rss = {
            "peak_rss_mb": round(big["peak_mb"], 1),
            "rss_before_run_mb": round(big["before_mb"], 1),
            f"peak_rss_mb_loop_{LOOP // 10}": round(small["peak_mb"], 1),
            # Growth per extra finished node between a 1,000- and a 10,000-iteration loop.
            "rss_growth_kb_per_node": round((big["peak_mb"] - small["peak_mb"]) * 1024 / (LOOP - LOOP // 10), 3),
        }
    except Exception as exc:
        rss = {"rss_error": str(exc)[-500:]}
    await bench_flow(
        report,
        runs,
        "loop-10000",
        loop(LOOP),
        LOOP,
        [i + 1 for i in range(LOOP)],
        ("defaults",),
        n_runs,
        floor.loop,
        **rss,
    )


def bench_import(report: Report, n_runs: int) -> None:
    """``import reprise`` in fresh interpreters; ``reprise --help`` if the console script exists."""
    code = "import time; t = time.perf_counter(); import reprise; print(time.perf_counter() - t)"
    inside: list[float] = []
    wall: list[float] = []
    for _ in range(n_runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        wall.append(time.perf_counter() - t0)
        inside.append(float(done.stdout.strip()))
    bare: list[float] = []
    for _ in range(n_runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    # The first import warms the OS page cache for every module file; drop it like a warm-up run.
    report.add(
        "import",
        "import reprise",
        1,
        inside[1:],
        unit="import",
        process_wall_median_s=sorted(wall[1:])[n_runs // 2],
        bare_interpreter_median_s=sorted(bare)[n_runs // 2],
    )
    script = Path(sys.executable).parent / "reprise"
    if not script.exists():
        report.error(
            "import", "reprise --help", f"no `reprise` console script in {script.parent} (the CLI is not there yet)"
        )
        return
    helps: list[float] = []
    for _ in range(n_runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=False)
        helps.append(time.perf_counter() - t0)
        if done.returncode != 0:
            report.error("import", "reprise --help", f"`reprise --help` exited {done.returncode}: {done.stderr[-300:]}")
            return
    report.add("import", "reprise --help", 1, helps[1:], unit="command")


async def bench_git(report: Report, runs: Runs, n_runs: int) -> None:
    """Commit the outcomes of a finished run (10 and 1,000 outcome files) to the outcome repo:
    exactly what the completion hook does (collect the files, then ``commit_run``)."""
    try:
        from reprise.run._outcome_repo import OutcomeRepository, OutcomeSettings, collect_outcome_files
    except ImportError as exc:
        report.error("git-commit", "pending", f"the git outcome repository is not there yet: {exc}")
        return
    for n in (10, 1000):
        config = f"{n}-files"
        try:
            samples = await _time_commits(runs, n, n_runs, OutcomeRepository, OutcomeSettings, collect_outcome_files)
            report.add("git-commit", config, n, samples, unit="outcome file")
        except Exception as exc:
            report.error("git-commit", config, exc)


async def _time_commits(runs: Runs, n: int, n_runs: int, repo_cls: Any, settings_cls: Any, collect: Any) -> list[float]:
    result = await runs.run(chain(n), runs.context("git-off"))
    run_dir = Path(result.run_dir)
    repo = repo_cls(runs.project / "runs" / "outcome" / "bench", settings_cls())
    with repo.open():
        pass  # created before the timing starts
    counter = iter(range(10**6))

    async def commit(_: Any) -> None:
        files = collect(run_dir)
        assert len(files) == n, len(files)
        repo.commit_run(f"{result.run_id}-{next(counter)}", files, message=f"bench {n}")

    return await time_async(commit, n_runs)


async def main() -> None:
    args = main_args()
    if args.benchmark.startswith("_rss-"):
        await rss_main(int(args.benchmark.removeprefix("_rss-")), args.tmp)
        return
    report = Report("reprise", ("reprise-agents", "opentelemetry-sdk", "pydantic", "anyio"))
    runs = Runs(args.tmp)
    b = args.benchmark
    if b in CHAIN_SIZES:
        n = CHAIN_SIZES[b]
        await bench_flow(report, runs, b, chain(n), n, n, tuple(CONFIGS), args.runs, floor.chain)
    elif b == "fanout-1000":
        expect = {f"b{i}": i + 1 for i in range(FANOUT)}
        await bench_flow(
            report,
            runs,
            b,
            fanout(FANOUT),
            FANOUT,
            expect,
            ("defaults", "tracing-off"),
            args.runs,
            floor.fanout,
            unit="branch",
        )
    elif b == "rerun-last":
        await bench_rerun(report, runs, args.runs)
    elif b == "loop-10000":
        await bench_loop(report, runs, args.runs, args.tmp)
    elif b == "import":
        bench_import(report, args.runs)
    elif b == "git-commit":
        await bench_git(report, runs, args.runs)
    else:
        report.error(b, "defaults", "unknown benchmark")
    report.emit()
    shutil.rmtree(runs.project, ignore_errors=True)


if __name__ == "__main__":
    os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # measure the file-only default, never live export
    anyio.run(main)
