"""``Trainer``: the loop of forward pass, evaluation, backward pass and optimiser step over a
data set, with validation after every step.

Metrics go to a reprise run with :func:`reprise.log` (``train_score``, ``val_score``,
``step``); when validation has not improved for ``patience`` steps, :func:`reprise.alert` says
so. The best parameters seen on validation are kept and put back at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import reprise
from reprise import RunContext
from reprise.optim._errors import OptimizationError
from reprise.optim._module import Module
from reprise.optim._optimizer import TGD
from reprise.optim._variable import Value, Variable

__all__ = ["Evaluator", "Trainer", "TrainingResult"]

#: ``evaluator(prediction, target) -> (score, feedback)``, like the evaluators of reprise.optim.
Evaluator = Callable[[Variable, Any], tuple[Variable, Variable]]


@dataclass(kw_only=True)
class TrainingResult:
    """What :meth:`Trainer.fit` did: validation scores by step (step 0: before training), the
    best score and the step it was reached at, and the parameters then."""

    validation: list[float] = field(default_factory=list)
    best_score: float = 0.0
    best_step: int = 0
    best_state: dict[str, Value] = field(default_factory=dict)
    steps: int = 0


class Trainer:
    """Fits ``module``'s parameters with ``optimizer``, scoring predictions with ``evaluator``.

    ::

        with RunContext(root_component_id="training", project_root=".") as run:
            result = Trainer(module, optimizer, ExactMatch(), run=run).fit(train, validation, epochs=2)

    Data sets are sequences of ``(input, target)`` pairs; ``input`` is what ``module`` takes.
    ``run``: where to log metrics (default: the current run, if any; else nothing is logged)."""

    def __init__(
        self,
        module: Module,
        optimizer: TGD,
        evaluator: Evaluator,
        *,
        batch_size: int = 4,
        patience: int = 2,
        run: RunContext | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.module = module
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.batch_size = batch_size
        self.patience = patience
        self.run = run

    def _log(self, metrics: dict[str, Any], step: int) -> None:
        run = self.run if self.run is not None else reprise.tracking.current_run()
        if run is not None:
            reprise.log(metrics, step=step, run=run)

    def _alert(self, title: str, text: str) -> None:
        run = self.run if self.run is not None else reprise.tracking.current_run()
        if run is not None:
            reprise.alert(title, text, level=reprise.AlertLevel.WARN, run=run)

    def evaluate(self, data: Sequence[tuple[Any, Any]]) -> float:
        """The mean score of the module on ``data`` (no feedback is propagated)."""
        if not data:
            return 0.0
        total = 0.0
        for inputs, target in data:
            score, _ = self.evaluator(self.module(inputs), target)
            total += float(score.data)  # type: ignore[arg-type]
        return total / len(data)

    def fit(
        self, train: Sequence[tuple[Any, Any]], validation: Sequence[tuple[Any, Any]], *, epochs: int = 1
    ) -> TrainingResult:
        """Train for ``epochs`` passes over ``train`` in batches; one optimiser step per batch
        that got feedback, stopping early once validation scores 1.0. Returns the
        :class:`TrainingResult`; the module ends with the best
        parameters seen on ``validation``."""
        result = TrainingResult()
        step = self.optimizer.step_count
        best = self.evaluate(validation)
        result.validation.append(best)
        result.best_score, result.best_step, result.best_state = best, step, self.module.state_dict()
        self._log({"val_score": best}, step)
        since_best = 0
        for epoch in range(epochs):
            for start in range(0, len(train), self.batch_size):
                batch = train[start : start + self.batch_size]
                self.optimizer.zero_grad()
                scores = []
                for inputs, target in batch:
                    score, feedback = self.evaluator(self.module(inputs), target)
                    scores.append(float(score.data))  # type: ignore[arg-type]
                    if float(score.data) < 1.0 and feedback.requires_grad:  # type: ignore[arg-type]
                        try:
                            feedback.backward()
                        except OptimizationError as exc:
                            exc.step = step + 1
                            raise
                if not any(p.grad for _, p in self.optimizer.parameters):
                    continue
                self.optimizer.step()
                step = self.optimizer.step_count
                result.steps += 1
                val = self.evaluate(validation)
                result.validation.append(val)
                self._log({"train_score": sum(scores) / len(scores), "val_score": val, "epoch": epoch}, step)
                if val > result.best_score:
                    result.best_score, result.best_step, result.best_state = val, step, self.module.state_dict()
                    since_best = 0
                else:
                    since_best += 1
                    if since_best == self.patience:
                        self._alert(
                            "validation stopped improving",
                            f"val_score={val:.3f} at step {step}; best {result.best_score:.3f} at step "
                            f"{result.best_step}; the best parameters are kept",
                        )
                if val >= 1.0:
                    break  # nothing left to learn from validation
            if result.validation[-1] >= 1.0 and result.steps:
                break
        self.module.load_state_dict(result.best_state)
        return result
