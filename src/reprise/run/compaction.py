"""Folding an outcome repository's packs, behind the runs that made them.

Every commit of a run's outcomes writes one pack (see :mod:`reprise.run.outcome_repo`). Past
:data:`MAX_PACKS` packs, a ``git repack --geometric=2`` folds the smaller ones together so that
git's lookups stay fast. That repack takes 10 ms and more, and grows with the repository: run
in line, it made every seventeenth run that much slower than the others.

So the repack is started when a commit ends and not waited for: it runs on another core while
the caller goes on (the next run, usually). At most one runs per repository in this process; the
next commit reaps it, and starts another only if the packs are still too many. The process
waits for what is still running when it exits (:func:`wait_for_compactions`, registered with
:mod:`atexit`), so no ``git`` is left behind by a script or the ``reprise`` command.

A geometric repack keeps every object of the packs it merges, reachable or not, and skips packs
that are still being written (fast-import keeps a ``.keep`` file on them): a run committing
in another process meanwhile loses nothing, and readers see either the old packs or the new.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO

__all__ = ["MAX_PACKS", "compact_in_background", "wait_for_compactions"]

#: More packs than this in a repository start a repack.
MAX_PACKS = 16

# git dir -> (its repack still running, or exited and not yet reaped; whether it is the
# geometric one; the file its errors go to). One lock: commits of runs in several threads may
# end at once.
_RUNNING: dict[str, tuple[subprocess.Popen[bytes], bool, IO[bytes]]] = {}
_LOCK = threading.Lock()
# Set once a git without --geometric (before 2.32) refused it: fold everything from then on.
_NO_GEOMETRIC = False

_GEOMETRIC = ("repack", "-d", "-q", "--geometric=2")
_FOLD_ALL = ("repack", "-A", "-d", "-q")  # unreachable objects are kept loose
# git's exit status for a command line it refuses (an unknown option); a fatal error is 128.
_USAGE_ERROR = 129


def compact_in_background(
    git: str, git_dir: str, env: Mapping[str, str] | Callable[[], Mapping[str, str]]
) -> None:
    """Start folding ``git_dir``'s packs with the ``git`` program ``git`` if there are more
    than :data:`MAX_PACKS` and no repack of it is running; return at once. ``env``: the
    repack's environment, or a function that makes it (called only if a repack starts).

    Also removes the ``fast_import_crash_<pid>`` reports git leaves when a run's process is
    killed (its fast-import sees its input end early): expected, and of no use to anyone."""
    try:
        for entry in os.scandir(git_dir):
            if entry.name.startswith("fast_import_crash_"):
                os.unlink(entry.path)
    except OSError:
        pass
    with _LOCK:
        if git_dir in _RUNNING:
            running, geometric, errors = _RUNNING[git_dir]
            if running.poll() is None:
                return  # still folding: the packs it was started for are being merged
            del _RUNNING[git_dir]
            _reap(running, geometric, errors, None)
        try:
            packs = sum(1 for e in os.scandir(os.path.join(git_dir, "objects", "pack")) if e.name.endswith(".pack"))
        except OSError:
            return
        if packs <= MAX_PACKS:
            return
        command: Sequence[str] = _FOLD_ALL if _NO_GEOMETRIC else _GEOMETRIC
        try:
            # Its errors go to a file, not a pipe: nobody reads them before the repack ends,
            # and with GIT_TRACE* set git writes more than a pipe holds, then waits forever.
            errors = tempfile.TemporaryFile()
        except OSError:
            return
        try:
            proc = subprocess.Popen(
                [git, f"--git-dir={git_dir}", *command],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                env=dict(env() if callable(env) else env),
            )
        except OSError:
            errors.close()
            return  # no git to fold with: the next commit tries again
        _RUNNING[git_dir] = (proc, command is _GEOMETRIC, errors)


def wait_for_compactions(timeout: float | None = None) -> int:
    """Wait for this process's repacks still running (each up to ``timeout`` seconds; one
    still running after that is left to finish on its own) and reap them; how many there were
    (running, or ended and not reaped yet)."""
    with _LOCK:
        running = list(_RUNNING.items())
        _RUNNING.clear()
    for _, (proc, geometric, errors) in running:
        try:
            _reap(proc, geometric, errors, timeout)
        except subprocess.TimeoutExpired:
            errors.close()  # it goes on writing to its own descriptor of the (unlinked) file
    return len(running)


def _reap(proc: subprocess.Popen[bytes], geometric: bool, errors: IO[bytes], timeout: float | None) -> None:
    global _NO_GEOMETRIC
    proc.wait(timeout=timeout)
    with errors:
        errors.seek(0)
        err = errors.read(64 * 1024)
    if proc.returncode == _USAGE_ERROR and geometric and b"geometric" in err:
        # A git that does not know the option refuses it as a usage error. Any other failure
        # (another process repacking: exit 128, naming a pack by its path, which may well
        # contain "geometric") is left for the next commit to try again.
        _NO_GEOMETRIC = True


def _forget_in_child() -> None:
    # A forked child does not own its parent's repacks: it must neither wait for nor reap them.
    global _LOCK
    for _, _, errors in _RUNNING.values():
        errors.close()  # the child's copy of the descriptor
    _RUNNING.clear()
    _LOCK = threading.Lock()  # the parent may have held it while forking


os.register_at_fork(after_in_child=_forget_in_child)
atexit.register(wait_for_compactions, 120.0)
