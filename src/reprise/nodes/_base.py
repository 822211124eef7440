"""The base of built-in nodes whose outcome is one pydantic model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from reprise.dsl._node import Node

__all__ = ["ModelOutcomeNode"]


class ModelOutcomeNode(Node):
    """A node whose outcome is an instance of ``outcome_model``; ``outcome.json`` holds its JSON
    form, which :meth:`load_outcome` turns back into the model (re-runs reuse it that way)."""

    outcome_model: type[BaseModel]

    def validate_outcome(self, outcome: Any) -> Any:
        model = self.outcome_model
        return outcome if isinstance(outcome, model) else model.model_validate(outcome)

    def dump_outcome(self, outcome: Any) -> Any:
        return outcome.model_dump(mode="json")

    def load_outcome(self, data: Any) -> Any:
        return self.outcome_model.model_validate(data)
