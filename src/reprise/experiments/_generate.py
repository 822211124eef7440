"""Generating inputs: variations of base inputs as each persona would ask them.

The ``generation:`` block of the configuration file says what to vary::

    generation:
      base_inputs: ["How do I start?", "What are the advanced options?"]
      personas:
        - {name: novice_user, description: "new to the product"}
        - {name: expert_user, description: "an administrator who knows every setting"}
      variations: 2                   # per base input and persona
      model:                          # optional: without it, the templates below (offline)
        provider: openai              # or anthropic; any OpenAI-compatible server with base_url
        model: gpt-4o-mini

With a model, each (base input, persona) pair is one call through the AI model node's providers
(:mod:`reprise.nodes._providers`, credentials as for :class:`~reprise.nodes.AIModelNode`),
asking for ``variations`` rewordings as structured output. Without one, the ``templates``
(``{input}``, ``{persona}``, ``{description}`` placeholders, replaced as text) make
deterministic variations. Either way the entries come in a fixed order (base input, then
persona, then variation); ``offset`` and ``limit`` cut batches out of it, and the file written
is the seed's ``generated_inputs:`` form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from reprise.experiments._errors import ExperimentError

__all__ = ["DEFAULT_TEMPLATES", "GenerationConfig", "ModelConfig", "PersonaConfig", "generate_inputs"]

#: Offline variations: the input as it is, then as the persona introduces it.
DEFAULT_TEMPLATES: tuple[str, ...] = ("{input}", "I am {description}. {input}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PersonaConfig(_Strict):
    """Who asks: a name (the inputs' ``persona``) and a description for the model or templates."""

    name: str = Field(min_length=1)
    description: str = ""


class ModelConfig(_Strict):
    """The model that writes variations (the settings of an AI model node)."""

    provider: Literal["openai", "anthropic"] = "openai"
    model: str = Field(min_length=1)
    #: An OpenAI-compatible server's URL (vLLM, Ollama, ...), e.g. ``http://127.0.0.1:8000/v1``.
    base_url: str | None = None
    #: Read the API key from this variable instead of the provider's usual one.
    api_key_env: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(None, ge=1)
    timeout: float = Field(120.0, gt=0)


class GenerationConfig(_Strict):
    """``generation:``: base inputs, personas and how to vary them."""

    base_inputs: list[str] = Field(default_factory=list)
    personas: list[PersonaConfig] = Field(default_factory=list)
    variations: int = Field(1, ge=1)
    templates: list[str] = Field(default_factory=lambda: list(DEFAULT_TEMPLATES), min_length=1)
    model: ModelConfig | None = None


class _Variations(BaseModel):
    """The structured answer asked of the model."""

    inputs: list[str]


@dataclass(frozen=True, slots=True)
class _Pair:
    base: str
    persona: PersonaConfig | None


def _pairs(config: GenerationConfig) -> Iterator[_Pair]:
    personas: list[PersonaConfig | None] = list(config.personas) or [None]
    for base in config.base_inputs:
        for persona in personas:
            yield _Pair(base, persona)


def _fill(template: str, pair: _Pair) -> str:
    # Plain replacement, not str.format: a template never reads attributes of anything.
    persona = pair.persona
    return (
        template.replace("{input}", pair.base)
        .replace("{persona}", persona.name if persona else "")
        .replace("{description}", (persona.description or persona.name) if persona else "")
        .strip()
    )


def _from_templates(config: GenerationConfig, pair: _Pair) -> list[str]:
    texts = []
    for n in range(config.variations):
        text = _fill(config.templates[n % len(config.templates)], pair)
        if n >= len(config.templates):
            text = f"{text} ({n // len(config.templates) + 1})"  # more variations than templates
        texts.append(text)
    return texts


_SYSTEM = (
    "You write test inputs for an AI application. Reword the user's message as the described person "
    "would write it: same intent, their vocabulary and level of detail. Answer with JSON only."
)


async def _from_model(model: ModelConfig, config: GenerationConfig, pair: _Pair) -> list[str]:
    from reprise.nodes import resolve_credentials
    from reprise.nodes._providers import ModelRequest, provider_named

    who = f"{pair.persona.name} ({pair.persona.description or 'no description'})" if pair.persona else "a user"
    prompt = (
        f"Person: {who}\nMessage: {pair.base}\n\n"
        f"Write {config.variations} different versions of the message as this person would write it, "
        'as {"inputs": ["...", ...]}.'
    )
    request = ModelRequest(
        model=model.model,
        prompt=prompt,
        system=_SYSTEM,
        temperature=model.temperature,
        max_tokens=model.max_tokens,
        output_schema=_Variations.model_json_schema(),
        output_name="Variations",
        timeout=model.timeout,
        base_url=model.base_url,
    )
    credentials = resolve_credentials(model.provider, api_key_env=model.api_key_env)
    response = await provider_named(model.provider).complete(request, credentials)
    try:
        texts = _Variations.model_validate(response.data).inputs
    except ValueError:
        raise ExperimentError(
            f"generation: the model's answer for {pair.base!r} is not {{'inputs': [...]}}: {response.text!r}"
        ) from None
    return [t.strip() for t in texts if t.strip()][: config.variations]


async def generate_inputs(
    config: GenerationConfig,
    output: Path,
    *,
    limit: int | None = None,
    offset: int = 0,
    use_model: bool | None = None,
    source: str = "generation",
) -> list[dict[str, Any]]:
    """Write ``output`` (``generated_inputs:`` entries) and return its entries: at most
    ``limit``, after skipping the first ``offset``. ``use_model`` (default: when the config
    names one) asks the model; otherwise the templates make the variations offline."""
    if not config.base_inputs:
        raise ExperimentError(f"{source}: base_inputs is empty: list the messages to vary")
    with_model = config.model is not None if use_model is None else use_model
    if with_model and config.model is None:
        raise ExperimentError(f"{source}: no model: add a model: block (provider, model) or use templates")
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str | None]] = set()
    skipped = 0
    for pair in _pairs(config):
        if limit is not None and len(entries) >= limit:
            break
        if with_model:
            assert config.model is not None
            texts = await _from_model(config.model, config, pair)
        else:
            texts = _from_templates(config, pair)
        persona = pair.persona.name if pair.persona else None
        for text in texts:
            if (text, persona) in seen:
                continue
            seen.add((text, persona))
            if skipped < offset:
                skipped += 1
                continue
            if limit is not None and len(entries) >= limit:
                break
            entry: dict[str, Any] = {"input": text}
            if persona is not None:
                entry["persona"] = persona
            entry["metadata"] = {"base_input": pair.base, "strategy": "model" if with_model else "template"}
            entries.append(entry)
    _write(output, entries)
    return entries


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    import yaml

    from reprise.run._files import write_bytes_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# generated by reprise experiment generate\n"
    text += yaml.safe_dump({"generated_inputs": entries}, sort_keys=False, allow_unicode=True, width=100)
    write_bytes_atomic(path, text.encode())
