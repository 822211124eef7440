"""Run names: short, memorable handles for runs (``hungry-brownie-557``), unique within a project.

A run id (``run_20250615_143000_a1b2c3``) is exact but hard to say; a name is what a person or
an agent types. A name is given (``reprise.init(name=...)``, ``RunContext(name=...)``) or drawn
here: an adjective, a noun and a number, about a million combinations per project, drawn again
when the run root already holds the name in the same project.
"""

from __future__ import annotations

import re
import secrets

from reprise.errors import RunSetupError
from reprise.run._directory import RUN_ID_PATTERN

__all__ = ["check_run_name", "check_project", "generate_run_name", "is_relative_ref"]

_ADJECTIVES = (
    "amber bold brave bright calm clever cosmic crisp curious daring eager fancy fearless fluffy "
    "focused gentle giddy glowing golden happy hidden honest hungry jolly keen kind lively lucky "
    "mellow merry mighty misty nimble noble patient plucky polished quiet quick radiant rapid "
    "rustic shiny silent silver sleepy smooth snowy spicy steady sunny swift tidy vigilant vivid "
    "witty zesty"
).split()
_NOUNS = (
    "acorn badger bagel biscuit brownie burrito cactus canyon cedar cloud comet cookie coral "
    "cricket dumpling falcon fern fig glacier halloumi harbor hazel heron island jasmine kiwi "
    "lagoon lantern lemon lotus mango maple meadow mochi muffin nebula nutmeg otter panda pebble "
    "pepper pho pickle pine planet pretzel quartz radish raven river saffron sparrow sprout "
    "squirrel taco thistle tofu tulip waffle walnut willow"
).split()

#: What a name may not look like: a reference the resolver reads otherwise.
_RELATIVE = re.compile(r"(?:latest|-\d+)\Z")
_MAX_LENGTH = 200


def generate_run_name() -> str:
    """A fresh ``adjective-noun-NNN`` name (uniqueness is the caller's check)."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(1000)}"


def is_relative_ref(ref: str) -> bool:
    """Whether ``ref`` names a run by its place in a listing: ``latest``, ``-1``, ``-2``..."""
    return bool(_RELATIVE.match(ref))


def _check_label(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RunSetupError(f"a run's {what} must be a non-empty string, got {value!r}")
    if len(value) > _MAX_LENGTH:
        raise RunSetupError(f"a run's {what} is at most {_MAX_LENGTH} characters, got {len(value)}")
    if value != value.strip() or any(not ch.isprintable() for ch in value):
        raise RunSetupError(f"a run's {what} {value!r} has leading or trailing spaces or unprintable characters")
    return value


def check_project(project: object) -> str:
    """``project`` if it is a usable project name (printable, at most 200 characters)."""
    return _check_label(project, "project")


def check_run_name(name: object) -> str:
    """``name`` if it can name a run: printable, at most 200 characters, and not read as
    something else by the resolver of a RUN argument (``latest``, ``-1``)."""
    text = _check_label(name, "name")
    if is_relative_ref(text):
        raise RunSetupError(f"{text!r} cannot name a run: it means the newest runs (latest, -1, -2...)")
    if RUN_ID_PATTERN.match(text):
        raise RunSetupError(f"{text!r} cannot name a run: it has the form of a run id")
    return text
