"""The directory client: LDAP sign-in over TLS, blocking, with ldap3.

Nothing here knows Twisted. Every call blocks: the server runs it on the
directory checker's own bounded :class:`ThreadPool` (see
``chateau.auth.ldap``), and ``chateau-admin ldap-check`` calls it directly and
prints each step. Each attempt opens a fresh connection (ldap3's SYNC
connections are not thread-safe, so none is ever shared) with socket
timeouts, tries each configured URL in turn, and ends in a
:class:`DirectoryUser` or a :class:`DirectoryError` that says, apart, what the
client may be told and what the log should say.

One concern, the LDAP conversation and its failure modes, hence its length.
"""

from __future__ import annotations

import ast
import re
import socket
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, TypeVar
from urllib.parse import urlsplit

from ldap3 import BASE, NONE, SIMPLE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import (
    LDAPInvalidDnError,
    LDAPBindError,
    LDAPCertificateError,
    LDAPCommunicationError,
    LDAPException,
    LDAPResponseTimeoutError,
    LDAPStartTLSError,
)
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn, to_dn

from chateau.auth.passwords import password_problem
from chateau.config import LdapConfig
from chateau.names import USERNAME_RULE, canonical, check_username

T = TypeVar("T")

# Steps, in the order an attempt takes them; chateau-admin prints one line each.
CONNECT = "connect"
TLS = "tls"
SERVICE_BIND = "service-bind"
SEARCH = "search"
BIND = "bind"
GROUP = "group"
ENABLED = "enabled"  # not matched by [ldap] disabled_filter

Report = Callable[[str, bool, str], None]

WRONG_CREDENTIALS = "authentication failed: wrong username or password"
UNAVAILABLE_DETAIL = (
    "authentication failed: the directory server could not be reached; try again later"
)
TLS_DETAIL = (
    "authentication failed: the directory server's TLS certificate was not accepted; "
    "please tell the server administrator"
)
MISCONFIGURED_DETAIL = (
    "authentication failed: directory sign-in is misconfigured on this server; "
    "please tell the server administrator"
)

# LDAP result codes this module tells apart.
_SUCCESS = 0
_SIZE_LIMIT_EXCEEDED = 4
_NO_SUCH_OBJECT = 32
_INVALID_CREDENTIALS = 49
_BUSY = 51
_UNAVAILABLE = 52

_NO_ATTRIBUTES = "1.1"

# Entries per page of the group sync's paged search (RFC 2696).
_GROUP_PAGE = 500
_PAGED_RESULTS = "1.2.840.113556.1.4.319"
# A uniqueMember value may end in an optional bit string: "DN#'0101'B".
_UNIQUE_MEMBER_UID = re.compile(r"#'[01]*'B$")

# ldap3 errors that mean the server went away or went quiet mid-attempt (a
# rebind wraps a dropped connection in LDAPBindError); the next URL is tried.
_CUT_OFF = (LDAPCommunicationError, LDAPResponseTimeoutError, LDAPBindError)


def _silent(step: str, ok: bool, message: str) -> None:
    """The default report: the checker logs outcomes itself."""


class DirectoryError(Exception):
    """A directory sign-in failed.

    ``detail`` is safe to show the client; ``reason`` is for the server log
    and says what actually went wrong (never a password).
    """

    def __init__(self, detail: str, reason: str | None = None) -> None:
        super().__init__(reason or detail)
        self.detail = detail
        self.reason = reason or detail


class DirectoryRefused(DirectoryError):
    """The directory answered: these credentials do not sign in."""


class DirectoryMisconfigured(DirectoryError):
    """The directory answered, but not as the configuration expects."""


class DirectoryUnavailable(DirectoryError):
    """No usable answer from a server: down, silent or cut off."""


class DirectoryTlsError(DirectoryUnavailable):
    """The TLS handshake failed: untrusted certificate, wrong host name..."""


@dataclass(frozen=True)
class DirectoryUser:
    """Who the directory says signed in."""

    username: str  # canonical (chateau.names), the name everybody sees
    uid: str  # the directory's own spelling
    dn: str
    display_name: str | None
    # The entry's [ldap] id_attribute (entryUUID, AD's objectGUID) as text:
    # who this is for good, whatever their uid becomes. None if it has none.
    directory_id: str | None = None


# What a re-check of an account found (Directory.account_status): it may
# still sign in, or why not.
ACCOUNT_OK = "ok"
ACCOUNT_MISSING = "missing"
ACCOUNT_DISABLED = "disabled"
ACCOUNT_NOT_IN_GROUP = "not_in_group"


@dataclass(frozen=True)
class AccountStatus:
    """Whether a directory account may still sign in, as the directory says now."""

    status: str  # one of the ACCOUNT_* values
    uid: str | None = None  # the entry's username_attribute now, in the directory's spelling
    dn: str | None = None


