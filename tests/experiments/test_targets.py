"""MODULE:OBJECT references, shared by the CLI and experiments."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprise import FlowDefinition
from reprise._targets import import_target
from reprise.errors import TargetError


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
        ("flows.py:not_a_flow", "is a int, not a flow, an agent or a function"),
        ("nowhere.py:flow", "no file"),
        ("no_such_module_xyz:flow", "no module named 'no_such_module_xyz'"),
    ]:
        with pytest.raises(TargetError, match=message):
            import_target(ref, tmp_path)


def test_threads_loading_the_same_file_target_all_get_it(tmp_path: Path) -> None:
    """Dask workers with several threads load a file target from many threads at once: none may
    see the module before its body has run (the body sleeps to keep that window open)."""
    import threading

    (tmp_path / "slow_flows.py").write_text(
        "import time\n"
        "from reprise import FlowDefinition\n"
        "time.sleep(0.3)\n"
        "flow = FlowDefinition('slow').node('a', lambda: 1)\n"
    )
    barrier = threading.Barrier(8)
    got: list[object] = []

    def load() -> None:
        barrier.wait()
        try:
            got.append(import_target("slow_flows.py:flow", tmp_path))
        except TargetError as exc:
            got.append(exc)

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [type(obj).__name__ for obj in got] == ["FlowDefinition"] * 8
    assert len({id(obj) for obj in got}) == 1  # one module, loaded once
