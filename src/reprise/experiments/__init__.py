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
from reprise.experiments._config import (
    DEFAULT_CONFIG,
    DEFAULT_INPUTS,
    ExperimentConfig,
    OutputConfig,
    ReplayArgsConfig,
    RunnerConfig,
    load_config,
)
from reprise.experiments._errors import (
    ExperimentConfigError,
    ExperimentError,
    ExperimentInputError,
    ItemTimeoutError,
    WorkerCrashedError,
)
from reprise.experiments._executor import ExecutorSession, ItemExecutor, SessionOptions
from reprise.experiments._experiment import Experiment
from reprise.experiments._folder import ExperimentFolder
from reprise.experiments._generate import (
    DEFAULT_TEMPLATES,
    GenerationConfig,
    ModelConfig,
    PersonaConfig,
    generate_inputs,
)
from reprise.experiments._inputs import ExperimentInput, GeneratedInput, load_inputs
from reprise.experiments._item import ItemJob, ItemResult, RunRecord
from reprise.experiments._local import LocalExecutor
from reprise.experiments._progress import BarProgress, LineProgress, Progress
from reprise.experiments._replay import ArgumentRecorder, ArgumentReplay
from reprise.experiments._report import TraceSummaryLine, write_report
from reprise.experiments._summary import ExperimentSummary
from reprise.experiments._target import import_target

if TYPE_CHECKING:
    from reprise.experiments._dask_executor import DaskExecutor

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_INPUTS",
    "DEFAULT_TEMPLATES",
    "ArgumentRecorder",
    "ArgumentReplay",
    "BarProgress",
    "DaskExecutor",
    "ExecutorSession",
    "Experiment",
    "ExperimentComparison",
    "ExperimentConfig",
    "ExperimentConfigError",
    "ExperimentError",
    "ExperimentFolder",
    "ExperimentInput",
    "ExperimentInputError",
    "ExperimentSummary",
    "GeneratedInput",
    "GenerationConfig",
    "InputChange",
    "ItemExecutor",
    "ItemJob",
    "ItemResult",
    "ItemTimeoutError",
    "LineProgress",
    "LocalExecutor",
    "ModelConfig",
    "OutputConfig",
    "PersonaConfig",
    "Progress",
    "ReplayArgsConfig",
    "RunRecord",
    "RunnerConfig",
    "SessionOptions",
    "TraceSummaryLine",
    "WorkerCrashedError",
    "compare_experiments",
    "format_comparison",
    "generate_inputs",
    "import_target",
    "load_config",
    "load_inputs",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name == "DaskExecutor":
        from reprise.experiments._dask_executor import DaskExecutor

        return DaskExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
