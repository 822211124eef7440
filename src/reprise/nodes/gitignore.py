"""The common ``.gitignore`` rules, for :class:`~reprise.nodes.FolderAnalyzerNode`.

Implemented (see ``gitignore(5)``): blank lines and ``#`` comments; ``\\#`` and ``\\!`` for a
literal first character; trailing spaces ignored unless escaped; ``!`` negation (the last
matching rule wins); a trailing ``/`` matches directories only; a pattern with a ``/`` at the
start or in the middle is anchored to the directory of its ``.gitignore``, one without matches
at any depth below it; ``*``, ``?`` and ``[...]`` (with ``[!...]``) that never match ``/``;
``**/`` (any leading directories), ``/**`` (everything inside), ``/**/`` (zero or more
directories); nested ``.gitignore`` files, whose rules apply below their directory and take
precedence over the rules of the directories above.

As in git, a file below an ignored directory cannot be re-included (the walk never enters the
directory). Not read: ``.git/info/exclude`` and the user's global excludes file, which are
per-machine, so a flow's result does not depend on who runs it.

Written here rather than taken from a package (``pathspec``) to keep reprise's dependencies to
what every run needs; the rules above are about 100 lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["GitignoreRule", "IgnoreRules", "parse_gitignore"]


@dataclass(frozen=True, slots=True)
class GitignoreRule:
    """One pattern line of a ``.gitignore``."""

    pattern: str
    negated: bool
    dir_only: bool
    anchored: bool
    regex: re.Pattern[str]

    def matches(self, relative: str, name: str, is_dir: bool) -> bool:
        """Whether the rule matches ``relative`` (to the rule's directory; ``name`` is its last part)."""
        if self.dir_only and not is_dir:
            return False
        return self.regex.fullmatch(relative if self.anchored else name) is not None


def _translate(pattern: str) -> str:
    """The regular expression for a glob pattern (no leading ``/``, no trailing ``/``)."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                before_ok = i == 0 or pattern[i - 1] == "/"
                after = i + 2
                if before_ok and after < n and pattern[after] == "/":
                    out.append("(?:.*/)?")  # '**/' : zero or more directories
                    i = after + 1
                    continue
                if before_ok and after == n and i > 0:
                    out.append(".*")  # trailing '/**' : everything inside
                    i = after
                    continue
                if before_ok and after == n:
                    out.append(".*")  # the whole pattern is '**'
                    i = after
                    continue
                # Any other '**' is an ordinary '*'.
                i = after
                out.append("[^/]*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = i + 1
            if j < n and pattern[j] in "!^":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))  # no closing ']': a literal '['
            else:
                body = pattern[i + 1 : j]
                negate = body[:1] in ("!", "^")
                if negate:
                    body = body[1:]
                body = body.replace("\\", "\\\\")
                out.append(f"[^/{body}]" if negate else f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _strip_trailing_spaces(line: str) -> str:
    stripped = line.rstrip(" ")
    if stripped != line and stripped.endswith("\\"):
        return stripped[:-1] + " "  # '\ ' keeps one escaped space
    return stripped


def parse_gitignore(text: str) -> list[GitignoreRule]:
    """The rules of a ``.gitignore`` file's text, in order."""
    rules: list[GitignoreRule] = []
    for raw in text.splitlines():
        line = _strip_trailing_spaces(raw.rstrip("\r"))
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        if negated:
            line = line[1:]
        elif line.startswith(("\\!", "\\#")):
            line = line[1:]
        dir_only = line.endswith("/") and not line.endswith("\\/")
        if dir_only:
            line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        if not line:
            continue
        rules.append(GitignoreRule(raw.strip(), negated, dir_only, anchored, re.compile(_translate(line), re.DOTALL)))
    return rules


class IgnoreRules:
    """The rules of every ``.gitignore`` met while walking a tree, by directory.

    Paths are POSIX and relative to the walk's root (``""`` is the root itself)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self._by_dir: dict[str, list[GitignoreRule]] = {}
        extra_rules = parse_gitignore("\n".join(extra))
        if extra_rules:
            self._by_dir[""] = extra_rules

    def add(self, directory: str, text: str) -> None:
        """Add the rules of the ``.gitignore`` in ``directory`` (after any added before for it)."""
        rules = parse_gitignore(text)
        if rules:
            self._by_dir.setdefault(directory, []).extend(rules)

    def ignored(self, path: str, is_dir: bool) -> bool:
        """Whether ``path`` is ignored (its parent directories are assumed not to be)."""
        parts = path.split("/")
        name = parts[-1]
        verdict = False
        # From the root down: deeper files are read later, so their rules win ties.
        for depth in range(len(parts)):
            directory = "/".join(parts[:depth])
            rules = self._by_dir.get(directory)
            if not rules:
                continue
            relative = "/".join(parts[depth:])
            for rule in rules:
                if rule.matches(relative, name, is_dir):
                    verdict = not rule.negated
        return verdict
