"""pydantic-graph (builder API): a chain of steps, and a map over 1,000 items joined by a reducer.

pydantic-graph persists nothing by default and has no tracing without logfire installed, so
this is its bare in-memory cost.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from _common import CHAIN_SIZES, FANOUT, Report, main_args, time_async
from pydantic_graph import GraphBuilder, StepContext, reduce_list_append


async def inc(ctx: StepContext[None, None, int]) -> int:
    return ctx.inputs + 1


def chain(n: int) -> Any:
    g = GraphBuilder(name=f"chain{n}", input_type=int, output_type=int)
    steps = [g.step(inc, node_id=f"n{i}") for i in range(n)]
    g.add(g.edge_from(g.start_node).to(steps[0]))
    for a, b in itertools.pairwise(steps):
        g.add(g.edge_from(a).to(b))
    g.add(g.edge_from(steps[-1]).to(g.end_node))
    return g.build()


def fanout(n: int) -> Any:
    g = GraphBuilder(name=f"fanout{n}", input_type=list[int], output_type=list[int])
    step = g.step(inc, node_id="inc")
    collect = g.join(reduce_list_append, initial_factory=list[int])
    g.add(g.edge_from(g.start_node).map().to(step))
    g.add(g.edge_from(step).to(collect))
    g.add(g.edge_from(collect).to(g.end_node))
    return g.build()


async def main() -> None:
    args = main_args()
    report = Report("pydantic-graph", ("pydantic-graph",))
    try:
        if args.benchmark in CHAIN_SIZES:
            n = CHAIN_SIZES[args.benchmark]
            graph = chain(n)
            assert await graph.run(inputs=0) == n
            report.add(args.benchmark, "default", n, await time_async(lambda i: graph.run(inputs=0), args.runs))
        elif args.benchmark == "fanout-1000":
            graph = fanout(FANOUT)
            out = await graph.run(inputs=list(range(FANOUT)))
            assert sorted(out) == list(range(1, FANOUT + 1)), out[:5]
            report.add(
                args.benchmark,
                "default",
                FANOUT,
                await time_async(lambda i: graph.run(inputs=list(range(FANOUT))), args.runs),
                unit="branch",
            )
        else:
            report.error(args.benchmark, "default", "not run for this system")
    except Exception as exc:
        report.error(args.benchmark, "default", exc)
    report.emit()


if __name__ == "__main__":
    asyncio.run(main())
