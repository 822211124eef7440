"""The seed's experiment runner made real (issue 22): ``configs/simulation.yaml``, a plain
function as target, ``inputs/generated.yaml`` in the seed's format, and errors that stop
before anything runs, naming the file and what to fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import git
import pytest
import yaml

from reprise.experiments import ExperimentConfigError, load_config, load_inputs

AGENT = """
import reprise


@reprise.entrypoint()
def run(input_text: str) -> str:
    if input_text == "fail":
        raise ValueError("cannot answer")
    return f"answer to {input_text}"
"""

CONFIG = """
runner:
  target: "examples.my_agent:run"
  iterations: 2
  parallel: 2
output:
  directory: "experiments"
  format: jsonl
"""

GENERATED = """
generated_inputs:
  - input: "How do I start?"
    persona: novice_user
  - input: "What are advanced options?"
    persona: expert_user
"""


def reprise(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprise.cli", "experiment", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "REPRISE_RUN_ROOT": ""},
    )


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The seed's layout: examples/my_agent.py, configs/simulation.yaml, inputs/generated.yaml."""
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "__init__.py").write_text("")
    (tmp_path / "examples" / "my_agent.py").write_text(AGENT)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "simulation.yaml").write_text(CONFIG)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "generated.yaml").write_text(GENERATED)
    return tmp_path


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def folder_of(result: subprocess.CompletedProcess[str], project: Path) -> Path:
    return project / "experiments" / json.loads(result.stdout)["data"]["folder"]


def test_the_seeds_example_runs_with_no_flags_then_with_each_override(project: Path) -> None:
    first = reprise(project, "--json", "--progress", "plain")
    assert first.returncode == 0, first.stderr
    folder = folder_of(first, project)
    assert folder.name.startswith("run_")  # named after the function
    runs = lines(folder / "runs.jsonl")
    assert len(runs) == 4 and {r["status"] for r in runs} == {"completed"}
    assert {(r["persona"], r["outcome"]) for r in runs} == {
        ("novice_user", "answer to How do I start?"),
        ("expert_user", "answer to What are advanced options?"),
    }
    snapshot = yaml.safe_load((folder / "config.yaml").read_text())
    assert snapshot["config_file"] == str(project / "configs" / "simulation.yaml")
    assert (snapshot["iterations"], snapshot["max_concurrency"], snapshot["target"]) == (2, 2, "examples.my_agent:run")
    assert snapshot["inputs"]["source"] == str(project / "inputs" / "generated.yaml")
    # Each run is a normal run: its own directory, trace, and git branch.
    run_id = runs[0]["run_id"]
    assert (project / "runs" / run_id / ".trace" / "metadata.json").is_file()
    repo = git.Repo(project / "runs" / "outcome" / project.name)
    assert f"run/{run_id}" in [h.name for h in repo.heads]
    # The seed's progress lines; plain (not a terminal): the bar drawn in text, with an ETA.
    assert "Loaded 2 inputs" in first.stderr and "Running 2 iterations per input (4 total runs)" in first.stderr
    assert "experiment run: [" + "\u2593" * 5 + "\u2591" * 5 + "] 2/4 (50%), 0 failed" in first.stderr
    assert re.search(r"2/4 \(50%\), 0 failed, [0-9.]+/s - ETA: [0-9]+s\n", first.stderr), first.stderr

    more = reprise(project, "--iterations", "20", "--executor", "inline", "--no-git", "--json", "--progress", "none")
    assert more.returncode == 0, more.stderr
    assert json.loads(more.stdout)["data"]["total"] == 40

    named = reprise(project, "--name", "baseline-test", "--json", "--executor", "inline")
    assert named.returncode == 0, named.stderr
    assert folder_of(named, project).name.startswith("baseline-test_")

    (project / "my-custom-inputs.yaml").write_text('generated_inputs:\n  - input: "fail"\n  - input: "ok"\n')
    custom = reprise(project, "--inputs", "my-custom-inputs.yaml", "--json", "--executor", "inline")
    assert custom.returncode == 1, custom.stderr  # one input fails: exit code 1
    data = json.loads(custom.stdout)["data"]
    assert (data["total"], data["successes"], data["failures"]) == (4, 2, 2)
    failed = [r for r in lines(folder_of(custom, project) / "runs.jsonl") if r["status"] == "failed"]
    assert {r["error_type"] for r in failed} == {"ValueError"}


def test_the_seeds_batch_example(project: Path) -> None:
    for batch in ("batch1", "batch2"):
        (project / "inputs" / f"{batch}.yaml").write_text(f'generated_inputs:\n  - input: "{batch} question"\n')
    for batch in ("batch1", "batch2"):
        result = reprise(project, "--inputs", f"inputs/{batch}.yaml", "--name", batch, "--json", "--executor", "inline")
        assert result.returncode == 0, result.stderr
        (line, _) = lines(folder_of(result, project) / "runs.jsonl")
        assert line["outcome"] == f"answer to {batch} question"


