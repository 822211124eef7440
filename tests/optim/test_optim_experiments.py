"""Training over a data set as reprise experiments: every evaluation runs in parallel worker
processes against the scripted model server, and the experiments compare before and after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from examples.optim_sentiment import TRAIN, VALIDATION, scripted_answer, sentiment_flow

from _optim import ScriptedModelServer, set_keys
from reprise.experiments import ExperimentFolder, compare_experiments
from reprise.optim import GRADIENTS_FILE, TGD, ChatModel, ExactMatch, FlowModule, Parameter, Trainer
from reprise.run import read_spans

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)
    # The worker processes import the example's nodes.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))


def test_training_evaluations_are_experiments(tmp_path: Path) -> None:
    with ScriptedModelServer(scripted_answer) as server:
        model = ChatModel("scripted-optimiser", base_url=server.base_url)
        module = FlowModule(
            sentiment_flow(server.base_url),
            root="sentiment",
            parameters={"system": Parameter("Classify the sentiment of the review.", role="system prompt")},
            output="classify",
            output_role="sentiment label",
            backward_model=model,
            project_root=tmp_path,
        )
        trainer = Trainer(module, TGD(module, model), ExactMatch(), batch_size=2, experiment="sentiment")
        result = trainer.fit(TRAIN, VALIDATION, epochs=2)
    assert result.validation == [0.5, 1.0]
    names = [ExperimentFolder(p).name for p in module.experiments]
    assert [n.rsplit("_", 2)[0] for n in names] == [
        "sentiment-val-step0",
        "sentiment-epoch0-batch0",
        "sentiment-val-step1",
    ]
    before, batch, after = (ExperimentFolder(p) for p in module.experiments)
    # Runs went through worker processes, each its own run, in parallel.
    records = [json.loads(line) for line in batch.runs_path.read_text().splitlines()]
    assert {r["status"] for r in records} == {"completed"} and len(records) == 2
    assert len({r["worker"] for r in records}) >= 1 and all(r["worker"] for r in records)
    assert (before.read_summary() or {})["success_rate"] == 1.0
    # The wrong training answer got its gradient on disk and its backward span in its trace.
    wrong = next(r for r in records if r["input_id"] == "item-0")
    run_dir = tmp_path / "runs" / wrong["run_id"]
    grads = json.loads((run_dir / "sentiment" / "classify" / GRADIENTS_FILE).read_text())
    assert "watch for sarcasm" in grads[0]["inputs"][0]["feedback"]
    assert any(s.name == "backward sentiment.classify" for s in read_spans(run_dir))
    # Before and after, input by input: the sarcastic review changed from positive to negative.
    comparison = compare_experiments(before, after)
    assert [c.input_id for c in comparison.changed] == ["item-0"]
    cli = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "experiment", "compare", str(before.path), str(after.path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "inputs that changed outcome: 1 of 2" in cli.stdout and "item-0" in cli.stdout


def test_experiment_needs_a_flow_module() -> None:
    from test_optim_training import Classifier

    classifier = Classifier(ChatModel("m", base_url="http://127.0.0.1:9/v1"))
    with pytest.raises(TypeError, match="experiment='x' needs a FlowModule, not a Classifier"):
        Trainer(classifier, TGD(classifier, classifier.chat.model), ExactMatch(), experiment="x")
