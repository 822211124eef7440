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

A server can echo a key back (in an error body, a reply, a header, a model name). Everything a
provider returns or raises therefore passes through :func:`redact_value` before the node stores
or shows any of it: every credential the node knows (its own key and the keys in the built-in
providers' environment variables), also in its escaped forms, becomes ``[redacted]``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import SecretStr

from reprise.errors import NodeExecutionError

__all__ = [
    "DEFAULT_KEY_ENV",
    "REDACTED",
    "Credentials",
    "default_credentials_file",
    "redact",
    "redact_value",
    "resolve_credentials",
]

#: The environment variable each built-in provider reads its key from.
DEFAULT_KEY_ENV: dict[str, str] = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

#: What a credential is replaced by in a text from a server.
REDACTED = "[redacted]"

#: Shorter values are placeholders (``unused`` for a local server that takes no key), not
#: secrets; replacing them would mangle ordinary words of a model's answer.
_MIN_SECRET_LENGTH = 8


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


def _secret_forms(credentials: Credentials | None) -> list[str]:
    """The texts to replace: each known credential as it is and as JSON, ``repr`` and URLs
    escape it (an SDK's message may quote a header as ``b'Bearer ...'``), longest first."""
    secrets = {os.environ.get(var, "") for var in DEFAULT_KEY_ENV.values()}
    if credentials is not None and credentials.api_key is not None:
        secrets.add(credentials.api_key.get_secret_value())
    forms: set[str] = set()
    for secret in secrets:
        if len(secret.strip()) < _MIN_SECRET_LENGTH:
            continue
        forms.update(
            (secret, secret.strip(), json.dumps(secret)[1:-1], repr(secret)[1:-1], repr(secret.encode())[2:-1])
        )
        forms.add(quote(secret, safe=""))
    return sorted(forms, key=len, reverse=True)


def redact(text: str, credentials: Credentials | None) -> str:
    """``text`` with every credential the node knows (see :func:`redact_value`) replaced by
    ``[redacted]``."""
    return str(_redact(text, _secret_forms(credentials)))


def redact_value(value: Any, credentials: Credentials | None) -> Any:
    """``value`` with every credential replaced by ``[redacted]`` in every string it holds
    (dict keys and values, list and tuple items, dataclass fields, at any depth); other values are returned as
    they are. The credentials are the key of ``credentials`` and the keys in the built-in
    providers' environment variables (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``)."""
    forms = _secret_forms(credentials)
    return _redact(value, forms) if forms else value


def _redact(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        for form in forms:
            value = value.replace(form, REDACTED)
        return value
    if isinstance(value, dict):
        return {_redact(k, forms): _redact(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, forms) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact(v, forms) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _redact(getattr(value, f.name), forms) for f in dataclasses.fields(value) if f.init}
        return dataclasses.replace(value, **fields)
    return value
