"""The HTTP API: conversations and messages over plain HTTP, for scripts and bots.

Each route (:data:`ROUTES`) names the typed request of chateau/messages.py
it stands for. A call builds that request from the path, the query string
and the JSON body, and runs it through the WebSocket's own
:class:`~chateau.handlers.dispatch.Dispatcher` and handler, on behalf of an
:class:`HTTPCaller`: a :class:`~chateau.connection.Connection` of the
session key's owner that is never registered, so nothing routed to users
reaches it (a group message it sends reaches the sender's WebSockets as any
member's; a direct one, as over a WebSocket, only the recipient's). The
handler's reply or refusal becomes the answer, with the WebSocket's status as
the HTTP status, so the rules, limits and details are the WebSocket's.

On top of the HTTP side's per-address limits (chateau/httplimits.py), a
POST takes a token from its session key's bucket, ``[limits]
message_rate`` / ``message_burst`` as a WebSocket's frames do (429 with
``Retry-After``). ``/api/openapi.json`` describes every ``/api/`` route
(chateau/openapi.json, read once at start-up). docs/protocol.md, "HTTP API".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from chateau import messages
from chateau.auth import DIRECTORY
from chateau.errors import (
    FORBIDDEN,
    NOT_FOUND,
    NOT_IMPLEMENTED,
    TOO_MANY_REQUESTS,
    BadRequest,
    ChateauError,
)
from chateau.handlers.context import lookup, require_stored_messages
from chateau.handlers.dispatch import Dispatcher, error_reply
from chateau.limits import AddressRates
from chateau.store import Store
from chateau.store.records import UserRecord, hash_session_key

JSON_TYPE = b"application/json; charset=utf-8"
UNAUTHORISED_DETAIL = "sign in first: send your session key as Authorization: Bearer KEY"
# An integer in a query string (its range is checked as a frame's is).
_INTEGER = re.compile(r"-?[0-9]{1,20}")


@dataclass(frozen=True)
class Route:
    """One route of the API: its method, path and the request it stands for.

    *path* holds literal segments and one ``{name}`` placeholder, whose
    percent-decoded value fills *path_field* of the request. A GET takes
    the request's other fields from the query string; a POST takes *body*
    fields from a JSON object. *target* is what the path's name must be for
    a POST: "chat" (a group or random chat) or "user" (404 otherwise), since
    one request type sends to both.
    """

    method: str
    path: tuple[str, ...]
    request_type: str
    path_field: str | None = None
    body: tuple[str, ...] = ()
    status: int = 200
    target: str | None = None

    @property
    def template(self) -> str:
        return "/api/" + "/".join(self.path)

    def query_fields(self, request_class: type[messages.Request]) -> dict[str, Any]:
        """The query parameters a GET takes: the request's fields but those the path gives."""
        if self.method != "GET":
            return {}
        return {
            name: kind for name, kind in messages.request_fields(request_class).items()
            if name not in ("chatname", "user", "recipient")
        }

    def match(self, segments: list[str]) -> str | None | bool:
        """The path's name when *segments* fit this route (True when it has none); else False."""
        if len(segments) != len(self.path):
            return False
        name: str | None = None
        for pattern, segment in zip(self.path, segments):
            if pattern.startswith("{"):
                if not segment:
                    return False
                name = segment
            elif pattern != segment:
                return False
        return True if name is None else name


ROUTES: tuple[Route, ...] = (
    Route("GET", ("conversations",), "ConversationsRequest"),
    Route("GET", ("chats", "{chatname}", "messages"), "HistoryRequest", path_field="chatname"),
    Route("GET", ("direct", "{username}", "messages"), "HistoryRequest", path_field="user"),
    Route("POST", ("chats", "{chatname}", "messages"), "GroupMessageRequest",
          path_field="recipient", body=("content",), status=201, target="chat"),
    Route("POST", ("direct", "{username}", "messages"), "GroupMessageRequest",
          path_field="recipient", body=("content",), status=201, target="user"),
)
# The first segment under /api/ of every route, for web.py to mount.
TOP_SEGMENTS = tuple(sorted({route.path[0] for route in ROUTES}))


def bearer_key(request: Request) -> str | None:
    """The session key of ``Authorization: Bearer KEY``, or None."""
    header = request.getHeader(b"authorization") or b""
    scheme, _, key = header.partition(b" ")
    key = key.strip()
    # Session keys are 43 URL-safe characters; anything else is no key.
    if scheme.lower() != b"bearer" or not 0 < len(key) <= 256:
        return None
    try:
        return key.decode("ascii")
    except UnicodeDecodeError:
        return None


