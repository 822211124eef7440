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
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reprise.dsl._node import validation_summary
from reprise.experiments._errors import ExperimentInputError

__all__ = ["ExperimentInput", "InputsSource", "load_inputs", "normalize_inputs", "write_inputs_jsonl"]


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
        # YAML reads `id: 7` as an int; an id is a name, so keep its text.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


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
            try:
                model = ExperimentInput.model_validate(dict(item))
            except ValidationError as exc:
                raise ExperimentInputError(f"{source}: item {n}: {validation_summary(exc)}") from None
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
    if isinstance(data, Mapping) and "inputs" in data:
        data = data["inputs"]
    if not isinstance(data, list):
        raise ExperimentInputError(f"{path}: expected a list of items (or a mapping with an 'inputs' list)")
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
