"""Model providers: the small interface an :class:`~reprise.nodes.AIModelNode` calls.

A provider turns a :class:`ModelRequest` into a :class:`ModelResponse`. Two ship with reprise,
both on the official SDKs, imported only when a call is made
(``pip install 'reprise-agents[openai]'``, ``'reprise-agents[anthropic]'``):

* :class:`OpenAIChatProvider` - ``/v1/chat/completions`` of OpenAI or any OpenAI-compatible
  server (vLLM, Ollama, llama.cpp server) named by ``base_url``;
* :class:`AnthropicMessagesProvider` - ``/v1/messages``.

Both use the SDKs' *async* clients, which run on asyncio and on trio (the SDKs' HTTP stack,
httpx2/httpcore2, speaks both; the test suite runs every call on both backends). The SDKs' own
retries are turned off (``max_retries=0``): reprise retries, so every attempt is counted in
``result.json`` and on the node's span. A rate limit (429), a timeout or a server error (5xx)
raises :class:`ModelTransientError`, which the node retries; anything else is final.

Another provider (a different API, or a fake for your own tests) is any object with a ``name``
and an ``async complete(request, credentials)`` method.

Providers need not scrub what a server sends back: the node passes every response and every
error of :meth:`ModelProvider.complete` through
:func:`~reprise.nodes._credentials.redact_value` before it records or shows any of it.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import importlib
import inspect
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from reprise.errors import NodeExecutionError
from reprise.nodes._credentials import Credentials

__all__ = [
    "AnthropicMessagesProvider",
    "ModelProvider",
    "ModelRequest",
    "ModelResponse",
    "ModelTransientError",
    "OpenAIChatProvider",
    "provider_named",
]


class ModelTransientError(NodeExecutionError):
    """A model call failed in a way worth retrying: rate limit (429), request timeout (408),
    conflict (409), server error (5xx), connection error or timeout.

    ``retry_after``: the seconds the server asked to wait (its ``Retry-After`` or
    ``retry-after-ms`` header), if it said; the executor waits at least that long before the next
    attempt, up to the node's ``max_backoff``."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


def _header(headers: Any, name: str) -> Any:
    """Header ``name`` (lower case) of ``headers``: httpx's are case-insensitive, a plain dict
    may spell it ``Retry-After``."""
    value = headers.get(name)
    if value is None and isinstance(headers, Mapping):
        value = next((v for k, v in headers.items() if isinstance(k, str) and k.lower() == name), None)
    return value


def _finite(seconds: float) -> float | None:
    return max(0.0, seconds) if math.isfinite(seconds) else None


def retry_after_seconds(headers: Any, now: float | None = None) -> float | None:
    """The wait a response asks for: ``retry-after-ms`` (milliseconds, as OpenAI sends it) or
    ``Retry-After`` (seconds, or an HTTP date); ``None`` when absent or unreadable (NaN and
    infinities included). Never negative."""
    if headers is None:
        return None
    try:
        ms = _header(headers, "retry-after-ms")
        value = _header(headers, "retry-after")
    except (AttributeError, TypeError, ValueError):
        return None
    if ms is not None:
        try:
            return _finite(float(ms) / 1000.0)
        except (TypeError, ValueError):
            pass  # unreadable: Retry-After may still say
    if value is None:
        return None
    value = str(value).strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC with no known source zone, not local time
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return _finite(seconds)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRequest:
    """One call to a model: a system message, one user prompt, sampling settings and, for
    structured output, the JSON schema the answer must follow."""

    model: str
    prompt: str
    system: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    output_schema: dict[str, Any] | None = None
    output_name: str = "output"
    timeout: float | None = None
    base_url: str | None = None
    #: Extra provider-specific request fields (``top_p``, ``seed``, ``stop``, ...).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelResponse:
    """What came back: ``text`` (plain output) or ``data`` (parsed structured output), plus the
    response's model name, id, finish reasons and token usage (``None`` when not reported)."""

    text: str | None = None
    data: Any = None
    model: str | None = None
    response_id: str | None = None
    finish_reasons: tuple[str, ...] = ()
    input_tokens: int | None = None
    output_tokens: int | None = None


@runtime_checkable
class ModelProvider(Protocol):
    """What :class:`~reprise.nodes.AIModelNode` needs from a provider."""

    #: The ``gen_ai.provider.name`` of the calls (``openai``, ``anthropic``, ...).
    name: str

    async def complete(self, request: ModelRequest, credentials: Credentials) -> ModelResponse:
        """Make the call. Raise :class:`ModelTransientError` for failures worth retrying and
        :class:`~reprise.errors.NodeExecutionError` for the others."""
        ...


