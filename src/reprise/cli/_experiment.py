"""``reprise experiment``: run a target over many inputs, resume an experiment, compare two, report.

::

    reprise experiment [run] [TARGET] [--config FILE] [--inputs FILE] [--iterations N] [--parallel K]
                       [--timeout S] [--name NAME] [--executor local|inline|dask://HOST:PORT] [--json]
    reprise experiment resume NAME [--json]
    reprise experiment compare A B [--json]
    reprise experiment parse NAME [--html] [--output DIR]

``run`` is the default sub-command: ``reprise experiment`` alone reads ``configs/simulation.yaml``
(see :mod:`reprise.experiments._config`), and options override what it says.

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
from typing import TYPE_CHECKING, Any

from reprise.cli._common import (
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

if TYPE_CHECKING:
    from reprise.experiments import ExperimentConfig

__all__ = ["ACTIONS", "default_action", "register"]

#: The sub-commands of ``reprise experiment``; anything else first is ``run``'s target.
ACTIONS = ("run", "resume", "compare", "parse", "generate")


def default_action(argv: list[str]) -> list[str]:
    """``reprise experiment [TARGET] ...`` is ``reprise experiment run [TARGET] ...``: insert
    ``run`` after ``experiment`` unless a sub-command (or ``--help``) follows it."""
    for i, arg in enumerate(argv):
        if arg.startswith("-"):
            continue
        if arg != "experiment":
            return argv
        rest = argv[i + 1 :]
        if rest and (rest[0] in ACTIONS or rest[0] in ("-h", "--help")):
            return argv
        return [*argv[: i + 1], "run", *rest]
    return argv


def register(subparsers: Any) -> None:
    """Add ``experiment`` and its sub-commands ``run`` (the default), ``resume``, ``compare``, ``parse``."""
    p = subparsers.add_parser(
        "experiment",
        help="run a flow, agent or function over many inputs and iterations; resume, compare, report",
        description="Run a target once per input and iteration, each a normal run with its own run "
        "directory, trace and git branch, and write experiments/<name>_<stamp>/ (config.yaml, runs.jsonl, "
        "trace_summary.jsonl, summary.json, errors.json). 'reprise experiment' alone reads "
        "configs/simulation.yaml. Exit code 0 all runs completed, 1 some failed, 2 error, 130 interrupted.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    run = actions.add_parser(
        "run",
        help="run an experiment (the default: 'reprise experiment [TARGET] ...')",
        description="Run TARGET (MODULE:OBJECT or flows.py:OBJECT: a flow, an agent or a function) once per "
        "input and iteration. Settings come from configs/simulation.yaml (or --config) when it exists; "
        "options override it. One failing, hanging or crashing run fails alone. Ctrl-C stops launching, "
        "cancels what runs and writes the summary; 'resume NAME' finishes the rest.",
    )
    run.add_argument("target", nargs="?", metavar="TARGET", help="what to run (default: runner.target of the config)")
    run.add_argument(
        "--config", metavar="FILE", help="the configuration (default: PROJECT/configs/simulation.yaml if it exists)"
    )
    run.add_argument(
        "--inputs", metavar="FILE", help="the inputs: .yaml/.yml, .json or .jsonl (default: inputs/generated.yaml)"
    )
    run.add_argument("--iterations", type=int, default=None, metavar="N", help="runs per input (default 1)")
    run.add_argument("--name", help="the experiment's name (default: the target's id or name)")
    _add_run_options(run)
    run.add_argument(
        "--no-git", action="store_true", help="do not commit the runs' outcomes to git (faster for large experiments)"
    )
    run.set_defaults(handler=_run)

    resume = actions.add_parser(
        "resume",
        help="finish an interrupted experiment",
        description="Run what an experiment has not finished (runs.jsonl is the record); NAME is an "
        "experiment name (its latest folder), a folder name or a folder path.",
    )
    resume.add_argument("name", metavar="NAME")
    _add_run_options(resume)
    resume.set_defaults(handler=_resume)

    compare = actions.add_parser(
        "compare",
        help="compare two experiments",
        description="Success rates, durations and costs side by side, and the inputs whose outcome changed.",
    )
    compare.add_argument("a", metavar="A")
    compare.add_argument("b", metavar="B")
    _add_folder_options(compare)
    add_common(compare)
    compare.set_defaults(handler=_compare)

    parse = actions.add_parser(
        "parse",
        help="write a readable report of an experiment (Markdown, optionally HTML)",
        description="Write report.md (and report.html with --html) in the experiment folder: per input, "
        "its text and persona, and each iteration's output, duration, status and error.",
    )
    parse.add_argument("name", metavar="NAME")
    parse.add_argument("--html", action="store_true", help="write report.html as well")
    parse.add_argument("--output", metavar="DIR", help="where the reports go (default: the experiment folder)")
    _add_folder_options(parse)
    add_common(parse)
    parse.set_defaults(handler=_parse)

    generate = actions.add_parser(
        "generate",
        help="write an inputs file: variations of base inputs for each persona",
        description="Vary the configuration's generation.base_inputs for each of generation.personas: through "
        "a model (generation.model: openai, any OpenAI-compatible server, or anthropic) or, offline, through "
        "generation.templates. Writes the seed's generated_inputs: form.",
    )
    generate.add_argument("--config", metavar="FILE", help="the configuration (default: configs/simulation.yaml)")
    generate.add_argument(
        "--output", metavar="FILE", help="the file to write (default: inputs: of the config, inputs/generated.yaml)"
    )
    generate.add_argument("--limit", type=int, default=None, metavar="N", help="write at most N inputs")
    generate.add_argument(
        "--offset", type=int, default=0, metavar="N", help="skip the first N inputs (the next batch after --limit N)"
    )
    generate.add_argument(
        "--mode",
        choices=("auto", "model", "template"),
        default="auto",
        help="model (ask generation.model), template (offline) or auto (the model when the config names one)",
    )
    generate.add_argument("--project-root", metavar="DIR", help="the project directory (default: .)")
    add_common(generate)
    generate.set_defaults(handler=_generate)


def _add_folder_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project-root", metavar="DIR", help="the project directory, imported from (default: .)")
    parser.add_argument(
        "--experiments-dir",
        "--output-dir",
        dest="experiments_dir",
        metavar="DIR",
        help="where experiment folders go (default: output.directory of the config, else PROJECT/experiments)",
    )


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallel", type=int, default=None, metavar="K", help="runs at once (default 4)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="seconds per run (default: none)")
    parser.add_argument(
        "--executor",
        default=None,
        metavar="EXECUTOR",
        help="local (worker processes, default), inline (one process, no crash isolation) or "
        "dask://HOST:PORT (a Dask scheduler; needs reprise-agents[dask])",
    )
    _add_folder_options(parser)
    add_progress(parser)
    add_common(parser)


# -- pieces ----------------------------------------------------------------------------------
def _project_root(args: argparse.Namespace) -> Path:
    root = Path(args.project_root or ".").resolve()
    if str(root) not in sys.path:
        # Like `python -m`: the project's modules import from its root (worker processes too).
        sys.path.insert(0, str(root))
    return root


def _config(args: argparse.Namespace, project_root: Path) -> tuple[ExperimentConfig, Path | None]:
    """The configuration (``--config``, else ``configs/simulation.yaml`` when it exists, else
    the defaults) and the file it came from."""
    from reprise.experiments import DEFAULT_CONFIG, ExperimentConfig, load_config

    given = getattr(args, "config", None)
    path = Path(given).resolve() if given else project_root / DEFAULT_CONFIG
    if given or path.is_file():
        return load_config(path), path
    return ExperimentConfig(), None


def _experiments_dir(args: argparse.Namespace, project_root: Path, config: ExperimentConfig | None = None) -> Path:
    if args.experiments_dir:
        return Path(args.experiments_dir).resolve()
    if config is None:
        config, _ = _config(args, project_root)
    return (project_root / config.output.directory).resolve()


def _executor(spec: str | None) -> Any:
    from reprise.experiments import LocalExecutor

    if spec is None or spec in ("local", "process"):
        return LocalExecutor()
    if spec == "inline":
        return LocalExecutor("inline")
    if "://" in spec:
        from reprise.experiments._dask_executor import DaskExecutor

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


def _finish(experiment: Any, out: Output, *, announce: bool = False) -> int:
    import anyio

    if announce and experiment.progress is not None:
        # The seed's opening lines, before the bar (or the plain progress lines) takes over.
        out.note(f"Starting experiment {experiment.name}...")
        out.note(f"Loaded {len(experiment.inputs)} inputs from {experiment.inputs_source}")
        out.note(f"Running {experiment.iterations} iterations per input ({experiment.total} total runs)")

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


# -- the sub-commands --------------------------------------------------------------------------
def _run(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import (
        DEFAULT_CONFIG,
        DEFAULT_INPUTS,
        Experiment,
        ExperimentConfigError,
        ExperimentError,
        import_target,
    )

    _positive(args.iterations, "--iterations")
    _positive(args.parallel, "--parallel")
    _positive(args.timeout, "--timeout")
    project_root = _project_root(args)
    config, config_path = _config(args, project_root)
    runner = config.runner
    target = args.target or runner.target
    if target is None:
        where = config_path or DEFAULT_CONFIG
        raise UsageError(f"no target: give MODULE:OBJECT, or set runner.target in {where}")
    if args.target is None:
        # A target named by the file is checked here, so its error names the file.
        try:
            import_target(target, project_root)
        except ExperimentError as exc:
            raise ExperimentConfigError(f"{config_path}: runner.target: {exc.message}") from None
    if args.inputs:
        inputs = Path(args.inputs).resolve()
    else:
        inputs = (project_root / config.inputs).resolve()
        if not inputs.is_file():
            origin = f"inputs: in {config_path}" if config_path and "inputs" in config.model_fields_set else None
            hint = f"fix {origin}" if origin else f"write {DEFAULT_INPUTS} or set inputs: in {DEFAULT_CONFIG}"
            raise UsageError(f"no inputs file {inputs}: pass --inputs FILE or {hint}")
    replay = None
    if config.replay_args is not None and config.replay_args.enabled:
        from reprise.experiments import ArgumentReplay

        replay = ArgumentReplay(
            project_root / config.replay_args.recording_file,
            config.replay_args.override_param_path,
            source=f"{config_path}: replay_args",
        )
    timeout = args.timeout if args.timeout is not None else runner.timeout
    experiment = Experiment(
        target,
        inputs,
        iterations=args.iterations or runner.iterations,
        name=args.name or config.name,
        max_concurrency=args.parallel or runner.parallel,
        timeout=timeout,
        executor=_executor(args.executor or runner.executor),
        project_root=project_root,
        run_root=run_root_of(args),
        experiments_dir=_experiments_dir(args, project_root, config),
        outcome_repo=not args.no_git,
        progress=_progress(args, out),
        config_file=config_path,
        replay=replay,
    )
    return _finish(experiment, out, announce=True)


def _resume(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import Experiment, ExperimentFolder

    _positive(args.parallel, "--parallel")
    _positive(args.timeout, "--timeout")
    project_root = _project_root(args)
    folder = ExperimentFolder.find(_experiments_dir(args, project_root), args.name)
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

    base = _experiments_dir(args, Path(args.project_root or ".").resolve())
    a, b = (ExperimentFolder.find(base, name) for name in (args.a, args.b))
    comparison = compare_experiments(a, b)
    out.emit(comparison.model_dump(mode="json"), lambda: format_comparison(comparison))
    return EXIT_OK


def _parse(args: argparse.Namespace, out: Output) -> int:
    from reprise.experiments import ExperimentFolder, write_report

    folder = ExperimentFolder.find(_experiments_dir(args, Path(args.project_root or ".").resolve()), args.name)
    written = write_report(folder, Path(args.output).resolve() if args.output else None, html=args.html)
    out.emit(
        {"folder": str(folder.path), "reports": [str(p) for p in written]},
        lambda: "\n".join(f"wrote {p}" for p in written),
    )
    return EXIT_OK


def _generate(args: argparse.Namespace, out: Output) -> int:
    import anyio

    from reprise.experiments import DEFAULT_CONFIG, generate_inputs

    _positive(args.limit, "--limit")
    if args.offset < 0:
        raise UsageError(f"--offset must be >= 0, got {args.offset}")
    project_root = Path(args.project_root or ".").resolve()
    config, config_path = _config(args, project_root)
    where = config_path or project_root / DEFAULT_CONFIG
    if config.generation is None:
        raise UsageError(f"no generation: block in {where}: add base_inputs and personas to vary")
    output = Path(args.output).resolve() if args.output else (project_root / config.inputs).resolve()
    use_model = None if args.mode == "auto" else args.mode == "model"
    entries = anyio.run(
        partial(
            generate_inputs,
            config.generation,
            output,
            limit=args.limit,
            offset=args.offset,
            use_model=use_model,
            source=f"{where}: generation",
        )
    )
    out.emit(
        {"output": str(output), "count": len(entries), "inputs": entries},
        lambda: f"wrote {len(entries)} inputs to {output}",
    )
    return EXIT_OK
