"""``ChatModel``: how the operations of :mod:`reprise.optim` call a model.

Every call goes through :class:`reprise.nodes.AIModelNode`, the node a flow uses: the same
providers (OpenAI and OpenAI-compatible servers, Anthropic), the same credentials lookup, the
same scrubbing of keys from errors, the same usage and cost accounting. Inside a reprise node,
pass the node's ``ctx`` and the call is recorded there (a ``chat <model>`` span in the run's
trace, tokens and cost in the node's ``result.json``). Outside a run, a :class:`CallRecord`
context keeps the usage and cost of the call so the caller can account for it.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from reprise.dsl import HierarchyPath, NodeContext
from reprise.nodes import AIModelNode, ModelProvider, ModelTransientError, PriceTable, PromptVariables

__all__ = ["CallRecord", "ChatModel"]


@dataclass(kw_only=True)
class CallRecord:
    """A stand-in for a node's context for model calls made outside a run: it keeps what the
    node would have written to ``result.json`` (``usage``, ``cost_usd``, ``ai``) in
    ``result_fields``, and the metrics in ``metrics``. What the node writes to its directory
    (``request.json``) goes to a temporary directory of the record's own, removed with it."""

    path: HierarchyPath
    scope: Any = None
    attempt: int = 1
    result_fields: dict[str, Any] = field(default_factory=dict)
    metrics: list[tuple[str, float, dict[str, Any]]] = field(default_factory=list)
    project_root: Path = field(default_factory=Path.cwd)
    _scratch: tempfile.TemporaryDirectory[str] | None = field(default=None, init=False, repr=False)

    @property
    def run_id(self) -> str:
        return ""

    @property
    def node_dir(self) -> Path:
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="reprise-call-")
        return Path(self._scratch.name)

    @property
    def initial_inputs(self) -> Mapping[str, Any]:
        return {}

    @property
    def logger(self) -> Any:
        # To the standard library's "reprise.optim" logger: silent unless the program turns it on.
        return structlog.wrap_logger(
            logging.getLogger("reprise.optim"),
            wrapper_class=structlog.stdlib.BoundLogger,
            processors=[structlog.stdlib.render_to_log_kwargs],
        ).bind(path=str(self.path))

    @property
    def current_span(self) -> None:
        return None

    @contextlib.contextmanager
    def span(self, name: str, **attributes: Any) -> Iterator[None]:
        yield None

    def annotate_result(self, **fields: Any) -> None:
        self.result_fields.update(fields)

    def declare_outcome_file(self, path: Path | str, *, name: str | None = None) -> str:
        raise RuntimeError("a model call outside a run has no outcomes to commit")

    def metric(self, name: str, value: float, **attributes: Any) -> None:
        self.metrics.append((name, value, attributes))

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> int:
        return step or 0

    def alert(self, title: str, text: str = "", level: Any = "info") -> dict[str, Any]:
        return {"title": title, "text": text, "level": str(level)}


class ChatModel:
    """A model to call, with the settings of an :class:`~reprise.nodes.AIModelNode`.

    ::

        model = ChatModel("gpt-4o-mini")                                   # OPENAI_API_KEY
        local = ChatModel("qwen2.5", base_url="http://127.0.0.1:8000/v1")  # any compatible server
        text = await model.complete("Classify: I loved it.", system="Answer positive or negative.")

    ``retries`` and ``backoff``: retries after rate limits, timeouts and server errors, as a
    node does; other errors fail at once."""

    def __init__(
        self,
        model: str,
        *,
        provider: str | ModelProvider = "openai",
        base_url: str | None = None,
        api_key_env: str | None = None,
        credentials_profile: str | None = None,
        credentials_file: str | Path | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = 120.0,
        retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        prices: PriceTable | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._settings: dict[str, Any] = {
            "model": model,
            "provider": provider,
            "base_url": base_url,
            "api_key_env": api_key_env,
            "credentials_profile": credentials_profile,
            "credentials_file": credentials_file,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": timeout,
            "retries": retries,
            "backoff": backoff,
            "max_backoff": max_backoff,
            "prices": prices,
            "extra": extra,
        }
        # Building one checks the settings now, not at the first call.
        self._plain = AIModelNode(**self._settings)
        # The system message comes in as a variable, so text in it is never read as a template.
        self._with_system = AIModelNode(**self._settings, system="$var{system}")
        self.model = model
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff

    def node(self, *, system: bool = True) -> AIModelNode:
        """The :class:`~reprise.nodes.AIModelNode` that makes this model's calls (with a system
        message bound to the input field ``system``, or without one); use it in a flow."""
        return self._with_system if system else self._plain

    async def complete(self, prompt: str, system: str | None = None, *, ctx: NodeContext | None = None) -> str:
        """The model's answer to ``prompt`` (one user message) under ``system``.

        Raises :class:`~reprise.errors.NodeExecutionError` (credentials scrubbed) when the call
        fails after its retries."""
        call_ctx: NodeContext = ctx if ctx is not None else CallRecord(path=HierarchyPath("optim.chat"))
        node = self.node(system=bool(system))
        payload = PromptVariables(prompt=prompt, system=system) if system else PromptVariables(prompt=prompt)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                answer = await node.run(payload, call_ctx)
            except ModelTransientError as exc:
                if attempt == self.retries:
                    raise
                wait = max(delay, exc.retry_after or 0.0)
                await anyio.sleep(min(wait, self.max_backoff))
                delay *= 2
                continue
            return str(answer)
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        return f"ChatModel({self.model!r})"
