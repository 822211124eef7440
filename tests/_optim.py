"""Shared pieces of the reprise.optim tests: a scripted model server that knows which of the
three kinds of call it is answering (forward, backward, optimiser step)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from examples.scripted_model import ChatRequest, Reply, ScriptedModelServer

CANARY = "sk-canary-optim-7f3a9c1e-do-not-leak"


def kind(request: ChatRequest) -> str:
    """``backward``, ``step``, ``judge`` or ``forward``: what a request to the model is for."""
    if "<OUTPUT_FEEDBACK>" in request.user:
        return "backward"
    if "<FEEDBACK_ON_VARIABLE>" in request.user:
        return "step"
    if "<ANSWER>" in request.user:
        return "judge"
    return "forward"


Answer = Callable[[ChatRequest], "str | Reply"]


def set_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """A canary key in the environment (it must never show anywhere) and no credentials file."""
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("REPRISE_CREDENTIALS", "/nonexistent/reprise-credentials.toml")
    for var in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(var, raising=False)


__all__ = ["CANARY", "ChatRequest", "Reply", "ScriptedModelServer", "kind", "set_keys"]