def run_in_process(project: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    from reprise.cli import main

    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        return main(["experiment", *args])
    finally:
        for name in [m for m in sys.modules if m == "examples" or m.startswith("examples.")]:
            del sys.modules[name]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("configs/simulation.yaml", CONFIG.replace("iterations:", "iteratons:")),
            "configs/simulation.yaml: runner.iteratons: unknown key; did you mean 'iterations'?",
        ),
        (
            ("configs/simulation.yaml", CONFIG.replace("iterations: 2", "iterations: 0")),
            "configs/simulation.yaml: runner.iterations: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            ("configs/simulation.yaml", "name: my experiment\n" + CONFIG),
            "configs/simulation.yaml: name: String should match pattern",
        ),
        (
            ("configs/simulation.yaml", CONFIG.replace("format: jsonl", "format: csv")),
            "configs/simulation.yaml: output.format: Input should be 'jsonl' (got 'csv')",
        ),
        (
            ("configs/simulation.yaml", CONFIG.replace("parallel: 2", "parallel: 2\n  executor: ftp://x")),
            "configs/simulation.yaml: runner.executor: Value error, use local, inline or dask://HOST:PORT",
        ),
        (
            ("configs/simulation.yaml", CONFIG.replace("examples.my_agent:run", "examples.nothing:run")),
            "configs/simulation.yaml: runner.target: target no module named 'examples.nothing'",
        ),
        (
            ("configs/simulation.yaml", CONFIG.replace("examples.my_agent:run", "examples.my_agent:rnu")),
            "configs/simulation.yaml: runner.target: target examples.my_agent:rnu: module 'examples.my_agent' "
            "has no attribute 'rnu'",
        ),
        (
            ("inputs/generated.yaml", GENERATED.replace("persona: expert_user", "persona: expert_user\n    tone: x")),
            "inputs/generated.yaml: item 2: tone: unknown key; allowed here: input, persona, id, tags, metadata",
        ),
        (
            ("inputs/generated.yaml", GENERATED.replace('input: "How do I start?"', "input: [1, 2]")),
            "inputs/generated.yaml: item 1: input: Input should be a valid string",
        ),
        (
            ("inputs/generated.yaml", "generated_input:\n  - input: x\n"),
            "inputs/generated.yaml: unknown key(s) generated_input: a mapping holds one list, 'inputs:' or "
            "'generated_inputs:'",
        ),
    ],
)
def test_a_bad_configuration_stops_before_anything_runs(
    project: Path,
    change: tuple[str, str],
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (project / change[0]).write_text(change[1])
    assert run_in_process(project, monkeypatch, "--executor", "inline") == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (project / "experiments").exists() and not (project / "runs").exists()


def test_no_target_and_no_inputs_say_what_to_write(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "configs" / "simulation.yaml").unlink()
    assert run_in_process(project, monkeypatch) == 2
    assert "no target: give MODULE:OBJECT, or set runner.target in configs/simulation.yaml" in capsys.readouterr().err
    (project / "inputs" / "generated.yaml").unlink()
    assert run_in_process(project, monkeypatch, "examples.my_agent:run") == 2
    err = capsys.readouterr().err
    assert "no inputs file" in err and "write inputs/generated.yaml or set inputs: in configs/simulation.yaml" in err
    assert run_in_process(project, monkeypatch, "--config", "configs/missing.yaml") == 2
    assert "cannot read configuration" in capsys.readouterr().err


def test_flags_override_the_file_and_paths_are_from_the_project_root(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text(
        textwrap.dedent("""
        name: nightly
        runner: {target: "flows.py:flow", iterations: 3, timeout: 9.5, executor: inline}
        inputs: data/in.jsonl
        output: {directory: out}
        """)
    )
    config = load_config(path)
    assert (config.name, config.runner.iterations, config.runner.parallel, config.runner.timeout) == (
        "nightly",
        3,
        4,
        9.5,
    )
    assert (config.inputs, config.output.directory, config.output.format) == ("data/in.jsonl", "out", "jsonl")
    path.write_text("- a list\n")
    with pytest.raises(ExperimentConfigError, match="expected a mapping"):
        load_config(path)
    path.write_text("runner: [\n")
    with pytest.raises(ExperimentConfigError, match="not valid YAML"):
        load_config(path)


def test_both_inputs_forms_load_side_by_side(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        textwrap.dedent("""
        - input: "How do I start?"
          persona: novice_user
          id: 7
        - id: own
          initial_inputs: {question: "Why?"}
        """)
    )
    first, second = load_inputs(path)
    assert (first.id, first.initial_inputs, first.persona) == ("7", {"input": "How do I start?"}, "novice_user")
    assert (second.id, second.initial_inputs) == ("own", {"question": "Why?"})
