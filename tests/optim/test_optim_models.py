"""reprise.optim's model operations against a scripted OpenAI-compatible server on 127.0.0.1,
driven by the official openai client: chat completions over Variables, their backward pass,
evaluators, and what happens when the server fails or answers nonsense."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from _optim import CANARY, ChatRequest, Reply, ScriptedModelServer, kind, set_keys
from reprise.optim import (
    CallRecord,
    ChatCompletion,
    ChatModel,
    ExactMatch,
    FunctionEvaluator,
    ModelJudge,
    OptimizationError,
    Variable,
)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)


def scripted(request: ChatRequest) -> str | Reply:
    if kind(request) == "backward":
        role = request.user.split("The part to improve is the ")[1].split(":")[0]
        return f"Thinking... <FEEDBACK>Make the {role} ask for one word.</FEEDBACK>"
    if kind(request) == "judge":
        return "<SCORE>0.25</SCORE><FEEDBACK>Too vague.</FEEDBACK>"
    if request.system.startswith("Summarize"):
        return "summary: " + request.user
    return "positive" if "love" in request.user else "negative"


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(scripted) as s:
        yield s


def model(server: ScriptedModelServer, **kw: object) -> ChatModel:
    return ChatModel("scripted-model", base_url=server.base_url, backoff=0.01, **kw)  # type: ignore[arg-type]


def test_forward_sends_system_and_user_messages(server: ScriptedModelServer) -> None:
    system = Variable("Classify the sentiment.", role="system prompt", requires_grad=True)
    answer = ChatCompletion(model(server))([Variable("I love it."), "Really."], system=system, role="label")
    assert answer.data == "positive" and answer.role == "label"
    assert answer.requires_grad and not answer.is_leaf and repr(answer.grad_fn) == "<ChatBackward>"
    sent = server.requests[0].body["messages"]
    assert sent == [
        {"role": "system", "content": "Classify the sentiment."},
        {"role": "user", "content": "I love it.\nReally."},
    ]
    plain = ChatCompletion(model(server))("I hate it.")
    assert plain.data == "negative" and not plain.requires_grad and plain.grad_fn is None


def test_backward_asks_the_model_about_each_input_that_requires_grad(server: ScriptedModelServer) -> None:
    system = Variable("Classify the sentiment.", role="system prompt", requires_grad=True)
    review = Variable("I love it.", role="review")
    answer = ChatCompletion(model(server))(review, system=system)
    answer.backward(Variable("It should say 'positive' only.", role="reviewer feedback"))
    assert [(g.data, g.role) for g in system.grad] == [
        ("Make the system prompt ask for one word.", "feedback to system prompt")
    ]
    assert review.grad == []
    question = server.requests[-1]
    assert kind(question) == "backward" and len(server.requests) == 2
    assert "<OUTPUT_FEEDBACK>It should say 'positive' only.</OUTPUT_FEEDBACK>" in question.user
    assert "<SYSTEM_MESSAGE>Classify the sentiment.</SYSTEM_MESSAGE>" in question.user
    assert '<OUTPUT role="response of the model">positive</OUTPUT>' in question.user


def test_gradients_through_plus_and_a_two_step_chain(server: ScriptedModelServer) -> None:
    """summary = chat(doc | system=base+rule); label = chat(summary); feedback on the label reaches
    the summary (by the model), then the rule (by the model, then through +)."""
    chat = ChatCompletion(model(server))
    base = Variable("Summarize the review.", role="summary instructions")
    rule = Variable(" Keep the sentiment words.", role="summary rule", requires_grad=True)
    summary = chat(Variable("I love it a lot."), system=base + rule, role="summary")
    label = chat(summary, system="Classify the sentiment.", role="label")
    assert label.data == "positive" and summary.requires_grad and label.requires_grad
    label.backward("Wrong label.")
    assert [g.data for g in summary.grad] == ["Make the summary ask for one word."]
    combined = "summary instructions and summary rule"
    assert [g.data for g in rule.grad] == [
        "Here is the combined feedback we got for this specific summary rule and other variables: "
        f"Make the {combined} ask for one word."
    ]
    assert base.grad == []
    assert [kind(r) for r in server.requests] == ["forward", "forward", "backward", "backward"]


def test_call_record_keeps_usage_and_cost(server: ScriptedModelServer) -> None:
    record = CallRecord(path=__import__("reprise").HierarchyPath("optim.test"))
    import anyio

    text = anyio.run(lambda: model(server).complete("I love it.", "Classify.", ctx=record))
    assert text == "positive"
    assert record.result_fields["usage"] == {"input_tokens": 10, "output_tokens": 5, "calls": 1}
    assert record.result_fields["ai"]["credentials_source"] == "env:OPENAI_API_KEY"


def test_exact_match_over_a_list_and_its_feedback_backward(server: ScriptedModelServer) -> None:
    system = Variable("Classify the sentiment.", role="system prompt", requires_grad=True)
    answer = ChatCompletion(model(server))("Great, it broke again.", system=system, role="label")
    score, feedback = ExactMatch()(answer, "NEGATIVE")
    assert score.data == 1.0 and feedback.data == "Every answer is correct."
    score, feedback = ExactMatch()(answer, "positive")
    assert score.data == 0.0
    assert feedback.data == "The answer 'negative' is wrong: the expected answer is 'positive'."
    feedback.backward()
    assert len(system.grad) == 1
    assert "exact match says about this label: The answer 'negative' is wrong" in server.requests[-1].user
    batch = Variable(["positive", "negative"], role="labels")
    score, _ = ExactMatch()(batch, ["positive", "positive"])
    assert score.data == 0.5
    with pytest.raises(ValueError, match="needs a list of as many targets"):
        ExactMatch()(batch, ["positive"])


def test_function_evaluator_and_model_judge(server: ScriptedModelServer) -> None:
    def mentions(got: str, expected: str) -> tuple[float, str]:
        return (1.0, "") if expected in got else (0.0, f"Mention {expected}.")

    score, feedback = FunctionEvaluator(mentions)(Variable("a cat", role="answer"), "dog")
    assert (score.data, feedback.data, feedback.requires_grad) == (0.0, "Mention dog.", False)
    with pytest.raises(TypeError, match="must return a number or"):
        FunctionEvaluator(lambda got, expected: "yes")(Variable("a"), "b")  # type: ignore[arg-type,return-value]
    judge = ModelJudge(model(server), criteria="Is it a one-word label?")
    score, feedback = judge(Variable("positive, I think", role="label", requires_grad=True))
    assert (score.data, feedback.data) == (0.25, "Too vague.")
    assert feedback.requires_grad and judge.records[0].result_fields["usage"]["calls"] == 1


def test_a_failing_or_nonsense_backward_names_the_variable(tmp_path: Path) -> None:
    replies: list[str | Reply] = []

    def answer(request: ChatRequest) -> str | Reply:
        if kind(request) == "backward":
            return replies.pop(0)
        return "positive"

    with ScriptedModelServer(answer) as server:
        system = Variable("Classify.", role="system prompt", requires_grad=True)
        out = ChatCompletion(model(server, retries=0))("I love it.", system=system)
        replies.append(Reply(500, {"error": {"message": f"boom, your key is {CANARY}"}}))
        with pytest.raises(OptimizationError) as info:
            out.backward("wrong")
        message = str(info.value)
        assert message.startswith("parameter 'system prompt': the backward model (scripted-model) failed")
        assert "HTTP 500" in message and CANARY not in message
        replies.append("I am not sure what you mean.")
        with pytest.raises(OptimizationError, match="gave no feedback between <FEEDBACK> and </FEEDBACK>"):
            out.backward("wrong")
        assert system.grad == [] and system.data == "Classify."
