"""Any function as a target (issue 22): a one-node flow named after it, sync or async, taking
the input text or keyword arguments, marked or not with ``@reprise.entrypoint()``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

import reprise
from reprise import DefinitionError, FlowRunner, NodeContext, RunContext, RunFailedError
from reprise._targets import import_target
from reprise.dsl import function_flow
from reprise.errors import TargetError
from reprise.experiments import Experiment, LocalExecutor


def shout(input_text: str) -> str:
    return input_text.upper()


async def ask(question: str, style: str = "short", ctx: NodeContext | None = None) -> dict[str, Any]:
    await anyio.sleep(0)
    assert ctx is not None
    return {"question": question, "style": style, "path": str(ctx.path)}


@reprise.entrypoint("answer", input_param="question")
def answer(question: str, tone: str = "plain") -> str:
    return f"{tone}: {question}"


def run_flow(tmp_path: Path, fn: Any, inputs: dict[str, Any]) -> Any:
    flow = function_flow(fn)
    ctx = RunContext(root_component_id=flow.id or "root", project_root=tmp_path, initial_inputs=inputs)
    return FlowRunner(flow, ctx).run_sync()


def test_one_parameter_takes_the_input_text_or_its_own_name(tmp_path: Path) -> None:
    flow = function_flow(shout)
    assert flow.id == "shout" and [e.id for e in flow.elements] == ["shout"]
    assert run_flow(tmp_path, shout, {"input": "hi"}).outcome == "HI"
    assert run_flow(tmp_path, shout, {"input_text": "by name", "input": "no"}).outcome == "BY NAME"
    with pytest.raises(RunFailedError, match="initial input 'input_text' or 'input' was not given"):
        run_flow(tmp_path, shout, {"other": 1})


def test_several_parameters_are_keyword_arguments_with_their_defaults(tmp_path: Path) -> None:
    assert run_flow(tmp_path, ask, {"question": "why?"}).outcome == {
        "question": "why?",
        "style": "short",
        "path": "ask.ask",
    }
    assert run_flow(tmp_path, ask, {"question": "why?", "style": "long"}).outcome["style"] == "long"
    with pytest.raises(RunFailedError, match="initial input 'question' was not given"):
        run_flow(tmp_path, ask, {"input": "the text goes nowhere: two parameters"})


def test_the_decorator_names_the_flow_and_the_text_parameter(tmp_path: Path) -> None:
    assert answer("direct call", "still works") == "still works: direct call"
    assert function_flow(answer).id == "answer"
    assert run_flow(tmp_path, answer, {"input": "hello"}).outcome == "plain: hello"
    with pytest.raises(DefinitionError, match="input_param 'nope' is not one of its parameters"):
        function_flow(reprise.entrypoint("x", input_param="nope")(lambda text: text))
    with pytest.raises(DefinitionError, match="invalid id"):
        reprise.entrypoint("not an id")(lambda text: text)


def test_what_cannot_be_a_target_says_why(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match=r"decorate it with @reprise\.entrypoint"):
        function_flow(lambda text: text)
    (tmp_path / "things.py").write_text("class Thing:\n    pass\n\nvalue = 3\n")
    with pytest.raises(TargetError, match=r"things\.py:Thing is a type, not a flow, an agent or a function"):
        import_target("things.py:Thing", tmp_path)
    with pytest.raises(TargetError, match="is a int, not a flow, an agent or a function"):
        import_target("things.py:value", tmp_path)


def test_reprise_run_runs_a_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from reprise.cli import main

    (tmp_path / "agent.py").write_text("def run(input_text: str) -> str:\n    return input_text[::-1]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "agent.py:run", "--input", "input=abc", "--json", "--progress", "none"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["status"] == "completed" and data["run_id"].startswith("run_2")
    # The flow `run` holding the node `run`: its own directory, input and outcome.
    node_dir = tmp_path / "runs" / data["run_id"] / "run" / "run"
    assert json.loads((node_dir / "outcome.json").read_text()) == "cba"


@pytest.mark.parametrize("isolation", ["process", "inline"])
def test_a_function_object_is_an_experiment_target(tmp_path: Path, isolation: str) -> None:
    # Worker processes import it as test_experiment_functions:shout.
    summary = Experiment(
        shout,
        [{"input": "a", "persona": "p"}, {"initial_inputs": {"input_text": "b"}}],
        iterations=2,
        executor=LocalExecutor(isolation),  # type: ignore[arg-type]
        project_root=tmp_path,
        outcome_repo=False,
    ).run_sync()
    assert (summary.total, summary.successes) == (4, 4)
    assert summary.folder.startswith("shout_")
    lines = [json.loads(x) for x in (tmp_path / "experiments" / summary.folder / "runs.jsonl").open()]
    assert sorted(line["outcome"] for line in lines) == ["A", "A", "B", "B"]
    assert all(line["run_id"].startswith("shout_run_") for line in lines)
