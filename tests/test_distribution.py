"""The distribution is ``reprise-agents`` (``reprise`` on PyPI is an unrelated project): every
install hint a user reads names it, and the installed metadata agrees with the package."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import reprise

ROOT = Path(__file__).resolve().parents[1]
DIST = "reprise-agents"

# A requirement as it appears after `pip install` in prose, docstrings and f-strings.
_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]\s]*\])?")


def _texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml"]
    for folder in ("src", "docs", "examples"):
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.suffix in {".py", ".md", ".js", ".html"}]
    return files


def _install_hints(text: str) -> list[str]:
    """The requirements named by every ``pip install`` in ``text`` (options skipped)."""
    found = []
    for match in re.finditer(r"pip install\s+([^\n]*)", text):
        for token in match.group(1).split():
            token = token.strip("`'\",;:.()")
            if token.startswith("-"):
                continue
            requirement = _REQUIREMENT.match(token)
            if requirement is None or requirement.group() != token:
                break  # the end of the command: prose, a closing quote...
            found.append(token)
    return found


def test_every_install_hint_names_the_distribution() -> None:
    ours = 0
    for path in _texts():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        for requirement in _install_hints(text):
            name = requirement.split("[", 1)[0]
            assert not name.startswith("reprise") or name == DIST, f"{where}: pip install {requirement}"
            ours += name == DIST
        # An extra named on its own (``needs reprise[dask]``) is an install hint too.
        wrong = re.findall(r"(?<![\w-])reprise\[[^\]]*\]", text)
        assert not wrong, f"{where}: {wrong} (the distribution is {DIST})"
    assert ours >= 5, "the install hints were not found: is the scan still reading them?"


def test_install_hint_scan_catches_the_old_name() -> None:
    hints = _install_hints("raise X(f\"needs it: pip install 'reprise[{extra}]' ({exc})\")\n`pip install -q reprise`.")
    assert hints == ["reprise[{extra}]", "reprise"]


def test_project_is_named_reprise_agents_and_keeps_the_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == DIST
    assert project["scripts"] == {"reprise": "reprise.cli:main"}


def test_installed_metadata_matches_the_package() -> None:
    # Needs the package installed under its current name (`pip install -e .` after a rename).
    assert importlib.metadata.version(DIST) == reprise.__version__
    assert Path(reprise.__file__).parent.name == "reprise"
