"""Burr: a chain of async actions, and a ``MapStates`` fan-out over 1,000 states.

Two configs: ``no-tracking`` (state in memory only) and ``LocalTrackingClient`` (Burr's local
tracker writing each step's state to ``log.jsonl`` under a temporary storage directory: its
on-disk record of a run, the nearest thing to reprise's run directory). A Burr application holds
its state, so each timed run gets a new application; building it is not timed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncGenerator
from typing import Any

from _common import CHAIN_SIZES, FANOUT, Report, main_args, time_async
from burr.core import ApplicationBuilder, ApplicationContext, State, action
from burr.core.parallelism import MapStates
from burr.tracking import LocalTrackingClient


@action(reads=["x"], writes=["x"])
async def inc(state: State) -> State:
    return state.update(x=state["x"] + 1)


class Fan(MapStates):
    """1,000 sub-runs of ``inc``, one per state, gathered on the event loop."""

    def action(self, state: State, inputs: dict[str, Any]) -> Any:
        return inc

    def states(self, state: State, context: ApplicationContext, inputs: dict[str, Any]) -> Any:
        for i in range(state["n"]):
            yield state.update(x=i)

    async def reduce(self, state: State, states: AsyncGenerator[State, None]) -> State:  # type: ignore[override]
        return state.update(results=[s["x"] async for s in states])

    def is_async(self) -> bool:
        return True

    @property
    def reads(self) -> list[str]:
        return ["n"]

    @property
    def writes(self) -> list[str]:
        return ["results"]


def chain_app(n: int, tracker: Any, app_id: str) -> Any:
    names = [f"n{i}" for i in range(n)]
    builder = (
        ApplicationBuilder()
        .with_actions(**{name: inc for name in names})
        .with_transitions(*itertools.pairwise(names))
        .with_state(x=0)
        .with_entrypoint(names[0])
    )
    if tracker is not None:
        builder = builder.with_tracker(tracker).with_identifiers(app_id=app_id)
    return builder.build(), names[-1]


def fan_app(tracker: Any, app_id: str) -> Any:
    builder = (
        ApplicationBuilder()
        .with_actions(fan=Fan())
        .with_transitions()
        .with_state(n=FANOUT, results=[])
        .with_entrypoint("fan")
    )
    if tracker is not None:
        builder = builder.with_tracker(tracker).with_identifiers(app_id=app_id)
    return builder.build(), "fan"


async def main() -> None:
    args = main_args()
    report = Report("burr", ("burr",))
    storage = tempfile.mkdtemp(prefix="burr-", dir=args.tmp)
    configs = {
        "no-tracking": lambda: None,
        "LocalTrackingClient": lambda: LocalTrackingClient(project="bench", storage_dir=storage),
    }
    for config, make_tracker in configs.items():
        try:
            if args.benchmark in CHAIN_SIZES:
                n = CHAIN_SIZES[args.benchmark]
                units = n

                def build(i: int, n: int = n, make_tracker: Any = make_tracker, config: str = config) -> Any:
                    return chain_app(n, make_tracker(), f"{config}-{os.getpid()}-{i}")
            elif args.benchmark == "fanout-1000":
                units = FANOUT

                def build(i: int, make_tracker: Any = make_tracker, config: str = config) -> Any:
                    return fan_app(make_tracker(), f"{config}-{os.getpid()}-{i}")
            else:
                report.error(args.benchmark, config, "not run for this system")
                continue

            async def go(prepared: Any) -> Any:
                app, last = prepared
                _, _, state = await app.arun(halt_after=[last])
                return state

            state = await go(build(-1))
            if args.benchmark in CHAIN_SIZES:
                assert state["x"] == units, state["x"]
            else:
                assert sorted(state["results"]) == list(range(1, FANOUT + 1))
            unit = "node" if args.benchmark in CHAIN_SIZES else "branch"
            report.add(args.benchmark, config, units, await time_async(go, args.runs, prepare=build), unit=unit)
        except Exception as exc:
            report.error(args.benchmark, config, exc)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
