"""``reprise experiment generate`` (issue 22): inputs from base inputs and personas, offline
through templates, or through a model (a loopback OpenAI-compatible server driving the official
openai client, and the Anthropic client), in batches with ``--limit``/``--offset``/``--output``."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _model_server import ModelServer, serve_models
from reprise.cli import main
from reprise.experiments import load_inputs

CANARY = "sk-canary-generate-do-not-leak"

AGENT = "def run(input_text: str) -> str:\n    return input_text[::-1]\n"


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    with serve_models() as server:
        yield server


def write_config(project: Path, model: dict[str, Any] | None = None, **generation: Any) -> None:
    config: dict[str, Any] = {
        "runner": {"target": "agent:run", "executor": "inline"},
        "generation": {
            "base_inputs": ["How do I start?", "What are the options?"],
            "personas": [
                {"name": "novice_user", "description": "new to the product"},
                {"name": "expert_user", "description": "an administrator"},
            ],
            "variations": 2,
            **generation,
        },
    }
    if model is not None:
        config["generation"]["model"] = model
    (project / "configs").mkdir(exist_ok=True)
    (project / "configs" / "simulation.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "agent.py").write_text(AGENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    monkeypatch.setenv("REPRISE_CREDENTIALS", str(tmp_path / "no-credentials.toml"))
    for var in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    yield tmp_path
    sys.modules.pop("agent", None)


def entries(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return list(data["generated_inputs"])


def test_templates_vary_offline_then_the_batches_run(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_config(project)
    assert main(["experiment", "generate"]) == 0
    assert capsys.readouterr().out == f"wrote 8 inputs to {project / 'inputs' / 'generated.yaml'}\n"
    made = entries(project / "inputs" / "generated.yaml")
    assert [(e["input"], e["persona"]) for e in made[:4]] == [
        ("How do I start?", "novice_user"),
        ("I am new to the product. How do I start?", "novice_user"),
        ("How do I start?", "expert_user"),
        ("I am an administrator. How do I start?", "expert_user"),
    ]
    assert made[0]["metadata"] == {"base_input": "How do I start?", "strategy": "template"}
    assert main(["experiment", "generate"]) == 0 and entries(project / "inputs" / "generated.yaml") == made

    # The seed's batches: two files of at most 3, the second one after the first.
    assert main(["experiment", "generate", "--limit", "3", "--output", "inputs/batch1.yaml"]) == 0
    assert main(["experiment", "generate", "--limit", "3", "--offset", "3", "--output", "inputs/batch2.yaml"]) == 0
    batch1, batch2 = entries(project / "inputs" / "batch1.yaml"), entries(project / "inputs" / "batch2.yaml")
    assert batch1 + batch2 == made[:6]
    capsys.readouterr()
    for batch in ("batch1", "batch2"):
        assert main(["experiment", "--inputs", f"inputs/{batch}.yaml", "--name", batch, "--json"]) == 0
        data = json.loads(capsys.readouterr().out)["data"]
        assert (data["total"], data["successes"], data["folder"].split("_")[0]) == (3, 3, batch)


def test_a_model_writes_variations_through_the_openai_client(
    project: Path,
    model_server: ModelServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model_server.structured = {"inputs": ["first wording", "second wording"]}
    write_config(project, {"provider": "openai", "model": "gpt-4o-mini", "base_url": model_server.url + "/v1"})
    assert main(["experiment", "generate", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["count"] == 4
    made = entries(project / "inputs" / "generated.yaml")
    # The same text is kept once per persona (the server answers every call alike).
    assert [(e["input"], e["persona"]) for e in made] == [
        ("first wording", "novice_user"),
        ("second wording", "novice_user"),
        ("first wording", "expert_user"),
        ("second wording", "expert_user"),
    ]
    assert all(e["metadata"]["strategy"] == "model" for e in made)
    # One structured-output call per (base input, persona).
    calls = [r for r in model_server.requests if r["path"].endswith("/chat/completions")]
    assert len(calls) == 4
    model_server.requests.clear()
    assert main(["experiment", "generate", "--limit", "3", "--output", "few.yaml"]) == 0
    assert len(entries(project / "few.yaml")) == 3 and len(model_server.requests) == 2  # stops at the limit
    first = calls[0]["body"]
    assert first["model"] == "gpt-4o-mini" and first["response_format"]["type"] == "json_schema"
    prompt = first["messages"][-1]["content"]
    assert "novice_user (new to the product)" in prompt and "How do I start?" in prompt
    assert CANARY not in (project / "inputs" / "generated.yaml").read_text()
    assert len(load_inputs(project / "inputs" / "generated.yaml")) == len(made)


def test_a_model_through_the_anthropic_client(
    project: Path,
    model_server: ModelServer,
) -> None:
    model_server.structured = {"inputs": ["asked by tool"]}
    write_config(
        project,
        {"provider": "anthropic", "model": "claude-haiku-4-5", "base_url": model_server.url},
        base_inputs=["Why?"],
        personas=[],
        variations=1,
    )
    assert main(["experiment", "generate", "--output", "out.yaml"]) == 0
    assert entries(project / "out.yaml") == [
        {"input": "asked by tool", "metadata": {"base_input": "Why?", "strategy": "model"}}
    ]
    (call,) = model_server.requests
    assert call["path"].endswith("/messages") and call["body"]["tools"][0]["name"] == "Variations"


def test_generation_errors_name_the_file(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "configs").mkdir()
    (project / "configs" / "simulation.yaml").write_text("runner: {target: agent:run}\n")
    assert main(["experiment", "generate"]) == 2
    assert "no generation: block in" in capsys.readouterr().err
    write_config(project, base_inputs=[])
    assert main(["experiment", "generate"]) == 2
    assert "configs/simulation.yaml: generation: base_inputs is empty" in capsys.readouterr().err
    write_config(project)
    assert main(["experiment", "generate", "--mode", "model"]) == 2
    assert "generation: no model: add a model: block" in capsys.readouterr().err
    write_config(project, {"provider": "openai", "modle": "x"})
    assert main(["experiment", "generate"]) == 2
    assert "generation.model.modle: unknown key; did you mean 'model'?" in capsys.readouterr().err
    assert not (project / "inputs").exists()
