"""A node for tests that need two parallel branches to overlap in time, whatever the load."""

from __future__ import annotations

import anyio

from reprise import NodeContext, node

_meetings: dict[str, tuple[anyio.Event, anyio.Event]] = {}


@node
async def meet(side: str, ctx: NodeContext) -> str:
    """The two parallel branches ("left" and "right") wait for each other, so they overlap in
    time whatever the machine's load; then both stay a while, so the overlap is wide enough to
    see."""
    left, right = _meetings.setdefault(ctx.run_id, (anyio.Event(), anyio.Event()))
    mine, other = (left, right) if side == "left" else (right, left)
    mine.set()
    with anyio.fail_after(30):
        await other.wait()
    await anyio.sleep(0.03)
    return side
