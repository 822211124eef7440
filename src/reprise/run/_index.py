"""The run index: an SQLite file that makes listing thousands of runs fast.

``<run_root>/.index.sqlite`` (WAL mode, so listing never waits for a run being recorded, and
many processes can record runs at once) holds one row per run directory: the fields of its
``.trace/metadata.json`` that listings show and filter on, plus the file's modification time
and size.

The run directories stay the source of truth. Every listing first *syncs* the index with them:
it scans the run root (one ``scandir``) and stats each ``metadata.json``; a directory the index
lacks, or whose metadata changed since it was indexed, is read again, and rows whose directory is
gone are dropped. So the index can be deleted at any time, a corrupt one is rebuilt on the spot,
and runs written by a process that could not reach the index still show up. :class:`RunContext`
records a run when it starts and when it completes, which keeps that sync to a few stats.

A run indexed as ``running`` whose process is gone lists as ``crashed`` (the status is derived
at read time, like :meth:`RunDirectory.status`, never written).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from reprise.errors import RepriseError, RunFileError, RunSetupError
from reprise.run._directory import METADATA_FILE, RUN_ID_PATTERN, RunDirectory, RunMetadata
from reprise.run._names import is_relative_ref
from reprise.run._reading import read_run_json
from reprise.run._status import RunStatus, process_alive

__all__ = ["EXPERIMENT_TAG", "INDEX_FILE", "RunIndex", "RunInfo", "record_run"]

INDEX_FILE = ".index.sqlite"
#: The tag an experiment puts on each run it makes (its value: the experiment's name). Listings
#: leave those runs out unless asked, so a hundred-input experiment does not bury the others.
EXPERIMENT_TAG = "experiment"
T = TypeVar("T")
#: Bump when the table changes: an index with another version is dropped and rebuilt.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    root_component_id TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT,
    started_ts REAL,
    ended_at TEXT,
    duration_s REAL,
    error_msg TEXT,
    pid INTEGER,
    pid_start TEXT,
    host TEXT,
    previous_run_id TEXT,
    start_hierarchy_path TEXT,
    tags TEXT NOT NULL DEFAULT '{}',
    name TEXT,
    project TEXT NOT NULL,
    config TEXT,
    meta_mtime_ns INTEGER,
    meta_size INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_ts);
CREATE INDEX IF NOT EXISTS runs_by_name ON runs (project, name);
"""

_COLUMNS = (
    "run_id, root_component_id, status, started_at, started_ts, ended_at, duration_s, error_msg, pid, "
    "pid_start, host, previous_run_id, start_hierarchy_path, tags, name, project, config, meta_mtime_ns, meta_size"
)
_UPSERT = f"INSERT OR REPLACE INTO runs ({_COLUMNS}) VALUES ({','.join('?' * 19)})"
_SELECT = (
    "SELECT run_id, root_component_id, status, started_at, ended_at, duration_s, error_msg, pid, pid_start, "
    "host, previous_run_id, start_hierarchy_path, tags, name, project, config FROM runs"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunInfo:
    """One run as listings show it (``status`` reads ``crashed`` for a dead ``running`` run)."""

    run_id: str
    root_component_id: str
    status: RunStatus
    started_at: str | None
    ended_at: str | None = None
    duration_s: float | None = None
    error_msg: str | None = None
    previous_run_id: str | None = None
    start_hierarchy_path: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    #: The run's name, unique within its project (``None`` for runs from before names).
    name: str | None = None
    #: The run's project: the one it was given, else its root component id.
    project: str = ""
    #: The run's configuration (JSON data), if it was given one.
    config: dict[str, Any] | None = None
    #: The run root the run lives under.
    run_root: Path

    @property
    def run_dir(self) -> Path:
        """The run's directory."""
        # A property: building 10,000 Path objects would be a good part of a listing's time.
        return self.run_root / self.run_id

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``data`` rows of ``reprise runs --json``)."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "project": self.project,
            "root_component_id": self.root_component_id,
            "status": self.status.value,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_s": self.duration_s,
            "error_msg": self.error_msg,
            "previous_run_id": self.previous_run_id,
            "start_hierarchy_path": self.start_hierarchy_path,
            "tags": dict(self.tags),
            "config": self.config,
            "run_dir": os.path.join(self.run_root, self.run_id),
        }


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _row(meta: RunMetadata, st: os.stat_result) -> tuple[Any, ...]:
    return (
        meta.run_id,
        meta.root_component_id,
        meta.status.value,
        meta.started_at,
        _epoch(meta.started_at),
        meta.ended_at,
        meta.duration_s,
        meta.error_msg,
        meta.pid,
        meta.pid_start,
        meta.host,
        meta.previous_run_id,
        meta.start_hierarchy_path,
        json.dumps(meta.tags, sort_keys=True) if meta.tags else "{}",
        meta.name,
        meta.project_name,
        json.dumps(meta.config) if meta.config is not None else None,
        st.st_mtime_ns,
        st.st_size,
    )