async def session_user(store: Store, request: Request) -> UserRecord | None:
    """The account of the request's live session key (checked on the store's pool), or None."""
    key = bearer_key(request)
    if key is None:
        return None
    return await store.sessions.resume_session(hash_session_key(key))


def unauthorised(request: Request) -> bytes:
    """The 401 of a request without a live session key (status and header set)."""
    request.setResponseCode(401)
    request.setHeader(b"www-authenticate", b'Bearer realm="chateau"')
    return json.dumps({"status": 401, "detail": UNAUTHORISED_DETAIL}).encode()


class HTTPCaller:
    """The :class:`~chateau.connection.Connection` of one HTTP API call.

    Signed in as the key's owner for the call's length. It is never put in
    the registry, so fan-out passes it by; what a handler would send to the
    connection itself (besides its reply) has nowhere to go and is dropped.
    """

    signing_in = False
    delivered_until: int | None = None
    stalled = False

    def __init__(self, username: str, address: str, session_key_hash: str) -> None:
        self.username: str | None = username
        self.address = address
        self.session_key_hash: str | None = session_key_hash
        self.live = True
        self.sent_since_check = False
        self.sent_watch: set[Any] | None = None

    def send_frame(self, frame: Any) -> None:
        """Nothing is routed to a caller that is not registered."""

    def send_message(self, message: dict[str, Any]) -> None:
        """Only the handler's reply is answered."""

    def hold(self) -> None:
        """Nothing is routed here, so nothing is held."""

    def release(self) -> Deferred[None]:
        return succeed(None)

    def wait_writable(self) -> Deferred[None] | None:
        return None

    def close_for(self, code: int, reason: str) -> None:
        self.live = False

    def close_overloaded(self, frames: int, size: int) -> None:
        self.live = False


def _http_status(status: int) -> int:
    """The HTTP status of a WebSocket status (301, "not signed in", is 401)."""
    if status == 301:
        return 401
    return status if 400 <= status <= 599 else 500


