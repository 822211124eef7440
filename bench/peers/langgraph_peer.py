"""LangGraph: a StateGraph chain, and a fan-out of 1,000 ``Send``s reduced into one list.

Two configs: ``no-checkpointer`` (nothing kept) and ``InMemorySaver`` (a checkpoint per
super-step, in memory only: LangGraph's persistence without the disk). Each timed run gets a new
thread id, so checkpoints of earlier runs are never read back.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict

from _common import CHAIN_SIZES, FANOUT, Report, main_args, time_async
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send


class ChainState(TypedDict):
    x: int


class FanState(TypedDict):
    n: int
    results: Annotated[list[int], operator.add]


class Item(TypedDict):
    x: int


async def inc(state: ChainState) -> dict[str, int]:
    return {"x": state["x"] + 1}


async def inc_branch(item: Item) -> dict[str, list[int]]:
    return {"results": [item["x"] + 1]}


def chain(n: int, checkpointer: Any) -> Any:
    g = StateGraph(ChainState)
    for i in range(n):
        g.add_node(f"n{i}", inc)
    g.add_edge(START, "n0")
    for i in range(n - 1):
        g.add_edge(f"n{i}", f"n{i + 1}")
    g.add_edge(f"n{n - 1}", END)
    return g.compile(checkpointer=checkpointer)


def fanout(checkpointer: Any) -> Any:
    g = StateGraph(FanState)
    g.add_node("inc", inc_branch)
    g.add_conditional_edges(START, lambda s: [Send("inc", {"x": i}) for i in range(s["n"])], ["inc"])
    g.add_edge("inc", END)
    return g.compile(checkpointer=checkpointer)


CONFIGS = {"no-checkpointer": lambda: None, "InMemorySaver": InMemorySaver}


async def main() -> None:
    args = main_args()
    report = Report("langgraph", ("langgraph", "langgraph-checkpoint", "langchain-core"))
    for config, make_saver in CONFIGS.items():
        try:
            if args.benchmark in CHAIN_SIZES:
                n = CHAIN_SIZES[args.benchmark]
                graph = chain(n, make_saver())

                def go(i: int, graph: Any = graph, n: int = n, config: str = config) -> Any:
                    cfg = {"recursion_limit": n + 10, "configurable": {"thread_id": f"{config}-{i}"}}
                    return graph.ainvoke({"x": 0}, cfg)

                assert (await go(-1))["x"] == n
                report.add(args.benchmark, config, n, await time_async(go, args.runs))
            elif args.benchmark == "fanout-1000":
                graph = fanout(make_saver())

                def go(i: int, graph: Any = graph, config: str = config) -> Any:
                    return graph.ainvoke({"n": FANOUT, "results": []}, {"configurable": {"thread_id": f"{config}-{i}"}})

                out = await go(-1)
                assert sorted(out["results"]) == list(range(1, FANOUT + 1))
                report.add(args.benchmark, config, FANOUT, await time_async(go, args.runs), unit="branch")
            else:
                report.error(args.benchmark, config, "not run for this system")
        except Exception as exc:
            report.error(args.benchmark, config, exc)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
