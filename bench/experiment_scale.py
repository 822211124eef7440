"""Experiments at scale: per-item overhead and memory of ``Experiment`` (issue 8).

A trivial one-node flow over N items with ``max_concurrency`` K, through each executor:
``inline`` (the experiment's own event loop), ``process`` (the default pool of worker
processes) and ``dask`` (a scheduler and two single-threaded workers on loopback, each in its own
process). Each mode runs in a fresh process, so RSS figures are the mode's own. Reports wall
time, items/s, wall time per item, the runs' p50/p95 duration, the experiment process's RSS after
10%, 50% and 100% of the items (flat = nothing kept per item), its peak RSS and that of its
largest worker process (Dask: a worker's RSS at the end)::

    python -m bench.experiment_scale                          # 10,000 items, K=32, all modes
    python -m bench.experiment_scale --items 2000 --modes inline,process --git
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from reprise import FlowDefinition, Initial


def bump(n: int) -> int:
    return n + 1


#: The trivial flow: one node. Workers import it as ``bench.experiment_scale:flow``.
flow = FlowDefinition("scale").node("bump", bump, inputs={"n": Initial("n")})


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_mode(mode: str, items: int, parallel: int, git: bool, root: Path) -> dict[str, Any]:
    """One mode in this process; returns its figures."""
    from reprise.experiments import Experiment, ItemResult, LocalExecutor

    samples: dict[str, float] = {}
    marks = {max(1, items // 10): "rss_10pct_mib", max(1, items // 2): "rss_50pct_mib", items: "rss_100pct_mib"}
    done = 0

    def on_result(result: ItemResult) -> None:
        nonlocal done
        done += 1
        if done in marks:
            samples[marks[done]] = round(_rss_mib(), 1)

    cluster: list[subprocess.Popen[bytes]] = []
    client: Any = None
    if mode == "dask":
        from distributed import Client

        from reprise.experiments._dask_executor import DaskExecutor

        # Scheduler and workers in their own processes (as on a real cluster), so this process's
        # memory is the experiment client's alone.
        dask_cli = str(Path(sys.executable).with_name("dask"))
        scheduler_file = root / "scheduler.json"
        common = ["--no-dashboard", "--scheduler-file", str(scheduler_file)]
        cluster.append(subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0", *common]))
        while not scheduler_file.exists():
            time.sleep(0.1)
        # Workers must import the target's module (bench.experiment_scale) themselves.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
        worker_cmd = [dask_cli, "worker", "--nworkers", "2", "--nthreads", "1", "--host", "127.0.0.1", *common]
        cluster.append(subprocess.Popen(worker_cmd, env=env))
        client = Client(scheduler_file=str(scheduler_file), set_as_default=False)
        client.wait_for_workers(2)
        executor: Any = DaskExecutor(client)
    else:
        executor = LocalExecutor(mode)  # type: ignore[arg-type]
    inputs = [{"id": f"i{i}", "initial_inputs": {"n": i}} for i in range(items)]
    experiment = Experiment(
        "bench.experiment_scale:flow",
        inputs,
        max_concurrency=parallel,
        project_root=root,
        executor=executor,
        outcome_repo=git,
        on_result=on_result,
    )
    rss_start = _rss_mib()
    t0 = time.perf_counter()
    summary = anyio.run(experiment.run)
    wall = time.perf_counter() - t0
    worker_rss = 0.0
    if client is not None:
        worker_rss = max(client.run(_rss_mib).values())
        client.close()
        for process in reversed(cluster):
            process.terminate()
            process.wait()
    assert summary.successes == items, summary
    return {
        "mode": mode,
        "items": items,
        "parallel": parallel,
        "git": git,
        "wall_s": round(wall, 2),
        "items_per_s": round(items / wall, 1),
        "wall_per_item_ms": round(wall / items * 1000, 3),
        "run_p50_ms": round((summary.duration_p50_s or 0) * 1000, 2),
        "run_p95_ms": round((summary.duration_p95_s or 0) * 1000, 2),
        "rss_start_mib": round(rss_start, 1),
        **samples,
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "peak_child_rss_mib": round(worker_rss or resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=32)
    parser.add_argument("--modes", default="inline,process,dask")
    parser.add_argument("--git", action="store_true", help="commit every run's outcomes to git (the default for users)")
    parser.add_argument("--one", metavar="MODE", help=argparse.SUPPRESS)  # internal: run one mode here
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_mode(args.one, args.items, args.parallel, args.git, Path(args.root))))
        return
    results = []
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix=f"reprise-exp-{mode}-") as root:
            command = [
                sys.executable, "-m", "bench.experiment_scale", "--one", mode, "--root", root,
                "--items", str(args.items), "--parallel", str(args.parallel),
            ] + (["--git"] if args.git else [])  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"{mode}: failed\n{done.stderr[-3000:]}", file=sys.stderr)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(json.dumps(result), flush=True)
    print()
    header = f"{'mode':<8} {'items':>6} {'K':>3} {'git':>4} {'wall s':>8} {'items/s':>8} {'ms/item':>8} "
    header += f"{'RSS 10%':>8} {'RSS 50%':>8} {'RSS 100%':>9} {'peak':>7} {'worker':>7}"
    print(header)
    for r in results:
        print(
            f"{r['mode']:<8} {r['items']:>6} {r['parallel']:>3} {'yes' if r['git'] else 'no':>4} {r['wall_s']:>8} "
            f"{r['items_per_s']:>8} {r['wall_per_item_ms']:>8} {r.get('rss_10pct_mib', '-'):>8} "
            f"{r.get('rss_50pct_mib', '-'):>8} {r.get('rss_100pct_mib', '-'):>9} {r['peak_rss_mib']:>7} "
            f"{r['peak_child_rss_mib']:>7}"
        )


if __name__ == "__main__":
    main()
