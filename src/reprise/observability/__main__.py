"""``python -m reprise.observability RUN_DIR``: print a run's span tree."""

from __future__ import annotations

import argparse
import sys

from reprise.errors import RepriseError, RunFileError
from reprise.observability.view import read_spans, render_trace_tree

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Print the span tree of the run in ``RUN_DIR``; exit status 2 if it has no trace. Lines of
    ``trace.jsonl`` that are not spans are skipped, each with a warning on stderr."""
    parser = argparse.ArgumentParser(
        prog="python -m reprise.observability", description="Print the span tree of a reprise run."
    )
    parser.add_argument("run_dir", help="a run directory, its .trace directory, or a trace.jsonl file")
    parser.add_argument("--ascii", action="store_true", help="draw the tree with ASCII characters only")
    parser.add_argument(
        "--max-children", type=int, default=100, metavar="N", help="show at most N children per span (default 100)"
    )
    parser.add_argument("--all", action="store_true", help="show every child (overrides --max-children)")
    args = parser.parse_args(argv)
    # Box-drawing characters only where the terminal can show them.
    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "└├│".encode(encoding)
        ascii_only = bool(args.ascii)
    except (UnicodeEncodeError, LookupError):
        ascii_only = True
    problems: list[RunFileError] = []
    try:
        spans = read_spans(args.run_dir, problems)
    except RepriseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: skipped: {problem}", file=sys.stderr)
    sys.stdout.write(render_trace_tree(spans, ascii=ascii_only, max_children=None if args.all else args.max_children))
    return 0


if __name__ == "__main__":
    sys.exit(main())
