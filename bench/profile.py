"""Where reprise's time goes per node: ``python -m bench.profile [--nodes 2000] [--top 30]``.

Two views of a ``chain-N`` run with defaults:

1. cProfile of one run (after a warm-up run): the top functions by own time and by cumulative
   time, in µs per node. cProfile inflates call-heavy code, so read it for *where*, not *how much*.
2. A cost breakdown measured without a profiler: each piece of per-node work timed alone in a
   tight loop (span start/end + OTLP/JSON line, the three atomic writes, JSON encoding, input
   validation, timestamps, ...), in µs per node, next to the whole run's µs per node. That says
   how much removing or changing each piece can save. Element spans (SDK spans of the run's
   provider) are timed raw and through ``RunTelemetry.start_span``/``end_span`` as the executor
   calls them.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from reprise import FlowDefinition, FlowRunner, Initial, ObservabilitySettings, Ref, RunContext
from reprise.dsl._paths import HierarchyPath
from reprise.run._files import dump_json, write_bytes_atomic


async def inc(x: int) -> int:
    return x + 1


def chain(n: int) -> FlowDefinition:
    flow = FlowDefinition()
    for i in range(n):
        flow.node(f"n{i}", inc, inputs={"x": Initial("x") if i == 0 else Ref(f"n{i - 1}")})
    return flow


def run_once(flow: FlowDefinition, project: Path, **ctx: Any) -> float:
    t0 = time.perf_counter()
    anyio.run(FlowRunner(flow, RunContext("root", project, initial_inputs={"x": 0}, **ctx)).run)
    return time.perf_counter() - t0


def per_call_us(fn: Callable[[], Any], n: int = 2000, batches: int = 5) -> float:
    """µs per call: the best of ``batches`` batches, so a burst of load elsewhere on the
    machine does not inflate a piece (the pieces are compared with each other)."""
    fn()
    best = float("inf")
    size = max(1, n // batches)
    for _ in range(batches):
        t0 = time.perf_counter()
        for _ in range(size):
            fn()
        best = min(best, (time.perf_counter() - t0) / size)
    return best * 1e6


class _NoOpListener:
    """An element listener that does nothing: the cost of the hook itself."""

    def on_element_start(self, path: HierarchyPath, element_type: str, attributes: Any) -> None:
        pass

    def on_element_end(self, path: HierarchyPath, element_type: str, status: str, attributes: Any) -> None:
        pass


def telemetry_span_us(project: Path, settings: ObservabilitySettings) -> float:
    """µs per node span through ``RunTelemetry`` (start, the status and attempts, end, the line
    appended to ``trace.jsonl``), in a real run set up with ``settings``."""
    ctx = RunContext("root", project, observability_settings=settings, outcome_repo=False)
    ctx.setup_run()
    tel = ctx.telemetry
    assert tel is not None
    path = HierarchyPath("root.n5")
    root = tel.root_span

    def span() -> None:
        s = tel.start_span(path, "node", root, "python")
        assert s is not None
        tel.end_span(s, "completed", None, attempts=1)

    try:
        return per_call_us(span)
    finally:
        ctx.complete_run()


def breakdown(project: Path) -> list[tuple[str, float]]:
    """Each piece of a node's bookkeeping, timed alone (µs per node)."""
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from reprise.observability._otlp_json import SpanLineEncoder
    from reprise.observability._telemetry import JsonlSink, TraceFileExporter
    from reprise.runners._executor import _iso

    out: list[tuple[str, float]] = []
    d = project / "pieces"
    d.mkdir()
    counter = iter(range(10**7))
    out.append(("mkdir of the node directory", per_call_us(lambda: (d / f"n{next(counter)}").mkdir())))
    target = d / "n0"
    small = dump_json({"x": 1})
    out.append(
        (
            "one atomic write (open tmp, write, close, rename)",
            per_call_us(lambda: write_bytes_atomic(target / "input.json", small)),
        )
    )
    result = {
        "path": "root.n5",
        "element_type": "node",
        "node_kind": "python",
        "node": "inc",
        "status": "completed",
        "started_at": _iso(time.time()),
        "ended_at": _iso(time.time()),
        "duration_s": 0.000187,
        "attempts": 1,
        "reused": False,
    }
    out.append(("dump_json(result) (indent=2)", per_call_us(lambda: dump_json(result))))
    out.append(("json.dumps(result) compact", per_call_us(lambda: json.dumps(result, separators=(",", ":")))))
    out.append(("_iso(time.time()) x2", 2 * per_call_us(lambda: _iso(time.time()))))

    provider = TracerProvider(shutdown_on_exit=False)
    tracer = provider.get_tracer("reprise", "0")
    sink = JsonlSink(d / "trace.jsonl")
    encoder = SpanLineEncoder(provider.resource, tracer.instrumentation_info)  # type: ignore[attr-defined]
    attrs = {
        "reprise.run_id": "run_x",
        "reprise.hierarchy_path": "root.n5",
        "reprise.element_type": "node",
        "reprise.node_kind": "python",
    }

    def span_no_export() -> None:
        s = tracer.start_span("node root.n5", attributes=attrs)
        s.set_attribute("reprise.status", "completed")
        s.set_attribute("reprise.attempts", 1)
        s.end()

    out.append(("SDK span start+2 attrs+end (no processor)", per_call_us(span_no_export)))
    provider.add_span_processor(SimpleSpanProcessor(TraceFileExporter(sink, encoder)))
    out.append(("SDK span + SimpleSpanProcessor + OTLP/JSON encode + append line", per_call_us(span_no_export)))
    finished = tracer.start_span("node root.n5", attributes=attrs)
    finished.end()
    out.append(("  of which: encoder.line(span) alone", per_call_us(lambda: encoder.line((finished,)))))  # type: ignore[arg-type]
    line = encoder.line((finished,))  # type: ignore[arg-type]
    out.append(("  of which: os.write of the line (O_APPEND)", per_call_us(lambda: sink.write(line))))
    provider.shutdown()

    # The same through RunTelemetry, as the executor calls it per node.
    runs = project / "telemetry"
    runs.mkdir()
    for label, settings in (
        ("defaults", ObservabilitySettings()),
        (
            "a no-op element listener (reprise run with progress)",
            ObservabilitySettings(element_listeners=[_NoOpListener()]),
        ),
        ("a no-op span processor added", ObservabilitySettings(span_processors=[SpanProcessor()])),
    ):
        out.append((f"RunTelemetry.start_span+end_span, {label}", telemetry_span_us(runs, settings)))

    p = HierarchyPath("root.n5")
    out.append(("HierarchyPath.child + str()", per_call_us(lambda: str(p.child("n6")))))
    from pydantic import create_model

    model = create_model("IncInput", x=(int, ...))
    out.append(
        (
            "input model_validate + model_dump(mode=json)",
            per_call_us(lambda: model.model_validate({"x": 1}).model_dump(mode="json")),
        )
    )
    from pydantic import TypeAdapter

    ta: TypeAdapter[int] = TypeAdapter(int)
    out.append(
        ("outcome TypeAdapter validate + dump", per_call_us(lambda: ta.dump_python(ta.validate_python(1), mode="json")))
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.profile")
    ap.add_argument("--nodes", type=int, default=2000)
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    n = args.nodes
    project = Path(tempfile.mkdtemp(prefix="reprise-profile-"))
    try:
        flow = chain(n)
        run_once(flow, project)  # warm-up: imports, first-time caches
        walls: dict[str, list[float]] = {cfg: [] for cfg in ("defaults", "git-off", "tracing-off", "bare")}
        kw: dict[str, dict[str, Any]] = {
            "defaults": {},
            "git-off": {"outcome_repo": False},
            "tracing-off": {"observability_settings": ObservabilitySettings.disabled()},
            "bare": {"outcome_repo": False, "observability_settings": ObservabilitySettings.disabled()},
        }
        for _ in range(args.runs):
            for cfg, k in kw.items():
                walls[cfg].append(run_once(flow, project, **k))
        print(f"chain-{n}, median of {args.runs} runs, µs per node (whole run / {n}):")
        for cfg, w in walls.items():
            print(f"  {cfg:<12} {sorted(w)[len(w) // 2] / n * 1e6:8.1f}")

        prof = cProfile.Profile()
        prof.enable()
        run_once(flow, project)
        prof.disable()
        for key, title in (("tottime", "own time"), ("cumulative", "cumulative time")):
            buf = io.StringIO()
            stats = pstats.Stats(prof, stream=buf)
            stats.sort_stats(key)
            print(f"\ncProfile, top {args.top} by {title} (µs per node = seconds / {n} * 1e6):")
            print(f"  {'µs/node':>8} {'calls/node':>10}  function")
            for func, (_cc, nc, tt, ct, _callers) in sorted(
                stats.stats.items(),  # type: ignore[attr-defined]
                key=lambda kv: kv[1][2] if key == "tottime" else kv[1][3],
                reverse=True,
            )[: args.top]:
                t = tt if key == "tottime" else ct
                filename, line, name = func
                where = f"{os.path.relpath(filename) if filename.startswith('/') else filename}:{line}({name})"
                print(f"  {t / n * 1e6:8.1f} {nc / n:10.2f}  {where[-110:]}")

        print("\nper-node pieces timed alone (µs per call):")
        for name, us in breakdown(project):
            print(f"  {us:8.1f}  {name}")
    finally:
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
