"""The outcome repository: every run's outcomes committed to git, one branch per run.

``<run_root>/outcome/<project>/`` is an ordinary git repository. Run ``R`` gets the branch
``run/R`` whose tree mirrors the run directory's element paths: every node's ``outcome.json``
at its hierarchy path, plus files nodes declared as outcomes. A re-run's first commit has the
previous run's commit as parent, so ``git diff run/A run/B`` shows what changed.

No working tree is ever checked out and no shared index is used: each commit is built with
plumbing (``hash-object``, ``update-index`` on a private temporary index, ``write-tree``,
``commit-tree``) and published with ``update-ref`` given the expected old value, so many
processes can commit under one run root at the same time without ``index.lock`` failures or
lost commits. Commits carry the configured author (default ``reprise``), never the machine's
git identity.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.errors import RunSetupError

if TYPE_CHECKING:
    import git

__all__ = ["OutcomeFile", "OutcomeRepository", "OutcomeSettings"]

_MAX_PACKS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeSettings:
    """How (and whether) a run's outcomes are committed to git.

    Args:
        enabled: commit outcomes at all.
        path: the repository; default ``<run_root>/outcome/<project_root name>``.
        author_name / author_email: the identity on every commit.
        commit_per_node: also make one commit per node (in the order nodes finished), before
            the run's final commit, so ``git log run/<id>`` tells the run's story.
    """

    enabled: bool = True
    path: Path | None = None
    author_name: str = "reprise"
    author_email: str = "reprise@localhost"
    commit_per_node: bool = False


@dataclass(frozen=True, slots=True)
class OutcomeFile:
    """A file to commit: ``source`` on disk, stored at ``repo_path`` in the run's tree."""

    source: Path
    repo_path: str
    node_path: str = ""
    order: float = 0.0


