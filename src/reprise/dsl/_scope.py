"""The read-only view of a running flow that value sources resolve against.

The runner implements it; the DSL only states what a source may ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["Scope"]


class Scope(Protocol):
    """What a :class:`~reprise.dsl._sources.Source` can read while a run executes."""

    @property
    def initial_inputs(self) -> Mapping[str, Any]:
        """The run's initial inputs."""
        ...

    def lookup(self, parts: tuple[str, ...]) -> Any:
        """The outcome at a (relative or absolute) path, or :data:`reprise.dsl._sources.MISSING`."""
        ...

    def variable(self, name: str) -> Any:
        """The value of a loop variable; raises ``NodeInputError`` if none is in scope."""
        ...
