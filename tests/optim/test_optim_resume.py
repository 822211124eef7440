"""A training killed with SIGKILL mid-way resumes where it stopped: a real subprocess trains
against the scripted model server on loopback, which kills it during its third step."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_optim_training import Classifier

from _optim import ChatRequest, ScriptedModelServer, kind, set_keys
from reprise.optim import TGD, ChatModel, ExactMatch, OptimizationError, Trainer

ROOT = Path(__file__).resolve().parents[2]

# Version vK of the prompt answers "item i" right when i < K; each step makes vK+1. The training
# items are always wrong (one step per batch); validation rises 0, .25, .5, .75, 1.0.
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from reprise.optim import TGD, ChatCompletion, ChatModel, ExactMatch, Module, Parameter, ParameterHistory, Trainer
    from reprise.optim import Variable

    class Classifier(Module):
        def __init__(self, model):
            super().__init__()
            self.system = Parameter("v0", role="system prompt")
            self.chat = ChatCompletion(model)

        def forward(self, text):
            return self.chat(Variable(text, role="item"), system=self.system, role="answer")

    url, root, resume = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "resume"
    model = ChatModel("m", base_url=url, retries=0)
    classifier = Classifier(model)
    optimizer = TGD(classifier, model, store=ParameterHistory(root, root="prompts"))
    trainer = Trainer(classifier, optimizer, ExactMatch(), batch_size=1, directory=root / "training")
    train = [("item 5", "right"), ("item 6", "right")]
    validation = [(f"item {i}", "right") for i in range(4)]
    result = trainer.fit(train, validation, epochs=3, resume=resume)
    print(json.dumps({"validation": result.validation, "steps": result.steps, "best_step": result.best_step,
                      "value": classifier.system.data, "branch": optimizer.store.branch,
                      "history": [v.value for v in optimizer.history["system"]]}))
    """
)


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)


def versioned(request: ChatRequest) -> str:
    if kind(request) == "backward":
        return "<FEEDBACK>bump the version</FEEDBACK>"
    if kind(request) == "step":
        current = int(re.findall(r"<VARIABLE>\s*v(\d+)", request.user)[0])
        return f"<IMPROVED_VARIABLE>v{current + 1}</IMPROVED_VARIABLE>"
    version = int(request.system[1:])
    item = int(request.user.split()[-1])
    return "right" if item < version else "wrong"


def test_a_killed_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    child: list[subprocess.Popen[str]] = []
    steps_asked: list[str] = []

    def answer(request: ChatRequest) -> str:
        if kind(request) == "step":
            steps_asked.append(request.user)
            if len(steps_asked) == 3 and child[0].poll() is None:  # mid-way: during the third step
                os.kill(child[0].pid, signal.SIGKILL)
                child[0].wait()
        return versioned(request)

    with ScriptedModelServer(answer) as server:
        argv = [sys.executable, str(script), server.base_url, str(tmp_path / "p")]
        child.append(subprocess.Popen([*argv, "fresh"], env=env, stdout=subprocess.PIPE, text=True))
        child[0].communicate(timeout=120)
        assert child[0].returncode == -signal.SIGKILL
        saved = json.loads((tmp_path / "p" / "training" / "trainer_state.json").read_text())
        assert (saved["epoch"], saved["batch"], saved["optimizer"]["step"]) == (1, 0, 2)
        assert saved["parameters"] == {"system": "v2"}
        resumed = subprocess.run([*argv, "resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    out = json.loads(resumed.stdout)
    assert out["validation"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (out["steps"], out["best_step"], out["value"]) == (4, 4, "v4")
    assert out["history"] == ["v0", "v1", "v2", "v3", "v4"]
    # Only the step that was cut off was asked again: steps 1 and 2 were not redone.
    assert len(steps_asked) == 5
    # The parameter commits form one history: initial values and four steps, none twice.
    repo = tmp_path / "p" / "runs" / "outcome" / "p"
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%B", out["branch"]], capture_output=True, text=True, check=True
    ).stdout
    assert log.count("initial values") == 1
    assert [log.count(f"step {n}: system") for n in (1, 2, 3, 4)] == [1, 1, 1, 1]
    # Resuming a finished training does nothing more.
    again = json.loads(
        subprocess.run([*argv, "resume"], env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    )
    assert again == out


def test_resume_refuses_other_data_and_needs_a_directory(tmp_path: Path) -> None:
    with ScriptedModelServer(versioned) as server:
        model = ChatModel("m", base_url=server.base_url)
        classifier = Classifier(model)
        classifier.system.copy_("v0")
        trainer = Trainer(classifier, TGD(classifier, model), ExactMatch(), directory=tmp_path / "t")
        trainer.fit([("item 0", "right")], [("item 9", "right")], epochs=1)
        with pytest.raises(OptimizationError, match=r"trainer_state.json was saved while training on other data"):
            trainer.fit([("item 1", "right")], [("item 9", "right")], epochs=1, resume=True)
        with pytest.raises(ValueError, match="needs the Trainer's directory"):
            Trainer(classifier, TGD(classifier, model), ExactMatch()).fit([], [], resume=True)
