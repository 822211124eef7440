"""RUN references: one resolver (run id, name, latest/-N, unique prefix) behind every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reprise
from reprise import Api, RunSetupError
from reprise.cli import main
from reprise.run._index import RunIndex


def _make(root: Path, project: str, name: str, loss: float, *, git: bool = False) -> str:
    with reprise.init(project, name=name, config={"loss0": loss}, run_root=root, outcome_repo=git) as run:
        run.log("loss", loss)
        run.alert(f"alert of {name}", level="warn")
    return run.run_id


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, str]:
    """Four runs, oldest first: name -> run id."""
    root = tmp_path / "runs"
    made = {}
    for project, name, loss in [
        ("sweep", "hungry-brownie-557", 3.0),
        ("sweep", "hungry-otter-12", 2.0),
        ("sweep", "calm-fig-1", 1.0),
        ("other", "calm-fig-1", 0.5),  # the same name in another project
    ]:
        made[f"{project}/{name}"] = _make(root, project, name, loss, git=True)
    return made


def test_every_form_of_reference(tmp_path: Path, runs: dict[str, str]) -> None:
    index = RunIndex(tmp_path / "runs")
    newest = runs["other/calm-fig-1"]
    assert index.resolve(newest).run_id == newest
    assert index.resolve("latest").run_id == newest
    assert index.resolve("-1").run_id == newest
    assert index.resolve("-2").run_id == runs["sweep/calm-fig-1"]
    assert index.resolve("-1", project="sweep").run_id == runs["sweep/calm-fig-1"]
    assert index.resolve("hungry-otter-12").run_id == runs["sweep/hungry-otter-12"]
    assert index.resolve("hungry-b").run_id == runs["sweep/hungry-brownie-557"]  # a prefix of a name
    assert index.resolve(runs["sweep/hungry-otter-12"][:-2]).run_id == runs["sweep/hungry-otter-12"]  # of an id
    assert index.resolve("calm-fig-1", project="other").run_id == newest


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("hungry", r"'hungry' is ambiguous .* it could be hungry-(brownie-557|otter-12) .*hungry-"),
        ("calm-fig-1", r"ambiguous .*calm-fig-1 \(run_.*, other\).*calm-fig-1 \(run_.*, sweep\)"),
        ("nothing-like-it", r"no run 'nothing-like-it' under .*: not a run id, a run name"),
        ("run_20200101_000000_abcdef", r"no run 'run_20200101_000000_abcdef'"),
        ("-9", r"'-9': there are only 4 run\(s\)"),
        ("-0", r"count runs back from -1"),
        ("  ", r"no run given"),
    ],
)
def test_unknown_and_ambiguous_references_say_so(tmp_path: Path, runs: dict[str, str], ref: str, message: str) -> None:
    with pytest.raises(RunSetupError, match=message):
        RunIndex(tmp_path / "runs").resolve(ref)


def test_a_run_of_another_project_is_refused(tmp_path: Path, runs: dict[str, str]) -> None:
    with pytest.raises(RunSetupError, match="is in project 'other', not 'sweep'"):
        Api(tmp_path / "runs").run(runs["other/calm-fig-1"], project="sweep")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_every_command_taking_a_run_takes_a_reference(
    tmp_path: Path, runs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["--run-root", str(tmp_path / "runs")]
    brownie, otter = runs["sweep/hungry-brownie-557"], runs["sweep/hungry-otter-12"]
    code, env = _cli(capsys, "show", "hungry-b", *root)
    assert code == 0 and env["data"]["run"]["run_id"] == brownie
    assert env["data"]["run"]["name"] == "hungry-brownie-557" and env["data"]["run"]["config"] == {"loss0": 3.0}
    code, env = _cli(capsys, "metrics", "-1", *root)
    assert [m["metrics"] for m in env["data"]] == [{"loss": 0.5}]
    code, env = _cli(capsys, "alerts", "--run", "hungry-otter", *root)
    assert [a["title"] for a in env["data"]] == ["alert of hungry-otter-12"]
    code, env = _cli(capsys, "logs", "latest", *root)
    assert code == 0 and env["data"]
    code, env = _cli(capsys, "trace", "hungry-otter-12", *root)
    assert code == 0 and env["data"]
    code, env = _cli(capsys, "diff", "hungry-brownie-557", "hungry-otter", *root)
    assert code == 0 and [c["path"] for c in env["data"]] == ["sweep/outcome.json"]
    code, env = _cli(capsys, "view", "hungry-otter-12", "-o", str(tmp_path / "v.html"), *root)
    assert code == 0 and env["data"]["run_id"] == otter
    code, env = _cli(capsys, "materialize", "-2", *root)
    assert code == 0 and env["data"]["run_id"] == runs["sweep/calm-fig-1"]
    code, env = _cli(capsys, "show", "hungry", *root)
    assert code == 2 and env["ok"] is False
    assert "ambiguous" in env["error"]["message"] and "hungry-otter-12" in env["error"]["message"]


def test_cli_subprocess_latest(tmp_path: Path, runs: dict[str, str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(reprise.__file__).resolve().parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "reprise.cli", "show", "nope", "--run-root", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "no run 'nope' under" in proc.stderr and "reprise runs" in proc.stderr


def test_project_option_scopes_runs_and_alerts(
    tmp_path: Path, runs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    root = ["--run-root", str(tmp_path / "runs")]
    code, env = _cli(capsys, "runs", "--project", "other", *root)
    assert code == 0 and [r["run_id"] for r in env["data"]] == [runs["other/calm-fig-1"]]
    # 'calm-fig-1' names a run in two projects: --project says which.
    code, env = _cli(capsys, "alerts", "--project", "sweep", "--run", "calm-fig-1", *root)
    assert code == 0 and [a["run_id"] for a in env["data"]] == [runs["sweep/calm-fig-1"]]
    code, env = _cli(capsys, "alerts", "--project", "sweep", *root)
    assert len(env["data"]) == 3
