"""The outcome repository: every run's outcomes committed to git, one branch per run.

``<run_root>/outcome/<project>/`` is an ordinary git repository, in whichever object format
``git init`` made it (SHA-1 or SHA-256). Run ``R`` gets the branch ``run/R`` whose tree mirrors
the run directory's element paths: every node's ``outcome.json`` at its hierarchy path, plus
files nodes declared as outcomes. A re-run's commit has the earlier run's commit as parent and
keeps the outcomes it reused, so ``git diff run/A run/B`` shows what changed.

All of reprise's git access is here, on GitPython: :meth:`OutcomeRepository.open` gives a
``git.Repo`` whose command wrapper (``repo.git``) runs every command (refs, diffs, ``show``,
``fast-import``). GitPython's object model reads SHA-1 objects only, so it is not used. Every
``Repo`` is closed when its block ends: an open one keeps ``git cat-file`` processes alive.

A run's outcomes are committed once, when it completes, by one ``git fast-import`` fed the files
the run wrote; it creates ``run/<run_id>`` at the end of its input. No working tree is checked
out and no shared index is used, and a branch is never moved (fast-import refuses to move one),
so many processes commit to one repository at the same time without ``index.lock`` failures or
lost commits. Commits carry the configured author (default ``reprise``), never the machine's git
identity, and git reads no global or system configuration. Each commit is one pack; folding
packs is git's job: ``git gc --auto`` after each commit (which folds them in the background once
there are many), ``reprise gc`` (:meth:`OutcomeRepository.gc`) to do it now.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from reprise.dsl._paths import git_path_problem
from reprise.errors import RunSetupError

if TYPE_CHECKING:
    import git

__all__ = [
    "OutcomeCommit",
    "OutcomeFile",
    "OutcomeRepository",
    "OutcomeSettings",
    "collect_outcome_files",
    "listed_outcome_files",
]


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
    """A file to commit: ``source`` on disk, stored at ``repo_path`` in the run's tree, the
    outcome of the node at hierarchy path ``node_path`` (``order``: when it finished)."""

    source: Path | str
    repo_path: str
    node_path: str = ""
    order: float = 0.0


@dataclass(frozen=True, slots=True)
class OutcomeCommit:
    """A run's commit, and the files it left out because git refuses their names (with why)."""

    commit: str
    refused: tuple[tuple[OutcomeFile, str], ...] = ()


