"""The client's real address, behind a reverse proxy too.

Every per-address limit (connections, sign-in failures, HTTP requests and
handshakes), log line and metric keys on what :meth:`ClientAddresses.resolve`
returns, for WebSocket connections and HTTP requests alike.

Two ways of deploying behind a proxy are supported (docs/security.md):

- The PROXY protocol (a ``haproxy:`` listen endpoint): Twisted's wrapper
  makes the transport's ``getPeer()`` the client's address, so the *peer*
  given here is already the real one.
- ``X-Forwarded-For`` or ``Forwarded`` (RFC 7239), believed only when the
  TCP peer is one of ``[server] trusted_proxies``. Through several proxies
  the right-most address that is not itself a trusted proxy is the client:
  everything left of it was written by hosts nobody vouches for. When both
  headers came, ``X-Forwarded-For`` is used (what nginx and HAProxy set).

A header value that does not give a valid address is ignored (the peer's
address is used) and logged: it never fails the request.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from twisted.logger import Logger

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Longest header value looked at; a longer one is ignored as invalid.
MAX_HEADER = 4096
# [v6]:port, or v4:port: an address some proxies write with its port.
_BRACKETED = re.compile(r"\[([0-9A-Fa-f:.]+)\](?::[0-9]{1,5})?")
_V4_PORT = re.compile(r"([0-9.]+):[0-9]{1,5}")
# One element of a Forwarded header: pairs separated by ';', values plain
# tokens or quoted strings; elements separated by ','.
_FORWARDED_PAIR = re.compile(
    r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)=("(?:[^"\\]|\\.)*"|[^";,\s]*)\s*(;|,|$)'
)


def canonical_address(text: str) -> str | None:
    """*text* as one canonical IP address (IPv4-mapped IPv6 as IPv4); None if it is none.

    Accepts what proxies write: a bare address, ``v4:port`` or ``[v6]:port``.
    """
    value = text.strip()
    match = _BRACKETED.fullmatch(value) or _V4_PORT.fullmatch(value)
    if match is not None:
        value = match.group(1)
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _forwarded_for(values: Iterable[str]) -> list[str] | None:
    """The ``for=`` of every element of Forwarded headers, in order; None if malformed."""
    found: list[str] = []
    for value in values:
        position, element_for, element_open = 0, None, False
        while position < len(value):
            match = _FORWARDED_PAIR.match(value, position)
            if match is None or match.end() == position:
                return None
            key, raw, separator = match.groups()
            element_open = True
            if key.lower() == "for":
                if raw.startswith('"'):
                    raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
                element_for = raw
            position = match.end()
            if separator != ";":
                if element_for is None:
                    return None  # an element that names no client
                found.append(element_for)
                element_for, element_open = None, False
        if element_open:
            return None
    return found


class ClientAddresses:
    """Which peers may name the client, and the rule that finds it."""

    _log = Logger()

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self._trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(network) for network in trusted_proxies
        )

    def trusts(self, address: str) -> bool:
        """Whether *address* (canonical) is one of the trusted proxies."""
        if not self._trusted:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in network for network in self._trusted)

    def resolve(
        self, peer: str | None, forwarded_for: Iterable[str] | None,
        forwarded: Iterable[str] | None, log: bool = True,
    ) -> str:
        """The client's address, from the TCP *peer* and the request's header values.

        *forwarded_for* and *forwarded* are the values of every
        ``X-Forwarded-For`` and ``Forwarded`` header (None when absent). *log*
        says whether an invalid header is logged (once per request: the
        WebSocket handshake resolves again what its HTTP request did).
        """
        address = canonical_address(peer) if peer else None
        if address is None:
            return peer or "?"  # not an IP peer (a UNIX socket): nothing to trust
        if not self.trusts(address):
            return address
        header = "X-Forwarded-For"
        entries: list[str] | None = None
        values = list(forwarded_for or ())
        if values:
            entries = [item for value in values for item in value.split(",")]
        else:
            values = list(forwarded or ())
            if values:
                header = "Forwarded"
                entries = _forwarded_for(values)
        if not values:
            return address
        if entries is None or sum(len(value) for value in values) > MAX_HEADER:
            return self._invalid(header, values, address, log)
        client = None
        for entry in reversed(entries):
            client = canonical_address(entry)
            if client is None:
                return self._invalid(header, values, address, log)
            if not self.trusts(client):
                return client
        return client or address

    def _invalid(self, header: str, values: list[str], peer: str, log: bool) -> str:
        if log:
            shown = ", ".join(values)
            self._log.warn(
                "ignored an invalid {header} header from the proxy {peer}: {value}",
                header=header, peer=peer,
                value=repr(shown[:200]) + ("..." if len(shown) > 200 else ""),
            )
        return peer
