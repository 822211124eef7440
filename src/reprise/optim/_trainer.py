"""``Trainer``: the loop of forward pass, evaluation, backward pass and optimiser step over a
data set, with validation after every step.

Metrics go to a reprise run with :func:`reprise.log` (``train_score``, ``val_score``,
``step``); when validation has not improved for ``patience`` steps, :func:`reprise.alert` says
so. The best parameters seen on validation are kept and put back at the end.

With a ``directory``, the whole state of training (position in the data, parameters, optimiser
history and commits, scores) is written there after every batch, atomically, so that
``fit(..., resume=True)`` in a new process continues where an interrupted one stopped.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import reprise
from reprise import RepriseError, RunContext
from reprise.experiments import ItemExecutor
from reprise.optim._errors import OptimizationError
from reprise.optim._flow import FlowModule
from reprise.optim._module import Module
from reprise.optim._optimizer import TGD
from reprise.optim._variable import Value, Variable
from reprise.run._files import read_json, write_json_atomic

__all__ = ["STATE_FILE", "Evaluator", "Trainer", "TrainingResult"]

#: The file in a Trainer's directory that holds the state of training, saved after every batch.
STATE_FILE = "trainer_state.json"

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
    ``run``: where to log metrics (default: the current run, if any; else nothing is logged).
    ``directory``: where the training state is saved after every batch (``trainer_state.json``),
    for :meth:`fit` to resume from after an interruption.
    ``experiment``: run every evaluation of a :class:`FlowModule` as a reprise experiment
    (parallel, isolated, ``max_concurrency`` at once, on ``executor``): validation after step
    ``k`` is the experiment ``<experiment>-val-step<k>`` (``-val-step0``: before training), a
    training batch ``<experiment>-epoch<e>-batch<b>``."""

    def __init__(
        self,
        module: Module,
        optimizer: TGD,
        evaluator: Evaluator,
        *,
        batch_size: int = 4,
        patience: int = 2,
        run: RunContext | None = None,
        directory: Path | str | None = None,
        experiment: str | None = None,
        executor: ItemExecutor | None = None,
        max_concurrency: int = 4,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.module = module
        self.optimizer = optimizer
        self.evaluator = evaluator
        self.batch_size = batch_size
        self.patience = patience
        self.run = run
        if experiment is not None and not isinstance(module, FlowModule):
            raise TypeError(f"experiment={experiment!r} needs a FlowModule, not a {type(module).__name__}")
        self.experiment = experiment
        self.executor = executor
        self.max_concurrency = max_concurrency
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _log(self, metrics: dict[str, Any], step: int) -> None:
        run = self.run if self.run is not None else reprise.tracking.current_run()
        if run is not None:
            reprise.log(metrics, step=step, run=run)

    def _alert(self, title: str, text: str) -> None:
        run = self.run if self.run is not None else reprise.tracking.current_run()
        if run is not None:
            reprise.alert(title, text, level=reprise.AlertLevel.WARN, run=run)

    def _predict(self, data: Sequence[tuple[Any, Any]], name: str) -> list[Variable]:
        """The module's outputs on ``data``'s inputs: one call each, or one experiment named
        ``<experiment>-<name>`` over them all."""
        if self.experiment is None:
            return [self.module(inputs) for inputs, _ in data]
        assert isinstance(self.module, FlowModule)
        return self.module.run_experiment(
            [inputs for inputs, _ in data],
            name=f"{self.experiment}-{name}",
            executor=self.executor,
            max_concurrency=self.max_concurrency,
        )

    def evaluate(self, data: Sequence[tuple[Any, Any]], *, name: str = "val") -> float:
        """The mean score of the module on ``data`` (no feedback is propagated); with
        ``experiment``, one experiment named ``<experiment>-<name>``."""
        if not data:
            return 0.0
        total = 0.0
        for prediction, (_, target) in zip(self._predict(data, name), data, strict=True):
            score, _ = self.evaluator(prediction, target)
            total += float(score.data)  # type: ignore[arg-type]
        return total / len(data)

    def _fingerprint(self, train: Sequence[tuple[Any, Any]], validation: Sequence[tuple[Any, Any]]) -> str:
        data = json.dumps([list(train), list(validation), self.batch_size], sort_keys=True, default=str)
        return hashlib.sha256(data.encode()).hexdigest()

    @property
    def state_file(self) -> Path | None:
        """Where the training state is saved after every batch (``None`` without ``directory``)."""
        return self.directory / STATE_FILE if self.directory is not None else None

    def _save(self, state: _State) -> None:
        path = self.state_file
        if path is None:
            return
        r = state.result
        write_json_atomic(
            path,
            {
                "version": 1,
                "data": state.data,
                "epoch": state.epoch,
                "batch": state.batch,
                "since_best": state.since_best,
                "stopped": state.stopped,
                "parameters": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "result": {
                    "validation": r.validation,
                    "best_score": r.best_score,
                    "best_step": r.best_step,
                    "best_state": r.best_state,
                    "steps": r.steps,
                },
            },
        )

    def _load(self, data: str) -> _State | None:
        path = self.state_file
        if path is None:
            raise ValueError("fit(resume=True) needs the Trainer's directory, where its state is saved")
        if not path.exists():
            return None
        try:
            saved = read_json(path)
            if saved.get("data") != data:
                raise OptimizationError(
                    f"{path} was saved while training on other data (or another batch size); "
                    "remove it to start again, or resume with the same data"
                )
            r = saved["result"]
            result = TrainingResult(
                validation=[float(v) for v in r["validation"]],
                best_score=float(r["best_score"]),
                best_step=int(r["best_step"]),
                best_state=dict(r["best_state"]),
                steps=int(r["steps"]),
            )
            self.module.load_state_dict(saved["parameters"])
            self.optimizer.load_state_dict(saved["optimizer"])
            return _State(
                data=data,
                epoch=int(saved["epoch"]),
                batch=int(saved["batch"]),
                since_best=int(saved["since_best"]),
                stopped=bool(saved["stopped"]),
                result=result,
            )
        except OptimizationError:
            raise
        except (RepriseError, OSError, KeyError, TypeError, ValueError, AttributeError) as exc:
            message = exc.message if isinstance(exc, RepriseError) else f"{type(exc).__name__}: {exc}"
            raise OptimizationError(f"cannot resume training from {path}: {message}") from None

    def fit(
        self,
        train: Sequence[tuple[Any, Any]],
        validation: Sequence[tuple[Any, Any]],
        *,
        epochs: int = 1,
        resume: bool = False,
    ) -> TrainingResult:
        """Train for ``epochs`` passes over ``train`` in batches; one optimiser step per batch
        that got feedback, stopping early once validation scores 1.0. Returns the
        :class:`TrainingResult`; the module ends with the best parameters seen on ``validation``.

        With a ``directory``, the state is saved there after every batch; ``resume=True``
        continues from it (parameters, optimiser history and commits, scores, position in the
        data), so an interrupted training loses at most the batch it was in. Without a saved
        state, ``resume=True`` starts from the beginning."""
        data = self._fingerprint(train, validation)
        state = self._load(data) if resume else None
        if state is None:
            result = TrainingResult()
            step = self.optimizer.step_count
            best = self.evaluate(validation, name=f"val-step{step}")
            result.validation.append(best)
            result.best_score, result.best_step, result.best_state = best, step, self.module.state_dict()
            self._log({"val_score": best}, step)
            state = _State(data=data, result=result)
            self._save(state)
        result = state.result
        while state.epoch < epochs and not state.stopped:
            epoch = state.epoch
            for start in range(state.batch, len(train), self.batch_size):
                self._batch(train[start : start + self.batch_size], validation, epoch, start, state)
                following = start + self.batch_size
                state.epoch, state.batch = (epoch, following) if following < len(train) else (epoch + 1, 0)
                self._save(state)
                if state.stopped:
                    break
            if state.epoch == epoch and not state.stopped:  # no training data: nothing ran
                state.epoch, state.batch = epoch + 1, 0
        self.module.load_state_dict(result.best_state)
        return result

    def _batch(
        self,
        batch: Sequence[tuple[Any, Any]],
        validation: Sequence[tuple[Any, Any]],
        epoch: int,
        start: int,
        state: _State,
    ) -> None:
        """Forward, evaluation and backward over ``batch``, then a step and validation."""
        result = state.result
        step = self.optimizer.step_count
        self.optimizer.zero_grad()
        scores = []
        predictions = self._predict(batch, f"epoch{epoch}-batch{start // self.batch_size}")
        for prediction, (_, target) in zip(predictions, batch, strict=True):
            score, feedback = self.evaluator(prediction, target)
            scores.append(float(score.data))  # type: ignore[arg-type]
            if float(score.data) < 1.0 and feedback.requires_grad:  # type: ignore[arg-type]
                try:
                    feedback.backward()
                except OptimizationError as exc:
                    exc.step = step + 1
                    raise
        if not any(p.grad for _, p in self.optimizer.parameters):
            return
        self.optimizer.step()
        step = self.optimizer.step_count
        result.steps += 1
        val = self.evaluate(validation, name=f"val-step{step}")
        result.validation.append(val)
        self._log({"train_score": sum(scores) / len(scores), "val_score": val, "epoch": epoch}, step)
        if val > result.best_score:
            result.best_score, result.best_step, result.best_state = val, step, self.module.state_dict()
            state.since_best = 0
        else:
            state.since_best += 1
            if state.since_best == self.patience:
                self._alert(
                    "validation stopped improving",
                    f"val_score={val:.3f} at step {step}; best {result.best_score:.3f} at step "
                    f"{result.best_step}; the best parameters are kept",
                )
        if val >= 1.0:
            state.stopped = True  # nothing left to learn from validation


@dataclass(kw_only=True)
class _State:
    """Where training is: the next batch (``epoch``, index of its first item in ``train``),
    steps since validation last improved, whether it stopped early, the result so far."""

    data: str
    result: TrainingResult
    epoch: int = 0
    batch: int = 0
    since_best: int = 0
    stopped: bool = False
