"""``ChatCompletion``: a model call over Variables, and its backward pass.

Forward, the system message and the parts of the user message are Variables; the answer is a
Variable whose ``grad_fn`` remembers the call. Backward, for every input that requires grad, a
model is shown the call, the feedback on its answer and that input's role, and asked how the input
should change (TextGrad's method); its answer is appended to the input's ``grad``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio

from reprise import RepriseError
from reprise.dsl import HierarchyPath, NodeContext
from reprise.optim._errors import OptimizationError
from reprise.optim._model import CallRecord, ChatModel
from reprise.optim._prompts import BACKWARD_SYSTEM, FEEDBACK_TAGS, backward_prompt, between
from reprise.optim._variable import GradFn, Variable, feedback_text

__all__ = ["ChatBackward", "ChatCompletion", "ask_for_feedback"]

Prompt = Variable | str | Sequence[Variable | str]

#: The path the backward calls are logged under (they run outside any node).
_CALL_PATH = HierarchyPath("optim.backward")


def _parts(prompt: Prompt) -> list[Variable]:
    if isinstance(prompt, Variable | str):
        items: Sequence[Variable | str] = [prompt]
    else:
        items = prompt
    parts = [p if isinstance(p, Variable) else Variable(p, role="user message") for p in items]
    for part in parts:
        if isinstance(part.data, list | tuple):
            raise TypeError(
                f"a chat message part is one value, not a {type(part.data).__name__} "
                f"(Variable {part.role!r}); call the model once per item"
            )
    return parts


async def ask_for_feedback(
    model: ChatModel,
    *,
    variable: Variable,
    system: str | None,
    prompt: str,
    output: Variable,
    feedback: str,
    records: list[CallRecord],
) -> Variable:
    """Ask ``model`` how ``variable`` should change given ``feedback`` on ``output``, the answer
    of the call ``(system, prompt)``; the feedback Variable for ``variable``."""
    question = backward_prompt(
        system=system,
        prompt=prompt,
        output=str(output.data),
        output_role=output.role,
        feedback=feedback,
        variable_role=variable.role or "input",
        value=str(variable.data),
    )
    record = CallRecord(path=_CALL_PATH)
    records.append(record)
    try:
        answer = await model.complete(question, BACKWARD_SYSTEM, ctx=record)
    except RepriseError as exc:
        raise OptimizationError(
            f"the backward model ({model.model}) failed while writing feedback: {exc.message}",
            parameter=variable.role,
        ) from None
    text = between(answer, FEEDBACK_TAGS)
    if text is None:
        raise OptimizationError(
            f"the backward model ({model.model}) gave no feedback between {FEEDBACK_TAGS[0]} and "
            f"{FEEDBACK_TAGS[1]}; it answered {_shorten(answer)!r}",
            parameter=variable.role,
        )
    return Variable(text, role=f"feedback to {variable.role}")


def _shorten(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ChatBackward(GradFn):
    """The history of one chat completion: its system message and prompt as sent, and the model
    that writes feedback for its inputs. ``records`` keeps the usage and cost of those calls."""

    name = "ChatBackward"

    def __init__(
        self, inputs: Sequence[Variable], *, system: str | None, prompt: str, backward_model: ChatModel
    ) -> None:
        super().__init__(inputs)
        self.system = system
        self.prompt = prompt
        self.backward_model = backward_model
        self.records: list[CallRecord] = []

    async def backward(self, output: Variable) -> list[tuple[Variable, Variable]]:
        feedback = feedback_text(output.grad)
        pairs = []
        for variable in self.inputs:
            if variable.requires_grad:
                grad = await ask_for_feedback(
                    self.backward_model,
                    variable=variable,
                    system=self.system,
                    prompt=self.prompt,
                    output=output,
                    feedback=feedback,
                    records=self.records,
                )
                pairs.append((variable, grad))
        return pairs


class ChatCompletion:
    """One model call whose system message and user message are Variables.

    ::

        model = ChatModel("gpt-4o-mini")
        system = Variable("Classify the sentiment.", role="system prompt", requires_grad=True)
        answer = ChatCompletion(model)(Variable("I loved it."), system=system)
        answer.backward("The answer should be one word: positive or negative.")
        system.grad       # how the system prompt should change

    The user message is the text of ``prompt``'s parts, one per line. ``backward_model`` writes
    the feedback in backward (default: ``model``)."""

    def __init__(self, model: ChatModel, *, backward_model: ChatModel | None = None) -> None:
        self.model = model
        self.backward_model = backward_model or model

    def __call__(
        self, prompt: Prompt, system: Variable | str | None = None, *, role: str = "response of the model"
    ) -> Variable:
        return anyio.run(self._call_positional, prompt, system, role)

    async def _call_positional(self, prompt: Prompt, system: Variable | str | None, role: str) -> Variable:
        return await self.acall(prompt, system, role=role)

    async def acall(
        self,
        prompt: Prompt,
        system: Variable | str | None = None,
        *,
        role: str = "response of the model",
        ctx: NodeContext | None = None,
    ) -> Variable:
        """The answer, as a Variable that requires grad if any input does. ``ctx``: the context
        of the reprise node making the call, to record it in that node's run."""
        parts = _parts(prompt)
        system_var = Variable(system, role="system prompt") if isinstance(system, str) else system
        prompt_text = "\n".join(str(p.data) for p in parts)
        system_text = str(system_var.data) if system_var is not None else None
        answer = await self.model.complete(prompt_text, system_text, ctx=ctx)
        result = Variable(answer, role=role)
        inputs = ([system_var] if system_var is not None else []) + parts
        if any(v.requires_grad for v in inputs):
            result.requires_grad = True
            result.grad_fn = ChatBackward(
                inputs, system=system_text, prompt=prompt_text, backward_model=self.backward_model
            )
        return result
