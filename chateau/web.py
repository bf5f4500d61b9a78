"""The HTTP side of the port: the WebSocket at ``/ws``, ``/api/users/``,
``/api/me/export``, the HTTP API's routes (chateau/web_api.py) and
``/api/openapi.json``, ``/health``, ``/metrics``, and the web client's files at ``/``."""

from __future__ import annotations

import json
import os
import re
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import ensureDeferred
from twisted.python.failure import Failure
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from chateau.backplane import Backplane
from chateau.export import ExportProducer, export_chunks
from chateau.httplimits import HTTPLimits, LimitedSite
from chateau.metrics import Metrics
from chateau.names import check_username
from chateau.protocol import ChateauServerFactory
from chateau.registry import Registry
from chateau.store import Store
from chateau.store.records import iso_timestamp, now_millis
from chateau.web_api import (
    TOP_SEGMENTS, APIResource, OpenAPIResource, session_user, unauthorised,
)
from chateau.webclient import STATIC_DIR

# The web client's Content-Security-Policy, around its connect-src sources.
_POLICY_HEAD = b"default-src 'self'; connect-src 'self'"
_POLICY_TAIL = (
    b"; img-src 'self' data:; "
    b"object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# A Host header fit to be named in the policy: a DNS name or IPv4 address, or
# an IPv6 literal in brackets, then an optional port. Nothing else (spaces,
# ';', ',', quotes, '*') can reach the header.
_SAFE_HOST = re.compile(
    rb"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
)


def content_security_policy(host: bytes | None) -> bytes:
    """The policy of a page asked for with this Host header.

    The page may connect only to its own origin: ``'self'`` plus the
    WebSocket URLs of the host and port it was served from, both ``ws://``
    and ``wss://`` (behind a proxy that ends TLS the request here is plain
    HTTP while the page is HTTPS, so the scheme asked for says nothing; an
    HTTPS page cannot open a ``ws://`` socket anyway). A Host header that is
    not a plain host[:port] names nothing: the page keeps ``'self'`` only,
    which browsers (CSP 3) match against WebSockets to the same host and port.
    """
    match = _SAFE_HOST.fullmatch(host) if host else None
    if match is None or (match["port"] is not None and not 0 < int(match["port"]) < 65536):
        return _POLICY_HEAD + _POLICY_TAIL
    origin = match.group(0).lower()
    return _POLICY_HEAD + b" ws://" + origin + b" wss://" + origin + _POLICY_TAIL


# Every file of static/ with one of these endings is served. The client's
# scripts are ES modules, which browsers run only with a JavaScript type.
_CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}


class StaticFile(Resource):
    """One of the web client's files, held in memory.

    The files are read once at start-up, so serving them never touches the
    disk from the reactor thread. The headers keep the page to itself: it
    may run only its own scripts and talk only to its own server (the socket
    only to its own origin, see :func:`content_security_policy`), so injected
    markup could neither load nor send anything elsewhere.
    """

    isLeaf = True

    def __init__(self, body: bytes, content_type: bytes) -> None:
        super().__init__()
        self._body = body
        self._content_type = content_type

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self._content_type)
        request.setHeader(
            b"content-security-policy", content_security_policy(request.getHeader(b"host"))
        )
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        # Revalidate each time, so an upgraded server's client is picked up.
        request.setHeader(b"cache-control", b"no-cache")
        return self._body

    render_HEAD = render_GET


def web_client_root(directory: str = STATIC_DIR) -> Resource:
    """``/`` and the client's files, loaded now (start-up, before any request)."""
    root = Resource()
    for name in sorted(os.listdir(directory)):
        content_type = _CONTENT_TYPES.get(os.path.splitext(name)[1])
        if content_type is None:
            continue
        with open(os.path.join(directory, name), "rb") as handle:
            page = StaticFile(handle.read(), content_type)
        root.putChild(name.encode(), page)
        if name == "index.html":
            root.putChild(b"", page)
    return root


class ExportResource(Resource):
    """``GET /api/me/export``: everything stored about the signed-in user, as
    one JSON document (docs/accounts.md), streamed.

    The request carries a live session key (``Authorization: Bearer KEY``);
    401 otherwise. The document is written by chateau.export's producer,
    a page of messages at a time as the client takes it. Each export is
    audited (``export``).
    """

    isLeaf = True
    _log = Logger()

    def __init__(self, store: Store) -> None:
        super().__init__()
        self._store = store

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return json.dumps({"status": 404, "detail": "use /api/me/export"}).encode()
        ensureDeferred(self._render(request))
        return NOT_DONE_YET

    async def _render(self, request: Request) -> None:
        try:
            user = await session_user(self._store, request)
            head = None if user is None else await self._store.erasure.export_head(user.username)
            if head is not None:
                address = getattr(request.getClientAddress(), "host", None)
                await self._store.audit.record(
                    head.account["username"], "export", head.account["username"],
                    address=address, via="http",
                )
        except Exception:
            self._log.failure("export failed")
            request.setResponseCode(503)
            UserResource._finish(request, {"status": 503, "detail": "the database is unavailable"})
            return
        if request.finished or request._disconnected:
            return
        if head is None:
            request.write(unauthorised(request))
            request.finish()
            return
        username = head.account["username"]
        request.setHeader(
            b"content-disposition",
            f'attachment; filename="chateau-export-{username}.json"'.encode(),
        )
        producer = ExportProducer(
            request, export_chunks(head, iso_timestamp(now_millis())),
            lambda after, limit: self._store.erasure.export_messages(username, after, limit),
        )
        request.notifyFinish().addErrback(lambda _: producer.stopProducing())
        try:
            complete = await producer.start()
        except Exception:
            # The status is sent: cut the document short, so that it does not parse.
            self._log.failure("export of {username} failed midway", username=username)
            channel = request.channel
            if channel is not None and channel.transport is not None:
                channel.transport.abortConnection()
            return
        if complete and not request.finished and not request._disconnected:
            request.finish()


