"""Experiments: one flow or agent over many inputs and iterations, locally or on Dask.

::

    from reprise.experiments import Experiment, LocalExecutor, DaskExecutor

    summary = await Experiment(flow, "inputs.yaml", iterations=3, max_concurrency=8, timeout=60).run()
    summary = await Experiment(flow, items, executor=DaskExecutor("dask://10.0.0.5:8786")).run()
    summary = await Experiment.resume("experiments/review_20250301_142233")

See ``docs/experiments.md``. :class:`DaskExecutor` needs
``pip install 'reprise-agents[dask]'``; it is imported from here lazily, so
``import reprise.experiments`` does not import Dask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reprise.experiments._compare import ExperimentComparison, InputChange, compare_experiments, format_comparison
from reprise.experiments._errors import ExperimentError, ExperimentInputError, ItemTimeoutError, WorkerCrashedError
from reprise.experiments._executor import ExecutorSession, ItemExecutor, SessionOptions
from reprise.experiments._experiment import Experiment
from reprise.experiments._folder import ExperimentFolder
from reprise.experiments._inputs import ExperimentInput, load_inputs
from reprise.experiments._item import ItemJob, ItemResult, RunRecord
from reprise.experiments._local import LocalExecutor
from reprise.experiments._progress import BarProgress, LineProgress, Progress
from reprise.experiments._summary import ExperimentSummary

if TYPE_CHECKING:
    from reprise.experiments._dask_executor import DaskExecutor

__all__ = [
    "BarProgress",
    "DaskExecutor",
    "ExecutorSession",
    "Experiment",
    "ExperimentComparison",
    "ExperimentError",
    "ExperimentFolder",
    "ExperimentInput",
    "ExperimentInputError",
    "ExperimentSummary",
    "InputChange",
    "ItemExecutor",
    "ItemJob",
    "ItemResult",
    "ItemTimeoutError",
    "LineProgress",
    "LocalExecutor",
    "Progress",
    "RunRecord",
    "SessionOptions",
    "WorkerCrashedError",
    "compare_experiments",
    "format_comparison",
    "load_inputs",
]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from reprise.experiments._dask_executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
