"""``reprise gc``: fold the objects the outcome commits left (``git gc`` on the repositories)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reprise.cli._common import EXIT_OK, Output, add_common, run_root_of

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add ``gc``."""
    p = subparsers.add_parser(
        "gc",
        help="fold the outcome repositories' objects now (git gc)",
        description="Run git gc on every outcome repository under the run root (<run root>/outcome/*), "
        "or on the one --repo names. Each run's commit adds a pack; this folds them into one.",
    )
    p.add_argument("--repo", metavar="DIR", help="only this outcome repository")
    add_common(p)
    p.set_defaults(handler=_gc)


def _gc(args: argparse.Namespace, out: Output) -> int:
    from reprise.run._outcome_repo import OutcomeRepository

    if args.repo:
        paths = [Path(args.repo).absolute()]
    else:
        root = run_root_of(args) / "outcome"
        paths = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    done = [OutcomeRepository(path).gc() for path in paths]

    def text() -> str:
        if not done:
            return f"no outcome repository under {run_root_of(args) / 'outcome'}"
        return "\n".join(f"{d['repository']}: {_objects(d['before'])} -> {_objects(d['after'])}" for d in done)

    out.emit(done, text)
    return EXIT_OK


def _objects(counts: dict[str, int]) -> str:
    loose, packs, size = (counts.get(key, 0) for key in ("count", "packs", "size_pack"))
    return f"{loose} loose objects, {packs} packs, {size} KiB packed"
