"""Errors raised by experiments.

They extend the tree in :mod:`reprise.errors`::

    RepriseError
    └── ExperimentError          an experiment cannot be set up, resumed or compared
        ├── ExperimentConfigError the configuration file is invalid (names the file and the key)
    ├── ExperimentInputError an inputs file or item is invalid (names the file and item)
        ├── ItemTimeoutError     one item ran longer than the experiment's timeout
        └── WorkerCrashedError   the process running one item died (os._exit, a signal, a lost
                                 Dask worker)

The last two are never raised out of :meth:`Experiment.run`: they describe one item's failure
in its ``runs.jsonl`` line and in :class:`~reprise.experiments._item.ItemResult.error`.
"""

from __future__ import annotations

from reprise.errors import RepriseError

__all__ = ["ExperimentConfigError", "ExperimentError", "ExperimentInputError", "ItemTimeoutError", "WorkerCrashedError"]


class ExperimentError(RepriseError):
    """An experiment cannot be set up, resumed or compared."""


class ExperimentConfigError(ExperimentError):
    """The experiment configuration file (``configs/simulation.yaml``) is invalid."""


class ExperimentInputError(ExperimentError):
    """An inputs file or one of its items is invalid."""


class ItemTimeoutError(ExperimentError):
    """One item ran longer than the experiment's per-item timeout."""


class WorkerCrashedError(ExperimentError):
    """The process running one item died before reporting a result."""
