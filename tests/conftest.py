"""Shared fixtures. Every async test runs on both anyio backends (asyncio and trio)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reprise import RunContext


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_context(tmp_path: Path) -> Callable[..., RunContext]:
    """``make_context(root_id, **kwargs)``: a RunContext whose project root is ``tmp_path``."""

    def make(root_component_id: str = "root", **kwargs: Any) -> RunContext:
        kwargs.setdefault("project_root", tmp_path)
        return RunContext(root_component_id=root_component_id, **kwargs)

    return make
