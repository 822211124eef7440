"""docs/getting-started.md is real: its files are written, its commands run in order, in a fresh
project, and say what the page shows.

The page marks what to do with a code block by an HTML comment before it: ``<!-- file: NAME -->``
writes the block to NAME, ``<!-- replace in: NAME -->`` replaces the top-level function of the
same name in NAME, ``<!-- skip -->`` leaves a block alone. Every other ``console`` block is run,
one ``$`` line at a time; the run ids the page shows are mapped to the ids the runs really get.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"(?:<!-- (?P<marker>[^>]*?) -->\n)?```(?P<lang>\w+)\n(?P<body>.*?)```", re.S)
_RUN_ID = re.compile(r"\b\w*run_\d{8}_\d{6}_[0-9a-f]{6}\b")


def _replace_function(source: str, new: str) -> str:
    name = re.match(r"(?:async )?def (\w+)", new)
    assert name, new
    pattern = re.compile(rf"^(?:async )?def {name.group(1)}\(.*?(?=^\S)", re.S | re.M)
    assert pattern.search(source), f"no function {name.group(1)} to replace"
    return pattern.sub(lambda _: new + "\n\n", source, count=1)


def _command(line: str) -> list[str]:
    args = shlex.split(line)
    if args[0] == "reprise":
        return [sys.executable, "-m", "reprise.cli", *args[1:]]
    if args[0] == "python":
        return [sys.executable, *args[1:]]
    raise AssertionError(f"the tutorial runs only reprise and python, not {line!r}")


def test_getting_started_runs_as_written(tmp_path: Path) -> None:
    page = (ROOT / "docs" / "getting-started.md").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPRISE_")}
    ids: dict[str, str] = {}  # run id on the page -> the real one
    commands = 0
    for block in _BLOCK.finditer(page):
        marker, lang, body = block["marker"] or "", block["lang"], block["body"]
        if marker == "skip":
            continue
        if marker.startswith("file: "):
            (tmp_path / marker.removeprefix("file: ")).write_text(body)
            continue
        if marker.startswith("replace in: "):
            target = tmp_path / marker.removeprefix("replace in: ")
            target.write_text(_replace_function(target.read_text(), body))
            continue
        if lang != "console":
            continue
        for step in re.split(r"^\$ ", body, flags=re.M)[1:]:
            line, _, shown = step.partition("\n")
            line = _RUN_ID.sub(lambda m: ids.get(m.group(0), m.group(0)), line)
            proc = subprocess.run(_command(line), cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
            commands += 1
            assert proc.returncode == 0, (line, proc.stdout, proc.stderr)
            # What the page shows is what the command prints, but for ids, times and paths.
            for expected in filter(str.strip, shown.splitlines()):
                assert expected.split()[0] in proc.stdout, (line, expected, proc.stdout)
            if line.split()[:2] in (["reprise", "run"], ["reprise", "rerun"]):
                (page_id,) = re.findall(r"^run id\s+(\S+)", shown, re.M)
                (real_id,) = re.findall(r"^run id\s+(\S+)", proc.stdout, re.M)
                ids[page_id] = real_id
    assert commands >= 8 and len(ids) == 2
    # The outcomes the page shows after the change.
    diff = subprocess.run(
        _command(f"reprise diff {' '.join(ids.values())} --values --json"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
    )
    assert '"after": "hardware"' in diff.stdout
    script = subprocess.run(_command("python triage.py"), cwd=tmp_path, capture_output=True, text=True, env=env)
    assert script.returncode == 0 and script.stdout.startswith("completed [bug]"), script.stderr
