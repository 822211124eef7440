"""API keys for model providers, from the environment or a credentials file.

Lookup order for a node (the first that has a key wins):

1. the environment variable the node names with ``api_key_env=`` (it must be set);
2. the provider's usual variable: ``OPENAI_API_KEY`` or ``ANTHROPIC_API_KEY``;
3. the credentials file: ``credentials_file=`` on the node, else ``$REPRISE_CREDENTIALS``, else
   ``$XDG_CONFIG_HOME/reprise/credentials.toml`` (``~/.config/reprise/credentials.toml``).

The file is TOML with one table per profile; a node reads the table named by its
``credentials_profile=`` (default: the provider name)::

    [openai]
    api_key = "sk-..."

    [anthropic]
    api_key = "sk-ant-..."

    [local-vllm]                 # credentials_profile="local-vllm"
    api_key = "unused"
    base_url = "http://127.0.0.1:8000/v1"

Keys are held as :class:`pydantic.SecretStr` (their ``repr`` and ``str`` show ``**********``)
and only unwrapped when the SDK client is built; only the *source* of a key (for example
``env:OPENAI_API_KEY``) is ever recorded.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from reprise.errors import NodeExecutionError

__all__ = ["DEFAULT_KEY_ENV", "Credentials", "default_credentials_file", "redact", "resolve_credentials"]

#: The environment variable each built-in provider reads its key from.
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a provider call needs to authenticate. ``source`` says where the key came from
    (safe to record); ``api_key`` is ``None`` when nothing was found."""

    api_key: SecretStr | None
    source: str
    base_url: str | None = None


def default_credentials_file() -> Path:
    """``$REPRISE_CREDENTIALS``, else ``$XDG_CONFIG_HOME/reprise/credentials.toml``."""
    explicit = os.environ.get("REPRISE_CREDENTIALS")
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "reprise" / "credentials.toml"


def _read_profile(file: Path, profile: str, *, required: bool) -> dict[str, object] | None:
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if required:
            raise NodeExecutionError(f"credentials file not found: {file}") from None
        return None
    except tomllib.TOMLDecodeError as exc:
        # The decoder's message names a line and column, never the file's content.
        raise NodeExecutionError(f"credentials file {file} is not valid TOML: {exc}") from None
    table = data.get(profile)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise NodeExecutionError(f"credentials file {file}: [{profile}] must be a table")
    return table


def resolve_credentials(
    provider: str,
    *,
    api_key_env: str | None = None,
    profile: str | None = None,
    credentials_file: str | Path | None = None,
) -> Credentials:
    """Find the credentials for ``provider`` (see the module docstring for the order).

    Raises :class:`NodeExecutionError` when a source the caller named explicitly
    (``api_key_env``, ``credentials_file``) is missing, or the file is malformed."""
    if api_key_env:
        value = os.environ.get(api_key_env)
        if not value:
            raise NodeExecutionError(f"environment variable {api_key_env} (api_key_env) is not set or empty")
        return Credentials(SecretStr(value), f"env:{api_key_env}")
    default_env = DEFAULT_KEY_ENV.get(provider)
    # A named profile is an explicit choice of the file: it wins over the default variable.
    if default_env and profile is None and os.environ.get(default_env):
        return Credentials(SecretStr(os.environ[default_env]), f"env:{default_env}")
    file = Path(credentials_file).expanduser() if credentials_file is not None else default_credentials_file()
    section = profile or provider
    table = _read_profile(file, section, required=credentials_file is not None or profile is not None)
    if table is not None:
        key = table.get("api_key")
        base_url = table.get("base_url")
        if key is not None and not isinstance(key, str):
            raise NodeExecutionError(f"credentials file {file}: [{section}] api_key must be a string")
        if base_url is not None and not isinstance(base_url, str):
            raise NodeExecutionError(f"credentials file {file}: [{section}] base_url must be a string")
        return Credentials(SecretStr(key) if key else None, f"file:{file}[{section}]", base_url)
    if profile is not None:
        raise NodeExecutionError(f"credentials file {file} has no [{section}] table")
    return Credentials(None, "none")


def redact(text: str, credentials: Credentials | None) -> str:
    """``text`` with the key of ``credentials`` replaced by ``[redacted]`` (error messages from a
    server can echo what it received)."""
    if credentials is None or credentials.api_key is None:
        return text
    secret = credentials.api_key.get_secret_value()
    return text.replace(secret, "[redacted]") if secret else text
