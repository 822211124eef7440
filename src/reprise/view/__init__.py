"""Self-contained HTML views of a run and of an experiment.

::

    from reprise.view import write_run_view, write_experiment_view

    write_run_view(Path("runs/run_20250101_120000_abcdef"), Path("run.html"))
    write_experiment_view(Path("experiments/triage_20250101_120000"), Path("triage.html"), Path("runs"))

Each page is one HTML file with its CSS, JavaScript and data inline: it opens from disk, offline,
and loads nothing from a network. An experiment's page links to one run page per run, written in
the folder ``<page stem>_runs/`` beside it. From a shell: ``reprise view RUN_ID``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprise.errors import RunFileError
from reprise.run.directory import METADATA_FILE, RUN_ID_PATTERN
from reprise.run.files import write_bytes_atomic
from reprise.view.build import DEFAULT_MAX_VALUE_BYTES, RunViewData, build_run_view_data, cost_of, tokens_of
from reprise.view.experiment import SUCCESS_STATUSES, build_experiment_view_data
from reprise.view.page import embed_json, render_page

__all__ = [
    "DEFAULT_MAX_RUN_VIEWS",
    "RunViewData",
    "build_experiment_view_data",
    "build_run_view_data",
    "cost_of",
    "embed_json",
    "render_experiment_view",
    "render_run_view",
    "tokens_of",
    "write_experiment_view",
    "write_run_view",
]

#: Run pages an experiment view writes by default (failed runs first). Each page carries its
#: own copy of the viewer, so writing one per run of a 10,000-run experiment would take far more
#: disk than the runs themselves; rows without a page show the command that makes one.
DEFAULT_MAX_RUN_VIEWS = 1000


def render_run_view(
    run_dir: Path,
    *,
    back: tuple[str, str] | None = None,
    links: Mapping[str, str] | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> str:
    """The HTML of the view of the run at ``run_dir``.

    ``back`` is a ``(href, label)`` link shown before the title; ``links`` maps run ids (the
    runs of its lineage) to the hrefs of their views."""
    return _run_page(build_run_view_data(run_dir, max_value_bytes=max_value_bytes), back, links)


def _run_page(data: RunViewData, back: tuple[str, str] | None, links: Mapping[str, str] | None) -> str:
    model: dict[str, Any] = dict(data.model)
    if back is not None:
        model["back"] = {"href": back[0], "label": back[1]}
    if links:
        model["links"] = dict(links)
    return render_page(
        title=f"reprise run {model['run']['run_id']} ({model['run']['status']})",
        data={"reprise-run": model, "reprise-details": data.details},
        script="run.js",
    )


def write_run_view(
    run_dir: Path,
    out: Path,
    *,
    back: tuple[str, str] | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    problems: list[RunFileError] | None = None,
) -> Path:
    """Write the view of the run at ``run_dir`` to ``out`` (atomically) and return ``out``.

    Runs of its lineage whose views sit beside ``out`` as ``<run_id>.html`` are linked. Run
    files (or lines of them) that could not be read are left out, and added to ``problems``.
    Raises :class:`~reprise.errors.RunSetupError` if ``run_dir`` is not a run directory."""
    out = Path(out)
    data = build_run_view_data(Path(run_dir), max_value_bytes=max_value_bytes)
    if problems is not None:
        problems.extend(data.problems)
    links: dict[str, str] = {}
    for entry in data.model["lineage"]:
        run_id = entry["run_id"]
        # Only well-formed run ids name a file: the lineage comes from data on disk.
        if RUN_ID_PATTERN.match(run_id) and (out.parent / f"{run_id}.html").is_file():
            links[run_id] = f"{run_id}.html"
    page = _run_page(data, back, links)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page.encode())
    return out


def render_experiment_view(experiment_dir: Path, *, run_hrefs: Mapping[str, str] | None = None) -> str:
    """The HTML of the view of the experiment at ``experiment_dir``; rows whose run id is in
    ``run_hrefs`` link to that href."""
    data = build_experiment_view_data(experiment_dir)
    if run_hrefs:
        for row in data["runs"]:
            href = run_hrefs.get(row["id"])
            if href is not None:
                row["href"] = href
    return render_page(
        title=f"reprise experiment {data['name']}",
        data={"reprise-experiment": data},
        script="experiment.js",
    )


def write_experiment_view(
    experiment_dir: Path,
    out: Path,
    run_root: Path,
    *,
    max_run_views: int | None = DEFAULT_MAX_RUN_VIEWS,
) -> Path:
    """Write the view of an experiment to ``out`` and a view of each of its runs (found under
    ``run_root``) to ``<out stem>_runs/<run_id>.html`` beside it; return ``out``.

    Each row of the experiment page links to its run's page, and each run page links back.
    At most ``max_run_views`` run pages are written (``None``: all), failed runs first; a run
    page already newer than its run directory's metadata is kept as it is, so writing the view
    again after more runs finished only writes the new ones."""
    experiment_dir, out, run_root = Path(experiment_dir), Path(out), Path(run_root)
    data = build_experiment_view_data(experiment_dir)
    runs_dir = out.parent / f"{out.stem}_runs"
    rows = sorted(data["runs"], key=lambda r: r["s"] in SUCCESS_STATUSES)  # failed first, stable
    hrefs: dict[str, str] = {}
    back = (f"../{out.name}", f"experiment {data['name']}")
    for row in rows:
        run_id = row["id"]
        if run_id in hrefs or not RUN_ID_PATTERN.match(run_id):
            # Run ids come from a data file: only real run ids name a file, so none escapes.
            continue
        if max_run_views is not None and len(hrefs) >= max_run_views:
            break
        run_dir = run_root / run_id
        metadata = run_dir / ".trace" / METADATA_FILE
        if not metadata.is_file():
            continue
        target = runs_dir / f"{run_id}.html"
        if not (target.is_file() and target.stat().st_mtime >= metadata.stat().st_mtime):
            write_run_view(run_dir, target, back=back)
        hrefs[run_id] = f"{runs_dir.name}/{run_id}.html"
    page = render_experiment_view(experiment_dir, run_hrefs=hrefs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page.encode())
    return out
