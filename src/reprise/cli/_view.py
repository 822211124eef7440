"""``reprise view``: write the self-contained HTML view of a run, an experiment, the runs of a
run root, or two or more runs compared."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from reprise.cli._common import EXIT_OK, Output, UsageError, add_common, note_skipped, run_root_of
from reprise.errors import RunFileError

__all__ = ["register"]

#: Run pages the runs page writes by default (the newest runs); other rows name the command.
DEFAULT_RUNS_PAGES = 100


def register(subparsers: Any) -> None:
    """Add ``view``."""
    p = subparsers.add_parser(
        "view",
        help="write the HTML view of a run, an experiment, the runs, or runs compared",
        description="Write one self-contained HTML file (it opens offline, from disk). A run's view goes "
        "to <run root>/.views/<RUN_ID>.html unless -o says otherwise; views in one folder link the runs "
        "of a lineage to each other. --runs writes <run root>/.views/runs.html, --compare "
        "<run root>/.views/compare_<ids>.html.",
    )
    p.add_argument("run_id", metavar="RUN_ID", nargs="?", help="the run to show")
    p.add_argument("--experiment", metavar="NAME", help="show an experiment (its name, folder name or folder path)")
    p.add_argument(
        "--experiments-dir",
        metavar="DIR",
        help="where experiment folders live (default: $REPRISE_EXPERIMENTS_DIR, else ./experiments)",
    )
    p.add_argument("--runs", action="store_true", help="show the runs of the run root, newest first")
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="with --runs: a reprise.log metric whose latest value is a column (repeat; default: the most logged)",
    )
    p.add_argument("--limit", type=int, metavar="N", help="with --runs: only the newest N runs")
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="RUN",
        help="compare two or more runs: metric curves overlaid, configs side by side, outcomes that differ",
    )
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    add_common(p)
    p.set_defaults(handler=_view)


def _view(args: argparse.Namespace, out: Output) -> int:
    chosen = [args.run_id is not None, args.experiment is not None, args.runs, args.compare is not None]
    if sum(chosen) != 1:
        raise UsageError("give one of RUN_ID, --experiment NAME, --runs or --compare RUN RUN ...")
    if (args.metric or args.limit is not None) and not args.runs:
        raise UsageError("--metric and --limit go with --runs")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit takes a positive number")
    run_root = run_root_of(args)
    data: dict[str, Any]
    if args.run_id is not None:
        from reprise._api import Api
        from reprise.view import write_run_view

        run = Api(run_root).run_dir(args.run_id)
        target = Path(args.output) if args.output else run_root / ".views" / f"{run.run_id}.html"
        problems: list[RunFileError] = []
        written = write_run_view(run.path, target, problems=problems)
        note_skipped(out, problems)
        data = {"run_id": run.run_id, "path": str(written.absolute())}
    elif args.runs:
        from reprise.view import write_runs_view

        target = Path(args.output) if args.output else run_root / ".views" / "runs.html"
        # Run pages beside it, where `reprise view RUN_ID` writes them, unless -o says otherwise.
        written = write_runs_view(
            run_root,
            target,
            metrics=args.metric,
            limit=args.limit,
            max_run_views=DEFAULT_RUNS_PAGES,
            pages_dir=None if args.output else target.parent,
        )
        data = {"run_root": str(run_root), "path": str(written.absolute())}
    elif args.compare is not None:
        from reprise._api import Api
        from reprise.view import write_compare_view

        if len(args.compare) < 2:
            raise UsageError("--compare takes two or more runs")
        api = Api(run_root)
        run_ids = [api.run_dir(run_id).run_id for run_id in args.compare]
        # The random suffix of each run id names the page: short, and different for other runs.
        name = "compare_" + "_".join(run_id.rsplit("_", 1)[-1] for run_id in run_ids) + ".html"
        target = Path(args.output) if args.output else run_root / ".views" / name
        written = write_compare_view(run_root, run_ids, target, pages_dir=None if args.output else target.parent)
        data = {"run_ids": run_ids, "path": str(written.absolute())}
    else:
        from reprise.experiments._folder import ExperimentFolder
        from reprise.view import write_experiment_view

        base = Path(args.experiments_dir or os.environ.get("REPRISE_EXPERIMENTS_DIR") or "experiments").absolute()
        folder = ExperimentFolder.find(base, args.experiment)
        target = Path(args.output) if args.output else base / f"{folder.path.name}.html"
        written = write_experiment_view(folder.path, target, run_root)
        data = {"experiment": folder.path.name, "experiment_dir": str(folder.path), "path": str(written.absolute())}
    if args.open:
        import webbrowser

        webbrowser.open(written.absolute().as_uri())
    out.emit(data, f"wrote {data['path']}")
    return EXIT_OK
