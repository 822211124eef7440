"""The response cache of model calls: an identical request is answered from an earlier answer.

A request's key is the SHA-256 of its canonical JSON (provider, server, model, system, messages,
parameters, output schema: what ``request.json`` records, without the timeout). Entries live in
one SQLite database, ``<run root>/.model-calls/cache.sqlite`` (WAL mode, so the processes of an
experiment read and write it at once), with the run and node that paid for the answer.

Each entry stores the SHA-256 of its answer; an entry whose answer does not match it, does not
parse or does not fit a :class:`~reprise.nodes.ModelResponse` is a miss (the call is
made and its answer replaces the entry), never an answer. A database file SQLite cannot read is
moved aside (``cache.sqlite.corrupt-<time>``) and a new one started.

Answers are stored after the node scrubbed credentials out of them, and the key never holds a
credential (the request record has none).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprise.nodes._providers import ModelResponse

__all__ = ["CACHE_FILE", "CachedAnswer", "ResponseCache", "request_key"]

#: The cache's database, in a run root's model-call directory.
CACHE_FILE = "cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    response TEXT NOT NULL,
    checksum TEXT NOT NULL,
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


def request_key(record: Mapping[str, Any]) -> str:
    """The cache key of a request record (as :class:`~reprise.nodes.AIModelNode` writes it to
    ``request.json``); the timeout is left out: it does not change the answer."""
    parameters = {k: v for k, v in (record.get("parameters") or {}).items() if k != "timeout"}
    canonical = json.dumps(
        {**record, "parameters": parameters}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """An answer from the cache, with the run and node that paid for it."""

    response: ModelResponse
    run_id: str
    path: str


class ResponseCache:
    """The cache database at ``path`` (made on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer for ``key``; ``None`` when there is none or it is damaged."""
        try:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT response, checksum, run_id, path FROM responses WHERE key = ?", (key,)
                ).fetchone()
        except sqlite3.DatabaseError:
            return None  # put() replaces an unreadable database
        if row is None:
            return None
        text, checksum, run_id, path = row
        if not isinstance(text, str) or hashlib.sha256(text.encode()).hexdigest() != checksum:
            return None
        try:
            fields = json.loads(text)
            fields["finish_reasons"] = tuple(fields.get("finish_reasons") or ())
            response = ModelResponse(**fields)
        except (ValueError, TypeError, AttributeError):
            return None
        return CachedAnswer(response, str(run_id), str(path))

    def put(self, key: str, response: ModelResponse, run_id: str, path: str) -> None:
        """Store the answer to ``key`` (replacing any entry: a damaged one included)."""
        text = json.dumps(dataclasses.asdict(response), ensure_ascii=False, sort_keys=True)
        row = (key, text, hashlib.sha256(text.encode()).hexdigest(), run_id, path, time.time())
        for tries_left in (1, 0):
            try:
                with self._connect() as conn:
                    conn.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?)", row)
                return
            except sqlite3.DatabaseError:
                if not tries_left or not self.path.exists():
                    raise
                self.path.replace(self.path.with_name(f"{self.path.name}.corrupt-{time.time_ns()}"))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(_SCHEMA)
            with conn:  # one transaction, committed on success
                yield conn
        finally:
            conn.close()
