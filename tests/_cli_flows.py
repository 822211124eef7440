"""The flows file the CLI tests write into their project (``cli_flows.py``)."""

FLOWS = """
import time
from pathlib import Path

import reprise
from reprise import AgentDefinition, FlowDefinition, Initial, Ref


def fetch(n: int) -> int:
    reprise.log({"n": n})
    return n + 1


def double(x: int, factor: int, fail: bool, ctx) -> int:
    # What a model node records: tokens and cost.
    ctx.annotate_result(usage={"input_tokens": 120, "output_tokens": 30}, cost_usd=0.0025)
    if fail:
        raise ValueError("double refused")
    reprise.alert("Doubled", f"x={x} factor={factor}", level="warn")
    return x * factor


def report(y: int, hang: bool) -> dict:
    if hang:
        Path("hanging").write_text("yes")
        time.sleep(120)
    return {"y": y}


flow = (
    FlowDefinition()
    .node("fetch", fetch, inputs={"n": Initial("n")})
    .node("double", double, inputs={"x": Ref("fetch"), "factor": Initial("factor", default=2),
                                     "fail": Initial("fail", default=False)})
    .node("report", report, inputs={"y": Ref("double"), "hang": Initial("hang", default=False)})
)


class Greeting:
    pass


greeting = Greeting()
agent = AgentDefinition("helper_agent").flow("main", FlowDefinition().node("hello", lambda: "hi"))
"""
