"""``llm-ratelimited``: an experiment bound by a model provider's rate limit (issue 19).

A loopback OpenAI-compatible server (``tests/_model_server.py``, in its own process) answers at
most R requests a second and C at once, each after a set time, and 429 with ``Retry-After``
beyond that. The workload: 300 inputs, each a flow of three AI model nodes (one, then two in
parallel), ``--parallel 32``: 900 calls, so the floor is ``900 / R`` seconds. Reported per system:
wall time over that floor, 429 answers per call, calls made. Goals: within 1.1x of the floor,
fewer than 1% of calls answered 429. Then the cache: the same experiment twice with
``model_cache=True``; the second makes no call and should take under 5% of the first.

Systems: reprise with worker processes (``local``), in one process (``inline``), on a Dask
``LocalCluster`` of two worker processes (``dask``; limiter and cache shared through the run
root's file system), and
LangGraph (``RetryPolicy``, ``max_concurrency``, the official ``openai`` client) in its peer venv
(``bench/peers/langgraph_llm_peer.py``) when that venv exists::

    python -m bench.llm_ratelimited                       # R=20/s, C=8, 50 ms, 300 inputs
    python -m bench.llm_ratelimited --inputs 60 --systems local
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from reprise import FlowDefinition, Initial, Ref
from reprise.nodes import AIModelNode, RateLimit

BENCH_DIR = Path(__file__).resolve().parent
SERVER_SCRIPT = BENCH_DIR.parent / "tests" / "_model_server.py"
SYSTEMS = ("local", "inline", "dask", "langgraph")


def _ask(prompt: str) -> AIModelNode:
    # max_tokens keeps the token estimate small; the server ignores it.
    return AIModelNode(model="bench-model", prompt=prompt, max_tokens=16, retries=2)


#: Worker processes import it as ``bench.llm_ratelimited:flow``; the server is ``OPENAI_BASE_URL``.
flow = (
    FlowDefinition("llm")
    .node("plan", _ask("Plan for $var{q}."), inputs={"q": Initial("q")})
    .parallel(
        "both",
        {
            side: FlowDefinition().node(
                "answer", _ask(f"{side} of $var{{q}}: $var{{plan}}"), inputs={"q": Initial("q"), "plan": Ref("plan")}
            )
            for side in ("left", "right")
        },
    )
)


@contextmanager
def model_server(rate: float, concurrency: int, delay: float) -> Iterator[tuple[str, dict[str, int]]]:
    """The rate-limited server in its own process (so it competes with no client for the GIL);
    yields its URL and a dict that holds its counts once the block ends."""
    command = [sys.executable, str(SERVER_SCRIPT), "--rate-per-s", str(rate), "--concurrency", str(concurrency)]
    process = subprocess.Popen([*command, "--delay", str(delay)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    counts: dict[str, int] = {}
    try:
        yield url, counts
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=30)
        counts.update(json.loads(out.strip().splitlines()[-1]))


def run_reprise(
    mode: str, url: str, inputs: int, parallel: int, limit: RateLimit, root: Path, cache: bool
) -> dict[str, Any]:
    """One experiment of reprise; wall time and what its runs recorded."""
    from reprise.experiments import Experiment, LocalExecutor

    os.environ["OPENAI_BASE_URL"] = url + "/v1"
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench-not-a-key")
    cluster: Any = None
    if mode == "dask":
        from distributed import Client, LocalCluster

        from reprise.experiments import DaskExecutor

        # The workers import the flow as bench.llm_ratelimited:flow.
        os.environ["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")])
        cluster = LocalCluster(n_workers=2, threads_per_worker=parallel // 2, processes=True, dashboard_address=None)
        executor: Any = DaskExecutor(Client(cluster), shared_filesystem=True)
    else:
        executor = LocalExecutor("inline" if mode == "inline" else "process")
    experiment = Experiment(
        "bench.llm_ratelimited:flow",
        [{"id": f"i{i}", "initial_inputs": {"q": f"question {i}"}} for i in range(inputs)],
        max_concurrency=parallel,
        project_root=root,
        executor=executor,
        outcome_repo=False,
        model_cache=cache,
        model_rate_limit=limit,
    )
    earlier = set((root / "runs").glob("llm_*"))
    t0 = time.perf_counter()
    summary = anyio.run(experiment.run)
    wall = time.perf_counter() - t0
    if cluster is not None:
        cluster.close()
    waits = [
        json.loads(p.read_text()).get("limiter_wait_s", 0.0)
        for run in set((root / "runs").glob("llm_*")) - earlier
        for p in run.glob("llm/**/result.json")
        if p.parent.name in ("plan", "answer")
    ]
    return {
        "wall_s": round(wall, 2),
        "successes": summary.successes,
        "failures": summary.failures,
        "mean_limiter_wait_s": round(sum(waits) / len(waits), 3) if waits else None,
    }


def run_langgraph(python: Path, url: str, inputs: int, parallel: int, rate: float) -> dict[str, Any]:
    command = [str(python), str(BENCH_DIR / "peers" / "langgraph_llm_peer.py"), "--url", url + "/v1"]
    command += ["--inputs", str(inputs), "--parallel", str(parallel), "--rate", str(rate)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    floor = args.inputs * 3 / args.rate
    limit = RateLimit(requests_per_minute=args.rate * 60 * args.headroom, max_concurrency=args.concurrency)
    results: list[dict[str, Any]] = []
    for system in args.systems:
        runs: list[tuple[str, bool]] = [("", False)]
        if system != "langgraph" and args.cache:
            runs += [("cache, 1st", True), ("cache, 2nd", True)]
        with tempfile.TemporaryDirectory(prefix=f"reprise-llm-{system}-") as tmp:
            for label, cache in runs:
                with model_server(args.rate, args.concurrency, args.delay) as (url, counts):
                    if system == "langgraph":
                        python = BENCH_DIR / ".venvs" / "langgraph" / "bin" / "python"
                        if not python.exists():
                            print("langgraph: no venv in bench/.venvs (python -m bench installs it); skipped")
                            continue
                        figures = run_langgraph(python, url, args.inputs, args.parallel, args.rate)
                    else:
                        root = Path(tmp) / ("cached" if cache else "plain")
                        figures = run_reprise(system, url, args.inputs, args.parallel, limit, root, cache)
                calls = counts["answered"] + counts["rejected"]
                entry = {
                    "system": system + (f" ({label})" if label else ""),
                    **figures,
                    "calls": calls,
                    "answered": counts["answered"],
                    "rejected_429": counts["rejected"],
                    "429_per_call": round(counts["rejected"] / max(1, counts["answered"]), 4),
                    "wall_over_floor": round(figures["wall_s"] / floor, 3) if "wall_s" in figures else None,
                }
                results.append(entry)
                print(json.dumps(entry), flush=True)
    return results


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    floor = args.inputs * 3 / args.rate
    print(
        f"\nllm-ratelimited: {args.inputs} inputs x 3 calls, --parallel {args.parallel}; server R={args.rate:g}/s, "
        f"C={args.concurrency}, {args.delay * 1000:g} ms a call; floor {floor:.1f} s"
    )
    print(f"{'system':<22} {'wall s':>8} {'x floor':>8} {'calls':>6} {'429s':>6} {'429/call':>9} {'failed':>7}")
    for r in results:
        print(
            f"{r['system']:<22} {r.get('wall_s', '-'):>8} {r.get('wall_over_floor') or '-':>8} {r['calls']:>6} "
            f"{r['rejected_429']:>6} {r['429_per_call']:>9} {r.get('failures', r.get('error', '-'))!s:>7.7}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--inputs", type=int, default=300)
    p.add_argument("--parallel", type=int, default=32)
    p.add_argument("--rate", type=float, default=20.0, help="the server's requests per second (R)")
    p.add_argument("--concurrency", type=int, default=8, help="the server's requests at once (C)")
    p.add_argument("--delay", type=float, default=0.05, help="seconds per answered call")
    p.add_argument(
        "--headroom",
        type=float,
        default=0.95,
        help="reprise's requests_per_minute as a share of the server's rate (default 0.95: see docs/nodes.md)",
    )
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--no-cache", dest="cache", action="store_false", help="skip the two runs with the cache on")
    p.add_argument("--output", type=Path, default=None, help="also write the results here (JSON)")
    args = p.parse_args(argv)
    args.systems = [s for s in args.systems.split(",") if s]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown:
        p.error(f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    results = measure(args)
    print_table(results, args)
    if args.output is not None:
        args.output.write_text(json.dumps({"options": vars(args) | {"output": None}, "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
