"""How it runs: FlowRunner, AgentRunner and the executor behind them."""

from reprise.runners.result import RunResult
from reprise.runners.runner import AgentRunner, ComponentRunner, FlowRunner

__all__ = ["AgentRunner", "ComponentRunner", "FlowRunner", "RunResult"]