@dataclass(frozen=True)
class DirectoryGroup:
    """A group the directory has under ``[ldap] sync_base`` (group sync)."""

    dn: str
    name: str  # the [ldap] sync_name_attribute value, as the directory spells it
    # The members' [ldap] username_attribute values, as the directory spells them:
    # memberUid values as they are, member DNs resolved (unknown ones left out).
    members: tuple[str, ...]
    # Member DNs that did not lead to a person under the people's base.
    unresolved: int = 0


@dataclass(frozen=True)
class _Entry:
    dn: str
    attributes: dict[str, list[str]]  # lower-cased attribute name -> values

    raw: dict[str, list[bytes]] = field(default_factory=dict)  # lower-cased name -> bytes

    def values(self, attribute: str) -> list[str]:
        return self.attributes.get(attribute.lower(), [])

    def stable_id(self, attribute: str) -> str | None:
        """The entry's stable id as text: objectGUID's 16 bytes as a GUID, else the value."""
        raw = self.raw.get(attribute.lower(), [])
        if not raw:
            return None
        if attribute.lower() == "objectguid" and len(raw[0]) == 16:
            return str(uuid.UUID(bytes_le=raw[0]))
        return raw[0].decode("utf-8", "replace").lower()


def id_filter(attribute: str, directory_id: str) -> str:
    """An LDAP filter matching the entry whose *attribute* is *directory_id*.

    objectGUID is binary: its text form (``_Entry.stable_id``) goes back to
    bytes, each escaped, as Active Directory expects.
    """
    if attribute.lower() == "objectguid":
        data = uuid.UUID(directory_id).bytes_le
        return f"({attribute}=" + "".join(f"\\{byte:02x}" for byte in data) + ")"
    return f"({attribute}={escape_filter_chars(directory_id)})"


@dataclass(frozen=True)
class _Endpoint:
    url: str
    host: str
    port: int
    use_ssl: bool


def _endpoints(urls: Iterable[str]) -> list[_Endpoint]:
    endpoints = []
    for url in urls:
        parts = urlsplit(url)
        use_ssl = parts.scheme.lower() == "ldaps"
        port = parts.port or (636 if use_ssl else 389)
        endpoints.append(_Endpoint(url.rstrip("/"), parts.hostname or "", port, use_ssl))
    return endpoints


