"""The error of learnable prompts::

    RepriseError
    └── OptimizationError   a backward pass, an optimiser step or a training step failed

It names the parameter (by its role) and the step it happened at, when known, so a failure in
the middle of training says which prompt was being worked on and when.
"""

from __future__ import annotations

from reprise import RepriseError

__all__ = ["OptimizationError"]


class OptimizationError(RepriseError):
    """A model call of a backward pass or an optimiser step failed, or its answer was unusable.

    ``parameter``: the role of the Variable being worked on; ``step``: the optimiser step (1 for
    the first) or ``None`` outside one. Parameters keep their last good value."""

    def __init__(
        self,
        message: str,
        *,
        parameter: str | None = None,
        step: int | None = None,
        path: str | None = None,
        run_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path, run_id=run_id)
        self.parameter = parameter
        self.step = step

    def __str__(self) -> str:
        where = []
        if self.step is not None:
            where.append(f"step {self.step}")
        if self.parameter is not None:
            where.append(f"parameter {self.parameter!r}")
        base = super().__str__()
        return f"{', '.join(where)}: {base}" if where else base
