"""``reprise experiment``: run a flow over many inputs, resume an experiment, compare two.

::

    reprise experiment MODULE:OBJECT --inputs FILE [--iterations N] [--parallel K] [--timeout S]
                       [--name NAME] [--executor local|inline|dask://HOST:PORT] [--json]
    reprise experiment resume NAME [--json]
    reprise experiment compare A B [--json]

NAME, A and B are experiment names (their latest folder), folder names
(``review_20250301_142233``) or folder paths, under ``--experiments-dir`` (default
``<project root>/experiments``). Exit codes: 0 every run completed, 1 some runs failed, timed
out or crashed, 2 error, 130 interrupted (Ctrl-C: the summary is written; ``resume`` finishes).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path
from typing import Any

from reprise.cli.common import (
    EXIT_OK,
    EXIT_RUN_CANCELLED,
    EXIT_RUN_FAILED,
    Output,
    UsageError,
    add_common,
    add_progress,
    format_duration,
    run_root_of,
)

__all__ = ["register"]

_COMMANDS = ("resume", "compare")


def register(subparsers: Any) -> None:
    """Add ``experiment`` (with its ``resume`` and ``compare`` forms)."""
    p = subparsers.add_parser(
        "experiment",
        help="run a flow or agent over many inputs and iterations; resume or compare experiments",
        usage="reprise experiment MODULE:OBJECT --inputs FILE [options]\n"
        "       reprise experiment resume NAME [options]\n"
        "       reprise experiment compare A B [--json]",
        description="Run MODULE:OBJECT (or flows.py:OBJECT) once per input and iteration, each a normal "
        "run with its own run directory, trace and git branch, and write experiments/<name>_<stamp>/ "
        "(config.yaml, runs.jsonl, summary.json, errors.json). One failing, hanging or crashing run "
        "fails alone. Ctrl-C stops launching, cancels what runs and writes the summary; "
        "'resume NAME' finishes the rest. 'compare A B' shows success rates, durations and costs "
        "side by side, and the inputs whose outcome changed. Exit code 0 all runs completed, "
        "1 some failed, 2 error, 130 interrupted.",
    )
    p.add_argument("target", metavar="MODULE:OBJECT", help="what to run, or 'resume' / 'compare'")
    p.add_argument("names", nargs="*", metavar="NAME", help="resume NAME; compare A B")
    p.add_argument("--inputs", metavar="FILE", help="the inputs: a .yaml/.yml, .json or .jsonl file of items")
    p.add_argument("--iterations", type=int, default=1, metavar="N", help="runs per input (default 1)")
    p.add_argument("--parallel", type=int, default=None, metavar="K", help="runs at once (default 4)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds per run (default: none)")
    p.add_argument("--name", help="the experiment's name (default: the target's id or name)")
    p.add_argument(
        "--executor",
        default=None,
        metavar="EXECUTOR",
        help="local (worker processes, default), inline (one process, no crash isolation) or "
        "dask://HOST:PORT (a Dask scheduler; needs reprise-agents[dask])",
    )
    p.add_argument("--project-root", metavar="DIR", help="the project directory, imported from (default: .)")
    p.add_argument(
        "--experiments-dir", metavar="DIR", help="where experiment folders go (default: PROJECT/experiments)"
    )
    p.add_argument(
        "--no-git", action="store_true", help="do not commit the runs' outcomes to git (faster for large experiments)"
    )
    p.add_argument(
        "--model-cache",
        nargs="?",
        const="on",
        choices=("on", "always"),
        default=None,
        help="answer model calls identical to earlier ones from the cache beside the run root "
        "('always': also calls with temperature > 0)",
    )
    add_progress(p)
    add_common(p)
    p.set_defaults(handler=_experiment)


def _experiment(args: argparse.Namespace, out: Output) -> int:
    if args.target == "compare":
        return _compare(args, out)
    if args.target == "resume":
        return _resume(args, out)
    return _run(args, out)


# -- pieces ----------------------------------------------------------------------------------
def _project_root(args: argparse.Namespace) -> Path:
    root = Path(args.project_root or ".").resolve()
    if str(root) not in sys.path:
        # Like `python -m`: the project's modules import from its root (worker processes too).
        sys.path.insert(0, str(root))
    return root


def _experiments_dir(args: argparse.Namespace, project_root: Path) -> Path:
    return Path(args.experiments_dir).resolve() if args.experiments_dir else project_root / "experiments"


def _executor(spec: str | None) -> Any:
    from reprise.experiments import LocalExecutor

    if spec is None or spec in ("local", "process"):
        return LocalExecutor()
    if spec == "inline":
        return LocalExecutor("inline")
    if "://" in spec:
        from reprise.experiments.dask_executor import DaskExecutor

        return DaskExecutor(spec)
    raise UsageError(f"--executor {spec!r}: use local, inline or dask://HOST:PORT")


def _progress(args: argparse.Namespace, out: Output) -> Any:
    from reprise.experiments import BarProgress, LineProgress

    mode = args.progress
    if mode == "none":
        return None
    if mode == "auto":
        mode = "rich" if out.stderr.isatty() else "plain"
    return BarProgress(out.stderr) if mode == "rich" else LineProgress(out.stderr)


def _positive(value: int | float | None, option: str) -> None:
    if value is not None and value <= 0:
        raise UsageError(f"{option} must be > 0, got {value}")


def _finish(experiment: Any, out: Output) -> int:
    import anyio

    summary = anyio.run(partial(experiment.run, handle_signals=True))
    data = summary.model_dump(mode="json")
    out.emit(data, lambda: _summary_text(data))
    if summary.interrupted:
        return EXIT_RUN_CANCELLED
    return EXIT_RUN_FAILED if summary.failures else EXIT_OK


def _summary_text(s: dict[str, Any]) -> str:
    rate = f"{s['success_rate'] * 100:.1f}%" if s["success_rate"] is not None else "-"
    state = "interrupted" if s["interrupted"] else "finished"
    lines = [
        f"experiment {s['folder']} {state}: {s['finished']}/{s['total']} runs, "
        f"{s['successes']} completed, {s['failures']} failed ({rate})",
    ]
    if s["cancelled"] or s["not_run"]:
        lines.append(f"  {s['cancelled']} cancelled, {s['not_run']} not run: reprise experiment resume {s['folder']}")
    detail = [f"duration p50 {format_duration(s['duration_p50_s'])}, p95 {format_duration(s['duration_p95_s'])}"]
    if s["tokens"] is not None:
        detail.append(f"tokens {s['tokens']}")
    if s["cost_usd"] is not None:
        detail.append(f"cost ${s['cost_usd']:.4f}")
    lines.append("  " + "; ".join(detail))
    by_status = ", ".join(f"{k} {v}" for k, v in s["by_status"].items())
    if by_status:
        lines.append(f"  by status: {by_status}")
    lines.append(f"  folder: {s['path']}")
    return "\n".join(lines)


# -- the three forms ---------------------------------------------------------------------------
def _run(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import Experiment

    if args.names:
        raise UsageError(f"unexpected arguments {' '.join(args.names)!r} after {args.target}")
    if not args.inputs:
        raise UsageError("--inputs FILE is required to run an experiment")
    _positive(args.iterations, "--iterations")
    _positive(args.parallel, "--parallel")
    _positive(args.timeout, "--timeout")
    project_root = _project_root(args)
    experiment = Experiment(
        args.target,
        Path(args.inputs).resolve(),
        iterations=args.iterations,
        name=args.name,
        max_concurrency=args.parallel or 4,
        timeout=args.timeout,
        executor=_executor(args.executor),
        project_root=project_root,
        run_root=run_root_of(args),
        experiments_dir=_experiments_dir(args, project_root),
        outcome_repo=not args.no_git,
        progress=_progress(args, out),
        model_cache="always" if args.model_cache == "always" else args.model_cache == "on",
    )
    return _finish(experiment, out)


def _resume(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import Experiment, ExperimentFolder

    if len(args.names) != 1:
        raise UsageError("usage: reprise experiment resume NAME")
    _positive(args.parallel, "--parallel")
    _positive(args.timeout, "--timeout")
    project_root = _project_root(args)
    folder = ExperimentFolder.find(_experiments_dir(args, project_root), args.names[0])
    config_root = folder.read_config().get("project_root")
    if config_root and config_root not in sys.path:
        sys.path.insert(0, str(config_root))
    experiment = Experiment.from_folder(
        folder,
        executor=_executor(args.executor) if args.executor else None,
        max_concurrency=args.parallel,
        timeout=args.timeout,
        progress=_progress(args, out),
    )
    return _finish(experiment, out)


def _compare(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import ExperimentFolder, compare_experiments, format_comparison

    if len(args.names) != 2:
        raise UsageError("usage: reprise experiment compare A B")
    base = _experiments_dir(args, Path(args.project_root or ".").resolve())
    a, b = (ExperimentFolder.find(base, name) for name in args.names)
    comparison = compare_experiments(a, b)
    out.emit(comparison.model_dump(mode="json"), lambda: format_comparison(comparison))
    return EXIT_OK
