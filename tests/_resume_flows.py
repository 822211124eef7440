"""Flows for the resume tests (tests/test_resume.py), run killed in a subprocess and resumed
in the test's process.

Each node appends its label (its name, then its loop item if it has one: ``b0``) to the file
``$RESUME_CALLS``, so a test sees which node bodies ran. A node whose label is listed in
``$RESUME_BLOCK`` (comma-separated) writes ``<label>.blocked`` beside that file and then sleeps
until the test kills the process: the test knows the node is running and did not complete.

Run as ``python -m _resume_flows FLOW PROJECT_ROOT [HOOK]``. ``HOOK`` ``before-commit`` or
``after-commit`` adds a completion hook that writes ``finishing.blocked`` and sleeps: the run is
then killed after its last node completed but before its metadata is final (without, or with,
its outcomes committed to git).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reprise import FlowDefinition, FlowRunner, Ref, RunContext, RunStatus, Var

__all__ = ["FLOWS", "blocked_marker", "main"]

_SLEEP_S = 600.0


def _calls() -> Path:
    return Path(os.environ["RESUME_CALLS"])


def blocked_marker(calls: Path, label: str) -> Path:
    """The file a node labelled ``label`` writes when it blocks."""
    return calls.with_name(f"{label}.blocked")


def _record(label: str) -> None:
    calls = _calls()
    with open(calls, "a") as f:
        f.write(label + "\n")
    if label in os.environ.get("RESUME_BLOCK", "").split(","):
        blocked_marker(calls, label).write_text("")
        time.sleep(_SLEEP_S)  # a thread of the run's: the other nodes go on meanwhile


def item_step(name: str) -> Callable[[int], int]:
    """A node of a loop body: labelled with its item ``n``, which it returns."""

    def step(n: int) -> int:
        _record(f"{name}{n}")
        return n

    step.__name__ = name
    return step


def total(values: list[int]) -> int:
    """A node after the loop: labelled ``z``."""
    _record("z")
    return sum(values)


def loop_flow() -> FlowDefinition:
    """``[0, 1, 2, 3]``, body ``a -> b``, two iterations at a time, then ``z``."""
    body = (
        FlowDefinition()
        .node("a", item_step("a"), inputs={"n": Var("item")})
        .node("b", item_step("b"), inputs={"n": Ref("a")})
    )
    return (
        FlowDefinition()
        .for_each("loop", [0, 1, 2, 3], body, max_concurrency=2)
        .node("z", total, inputs={"values": Ref("loop")})
    )


def nested_flow() -> FlowDefinition:
    """``[0, 1, 2]``, two at a time; each iteration a parallel block: branch ``left`` a node
    ``x``, branch ``right`` a sub-flow ``s -> t``."""
    sub = (
        FlowDefinition()
        .node("s", item_step("s"), inputs={"n": Var("item")})
        .node("t", item_step("t"), inputs={"n": Ref("s")})
    )
    par = FlowDefinition().parallel(
        "par",
        {
            "left": FlowDefinition().node("x", item_step("x"), inputs={"n": Var("item")}),
            "right": FlowDefinition().subflow("sub", sub),
        },
    )
    return FlowDefinition().for_each("loop", [0, 1, 2], par, max_concurrency=2)


FLOWS: dict[str, Callable[[], FlowDefinition]] = {"loop": loop_flow, "nested": nested_flow}


def _finishing(ctx: RunContext, status: RunStatus) -> None:
    blocked_marker(_calls(), "finishing").write_text(status.value)
    time.sleep(_SLEEP_S)


def main(argv: list[str]) -> None:
    flow_name, project_root = argv[1], argv[2]
    hook = argv[3] if len(argv) > 3 else None
    ctx = RunContext("root", project_root)
    runner = FlowRunner(FLOWS[flow_name](), ctx)
    if hook == "before-commit":
        ctx.add_completion_hook(_finishing)  # before the commit's hook, which setup adds
    runner.setup_run()
    if hook == "after-commit":
        ctx.add_completion_hook(_finishing)
    runner.run_sync()


if __name__ == "__main__":
    main(sys.argv)
