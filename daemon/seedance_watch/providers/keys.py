"""An API key and where it is looked for: the same four places for every provider.

In order: ``$CREDENTIALS_DIRECTORY/<credential>`` (systemd ``LoadCredential=``),
the file named by ``<FILE_ENV>`` (Docker secrets), ``<ENV>``, then a file under the
user's home (where the provider's own tools keep it).  Each provider names its
own (:class:`~seedance_watch.providers.base.KeySources`).  The key is never part of
the config, and :class:`ApiKey` refuses to print, copy or pickle its value.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from seedance_watch.errors import ConfigError
from seedance_watch.providers.base import KeySources

__all__ = ["ApiKey", "load_api_key"]


class ApiKey:
    """An API key and where it came from.  Printing it never shows it."""

    __slots__ = ("__value", "source")

    def __init__(self, value: str, source: str) -> None:
        self.__value = value
        self.source = source

    def reveal(self) -> str:
        """The key itself: only for the request header."""
        return self.__value

    def __repr__(self) -> str:
        return f"ApiKey(source={self.source!r}, value='***')"

    __str__ = __repr__

    def __reduce_ex__(self, protocol: typing.SupportsIndex) -> NoReturn:
        # A pickled key would land in the clear wherever the pickle goes.
        raise TypeError("ApiKey cannot be pickled")

    def __copy__(self) -> ApiKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ApiKey:
        return self


def _key_from_file(path: Path, source: str, *, must_exist: bool) -> ApiKey | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not must_exist:
            return None
        raise ConfigError(f"API key file from {source} does not exist") from None
    except OSError as exc:
        raise ConfigError(
            f"API key file from {source} cannot be read: {exc.strerror or type(exc).__name__}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"API key from {source} is not UTF-8 text") from None
    return _checked(text.strip(), source)


def _checked(value: str, source: str) -> ApiKey:
    if not value:
        raise ConfigError(f"API key from {source} is empty")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        # It goes into an HTTP header; a stray newline would corrupt the request.
        raise ConfigError(f"API key from {source} contains whitespace or control characters")
    return ApiKey(value, source)


def load_api_key(
    environ: Mapping[str, str], sources: KeySources, home: Path | None = None
) -> ApiKey:
    """Find the API key: systemd credential, key file, env var, then the home file."""
    credential = sources.credential
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        key = _key_from_file(
            Path(cred_dir) / credential,
            f"$CREDENTIALS_DIRECTORY/{credential}",
            must_exist=False,
        )
        if key is not None:
            return key
    if sources.file_env in environ:
        named = environ[sources.file_env]
        if not named:
            raise ConfigError(f"{sources.file_env} is set but empty; it must name a file")
        key = _key_from_file(
            Path(named).expanduser(), f"{sources.file_env} ({named})", must_exist=True
        )
        assert key is not None
        return key
    if sources.env in environ:
        return _checked(environ[sources.env].strip(), sources.env)
    home_dir = home if home is not None else Path.home()
    shown = f"~/{sources.home}"
    key = _key_from_file(home_dir / sources.home, shown, must_exist=False)
    if key is not None:
        return key
    raise ConfigError(
        f"no {sources.provider} API key found; looked in $CREDENTIALS_DIRECTORY/"
        f"{credential} (systemd LoadCredential=), the file named by "
        f"{sources.file_env}, the {sources.env} variable, and {shown}"
    )