class _VerifiedTls(Tls):
    """ldap3 TLS that always verifies the chain and the host name.

    ldap3's own ``Tls`` turns OpenSSL's host name check off and matches names
    itself afterwards (on newer Pythons ignoring IP addresses); here OpenSSL
    checks both during the handshake, from one shared context.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        host = connection.server.host.strip("[]")
        connection.socket = self._context.wrap_socket(
            connection.socket, server_hostname=host, do_handshake_on_connect=do_handshake
        )


def make_tls_context(ca_file: str) -> ssl.SSLContext:
    """CERT_REQUIRED and host name checks, TLS 1.2 or later, never turned off."""
    context = ssl.create_default_context(cafile=ca_file or None)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


_NOISE = re.compile(
    r"^(?:socket ssl wrapping error|socket connection error while opening|"
    r"wrap socket error|startTLS failed)\s*[-:]\s*|\s*\(_ssl\.c:\d+\)"
)


def _message(exc: BaseException) -> str:
    """The readable message inside *exc*.

    ldap3 re-raises errors as new types built from ``str()`` of the old ones,
    so a message can arrive wrapped in a tuple's repr, one layer per re-raise.
    """
    text = str(exc).strip()
    for _ in range(5):
        if not (text.startswith("(") and text.endswith(",)")):
            break
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            break
        if not (isinstance(value, tuple) and value):
            break
        text = str(value[0]).strip()
    return _NOISE.sub("", text).strip() or type(exc).__name__


def _in_tls_phase(exc: BaseException) -> bool:
    """Whether *exc* happened after TCP connected, during the TLS handshake."""
    return _is_tls_failure(exc) or "ssl wrapping" in str(exc) or isinstance(
        exc, LDAPStartTLSError
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """The exceptions behind *exc*; ldap3 bundles one per address it tried."""
    if len(exc.args) > 1 and isinstance(exc.args[1], list):
        found = [item[0] for item in exc.args[1] if isinstance(item, tuple) and item]
        if found:
            return found
    return [exc]


def _is_tls_failure(exc: BaseException) -> bool:
    return isinstance(exc, (ssl.SSLError, LDAPCertificateError)) or (
        isinstance(exc, LDAPStartTLSError) and not isinstance(exc, (TimeoutError, OSError))
        and "startTLS failed" not in str(exc)
    )


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (TimeoutError, socket.timeout)) or "timed out" in str(exc)


def _tls_hint(message: str) -> str:
    lowered = message.lower()
    if "mismatch" in lowered or "doesn't match" in lowered:
        return " (the host name in [ldap] url must be one the certificate names)"
    if "verify failed" in lowered:
        return " (is [ldap] ca_file the CA that signed the directory's certificate?)"
    return ""


class Directory:
    """Blocking LDAP sign-in as configured by ``[ldap]``; call it on a worker thread."""

    def __init__(self, settings: LdapConfig) -> None:
        self._settings = settings
        self._endpoints = _endpoints(settings.url)
        self._tls_context = make_tls_context(settings.ca_file)
        self.timeout = settings.timeout

    @property
    def urls(self) -> list[str]:
        return [endpoint.url for endpoint in self._endpoints]

    @property
    def mode(self) -> str:
        settings = self._settings
        if settings.user_dn_template:
            return "direct bind"
        if settings.bind_dn:
            return "search as service account, then bind"
        return "anonymous search, then bind"

    # -- public, blocking ---------------------------------------------------

    def authenticate(
        self, username: str, password: str, report: Report = _silent,
        cancelled: threading.Event | None = None,
    ) -> DirectoryUser:
        """Sign *username* in with *password*; raise a DirectoryError if not."""
        problem = password_problem(password)
        if problem is not None:
            raise DirectoryRefused(f"authentication failed: {problem.reason}")
        if check_username(username) is None:
            raise DirectoryRefused(f"authentication failed: {USERNAME_RULE}")
        return self._each_server(
            lambda conn: self._sign_in(conn, username, password, report), report, cancelled
        )

    def has_user(
        self, username: str, report: Report = _silent,
        cancelled: threading.Event | None = None,
    ) -> bool:
        """Whether the directory knows *username*; raise DirectoryError if it cannot say."""
        if check_username(username) is None:
            return False
        return self._each_server(lambda conn: self._lookup(conn, username, report),
                                 report, cancelled)

    def account_status(
        self, username: str, directory_id: str | None = None, report: Report = _silent,
        cancelled: threading.Event | None = None,
    ) -> AccountStatus:
        """Whether the account *username* may still sign in, without its password.

        Its entry is found by *directory_id* (``[ldap] id_attribute``) when the
        account is bound to one, else by its name; then ``disabled_filter`` and
        ``required_group`` are applied. Runs as the service account (or
        anonymously). Raise DirectoryError when the directory cannot say.
        """
        return self._each_server(
            lambda conn: self._status(conn, username, directory_id, report), report, cancelled
        )

    def find_by_id(
        self, directory_id: str, report: Report = _silent,
        cancelled: threading.Event | None = None,
    ) -> DirectoryUser | None:
        """The entry whose ``[ldap] id_attribute`` is *directory_id*, as a
        DirectoryUser (its uid now), or None when the directory has none;
        raise DirectoryError if it cannot say."""
        return self._each_server(
            lambda conn: self._find_by_id(conn, directory_id, report), report, cancelled
        )

    # -- one attempt per URL ------------------------------------------------

    def _each_server(
        self, work: Callable[[Connection], T], report: Report,
        cancelled: threading.Event | None,
    ) -> T:
        failures: list[DirectoryUnavailable] = []
        for endpoint in self._endpoints:
            if cancelled is not None and cancelled.is_set():
                raise DirectoryUnavailable(UNAVAILABLE_DETAIL, "abandoned: past the deadline")
            try:
                conn = self._connect(endpoint, report)
            except DirectoryUnavailable as failure:
                failures.append(failure)
                continue
            try:
                return work(conn)
            except DirectoryUnavailable as failure:
                failures.append(
                    type(failure)(failure.detail, f"{endpoint.url}: {failure.reason}")
                )
            except _CUT_OFF as exc:
                failures.append(self._unavailable(endpoint, exc))
            except LDAPException as exc:
                raise DirectoryMisconfigured(
                    MISCONFIGURED_DETAIL, f"{endpoint.url}: {type(exc).__name__}: {_message(exc)}"
                ) from None
            finally:
                _close(conn)
        if any(isinstance(failure, DirectoryTlsError) for failure in failures):
            raise DirectoryTlsError(TLS_DETAIL, "; ".join(f.reason for f in failures))
        raise DirectoryUnavailable(UNAVAILABLE_DETAIL, "; ".join(f.reason for f in failures))

    def _unavailable(self, endpoint: _Endpoint, exc: BaseException) -> DirectoryUnavailable:
        causes = _causes(exc)
        for cause in causes:
            if _is_tls_failure(cause):
                message = _message(cause)
                return DirectoryTlsError(
                    TLS_DETAIL, f"{endpoint.url}: TLS failed: {message}{_tls_hint(message)}"
                )
        if any(_is_timeout(cause) for cause in causes):
            return DirectoryUnavailable(
                UNAVAILABLE_DETAIL,
                f"{endpoint.url}: no answer within {self.timeout:g} s",
            )
        return DirectoryUnavailable(
            UNAVAILABLE_DETAIL,
            f"{endpoint.url}: " + "; ".join(dict.fromkeys(_message(c) for c in causes)),
        )

    def _connect(self, endpoint: _Endpoint, report: Report) -> Connection:
        """Open (and secure) a connection: TCP, then TLS (ldaps) or StartTLS."""
        server = Server(
            endpoint.host, port=endpoint.port, use_ssl=endpoint.use_ssl, get_info=NONE,
            tls=_VerifiedTls(self._tls_context), connect_timeout=self.timeout,
        )
        conn = Connection(
            server, client_strategy=SYNC, receive_timeout=self.timeout,
            raise_exceptions=False, read_only=True, auto_referrals=False,
        )
        try:
            conn.open(read_server_info=False)
        except LDAPException as exc:
            failure = self._unavailable(endpoint, exc)
            if any(_in_tls_phase(cause) for cause in _causes(exc)):
                report(CONNECT, True, endpoint.url)
                report(TLS, False, failure.reason)
            else:
                report(CONNECT, False, failure.reason)
            raise failure from None
        report(CONNECT, True, endpoint.url)
        if endpoint.use_ssl:
            report(TLS, True, self._tls_summary(conn, "ldaps"))
            return conn
        try:
            conn.start_tls(read_server_info=False)
        except LDAPException as exc:
            _close(conn)
            failure = self._unavailable(endpoint, exc)
            if not isinstance(failure, DirectoryTlsError) and "startTLS failed" in str(exc):
                failure = DirectoryTlsError(
                    TLS_DETAIL, f"{endpoint.url}: the server refused StartTLS: {_message(exc)}"
                )
            report(TLS, False, failure.reason)
            raise failure from None
        report(TLS, True, self._tls_summary(conn, "StartTLS"))
        return conn

    def _tls_summary(self, conn: Connection, how: str) -> str:
        sock = conn.socket
        version = sock.version() if isinstance(sock, ssl.SSLSocket) else "?"
        authority = self._settings.ca_file or "the system CA store"
        return (
            f"{how}, {version}, certificate for {conn.server.host} verified against "
            f"{authority}"
        )

    # -- the steps -----------------------------------------------------------

    def _sign_in(
        self, conn: Connection, username: str, password: str, report: Report
    ) -> DirectoryUser:
        settings = self._settings
        if settings.user_dn_template:
            dn = settings.user_dn_template.replace("{username}", escape_rdn(username))
            self._bind(conn, dn, password, report)
            entry = self._read(conn, dn, report)
        else:
            self._service_bind(conn, report)
            entry = self._search_one(conn, username, report)
            self._bind(conn, entry.dn, password, report)
        user = self._user(entry, username)
        if settings.required_group or settings.disabled_filter:
            if settings.bind_dn:
                self._service_bind(conn, report)
        if settings.disabled_filter:
            self._check_enabled(conn, entry, report)
        if settings.required_group:
            self._check_group(conn, entry, report)
        return user

    def _lookup(self, conn: Connection, username: str, report: Report) -> bool:
        settings = self._settings
        self._service_bind(conn, report)
        if settings.user_dn_template:
            dn = settings.user_dn_template.replace("{username}", escape_rdn(username))
            conn.search(dn, "(objectClass=*)", search_scope=BASE,
                        attributes=[_NO_ATTRIBUTES], time_limit=self.timeout)
            code = conn.result["result"]
            if code == _NO_SUCH_OBJECT:
                report(SEARCH, True, f"no entry {dn}")
                return False
            self._check_result(conn, "looking up the user entry")
            found = bool(_entries(conn))
        else:
            found = bool(self._search(conn, username))
        report(SEARCH, True, f"{username!r} {'exists' if found else 'does not exist'}")
        return found

    def _find_by_id(
        self, conn: Connection, directory_id: str, report: Report
    ) -> DirectoryUser | None:
        settings = self._settings
        self._service_bind(conn, report)
        base = settings.base_dn or _template_base(settings.user_dn_template)
        search_filter = id_filter(settings.id_attribute, directory_id)
        conn.search(
            base, search_filter, search_scope=SUBTREE, attributes=self._user_attributes(),
            size_limit=2, time_limit=self.timeout,
        )
        code = conn.result["result"]
        if code == _NO_SUCH_OBJECT:
            raise DirectoryMisconfigured(MISCONFIGURED_DETAIL, f"{base} does not exist")
        if code != _SIZE_LIMIT_EXCEEDED:
            self._check_result(conn, f"searching {base} for {search_filter}")
        entries = _entries(conn)
        if len(entries) > 1:
            raise DirectoryMisconfigured(
                MISCONFIGURED_DETAIL,
                f"{search_filter} matches more than one entry under {base} "
                "(is [ldap] id_attribute unique?)",
            )
        if not entries:
            report(SEARCH, True, f"no entry has {search_filter}")
            return None
        entry = entries[0]
        uids = entry.values(settings.username_attribute)
        report(SEARCH, True, f"found {entry.dn}")
        return self._user(entry, uids[0] if uids else "")

    def _service_bind(self, conn: Connection, report: Report) -> None:
        settings = self._settings
        if not settings.bind_dn:
            return
        if not conn.rebind(settings.bind_dn, settings.bind_password, authentication=SIMPLE,
                           read_server_info=False):
            result = conn.result or {}
            reason = (
                f"the service account {settings.bind_dn} could not bind: "
                f"{_describe_result(result)} (check [ldap] bind_dn and bind_password)"
            )
            report(SERVICE_BIND, False, reason)
            self._raise_for(result, MISCONFIGURED_DETAIL, reason, DirectoryMisconfigured)
        report(SERVICE_BIND, True, f"as {settings.bind_dn}")

    def _bind(self, conn: Connection, dn: str, password: str, report: Report) -> None:
        # Not the password rule (chateau.auth.passwords) but the bind's own guard:
        # never an unauthenticated bind, whatever the caller did.
        if not password:
            raise DirectoryRefused("authentication failed: empty password")
        if conn.rebind(dn, password, authentication=SIMPLE, read_server_info=False):
            report(BIND, True, f"as {dn}")
            return
        result = conn.result or {}
        reason = f"bind as {dn} refused: {_describe_result(result)}"
        report(BIND, False, reason)
        self._raise_for(result, WRONG_CREDENTIALS, reason, DirectoryRefused)

    @staticmethod
    def _raise_for(
        result: dict[str, Any], detail: str, reason: str, kind: type[DirectoryError]
    ) -> None:
        if result.get("result") in (_BUSY, _UNAVAILABLE):
            raise DirectoryUnavailable(UNAVAILABLE_DETAIL, reason)
        raise kind(detail, reason)

    def _search(self, conn: Connection, username: str) -> list[_Entry]:
        settings = self._settings
        search_filter = settings.user_filter.replace(
            "{username}", escape_filter_chars(username)
        )
        attributes = self._user_attributes()
        conn.search(
            settings.base_dn, search_filter, search_scope=SUBTREE, attributes=attributes,
            size_limit=2, time_limit=self.timeout,
        )
        code = conn.result["result"]
        if code == _NO_SUCH_OBJECT:
            raise DirectoryMisconfigured(
                MISCONFIGURED_DETAIL, f"[ldap] base_dn {settings.base_dn} does not exist"
            )
        if code != _SIZE_LIMIT_EXCEEDED:
            self._check_result(conn, f"searching {settings.base_dn} for {search_filter}")
        return _entries(conn)

    def _search_one(self, conn: Connection, username: str, report: Report) -> _Entry:
        try:
            entries = self._search(conn, username)
        except DirectoryError as failure:
            report(SEARCH, False, failure.reason)
            raise
        if not entries:
            reason = f"no entry matches {username!r} under {self._settings.base_dn}"
            report(SEARCH, False, reason)
            raise DirectoryRefused(WRONG_CREDENTIALS, reason)
        if len(entries) > 1:
            reason = (
                f"{username!r} matches more than one entry under {self._settings.base_dn} "
                "(make [ldap] user_filter match exactly one)"
            )
            report(SEARCH, False, reason)
            raise DirectoryMisconfigured(MISCONFIGURED_DETAIL, reason)
        report(SEARCH, True, f"found {entries[0].dn}")
        return entries[0]

    def _read(self, conn: Connection, dn: str, report: Report) -> _Entry:
        attributes = self._user_attributes()
        conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=attributes,
                    time_limit=self.timeout)
        entries = _entries(conn)
        if conn.result["result"] != _SUCCESS or len(entries) != 1:
            reason = f"cannot read {dn} after binding as it: {_describe_result(conn.result)}"
            report(SEARCH, False, reason)
            raise DirectoryMisconfigured(MISCONFIGURED_DETAIL, reason)
        report(SEARCH, True, f"read {entries[0].dn}")
        return entries[0]

    def _user_attributes(self) -> list[str]:
        """What is read of a user's entry: name, display name and stable id."""
        settings = self._settings
        return list(dict.fromkeys([
            settings.username_attribute, settings.display_name_attribute,
            settings.id_attribute,
        ]))

    def _check_result(self, conn: Connection, doing: str) -> None:
        result = conn.result or {}
        if result.get("result") == _SUCCESS:
            return
        reason = f"{doing}: {_describe_result(result)}"
        self._raise_for(result, MISCONFIGURED_DETAIL, reason, DirectoryMisconfigured)

    def _user(self, entry: _Entry, typed: str) -> DirectoryUser:
        settings = self._settings
        uids = entry.values(settings.username_attribute)
        if not uids:
            raise DirectoryMisconfigured(
                MISCONFIGURED_DETAIL,
                f"{entry.dn} has no {settings.username_attribute} attribute "
                "(see [ldap] username_attribute)",
            )
        wanted = canonical(typed)
        uid = next((value for value in uids if canonical(value) == wanted), uids[0])
        username = check_username(uid)
        if username is None:
            raise DirectoryRefused(
                f"authentication failed: the directory name {uid!r} cannot be used here: "
                f"{USERNAME_RULE}",
                f"{entry.dn}: {settings.username_attribute} {uid!r} is not a valid username",
            )
        names = entry.values(settings.display_name_attribute)
        return DirectoryUser(
            username, uid, entry.dn, names[0] if names else None,
            entry.stable_id(settings.id_attribute),
        )

    def _check_group(self, conn: Connection, entry: _Entry, report: Report) -> None:
        group = self._settings.required_group
        dn = escape_filter_chars(entry.dn)
        clauses = [f"(member={dn})", f"(uniqueMember={dn})"]
        clauses += [
            f"(memberUid={escape_filter_chars(uid)})"
            for uid in entry.values(self._settings.username_attribute)
        ]
        conn.search(group, "(|" + "".join(clauses) + ")", search_scope=BASE,
                    attributes=[_NO_ATTRIBUTES], time_limit=self.timeout)
        code = conn.result["result"]
        if code == _NO_SUCH_OBJECT:
            reason = f"[ldap] required_group {group} does not exist (or cannot be read)"
            report(GROUP, False, reason)
            raise DirectoryMisconfigured(MISCONFIGURED_DETAIL, reason)
        try:
            self._check_result(conn, f"reading {group}")
        except DirectoryError as failure:
            report(GROUP, False, failure.reason)
            raise
        if not _entries(conn):
            reason = f"{entry.dn} is not a member of {group}"
            report(GROUP, False, reason)
            raise DirectoryRefused(
                "authentication failed: your directory account is not allowed to sign in "
                "here (not in the required group)",
                reason,
            )
        report(GROUP, True, f"member of {group}")

    # -- group sync (chateau.group_sync) ---------------------------------------

    def groups(
        self, report: Report = _silent, cancelled: threading.Event | None = None,
    ) -> list[DirectoryGroup]:
        """Every group under ``[ldap] sync_base`` matching ``sync_filter``, with its members.

        Read as the service account (anonymously without one) with a paged
        search; member DNs are resolved to their ``username_attribute``
        (see :meth:`_member_names`). Raises a DirectoryError when the
        directory cannot say: a sync never acts on half an answer.
        """
        return self._each_server(
            lambda conn: self._read_groups(conn, report, cancelled), report, cancelled
        )

    def _read_groups(
        self, conn: Connection, report: Report, cancelled: threading.Event | None,
    ) -> list[DirectoryGroup]:
        settings = self._settings
        self._service_bind(conn, report)
        base, search_filter = settings.sync_base, settings.sync_filter
        name_attribute, member_attribute = (
            settings.sync_name_attribute, settings.sync_member_attribute)
        entries: list[_Entry] = []
        cookie: Any = None
        while True:
            if cancelled is not None and cancelled.is_set():
                raise DirectoryUnavailable(UNAVAILABLE_DETAIL, "abandoned: past the deadline")
            conn.search(
                base, search_filter, search_scope=SUBTREE,
                attributes=[name_attribute, member_attribute], paged_size=_GROUP_PAGE,
                paged_cookie=cookie, time_limit=self.timeout,
            )
            if conn.result["result"] == _NO_SUCH_OBJECT:
                reason = f"[ldap] sync_base {base} does not exist"
                report(SEARCH, False, reason)
                raise DirectoryMisconfigured(MISCONFIGURED_DETAIL, reason)
            self._check_result(conn, f"searching {base} for {search_filter}")
            entries.extend(_entries(conn))
            control = (conn.result.get("controls") or {}).get(_PAGED_RESULTS) or {}
            cookie = (control.get("value") or {}).get("cookie")
            if not cookie:
                break
        report(SEARCH, True, f"{len(entries)} group(s) under {base}")
        by_dn: dict[str, str | None] = {}
        found = []
        for entry in entries:
            names = entry.values(name_attribute)
            if not names:
                continue
            values = self._all_values(conn, entry, member_attribute)
            if member_attribute.lower() == "memberuid":
                members = tuple(dict.fromkeys(value.strip() for value in values if value.strip()))
                found.append(DirectoryGroup(entry.dn, names[0], members))
                continue
            uids, unresolved = self._member_names(conn, values, by_dn, cancelled)
            found.append(DirectoryGroup(entry.dn, names[0], uids, unresolved))
        return found

    def _all_values(self, conn: Connection, entry: _Entry, attribute: str) -> list[str]:
        """Every value of *attribute*, following Active Directory's ranged retrieval.

        AD returns at most 1,500 values of a large ``member`` at a time, as
        ``member;range=0-1499``; the rest are read range by range.
        """
        values = list(entry.values(attribute))
        prefix = attribute.lower() + ";range="
        while True:
            key = next((name for name in entry.attributes if name.startswith(prefix)), None)
            if key is None:
                return values
            values.extend(entry.attributes[key])
            end = key[len(prefix):].partition("-")[2]
            if end == "*" or not end.isdigit():
                return values
            conn.search(entry.dn, "(objectClass=*)", search_scope=BASE,
                        attributes=[f"{attribute};range={int(end) + 1}-*"],
                        time_limit=self.timeout)
            self._check_result(conn, f"reading the members of {entry.dn}")
            more = _entries(conn)
            if not more:
                return values
            entry = more[0]

    def _people_scope(self) -> tuple[str | None, list[tuple[str, str]]]:
        """The username RDN attribute people are named by (None: unknown), and their base."""
        settings = self._settings
        if settings.user_dn_template:
            parts = _dn_parts(settings.user_dn_template.replace("{username}", "x"))
            return (parts[0][0] if parts else None), parts[1:]
        return None, _dn_parts(settings.base_dn)

    def _member_names(
        self, conn: Connection, dns: list[str], by_dn: dict[str, str | None],
        cancelled: threading.Event | None,
    ) -> tuple[tuple[str, ...], int]:
        """The username_attribute values of the people *dns* name, and how many named none.

        A DN under the people's base (``base_dn``, or the template's) whose
        first RDN is the username attribute (``uid=alice,ou=people,...``)
        gives its value directly, as an RDN value is one of the entry's
        values; other DNs (``CN=Alice Liddell,...``) are read, once per
        sync (*by_dn* remembers). DNs outside the base, unknown DNs and
        entries without the attribute (a nested group) are left out.
        """
        settings = self._settings
        attribute = settings.username_attribute.lower()
        rdn_attribute, scope = self._people_scope()
        uids: list[str] = []
        unresolved = 0
        for raw in dns:
            dn = _UNIQUE_MEMBER_UID.sub("", raw.strip())
            if dn not in by_dn:
                if cancelled is not None and cancelled.is_set():
                    raise DirectoryUnavailable(UNAVAILABLE_DETAIL, "abandoned: past the deadline")
                by_dn[dn] = self._member_name(conn, dn, attribute, rdn_attribute, scope)
            uid = by_dn[dn]
            if uid is None:
                unresolved += 1
            elif uid not in uids:
                uids.append(uid)
        return tuple(uids), unresolved

    def _member_name(
        self, conn: Connection, dn: str, attribute: str, rdn_attribute: str | None,
        scope: list[tuple[str, str]],
    ) -> str | None:
        parts = _dn_parts(dn)
        if not parts:
            return None
        if scope and (len(parts) <= len(scope) or parts[-len(scope):] != scope):
            return None
        try:
            first = parse_dn(dn)[0]
        except (LDAPInvalidDnError, IndexError):
            return None
        if (first[0].lower() == attribute and first[2] != "+" and "\\" not in first[1]
                and (rdn_attribute is None or rdn_attribute == attribute)):
            return first[1]
        conn.search(dn, "(objectClass=*)", search_scope=BASE,
                    attributes=[self._settings.username_attribute], time_limit=self.timeout)
        if conn.result["result"] == _NO_SUCH_OBJECT:
            return None
        self._check_result(conn, f"reading the member {dn}")
        entries = _entries(conn)
        values = entries[0].values(attribute) if entries else []
        return values[0] if values else None

    # -- re-checks (deprovisioning) -------------------------------------------

    def _status(
        self, conn: Connection, username: str, directory_id: str | None, report: Report
    ) -> AccountStatus:
        settings = self._settings
        self._service_bind(conn, report)
        entry = self._entry_now(conn, username, directory_id, report)
        if entry is None:
            return AccountStatus(ACCOUNT_MISSING)
        uids = entry.values(settings.username_attribute)
        uid = next((value for value in uids if check_username(value) == username),
                   uids[0] if uids else None)
        if settings.disabled_filter and self._matches(conn, entry.dn, settings.disabled_filter):
            report(SEARCH, False, f"{entry.dn} matches [ldap] disabled_filter")
            return AccountStatus(ACCOUNT_DISABLED, uid, entry.dn)
        if settings.required_group:
            try:
                self._check_group(conn, entry, report)
            except DirectoryRefused:
                return AccountStatus(ACCOUNT_NOT_IN_GROUP, uid, entry.dn)
        return AccountStatus(ACCOUNT_OK, uid, entry.dn)

    def _entry_now(
        self, conn: Connection, username: str, directory_id: str | None, report: Report
    ) -> _Entry | None:
        """The account's entry now (None: there is none), by stable id or by name."""
        settings = self._settings
        template = settings.user_dn_template
        # Where people are: base_dn, or the parent of user_dn_template's entry.
        base = ",".join(to_dn(template)[1:]) if template else settings.base_dn
        if directory_id is not None:
            wanted = id_filter(settings.id_attribute, directory_id)
            if not template:
                # The rest of user_filter still applies (AD's nested group clause...).
                anyone = settings.user_filter.replace("{username}", "*")
                wanted = f"(&{wanted}{anyone})"
            conn.search(base, wanted, search_scope=SUBTREE,
                        attributes=self._user_attributes(), size_limit=2,
                        time_limit=self.timeout)
            self._check_base(conn, base, f"searching {base} for {wanted}")
            entries = _entries(conn)
        elif template:
            dn = template.replace("{username}", escape_rdn(username))
            conn.search(dn, "(objectClass=*)", search_scope=BASE,
                        attributes=self._user_attributes(), time_limit=self.timeout)
            if conn.result["result"] == _NO_SUCH_OBJECT:
                # Gone, unless the service account cannot see people at all.
                conn.search(base, "(objectClass=*)", search_scope=BASE,
                            attributes=[_NO_ATTRIBUTES], time_limit=self.timeout)
                self._check_base(conn, base, f"reading {base}")
                entries = []
            else:
                self._check_result(conn, f"reading {dn}")
                entries = _entries(conn)
        else:
            entries = self._search(conn, username)
        if len(entries) > 1:
            raise DirectoryMisconfigured(
                MISCONFIGURED_DETAIL,
                f"the account {username!r} matches more than one entry under {base}",
            )
        report(SEARCH, True, f"found {entries[0].dn}" if entries else f"no entry for {username!r}")
        return entries[0] if entries else None

    def _check_enabled(self, conn: Connection, entry: _Entry, report: Report) -> None:
        """Refuse a sign-in of an entry that matches ``disabled_filter``."""
        search_filter = self._settings.disabled_filter
        if not self._matches(conn, entry.dn, search_filter):
            report(ENABLED, True, f"{entry.dn} does not match {search_filter}")
            return
        reason = f"{entry.dn} matches [ldap] disabled_filter {search_filter}"
        report(ENABLED, False, reason)
        raise DirectoryRefused(
            "authentication failed: your directory account is disabled", reason
        )

    def _check_base(self, conn: Connection, base: str, doing: str) -> None:
        """A base the search cannot see is a misconfiguration, never "nobody is there"."""
        if conn.result["result"] == _NO_SUCH_OBJECT:
            raise DirectoryMisconfigured(
                MISCONFIGURED_DETAIL,
                f"{base} does not exist or cannot be read (re-checks need read access to "
                "people entries: set [ldap] bind_dn or allow anonymous reads)",
            )
        if conn.result["result"] != _SIZE_LIMIT_EXCEEDED:
            self._check_result(conn, doing)

    def _matches(self, conn: Connection, dn: str, search_filter: str) -> bool:
        """Whether the entry *dn* matches *search_filter* (a BASE search)."""
        conn.search(dn, search_filter, search_scope=BASE, attributes=[_NO_ATTRIBUTES],
                    time_limit=self.timeout)
        self._check_result(conn, f"applying {search_filter} to {dn}")
        return bool(_entries(conn))


