"""Atomic writes for the built-in node kinds.

Node kinds sit below the run layer (they import only the DSL), so they do not use its writer;
what they write (user files, a node's ``request.json``) needs no more than a unique temporary
in the same directory renamed over the target, so that nobody reads a torn file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import pydantic_core

__all__ = ["write_bytes_atomic", "write_json_atomic"]


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` beside ``path`` and rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON (as the run's own files are), atomically."""
    write_bytes_atomic(path, pydantic_core.to_json(data, indent=2) + b"\n")
