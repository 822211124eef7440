"""``TGD``: textual gradient descent. For each parameter with feedback, a model rewrites the
value from that feedback (TextGrad's optimiser), under optional constraints.

A step is all or nothing: every new value is asked for first, and only when all are usable are
they committed (see :class:`~reprise.optim.ParameterHistory`) and set. A failure names the
parameter and the step and leaves every parameter at its last good value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import anyio

from reprise import RepriseError
from reprise.dsl import HierarchyPath
from reprise.optim._errors import OptimizationError
from reprise.optim._model import CallRecord, ChatModel
from reprise.optim._module import Module, Parameter
from reprise.optim._prompts import OPTIMIZER_SYSTEM, VALUE_TAGS, between, step_prompt
from reprise.optim._store import ParameterHistory
from reprise.optim._variable import feedback_text

__all__ = ["TGD", "ParameterVersion"]

_STEP_PATH = HierarchyPath("optim.step")


@dataclass(frozen=True, slots=True)
class ParameterVersion:
    """One value a parameter had: from ``step`` on (0: the initial value), and the feedback
    that led to it (empty for the initial value)."""

    step: int
    value: str
    feedback: str = ""


def _named(parameters: Module | Iterable[Parameter] | Iterable[tuple[str, Parameter]]) -> list[tuple[str, Parameter]]:
    if isinstance(parameters, Module):
        return list(parameters.named_parameters())
    items: list[Parameter | tuple[str, Parameter]] = list(parameters)
    return [(f"param{i}", item) if isinstance(item, Parameter) else item for i, item in enumerate(items)]


class TGD:
    """Textual gradient descent over ``parameters`` (a :class:`Module`, Parameters, or
    ``(name, Parameter)`` pairs), with ``model`` writing the new values.

    ::

        optimizer = TGD(classifier, ChatModel("gpt-4o"), constraints=["Stay under 80 words."])
        optimizer.zero_grad()
        ...  # forward, evaluate, feedback.backward()
        optimizer.step()

    ``history[name]`` lists every value of a parameter (:class:`ParameterVersion`);
    ``memory`` earlier values are shown to the model so it does not go back to them.
    ``store``: a :class:`ParameterHistory` that commits each step's values to git."""

    def __init__(
        self,
        parameters: Module | Iterable[Parameter] | Iterable[tuple[str, Parameter]],
        model: ChatModel,
        *,
        constraints: Sequence[str] = (),
        memory: int = 3,
        store: ParameterHistory | None = None,
    ) -> None:
        self.parameters = _named(parameters)
        if not self.parameters:
            raise ValueError("TGD needs at least one parameter")
        for name, parameter in self.parameters:
            if not isinstance(parameter.data, str):
                raise TypeError(f"TGD rewrites text; parameter {name!r} holds {type(parameter.data).__name__}")
        self.model = model
        self.constraints = list(constraints)
        self.memory = memory
        self.store = store
        self.step_count = 0
        self.history: dict[str, list[ParameterVersion]] = {
            name: [ParameterVersion(0, str(p.data))] for name, p in self.parameters
        }
        self.records: list[CallRecord] = []
        if store is not None:
            store.commit({name: p.data for name, p in self.parameters}, "initial values")

    def zero_grad(self) -> None:
        """Forget the feedback gathered on every parameter."""
        for _, parameter in self.parameters:
            parameter.zero_grad()

    clear_grad = zero_grad

    def step(self) -> dict[str, str]:
        """Rewrite every parameter that has feedback; returns the new values by name."""
        return anyio.run(self.astep)

    async def astep(self) -> dict[str, str]:
        """:meth:`step` for async code."""
        step = self.step_count + 1
        updates: dict[str, tuple[Parameter, str, str]] = {}
        for name, parameter in self.parameters:
            if not parameter.grad:
                continue
            feedback = feedback_text(parameter.grad)
            updates[name] = (parameter, await self._rewrite(name, parameter, feedback, step), feedback)
        if not updates:
            return {}
        if self.store is not None:
            values = {name: updates[name][1] if name in updates else p.data for name, p in self.parameters}
            note = "\n\n".join(f"step {step}: {name}\n\nfeedback:\n{fb}" for name, (_, _, fb) in updates.items())
            try:
                await self.store.acommit(values, note)
            except RepriseError as exc:
                raise OptimizationError(exc.message, step=step) from None
        for name, (parameter, value, feedback) in updates.items():
            parameter.copy_(value)
            self.history[name].append(ParameterVersion(step, value, feedback))
        self.step_count = step
        return {name: value for name, (_, value, _) in updates.items()}

    async def _rewrite(self, name: str, parameter: Parameter, feedback: str, step: int) -> str:
        past = [v.value for v in self.history[name][:-1]][-self.memory :] if self.memory else []
        question = step_prompt(
            role=parameter.role or name,
            value=str(parameter.data),
            feedback=feedback,
            constraints=self.constraints,
            history=past,
        )
        record = CallRecord(path=_STEP_PATH)
        self.records.append(record)
        try:
            answer = await self.model.complete(question, OPTIMIZER_SYSTEM, ctx=record)
        except RepriseError as exc:
            raise OptimizationError(
                f"the optimiser model ({self.model.model}) failed: {exc.message}", parameter=name, step=step
            ) from None
        value = between(answer, VALUE_TAGS)
        if value is None:
            raise OptimizationError(
                f"the optimiser model ({self.model.model}) gave no new value between {VALUE_TAGS[0]} and "
                f"{VALUE_TAGS[1]}; it answered {' '.join(answer.split())[:200]!r}",
                parameter=name,
                step=step,
            )
        return value
