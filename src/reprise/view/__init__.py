"""Self-contained HTML views of a run and of an experiment.

::

    from reprise.view import write_run_view, write_experiment_view

    write_run_view(Path("runs/run_20250101_120000_abcdef"), Path("run.html"))
    write_experiment_view(Path("experiments/triage_20250101_120000"), Path("triage.html"), Path("runs"))
    write_runs_view(Path("runs"), Path("runs.html"), metrics=["loss"])
    write_compare_view(Path("runs"), ["run_20250101_120000_abcdef", "run_20250102_090000_123abc"], Path("c.html"))

Each page is one HTML file with its CSS, JavaScript and data inline: it opens from disk, offline,
and loads nothing from a network. An experiment's page links to one run page per run, written in
the folder ``<page stem>_runs/`` beside it; the runs and compare pages link to run pages written
beside them. From a shell: ``reprise view``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reprise._api import Api
from reprise.errors import RunFileError
from reprise.run._directory import METADATA_FILE, RUN_ID_PATTERN
from reprise.run._files import write_bytes_atomic
from reprise.view._build import DEFAULT_MAX_VALUE_BYTES, RunViewData, build_run_view_data, cost_of, tokens_of
from reprise.view._experiment import SUCCESS_STATUSES, build_experiment_view_data
from reprise.view._page import embed_json, render_page
from reprise.view._runs import build_compare_view_data, build_runs_view_data

__all__ = [
    "DEFAULT_MAX_RUN_VIEWS",
    "RunViewData",
    "build_compare_view_data",
    "build_experiment_view_data",
    "build_run_view_data",
    "build_runs_view_data",
    "cost_of",
    "embed_json",
    "render_compare_view",
    "render_experiment_view",
    "render_run_view",
    "render_runs_view",
    "tokens_of",
    "write_compare_view",
    "write_experiment_view",
    "write_run_view",
    "write_runs_view",
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
    back = (f"../{out.name}", f"experiment {data['name']}")
    hrefs = _write_run_pages([row["id"] for row in rows], run_root, runs_dir, out, back, max_run_views)
    page = render_experiment_view(experiment_dir, run_hrefs=hrefs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page.encode())
    return out


def _write_run_pages(
    run_ids: list[str], run_root: Path, folder: Path, out: Path, back: tuple[str, str] | None, limit: int | None
) -> dict[str, str]:
    """Write the page of each run (at most ``limit``) to ``folder/<run_id>.html``, unless one
    newer than the run's metadata is there; return run id -> its href from the page ``out``."""
    hrefs: dict[str, str] = {}
    for run_id in run_ids:
        if run_id in hrefs or not RUN_ID_PATTERN.match(run_id):
            # Run ids come from data files: only real run ids name a file, so none escapes.
            continue
        if limit is not None and len(hrefs) >= limit:
            break
        run_dir = run_root / run_id
        metadata = run_dir / ".trace" / METADATA_FILE
        if not metadata.is_file():
            continue
        target = folder / f"{run_id}.html"
        if not (target.is_file() and target.stat().st_mtime >= metadata.stat().st_mtime):
            write_run_view(run_dir, target, back=back)
        hrefs[run_id] = Path(os.path.relpath(target, out.parent)).as_posix()
    return hrefs


def _pages_dir(out: Path, pages_dir: Path | None, label: str) -> tuple[Path, tuple[str, str] | None]:
    """Where the run pages of ``out`` go, and their link back to it: none when they go to a
    folder of their own choosing (``reprise view``'s ``.views/``), which other pages share."""
    if pages_dir is not None:
        return Path(pages_dir), None
    return out.parent / f"{out.stem}_runs", (f"../{out.name}", label)


def render_runs_view(
    run_root: Path, *, metrics: Sequence[str] = (), limit: int | None = None, hrefs: Mapping[str, str] | None = None
) -> str:
    """The HTML of the runs page of ``run_root`` (see :func:`build_runs_view_data`)."""
    data = build_runs_view_data(Path(run_root), metrics=metrics, limit=limit, hrefs=hrefs)
    return render_page(title=f"reprise runs in {data['run_root']}", data={"reprise-runs": data}, script="runs.js")


def write_runs_view(
    run_root: Path,
    out: Path,
    *,
    metrics: Sequence[str] = (),
    limit: int | None = None,
    max_run_views: int | None = DEFAULT_MAX_RUN_VIEWS,
    pages_dir: Path | None = None,
) -> Path:
    """Write the runs page of ``run_root`` to ``out`` and the page of each listed run (the
    newest ``max_run_views``; ``0``: none) to ``pages_dir`` (default ``<out stem>_runs/`` beside
    ``out``); return ``out``.

    ``metrics`` names the ``reprise.log`` metrics shown as columns (their latest value);
    ``limit`` keeps the newest runs only."""
    run_root, out = Path(run_root), Path(out)
    listed = [info.run_id for info in Api(run_root).runs(limit=limit)]
    folder, back = _pages_dir(out, pages_dir, "runs")
    hrefs = _write_run_pages(listed, run_root, folder, out, back, max_run_views)
    page = render_runs_view(run_root, metrics=metrics, limit=limit, hrefs=hrefs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page.encode())
    return out


def render_compare_view(run_root: Path, run_ids: Sequence[str], *, hrefs: Mapping[str, str] | None = None) -> str:
    """The HTML of the compare page of ``run_ids`` (see :func:`build_compare_view_data`)."""
    data = build_compare_view_data(Path(run_root), run_ids, hrefs=hrefs)
    title = "reprise compare " + " vs ".join(r["name"] or r["id"] for r in data["runs"])
    return render_page(title=title, data={"reprise-compare": data}, script="compare.js")


def write_compare_view(run_root: Path, run_ids: Sequence[str], out: Path, *, pages_dir: Path | None = None) -> Path:
    """Write the compare page of ``run_ids`` (two or more runs under ``run_root``) to ``out``
    and the page of each run to ``pages_dir`` (default ``<out stem>_runs/`` beside ``out``);
    return ``out``.

    Raises :class:`~reprise.errors.RepriseError` for fewer than two runs or an unknown run."""
    run_root, out = Path(run_root), Path(out)
    api = Api(run_root)
    resolved = [api.run_dir(run_id).run_id for run_id in run_ids]
    folder, back = _pages_dir(out, pages_dir, "compare")
    hrefs = _write_run_pages(resolved, run_root, folder, out, back, None)
    page = render_compare_view(run_root, resolved, hrefs=hrefs)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, page.encode())
    return out