def _import_sdk(module: str, extra: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise NodeExecutionError(
            f"the {module!r} package is not installed: pip install 'reprise-agents[{extra}]'"
        ) from None


def _server(base_url: str | None, default: str) -> str:
    return base_url or default


def _translate_error(sdk: Any, exc: Exception, provider: str, where: str) -> NodeExecutionError:
    """A reprise error for an SDK exception. Callers raise it ``from None`` so the SDK exception
    is not chained. Messages quote the server in full: the node scrubs credentials out of them
    first and shortens them after (a cut could leave part of a key that scrubbing cannot find)."""
    message = str(exc)
    if isinstance(exc, sdk.APIStatusError):
        status = int(exc.status_code)
        text = f"{provider} request to {where} failed with HTTP {status}: {message}"
        if status in (408, 409, 429) or status >= 500:
            response = getattr(exc, "response", None)
            return ModelTransientError(text, retry_after=retry_after_seconds(getattr(response, "headers", None)))
        return NodeExecutionError(text)
    if isinstance(exc, sdk.APITimeoutError):
        return ModelTransientError(f"{provider} request to {where} timed out")
    if isinstance(exc, sdk.APIConnectionError):
        return ModelTransientError(f"{provider} request to {where} could not connect: {message}")
    if isinstance(exc, ValueError):  # the body was not JSON
        return NodeExecutionError(f"malformed response from {provider} ({where}): body is not valid JSON: {message}")
    return NodeExecutionError(f"{provider} request to {where} failed: {type(exc).__name__}: {message}")


def _malformed(provider: str, where: str, what: str) -> NodeExecutionError:
    return NodeExecutionError(f"malformed response from {provider} ({where}): {what}")


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_json_output(text: str, provider: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise NodeExecutionError(
            f"structured output from {provider} ({where}) is not valid JSON: {exc}; got {text!r}"
        ) from None


def _strict_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """OpenAI's strict structured-output form of a pydantic JSON schema, when the SDK's helper is
    available (it adds ``additionalProperties: false`` and makes every field required)."""
    try:
        helper = importlib.import_module("openai.lib._pydantic").to_strict_json_schema
        return helper(schema), True
    except Exception:
        # Some schemas (and SDK versions) have no strict form; the server still gets the schema.
        return schema, False


class OpenAIChatProvider:
    """Chat completions through the ``openai`` SDK (OpenAI or an OpenAI-compatible server).

    ``max_tokens_param`` names the request field for ``max_tokens``: OpenAI's current models
    take ``max_completion_tokens``; compatible servers often know only ``max_tokens``. The default
    (``None``) picks the first for OpenAI itself (no ``base_url``) and the second otherwise."""

    name = "openai"

    def __init__(self, *, max_tokens_param: str | None = None) -> None:
        self.max_tokens_param = max_tokens_param

    async def complete(self, request: ModelRequest, credentials: Credentials) -> ModelResponse:
        sdk = _import_sdk("openai", "openai")
        base_url = request.base_url or credentials.base_url
        where = _server(base_url, "api.openai.com")
        if credentials.api_key is None and base_url is None:
            raise NodeExecutionError(
                "no API key for openai: set OPENAI_API_KEY, name a variable with api_key_env=, "
                "or add an [openai] table to the credentials file"
            )
        # Local OpenAI-compatible servers often need no key, but the SDK insists on one.
        key = credentials.api_key.get_secret_value() if credentials.api_key is not None else "unused"
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        body: dict[str, Any] = {"model": request.model, "messages": messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            param = self.max_tokens_param or ("max_tokens" if base_url else "max_completion_tokens")
            body[param] = request.max_tokens
        if request.output_schema is not None:
            schema, strict = _strict_schema(request.output_schema)
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.output_name, "schema": schema, "strict": strict},
            }
        body.update(request.extra)
        client = sdk.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=request.timeout)
        try:
            async with client:
                completion = await _call(client.chat.completions.create, body)
        except (sdk.OpenAIError, ValueError) as exc:
            raise _translate_error(sdk, exc, self.name, where) from None
        return self._read(completion, request, where)

    def _read(self, completion: Any, request: ModelRequest, where: str) -> ModelResponse:
        if isinstance(completion, str):  # the SDK hands back a body that is not JSON as text
            raise _malformed(self.name, where, f"body is not JSON: {completion!r}")
        choices = getattr(completion, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise _malformed(self.name, where, "no 'choices' in the chat completion")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if content is None:
            refusal = getattr(message, "refusal", None)
            if refusal:
                raise NodeExecutionError(f"openai model refused ({where}): {refusal}")
            raise _malformed(self.name, where, "the first choice has no message content")
        if not isinstance(content, str):
            raise _malformed(self.name, where, f"message content is {type(content).__name__}, not text")
        usage = getattr(completion, "usage", None)
        reasons = tuple(str(r) for c in choices if (r := getattr(c, "finish_reason", None)) is not None)
        data = _parse_json_output(content, self.name, where) if request.output_schema is not None else None
        return ModelResponse(
            text=content,
            data=data,
            model=getattr(completion, "model", None),
            response_id=getattr(completion, "id", None),
            finish_reasons=reasons,
            input_tokens=_int_or_none(getattr(usage, "prompt_tokens", None)),
            output_tokens=_int_or_none(getattr(usage, "completion_tokens", None)),
        )


class AnthropicMessagesProvider:
    """Messages through the ``anthropic`` SDK.

    Structured output uses a forced tool call whose input schema is the output model's (the
    documented way to get JSON that follows a schema from every Claude model). The SDK's own
    OpenTelemetry spans are turned off: the node records the GenAI attributes itself, on the run's
    own tracer, never on the process-global one."""

    name = "anthropic"

    #: ``max_tokens`` is required by the Messages API; used when the node sets none.
    default_max_tokens = 1024

    async def complete(self, request: ModelRequest, credentials: Credentials) -> ModelResponse:
        sdk = _import_sdk("anthropic", "anthropic")
        base_url = request.base_url or credentials.base_url
        where = _server(base_url, "api.anthropic.com")
        if credentials.api_key is None:
            raise NodeExecutionError(
                "no API key for anthropic: set ANTHROPIC_API_KEY, name a variable with api_key_env=, "
                "or add an [anthropic] table to the credentials file"
            )
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens or self.default_max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if request.system:
            body["system"] = request.system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.output_schema is not None:
            body["tools"] = [
                {
                    "name": request.output_name,
                    "description": "Give the answer as the input of this tool.",
                    "input_schema": request.output_schema,
                }
            ]
            body["tool_choice"] = {"type": "tool", "name": request.output_name}
        body.update(request.extra)
        options: dict[str, Any] = {}
        if _accepts(sdk.AsyncAnthropic, "open_telemetry"):
            options["open_telemetry"] = {"traces": False, "propagation": False}
        client = sdk.AsyncAnthropic(
            api_key=credentials.api_key.get_secret_value(),
            base_url=base_url,
            max_retries=0,
            timeout=request.timeout,
            **options,
        )
        try:
            async with client:
                message = await _call(client.messages.create, body)
        except (sdk.AnthropicError, ValueError) as exc:
            raise _translate_error(sdk, exc, self.name, where) from None
        return self._read(message, request, where)

    def _read(self, message: Any, request: ModelRequest, where: str) -> ModelResponse:
        if isinstance(message, str):  # the SDK hands back a body that is not JSON as text
            raise _malformed(self.name, where, f"body is not JSON: {message!r}")
        blocks = getattr(message, "content", None)
        if not isinstance(blocks, list):
            raise _malformed(self.name, where, "no 'content' list in the message")
        texts = [
            b.text for b in blocks if getattr(b, "type", None) == "text" and isinstance(getattr(b, "text", None), str)
        ]
        data: Any = None
        if request.output_schema is not None:
            tool_inputs = [getattr(b, "input", None) for b in blocks if getattr(b, "type", None) == "tool_use"]
            if not tool_inputs or not isinstance(tool_inputs[0], dict):
                raise _malformed(self.name, where, f"no '{request.output_name}' tool_use block with an input object")
            data = tool_inputs[0]
        elif not texts:
            raise _malformed(self.name, where, "no text block in the message content")
        usage = getattr(message, "usage", None)
        stop = getattr(message, "stop_reason", None)
        return ModelResponse(
            text="".join(texts) if texts else None,
            data=data,
            model=getattr(message, "model", None),
            response_id=getattr(message, "id", None),
            finish_reasons=(str(stop),) if stop is not None else (),
            input_tokens=_int_or_none(getattr(usage, "input_tokens", None)),
            output_tokens=_int_or_none(getattr(usage, "output_tokens", None)),
        )


async def _call(method: Any, body: dict[str, Any]) -> Any:
    """Call an SDK method with the request ``body``: fields the method has a parameter for go as
    keyword arguments, the others in ``extra_body``. SDK versions differ in which request fields
    they name (a newer ``anthropic`` has no ``temperature``); the server decides what it accepts."""
    known = _parameters(method)
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known}
    if extra:
        kwargs["extra_body"] = extra
    return await method(**kwargs)


def _parameters(method: Any) -> frozenset[str]:
    return _signature_parameters(getattr(method, "__func__", method))


@functools.cache
def _signature_parameters(function: Any) -> frozenset[str]:
    return frozenset(inspect.signature(function).parameters) - {"self", "extra_body"}


@functools.cache
def _accepts(cls: Any, parameter: str) -> bool:
    """Whether ``cls(...)`` takes ``parameter`` (SDK versions differ in their client options)."""
    return parameter in inspect.signature(cls.__init__).parameters


def provider_named(name: str) -> ModelProvider:
    """The built-in provider called ``name`` (``openai`` or ``anthropic``)."""
    if name == "openai":
        return OpenAIChatProvider()
    if name == "anthropic":
        return AnthropicMessagesProvider()
    raise ValueError(f"unknown model provider {name!r}: use 'openai', 'anthropic' or a ModelProvider instance")


def server_address(base_url: str | None, default_host: str) -> tuple[str, int | None]:
    """``server.address`` and ``server.port`` for a call's span."""
    if not base_url:
        return default_host, 443
    parts = urlsplit(base_url)
    return parts.hostname or default_host, parts.port or (443 if parts.scheme == "https" else 80)
