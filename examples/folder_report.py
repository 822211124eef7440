"""Folder report: an agent that reads a folder of text files and writes a Markdown report.

It runs offline and needs no keys::

    python -m examples.folder_report                      # the sample notes, runs under ./runs
    python -m examples.folder_report --folder ~/notes --run-root /tmp/runs

The agent has two flows:

* ``analyse`` lists the folder, then a ``for_each`` over the files reads each one and counts its
  words, lines and most frequent words (up to four files at once), then a ``parallel`` block
  computes the overall statistics in three branches: the longest file, the vocabulary and the
  totals;
* ``report`` writes ``report.md`` into its node directory and returns the Markdown.

Every node's input, outcome and result land in the run directory, e.g.
``runs/<run id>/folder_report/analyse/per_file/2/count/outcome.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import anyio
from pydantic import BaseModel

from reprise import (
    AgentDefinition,
    AgentRunner,
    Api,
    FlowDefinition,
    HierarchyPath,
    Initial,
    NodeContext,
    Ref,
    RepriseError,
    RunContext,
    RunResult,
    Var,
)

__all__ = ["SAMPLE_FOLDER", "agent", "build_context", "main", "report_path", "run_report"]

#: The sample notes that ship with the example.
SAMPLE_FOLDER = Path(__file__).resolve().parent / "data" / "notes"
#: The id of the agent: the first segment of every hierarchy path in its runs.
ROOT_ID = "folder_report"
#: Files the agent reads; anything else in the folder is ignored.
TEXT_SUFFIXES = (".txt", ".md")
#: At most this many files per run (a loop over run-time data needs a bound).
MAX_FILES = 500
#: Short words that say nothing about what a file is about.
STOPWORDS = frozenset(
    """a an and are as at be been before but by can do does each every for from had has have he her
    his i if in into is it its me more my no not of on one or our she so some than that the their
    them then there these they this to too two up us was we were what when which who will with
    would you your""".split()
)
_WORD = re.compile(r"[a-z][a-z'-]*")


# -- data ----------------------------------------------------------------------------------------


class Listing(BaseModel):
    """The text files found in the folder."""

    folder: str
    files: list[str]


class FileText(BaseModel):
    """One file's name and content."""

    name: str
    text: str


class FileStats(BaseModel):
    """What the per-file loop finds in one file."""

    name: str
    words: int
    lines: int
    characters: int
    top_words: list[tuple[str, int]]
    word_counts: dict[str, int]


class Longest(BaseModel):
    """The longest file, by words."""

    name: str
    words: int


class Vocabulary(BaseModel):
    """Distinct words over all files, and the most frequent ones."""

    distinct: int
    top_words: list[tuple[str, int]]


class Totals(BaseModel):
    """Sums over all files."""

    files: int
    words: int
    lines: int
    characters: int


class Report(BaseModel):
    """The report's Markdown, also written as ``report.md`` in the node's directory (see
    :func:`report_path`). Where it lies and which run wrote it are not in it: two runs over the
    same folder make the same outcome, so comparing them shows nothing changed."""

    markdown: str


# -- nodes ---------------------------------------------------------------------------------------


