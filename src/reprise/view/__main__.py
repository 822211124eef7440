"""``python -m reprise.view RUN_DIR [-o FILE.html] [--open]`` and
``python -m reprise.view --experiment DIR [--run-root DIR] [-o FILE.html] [--open]``.

Writes the self-contained HTML view and prints its path. Default output: ``<run_id>.html`` in
the current directory for a run; ``<experiment dir>/view.html`` (run pages in
``<experiment dir>/view_runs/``) for an experiment.
"""

from __future__ import annotations

import argparse
import sys
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from reprise.errors import RepriseError
from reprise.view import DEFAULT_MAX_RUN_VIEWS, write_experiment_view, write_run_view


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m reprise.view", description="Write the HTML view of a run or experiment."
    )
    parser.add_argument("run_dir", nargs="?", type=Path, help="a run directory (runs/<run_id>)")
    parser.add_argument("--experiment", type=Path, metavar="DIR", help="an experiment folder instead of a run")
    parser.add_argument(
        "--run-root",
        type=Path,
        metavar="DIR",
        help="where the experiment's runs are (default: ../../runs from the experiment folder)",
    )
    parser.add_argument(
        "--max-run-views",
        type=int,
        default=DEFAULT_MAX_RUN_VIEWS,
        help="run pages an experiment view writes at most (failed runs first)",
    )
    parser.add_argument("-o", "--output", type=Path, metavar="FILE.html", help="where to write the page")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.experiment is None):
        parser.error("give a run directory or --experiment DIR (one of them)")
    try:
        if args.experiment is not None:
            folder: Path = args.experiment
            run_root = args.run_root if args.run_root is not None else folder.resolve().parent.parent / "runs"
            out = args.output if args.output is not None else folder / "view.html"
            written = write_experiment_view(folder, out, run_root, max_run_views=args.max_run_views)
        else:
            run_dir: Path = args.run_dir
            out = args.output if args.output is not None else Path(f"{run_dir.resolve().name}.html")
            written = write_run_view(run_dir, out)
    except RepriseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(written)
    if args.open:
        webbrowser.open(written.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
