"""The outcome repository: every run's outcomes committed to git, one branch per run.

``<run_root>/outcome/<project>/`` is an ordinary git repository. Run ``R`` gets the branch
``run/R`` whose tree mirrors the run directory's element paths: every node's ``outcome.json``
at its hierarchy path, plus files nodes declared as outcomes. A re-run's first commit has the
previous run's commit as parent, so ``git diff run/A run/B`` shows what changed.

No working tree is ever checked out and no shared index is used: a run's commit is one
``git fast-import`` process fed from memory (every blob, tree and commit in a single pack), which
creates ``run/<run_id>`` when it is done. The executor starts that process with the run (a run
without a parent: at its 100th outcome) and sends each outcome as its node finishes
(:class:`OutcomeStream`), so git hashes and compresses them on another core while the run goes
on; a run without a parent that ends with fewer outcomes (or a re-run of a small run) is
committed by reprise itself, in git's formats, without a process (:mod:`reprise.run.git_pack`).
A re-run's commit through fast-import starts from the earlier run's tree and names only what
changed, keeping the outcomes it reused. Run ids are unique under a run root and a branch is
never moved (fast-import refuses to move one to an unrelated commit; git_pack creates it under
its lock or fails), so many processes can commit under one run root at the same time without
``index.lock`` failures or lost commits. Commits carry the
configured author (default ``reprise``), never the machine's git identity, and git reads no
global or system configuration. Writing needs only the ``git`` command; GitPython is imported
by the readers (diffs, listings) alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprise.errors import RunSetupError
from reprise.run import compaction
from reprise.run.git_pack import PackBuilder, can_write_directly, create_branch, is_plain_branch

if TYPE_CHECKING:
    import git

__all__ = [
    "COMMITTED_FILE",
    "OutcomeFile",
    "OutcomeRepository",
    "OutcomeSettings",
    "OutcomeStream",
    "collect_outcome_files",
    "committed_document",
    "listed_outcome_files",
    "read_committed",
]

#: Blobs are written to fast-import in chunks of about this size (a pipe holds 64 KiB), or of
#: this many blobs: often enough that git works while the run goes on (a write costs a few µs).
_STREAM_CHUNK = 16 * 1024
_STREAM_BLOBS = 16
#: An outcome bigger than this is not sent while the run goes on: writing it to the pipe would
#: hold the event loop (every parallel branch) until git has read it. The commit reads it from
#: its file at the end instead.
_STREAM_BLOB_MAX = 256 * 1024
#: A run without a parent commits what it has every this many outcomes (see OutcomeStream).
_CHECKPOINT_BLOBS = 64
#: A run without a parent that ends with fewer outcomes than this, of at most _DIRECT_BYTES in
#: all, is committed by reprise itself (git_pack), without starting git. A/B on this machine:
#: one outcome 3.7 -> 2.0 ms a run, 25: 4.5 -> 3.9, 60: 7.0 -> 6.5, 100: 10.2 -> 9.7; around
#: 140 the two cost the same, and at 200 and 1,000 git hashing and compressing on another core
#: while the run goes on is worth its process. Git starts at the _DIRECT_MAX-th outcome (or
#: once the outcomes held pass _DIRECT_BYTES).
_DIRECT_MAX = 100
_DIRECT_BYTES = 4 * 1024 * 1024
#: ``.trace/<this>`` of a run: its commit and the paths of that commit's tree (see read_committed).
COMMITTED_FILE = "committed.json"
_MALLOC_TUNABLES = "glibc.malloc.trim_threshold=134217728"
# Repository path -> its git directory, once this process has made or found it.
_GIT_DIRS: dict[str, str] = {}
# git dir -> commits of it this process made (see OutcomeRepository._maybe_compact).
_COMMITS_SEEN: dict[str, int] = {}


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


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x, and a run lists one per node
class OutcomeFile:
    """A file to commit: ``source`` on disk, stored at ``repo_path`` in the run's tree."""

    source: Path | str
    repo_path: str
    node_path: str = ""
    order: float = 0.0
    #: The file's bytes when the writer still has them (then ``source`` is not read).
    data: bytes | None = None


