"""Learnable prompts, offline: a sentiment classifier whose system prompt is improved from
feedback until it handles sarcasm.

::

    python -m examples.optim_sentiment                 # runs under a temporary directory
    python -m examples.optim_sentiment --project-root /tmp/sentiment

It starts a scripted OpenAI-compatible model server on 127.0.0.1 (no account, no network) whose
"model" classifies naively (praise words mean positive) unless its system prompt tells it to
watch for sarcasm, writes feedback that says so, and rewrites prompts as that feedback asks. The
classifier is a reprise flow (``prep`` then ``classify``, an AIModelNode whose system message is
the learnable parameter), so every forward pass is a reprise run; every optimiser step commits
the prompt to the outcome repository. See docs/optimisation.md.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from examples.scripted_model import ChatRequest, ScriptedModelServer
from reprise import FlowDefinition, Initial, Ref, RunContext, node
from reprise.nodes import AIModelNode
from reprise.optim import TGD, ChatModel, ExactMatch, FlowModule, Parameter, ParameterHistory, Trainer, TrainingResult

PHRASE = "watch for sarcasm"
PRAISE = ("great", "love", "perfect", "wonderful")
COMPLAINT = ("broke", "deletes", "again", "another", "waited")

TRAIN = [
    ({"text": "Oh great, it broke after one day."}, "negative"),
    ({"text": "I love this blender, it is quiet."}, "positive"),
]
VALIDATION = [
    ({"text": "Great, another update that deletes my files."}, "negative"),
    ({"text": "Love it, it works perfectly."}, "positive"),
]


def scripted_answer(request: ChatRequest) -> str:
    """The scripted model: classifies, writes feedback, or rewrites a prompt."""
    if "<OUTPUT_FEEDBACK>" in request.user:  # backward: feedback for the system prompt
        return (
            "<FEEDBACK>Tell the classifier to watch for sarcasm: praise words next to a complaint "
            "(it broke, it deletes files) mean the review is negative.</FEEDBACK>"
        )
    if "<FEEDBACK_ON_VARIABLE>" in request.user:  # optimiser step: rewrite the prompt
        value = re.search(r"<VARIABLE>(.*?)</VARIABLE>", request.user, re.S)
        current = value.group(1).strip() if value else ""
        if PHRASE in request.user.lower() and PHRASE not in current.lower():
            current += " Watch for sarcasm: praise next to a complaint is negative."
        return f"<IMPROVED_VARIABLE>{current}</IMPROVED_VARIABLE>"
    text = request.user.lower()
    if PHRASE in request.system.lower() and any(w in text for w in COMPLAINT):
        return "negative"
    return "positive" if any(w in text for w in PRAISE) else "negative"


@node
def prep(text: str) -> str:
    """Normalise the review's whitespace (reads no parameter: re-evaluation reuses it)."""
    return " ".join(text.split())


def sentiment_flow(base_url: str) -> FlowDefinition:
    """``prep`` then ``classify``, whose system message is the initial input ``system``."""
    classify = AIModelNode(model="scripted-sentiment", base_url=base_url, system="$var{system}", prompt="$var{text}")
    return (
        FlowDefinition()
        .node("prep", prep, inputs={"text": Initial("text")})
        .node("classify", classify, inputs={"system": Initial("system"), "text": Ref("prep")})
    )


def train(project_root: Path, base_url: str, *, epochs: int = 3) -> tuple[TrainingResult, FlowModule, TGD]:
    """Fit the system prompt; metrics go to a ``training`` run, versions to the outcome repo."""
    model = ChatModel("scripted-optimiser", base_url=base_url)
    system = Parameter("Classify the sentiment of the review as positive or negative.", role="system prompt")
    module = FlowModule(
        sentiment_flow(base_url),
        root="sentiment",
        parameters={"system": system},
        output="classify",
        output_role="sentiment label",
        backward_model=model,
        project_root=project_root,
    )
    optimizer = TGD(
        module, model, constraints=["Answer with one word."], store=ParameterHistory(project_root, root="prompts")
    )
    with RunContext(root_component_id="training", project_root=project_root) as run:
        result = Trainer(module, optimizer, ExactMatch(), batch_size=2, run=run).fit(TRAIN, VALIDATION, epochs=epochs)
    return result, module, optimizer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--project-root", type=Path, default=None)
    args = parser.parse_args(argv)
    project_root: Path = args.project_root or Path(tempfile.mkdtemp(prefix="reprise-optim-"))
    project_root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OPENAI_API_KEY", "unused")  # the scripted server checks no key
    with ScriptedModelServer(scripted_answer) as server:
        result, module, optimizer = train(project_root, server.base_url)
    print("validation accuracy by step:", ", ".join(f"{v:.2f}" for v in result.validation))
    print("system prompt:", module.state_dict()["system"])
    store = optimizer.store
    assert store is not None
    repo = project_root / "runs" / "outcome" / project_root.name
    print(f"history: git -C {repo} log -p {store.branch} -- {store.file_path('system')}")
    log = subprocess.run(
        ["git", "-C", str(repo), "log", "--format=%s", str(store.branch)], capture_output=True, text=True
    )
    print(f"{len(log.stdout.splitlines())} commits; forward runs: {len(module.runs)}, reused: {module.reused_runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
