"""A six-node chain run as a script that kills itself (SIGKILL) at the node ``KILL_AT`` names:
the crash and resume tests of tests/runners start it in a subprocess."""

import textwrap

CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from reprise import FlowDefinition, FlowRunner, RunContext, Ref, Initial

    log = Path(sys.argv[2])

    def step(name):
        def fn(n: int) -> int:
            with open(log, "a") as f:
                f.write(name + "\\n")
            if name == os.environ.get("KILL_AT"):
                os.kill(os.getpid(), signal.SIGKILL)
            return n * 2 + 1
        fn.__name__ = name
        return fn

    flow = FlowDefinition().node("n0", step("n0"), inputs={"n": Initial("x")})
    for i in range(1, 6):
        flow.node(f"n{i}", step(f"n{i}"), inputs={"n": Ref(f"n{i-1}")})
    prev = os.environ.get("PREVIOUS") or None
    mode = os.environ.get("REUSED_NODES") or "link"
    ctx = RunContext("crash", sys.argv[1], initial_inputs={"x": 1}, previous_run_id=prev, reused_nodes=mode)
    result = FlowRunner(flow, ctx).run_sync()
    print(result.run_id, result.status.value, result.outcomes["crash.n5"])
    """
)
