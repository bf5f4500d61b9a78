"""The limits of the HTTP side of the port, and the client's real address there.

Every request (``/``, ``/api/users``, the HTTP API, ``/health``, ``/metrics``
and the WebSocket handshake at ``/ws``) goes through :class:`LimitedHTTPChannel` and
:class:`LimitedRequest`, which :class:`LimitedSite` uses instead of
twisted.web's own. They enforce ``[limits]``:

- a request head over ``max_header_bytes`` or with more than ``max_headers``
  header lines is answered 431 (414 when the request line alone is over it)
  and the connection closed;
- a body over ``max_request_body`` (announced by Content-Length, or counted
  as chunks arrive) is answered 413 and the connection closed;
- past ``http_request_rate`` requests a second from one address (bursts of
  ``http_request_burst``), or ``handshake_rate`` WebSocket handshakes
  (bursts of ``handshake_burst``), the request is answered 429 with
  ``Retry-After``.

The address is the client's real one (:mod:`chateau.addresses`):
``request.getClientAddress()`` returns it, so twisted.web's access log shows
it too.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from chateau.addresses import ClientAddresses
from chateau.config import LimitsConfig
from chateau.limits import AddressRates
from chateau.metrics import Metrics

_REASONS = {
    413: b"Content Too Large",
    414: b"URI Too Long",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
}


def _body(status: int, detail: str) -> bytes:
    return json.dumps({"status": status, "detail": detail}).encode()


class HTTPLimits:
    """What the site's channels and requests share: the limits, the address
    rule, one rate table per kind of request, and the refusal counter."""

    def __init__(
        self, limits: LimitsConfig, addresses: ClientAddresses, metrics: Metrics, clock: Any,
    ) -> None:
        self.limits = limits
        self.addresses = addresses
        self.requests = AddressRates(
            limits.http_request_rate, limits.http_request_burst, clock.seconds,
            limits.http_rate_entries,
        )
        self.handshakes = AddressRates(
            limits.handshake_rate, limits.handshake_burst, clock.seconds,
            limits.http_rate_entries,
        )
        self._refusals = metrics.http_refusals
        self.refused = {
            reason: self._refusals.labels(reason)
            for reason in ("body", "head", "http_rate", "handshake_rate")
        }


class LimitedHTTPChannel(HTTPChannel):
    """HTTP/1.1 that refuses oversized heads (431) and bodies (413).

    Twisted's own checks answer 400 (or, for one line over LineReceiver's
    16 KiB, just close the connection); these come first and say what was
    wrong. After a refusal nothing more is read from the connection.
    """

    site: LimitedSite
    _log = Logger()
    _refused = False
    _head_bytes = 0
    _head_lines = 0

    def connectionMade(self) -> None:
        limits = self.site.guard.limits
        # Twisted's own bounds stay as a backstop behind ours.
        self.MAX_LENGTH = limits.max_header_bytes
        self.totalHeadersSize = limits.max_header_bytes + 2 * limits.max_headers + 2
        self.maxHeaders = limits.max_headers
        super().connectionMade()

    def refuse(self, status: int, detail: str, reason: str) -> None:
        """Answer *status* with a JSON body, then close; read nothing more."""
        if self._refused:
            return
        self._refused = True
        self.site.guard.refused[reason].inc()
        # The headers parsed so far may name the client (twisted.web parses a
        # header line once the next one begins, so a refusal in the middle of
        # the head may name the proxy instead).
        if self.requests:
            address = getattr(self.requests[-1].getClientAddress(), "host", "?")
        else:
            address = self.site.guard.addresses.resolve(
                getattr(self.transport.getPeer(), "host", None), None, None
            )
        self._log.info(
            "refused an HTTP request from {address}: {status} {detail}",
            address=address, status=status, detail=detail,
        )
        body = _body(status, detail)
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, _REASONS[status], len(body), body)
        )
        self.loseConnection()

    def lineReceived(self, line: bytes) -> None:
        if self._refused:
            return
        if line:
            limits = self.site.guard.limits
            self._head_bytes += len(line) + 2
            self._head_lines += 1
            # The first line is the request line, not a header.
            if self._head_bytes > limits.max_header_bytes:
                self._refuse_head()
                return
            if self._head_lines - 1 > limits.max_headers:
                self.refuse(431, f"more than {limits.max_headers} header lines", "head")
                return
        else:
            self._head_bytes = self._head_lines = 0
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        # Called before lineReceived counted the line: one line so far is the request line.
        self._head_lines += 1
        self._refuse_head()

    def _refuse_head(self) -> None:
        """431 for a head over max_header_bytes; 414 when the request line alone is."""
        limit = self.site.guard.limits.max_header_bytes
        if self._head_lines <= 1:
            self.refuse(414, f"the request line is over {limit} bytes", "head")
        else:
            self.refuse(431, f"the request head is over {limit} bytes", "head")

    def allHeadersReceived(self) -> None:
        limit = self.site.guard.limits.max_request_body
        if self.length is not None and self.length > limit:
            self.refuse(413, f"the request body is over {limit} bytes", "body")
            return
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if not self._refused:
            super().allContentReceived()


class LimitedRequest(Request):
    """A request that knows its client's real address and counts against its rates."""

    channel: LimitedHTTPChannel
    _client: Any = None
    _body_bytes = 0

    def getClientAddress(self) -> Any:
        """The client's real address (:mod:`chateau.addresses`), port 0 when a proxy named it."""
        if self._client is None:
            peer = super().getClientAddress()
            host = getattr(peer, "host", None)
            headers = self.requestHeaders
            address = self.channel.site.guard.addresses.resolve(
                host, headers.getRawHeaders("x-forwarded-for"), headers.getRawHeaders("forwarded"),
            )
            if host is None or address == host:
                self._client = peer  # not an IP peer (a UNIX socket), or no proxy spoke
            elif ":" in address:
                self._client = IPv6Address("TCP", address, 0)
            else:
                self._client = IPv4Address("TCP", address, 0)
        return self._client

    def handleContentChunk(self, data: bytes) -> None:
        if self.channel._refused:
            return
        self._body_bytes += len(data)
        limit = self.channel.site.guard.limits.max_request_body
        if self._body_bytes > limit:
            self.channel.refuse(413, f"the request body is over {limit} bytes", "body")
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        guard = self.channel.site.guard
        address = getattr(self.getClientAddress(), "host", "?")
        handshake = self.path.split(b"?", 1)[0].split(b"/")[1:2] == [b"ws"]
        wait = (guard.handshakes if handshake else guard.requests).take(address)
        if not wait:
            super().process()
            return
        guard.refused["handshake_rate" if handshake else "http_rate"].inc()
        self.site = self.channel.site
        self.setResponseCode(429)
        self.setHeader(b"retry-after", str(max(1, math.ceil(wait))).encode())
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"cache-control", b"no-store")
        what = "WebSocket handshakes" if handshake else "requests"
        self.write(_body(429, f"too many {what} from your address; retry after Retry-After seconds"))
        self.finish()


class LimitedSite(Site):
    """A twisted.web Site whose connections and requests keep the HTTP limits."""

    protocol = LimitedHTTPChannel
    requestFactory = LimitedRequest

    def __init__(self, resource: Any, guard: HTTPLimits, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.guard = guard
