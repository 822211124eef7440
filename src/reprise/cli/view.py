"""``reprise view``: write the self-contained HTML view of a run or of an experiment."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from reprise.cli.common import EXIT_OK, RUN_HELP, Output, UsageError, add_common, resolve_run, run_root_of

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``view``."""
    p = subparsers.add_parser(
        "view",
        help="write the HTML view of a run or an experiment",
        description="Write one self-contained HTML file (it opens offline, from disk). A run's view goes "
        "to <run root>/.views/<RUN_ID>.html unless -o says otherwise; views in one folder link the runs "
        "of a lineage to each other.",
    )
    p.add_argument("run_id", metavar="RUN", nargs="?", help=f"the run to show: {RUN_HELP}")
    p.add_argument("--experiment", metavar="NAME", help="show an experiment (its name, folder name or folder path)")
    p.add_argument(
        "--experiments-dir",
        metavar="DIR",
        help="where experiment folders live (default: $REPRISE_EXPERIMENTS_DIR, else ./experiments)",
    )
    p.add_argument("-o", "--output", metavar="FILE.html", help="where to write the page")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    add_common(p)
    p.set_defaults(handler=_view)


def _view(args: argparse.Namespace, out: Output) -> int:
    if (args.run_id is None) == (args.experiment is None):
        raise UsageError("give either RUN or --experiment NAME")
    run_root = run_root_of(args)
    if args.run_id is not None:
        from reprise.api import Api
        from reprise.view import write_run_view

        run = Api(run_root).run_dir(resolve_run(args, args.run_id))
        target = Path(args.output) if args.output else run_root / ".views" / f"{run.run_id}.html"
        written = write_run_view(run.path, target)
        data: dict[str, Any] = {"run_id": run.run_id, "path": str(written.absolute())}
    else:
        from reprise.experiments.folder import ExperimentFolder
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