class OutcomeRepository:
    """A git repository of run outcomes (see the module docstring)."""

    def __init__(self, path: Path, settings: OutcomeSettings | None = None) -> None:
        self.path = Path(path)
        self.settings = settings or OutcomeSettings()
        self._repo: git.Repo | None = None
        self._git_dir: str | None = None

    # -- set-up ----------------------------------------------------------------------------
    def ensure(self) -> git.Repo:
        """Open the repository with GitPython (for readers), creating it if needed (see
        :meth:`git_dir`)."""
        if self._repo is not None:
            return self._repo
        import git  # GitPython costs ~40 ms to import: only for readers (diffs, listings)

        self.git_dir()
        try:
            self._repo = git.Repo(self.path)
        except git.GitError as exc:
            raise RunSetupError(f"cannot open outcome repository {self.path}: {exc}") from exc
        return self._repo

    def git_dir(self) -> str:
        """The repository's git directory, creating the repository (safely against concurrent
        creators) if needed; by ``git`` itself, without importing GitPython."""
        if self._git_dir is not None:
            return self._git_dir
        path = str(self.path)
        known = _GIT_DIRS.get(path)
        if known is not None and os.path.isdir(os.path.join(known, "objects")):
            # Made or found by this process before, and still there: no lock (~0.05 ms a run).
            self._git_dir = known
            return known
        dot_git = os.path.join(path, ".git")
        os.makedirs(path, exist_ok=True)
        # Always under the lock: another process may be half-way through ``git init`` (a
        # ``.git`` directory exists before it is a repository).
        with open(os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.init.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (os.path.isdir(dot_git) or os.path.isfile(os.path.join(path, "HEAD"))):
                    self._git(["init", "-q", "--initial-branch=main", path], git_dir=None)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._git_dir = _GIT_DIRS[path] = dot_git if os.path.isdir(dot_git) else path
        return self._git_dir

    def _git(self, args: list[str], *, git_dir: str | None, stdin: bytes | None = None) -> str:
        """Run ``git`` with our environment; its standard output, or :class:`RunSetupError`."""
        command = [_git_program(), *([f"--git-dir={git_dir}"] if git_dir else []), *args]
        try:
            done = subprocess.run(command, input=stdin, capture_output=True, env=self._command_env())
        except OSError as exc:
            raise RunSetupError(f"cannot run git for the outcome repository {self.path}: {exc}") from exc
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace").strip()
            raise RunSetupError(f"git {args[0]} failed in {self.path}: {err or f'exit status {done.returncode}'}")
        return done.stdout.decode(errors="replace")

    def _command_env(self) -> dict[str, str]:
        env = {**os.environ, **self._env()}
        # glibc gives memory back after every blob fast-import compresses and takes it again
        # for the next (8,000 brk calls for 1,000 files): 140 ms instead of 30. Keep it. (Not
        # top_pad as well: it made git's exit ~0.35 ms slower, at the end of every run, and
        # gained nothing.) Ours first: glibc applies the list in order, so a value the user
        # set for one wins.
        tunables = env.get("GLIBC_TUNABLES")
        env["GLIBC_TUNABLES"] = _MALLOC_TUNABLES + (f":{tunables}" if tunables else "")
        return env

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
        git_dir = self.git_dir()
        try:
            ref = f"refs/heads/{self.branch(run_id)}^{{commit}}"
            out = self._git(["rev-parse", "--verify", "-q", ref], git_dir=git_dir)
        except RunSetupError:
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
    def open_stream(
        self,
        run_id: str,
        parent_run_id: str | None = None,
        *,
        keep_from_parent: bool = False,
        parent_dir: Path | str | None = None,
    ) -> OutcomeStream:
        """Start the ``git fast-import`` that will commit ``run/<run_id>``; feed it outcomes as
        they are written (:meth:`OutcomeStream.add`) and commit with
        :meth:`OutcomeStream.finish`. ``keep_from_parent``: the run will reuse outcomes of
        ``parent_run_id``, which the commit can then keep from the parent's tree instead of
        sending them again. The parent's file list comes from its run directory ``parent_dir``
        (its ``.trace/committed.json``, if it names the parent's commit), else from a
        ``git ls-tree`` started now."""
        return OutcomeStream(self, run_id, parent_run_id, keep_from_parent=keep_from_parent, parent_dir=parent_dir)

    def commit_run(
        self,
        run_id: str,
        files: Sequence[OutcomeFile],
        *,
        message: str,
        parent_run_id: str | None = None,
    ) -> str:
        """Commit ``files`` as the tree of ``run/<run_id>`` and return the final commit.

        One ``git fast-import`` process, fed from memory, writes every blob, tree and commit into
        a single pack (thousands of loose objects cost ~0.7 ms each here; a pack costs a fraction
        of that) and creates the branch at the end; it reports the commit through ``get-mark``.
        A file listed in ``files`` that no longer exists is left out."""
        stream = self.open_stream(run_id, parent_run_id)
        commit = stream.finish(files, message=message)
        if commit is None:
            raise RunSetupError(f"cannot commit outcomes of {run_id}: git fast-import stopped ({stream.broken})")
        return commit

    def _commit_of(self, git_dir: str, run_id: str) -> str | None:
        """The tip of ``run/<run_id>``: read from its loose ref (fast-import writes those), or
        asked of git when the ref is packed."""
        try:
            with open(os.path.join(git_dir, "refs", "heads", "run", run_id), "rb") as fh:
                sha = fh.read().strip().decode()
            if len(sha) == 40:
                return sha
        except (OSError, UnicodeDecodeError):
            pass
        return self.head_of(run_id)

    def _popen(self, args: list[str], git_dir: str, *, stdin: bool) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [_git_program(), f"--git-dir={git_dir}", *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._command_env(),
            )
        except OSError as exc:
            raise RunSetupError(f"cannot run git for the outcome repository {self.path}: {exc}") from exc

    def _maybe_compact(self, git_dir: str) -> None:
        """Each commit adds one pack; once there are many, fold them (in the background, see
        :mod:`reprise.run.compaction`), so lookups (diffs, re-run parents, the next commit's
        existence checks) stay fast.

        The packs are counted at this process's first commit of the repository and then every
        ``MAX_PACKS // 4``-th (two directory scans, ~0.15 ms: a tenth of a small run): the
        count may run a few packs past the limit, and a repack that ended is reaped a few
        commits later."""
        seen = _COMMITS_SEEN.get(git_dir, 0)
        _COMMITS_SEEN[git_dir] = seen + 1
        if seen % max(1, compaction.MAX_PACKS // 4):
            return
        compaction.compact_in_background(_git_program(), git_dir, self._command_env)


class OutcomeStream:
    """One run's commit in the making: a ``git fast-import`` process started when the run starts
    (a run without a parent: at its :data:`_DIRECT_MAX`-th outcome; one that ends with fewer is
    committed without git, by :mod:`reprise.run.git_pack`, unless something there is for git to
    judge).

    Outcomes are sent to it as blobs while the run goes on (:meth:`add`, buffered and written in
    chunks), so git hashes and compresses them on another core instead of after the last node;
    :meth:`finish` then sends the commit, which only names them. Nothing is visible in the
    repository before the commit: fast-import creates ``run/<run_id>`` when the stream ends
    well. If the process dies on the way (or the run's process does), the blobs it had are left
    unreferenced in a pack, for ``git gc``.

    git builds a commit's trees when it reads the commit, and a tree per node directory costs
    as much as a blob. So a run without a parent sends a **checkpoint** commit every
    :data:`_CHECKPOINT_BLOBS` outcomes, and git builds the trees as the run goes on (each
    checkpoint rewrites only the trees on the paths that changed, stored as deltas); the final
    commit takes the last checkpoint's tree (``ls``, then ``M 040000``) and has the run's real
    parentage. The checkpoint commits are never behind a ref: a few hundred bytes per 64
    outcomes, left for ``git gc`` (a 2,000-outcome pack grows ~5%), against a final commit
    that took 28 ms for 2,000 outcomes and takes ~6.

    A stream whose process broke is reported by :meth:`finish` as ``None``: the caller then
    commits the files afresh (:meth:`OutcomeRepository.commit_run`)."""

    def __init__(
        self,
        repo: OutcomeRepository,
        run_id: str,
        parent_run_id: str | None,
        *,
        keep_from_parent: bool,
        parent_dir: Path | str | None = None,
    ) -> None:
        self.repo = repo
        self.run_id = run_id
        self._git_dir = git_dir = repo.git_dir()
        self._parent = repo._commit_of(git_dir, parent_run_id) if parent_run_id else None
        self._marks: dict[str, int] = {}
        self._mark = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._broken: str | None = None
        self._finished = False
        self._ref = f"refs/heads/{OutcomeRepository.branch(run_id)}"
        # Checkpoints only without a parent: a re-run's commit starts from its parent's tree.
        self._checkpoints = self._parent is None
        self._pending: list[tuple[int, str]] = []  # (mark, path) sent since the last checkpoint
        self._checkpoint: int | None = None  # the mark of the last checkpoint commit
        # (checkpoint mark, top directory) of an ``ls`` sent by prepare_finish, not yet read.
        self._early_ls: tuple[int, str] | None = None
        #: Files of ``finish`` left out of the commit (their source no longer existed).
        self.skipped: set[str] = set()
        # The parent's file list, when the run reuses its outcomes: as the parent recorded it
        # (a file read), or read concurrently with the run by a second git process (started
        # right after fast-import, it waits for a core: 1-4 ms of a re-run's start here).
        self._known_parent_files: set[str] | None = None
        self._listing: subprocess.Popen[bytes] | None = None
        if keep_from_parent and self._parent is not None:
            if parent_dir is not None:
                self._known_parent_files = read_committed(parent_dir, self._parent)
            if self._known_parent_files is None:
                self._listing = repo._popen(
                    ["ls-tree", "-r", "-z", "--name-only", self._parent], git_dir, stdin=False
                )
        # unpackLimit=0: always keep the one pack. git loosens a pack of *up to* that many
        # objects by running unpack-objects, a second process: below its default (100) for
        # every small run, and at 1 for every run whose outcomes git has already (only its
        # commit is new), ~2.5 ms each. Packs are folded by _maybe_compact. --done:
        # without it git takes the end of its input (our process died) for the end of the
        # stream and publishes the last checkpoint as the run's branch.
        # A run without a parent starts git only once it has sent _DIRECT_MAX outcomes: one that
        # ends with fewer is committed without git (git_pack), up to ~1.7 ms less a run. So
        # does a re-run of a run that recorded fewer files than that (its commit holds all
        # the files again, read from the run directory, with the parent's commit as parent).
        self._proc: subprocess.Popen[bytes] | None = None
        small_parent = self._known_parent_files is not None and len(self._known_parent_files) < _DIRECT_MAX
        direct = _DIRECT_MAX > 0 and (self._parent is None or small_parent)
        self._held: dict[str, bytes] | None = {} if direct else None
        self._held_bytes = 0
        if self._held is None:
            self._start()

    def _start(self) -> None:
        """Start git fast-import and send it what was held for it."""
        held, self._held = self._held, None
        self._proc = self.repo._popen(
            ["-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--done"], self._git_dir, stdin=True
        )
        if held:
            # Held outcomes were not put in fast-import's form while the run went on (a run
            # that ends with few needs no git at all): that is done now, in the order sent.
            for repo_path, data in held.items():
                self._send_blob(repo_path, data)
        if self._buffer:
            self._flush()

    def add(self, repo_path: str, data: bytes) -> None:
        """Send ``data`` as the blob of ``repo_path`` (committed by :meth:`finish` if ``repo_path``
        is among its files). Cheap: the bytes are buffered and written in chunks. Data over
        :data:`_STREAM_BLOB_MAX` is left for :meth:`finish`, which reads the file."""
        if len(data) > _STREAM_BLOB_MAX:
            # An earlier version of the path sent small must not stand in for this one.
            self._marks.pop(repo_path, None)
            self._drop_held(repo_path)
            return
        held = self._held
        if held is not None:
            # No git yet: the commit may not need one. An outcome sent again for the same
            # path replaces the one held (as the later ``M`` line would in fast-import).
            self._drop_held(repo_path)
            held[repo_path] = data
            self._held_bytes += len(data)
            if len(held) >= _DIRECT_MAX or self._held_bytes > _DIRECT_BYTES:
                self._start()
            return
        self._send_blob(repo_path, data)
        if self._buffered >= _STREAM_CHUNK or self._mark % _STREAM_BLOBS == 0:
            self._flush()

    def _drop_held(self, repo_path: str) -> None:
        held = self._held
        previous = None if held is None else held.pop(repo_path, None)
        if previous is not None:
            self._held_bytes -= len(previous)

    def _send_blob(self, repo_path: str, data: bytes) -> None:
        """Buffer ``data`` as fast-import's blob of ``repo_path`` (and a checkpoint when due)."""
        self._mark += 1
        self._marks[repo_path] = self._mark
        self._buffer.append(b"blob\nmark :%d\ndata %d\n" % (self._mark, len(data)))
        self._buffer.append(data)
        self._buffer.append(b"\n")
        self._buffered += len(data) + 32
        if self._checkpoints:
            self._pending.append((self._mark, repo_path))
            if len(self._pending) >= _CHECKPOINT_BLOBS:
                self._add_checkpoint([])

    def _ident(self) -> bytes:
        s = self.repo.settings
        return f"{s.author_name} <{s.author_email}> {int(time.time())} +0000\n".encode()

    def _add_checkpoint(self, changes: list[bytes]) -> int:
        """Buffer a checkpoint commit of the outcomes sent since the last one (and ``changes``:
        more ``M``/``D`` lines); its mark. With nothing to add, the last checkpoint's."""
        if not self._pending and not changes and self._checkpoint is not None:
            return self._checkpoint
        self._mark += 1
        mark = self._checkpoint = self._mark
        out = self._buffer
        out.append(b"commit %s\nmark :%d\ncommitter %s" % (self._ref.encode(), mark, self._ident()))
        # The LF after the (empty) message is the one git allows after any data: without it
        # the commit's closing LF would be taken for it, and a following ``ls`` would be read
        # as part of the commit (its own mark not declared yet: fast-import dies).
        out.append(b"data 0\n\n")
        out.extend(b"M 100644 :%d %s\n" % (blob, path.encode()) for blob, path in self._pending)
        out.extend(changes)  # after: a D of a path sent since the last checkpoint must win
        out.append(b"\n")
        self._pending.clear()
        return mark

    def prepare_finish(self) -> None:
        """The run's last outcome was sent: let git build the tree of the outcomes sent so far
        and answer for it (a checkpoint, then ``ls``) while the run writes its records, instead
        of when :meth:`finish` asks. Nothing is read here; :meth:`finish` uses the answer when
        its files are exactly the outcomes sent, and reads past it otherwise."""
        if (
            self._proc is None
            or not self._checkpoints
            or self._finished
            or self._broken is not None
            or self._early_ls is not None
        ):
            return
        marks = self._marks
        if not marks:
            return
        # The top directory of the first outcome: the run's root element. Not checked against
        # the others here (a walk over every path): the answer is used only when the commit's
        # files are exactly the outcomes sent, under the one top directory it names.
        top = next(iter(marks)).partition("/")[0]
        checkpoint = self._add_checkpoint([])
        self._buffer.append(b"ls :%d %s\n" % (checkpoint, top.encode()))
        self._early_ls = (checkpoint, top)
        self._flush()

    def _flush(self) -> None:
        chunk = b"".join(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        if self._broken is not None:
            return
        assert self._proc is not None
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(chunk)
            stdin.flush()
        except OSError as exc:  # the process is gone (BrokenPipeError): finish() falls back
            self._broken = str(exc)

    def finish(self, files: Sequence[OutcomeFile], *, message: str, reused: Collection[str] = ()) -> str | None:
        """Commit ``files`` as the tree of ``run/<run_id>``; the commit's id, or ``None`` if the
        process broke before (nothing was committed: commit again with
        :meth:`OutcomeRepository.commit_run`).

        A file sent by :meth:`add` is named by its mark; any other is sent now (``data``, or read
        from ``source``; one that no longer exists is left out). A file of a node in ``reused``
        (hierarchy paths) that the parent's tree has at the same place is kept from that tree."""
        return self.begin_finish(files, message=message, reused=reused)()

    def begin_finish(
        self, files: Sequence[OutcomeFile], *, message: str, reused: Collection[str] = ()
    ) -> Callable[[], str | None]:
        """:meth:`finish` in two steps: send the rest of the commit now, and return a function
        that waits for git (its pack, the branch, its exit) and returns what :meth:`finish`
        would. The caller can do other work meanwhile (git does its part on another core); it
        must call the function, which stops git if anything goes wrong while waiting."""
        if self._finished:
            raise RunSetupError(f"the outcome commit of {self.run_id} was already made")
        self._finished = True
        try:
            if self._proc is None:
                commit = self._commit_directly(files, message)
                if commit is not None:
                    return lambda: self._directly_committed(commit)
                self._start()
            top = _single_top(files) if self._checkpoint is not None else None
            if top is not None:
                return self._finish_from_checkpoint(files, message, top)
            stream, last_mark = self._commit_stream(files, message, reused)
            return self._send_end(stream, last_mark)
        except BaseException:
            self.abort()  # no git process is left waiting for the rest of the stream
            raise
        finally:
            # The parent's listing, when nothing reused needed it, is still writing to its pipe.
            self._close_listing()

    def _commit_directly(self, files: Sequence[OutcomeFile], message: str) -> str | None:
        """Commit ``files`` without git (a run that ended with few outcomes: see
        :mod:`reprise.run.git_pack`); the commit, or ``None`` to leave it to fast-import."""
        held = self._held
        settings = self.repo.settings
        parent = self._parent
        if (
            held is None
            or (parent is not None and len(files) >= _DIRECT_MAX)
            or settings.commit_per_node
            or not is_plain_branch(self._ref)
            or any(c in settings.author_name + settings.author_email for c in "<>\n\0")
            or not can_write_directly(self._git_dir)
        ):
            return None  # a branch or an identity git refuses (and says why), or not git's plain format
        try:
            pack = PackBuilder()
            blobs: dict[str, bytes] = {}
            skipped: set[str] = set()
            size = 0
            for f in files:
                if not _unquoted(f.repo_path):
                    return None  # fast-import refuses it, and a re-run's commit would: say so now
                data = held.get(f.repo_path)
                if data is None:
                    data = _data_of(f)
                    if data is None:
                        if parent is not None:
                            return None  # fast-import keeps a reused one from the parent's tree
                        skipped.add(f.repo_path)
                        continue
                size += len(data)
                if size > _DIRECT_BYTES:
                    return None  # compressing that much is better done by git, on another core
                blobs[f.repo_path] = pack.blob(data)
            tree = pack.tree(blobs)
            if tree is None:
                return None  # a path git must be asked about
            parents = () if parent is None else (parent,)
            commit = pack.commit(tree, self._ident().rstrip(b"\n"), message.encode(), parents)
            pack.write(self._git_dir)
        except (OSError, RunSetupError):
            return None  # fast-import will say what is wrong, if anything still is
        # The branch last. One that exists is not ours: an error fast-import would give too.
        try:
            create_branch(self._git_dir, self._ref, commit)
        except OSError:
            return None  # nothing was made: fast-import tries, and says what is wrong
        self.skipped |= skipped
        self._held = None
        return commit

    def _directly_committed(self, commit: str) -> str:
        self.repo._maybe_compact(self._git_dir)
        return commit

    def _close_listing(self) -> None:
        listing, self._listing = self._listing, None
        if listing is not None:
            if listing.poll() is None:
                listing.kill()
            listing.communicate()

    def _send_end(self, stream: bytes, last_mark: int) -> Callable[[], str | None]:
        """Send the end of the stream and close git's input; the function that waits for git
        and returns the commit of ``last_mark``."""
        if self._broken is not None:
            self.abort()
            return _no_commit
        proc = self._proc
        assert proc is not None
        stdin = proc.stdin
        assert stdin is not None
        try:
            stdin.write(stream)
            # Closed below even if its flush fails (a broken pipe): communicate(), here or in
            # abort(), must not flush it again (a closed file: ValueError, git left running).
            proc.stdin = None
            stdin.close()
        except OSError as exc:
            self.abort()
            self._broken = str(exc)
            return _no_commit
        return lambda: self._wait_end(last_mark)

    def _wait_end(self, last_mark: int) -> str | None:
        proc = self._proc
        assert proc is not None
        try:
            out, err = proc.communicate()
        except BaseException:
            self.abort()
            raise
        repo = self.repo
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise RunSetupError(
                f"cannot commit outcomes of {self.run_id}: git fast-import failed in {repo.path}: {text}"
            )
        commit = out.decode(errors="replace").strip().rsplit("\n", 1)[-1]
        if len(commit) < 40:
            raise RunSetupError(f"git fast-import did not report commit :{last_mark} for {self.run_id}")
        repo._maybe_compact(self._git_dir)
        return commit

    def _finish_from_checkpoint(
        self, files: Sequence[OutcomeFile], message: str, top: str
    ) -> Callable[[], str | None]:
        """The final commit of a run that made checkpoints: a last checkpoint with the rest of
        ``files`` (and without what was sent but is not among them), then a root commit whose
        tree is that checkpoint's ``top`` directory, as git already built it."""
        marks = self._marks
        changes: list[bytes] = []
        listed: set[str] = set()
        for f in files:
            path = _checked(f.repo_path)
            listed.add(path)
            if path in marks:
                continue
            data = _data_of(f)
            if data is not None:
                changes.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
            else:
                self.skipped.add(path)
        changes.extend(b"D %s\n" % path.encode() for path in marks.keys() - listed)
        early, self._early_ls = self._early_ls, None
        line = b""
        if early is not None and self._broken is None:
            line = self._read_line()  # the answer for prepare_finish's checkpoint
            if changes or self._pending or early[0] != self._checkpoint or early[1] != top:
                line = b""  # the tree is not the commit's: ask again
        if not line:
            checkpoint = self._add_checkpoint(changes)
            self._buffer.append(b"ls :%d %s\n" % (checkpoint, top.encode()))
            self._flush()
            line = self._read_line() if self._broken is None else b""
        parts = line.split()
        if len(parts) < 3 or parts[0] != b"040000" or len(parts[2]) != 40:
            self.abort()  # the caller commits afresh
            self._broken = self._broken or f"git fast-import answered {line[:200]!r} for the tree of {top}"
            return _no_commit
        tree = parts[2].decode()
        self._mark += 1
        body = message.encode()
        ident = self._ident()
        final = b"".join(
            [
                b"reset %s\ncommit %s\nmark :%d\n" % (self._ref.encode(), self._ref.encode(), self._mark),
                b"author " + ident + b"committer " + ident,
                b"data %d\n%s\n" % (len(body), body),
                b"M 040000 %s %s\n\n" % (tree.encode(), top.encode()),
                b"get-mark :%d\ndone\n" % self._mark,
            ]
        )
        return self._send_end(final, self._mark)

    def _read_line(self) -> bytes:
        """One answer line from fast-import (read unbuffered: communicate() reads the rest)."""
        assert self._proc is not None
        stdout = self._proc.stdout
        assert stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
        return line

    @property
    def broken(self) -> str | None:
        """Why the process could not be written to, if it could not."""
        return self._broken

    def abort(self) -> None:
        """Stop the process without committing (nothing becomes visible in the repository)."""
        self._finished = True
        for proc in (self._proc, self._listing):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()

    def committed_paths(self, files: Sequence[OutcomeFile]) -> list[str]:
        """The paths of the tree :meth:`finish` committed for ``files``: those it did not skip."""
        skipped = self.skipped
        return [f.repo_path for f in files if f.repo_path not in skipped]

    def _parent_files(self) -> set[str] | None:
        """The parent's file paths, or ``None`` when they could not be listed."""
        if self._known_parent_files is not None:
            return self._known_parent_files
        listing, self._listing = self._listing, None
        if listing is None:
            return None
        out, _ = listing.communicate()
        if listing.returncode != 0:
            return None
        try:
            names = {name for name in out.decode().split("\0") if name}
        except UnicodeDecodeError:
            return None
        if not all(_unquoted(n) for n in names):
            return None  # not expressible unquoted in a D command: clear the tree instead
        return names

    def _commit_stream(
        self, files: Sequence[OutcomeFile], message: str, reused: Collection[str]
    ) -> tuple[bytes, int]:
        """The rest of the fast-import stream (buffered blobs, commits), and the final mark."""
        ref = self._ref
        ident = self._ident()
        out = self._buffer
        if self._checkpoint is not None:
            # Checkpoints were made on the branch: start the run's commit afresh (no parent).
            out.append(f"reset {ref}\n".encode())
        mark = self._mark
        parent = self._parent
        kept = self._parent_files() if parent is not None and reused else None
        marks = self._marks
        first = True

        def commit(msg: str, entries: Iterable[OutcomeFile]) -> None:
            nonlocal mark, first
            mark += 1
            body = msg.encode()
            out.append(f"commit {ref}\nmark :{mark}\n".encode())
            out.append(b"author " + ident + b"committer " + ident)
            out.append(b"data %d\n" % len(body) + body + b"\n")
            if first and parent is not None:
                # A commit starts from its parent's tree. Its tree must hold exactly this run's
                # outcomes (not, say, those of a branch the earlier run took): clear it, or,
                # when the parent's files are known, delete just those this run does not have.
                out.append(f"from {parent}\n".encode())
                if kept is None:
                    out.append(b"deleteall\n")
                else:
                    ours = {f.repo_path for f in files}
                    out.extend(b"D %s\n" % name.encode() for name in sorted(kept - ours))
            first = False
            for f in entries:
                path = _checked(f.repo_path)
                if kept is not None and f.node_path in reused and path in kept:
                    continue  # the parent's tree has this reused outcome already
                blob = marks.get(path)
                if blob is not None:
                    out.append(b"M 100644 :%d %s\n" % (blob, path.encode()))
                    continue
                data = _data_of(f)
                if data is not None:
                    out.append(b"M 100644 inline %s\ndata %d\n%s\n" % (path.encode(), len(data), data))
                else:
                    self.skipped.add(path)
                    if kept is not None and path in kept:
                        out.append(b"D %s\n" % path.encode())  # not the parent's version of it

        if self.repo.settings.commit_per_node:
            for node_path, group in _by_node(files):
                commit(f"node {node_path}", group)
            commit(message, ())
        else:
            commit(message, files)
        out.append(b"get-mark :%d\ndone\n" % mark)
        return b"".join(out), mark


def _no_commit() -> str | None:
    """What waiting for a stream that broke gives: no commit (the caller commits afresh)."""
    return None


_GIT_PROGRAM: tuple[str | None, str] = (None, "git")


def _git_program() -> str:
    """The ``git`` found on ``PATH``, looked up once per ``PATH``: given a bare name, the child
    tries every ``PATH`` entry in turn, ~0.2 ms of a run's start."""
    global _GIT_PROGRAM
    path = os.environ.get("PATH")
    if _GIT_PROGRAM[0] != path or path is None:
        found = shutil.which("git", path=path)
        # Absolute: a relative PATH entry would name another file after a chdir.
        _GIT_PROGRAM = (path, os.path.abspath(found) if found else "git")
    return _GIT_PROGRAM[1]


def committed_document(commit: str, paths: Iterable[str]) -> bytes:
    """``.trace/committed.json``: the run's commit and every path of its tree, so a re-run's
    commit knows the tree it starts from without asking git (a process) for it."""
    return json.dumps({"version": 1, "commit": commit, "files": sorted(paths)}, separators=(",", ":")).encode()


def read_committed(run_dir: Path | str, commit: str) -> set[str] | None:
    """The paths of ``commit``'s tree as the run at ``run_dir`` recorded them, or ``None`` when
    it did not (an older run, a commit made afresh, a record of another commit, a bad file):
    the caller then asks git."""
    try:
        with open(os.path.join(run_dir, ".trace", COMMITTED_FILE), "rb") as fh:
            doc = json.loads(fh.read())
        if not isinstance(doc, dict) or doc.get("commit") != commit or doc.get("version") != 1:
            return None
        files = doc["files"]
        if not isinstance(files, list) or not all(type(p) is str and p and _unquoted(p) for p in files):
            return None
        return set(files)
    except (OSError, ValueError, KeyError):
        return None


def _unquoted(repo_path: str) -> bool:
    """Whether fast-import can take ``repo_path`` as it is (no quoting)."""
    return "\n" not in repo_path and not repo_path.startswith('"')


def _checked(repo_path: str) -> str:
    """``repo_path``, if fast-import can take it unquoted."""
    if not _unquoted(repo_path):
        raise RunSetupError(f"cannot commit a file named {repo_path!r}")
    return repo_path


def _data_of(f: OutcomeFile) -> bytes | None:
    """The bytes of ``f``: kept, or read from its source (``None`` if it no longer exists)."""
    if f.data is not None:
        return f.data
    try:
        with open(f.source, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _single_top(files: Sequence[OutcomeFile]) -> str | None:
    """The one top-level directory every file is in (the root element's id), or ``None``."""
    top: str | None = None
    for f in files:
        head, sep, _ = f.repo_path.partition("/")
        if not sep or (top is not None and head != top):
            return None
        top = head
    return top


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
    run_root_dir: Path | str,
    node_paths: Iterable[str],
    declared: Iterable[OutcomeFile] = (),
    data: Mapping[str, bytes] | None = None,
) -> list[OutcomeFile]:
    """The ``outcome.json`` of each node in ``node_paths`` (hierarchy paths, in the order the
    nodes finished), plus ``declared`` files: what the executor knows it wrote, so the run
    directory need not be walked. ``data`` holds the bytes of those the executor kept (by
    hierarchy path): they are not read back."""
    kept = data or {}
    base = str(run_root_dir)
    files: list[OutcomeFile] = []
    seen: set[str] = set()
    for order, path in enumerate(node_paths):
        repo_path = path.replace(".", "/") + "/outcome.json"  # ids never contain dots
        if repo_path in seen:
            continue
        seen.add(repo_path)
        files.append(OutcomeFile(f"{base}/{repo_path}", repo_path, path, float(order), kept.get(path)))
    for f in declared:
        if f.repo_path not in seen and os.path.isfile(f.source):
            files.append(f)
            seen.add(f.repo_path)
    return files


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
        # Hidden directories are not elements: a node directory a crash left before its
        # rename into place (".<name>.<pid>.<n>.tmp") holds an outcome.json of its own.
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not (dirpath == base and d in top_skip)]
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
        if f.repo_path not in seen and os.path.isfile(f.source):
            files.append(f)
            seen.add(f.repo_path)
    return files


def _epoch(stamp: Any) -> float:
    from datetime import datetime

    if not isinstance(stamp, str):
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
