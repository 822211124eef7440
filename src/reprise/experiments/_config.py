"""The experiment configuration file: ``configs/simulation.yaml`` by default.

::

    name: baseline                        # optional; default: the target's name
    runner:
      target: "examples.my_agent:run"     # MODULE:OBJECT or file.py:OBJECT: a flow, agent or function
      iterations: 10                      # runs per input
      parallel: 4                         # runs at once
      timeout: 120                        # seconds per run (default: none)
      executor: local                     # local, inline or dask://HOST:PORT
    inputs: inputs/generated.yaml         # the inputs file (default as shown)
    output:
      directory: experiments              # where experiment folders go
      format: jsonl
    replay_args:                          # optional: see docs/experiments.md, "Argument replay"
      enabled: true
      recording_file: recordings/args.jsonl
      override_param_path: data.content
    generation:                           # optional: what `reprise experiment generate` varies
      base_inputs: ["How do I start?"]
      personas: [{name: novice_user, description: new to the product}]

Every key is checked before anything runs: an unknown key (a typo) or a bad value stops with
the file, the key and what to write instead. Relative paths are taken from the project root.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reprise.experiments._errors import ExperimentConfigError
from reprise.experiments._generate import GenerationConfig

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_INPUTS",
    "ExperimentConfig",
    "OutputConfig",
    "ReplayArgsConfig",
    "RunnerConfig",
    "describe_validation",
    "load_config",
]

#: Where ``reprise experiment`` looks for its configuration, from the project root.
DEFAULT_CONFIG = Path("configs/simulation.yaml")
#: The inputs file used when neither the command line nor the configuration names one.
DEFAULT_INPUTS = Path("inputs/generated.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunnerConfig(_Strict):
    """``runner:``: what runs and how."""

    #: ``MODULE:OBJECT`` or ``file.py:OBJECT``: a flow, an agent or a function.
    target: str | None = None
    iterations: int = Field(1, ge=1)
    parallel: int = Field(4, ge=1)
    timeout: float | None = Field(None, gt=0)
    #: ``local`` (worker processes), ``inline`` or ``dask://HOST:PORT``.
    executor: str | None = None

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str | None) -> str | None:
        if value is None or value in ("local", "process", "inline") or value.startswith("dask://"):
            return value
        raise ValueError("use local, inline or dask://HOST:PORT")


class OutputConfig(_Strict):
    """``output:``: where the experiment folder goes."""

    directory: str = "experiments"
    #: The record's format: JSON lines (``runs.jsonl``, ``trace_summary.jsonl``).
    format: Literal["jsonl"] = "jsonl"


class ReplayArgsConfig(_Strict):
    """``replay_args:``: call the target with recorded arguments, the input at one path."""

    enabled: bool = True
    #: A JSON-lines file of recorded calls (``reprise.experiments.ArgumentRecorder`` writes one).
    recording_file: str
    #: Where the input text goes in the recorded arguments: ``data.content``.
    override_param_path: str = Field(min_length=1)


class ExperimentConfig(_Strict):
    """The whole file."""

    #: Letters, digits, ``_`` and ``-``: it names the folder and prefixes run ids.
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    runner: RunnerConfig = Field(default_factory=RunnerConfig)
    inputs: str = str(DEFAULT_INPUTS)
    output: OutputConfig = Field(default_factory=OutputConfig)
    replay_args: ReplayArgsConfig | None = None
    #: What ``reprise experiment generate`` varies (see :mod:`reprise.experiments._generate`).
    generation: GenerationConfig | None = None


def _keys_of(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` (the location of an unknown key's parent)."""
    current: Any = model
    for part in loc:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        annotation = field.annotation
        args = [a for a in getattr(annotation, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = args[0] if args else annotation
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
    return list(current.model_fields)


def describe_validation(exc: ValidationError, source: str, model: type[BaseModel], *, also: Sequence[str] = ()) -> str:
    """Every error of ``exc`` on one line: ``FILE: KEY: what is wrong, what to write``.
    ``also``: more keys allowed at the top level (another form of the same entry)."""
    parts = []
    for err in exc.errors():
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(x) for x in loc) if loc else "<top level>"
        if err.get("type") == "extra_forbidden":
            allowed = _keys_of(model, loc[:-1])
            allowed += [k for k in also if len(loc) == 1 and k not in allowed]
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            parts.append(f"{key}: unknown key; {hint}allowed here: {', '.join(allowed)}")
        else:
            given = err.get("input")
            shown = f" (got {given!r})" if not isinstance(given, (dict, list)) and err.get("type") != "missing" else ""
            parts.append(f"{key}: {err.get('msg')}{shown}")
    return f"{source}: " + "; ".join(parts)


def load_config(path: Path) -> ExperimentConfig:
    """The checked configuration in ``path``; :class:`ExperimentConfigError` names the file and
    every key to fix."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentConfigError(f"cannot read configuration {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentConfigError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ExperimentConfigError(f"{path}: expected a mapping of keys (runner:, inputs:, output:, ...)")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ExperimentConfigError(describe_validation(exc, str(path), ExperimentConfig)) from None
