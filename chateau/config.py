"""Configuration: an INI file, overridden by the command line, validated up front.

Every key has a default here, and ``conf/chateau.ini`` documents each one. A
wrong value raises :class:`ConfigError` naming ``[section] key`` so start-up
stops with one clear line and nothing starts half-configured.

One concern: the schema of the configuration (every section, key, default
and check); it grows with each key, and reading it stays one place.
"""

from __future__ import annotations

import configparser
import dataclasses
import os
import re
from urllib.parse import urlsplit
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


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be a positive number, got {value}")
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
    if value not in ("open", "closed", "invite"):
        raise ValueError(f"expected open, closed or invite, got {text!r}")
    return value


def _db_url(text: str) -> str:
    from chateau.store.engine import check_url

    check_url(text)
    return text


def _endpoints(text: str) -> tuple[str, ...]:
    values = _words(text)
    if not values:
        raise ValueError("at least one endpoint is needed")
    return values


def _networks(text: str) -> tuple[str, ...]:
    """Addresses and CIDR networks, separated by commas or spaces, canonical."""
    import ipaddress

    networks = []
    for item in re.split(r"[\s,]+", text.strip()):
        if not item:
            continue
        try:
            networks.append(str(ipaddress.ip_network(item, strict=True)))
        except ValueError as exc:
            raise ValueError(
                f"{item!r} is not an IP address or network (e.g. 10.0.0.5, 10.0.0.0/8): {exc}"
            ) from None
    return tuple(networks)


def _text(text: str) -> str:
    return text.strip()


