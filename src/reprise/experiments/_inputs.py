"""The inputs of an experiment: one item per input, read from a list, a ``.yaml`` or a ``.jsonl`` file.

An item gives the root's initial inputs, optional static inputs per node, and metadata::

    - id: novice-start
      persona: novice_user
      tags: [smoke]
      initial_inputs: {question: "How do I start?"}
      static_inputs: {summarize: {style: short}}

A YAML file holds a list of such items (or a mapping with an ``inputs:`` list); a JSON-lines file
holds one item per line. Items without an ``id`` are numbered ``input-1``, ``input-2``, ... in
file order; ids must be unique.

The seed's generated inputs are accepted too (``reprise experiment generate`` writes them)::

    generated_inputs:
      - input: "How do I start?"
        persona: novice_user

An entry with ``input:`` is an item whose initial inputs are ``{"input": <text>}``: what a
function target (:func:`reprise.entrypoint`) receives as its text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reprise.dsl import INPUT_KEY
from reprise.experiments._config import describe_validation
from reprise.experiments._errors import ExperimentInputError

__all__ = [
    "ExperimentInput",
    "GeneratedInput",
    "InputsSource",
    "input_text",
    "load_inputs",
    "normalize_inputs",
    "write_inputs_jsonl",
]

#: The keys a mapping at the top of an inputs file may have.
_TOP_KEYS = ("inputs", "generated_inputs", "metadata")


class ExperimentInput(BaseModel):
    """One input of an experiment (run ``iterations`` times)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Unique within the experiment; names the input in ``runs.jsonl`` and in ``compare``.
    id: str = ""
    #: The root's initial inputs (what :class:`~reprise.dsl._sources.Initial` reads).
    initial_inputs: dict[str, Any] = Field(default_factory=dict)
    #: Static inputs by node id or hierarchy path (each the node's whole input).
    static_inputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    persona: str | None = None
    tags: list[str] = Field(default_factory=list)
    #: Free-form metadata, copied to ``runs.jsonl`` untouched.
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return _name_text(value)


def _name_text(value: Any) -> Any:
    # YAML reads `id: 7` as an int; an id is a name, so keep its text.
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


class GeneratedInput(BaseModel):
    """One entry of the seed's ``generated_inputs:`` list: a text and who asks it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str
    persona: str | None = None
    id: str = ""
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return _name_text(value)

    def as_input(self) -> ExperimentInput:
        """The experiment item: initial inputs ``{"input": text}``."""
        return ExperimentInput(
            id=self.id,
            initial_inputs={INPUT_KEY: self.input},
            persona=self.persona,
            tags=self.tags,
            metadata=self.metadata,
        )


def input_text(item: ExperimentInput) -> Any:
    """What an item asks, for people: its ``input`` text, the only initial input, or them all."""
    inputs = item.initial_inputs
    if INPUT_KEY in inputs:
        return inputs[INPUT_KEY]
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    return inputs


#: What ``Experiment(inputs=...)`` accepts: items, or the path of an inputs file.
InputsSource = Sequence[ExperimentInput | Mapping[str, Any]] | Path | str


def normalize_inputs(
    items: Iterable[ExperimentInput | Mapping[str, Any]], *, source: str = "inputs"
) -> list[ExperimentInput]:
    """Validate items, number those without an id and check ids are unique."""
    out: list[ExperimentInput] = []
    seen: set[str] = set()
    for n, item in enumerate(items, 1):
        if isinstance(item, ExperimentInput):
            model = item
        elif isinstance(item, Mapping):
            # An entry with `input:` is the seed's form; anything else is reprise's own.
            kind: type[BaseModel] = GeneratedInput if INPUT_KEY in item else ExperimentInput
            try:
                parsed = kind.model_validate(dict(item))
            except ValidationError as exc:
                where = f"{source}: item {n}"
                raise ExperimentInputError(describe_validation(exc, where, kind, also=(INPUT_KEY,))) from None
            model = parsed.as_input() if isinstance(parsed, GeneratedInput) else parsed  # type: ignore[assignment]
        else:
            raise ExperimentInputError(f"{source}: item {n} must be a mapping, got {type(item).__name__}")
        if not model.id:
            model = model.model_copy(update={"id": f"input-{n}"})
        if model.id in seen:
            raise ExperimentInputError(f"{source}: item {n}: duplicate input id {model.id!r}")
        seen.add(model.id)
        out.append(model)
    if not out:
        raise ExperimentInputError(f"{source}: no inputs")
    return out


def load_inputs(source: InputsSource) -> list[ExperimentInput]:
    """The validated items of a list or of a ``.yaml``/``.yml``/``.json``/``.jsonl`` file."""
    if not isinstance(source, (str, Path)):
        return normalize_inputs(source)
    path = Path(source)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ExperimentInputError(f"cannot read inputs file {path}: {exc.strerror or exc}") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return normalize_inputs(_jsonl_items(raw, path), source=str(path))
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ExperimentInputError(f"{path}: not valid YAML: {exc}") from None
    elif suffix == ".json":
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ExperimentInputError(f"{path}: not valid JSON: {exc}") from None
    else:
        raise ExperimentInputError(f"{path}: unknown inputs format {suffix!r}: use .yaml, .yml, .json or .jsonl")
    if isinstance(data, Mapping):
        unknown = [str(k) for k in data if k not in _TOP_KEYS]
        lists = [k for k in ("inputs", "generated_inputs") if k in data]
        if unknown or len(lists) != 1:
            found = f"unknown key(s) {', '.join(unknown)}" if unknown else f"{len(lists)} lists"
            raise ExperimentInputError(
                f"{path}: {found}: a mapping holds one list, 'inputs:' or 'generated_inputs:' (and 'metadata:')"
            )
        data = data[lists[0]]
    if not isinstance(data, list):
        raise ExperimentInputError(
            f"{path}: expected a list of items (or a mapping with an 'inputs:' or 'generated_inputs:' list)"
        )
    return normalize_inputs(data, source=str(path))


def _jsonl_items(raw: bytes, path: Path) -> Iterator[Any]:
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise ExperimentInputError(f"{path}:{lineno}: not valid JSON: {exc}") from None


def write_inputs_jsonl(path: Path, items: Iterable[ExperimentInput]) -> None:
    """Write items as JSON lines (the experiment folder keeps its own copy, for ``resume``)."""
    from reprise.run._files import write_bytes_atomic

    lines = (item.model_dump_json(exclude_defaults=True).encode() + b"\n" for item in items)
    write_bytes_atomic(path, b"".join(lines))
