"""MODULE:OBJECT references, shared by the CLI and experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprise import FlowDefinition
from reprise.errors import TargetError
from reprise.targets import import_target


def test_file_and_module_references(tmp_path: Path) -> None:
    (tmp_path / "flows.py").write_text(
        "from reprise import FlowDefinition\n"
        "class Box:\n    flow = FlowDefinition('boxed').node('a', lambda: 1)\n"
        "flow = FlowDefinition().node('a', lambda: 1)\nnot_a_flow = 3\n"
        "if __name__ == '__main__':\n    raise SystemExit('must not run')\n"
    )
    assert isinstance(import_target("flows.py:flow", tmp_path), FlowDefinition)
    assert import_target("flows.py:Box.flow", tmp_path).id == "boxed"
    for ref, message in [
        ("flows.py", "not MODULE:OBJECT"),
        ("flows.py:missing", "no attribute 'missing'"),
        ("flows.py:not_a_flow", "is a int, not an AgentDefinition or FlowDefinition"),
        ("nowhere.py:flow", "no file"),
        ("no_such_module_xyz:flow", "no module named 'no_such_module_xyz'"),
    ]:
        with pytest.raises(TargetError, match=message):
            import_target(ref, tmp_path)
