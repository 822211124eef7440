"""Argument replay (issue 22): a recorder writes real calls' arguments; ``replay_args`` replays
them with each input's text at a parameter path."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml

from reprise.cli import main
from reprise.experiments import ArgumentRecorder, ArgumentReplay, ExperimentConfigError, ExperimentInput

HANDLER = """
from reprise.experiments import ArgumentRecorder

recorder = ArgumentRecorder("recordings/args.jsonl")


@recorder
def handle(data: dict, user_id: str, lang: str = "en") -> str:
    return f"{user_id}/{lang}: {data['content']} ({data['channel']})"
"""


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_recorder_writes_each_calls_arguments_by_name(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "args.jsonl"

    @ArgumentRecorder(path)
    def sync(a: int, b: str = "x", *, when: Any = None) -> str:
        return f"{a}{b}"

    @ArgumentRecorder(path)
    async def later(q: str) -> str:
        return q

    assert sync(1) == "1x" and sync(2, "y", when=tmp_path) == "2y"
    assert anyio.run(later, "why") == "why"
    with ArgumentRecorder(path) as recorder:
        recorder.record({"free": [1, 2]})
    first, second, third, fourth = lines(path)
    assert first["kwargs"] == {"a": 1, "b": "x", "when": None}
    assert first["function"].endswith("test_the_recorder_writes_each_calls_arguments_by_name.<locals>.sync")
    assert second["kwargs"] == {"a": 2, "b": "y", "when": str(tmp_path)}  # not JSON: recorded as text
    assert third["kwargs"] == {"q": "why"} and fourth == {**fourth, "function": None, "kwargs": {"free": [1, 2]}}


def test_replay_puts_each_input_at_the_path(tmp_path: Path) -> None:
    path = tmp_path / "args.jsonl"
    with ArgumentRecorder(path) as recorder:
        recorder.record({"data": {"content": "old", "channel": "web"}, "user_id": "u1"})
        recorder.record({"user_id": "u2"})  # no `data`: made on the way
    replay = ArgumentReplay(path, "data.content")
    items = [ExperimentInput(initial_inputs={"input": t}) for t in ("a", "b", "c")]
    assert [item.initial_inputs for item in replay.apply(items)] == [
        {"data": {"content": "a", "channel": "web"}, "user_id": "u1"},
        {"data": {"content": "b"}, "user_id": "u2"},
        {"data": {"content": "c", "channel": "web"}, "user_id": "u1"},
    ]
    assert replay.recordings[0]["data"]["content"] == "old"  # the recordings are not changed


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "service.py").write_text(HANDLER)
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "simulation.yaml").write_text(
        yaml.safe_dump(
            {
                "runner": {"target": "service:handle", "executor": "inline"},
                "replay_args": {
                    "enabled": True,
                    "recording_file": "recordings/args.jsonl",
                    "override_param_path": "data.content",
                },
            }
        )
    )
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "generated.yaml").write_text(
        "generated_inputs:\n  - input: How do I start?\n    persona: novice\n  - input: Options?\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    yield tmp_path
    sys.modules.pop("service", None)


def test_an_experiment_replays_recorded_calls(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import service  # type: ignore[import-not-found]

    # Real calls, recorded by the decorator.
    assert service.handle({"content": "hello", "channel": "mail"}, "ada") == "ada/en: hello (mail)"
    assert main(["experiment", "--json", "--progress", "none"]) == 0
    folder = project / "experiments" / json.loads(capsys.readouterr().out)["data"]["folder"]
    outcomes = sorted(line["outcome"] for line in lines(folder / "runs.jsonl"))
    assert outcomes == ["ada/en: How do I start? (mail)", "ada/en: Options? (mail)"]
    # What each run received is kept with the experiment; the recording file is unchanged.
    assert lines(folder / "inputs.jsonl")[0]["initial_inputs"] == {
        "data": {"content": "How do I start?", "channel": "mail"},
        "user_id": "ada",
        "lang": "en",
    }
    assert len(lines(project / "recordings" / "args.jsonl")) == 1
    snapshot = yaml.safe_load((folder / "config.yaml").read_text())
    assert snapshot["replay_args"]["override_param_path"] == "data.content"
    assert snapshot["replay_args"]["recordings"] == 1


@pytest.mark.parametrize(
    ("recording", "message"),
    [
        (None, "configs/simulation.yaml: replay_args: cannot read recording_file"),
        ("not json\n", "configs/simulation.yaml: replay_args: {rec}:1: not valid JSON"),
        ('{"args": {}}\n', 'replay_args: {rec}:1: expected {{"kwargs": {{...}}}}'),
        (
            '{"kwargs": {"data": {"content": "x"}}}\n{"kwargs": {"data": "text"}}\n',
            "replay_args: {rec}:2: override_param_path 'data.content': 'data' is a str, not a mapping",
        ),
    ],
)
def test_a_bad_recording_stops_before_running(
    project: Path, recording: str | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = project / "recordings" / "args.jsonl"
    if recording is not None:
        rec.parent.mkdir()
        rec.write_text(recording)
    assert main(["experiment"]) == 2
    err = capsys.readouterr().err
    assert message.format(rec=rec) in err, err
    assert not (project / "experiments").exists()


def test_a_path_must_be_dotted_names(tmp_path: Path) -> None:
    with pytest.raises(ExperimentConfigError, match="is not a dotted path"):
        ArgumentReplay(tmp_path / "none.jsonl", "data..content")