class OutcomeRepository:
    """A git repository of run outcomes (see the module docstring)."""

    def __init__(self, path: Path | str, settings: OutcomeSettings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or OutcomeSettings()

    @staticmethod
    def branch(run_id: str) -> str:
        """The branch name of a run."""
        return f"run/{run_id}"

    @contextmanager
    def open(self, *, create: bool = True) -> Iterator[git.Repo]:
        """The repository as a ``git.Repo`` (created first if missing and ``create``), closed
        when the block ends. Its commands run with the configured identity and without the
        user's or the system's git configuration."""
        import git  # GitPython runs ``git version`` when imported: only when git is needed

        if create:
            self._create()
        try:
            repo = git.Repo(self.path)
        except (git.GitError, OSError) as exc:
            raise RunSetupError(f"cannot open outcome repository {self.path}: {exc}") from exc
        try:
            repo.git.update_environment(**self._env())
            yield repo
        finally:
            repo.close()

    def _create(self) -> None:
        """``git init`` the repository unless it exists, safely against concurrent creators."""
        import git

        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True)
            # Always under the lock: another process may be half-way through ``git init`` (a
            # ``.git`` directory exists before it is a repository).
            with open(path.parent / f".{path.name}.init.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not ((path / ".git").is_dir() or (path / "HEAD").is_file()):
                    git.Repo.init(path, initial_branch="main", quiet=True, env=self._env()).close()
        except (git.GitError, OSError) as exc:
            raise RunSetupError(f"cannot create outcome repository {path}: {exc}") from exc

    def _env(self) -> dict[str, str]:
        s = self.settings
        return {
            "GIT_AUTHOR_NAME": s.author_name,
            "GIT_AUTHOR_EMAIL": s.author_email,
            "GIT_COMMITTER_NAME": s.author_name,
            "GIT_COMMITTER_EMAIL": s.author_email,
            # Never the machine's or the user's git configuration (identity, hooks, filters).
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
        }

    # -- reading ---------------------------------------------------------------------------
    def head_of(self, run_id: str) -> str | None:
        """The commit at the tip of ``run/<run_id>``, or ``None``."""
        with self.open() as repo:
            return _tip(repo, run_id)

    def changed_files(self, run_a: str, run_b: str) -> list[tuple[str, str]]:
        """``(status, path)`` for every file that differs between two runs' branches
        (status ``A`` added, ``D`` deleted, ``M`` modified)."""
        import git

        with self.open(create=False) as repo:
            for rid in (run_a, run_b):
                if _tip(repo, rid) is None:
                    raise RunSetupError(f"no outcome branch for run {rid} in {self.path}", run_id=rid)
            try:
                out: str = repo.git.diff(
                    "--name-status", "--no-renames", "-z", self.branch(run_a), self.branch(run_b), "--"
                )
            except git.GitCommandError as exc:
                raise RunSetupError(f"git diff failed in {self.path}: {_stderr(exc)}") from exc
        fields = out.split("\0")
        return [(fields[i].strip(), fields[i + 1]) for i in range(0, len(fields) - 1, 2)]

    def show(self, run_id: str, path: str) -> str:
        """The text of ``path`` in the tree of ``run/<run_id>``."""
        import git

        with self.open(create=False) as repo:
            try:
                text: str = repo.git.show(f"{self.branch(run_id)}:{path}")
            except git.GitCommandError as exc:
                raise RunSetupError(f"cannot read {path} of run {run_id} in {self.path}: {_stderr(exc)}") from exc
        return text

    # -- writing ---------------------------------------------------------------------------
    def commit_run(
        self,
        run_id: str,
        files: Sequence[OutcomeFile],
        *,
        message: str,
        parent_run_id: str | None = None,
        reused: Collection[str] = (),
    ) -> OutcomeCommit:
        """Commit ``files`` as the tree of ``run/<run_id>`` with one ``git fast-import``.

        With ``parent_run_id`` (a re-run) the commit's parent is that run's commit, and the
        outcome of a node in ``reused`` (hierarchy paths) that the parent's tree holds at the
        same place is kept from it. A file that no longer exists is left out; so is one whose
        name git refuses (:func:`~reprise.dsl._paths.git_path_problem`), reported in
        :attr:`OutcomeCommit.refused`."""
        import git

        refused = tuple((f, problem) for f in files if (problem := git_path_problem(f.repo_path)) is not None)
        if refused:
            left_out = {id(f) for f, _ in refused}
            files = [f for f in files if id(f) not in left_out]
        with self.open() as repo:
            parent = _tip(repo, parent_run_id) if parent_run_id is not None else None
            try:
                parent_files: set[str] = set()
                if parent is not None:
                    listing: str = repo.git.ls_tree("-r", "-z", "--name-only", parent)
                    parent_files = {name for name in listing.split("\0") if name}
                with tempfile.TemporaryFile() as stream:
                    last_mark = self._write_stream(stream, run_id, files, message, parent, parent_files, reused)
                    stream.seek(0)
                    # unpackLimit=0: keep the commit's pack as it is; below the limit git would
                    # start a second process to turn a small one into loose objects.
                    command = repo.git(c="fastimport.unpackLimit=0")
                    out: str = command.fast_import("--quiet", "--done", istream=stream)
            except git.GitCommandError as exc:
                raise RunSetupError(
                    f"cannot commit outcomes of {run_id} in {self.path}: {_stderr(exc)}", run_id=run_id
                ) from exc
            try:
                # What git commands that write do: fold the packs once there are many (in the
                # background, detached), and return at once otherwise.
                repo.git.gc("--auto", "--quiet")
            except git.GitCommandError:
                pass  # the commit is made; folding is tried again after the next one
        commit = out.strip().rsplit("\n", 1)[-1]
        if not commit:
            raise RunSetupError(f"git fast-import did not report commit :{last_mark} for {run_id}", run_id=run_id)
        return OutcomeCommit(commit, refused)

    def _write_stream(
        self,
        out: IO[bytes],
        run_id: str,
        files: Sequence[OutcomeFile],
        message: str,
        parent: str | None,
        parent_files: set[str],
        reused: Collection[str],
    ) -> int:
        """Write the fast-import stream of the run's commit (one per node first, with
        ``commit_per_node``) to ``out``; returns the mark of the last commit."""
        s = self.settings
        ident = f"{s.author_name} <{s.author_email}> {int(time.time())} +0000\n".encode()
        ref = f"refs/heads/{self.branch(run_id)}".encode()
        ours = {f.repo_path for f in files}
        mark = 0

        def commit(text: str, entries: Iterable[OutcomeFile]) -> None:
            nonlocal mark
            mark += 1
            body = text.encode()
            out.write(b"commit %s\nmark :%d\nauthor %scommitter %s" % (ref, mark, ident, ident))
            out.write(b"data %d\n%s\n" % (len(body), body))
            if mark == 1 and parent is not None:
                # From the parent's tree, without what this run does not hold (the branch
                # the earlier run took, say).
                out.write(b"from %s\n" % parent.encode())
                out.writelines(b"D %s\n" % _quoted(name) for name in sorted(parent_files - ours))
            for f in entries:
                if f.node_path in reused and f.repo_path in parent_files:
                    continue  # the parent's tree has this reused outcome already
                try:
                    with open(f.source, "rb") as fh:
                        data = fh.read()
                except FileNotFoundError:
                    if f.repo_path in parent_files:
                        out.write(b"D %s\n" % _quoted(f.repo_path))  # not the parent's version
                    continue
                out.write(b"M 100644 inline %s\ndata %d\n" % (_quoted(f.repo_path), len(data)))
                out.write(data)
                out.write(b"\n")
            out.write(b"\n")

        if s.commit_per_node:
            for node_path, group in _by_node(files):
                commit(f"node {node_path}", group)
            commit(message, ())
        else:
            commit(message, files)
        out.write(b"get-mark :%d\ndone\n" % mark)
        return mark

    # -- upkeep ----------------------------------------------------------------------------
    def gc(self) -> dict[str, Any]:
        """Fold the repository's loose objects and packs (``git gc``); what ``git count-objects``
        says before and after."""
        import git

        with self.open(create=False) as repo:
            before = _count_objects(repo)
            try:
                repo.git.gc("--quiet")
            except git.GitCommandError as exc:
                raise RunSetupError(f"git gc failed in {self.path}: {_stderr(exc)}") from exc
            after = _count_objects(repo)
        return {"repository": str(self.path), "before": before, "after": after}


def _tip(repo: git.Repo, run_id: str) -> str | None:
    import git

    try:
        out: str = repo.git.rev_parse("--verify", "-q", f"refs/heads/{OutcomeRepository.branch(run_id)}^{{commit}}")
    except git.GitCommandError:
        return None
    return out.strip() or None


def _count_objects(repo: git.Repo) -> dict[str, int]:
    out: str = repo.git.count_objects("-v")
    counts = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            counts[key.strip().replace("-", "_")] = int(value)
    return counts


def _stderr(exc: git.GitCommandError) -> str:
    text = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    return text.strip().removeprefix("stderr:").strip(" '\n") or f"exit status {exc.status}"


def _quoted(repo_path: str) -> bytes:
    """``repo_path`` in fast-import's C-style quotes."""
    quoted = repo_path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return b'"%s"' % quoted.encode()


def _by_node(files: Sequence[OutcomeFile]) -> list[tuple[str, list[OutcomeFile]]]:
    """Files grouped by node, nodes in the order they finished."""
    groups: dict[str, list[OutcomeFile]] = {}
    order: dict[str, float] = {}
    for f in files:
        key = f.node_path or f.repo_path
        groups.setdefault(key, []).append(f)
        order[key] = max(order.get(key, 0.0), f.order)
    return sorted(groups.items(), key=lambda item: (order[item[0]], item[0]))


def listed_outcome_files(
    run_root_dir: Path | str, node_paths: Iterable[str], declared: Iterable[OutcomeFile] = ()
) -> list[OutcomeFile]:
    """The ``outcome.json`` of each node in ``node_paths`` (hierarchy paths, in the order the
    nodes finished), plus ``declared`` files: what the executor knows the run holds, so the
    run directory need not be walked."""
    base = str(run_root_dir)
    files: list[OutcomeFile] = []
    seen: set[str] = set()
    for order, path in enumerate(node_paths):
        repo_path = path.replace(".", "/") + "/outcome.json"  # ids never contain dots
        if repo_path not in seen:
            seen.add(repo_path)
            files.append(OutcomeFile(f"{base}/{repo_path}", repo_path, path, float(order)))
    return _with_declared(files, seen, declared)


def collect_outcome_files(
    run_root_dir: Path, declared: Iterable[OutcomeFile] = (), *, with_order: bool = False
) -> list[OutcomeFile]:
    """Every node's ``outcome.json`` under a run directory (at its path relative to the run
    directory; a reused node's through its link), plus ``declared`` files. ``with_order`` reads
    each node's end time so per-node commits follow the order nodes finished."""
    from reprise.run._files import read_json

    files: list[OutcomeFile] = []
    top_skip = {".trace", "static_inputs"}
    base = str(run_root_dir)
    for dirpath, dirnames, filenames in os.walk(base):
        # Hidden directories are not elements: a node directory a crash left before its
        # rename into place (".<name>.<pid>.<n>.tmp") holds an outcome.json of its own.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and not (dirpath == base and d in top_skip))
        found = [dirpath] if "outcome.json" in filenames else []
        # A reused node is a link to its directory in an earlier run: not walked into.
        links = [os.path.join(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found += [link for link in links if os.path.isfile(os.path.join(link, "outcome.json"))]
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in links]
        for node_dir in found:
            rel = os.path.relpath(node_dir, base)
            order = 0.0
            if with_order:
                try:
                    result = read_json(Path(node_dir) / "result.json")
                    order = float(result.get("duration_s", 0.0)) + _epoch(result.get("started_at"))
                except (OSError, ValueError):
                    order = 0.0
            source = Path(node_dir) / "outcome.json"
            files.append(OutcomeFile(source, f"{rel}/outcome.json", rel.replace(os.sep, "."), order))
    return _with_declared(files, {f.repo_path for f in files}, declared)


def _with_declared(files: list[OutcomeFile], seen: set[str], declared: Iterable[OutcomeFile]) -> list[OutcomeFile]:
    for f in declared:
        if f.repo_path not in seen and os.path.isfile(f.source):
            files.append(f)
            seen.add(f.repo_path)
    return files


def _epoch(stamp: Any) -> float:
    from datetime import datetime

    if not isinstance(stamp, str):
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
