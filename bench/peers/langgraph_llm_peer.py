"""LangGraph in ``llm-ratelimited`` (see ``bench/llm_ratelimited.py``): the same workload.

A ``StateGraph`` of three nodes (``plan``, then ``left`` and ``right`` in parallel), each one
chat completion through the official ``openai`` client (its own retries off, ``max_retries=0``,
so LangGraph's ``RetryPolicy`` owns them: exponential backoff with jitter on 429). The inputs run
as one ``abatch`` with ``max_concurrency`` (LangGraph's way to bound work in flight); LangGraph
has no rate limiter of its own, so nothing spaces the calls. One process, one event loop: the
way a LangGraph user runs a batch.

Prints one JSON line: wall time, successes, failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import time
from importlib.metadata import version
from typing import Annotated, Any, TypedDict

import openai
from langgraph.graph import END, START, StateGraph
from langgraph.types import RetryPolicy


class State(TypedDict):
    q: str
    plan: str
    answers: Annotated[list[str], operator.add]


def build(client: openai.AsyncOpenAI) -> Any:
    async def ask(prompt: str) -> str:
        completion = await client.chat.completions.create(
            model="bench-model", messages=[{"role": "user", "content": prompt}], max_tokens=16
        )
        return completion.choices[0].message.content or ""

    async def plan(state: State) -> dict[str, Any]:
        return {"plan": await ask(f"Plan for {state['q']}.")}

    async def left(state: State) -> dict[str, Any]:
        return {"answers": [await ask(f"left of {state['q']}: {state['plan']}")]}

    async def right(state: State) -> dict[str, Any]:
        return {"answers": [await ask(f"right of {state['q']}: {state['plan']}")]}

    retry = RetryPolicy(
        initial_interval=0.5, max_attempts=8, jitter=True, retry_on=(openai.RateLimitError, openai.APIConnectionError)
    )
    graph = StateGraph(State)
    graph.add_node("plan", plan, retry_policy=retry)
    graph.add_node("left", left, retry_policy=retry)
    graph.add_node("right", right, retry_policy=retry)
    graph.add_edge(START, "plan")
    graph.add_edge("plan", "left")
    graph.add_edge("plan", "right")
    graph.add_edge("left", END)
    graph.add_edge("right", END)
    return graph.compile()


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--inputs", type=int, default=300)
    p.add_argument("--parallel", type=int, default=32)
    p.add_argument("--rate", type=float, default=20.0)  # unused: LangGraph has no rate limit
    args = p.parse_args()
    client = openai.AsyncOpenAI(api_key="sk-bench-not-a-key", base_url=args.url, max_retries=0)
    app = build(client)
    inputs = [{"q": f"question {i}", "plan": "", "answers": []} for i in range(args.inputs)]
    t0 = time.perf_counter()
    outputs = await app.abatch(inputs, config={"max_concurrency": args.parallel}, return_exceptions=True)
    wall = time.perf_counter() - t0
    failures = sum(1 for o in outputs if isinstance(o, BaseException))
    versions = {"langgraph": version("langgraph"), "openai": version("openai")}
    print(
        json.dumps({"wall_s": round(wall, 2), "successes": len(outputs) - failures, "failures": failures, **versions})
    )


if __name__ == "__main__":
    asyncio.run(main())