class UserResource(Resource):
    """``GET /api/users/{username}``: profile and presence, as JSON.

    Only for signed-in users: the request carries a live session key
    (``Authorization: Bearer KEY``, the key of RegisterResponse), checked in
    the database on the store's pool; 401 otherwise. ``[server]
    public_user_lookup = true`` lets anyone look users up.
    """

    isLeaf = True

    def __init__(self, store: Store, registry: Registry, public: bool = False) -> None:
        super().__init__()
        self._store = store
        self._registry = registry
        self._public = public

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        if len(request.postpath) != 1 or not request.postpath[0]:
            request.setResponseCode(404)
            return json.dumps({"status": 404, "detail": "use /api/users/{username}"}).encode()
        raw = request.postpath[0].decode("utf-8", "replace")
        ensureDeferred(self._render(request, raw))
        return NOT_DONE_YET

    async def _viewer(self, request: Request) -> tuple[bool, str | None]:
        """Whether the request may look users up, and who asks (None: nobody signed in).

        Without a live session key only a public lookup is allowed, and it
        shows presence only of users who show it to everyone.
        """
        user = await session_user(self._store, request)
        if user is None:
            return self._public, None
        return True, user.username

    async def _online(self, username: str, viewer: str | None) -> bool:
        """Whether *viewer* sees *username* online (their presence setting applied)."""
        registry = self._registry
        if not registry.is_online(username):
            return False
        presence = registry.settings(username).presence
        if presence == "everyone" or viewer == username:
            return True
        if presence == "nobody" or viewer is None:
            return False
        return bool(await self._store.contacts.are_contacts(username, viewer))

    async def _render(self, request: Request, raw: str) -> None:
        username = check_username(raw)
        try:
            allowed, viewer = await self._viewer(request)
            if not allowed:
                body = json.loads(unauthorised(request))
                self._finish(request, body)
                return
            user = await self._store.accounts.get_user(username) if username else None
            online = user is not None and await self._online(user.username, viewer)
        except Exception:
            self._log.failure("user lookup failed")
            request.setResponseCode(503)
            body = {"status": 503, "detail": "the database is unavailable"}
        else:
            if user is None or user.disabled:
                request.setResponseCode(404)
                body = {"status": 404, "detail": f"no such user: {raw!r}"}
            else:
                body = {
                    "username": user.username,
                    "display_name": user.display_name,
                    "status_text": user.status_text,
                    "online": online,
                }
        self._finish(request, body)

    @staticmethod
    def _finish(request: Request, body: dict[str, Any]) -> None:
        if not request.finished and not request._disconnected:
            request.write(json.dumps(body).encode())
            request.finish()

    _log = Logger()


class HealthResource(Resource):
    """``GET /health``: 200 when the database answers within a few seconds, else 503."""

    isLeaf = True
    timeout = 5.0
    _log = Logger()

    def __init__(self, store: Store, backplane: Backplane, reactor: Any) -> None:
        super().__init__()
        self._store = store
        self._backplane = backplane
        self._reactor = reactor

    def render_GET(self, request: Request) -> Any:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        ping = self._store.ping()
        ping.addTimeout(self.timeout, self._reactor)

        def answer(result: Any) -> None:
            if isinstance(result, Failure):
                reason = result.getErrorMessage().strip().splitlines()
                self._log.warn(
                    "health check: the database did not answer: {reason}",
                    reason=reason[0] if reason else result.type.__name__,
                )
                request.setResponseCode(503)
                body = {"status": "unavailable", "database": "unavailable"}
            else:
                body = {"status": "ok", "database": "ok"}
            cluster = self._backplane.status()
            if cluster is not None:
                # A node cut off from Redis still serves its own users, so it
                # stays healthy; the status says what is missing.
                body["cluster"] = cluster
            if not request.finished and not request._disconnected:
                request.write(json.dumps(body).encode())
                request.finish()

        ping.addBoth(answer)
        return NOT_DONE_YET


class MetricsResource(Resource):
    """``GET /metrics``: Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        return self._metrics.render()


def make_site(
    factory: ChateauServerFactory, store: Store, registry: Registry, backplane: Backplane,
    metrics: Metrics,
) -> Site:
    root = web_client_root()
    root.putChild(b"health", HealthResource(store, backplane, factory.clock))
    root.putChild(b"metrics", MetricsResource(metrics))
    api = Resource()
    api.putChild(
        b"users", UserResource(store, registry, factory.config.server.public_user_lookup)
    )
    me = Resource()
    me.putChild(b"export", ExportResource(store))
    api.putChild(b"me", me)
    # The HTTP API's conversations and messages (chateau/web_api.py).
    messages_api = APIResource(store, factory.dispatcher, factory.clock)
    for segment in TOP_SEGMENTS:
        api.putChild(segment.encode(), messages_api)
    api.putChild(b"openapi.json", OpenAPIResource())
    root.putChild(b"api", api)
    root.putChild(b"ws", WebSocketResource(factory))
    # The HTTP side of the opening handshake gets the same time limit as the
    # WebSocket side (twisted.web's own idle timeout is a minute). Every
    # request keeps the HTTP limits of [limits] (chateau/httplimits.py),
    # keyed on the client's real address, as the WebSockets' limits are.
    guard = HTTPLimits(factory.config.limits, factory.addresses, metrics, factory.clock)
    site = LimitedSite(root, guard, timeout=factory.config.server.open_handshake_timeout or None)
    site.displayTracebacks = False
    return site
