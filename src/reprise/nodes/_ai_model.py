"""AIModelNode: one call to a language model, with usage, cost and GenAI telemetry.

::

    class Plan(BaseModel):
        steps: list[str]

    planner = AIModelNode(
        provider="openai",                      # or "anthropic", or a ModelProvider
        model="gpt-4o-mini",
        system="You plan small software tasks.",
        prompt="Plan how to: $var{task}",       # a template; input fields are variables
        output=Plan,                            # structured output: the outcome is a Plan
        temperature=0.2, max_tokens=800, timeout=60, retries=3,
    )
    flow = FlowDefinition().node("plan", planner, inputs={"task": Initial("task")})

The outcome is the answer's text, or an instance of ``output``. Each call records what it sent in
``request.json`` in the node's directory (system, messages, parameters, output schema; never a
key), and, in ``result.json`` (``usage``, ``cost_usd``, ``ai``), as metrics
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``, ``ai.cost_usd``) and on a
``chat <model>`` child span with the OpenTelemetry GenAI attributes (the messages included),
which model answered and what it cost.

The API key never leaves the SDK client, and no text from a server reaches the run unscrubbed:
every response and error of the provider passes through one door, :meth:`AIModelNode._complete`,
which replaces every known credential with ``[redacted]`` (see
:mod:`reprise.nodes._credentials`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from reprise.dsl._node import Node, NodeSettings, validation_summary
from reprise.errors import DefinitionError, NodeExecutionError, NodeInputError, RepriseError
from reprise.nodes._credentials import Credentials, redact, redact_value, resolve_credentials
from reprise.nodes._files import write_json_atomic
from reprise.nodes._pricing import DEFAULT_PRICES, PriceTable
from reprise.nodes._providers import (
    ModelProvider,
    ModelRequest,
    ModelResponse,
    ModelTransientError,
    provider_named,
    server_address,
)
from reprise.nodes._render import input_variables, render_text

if TYPE_CHECKING:
    from reprise.dsl._context import NodeContext

__all__ = ["REQUEST_FILE", "AIModelNode", "PromptVariables"]

#: The file in an AI model node's directory that records what the node sent to the model.
REQUEST_FILE = "request.json"

_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}
#: Error messages quote a server's reply at most this long (after credentials are scrubbed).
_MAX_ERROR_TEXT = 1000


class PromptVariables(BaseModel):
    """The input of an :class:`AIModelNode`: any fields, which its templates read as
    ``$var{name}``. A ``prompt`` field is the prompt when the node has no ``prompt=`` template."""

    model_config = ConfigDict(extra="allow")

    prompt: str | None = None


class AIModelNode(Node):
    """Calls a language model once per attempt; see the module docstring.

    Args:
        model: the model name (a template).
        provider: ``"openai"`` (also any OpenAI-compatible server, with ``base_url``),
            ``"anthropic"``, or a :class:`~reprise.nodes._providers.ModelProvider`.
        prompt: the user message (a template); default: the input's ``prompt`` field.
        system: system instructions (a template).
        output: a pydantic model for structured output; the outcome is an instance of it.
        temperature, max_tokens: sampling settings (left to the server when ``None``).
        base_url: the API's base URL (e.g. ``http://127.0.0.1:8000/v1`` for vLLM).
        api_key_env: read the key from this environment variable instead of the provider's.
        credentials_profile, credentials_file: read the key (and base URL) from this table of a
            credentials file; see :mod:`reprise.nodes._credentials`.
        timeout: seconds per attempt (the whole call, and the SDK's request timeout).
        retries, backoff, max_backoff: retries after rate limits (429), timeouts and server
            errors (5xx), with exponential backoff; other errors fail at once.
        prices: the price table for ``cost_usd`` (default :data:`~reprise.nodes._pricing.DEFAULT_PRICES`).
        extra: more request fields passed to the API as they are (``top_p``, ``seed``, ...).
    """

    kind = "ai_model"
    input_model: type[BaseModel] | None = PromptVariables

    def __init__(
        self,
        *,
        model: str,
        provider: str | ModelProvider = "openai",
        prompt: str | None = None,
        system: str | None = None,
        output: type[BaseModel] | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        credentials_profile: str | None = None,
        credentials_file: str | Path | None = None,
        timeout: float | None = 120.0,
        retries: int = 2,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        prices: PriceTable | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        if not model:
            raise DefinitionError("AIModelNode needs a model name")
        if output is not None and not (isinstance(output, type) and issubclass(output, BaseModel)):
            raise DefinitionError(f"output must be a pydantic model class, got {output!r}")
        if max_tokens is not None and max_tokens < 1:
            raise DefinitionError(f"max_tokens must be >= 1, got {max_tokens}")
        try:
            self.provider: ModelProvider = provider_named(provider) if isinstance(provider, str) else provider
        except ValueError as exc:
            raise DefinitionError(str(exc)) from None
        self.model = model
        self.prompt = prompt
        self.system = system
        self.output = output
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.credentials_profile = credentials_profile
        self.credentials_file = credentials_file
        self.timeout = timeout
        self.prices = prices if prices is not None else DEFAULT_PRICES
        self.extra = dict(extra or {})
        self.settings = NodeSettings(
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            # Only failures a later attempt can fix; a 400 or a bad schema fails at once.
            retry_on=(ModelTransientError, TimeoutError),
        )

    @property
    def name(self) -> str:
        return f"AIModelNode({self.provider.name}:{self.model})"

    # -- running ---------------------------------------------------------------------------
    def _request(self, input: BaseModel | None, ctx: NodeContext) -> ModelRequest:
        variables = input_variables(input)
        model = render_text(self.model, ctx, variables)
        if self.prompt is not None:
            prompt = render_text(self.prompt, ctx, variables)
        else:
            prompt = variables.get("prompt") or ""
        if not prompt:
            raise NodeInputError("no prompt: give the node prompt= or bind an input field named 'prompt'")
        system = render_text(self.system, ctx, variables) if self.system is not None else None
        output = self.output
        return ModelRequest(
            model=model,
            prompt=str(prompt),
            system=system,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            output_schema=output.model_json_schema() if output is not None else None,
            output_name=output.__name__ if output is not None else "output",
            timeout=self.timeout,
            base_url=self.base_url,
            extra=self.extra,
        )

    async def run(self, input: BaseModel | None, ctx: NodeContext) -> Any:
        request = self._request(input, ctx)
        provider = self.provider
        credentials = resolve_credentials(
            provider.name,
            api_key_env=self.api_key_env,
            profile=self.credentials_profile,
            credentials_file=self.credentials_file,
        )
        host, port = server_address(request.base_url or credentials.base_url, _DEFAULT_HOSTS.get(provider.name, ""))
        # Before the call, so a call that fails or hangs still shows what it was sent.
        write_json_atomic(ctx.node_dir / REQUEST_FILE, redact_value(self._request_record(request, host), credentials))
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider.name,
            # The pre-1.37 name of the provider attribute, still read by many backends.
            "gen_ai.system": provider.name,
            "gen_ai.request.model": request.model,
            "gen_ai.output.type": "json" if self.output is not None else "text",
            "server.address": host,
        }
        if port is not None:
            attributes["server.port"] = port
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        started = time.perf_counter()
        with ctx.span(f"chat {request.model}", **attributes) as span:
            if span is not None:
                for key, value in _input_message_attributes(request).items():
                    span.set_attribute(key, redact(value, credentials))
            try:
                response = await self._complete(request, credentials, ctx)
            except RepriseError as exc:
                if span is not None:
                    span.set_attribute("error.type", type(exc).__name__)
                if exc.path is None:
                    exc.path = str(ctx.path)
                raise
            duration = time.perf_counter() - started
            cost = self._record(ctx, span, request, response, duration, attributes, credentials.source)
            if span is not None:
                span.set_attribute("gen_ai.output.messages", self._output_messages(response))
                if cost is not None:
                    span.set_attribute("reprise.ai.cost_usd", cost)
        return self._outcome(response, ctx)

    async def _complete(self, request: ModelRequest, credentials: Credentials, ctx: NodeContext) -> ModelResponse:
        """The provider's answer with every credential scrubbed out of it: the one door through
        which a server's text (replies, model names, ids, error bodies, headers quoted in errors)
        enters the run. An error is scrubbed, shortened and raised without the exception it came
        from, so no trace, log, ``result.json`` or commit message can quote the original."""
        failure: RepriseError
        try:
            response = await self.provider.complete(request, credentials)
        except Exception as exc:  # any provider, any failure: nothing passes unscrubbed
            failure = _scrubbed_error(exc, self.provider.name, credentials)
        else:
            scrubbed: ModelResponse = redact_value(response, credentials)
            if scrubbed != response:
                ctx.logger.warning("the model's response held a credential: replaced by [redacted]")
            return scrubbed
        raise failure  # outside the except clause: the original is not even its __context__

    def _request_record(self, request: ModelRequest, server: str) -> dict[str, Any]:
        """What ``request.json`` holds: the rendered request as the node sent it to its provider
        (the provider's own defaults, such as Anthropic's required ``max_tokens``, are not in it)."""
        parameters = {
            name: value
            for name, value in (
                ("temperature", request.temperature),
                ("max_tokens", request.max_tokens),
                ("timeout", request.timeout),
            )
            if value is not None
        }
        parameters.update(request.extra)
        output = None
        if request.output_schema is not None:
            output = {"name": request.output_name, "schema": request.output_schema}
        return {
            "provider": self.provider.name,
            "model": request.model,
            "server": server,
            "system": request.system,
            "messages": [{"role": "user", "content": request.prompt}],
            "parameters": parameters,
            "output": output,
        }

    def _output_messages(self, response: ModelResponse) -> str:
        """``gen_ai.output.messages``: the answer as one assistant message (structured output as
        its JSON text)."""
        if self.output is None:
            text = response.text or ""
        else:
            text = json.dumps(response.data, ensure_ascii=False)
        reason = response.finish_reasons[0] if response.finish_reasons else "stop"
        return _messages_json([{"role": "assistant", "parts": [_text_part(text)], "finish_reason": reason}])

    def _record(
        self,
        ctx: NodeContext,
        span: Any,
        request: ModelRequest,
        response: ModelResponse,
        duration: float,
        attributes: Mapping[str, Any],
        credentials_source: str,
    ) -> float | None:
        """Usage and cost into the span, the metrics and ``result.json``; returns the cost."""
        response_model = response.model or request.model
        cost = self.prices.cost(response_model, response.input_tokens, response.output_tokens)
        if cost is None and response_model != request.model:
            cost = self.prices.cost(request.model, response.input_tokens, response.output_tokens)
        if span is not None:
            span.set_attribute("gen_ai.response.model", response_model)
            if response.response_id:
                span.set_attribute("gen_ai.response.id", str(response.response_id))
            if response.finish_reasons:
                span.set_attribute("gen_ai.response.finish_reasons", list(response.finish_reasons))
            if response.input_tokens is not None:
                span.set_attribute("gen_ai.usage.input_tokens", response.input_tokens)
            if response.output_tokens is not None:
                span.set_attribute("gen_ai.usage.output_tokens", response.output_tokens)
        metric_attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": attributes["gen_ai.provider.name"],
            "gen_ai.request.model": request.model,
            "gen_ai.response.model": response_model,
        }
        for token_type, tokens in (("input", response.input_tokens), ("output", response.output_tokens)):
            if tokens is not None:
                ctx.metric("gen_ai.client.token.usage", tokens, **metric_attrs, **{"gen_ai.token.type": token_type})
        ctx.metric("gen_ai.client.operation.duration", duration, **metric_attrs)
        if cost is not None:
            ctx.metric("ai.cost_usd", cost, **metric_attrs)

        # Summed over this execution's attempts: a retried call still used (and cost) tokens.
        usage = ctx.result_fields.get("usage") or {"input_tokens": 0, "output_tokens": 0, "calls": 0}
        usage = {
            "input_tokens": usage["input_tokens"] + (response.input_tokens or 0),
            "output_tokens": usage["output_tokens"] + (response.output_tokens or 0),
            "calls": usage["calls"] + 1,
        }
        previous_cost = ctx.result_fields.get("cost_usd", 0.0)
        total_cost = None if cost is None or previous_cost is None else round(previous_cost + cost, 10)
        ctx.annotate_result(
            usage=usage,
            cost_usd=total_cost,
            ai={
                "provider": attributes["gen_ai.provider.name"],
                "request_model": request.model,
                "response_model": response_model,
                "response_id": response.response_id,
                "finish_reasons": list(response.finish_reasons),
                "output_type": attributes["gen_ai.output.type"],
                "server": attributes["server.address"],
                "credentials_source": credentials_source,
                "price_known": cost is not None,
            },
        )
        ctx.logger.info(
            "model call finished",
            model=response_model,
            input_tokens=response.input_tokens,
            output_tokens=response.output_tokens,
            cost_usd=cost,
        )
        return cost

    def _outcome(self, response: ModelResponse, ctx: NodeContext) -> Any:
        if self.output is None:
            return response.text or ""
        try:
            return self.output.model_validate(response.data)
        except ValidationError as exc:
            raise NodeExecutionError(
                f"structured output does not validate against {self.output.__name__}: {validation_summary(exc)}",
                path=str(ctx.path),
            ) from None

    # -- outcomes --------------------------------------------------------------------------
    def validate_outcome(self, outcome: Any) -> Any:
        if self.output is None:
            if not isinstance(outcome, str):
                raise NodeExecutionError(f"expected text from the model, got {type(outcome).__name__}")
            return outcome
        return outcome if isinstance(outcome, self.output) else self.output.model_validate(outcome)

    def dump_outcome(self, outcome: Any) -> Any:
        return outcome.model_dump(mode="json") if isinstance(outcome, BaseModel) else outcome

    def load_outcome(self, data: Any) -> Any:
        return self.output.model_validate(data) if self.output is not None else str(data)

    def __repr__(self) -> str:
        return self.name


def _text_part(text: str) -> dict[str, str]:
    return {"type": "text", "content": text}


def _messages_json(messages: list[dict[str, Any]]) -> str:
    return json.dumps(messages, ensure_ascii=False)


def _input_message_attributes(request: ModelRequest) -> dict[str, str]:
    """``gen_ai.system_instructions`` and ``gen_ai.input.messages`` of the OpenTelemetry GenAI
    semantic conventions (JSON strings of message parts): what the node sent."""
    attributes = {"gen_ai.input.messages": _messages_json([{"role": "user", "parts": [_text_part(request.prompt)]}])}
    if request.system:
        attributes["gen_ai.system_instructions"] = _messages_json([_text_part(request.system)])
    return attributes


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


def _scrubbed_error(exc: Exception, provider: str, credentials: Credentials) -> RepriseError:
    """``exc`` with every credential scrubbed out of its message and nothing chained to it.

    A reprise error keeps its class (a :class:`ModelTransientError` is still retried, after its
    ``retry_after``); any other exception becomes a :class:`NodeExecutionError` naming its type
    (a :class:`ModelTransientError` for a ``TimeoutError``)."""
    if isinstance(exc, RepriseError):
        exc.message = _shorten(redact(exc.message, credentials))
        exc.args = (exc.message,)
        exc.__cause__ = exc.__context__ = None
        return exc
    message = _shorten(redact(f"{provider} call failed: {type(exc).__name__}: {exc}", credentials))
    return ModelTransientError(message) if isinstance(exc, TimeoutError) else NodeExecutionError(message)
