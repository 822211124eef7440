"""Frames: the outcomes visible to the elements of one running container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reprise.dsl._sources import MISSING
from reprise.errors import NodeInputError

__all__ = ["Frame"]


class Frame:
    """One executing container (flow, agent, loop iteration, branch): its children's outcomes,
    the frames of children that are containers, and loop variables. Implements
    :class:`reprise.dsl._scope.Scope`.

    A loop iteration's frame is dropped when the iteration ends, so a long loop keeps only the
    list of iteration outcomes, not every inner node's outcome."""

    __slots__ = ("children", "initial_inputs", "outcomes", "parent", "vars")

    def __init__(
        self, parent: Frame | None, initial_inputs: Mapping[str, Any], vars: dict[str, Any] | None = None
    ) -> None:
        self.parent = parent
        self.outcomes: dict[str, Any] = {}
        self.children: dict[str, Frame] = {}
        self.vars = vars
        self.initial_inputs = initial_inputs

    def child(self, element_id: str, vars: dict[str, Any] | None = None, *, keep: bool = True) -> Frame:
        """A frame for a nested container; ``keep`` makes it reachable by path from here."""
        frame = Frame(self, self.initial_inputs, vars)
        if keep:
            self.children[element_id] = frame
        return frame

    def lookup(self, parts: tuple[str, ...]) -> Any:
        frame: Frame | None = self
        head = parts[0]
        while frame is not None and head not in frame.outcomes and head not in frame.children:
            frame = frame.parent
        if frame is None:
            return MISSING
        for part in parts[:-1]:
            nxt = frame.children.get(part)
            if nxt is None:
                return MISSING
            frame = nxt
        return frame.outcomes.get(parts[-1], MISSING)

    def variable(self, name: str) -> Any:
        frame: Frame | None = self
        while frame is not None:
            if frame.vars is not None and name in frame.vars:
                return frame.vars[name]
            frame = frame.parent
        raise NodeInputError(f"loop variable {name!r} is not in scope")