def _ldap_urls(text: str) -> tuple[str, ...]:
    from urllib.parse import urlsplit

    urls = _words(text)
    for url in urls:
        try:
            parts = urlsplit(url)
            parts.port  # raises ValueError on a bad port
        except ValueError as exc:
            raise ValueError(f"bad URL {url!r}: {exc}") from None
        if parts.scheme.lower() not in ("ldap", "ldaps"):
            raise ValueError(f"{url!r}: only ldaps:// and ldap:// URLs are supported")
        if not parts.hostname:
            raise ValueError(f"{url!r}: the URL names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"{url!r}: give only scheme, host and port (set base_dn apart)")
    return urls


def _template(text: str) -> str:
    value = text.strip()
    if value and "{username}" not in value:
        raise ValueError("must contain {username}")
    return value


def _user_filter(text: str) -> str:
    value = _template(text)
    if not value:
        raise ValueError("must not be empty")
    if not (value.startswith("(") and value.endswith(")")):
        raise ValueError(f"an LDAP filter is enclosed in parentheses, got {value!r}")
    # Imported here: only configs with directory sign-in pay for ldap3.
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter

    try:
        parse_filter(value.replace("{username}", "x"), None, True, False, None, False)
    except LDAPException as exc:
        raise ValueError(f"not a valid LDAP filter: {value!r} ({exc})") from None
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _ldap_filter(text: str) -> str:
    """An LDAP filter without placeholders; empty means none."""
    value = text.strip()
    if not value:
        return value
    if not (value.startswith("(") and value.endswith(")")):
        raise ValueError(f"an LDAP filter is enclosed in parentheses, got {value!r}")
    from ldap3.core.exceptions import LDAPException
    from ldap3.operation.search import parse_filter

    try:
        parse_filter(value, None, True, False, None, False)
    except LDAPException as exc:
        raise ValueError(f"not a valid LDAP filter: {value!r} ({exc})") from None
    return value


def _sync_prefix(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,15}", value):
        raise ValueError(
            f"{value!r}: up to 16 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def _search_language(text: str) -> str:
    value = text.strip().lower()
    if not re.fullmatch(r"[a-z][a-z_]{0,62}", value):
        raise ValueError(
            f"{text.strip()!r}: a text search language such as simple, english or french"
        )
    return value


def _erase_messages(text: str) -> str:
    value = text.strip().lower()
    if value == "anonymize":
        value = "anonymise"
    if value not in ("erase", "anonymise"):
        raise ValueError(f"{text.strip()!r}: erase or anonymise")
    return value


def _attribute(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+", value):
        raise ValueError(f"not an LDAP attribute name: {value!r}")
    return value


def _redis_url(text: str) -> str:
    # The URL may hold a password: no message here repeats any part of it.
    value = text.strip()
    if not value:
        return ""
    try:
        parsed = urlsplit(value)
        hostname = parsed.hostname
    except ValueError:
        raise ValueError("not a URL") from None
    if parsed.scheme not in ("redis", "rediss") or not hostname:
        raise ValueError(
            "expected redis://[[USER]:PASSWORD@]HOST:PORT/DB or rediss://... for TLS"
        )
    try:
        parsed.port
    except ValueError:
        raise ValueError("the port is not a number") from None
    database = parsed.path.lstrip("/")
    if database and not database.isdigit():
        raise ValueError("the database must be a number")
    if parsed.query or parsed.fragment:
        raise ValueError("no ?query or #fragment: TLS files are [cluster] redis_*_file keys")
    if parsed.username and parsed.password is None:
        raise ValueError("a user name without a password: use redis://USER:PASSWORD@HOST")
    return value


def _pem_file(marker: str) -> Callable[[str], str]:
    """A readable PEM file holding *marker* (checked at start-up, before anything runs)."""

    def check(text: str) -> str:
        value = text.strip()
        if not value:
            return ""
        try:
            with open(value, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise ValueError(f"cannot read {value}: {exc.strerror}") from None
        if marker.encode() not in data:
            raise ValueError(f"{value} holds no {marker} (PEM)")
        return value

    return check


def _node_name(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", value):
        raise ValueError(
            "use 1-64 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
        )
    return value


def _presence_ttl(text: str) -> float:
    value = _positive_float(text)
    if value < 1:
        raise ValueError("must be at least 1 second")
    return value


@dataclass(frozen=True)
class ServerConfig:
    listen: tuple[str, ...] = ("tcp:8888:interface=127.0.0.1",)
    allowed_origins: tuple[str, ...] = ("*",)
    max_message_size: int = 65536
    auto_ping_interval: float = 30.0
    auto_ping_timeout: float = 10.0
    open_handshake_timeout: float = 10.0
    # Reverse proxies whose X-Forwarded-For / Forwarded headers are believed.
    trusted_proxies: tuple[str, ...] = ()
    # GET /api/users/{name} without a session key (Authorization: Bearer).
    public_user_lookup: bool = False


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
    signin_timeout: float = 30.0


@dataclass(frozen=True)
class LdapConfig:
    """Directory sign-in; conf/ldap.example.ini and docs/ldap.md explain each key."""

    url: tuple[str, ...] = ()
    start_tls: bool = False
    ca_file: str = ""
    base_dn: str = ""
    user_filter: str = "(uid={username})"
    username_attribute: str = "uid"
    bind_dn: str = ""
    bind_password: str = field(default="", repr=False)
    user_dn_template: str = ""
    required_group: str = ""
    display_name_attribute: str = "cn"
    timeout: int = 5  # whole seconds: ldap3 cannot take fractions
    threads: int = 4
    # The directory's changes reaching Chateau (docs/ldap.md, docs/accounts.md).
    recheck_interval: float = 900.0
    disabled_filter: str = ""
    id_attribute: str = "entryUUID"
    rename_hold_days: float = 90.0
    sync_base: str = ""
    sync_filter: str = "(objectClass=groupOfNames)"
    sync_name_attribute: str = "cn"
    sync_member_attribute: str = "member"
    sync_prefix: str = ""
    sync_interval: float = 900.0


@dataclass(frozen=True)
class ChatConfig:
    max_content_length: int = 16384
    max_group_members: int = 1000
    session_lifetime_days: float = 30.0
    store_messages: bool = True
    account_check_interval: float = 5.0
    # How often each node looks for revoked session keys to close their
    # connections, and for the notices of chateau-admin's changes (chateau.notices).
    revocation_check_interval: float = 0.5
    # What an erased account leaves behind: "erase" (content gone, sender a
    # deleted user) or "anonymise" (content kept, sender a deleted user).
    erase_messages: str = "erase"
    # Days messages are kept (0: forever); a group may set its own.
    retention_days: int = 0
    # Days audit log rows are kept (0: forever).
    audit_retention_days: int = 365
    # Other members are told of a read (ReadRecv) only in groups of at most
    # this many members; the reader's own devices always are.
    read_receipts_max_group: int = 100


@dataclass(frozen=True)
class SearchConfig:
    """Message search (SearchRequest); docs/protocol.md explains it."""

    # The word stemming of PostgreSQL's text search configuration of this
    # name, and of SQLite's FTS5 tokenizer (docs/protocol.md, Search).
    language: str = "simple"


@dataclass(frozen=True)
class LimitsConfig:
    message_rate: float = 20.0
    message_burst: int = 60
    rate_strikes: int = 20
    max_connections: int = 10000
    max_connections_per_address: int = 200
    send_buffer: int = 1048576
    max_groups_per_user: int = 500
    signin_free_failures: int = 5
    signin_max_delay: float = 60.0
    signin_throttle_entries: int = 30_000
    # The HTTP side (docs/security.md): request heads and bodies, and the
    # requests and WebSocket handshakes of one address per second.
    max_request_body: int = 65536
    max_header_bytes: int = 32768
    max_headers: int = 100
    http_request_rate: float = 50.0
    http_request_burst: int = 200
    handshake_rate: float = 10.0
    handshake_burst: int = 50
    http_rate_entries: int = 30_000
    max_sessions_per_user: int = 20
    max_pending_contact_requests: int = 1000
    max_random_chats_per_user: int = 10
    groups_created_per_hour: int = 20
    signups_per_hour_per_address: int = 5
    signins_per_minute_per_address: int = 30
    # Open reports one user may have made in the last hour (ReportRequest).
    reports_per_hour: int = 20


@dataclass(frozen=True)
class ClusterConfig:
    """Several nodes joined by Redis; docs/cluster.md explains each key."""

    # Empty: this process runs alone, exactly as without clustering.
    redis_url: str = field(default="", repr=False)
    # Empty: the host name plus the first listening port.
    node_name: str = ""
    presence_ttl: float = 10.0
    fence_timeout: float = 2.0
    # For rediss://: the CA that signed Redis's certificate (empty: the
    # system's CAs), and this node's own certificate and key if Redis asks.
    redis_ca_file: str = ""
    redis_cert_file: str = ""
    redis_key_file: str = ""


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    chat: ChatConfig = field(default_factory=ChatConfig)
    ldap: LdapConfig = field(default_factory=LdapConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    search: SearchConfig = field(default_factory=SearchConfig)


# (section, key) -> parser. The section name is also the Config attribute.
_PARSERS: dict[tuple[str, str], Callable[[str], Any]] = {
    ("server", "listen"): _endpoints,
    ("server", "allowed_origins"): _words,
    ("server", "max_message_size"): _positive_int,
    ("server", "auto_ping_interval"): _non_negative_float,
    ("server", "auto_ping_timeout"): _non_negative_float,
    ("server", "open_handshake_timeout"): _non_negative_float,
    ("server", "trusted_proxies"): _networks,
    ("server", "public_user_lookup"): _parse_bool,
    ("database", "url"): _db_url,
    ("database", "threads"): _positive_int,
    ("auth", "methods"): _methods,
    ("auth", "registration"): _registration,
    ("auth", "bcrypt_cost"): _bcrypt_cost,
    ("auth", "bcrypt_threads"): _positive_int,
    ("auth", "max_pending_signins"): _positive_int,
    ("auth", "signin_timeout"): _positive_float,
    ("chat", "max_content_length"): _positive_int,
    ("chat", "max_group_members"): _positive_int,
    ("chat", "session_lifetime_days"): _positive_float,
    ("chat", "store_messages"): _parse_bool,
    ("chat", "erase_messages"): _erase_messages,
    ("chat", "retention_days"): _non_negative_int,
    ("chat", "audit_retention_days"): _non_negative_int,
    ("chat", "read_receipts_max_group"): _positive_int,
    ("search", "language"): _search_language,
    ("limits", "message_rate"): _positive_float,
    ("limits", "message_burst"): _positive_int,
    ("limits", "rate_strikes"): _positive_int,
    ("limits", "max_connections"): _positive_int,
    ("limits", "max_connections_per_address"): _positive_int,
    ("limits", "send_buffer"): _positive_int,
    ("limits", "max_groups_per_user"): _positive_int,
    ("limits", "signin_free_failures"): _positive_int,
    ("limits", "signin_max_delay"): _positive_float,
    ("limits", "signin_throttle_entries"): _positive_int,
    ("limits", "max_request_body"): _positive_int,
    ("limits", "max_header_bytes"): _positive_int,
    ("limits", "max_headers"): _positive_int,
    ("limits", "http_request_rate"): _positive_float,
    ("limits", "http_request_burst"): _positive_int,
    ("limits", "handshake_rate"): _positive_float,
    ("limits", "handshake_burst"): _positive_int,
    ("limits", "http_rate_entries"): _positive_int,
    ("chat", "account_check_interval"): _positive_float,
    ("chat", "revocation_check_interval"): _positive_float,
    ("limits", "max_sessions_per_user"): _positive_int,
    ("limits", "max_pending_contact_requests"): _positive_int,
    ("limits", "max_random_chats_per_user"): _positive_int,
    ("limits", "groups_created_per_hour"): _positive_int,
    ("limits", "signups_per_hour_per_address"): _positive_int,
    ("limits", "signins_per_minute_per_address"): _positive_int,
    ("limits", "reports_per_hour"): _positive_int,
    ("cluster", "redis_url"): _redis_url,
    ("cluster", "node_name"): _node_name,
    ("cluster", "presence_ttl"): _presence_ttl,
    ("cluster", "fence_timeout"): _positive_float,
    ("cluster", "redis_ca_file"): _pem_file("CERTIFICATE-----"),
    ("cluster", "redis_cert_file"): _pem_file("CERTIFICATE-----"),
    ("cluster", "redis_key_file"): _pem_file("PRIVATE KEY-----"),
    ("ldap", "url"): _ldap_urls,
    ("ldap", "start_tls"): _parse_bool,
    ("ldap", "ca_file"): _text,
    ("ldap", "base_dn"): _text,
    ("ldap", "user_filter"): _user_filter,
    ("ldap", "username_attribute"): _attribute,
    ("ldap", "bind_dn"): _text,
    ("ldap", "bind_password"): str,
    ("ldap", "user_dn_template"): _template,
    ("ldap", "required_group"): _text,
    ("ldap", "display_name_attribute"): _attribute,
    ("ldap", "timeout"): _positive_int,
    ("ldap", "threads"): _positive_int,
    ("ldap", "recheck_interval"): _positive_float,
    ("ldap", "disabled_filter"): _ldap_filter,
    ("ldap", "id_attribute"): _attribute,
    ("ldap", "rename_hold_days"): _non_negative_float,
    ("ldap", "sync_base"): _text,
    ("ldap", "sync_filter"): _ldap_filter,
    ("ldap", "sync_name_attribute"): _attribute,
    ("ldap", "sync_member_attribute"): _attribute,
    ("ldap", "sync_prefix"): _sync_prefix,
    ("ldap", "sync_interval"): _positive_float,
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
    if "ldap" in config.auth.methods:
        check_ldap(config.ldap)
    check_cluster(config.cluster)
    return config


def check_cluster(cluster: ClusterConfig) -> None:
    """Cross-field checks of ``[cluster]``: the TLS files go with rediss:// and together."""
    files = [key for key in ("redis_ca_file", "redis_cert_file", "redis_key_file")
             if getattr(cluster, key)]
    if files and not cluster.redis_url.startswith("rediss://"):
        raise ConfigError(f"[cluster] {files[0]}: only used with a rediss:// redis_url (TLS)")
    if cluster.redis_key_file and not cluster.redis_cert_file:
        raise ConfigError("[cluster] redis_key_file: set redis_cert_file too")
    if cluster.redis_cert_file and not cluster.redis_key_file:
        # The key may sit in the certificate's file.
        with open(cluster.redis_cert_file, "rb") as handle:
            if b"PRIVATE KEY-----" not in handle.read():
                raise ConfigError(
                    "[cluster] redis_key_file: required, as redis_cert_file holds no private key"
                )


def check_ldap(ldap: LdapConfig) -> None:
    """Cross-field checks of ``[ldap]``, run when directory sign-in is on.

    ``chateau-admin ldap-check`` calls it too, whatever ``[auth] methods`` says.
    """
    if not ldap.url:
        raise ConfigError("[ldap] url: required for directory sign-in (ldap in [auth] methods)")
    if not ldap.base_dn and not ldap.user_dn_template:
        raise ConfigError(
            "[ldap] base_dn: required (the search base), unless user_dn_template is set "
            "for a direct bind"
        )
    if ldap.base_dn and ldap.user_dn_template:
        raise ConfigError(
            "[ldap] user_dn_template: set either base_dn (search, then bind) or "
            "user_dn_template (direct bind), not both"
        )
    if bool(ldap.bind_dn) != bool(ldap.bind_password):
        key = "bind_password" if ldap.bind_dn else "bind_dn"
        raise ConfigError(
            f"[ldap] {key}: bind_dn and bind_password go together (leave both empty "
            "for an anonymous search)"
        )
    if not ldap.start_tls:
        plain = [url for url in ldap.url if url.lower().startswith("ldap://")]
        if plain:
            raise ConfigError(
                f"[ldap] start_tls: {plain[0]} would send passwords in clear; set "
                "start_tls = true or use ldaps://"
            )
    if ldap.ca_file and not os.path.isfile(ldap.ca_file):
        raise ConfigError(f"[ldap] ca_file: no such file: {ldap.ca_file}")


def documented_keys() -> Iterable[tuple[str, str]]:
    """Every known ``(section, key)``; the example config is tested against it."""
    return _PARSERS.keys()