class OutcomeRepository:
    """A git repository of run outcomes (see the module docstring)."""

    def __init__(self, path: Path, settings: OutcomeSettings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or OutcomeSettings()
        self._repo: git.Repo | None = None

    # -- set-up ----------------------------------------------------------------------------
    def ensure(self) -> git.Repo:
        """Open the repository, creating it (safely against concurrent creators) if needed."""
        if self._repo is not None:
            return self._repo
        import git  # GitPython costs ~40 ms to import: only when a run commits

        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.parent / f".{self.path.name}.init.lock"
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if (self.path / ".git").is_dir() or (self.path / "HEAD").is_file():
                    repo = git.Repo(self.path)
                else:
                    repo = git.Repo.init(self.path, initial_branch="main")
            except git.GitError as exc:
                raise RunSetupError(f"cannot open outcome repository {self.path}: {exc}") from exc
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._repo = repo
        return repo

    def _env(self) -> dict[str, str]:
        s = self.settings
        env = {
            "GIT_AUTHOR_NAME": s.author_name,
            "GIT_AUTHOR_EMAIL": s.author_email,
            "GIT_COMMITTER_NAME": s.author_name,
            "GIT_COMMITTER_EMAIL": s.author_email,
            # Never read the machine's or the user's git configuration for identity or hooks.
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }
        return env

    # -- reading ---------------------------------------------------------------------------
    @staticmethod
    def branch(run_id: str) -> str:
        """The branch name of a run."""
        return f"run/{run_id}"

    def head_of(self, run_id: str) -> str | None:
        """The commit at the tip of ``run/<run_id>``, or ``None``."""
        import git

        repo = self.ensure()
        try:
            out: str = repo.git.rev_parse(
                "--verify", "-q", f"refs/heads/{self.branch(run_id)}^{{commit}}", env=self._env()
            )
        except git.GitCommandError:
            return None
        return out.strip() or None

    def changed_files(self, run_a: str, run_b: str) -> list[tuple[str, str]]:
        """``(status, path)`` for every file that differs between two runs' branches
        (status ``A`` added, ``D`` deleted, ``M`` modified)."""
        repo = self.ensure()
        for rid in (run_a, run_b):
            if self.head_of(rid) is None:
                raise RunSetupError(f"no outcome branch for run {rid} in {self.path}", run_id=rid)
        out: str = repo.git.diff(
            "--name-status", "--no-renames", self.branch(run_a), self.branch(run_b), "--", env=self._env()
        )
        rows = []
        for line in out.splitlines():
            status, _, path = line.partition("\t")
            rows.append((status.strip(), path))
        return rows

    # -- writing ---------------------------------------------------------------------------
    def commit_run(
        self,
        run_id: str,
        files: Sequence[OutcomeFile],
        *,
        message: str,
        parent_run_id: str | None = None,
    ) -> str:
        """Commit ``files`` as the tree of ``run/<run_id>`` and return the final commit.

        One ``git fast-import`` writes every blob, tree and commit into a single pack on a
        private staging ref (thousands of loose objects cost ~0.7 ms each here; a pack costs
        a fraction of that), then one ``git update-ref --stdin`` transaction creates
        ``run/<run_id>`` - refusing if it already exists - and drops the staging ref, so two
        processes can never overwrite each other's run."""
        import git

        repo = self.ensure()
        parent = self.head_of(parent_run_id) if parent_run_id else None
        staging = f"refs/reprise/staging/{run_id}"
        env = self._env()
        with tempfile.TemporaryDirectory(prefix="reprise-commit-") as tmp:
            marks = os.path.join(tmp, "marks")
            stream_path = os.path.join(tmp, "stream")
            last_mark = self._write_stream(stream_path, staging, files, message, parent)
            try:
                with open(stream_path, "rb") as stream:
                    repo.git.fast_import("--quiet", "--done", f"--export-marks={marks}", istream=stream, env=env)
                commit = _mark(marks, last_mark)
                with tempfile.TemporaryFile() as tx:
                    tx.write(f"create refs/heads/{self.branch(run_id)} {commit}\ndelete {staging}\n".encode())
                    tx.seek(0)
                    repo.git.update_ref("--stdin", "-m", f"reprise: {run_id}", istream=tx, env=env)
            except git.GitCommandError as exc:
                raise RunSetupError(f"cannot commit outcomes of {run_id} to {self.path}: {exc.stderr or exc}") from exc
        self._maybe_compact(repo)
        return commit

    def _write_stream(self, path: str, ref: str, files: Sequence[OutcomeFile], message: str, parent: str | None) -> int:
        """Write the fast-import stream; returns the mark of the final commit."""
        s = self.settings
        ident = f"{s.author_name} <{s.author_email}> {int(time.time())} +0000\n".encode()
        mark = 0
        with open(path, "wb") as out:

            def commit(msg: str, entries: Iterable[OutcomeFile]) -> None:
                nonlocal mark, parent
                mark += 1
                body = msg.encode()
                out.write(f"commit {ref}\nmark :{mark}\n".encode())
                out.write(b"author " + ident + b"committer " + ident)
                out.write(b"data %d\n" % len(body) + body + b"\n")
                if parent is not None:
                    out.write(f"from {parent}\n".encode())
                    parent = None  # later commits follow the staging ref's own tip
                for f in entries:
                    if "\n" in f.repo_path or f.repo_path.startswith('"'):
                        raise RunSetupError(f"cannot commit a file named {f.repo_path!r}")
                    data = f.source.read_bytes()
                    out.write(f"M 100644 inline {f.repo_path}\n".encode())
                    out.write(b"data %d\n" % len(data) + data + b"\n")

            if s.commit_per_node:
                for node_path, group in _by_node(files):
                    commit(f"node {node_path}", group)
                commit(message, ())
            else:
                commit(message, files)
            out.write(b"done\n")
        return mark

    def _maybe_compact(self, repo: git.Repo) -> None:
        """Each commit adds one pack; fold them together once there are many, so lookups (diffs,
        re-run parents) stay fast. Cheap check: count the pack files."""
        try:
            packs = sum(
                1 for e in os.scandir(os.path.join(repo.git_dir, "objects", "pack")) if e.name.endswith(".pack")
            )
        except OSError:
            return
        if packs > _MAX_PACKS:
            import git

            try:
                # -A -d folds every pack into one; unreachable objects (another process's
                # fast-import not yet behind a ref) are kept loose, never deleted.
                repo.git.repack("-A", "-d", "-q", env=self._env())
            except git.GitCommandError:
                pass  # another process may be repacking; the next commit tries again


def _mark(marks_file: str, mark: int) -> str:
    with open(marks_file) as f:
        for line in f:
            name, _, sha = line.strip().partition(" ")
            if name == f":{mark}":
                return sha
    raise RunSetupError(f"git fast-import did not report commit :{mark}")


def _by_node(files: Sequence[OutcomeFile]) -> list[tuple[str, list[OutcomeFile]]]:
    """Files grouped by node, nodes in the order they finished."""
    groups: dict[str, list[OutcomeFile]] = {}
    order: dict[str, float] = {}
    for f in files:
        key = f.node_path or f.repo_path
        groups.setdefault(key, []).append(f)
        order[key] = max(order.get(key, 0.0), f.order)
    return sorted(groups.items(), key=lambda item: (order[item[0]], item[0]))


def collect_outcome_files(
    run_root_dir: Path, declared: Iterable[OutcomeFile] = (), *, with_order: bool = False
) -> list[OutcomeFile]:
    """Every node's ``outcome.json`` under a run directory (at its path relative to the run
    directory), plus ``declared`` files. ``with_order`` reads each node's end time so
    per-node commits follow the order nodes finished."""
    from reprise.run.files import read_json

    files: list[OutcomeFile] = []
    top_skip = {".trace", "static_inputs"}
    base = str(run_root_dir)
    for dirpath, dirnames, filenames in os.walk(base):
        if dirpath == base:
            dirnames[:] = [d for d in dirnames if d not in top_skip]
        dirnames.sort()
        if "outcome.json" not in filenames:
            continue
        rel = os.path.relpath(dirpath, base)
        order = 0.0
        if with_order:
            try:
                result = read_json(Path(dirpath) / "result.json")
                order = float(result.get("duration_s", 0.0)) + _epoch(result.get("started_at"))
            except (OSError, ValueError):
                order = 0.0
        files.append(
            OutcomeFile(Path(dirpath) / "outcome.json", f"{rel}/outcome.json", rel.replace(os.sep, "."), order)
        )
    seen = {f.repo_path for f in files}
    for f in declared:
        if f.repo_path not in seen and f.source.is_file():
            files.append(f)
            seen.add(f.repo_path)
    return files


def _epoch(stamp: Any) -> float:
    from datetime import datetime

    if not isinstance(stamp, str):
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
