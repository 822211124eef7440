"""Backward and step spans in the forward run's trace, against the scripted model server."""

from __future__ import annotations

from pathlib import Path

import pytest
from examples.optim_sentiment import scripted_answer, train

from _optim import CANARY, ScriptedModelServer, set_keys
from reprise.run import read_spans, render_trace_tree


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    set_keys(monkeypatch)


def test_backward_and_step_are_spans_of_the_forward_trace(tmp_path: Path) -> None:
    with ScriptedModelServer(scripted_answer) as server:
        result, module, _ = train(tmp_path, server.base_url)
    assert result.best_step == 1
    wrong = module.runs[2]  # the training item the naive prompt gets wrong
    spans = read_spans(wrong.run_dir)
    by_id = {s.span_id: s for s in spans}
    [root] = [s for s in spans if s.attributes.get("reprise.element_type") == "run"]
    [classify] = [
        s
        for s in spans
        if s.attributes.get("reprise.element_type") == "node"
        and s.attributes.get("reprise.hierarchy_path") == "sentiment.classify"
    ]
    # Backward: under the node it is about, in the same trace, with its model call inside.
    [backward] = [s for s in spans if s.name == "backward sentiment.classify"]
    assert backward.trace_id == root.trace_id and backward.parent_span_id == classify.span_id
    assert backward.attributes["reprise.run_id"] == wrong.run_id
    assert backward.attributes["reprise.optim.inputs"] == ["system prompt"]
    assert "sentiment label" in backward.attributes["reprise.optim.output_role"]
    [call] = [s for s in spans if s.parent_span_id == backward.span_id]
    assert call.name == "chat scripted-optimiser" and call.attributes["gen_ai.usage.input_tokens"] > 0
    assert "watch for sarcasm" in str(call.attributes["gen_ai.output.messages"])
    # The step: under the run's span of the latest run its feedback came from.
    [step] = [s for s in spans if s.name == "step 1"]
    assert step.parent_span_id == root.span_id and step.trace_id == root.trace_id
    assert step.attributes["reprise.optim.feedback_runs"] == [wrong.run_id]
    [rewrite] = [s for s in spans if s.parent_span_id == step.span_id]
    assert rewrite.name == "chat scripted-optimiser" and "Watch for sarcasm" in str(
        rewrite.attributes["gen_ai.output.messages"]
    )
    assert all(s.parent_span_id is None or s.parent_span_id in by_id for s in spans)
    tree = render_trace_tree(wrong.run_dir)
    assert "backward sentiment.classify" in tree and "step 1" in tree
    assert CANARY not in (wrong.run_dir / ".trace" / "trace.jsonl").read_text()
    # The run that answered right got no feedback: no backward span in its trace.
    right = module.runs[3]
    assert not [s for s in read_spans(right.run_dir) if s.name.startswith(("backward", "step"))]