class APIResource(Resource):
    """Every route of :data:`ROUTES`, mounted under each of :data:`TOP_SEGMENTS`."""

    isLeaf = True
    _log = Logger()

    def __init__(self, store: Store, dispatcher: Dispatcher, clock: Any) -> None:
        super().__init__()
        self._store = store
        self._dispatcher = dispatcher
        limits = dispatcher.services.config.limits
        self._rates = AddressRates(
            limits.message_rate, limits.message_burst, clock.seconds, limits.http_rate_entries
        )
        # Each route's request class, looked up once: a name the build lacks
        # is logged and its route answers 501.
        self._classes: dict[Route, type[messages.Request] | None] = {}
        for route in ROUTES:
            found = messages.REQUEST_TYPES.get(route.request_type)
            if found is None:
                self._log.warn(
                    "{method} {path} needs {kind}, which this server does not have",
                    method=route.method, path=route.template, kind=route.request_type,
                )
            self._classes[route] = found

    def render(self, request: Request) -> Any:
        request.setHeader(b"content-type", JSON_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        try:
            segments = [
                part.decode("utf-8") for part in request.prepath[1:] + request.postpath
            ]
        except UnicodeDecodeError:
            return self._error(request, 400, "the path is not UTF-8 once percent-decoded")
        method = request.method.decode("ascii", "replace")
        fitting = [(route, route.match(segments)) for route in ROUTES]
        fitting = [(route, name) for route, name in fitting if name is not False]
        if not fitting:
            return self._error(request, 404, "no such API route: see /api/openapi.json")
        for route, name in fitting:
            if route.method == method:
                ensureDeferred(self._serve(request, route, None if name is True else name))
                return NOT_DONE_YET
        request.setHeader(b"allow", ", ".join(route.method for route, _ in fitting).encode())
        return self._error(request, 405, f"{method} is not allowed here")

    @staticmethod
    def _error(request: Request, status: int, detail: str) -> bytes:
        request.setResponseCode(status)
        return messages.encode({"status": status, "detail": detail})

    async def _serve(self, request: Request, route: Route, name: str | None) -> None:
        username: str | None = None
        try:
            caller = await self._caller(request)
            if caller is None:
                self._finish(request, 401, json.loads(unauthorised(request)))
                return
            username = caller.username
            if route.method == "POST":
                self._take_token(caller)
            built = self._build(request, route, name)
            if route.target is not None:
                self._check_target(route, name or "")
            reply = await self._dispatcher.dispatch(caller, built)
        except Exception:
            reply = error_reply(Failure(), route.request_type, username, self._log)
            reply.pop("type", None)
            reply.pop("msg_id", None)
            status = _http_status(reply["status"])
            reply["status"] = status
            wait = reply.get("retry_after")
            if status == TOO_MANY_REQUESTS and isinstance(wait, (int, float)):
                request.setHeader(b"retry-after", str(max(1, math.ceil(wait))).encode())
            self._finish(request, status, reply)
            return
        answer = dict(reply or {})
        answer.pop("type", None)
        answer.pop("msg_id", None)
        answer["status"] = route.status
        self._finish(request, route.status, answer)

    async def _caller(self, request: Request) -> HTTPCaller | None:
        """The caller of a live session key, or None; 403 for a banned account."""
        key = bearer_key(request)
        if key is None:
            return None
        key_hash = hash_session_key(key)
        user = await self._store.sessions.resume_session(key_hash)
        if user is None:
            return None
        refusal = user.ban_refusal()
        if refusal is not None:
            raise ChateauError(FORBIDDEN, refusal)
        recheck = self._dispatcher.services.directory_recheck
        # A directory account's key outlives the directory's "no" only until
        # its next use, here as at a ResumeRequest (chateau.deprovisioning).
        if user.auth_method == DIRECTORY and recheck is not None and not await recheck(
            user.username
        ):
            return None
        address = getattr(request.getClientAddress(), "host", None) or "?"
        return HTTPCaller(user.username, address, key_hash)

    def _take_token(self, caller: HTTPCaller) -> None:
        assert caller.session_key_hash is not None
        wait = self._rates.take(caller.session_key_hash)
        if wait:
            raise ChateauError(
                TOO_MANY_REQUESTS,
                "too many messages: slow down and retry after Retry-After seconds",
                retry_after=round(wait, 3),
            )

    def _build(self, request: Request, route: Route, name: str | None) -> messages.Request:
        """The typed request of a call, as a frame with the same fields would give."""
        request_class = self._classes[route]
        if request_class is None:
            raise ChateauError(NOT_IMPLEMENTED, f"this server does not serve {route.template} yet")
        data: dict[str, Any] = {"type": route.request_type}
        allowed = route.query_fields(request_class)
        # The query string's own parameters: twisted.web also puts a form
        # body's fields in request.args (curl -d sends a JSON body as a form).
        query = request.uri.partition(b"?")[2]
        for raw_key, values in parse_qs(query, keep_blank_values=True).items():
            try:
                key = raw_key.decode("utf-8")
                value = values[-1].decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("the query string is not UTF-8 once percent-decoded") from None
            if key not in allowed:
                takes = ", ".join(allowed) or "no parameters"
                raise BadRequest(f"unknown query parameter {key!r}: {route.template} takes {takes}")
            if len(values) > 1:
                raise BadRequest(f"query parameter {key!r} is given more than once")
            if allowed[key] is int:
                if not _INTEGER.fullmatch(value):
                    raise BadRequest(
                        f"{route.request_type}: field {key!r} must be an integer (64-bit)"
                    )
                data[key] = int(value)
            elif allowed[key] is bool and value in ("true", "false"):
                data[key] = value == "true"
            else:
                data[key] = value
        if route.body:
            require_stored_messages(self._dispatcher.services, "sending over HTTP")
            request.content.seek(0)
            body = messages.parse_json(request.content.read(), "the request body")
            if not isinstance(body, dict):
                raise BadRequest("the request body must be a JSON object")
            data.update((field, body[field]) for field in route.body if field in body)
        if route.path_field is not None:
            data[route.path_field] = name
        return messages.decode_request(data)

    def _check_target(self, route: Route, name: str) -> None:
        """404 when the path names a user where a chat is wanted, or the other way round."""
        target = lookup(name)
        registry = self._dispatcher.services.registry
        chat = registry.group(target) is not None or registry.pair(target) is not None
        if route.target == "chat" and not chat:
            raise ChateauError(NOT_FOUND, f"no such group: {name!r}")
        if route.target == "user" and chat:
            raise ChateauError(NOT_FOUND, f"no such user: {name!r}")

    @staticmethod
    def _finish(request: Request, status: int, body: dict[str, Any]) -> None:
        if request.finished or request._disconnected:
            return
        request.setResponseCode(status)
        request.write(messages.encode(body))
        request.finish()


def openapi_document() -> bytes:
    """chateau/openapi.json, the description of every /api/ route."""
    return resources.files("chateau").joinpath("openapi.json").read_bytes()


class OpenAPIResource(Resource):
    """``GET /api/openapi.json``: the API's OpenAPI 3 document, read once at start-up.

    Served without a key: it says only what the routes are.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._body = openapi_document()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", JSON_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return messages.encode({"status": 404, "detail": "use /api/openapi.json"})
        return self._body

