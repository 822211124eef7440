"""Evaluators: a score and a feedback Variable for a prediction.

Each returns ``(score, feedback)``. ``score`` is a number Variable (the mean over a list of
predictions); ``feedback`` is text that says what was wrong, and, when the prediction requires
grad, the start of the backward pass: ``feedback.backward()`` hands it to the prediction, and from
there to the prompts that produced it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

from reprise import RepriseError
from reprise.dsl import HierarchyPath
from reprise.optim._errors import OptimizationError
from reprise.optim._model import CallRecord, ChatModel
from reprise.optim._prompts import FEEDBACK_TAGS, JUDGE_SYSTEM, SCORE_TAGS, between, judge_prompt
from reprise.optim._variable import GradFn, Value, Variable, feedback_text

__all__ = ["EvaluationBackward", "ExactMatch", "FunctionEvaluator", "ModelJudge"]

#: What a user evaluation function returns: a score, or a score and feedback text.
Judgement = float | tuple[float, str]

_JUDGE_PATH = HierarchyPath("optim.judge")


class EvaluationBackward(GradFn):
    """Feedback from an evaluator goes to the prediction it judged, as it is, labelled with
    the evaluator."""

    name = "EvaluationBackward"

    def __init__(self, inputs: Sequence[Variable], *, evaluator: str) -> None:
        super().__init__(inputs)
        self.evaluator = evaluator

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        text = feedback_text(output.grad)
        return [
            (v, Variable(f"{self.evaluator} says about this {v.role}: {text}", role=f"feedback to {v.role}"))
            for v in self.inputs
            if v.requires_grad
        ]


def _result(prediction: Variable, scores: list[float], notes: list[str], evaluator: str) -> tuple[Variable, Variable]:
    score = Variable(sum(scores) / len(scores) if scores else 0.0, role=f"{evaluator} score")
    feedback = Variable("\n".join(notes), role=f"{evaluator} feedback on the {prediction.role or 'prediction'}")
    if prediction.requires_grad:
        feedback.requires_grad = True
        feedback.grad_fn = EvaluationBackward([prediction], evaluator=evaluator)
    return score, feedback


def _pairs(prediction: Variable, target: Variable | Value) -> list[tuple[Any, Any]]:
    """The (prediction, target) items to compare: one pair, or one per list item."""
    expected = target.data if isinstance(target, Variable) else target
    if isinstance(prediction.data, list | tuple):
        if not isinstance(expected, list | tuple) or len(expected) != len(prediction.data):
            raise ValueError(
                f"a list of {len(prediction.data)} predictions needs a list of as many targets, got {expected!r}"
            )
        return list(zip(prediction.data, expected, strict=True))
    return [(prediction.data, expected)]


class ExactMatch:
    """Score 1 when the prediction equals the target (text compared after stripping and, by
    default, ignoring case), else 0; the feedback names what was expected.

    ::

        score, feedback = ExactMatch()(answer, "positive")
        if score.data < 1:
            feedback.backward()
    """

    name = "exact match"

    def __init__(self, *, ignore_case: bool = True) -> None:
        self.ignore_case = ignore_case

    def _norm(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value.casefold() if self.ignore_case else value
        return value

    def __call__(self, prediction: Variable, target: Variable | Value) -> tuple[Variable, Variable]:
        scores, notes = [], []
        for got, expected in _pairs(prediction, target):
            ok = self._norm(got) == self._norm(expected)
            scores.append(1.0 if ok else 0.0)
            if not ok:
                notes.append(f"The answer {got!r} is wrong: the expected answer is {expected!r}.")
        if not notes:
            notes.append("Every answer is correct.")
        return _result(prediction, scores, notes, self.name)


class FunctionEvaluator:
    """A user function as evaluator: ``fn(predicted, expected)`` returns a score, or a score and
    feedback text (plain values, not Variables).

    ::

        def close_enough(got: str, expected: str) -> tuple[float, str]:
            return (1.0, "ok") if expected in got else (0.0, f"mention {expected!r}")

        score, feedback = FunctionEvaluator(close_enough)(answer, "Paris")
    """

    def __init__(self, fn: Callable[[Any, Any], Judgement], *, name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "evaluation function"))

    def __call__(self, prediction: Variable, target: Variable | Value) -> tuple[Variable, Variable]:
        scores, notes = [], []
        for got, expected in _pairs(prediction, target):
            judgement = self.fn(got, expected)
            if isinstance(judgement, tuple):
                value, note = judgement
            else:
                value, note = judgement, ""
            if isinstance(value, bool) or not isinstance(value, int | float) or not isinstance(note, str):
                raise TypeError(f"evaluator {self.name!r} must return a number or (number, text), got {judgement!r}")
            scores.append(float(value))
            if note:
                notes.append(note)
        return _result(prediction, scores, notes, self.name)


class ModelJudge:
    """A model as judge: it reads the prediction (and a reference, if given) against
    ``criteria`` and answers with a score between 0 and 1 and feedback.

    ::

        judge = ModelJudge(ChatModel("gpt-4o"), criteria="Is the summary faithful and short?")
        score, feedback = judge(summary)
    """

    name = "model judge"

    def __init__(self, model: ChatModel, *, criteria: str) -> None:
        self.model = model
        self.criteria = criteria
        self.records: list[CallRecord] = []

    def __call__(self, prediction: Variable, reference: Variable | Value | None = None) -> tuple[Variable, Variable]:
        return anyio.run(self.acall, prediction, reference)

    async def acall(self, prediction: Variable, reference: Variable | Value | None = None) -> tuple[Variable, Variable]:
        """:meth:`__call__` for async code."""
        if reference is None:
            items = (
                [(x, None) for x in prediction.data]
                if isinstance(prediction.data, list | tuple)
                else [(prediction.data, None)]
            )
        else:
            items = _pairs(prediction, reference)
        scores, notes = [], []
        for got, expected in items:
            record = CallRecord(path=_JUDGE_PATH)
            self.records.append(record)
            question = judge_prompt(
                criteria=self.criteria,
                role=prediction.role or "answer",
                answer=str(got),
                reference=None if expected is None else str(expected),
            )
            try:
                answer = await self.model.complete(question, JUDGE_SYSTEM, ctx=record)
            except RepriseError as exc:
                raise OptimizationError(f"the judge model ({self.model.model}) failed: {exc.message}") from None
            score_text, note = between(answer, SCORE_TAGS), between(answer, FEEDBACK_TAGS)
            try:
                score = float(score_text) if score_text is not None else None
            except ValueError:
                score = None
            if score is None or not 0.0 <= score <= 1.0 or note is None:
                raise OptimizationError(
                    f"the judge model ({self.model.model}) did not answer with a score between 0 and 1 in "
                    f"{SCORE_TAGS[0]}...{SCORE_TAGS[1]} and feedback in {FEEDBACK_TAGS[0]}...{FEEDBACK_TAGS[1]}; "
                    f"it answered {answer[:200]!r}"
                )
            scores.append(score)
            notes.append(note)
        return _result(prediction, scores, notes, self.name)