def list_files(folder: str) -> Listing:
    """The readable text files directly inside ``folder``, sorted by name."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"not a folder: {root}")
    names = sorted(
        p.name for p in root.iterdir() if p.suffix.lower() in TEXT_SUFFIXES and p.is_file() and not p.is_symlink()
    )
    if not names:
        raise FileNotFoundError(f"no {' or '.join(TEXT_SUFFIXES)} files in {root}")
    return Listing(folder=str(root), files=names)


def read_file(folder: str, name: str) -> FileText:
    """Read one file of the folder; the name may not lead outside it."""
    root = Path(folder).resolve()
    path = (root / name).resolve()
    # Confined to the folder: a name like '../secret' or a symlink out is refused.
    if not path.is_relative_to(root):
        raise PermissionError(f"{name!r} is outside {root}")
    return FileText(name=name, text=path.read_text(encoding="utf-8", errors="replace"))


def words_of(text: str) -> list[str]:
    """The lower-cased words of ``text``."""
    return _WORD.findall(text.lower())


def count(file: FileText) -> FileStats:
    """Words, lines, characters and the most frequent meaningful words of one file."""
    all_words = words_of(file.text)
    counts = Counter(w for w in all_words if w not in STOPWORDS and len(w) > 2)
    return FileStats(
        name=file.name,
        words=len(all_words),
        lines=len(file.text.splitlines()),
        characters=len(file.text),
        top_words=_top(counts, 5),
        word_counts=dict(counts),
    )


def _top(counts: Counter[str], n: int) -> list[tuple[str, int]]:
    # Ties broken alphabetically so the report is the same on every run.
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def longest(files: list[FileStats]) -> Longest:
    """The file with the most words."""
    best = max(files, key=lambda f: (f.words, f.name))
    return Longest(name=best.name, words=best.words)


def vocabulary(files: list[FileStats]) -> Vocabulary:
    """Distinct meaningful words over all files and the ten most frequent."""
    counts: Counter[str] = Counter()
    for f in files:
        counts.update(f.word_counts)
    return Vocabulary(distinct=len(counts), top_words=_top(counts, 10))


def totals(files: list[FileStats]) -> Totals:
    """Sums of words, lines and characters."""
    return Totals(
        files=len(files),
        words=sum(f.words for f in files),
        lines=sum(f.lines for f in files),
        characters=sum(f.characters for f in files),
    )


def write_report(
    listing: Listing,
    files: list[FileStats],
    longest: Longest,
    vocabulary: Vocabulary,
    totals: Totals,
    ctx: NodeContext,
) -> Report:
    """Render the Markdown report and write it as ``report.md`` in this node's directory (named
    in its ``result.json``)."""
    lines = [
        f"# Folder report: {Path(listing.folder).name}",
        "",
        f"Folder: `{listing.folder}`",
        "",
        "## Totals",
        "",
        "| files | words | lines | characters | distinct words |",
        "|---:|---:|---:|---:|---:|",
        f"| {totals.files} | {totals.words} | {totals.lines} | {totals.characters} | {vocabulary.distinct} |",
        "",
        f"Longest file: **{longest.name}** ({longest.words} words).",
        "",
        "## Most frequent words",
        "",
        ", ".join(f"{w} ({n})" for w, n in vocabulary.top_words) or "(none)",
        "",
        "## Files",
        "",
        "| file | words | lines | top words |",
        "|---|---:|---:|---|",
    ]
    for f in files:
        top = ", ".join(w for w, _ in f.top_words[:3])
        lines.append(f"| {f.name} | {f.words} | {f.lines} | {top} |")
    markdown = "\n".join(lines) + "\n"
    path = ctx.node_dir / "report.md"
    path.write_text(markdown, encoding="utf-8")
    ctx.annotate_result(report=path.name)
    return Report(markdown=markdown)


# -- the agent -----------------------------------------------------------------------------------

per_file = (
    FlowDefinition(description="read one file and count it")
    .node("read", read_file, inputs={"folder": Ref("list", "folder"), "name": Var("file")})
    .node("count", count, inputs=Ref("read"))
)

analyse = (
    FlowDefinition(description="per-file counts, then overall statistics")
    .node("list", list_files, inputs={"folder": Initial("folder")})
    .for_each("per_file", Ref("list", "files"), per_file, item_var="file", max_iterations=MAX_FILES, max_concurrency=4)
    .parallel(
        "overall",
        {
            "longest": FlowDefinition().node("longest", longest, inputs={"files": Ref("per_file")}),
            "vocabulary": FlowDefinition().node("vocabulary", vocabulary, inputs={"files": Ref("per_file")}),
            "totals": FlowDefinition().node("totals", totals, inputs={"files": Ref("per_file")}),
        },
    )
)

report = FlowDefinition(description="write the Markdown report").node(
    "write",
    write_report,
    inputs={
        "listing": Ref("analyse.list"),
        "files": Ref("analyse.per_file"),
        "longest": Ref("analyse.overall", "longest"),
        "vocabulary": Ref("analyse.overall", "vocabulary"),
        "totals": Ref("analyse.overall", "totals"),
    },
)

#: The agent, importable as ``examples.folder_report:agent``.
agent = (
    AgentDefinition(ROOT_ID, description="analyse a folder of text files")
    .flow("analyse", analyse)
    .flow("report", report)
)

#: Where the report node sits; its directory holds ``report.md``.
REPORT_NODE = HierarchyPath(f"{ROOT_ID}.report.write")


# -- running it ----------------------------------------------------------------------------------


def build_context(
    folder: Path | str = SAMPLE_FOLDER,
    run_root: Path | str = "runs",
    *,
    project_root: Path | str = ".",
    previous_run_id: str | None = None,
    start_hierarchy_path: str | None = None,
) -> RunContext:
    """The run context for one report: the folder is the run's initial input ``folder``.

    ``previous_run_id`` and ``start_hierarchy_path`` make it a re-run of an earlier report."""
    return RunContext(
        root_component_id=ROOT_ID,
        project_root=Path(project_root),
        run_root=Path(run_root),
        initial_inputs={"folder": str(Path(folder).expanduser().resolve())},
        previous_run_id=previous_run_id,
        start_hierarchy_path=start_hierarchy_path,
    )


async def run_report(
    folder: Path | str = SAMPLE_FOLDER,
    run_root: Path | str = "runs",
    *,
    previous_run_id: str | None = None,
    start_hierarchy_path: str | None = None,
) -> RunResult:
    """Run the agent once and return its result (raises ``RunFailedError`` if it fails)."""
    ctx = build_context(folder, run_root, previous_run_id=previous_run_id, start_hierarchy_path=start_hierarchy_path)
    return await AgentRunner(agent, ctx).run()


def report_path(result: RunResult) -> Path:
    """Where a run wrote its report."""
    return result.run_dir.joinpath(*REPORT_NODE.parts, "report.md")


def _reprise(command: str, result: RunResult) -> str:
    """The ``reprise`` command line that does ``command`` on ``result``'s run root."""
    root = result.run_dir.parent
    option = "" if root.resolve() == Path("runs").resolve() else f" --run-root {root}"
    return f"reprise {command}{option}"