def _statuses(status: RunStatus | str | Iterable[RunStatus | str] | None) -> set[RunStatus] | None:
    if status is None:
        return None
    items = [status] if isinstance(status, (str, RunStatus)) else list(status)
    out: set[RunStatus] = set()
    for item in items:
        try:
            out.add(RunStatus(str(item).lower()))
        except ValueError:
            valid = ", ".join(s.value for s in RunStatus)
            raise RepriseError(f"unknown run status {item!r}: use one of {valid}") from None
    return out


@dataclass(frozen=True, slots=True)
class _Cached:
    pid: int
    inode: int
    conn: sqlite3.Connection
    lock: threading.Lock


_CONNECTIONS: dict[str, _Cached] = {}
_CACHE_LOCK = threading.Lock()


_MAX_CONNECTIONS = 8


def _evict_idle(keep: str) -> None:
    """Close cached connections beyond the first few (oldest first), skipping any in use, so a
    process that touches many run roots (experiment workers) does not keep them all open.
    Called with ``_CACHE_LOCK`` held."""
    for key in list(_CONNECTIONS)[: max(0, len(_CONNECTIONS) - _MAX_CONNECTIONS)]:
        entry = _CONNECTIONS[key]
        if key == keep or not entry.lock.acquire(blocking=False):
            continue
        try:
            del _CONNECTIONS[key]
            if entry.pid == os.getpid():
                try:
                    entry.conn.close()
                except sqlite3.Error:
                    pass
        finally:
            entry.lock.release()


