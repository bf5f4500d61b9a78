"""Configuration: an INI file, overridden by the command line, validated up front.

Every key has a default here, and ``conf/chateau.ini`` documents each one. A
wrong value raises :class:`ConfigError` naming ``[section] key`` so start-up
stops with one clear line and nothing starts half-configured.
"""

from __future__ import annotations

import configparser
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from chateau.errors import ConfigError


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise ValueError(f"must not be negative, got {value}")
    return value


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _bcrypt_cost(text: str) -> int:
    value = int(text)
    if not 4 <= value <= 31:
        raise ValueError(f"bcrypt cost must be between 4 and 31, got {value}")
    return value


def _methods(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError("at least one method is needed")
    for name in names:
        if name not in ("local", "ldap"):
            raise ValueError(f"unknown method {name!r} (choose from local, ldap)")
    return names


def _registration(text: str) -> str:
    value = text.strip().lower()
    if value not in ("open", "closed"):
        raise ValueError(f"expected open or closed, got {text!r}")
    return value


def _db_url(text: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(text)
    except ArgumentError as exc:
        raise ValueError(str(exc)) from None
    return text


def _endpoints(text: str) -> tuple[str, ...]:
    values = _words(text)
    if not values:
        raise ValueError("at least one endpoint is needed")
    return values


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, ...] = ("tcp:8888:interface=127.0.0.1",)
    allowed_origins: tuple[str, ...] = ("*",)
    max_message_size: int = 65536
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 10.0
    open_handshake_timeout: float = 10.0


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///chateau.sqlite3"
    threads: int = 4


@dataclass(frozen=True)
class AuthConfig:
    methods: tuple[str, ...] = ("local",)
    registration: str = "open"
    bcrypt_cost: int = 12
    bcrypt_threads: int = 2
    max_pending_signins: int = 64


@dataclass(frozen=True)
class ChatConfig:
    max_content_length: int = 16384
    max_group_members: int = 1000


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)


# (section, key) -> parser. The section name is also the Config attribute.
_PARSERS: dict[tuple[str, str], Callable[[str], Any]] = {
    ("server", "listen"): _endpoints,
    ("server", "allowed_origins"): _words,
    ("server", "max_message_size"): _positive_int,
    ("server", "auto_ping_interval"): _non_negative_float,
    ("server", "auto_ping_timeout"): _non_negative_float,
    ("server", "open_handshake_timeout"): _non_negative_float,
    ("database", "url"): _db_url,
    ("database", "threads"): _positive_int,
    ("auth", "methods"): _methods,
    ("auth", "registration"): _registration,
    ("auth", "bcrypt_cost"): _bcrypt_cost,
    ("auth", "bcrypt_threads"): _positive_int,
    ("auth", "max_pending_signins"): _positive_int,
    ("chat", "max_content_length"): _positive_int,
    ("chat", "max_group_members"): _positive_int,
}


def _parse(section: str, key: str, raw: str) -> Any:
    parser = _PARSERS.get((section, key))
    if parser is None:
        raise ConfigError(f"[{section}] {key}: unknown key")
    try:
        return parser(raw)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {key}: {exc}") from None


def load_config(
    path: str | None = None,
    overrides: Mapping[tuple[str, str], str] | None = None,
) -> Config:
    """Read *path* (if given) and apply *overrides*, which win over the file.

    Overrides are raw strings keyed by ``(section, key)``, as the command line
    gives them, so both go through the same validation.
    """
    raw: dict[tuple[str, str], str] = {}
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as handle:
                parser.read_file(handle)
        except OSError as exc:
            raise ConfigError(f"--config {path}: {exc.strerror}") from None
        except configparser.Error as exc:
            raise ConfigError(f"--config {path}: {exc.message}") from None
        known_sections = {section for section, _ in _PARSERS}
        for section in parser.sections():
            if section not in known_sections:
                raise ConfigError(f"[{section}]: unknown section in {path}")
            for key, value in parser.items(section):
                raw[(section, key)] = value
    raw.update(overrides or {})

    sections: dict[str, dict[str, Any]] = {}
    for (section, key), value in raw.items():
        sections.setdefault(section, {})[key] = _parse(section, key, value)

    config = Config()
    for section, values in sections.items():
        current = getattr(config, section)
        config = dataclasses.replace(
            config, **{section: dataclasses.replace(current, **values)}
        )
    return config


def documented_keys() -> Iterable[tuple[str, str]]:
    """Every known ``(section, key)``; the example config is tested against it."""
    return _PARSERS.keys()
