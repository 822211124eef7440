"""reprise.optim's optimiser, trainer and flow integration against the scripted model server:
the sentiment example end to end (runs, gradients on disk, parameter commits), a two-step
flow, and failures during backward and step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from examples.optim_sentiment import VALIDATION, scripted_answer, sentiment_flow, train

from _optim import CANARY, ChatRequest, Reply, ScriptedModelServer, kind, set_keys
from reprise import FlowDefinition, Initial, Ref
from reprise.nodes import AIModelNode
from reprise.optim import (
    GRADIENTS_FILE,
    TGD,
    ChatCompletion,
    ChatModel,
    ExactMatch,
    FlowModule,
    Module,
    OptimizationError,
    Parameter,
    ParameterHistory,
    Trainer,
    Variable,
)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


class Classifier(Module):
    def __init__(self, model: ChatModel) -> None:
        super().__init__()
        self.system = Parameter("Classify.", role="system prompt")
        self.chat = ChatCompletion(model)

    def forward(self, text: str) -> Variable:
        return self.chat(Variable(text, role="review"), system=self.system, role="label")


def test_module_collects_parameters_and_restores_state() -> None:
    class Outer(Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = Classifier(ChatModel("m", base_url="http://127.0.0.1:9/v1"))
            self.style = Parameter("Be brief.", role="style")
            self.again = self.style  # the same parameter twice is listed once

    outer = Outer()
    assert [n for n, _ in outer.named_parameters()] == ["style", "inner.system"]
    state = outer.state_dict()
    outer.style.copy_("Be long.")
    outer.load_state_dict(state)
    assert outer.style.data == "Be brief."
    with pytest.raises(KeyError, match="not parameters of Outer: nope"):
        outer.load_state_dict({"nope": "x"})


def test_sentiment_end_to_end(tmp_path: Path) -> None:
    with ScriptedModelServer(scripted_answer) as server:
        result, module, optimizer = train(tmp_path, server.base_url)
    assert result.validation == [0.5, 1.0] and result.best_step == 1
    assert "Watch for sarcasm" in str(module.state_dict()["system"])
    # The runs: validation (2), the training batch (2), validation again as re-runs from classify.
    assert [r.ok for r in module.runs] == [True] * 6
    reruns = module.runs[4:]
    assert all(r.start_hierarchy_path == "sentiment.classify" and r.reused == 1 for r in reruns)
    # The gradient of the wrong training answer is in its classify node's directory.
    wrong = module.runs[2]
    grads = json.loads((wrong.run_dir / "sentiment" / "classify" / GRADIENTS_FILE).read_text())
    assert grads[0]["inputs"][0]["role"] == "system prompt"
    assert "watch for sarcasm" in grads[0]["inputs"][0]["feedback"]
    # Every version of the prompt is committed; the feedback is in the commit message.
    store = optimizer.store
    assert store is not None and len(store.runs) == 2
    repo = tmp_path / "runs" / "outcome" / tmp_path.name
    log = git(repo, "log", "-p", str(store.branch), "--", store.file_path("system"))
    assert log.count("\ncommit ") + log.startswith("commit ") == 2
    assert "step 1: system" in log and "feedback:\nTell the classifier to watch for sarcasm" in log.replace("    ", "")
    assert "+Classify the sentiment of the review as positive or negative. Watch for sarcasm" in log
    assert [v.step for v in optimizer.history["system"]] == [0, 1]
    # Metrics went to the training run.
    [training] = [p for p in (tmp_path / "runs").iterdir() if (p / ".trace" / "user_metrics.jsonl").exists()]
    lines = [json.loads(x) for x in (training / ".trace" / "user_metrics.jsonl").read_text().splitlines()]
    assert [(x["step"], x["metrics"]["val_score"]) for x in lines] == [(0, 0.5), (1, 1.0)]


def test_unchanged_parameters_reuse_the_earlier_run(tmp_path: Path) -> None:
    with ScriptedModelServer(scripted_answer) as server:
        module = FlowModule(
            sentiment_flow(server.base_url),
            root="sentiment",
            parameters={"system": Parameter("Classify.", role="system prompt")},
            output="classify",
            backward_model=ChatModel("m", base_url=server.base_url),
            project_root=tmp_path,
        )
        first = module(VALIDATION[0][0])
        second = module(VALIDATION[0][0])
        calls = len(server.requests)
    assert first.data == second.data == "positive"
    assert len(module.runs) == 1 and module.reused_runs == 1 and calls == 1


def test_gradients_through_a_two_step_flow(tmp_path: Path) -> None:
    def answer(request: ChatRequest) -> str:
        if kind(request) == "backward":
            role = request.user.split("The part to improve is the ")[1].split(":")[0]
            return f"<FEEDBACK>fix the {role}</FEEDBACK>"
        return "summary" if "Summarize" in request.system else "positive"

    with ScriptedModelServer(answer) as server:
        url = server.base_url
        flow = (
            FlowDefinition()
            .node(
                "summarize",
                AIModelNode(model="m", base_url=url, system="$var{system}", prompt="$var{text}"),
                inputs={"system": Initial("summary_prompt"), "text": Initial("text")},
            )
            .node(
                "classify",
                AIModelNode(model="m", base_url=url, system="$var{system}", prompt="$var{text}"),
                inputs={"system": Initial("label_prompt"), "text": Ref("summarize")},
            )
        )
        first = Parameter("Summarize.", role="summary prompt")
        second = Parameter("Label it.", role="label prompt")
        module = FlowModule(
            flow,
            root="two",
            parameters={"summary_prompt": first, "label_prompt": second},
            output="classify",
            backward_model=ChatModel("m", base_url=url),
            project_root=tmp_path,
        )
        label = module({"text": "I love it"})
        label.backward("The label should be negative.")
    assert [g.data for g in second.grad] == ["fix the label prompt"]
    assert [g.data for g in first.grad] == ["fix the summary prompt"]
    run_dir = module.runs[0].run_dir / "two"
    summary_grads = json.loads((run_dir / "summarize" / GRADIENTS_FILE).read_text())
    assert summary_grads[0]["output_feedback"] == "fix the output of two.summarize"
    assert len(json.loads((run_dir / "classify" / GRADIENTS_FILE).read_text())[0]["inputs"]) == 2


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (Reply(500, {"error": {"message": f"down; key {CANARY}"}}), "the optimiser model (opt) failed"),
        ("I would rather not.", "gave no new value between <IMPROVED_VARIABLE>"),
    ],
)
def test_a_failing_step_names_parameter_and_step_and_keeps_values(tmp_path: Path, bad: str | Reply, words: str) -> None:
    steps: list[str | Reply] = ["<IMPROVED_VARIABLE>Classify, one word.</IMPROVED_VARIABLE>", bad]

    def answer(request: ChatRequest) -> str | Reply:
        if kind(request) == "step":
            return steps.pop(0)
        if kind(request) == "backward":
            return "<FEEDBACK>say one word</FEEDBACK>"
        return "positive"

    with ScriptedModelServer(answer) as server:
        model = ChatModel("opt", base_url=server.base_url, retries=0)
        classifier = Classifier(model)
        store = ParameterHistory(tmp_path, root="prompts")
        optimizer = TGD(classifier, model, constraints=["One word."], store=store)
        for expected_step in (1, 2):
            optimizer.zero_grad()
            classifier("I hate it").backward("should be negative")
            if expected_step == 1:
                optimizer.step()
                assert "Constraint 1: One word." in server.requests[-1].user
                continue
            with pytest.raises(OptimizationError) as info:
                optimizer.step()
    message = str(info.value)
    assert message.startswith("step 2, parameter 'system': ") and words in message and CANARY not in message
    assert classifier.system.data == "Classify, one word."  # the last good value
    assert [v.value for v in optimizer.history["system"]] == ["Classify.", "Classify, one word."]
    assert optimizer.step_count == 1 and len(store.runs) == 2
    assert classifier.system.grad  # the feedback is still there for another try


def test_a_failing_backward_in_training_names_the_step(tmp_path: Path) -> None:
    def answer(request: ChatRequest) -> str | Reply:
        if kind(request) == "backward":
            return "no tags here"
        return "positive"

    with ScriptedModelServer(answer) as server:
        model = ChatModel("m", base_url=server.base_url)
        classifier = Classifier(model)
        trainer = Trainer(classifier, TGD(classifier, model), ExactMatch())
        with pytest.raises(OptimizationError) as info:
            trainer.fit([("I hate it", "negative")], [("I love it", "positive")])
    assert str(info.value).startswith("step 1, parameter 'system prompt': the backward model (m) gave no feedback")
    assert classifier.system.data == "Classify."


def test_patience_alert_and_best_parameters_kept(tmp_path: Path) -> None:
    versions = iter(["worse one", "worse two", "worse three"])

    def answer(request: ChatRequest) -> str:
        if kind(request) == "backward":
            return "<FEEDBACK>change it</FEEDBACK>"
        if kind(request) == "step":
            return f"<IMPROVED_VARIABLE>{next(versions)}</IMPROVED_VARIABLE>"
        return "positive" if request.system == "Classify." else "negative"

    from reprise import RunContext

    with ScriptedModelServer(answer) as server, RunContext(root_component_id="t", project_root=tmp_path) as run:
        model = ChatModel("m", base_url=server.base_url)
        classifier = Classifier(model)
        trainer = Trainer(classifier, TGD(classifier, model), ExactMatch(), batch_size=1, patience=2, run=run)
        result = trainer.fit([("meh", "neutral")], [("good", "positive")], epochs=3)
        alerts = (run.require_run_dir().trace_dir / "alerts.jsonl").read_text()
    assert result.validation == [1.0, 0.0, 0.0, 0.0] and result.best_step == 0
    assert classifier.system.data == "Classify."
    assert "validation stopped improving" in alerts


def test_example_runs_offline(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "examples.optim_sentiment", "--project-root", str(tmp_path / "p")],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "validation accuracy by step: 0.50, 1.00\n" in proc.stdout
    assert "2 commits; forward runs: 6, reused: 0" in proc.stdout
