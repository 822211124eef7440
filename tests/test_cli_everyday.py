"""The `reprise` command as a newcomer meets it: help, versions, listing, levels, signals.

Every test drives the real command in a subprocess against real runs in a temporary project
(the fixtures and helpers are those of ``test_cli.py``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_cli import envelope, one_line_error, project, reprise_cmd, run_json

__all__ = ["project"]  # the fixture, imported for pytest


def test_reprise_alone_prints_its_help(tmp_path: Path) -> None:
    proc = reprise_cmd(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: reprise") and "runs" in proc.stdout
    assert proc.stderr == ""


def test_version_has_a_short_flag(tmp_path: Path) -> None:
    for flag in ("-V", "--version"):
        proc = reprise_cmd(tmp_path, flag)
        assert proc.returncode == 0 and proc.stdout.startswith("reprise "), proc


def test_usage_errors_name_the_command_once(tmp_path: Path) -> None:
    proc = reprise_cmd(tmp_path, "--bogus")
    assert proc.returncode == 2 and proc.stderr.startswith("reprise: error: "), proc.stderr
    line = one_line_error(reprise_cmd(tmp_path, "runs", "--bogus"), "runs")
    assert "unrecognized arguments: --bogus" in line and "reprise runs --help" in line
    proc = reprise_cmd(tmp_path, "runs", "--bogus", "--json")
    env = envelope(proc, "runs", ok=False)
    assert env["error"]["type"] == "UsageError"