class RunIndex:
    """The index of the runs under ``run_root`` (see the module docstring).

    ::

        index = RunIndex(Path("runs"))
        for run in index.runs(status="failed", limit=20):
            print(run.run_id, run.error_msg)
    """

    def __init__(self, run_root: Path | str) -> None:
        self.run_root = Path(run_root).absolute()
        self.path = self.run_root / INDEX_FILE
        #: The runs the last sync could not list: their ``metadata.json`` is not valid.
        self.unreadable: list[RunFileError] = []

    # -- connection ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.DatabaseError(f"cannot switch {self.path} to WAL mode")
            # NORMAL is durable across process crashes in WAL mode; only power loss can lose the
            # last rows, and the index is rebuilt from the run directories anyway.
            conn.execute("PRAGMA synchronous = NORMAL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        conn.execute("DROP TABLE IF EXISTS runs")
                        for statement in _SCHEMA.split(";"):
                            if statement.strip():
                                conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _open(self) -> Iterator[sqlite3.Connection]:
        """A connection to a usable index, held for the ``with`` block.

        Connections are kept open per process and index file: closing the last connection to
        a WAL database checkpoints it, which would cost every run start and end a few
        milliseconds. A connection is never reused after a fork or once its file was replaced.
        A corrupt or unreadable file is deleted and made again (it holds nothing the run
        directories do not)."""
        key = str(self.path.absolute())
        with _CACHE_LOCK:
            entry = _CONNECTIONS.get(key)
            lock = entry.lock if entry is not None else threading.Lock()
        with lock:
            conn = self._cached(key, entry, lock)
            try:
                yield conn
            except sqlite3.DatabaseError:
                self._forget(key)
                raise

    def _cached(self, key: str, entry: _Cached | None, lock: threading.Lock) -> sqlite3.Connection:
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = None
        if entry is not None and entry.pid == os.getpid() and entry.inode == inode and inode is not None:
            return entry.conn
        if entry is not None:
            self._forget(key)
        try:
            conn = self._connect()
            conn.execute("SELECT count(*) FROM runs WHERE 0").fetchone()
        except sqlite3.OperationalError:
            # "database is locked" and the like: another process is busy with a good index.
            # Deleting it here would pull it from under them; let the caller fall back.
            raise
        except sqlite3.DatabaseError:
            self._delete_files()
            conn = self._connect()
        with _CACHE_LOCK:
            _CONNECTIONS[key] = _Cached(os.getpid(), os.stat(self.path).st_ino, conn, lock)
            _evict_idle(keep=key)
        return conn

    @staticmethod
    def _forget(key: str) -> None:
        with _CACHE_LOCK:
            entry = _CONNECTIONS.pop(key, None)
        if entry is not None and entry.pid == os.getpid():
            try:
                entry.conn.close()
            except sqlite3.Error:
                pass

    def _delete_files(self) -> None:
        self._forget(str(self.path.absolute()))
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass

    def _with_index(self, use: Callable[[sqlite3.Connection], T]) -> T:
        """``use(connection)``; a file found corrupt on the way is deleted and ``use`` tried
        once more on a fresh index. (Lock timeouts and I/O errors are not corruption: they
        propagate.)"""
        try:
            with self._open() as conn:
                return use(conn)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):
                raise
            self._delete_files()
            with self._open() as conn:
                return use(conn)

    # -- writing ---------------------------------------------------------------------------
    def record(self, run_dir: RunDirectory, metadata: RunMetadata | None = None) -> None:
        """Index (or re-index) one run from its metadata file."""
        st = os.stat(run_dir.metadata_path)
        meta = metadata if metadata is not None else run_dir.read_metadata()
        row = _row(meta, st)
        self._with_index(lambda conn: conn.execute(_UPSERT, row))

    def rebuild(self) -> int:
        """Empty the index and fill it again from the run directories; returns the number of
        runs indexed."""
        self._with_index(lambda conn: conn.execute("DELETE FROM runs"))
        return self.sync()

    def sync(self) -> int:
        """Bring the index in line with the run directories (see the module docstring);
        returns the number of runs indexed."""
        if not self.run_root.is_dir():
            return 0
        return self._with_index(self._sync)

    def _sync(self, conn: sqlite3.Connection) -> int:
        known = {
            run_id: (mtime, size)
            for run_id, mtime, size in conn.execute("SELECT run_id, meta_mtime_ns, meta_size FROM runs")
        }
        upserts, present = self._scan(known)
        gone = [run_id for run_id in known if run_id not in present]
        if upserts or gone:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_UPSERT, upserts)
                conn.executemany("DELETE FROM runs WHERE run_id = ?", [(r,) for r in gone])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(present)

    def _scan(self, known: Mapping[str, tuple[int, int]]) -> tuple[list[tuple[Any, ...]], set[str]]:
        """Rows for the run directories that are new or changed since ``known`` (run id to
        metadata mtime and size), and the ids of every run directory present."""
        upserts: list[tuple[Any, ...]] = []
        present: set[str] = set()
        self.unreadable = []
        try:
            entries = os.scandir(self.run_root)
        except FileNotFoundError:
            return upserts, present
        with entries:
            for entry in entries:
                name = entry.name
                if name not in known and not RUN_ID_PATTERN.match(name):
                    continue
                try:
                    st = os.stat(os.path.join(entry.path, ".trace", METADATA_FILE))
                except (FileNotFoundError, NotADirectoryError):
                    continue  # being created (metadata comes right after the mkdir) or not a run
                present.add(name)
                if known.get(name) == (st.st_mtime_ns, st.st_size):
                    continue
                try:
                    row = self._read_row(Path(entry.path), st)
                except RunFileError as exc:
                    # Not listed (nor kept with what it said before), never fatal: the
                    # listing says so.
                    self.unreadable.append(exc)
                    present.discard(name)
                    continue
                if row is not None:
                    upserts.append(row)
        return upserts, present

    @staticmethod
    def _read_row(path: Path, st: os.stat_result) -> tuple[Any, ...] | None:
        try:
            meta = read_run_json(path / ".trace" / METADATA_FILE, RunMetadata)
        except FileNotFoundError:
            return None
        if meta.run_id != path.name:
            return None
        return _row(meta, st)

    # -- reading ---------------------------------------------------------------------------
    def runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        root: str | None = None,
        tags: Mapping[str, str] | None = None,
        limit: int | None = None,
        experiments: bool = True,
        sync: bool = True,
        project: str | None = None,
        name: str | None = None,
    ) -> list[RunInfo]:
        """The runs under the run root, newest first, filtered by status (``crashed`` included),
        root component id, tags (every given tag must match), project and name; without
        ``experiments``, the runs an experiment made (those tagged :data:`EXPERIMENT_TAG`) are
        left out.

        If the index cannot be used at all (a read-only run root, a file system without the
        locks SQLite needs), the run directories are read directly: slower, same answer."""
        wanted = _statuses(status)
        sql = _SELECT
        clauses: list[str] = []
        params: list[Any] = []
        # running and crashed both sit in the table as 'running'; which one is decided per row.
        derived = wanted is not None and bool(wanted & {RunStatus.RUNNING, RunStatus.CRASHED})
        if wanted is not None:
            stored = {s.value for s in wanted if s not in (RunStatus.RUNNING, RunStatus.CRASHED)}
            if derived:
                stored.add(RunStatus.RUNNING.value)
            clauses.append(f"status IN ({','.join('?' * len(stored))})")
            params += sorted(stored)
        for column, value in (("root_component_id", root), ("project", project), ("name", name)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if not experiments:
            clauses.append(f"json_extract(tags, '$.{EXPERIMENT_TAG}') IS NULL")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_ts DESC, run_id DESC"
        post_filter = derived or bool(tags)
        if limit is not None and not post_filter:
            sql += " LIMIT ?"
            params.append(int(limit))

        def query(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            if sync and self.run_root.is_dir():
                self._sync(conn)
            return conn.execute(sql, params).fetchall()

        try:
            rows = self._with_index(query)
        except (sqlite3.Error, OSError):
            rows = self._rows_without_index(root, project, name)
        out: list[RunInfo] = []
        for row in rows:
            info = self._info(row)
            if wanted is not None and info.status not in wanted:
                continue
            if tags and any(info.tags.get(k) != v for k, v in tags.items()):
                continue
            if not experiments and EXPERIMENT_TAG in info.tags:
                continue  # read without the index: not filtered yet
            out.append(info)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _rows_without_index(self, root: str | None, project: str | None, name: str | None) -> list[tuple[Any, ...]]:
        upserts, _ = self._scan({})
        # Full rows are (run_id, root, status, started_at, started_ts, ended_at, duration_s,
        # error_msg, pid, pid_start, host, previous_run_id, start_path, tags, name, project,
        # config, mtime, size); _info takes the _SELECT columns, which drop started_ts, mtime
        # and size.
        upserts.sort(key=lambda r: (r[4] or 0.0, r[0]), reverse=True)
        return [
            r[:4] + r[5:17]
            for r in upserts
            if (root is None or r[1] == root)
            and (project is None or r[15] == project)
            and (name is None or r[14] == name)
        ]

    def name_taken(self, project: str, name: str, *, sync: bool = True) -> bool:
        """Whether a run of ``project`` under the run root is named ``name``. ``sync=False``
        trusts the index as it is (runs record themselves there when they start)."""
        return bool(self.runs(project=project, name=name, limit=1, sync=sync))

    def resolve(self, ref: str, *, project: str | None = None) -> RunInfo:
        """The run that ``ref`` names, of ``project`` if given: what every command taking a RUN
        argument accepts.

        In this order: a run id; ``latest`` (also ``-1``), ``-2`` the run before it, and so
        on (newest first, as ``reprise runs`` lists them); a run name; a prefix of exactly one
        run's id or name. An unknown reference, or a prefix of several runs (they are listed),
        is a :class:`~reprise.errors.RunSetupError` saying so."""
        text = ref.strip() if isinstance(ref, str) else ""
        if not text:
            raise RunSetupError(f"no run given: expected a run id, a run name, 'latest' or -N, got {ref!r}")
        where = f"under {self.run_root}" + (f" in project {project!r}" if project is not None else "")
        if RUN_ID_PATTERN.match(text) and (self.run_root / text / ".trace" / METADATA_FILE).is_file():
            info = self.get(text)
            if project is None or info.project == project:
                return info
            raise RunSetupError(f"run {text} is in project {info.project!r}, not {project!r}", run_id=text)
        runs = self.runs(project=project)
        if is_relative_ref(text):
            back = 1 if text == "latest" else -int(text)
            if back < 1:
                raise RunSetupError(f"{text!r}: count runs back from -1 (the newest), -2 (the one before)...")
            if back > len(runs):
                raise RunSetupError(f"{text!r}: there are only {len(runs)} run(s) {where}")
            return runs[back - 1]
        named = [r for r in runs if r.name == text]
        if len(named) == 1:
            return named[0]
        candidates = named or [r for r in runs if r.run_id.startswith(text) or (r.name or "").startswith(text)]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise RunSetupError(
                f"no run {text!r} {where}: not a run id, a run name, 'latest'/-N, or the start of one "
                "('reprise runs' lists them)"
            )
        shown = ", ".join(f"{r.name} ({r.run_id}, {r.project})" if r.name else r.run_id for r in candidates[:10])
        more = f" and {len(candidates) - 10} more" if len(candidates) > 10 else ""
        raise RunSetupError(f"{text!r} is ambiguous {where}: it could be {shown}{more}; give more of it")

    def get(self, run_id: str) -> RunInfo:
        """One run, read from its directory (and re-indexed); :class:`RunSetupError` if absent."""
        run_dir = RunDirectory.find(self.run_root, run_id)
        try:
            self.record(run_dir)
        except (OSError, sqlite3.Error):
            pass  # the listing syncs later; reading one run never depends on the index
        meta = run_dir.read_metadata()
        status = run_dir.status() if meta.status is RunStatus.RUNNING else meta.status
        return RunInfo(
            run_id=meta.run_id,
            root_component_id=meta.root_component_id,
            status=status,
            started_at=meta.started_at,
            ended_at=meta.ended_at,
            duration_s=meta.duration_s,
            error_msg=meta.error_msg,
            previous_run_id=meta.previous_run_id,
            start_hierarchy_path=meta.start_hierarchy_path,
            tags=dict(meta.tags),
            name=meta.name,
            project=meta.project_name,
            config=meta.config,
            run_root=run_dir.path.parent,
        )

    def _info(self, row: tuple[Any, ...]) -> RunInfo:
        (
            run_id,
            root_id,
            status,
            started_at,
            ended_at,
            duration_s,
            error_msg,
            pid,
            pid_start,
            host,
            prev,
            start,
            tags,
            name,
            project,
            config,
        ) = row
        run_status = RunStatus(status)
        if run_status is RunStatus.RUNNING and not process_alive(pid, host, pid_start):
            run_status = RunStatus.CRASHED
        return RunInfo(
            run_id=run_id,
            root_component_id=root_id,
            status=run_status,
            started_at=started_at,
            ended_at=ended_at,
            duration_s=duration_s,
            error_msg=error_msg,
            previous_run_id=prev,
            start_hierarchy_path=start,
            tags=json.loads(tags) if tags != "{}" else {},
            name=name,
            project=project,
            config=json.loads(config) if config is not None else None,
            run_root=self.run_root,
        )


def record_run(run_dir: RunDirectory, metadata: RunMetadata) -> None:
    """Index a run that just started or completed (called by :class:`RunContext`).

    Never raises: the index is a cache, and a run must not fail because its run root's index
    is locked, read-only or on a file system without the locking WAL needs; the next listing
    picks the run up from its directory."""
    try:
        RunIndex(run_dir.path.parent).record(run_dir, metadata)
    except Exception:
        pass
