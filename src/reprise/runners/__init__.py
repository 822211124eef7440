"""How it runs: FlowRunner, AgentRunner and the executor behind them."""

from reprise.runners._result import RunResult
from reprise.runners._reuse import materialize_reused
from reprise.runners._runner import AgentRunner, ComponentRunner, FlowRunner

__all__ = ["AgentRunner", "ComponentRunner", "FlowRunner", "RunResult", "materialize_reused"]