def _print_result(result: RunResult) -> None:
    print(f"run directory: {result.run_dir}")
    print(f"status:        {result.status.value}")
    print(f"report:        {report_path(result)}")
    print(f"show:          {_reprise(f'show {result.run_id}', result)}")
    print(f"trace:         {_reprise(f'trace {result.run_id}', result)}")
    print(f"view:          {_reprise(f'view {result.run_id} --open', result)}")


def node_origins(result: RunResult) -> dict[str, bool]:
    """Every node of a run by hierarchy path: ``True`` if it was reused from an earlier run.

    Read through ``reprise.Api``: a reused node is, by default, a link to its directory in the
    run where it executed, whose ``result.json`` says so only as the re-run reads it."""
    root = Api(result.run_dir.parent).elements(result.run_id)
    return {e.path: e.reused for e in sorted(root.walk(), key=lambda e: e.path) if e.element_type == "node"}


def _print_rerun(result: RunResult) -> None:
    origins = node_origins(result)
    reused = [p for p, r in origins.items() if r]
    ran = [p for p, r in origins.items() if not r]
    print(f"\nre-run from {result.start_hierarchy_path} (of {result.previous_run_id}):")
    _print_result(result)
    print(f"reused ({len(reused)}, not called again):")
    for path in reused:
        print(f"  = {path}")
    print(f"executed ({len(ran)}):")
    for path in ran:
        print(f"  > {path}")
    meta = json.loads((result.run_dir / ".trace" / "metadata.json").read_text())
    if meta.get("outcome_repo"):
        print(f"compare outcomes: {_reprise(f'diff {result.previous_run_id} {result.run_id}', result)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m examples.folder_report", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--folder", type=Path, default=SAMPLE_FOLDER, help="folder of .txt/.md files (default: samples)"
    )
    parser.add_argument("--run-root", type=Path, default=Path("runs"), help="where runs go (default: ./runs)")
    parser.add_argument(
        "--then-rerun-from",
        metavar="PATH",
        help="after the run, re-run it from this hierarchy path (e.g. folder_report.analyse.overall)",
    )
    args = parser.parse_args(argv)
    try:
        result = anyio.run(run_report, args.folder, args.run_root)
        if args.then_rerun_from:
            _print_result(result)
            rerun = anyio.run(
                functools.partial(
                    run_report,
                    args.folder,
                    args.run_root,
                    previous_run_id=result.run_id,
                    start_hierarchy_path=args.then_rerun_from,
                )
            )
            _print_rerun(rerun)
            return 0
    except RepriseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        run = getattr(exc, "result", None)
        if run is not None:
            print(f"run directory: {run.run_dir}\nstatus:        {run.status.value}", file=sys.stderr)
        return 1
    _print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