def _template_base(template: str) -> str:
    """Where the entries of ``[ldap] user_dn_template`` live: its DN after the first RDN."""
    _, _, parent = template.partition(",")
    return parent.strip()


def _entries(conn: Connection) -> list[_Entry]:
    found = []
    for item in conn.response or []:
        if item.get("type") != "searchResEntry":
            continue  # referrals (Active Directory sends them) are not people
        attributes = {
            str(name).lower(): [
                value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                for value in values
            ]
            for name, values in (item.get("raw_attributes") or {}).items()
        }
        raw = {
            str(name).lower(): [
                value if isinstance(value, bytes) else str(value).encode("utf-8")
                for value in values
            ]
            for name, values in (item.get("raw_attributes") or {}).items()
        }
        found.append(_Entry(item["dn"], attributes, raw))
    return found


def _dn_parts(dn: str) -> list[tuple[str, str]]:
    """A DN as comparable (attribute, value) pairs, lower-cased; [] if it is not one."""
    try:
        return [(attribute.lower(), value.strip().lower()) for attribute, value, _ in parse_dn(dn)]
    except (LDAPInvalidDnError, ValueError):
        return []


def _describe_result(result: dict[str, Any]) -> str:
    text = f"{result.get('description', 'error')} ({result.get('result', '?')})"
    message = str(result.get("message") or "").strip()
    return f"{text}: {message}" if message else text


def _close(conn: Connection) -> None:
    try:
        conn.unbind()
    except Exception:
        try:
            conn.strategy.close()
        except Exception:
            pass

