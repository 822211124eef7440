"""Field access inside outcomes (Ref fields) is confined to data."""

from __future__ import annotations

import pytest
from pydantic import BaseModel


def test_ref_field_access_reads_data_fields_only() -> None:
    from dataclasses import dataclass

    from reprise.dsl._sources import access
    from reprise.errors import NodeInputError

    class Model(BaseModel):
        name: str

    @dataclass
    class Point:
        x: int

    assert access({"a": [Model(name="n")]}, ["a", "0", "name"], what="t") == "n"
    assert access(Point(3), ["x"], what="t") == 3
    for value, field in [
        (Model(name="n"), "model_dump"),
        (Model(name="n"), "_private"),
        ("text", "upper"),
        (Point(1), "__class__"),
    ]:
        with pytest.raises(NodeInputError):
            access(value, [field], what="t")
