"""Assemble one self-contained HTML page: markup, CSS, JavaScript and data, all inline.

Data goes in ``<script type="application/json">`` blocks. JSON text can hold ``</script>``
(a node may return it), which would end the block early and let the rest run as markup; so
``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e`` and ``\\u0026`` (still the same
JSON to ``JSON.parse``), and U+2028/U+2029 are escaped too. The page's scripts render every
value with ``textContent``, never as markup.

A Content-Security-Policy admits only the page's own inline scripts (by hash) and styles, and
no fetch of any kind (``default-src 'none'``): the page cannot load anything from a network,
and a script that somehow got into the data would not run.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any

__all__ = ["embed_json", "render_page"]

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_TABLE = str.maketrans(_ESCAPES)


def embed_json(data: Any) -> str:
    """``data`` as JSON text that is safe inside a ``<script type="application/json">`` block.

    >>> embed_json({"x": "</script>"})
    '{"x":"\\\\u003c/script\\\\u003e"}'
    """
    try:
        # allow_nan=False: NaN/Infinity are not JSON and would make JSON.parse throw in the page.
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=str)
    return text.translate(_TABLE)


def _finite(data: Any) -> Any:
    """``data`` with NaN and infinities (which Python's json reads and writes) as ``None``."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


@cache
def _asset(name: str) -> str:
    return files("reprise.view").joinpath("assets", name).read_text(encoding="utf-8")


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def render_page(*, title: str, data: dict[str, Any], script: str) -> str:
    """The HTML of a page titled ``title`` whose ``script`` asset (``run.js`` or
    ``experiment.js``) renders the JSON blocks in ``data`` (block id -> data)."""
    code = _asset("common.js") + "\n" + _asset(script)
    blocks = "\n".join(
        f'<script type="application/json" id="{html.escape(block_id)}">{embed_json(value)}</script>'
        for block_id, value in data.items()
    )
    csp = f"default-src 'none'; script-src {_hash(code)}; style-src 'unsafe-inline'; img-src data:"
    page = Template(_asset("page.html")).substitute(
        title=html.escape(title),
        csp=html.escape(csp),
        css=_asset("view.css"),
        data=blocks,
        script=code,
    )
    return page
