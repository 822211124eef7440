"""The README's example is real code: it runs and does what the README says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"## A short example\n\n```python\n(.*?)```", readme, re.S)
    assert match, "README lost its example"
    (tmp_path / "example.py").write_text(match.group(1))
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "a.txt").write_text("alpha beta gamma")
    (notes / "b.txt").write_text("delta epsilon")
    proc = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first.startswith("completed 2 files, 5 words ")
    assert second == "3 nodes reused, 1 executed"
    # As the README says, the command imports the file (its __main__ block does not run) and runs it.
    command = [sys.executable, "-m", "reprise.cli", "run", "example.py:agent", "--input", "folder=notes", "--json"]
    cli = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["data"]["outcome"] == "2 files, 5 words"
