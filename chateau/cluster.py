"""Several Chateau nodes joined by Redis: the backplane behind the registry.

Each node keeps, in Redis, a key that says it is alive (with an expiry, the
presence TTL) and the set of users connected to it; it refreshes both every
third of the TTL. Changes are also published at once on one channel every
node listens to, and messages for a node's users go to that node's own
channel. A node that stops refreshing its key is dead: the others forget its
users when the key expires, so there are no ghosts.

The registry stays the one place that routes: it hands users on other nodes
to :meth:`RedisBackplane.forward`. Everything here runs on the reactor
through txredisapi's protocols, so Redis never blocks it; when Redis is out
of reach, :attr:`RedisBackplane.connected` is False and sends to users on
other nodes are refused with 503 (see :meth:`chateau.delivery.Delivery.check_reachable`).
What other nodes say goes to the one :class:`~chateau.backplane.ClusterListener`
(:class:`chateau.cluster_sync.ClusterSync`), once :mod:`chateau.cluster_events`
has checked it: anything in Redis is data, and what does not fit is logged,
counted and dropped.

Redis may require a password (and an ACL user name) and be reached over TLS
(``rediss://``), its certificate checked against ``[cluster] redis_ca_file``
(or the system's CAs) and the host name. A refusal (a wrong password, a
certificate that does not verify) at start-up stops the node with one clear
line; an unreachable Redis does not (see :meth:`RedisBackplane.first_contact`).

Offline delivery in a cluster (docs/cluster.md): every message records the
node that committed it, and each user has one delivery cursor per origin
node. A node routes its own messages in commit order, and Redis keeps the
order of what one connection publishes, so per origin the single-node rule
holds. When a user comes online, the other nodes answer with a *fence*: the
newest id they had routed before they knew. Messages up to the fence are
pushed from the database; later ones arrive live.

One concern, the Redis side of the cluster (links, presence, fences,
healing), hence its length.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import unquote, urlsplit

import txredisapi
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import endpoints, ssl
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from chateau.backplane import ClusterListener
from chateau.cluster_events import (
    BadClusterMessage, node_name, parse_event, parse_forward, username,
)

if TYPE_CHECKING:
    from chateau.metrics import Metrics
    from chateau.registry import Registry

PREFIX = "chateau"
NODES = f"{PREFIX}:nodes"
# An error reply from Redis starts with its code: WRONGPASS, NOAUTH, ERR...
_ERROR_REPLY = re.compile(r"[A-Z][A-Z_]* ")

# Replaces a node's user set and refreshes its keys in one atomic step.
_REFRESH = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[3], ARGV[3])
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 500 do
  redis.call('SADD', KEYS[2], unpack(ARGV, i, math.min(i + 499, #ARGV)))
end
if #ARGV >= 4 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return 1
"""


def events_channel(database: int) -> str:
    # Pub/sub channels are shared by all of a Redis server's databases: the
    # number keeps clusters on different databases of one server apart.
    return f"{PREFIX}:{database}:events"


def node_channel(database: int, node: str) -> str:
    return f"{PREFIX}:{database}:node:{node}"


def alive_key(node: str) -> str:
    return f"{PREFIX}:node:{node}:alive"


def users_key(node: str) -> str:
    return f"{PREFIX}:node:{node}:users"


def default_node_name(listen: tuple[str, ...]) -> str:
    """The host name plus the first listening port (unique on one machine)."""
    port = ""
    for description in listen:
        parts = description.split(":")
        if len(parts) > 1 and parts[1].isdigit():
            port = parts[1]
            break
    return f"{socket.gethostname()}:{port or 'x'}"[:64]


class ClusterRefused(Exception):
    """Redis refused this node (authentication, database or TLS): a configuration error."""


@dataclass
class RedisAddress:
    """Where Redis is and how to sign in to it (the password never in a repr or log)."""

    host: str
    port: int
    database: int
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    username: str | None = None

    @classmethod
    def parse(cls, url: str) -> "RedisAddress":
        parts = urlsplit(url)
        database = parts.path.lstrip("/")
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 6379,
            database=int(database) if database else 0,
            password=unquote(parts.password) if parts.password else None,
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
        )

    @property
    def display(self) -> str:
        """The URL for log lines: the user name, never the password."""
        user = f"{self.username}@" if self.username else ""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{user}{self.host}:{self.port}/{self.database}"

    def redact(self, text: str) -> str:
        """*text* (an error from Redis or TLS) with the password, should it be there, hidden."""
        return text.replace(self.password, "***") if self.password else text

    def endpoint(self, reactor: Any, tls_options: Any = None) -> Any:
        endpoint = endpoints.HostnameEndpoint(reactor, self.host, self.port, timeout=5)
        if self.tls:
            endpoint = endpoints.wrapClientTLS(tls_options or client_tls(self.host), endpoint)
        return endpoint


def client_tls(host: str, ca_file: str = "", cert_file: str = "", key_file: str = "") -> Any:
    """TLS options that verify Redis's certificate against *ca_file* and *host*.

    Without *ca_file*, the system's trusted CAs. *cert_file* and *key_file*
    are this node's own certificate, for a Redis with ``tls-auth-clients``.
    The files are read here, once, at start-up.
    """
    trust: Any = None
    if ca_file:
        with open(ca_file, "rb") as handle:
            # Every certificate in the file (a bundle may hold several CAs).
            certificates = x509.load_pem_x509_certificates(handle.read())
        trust = ssl.trustRootFromCertificates([
            ssl.Certificate.loadPEM(certificate.public_bytes(Encoding.PEM))
            for certificate in certificates
        ])
    client = None
    if cert_file:
        with open(cert_file, "rb") as handle:
            certificate = handle.read()
        with open(key_file or cert_file, "rb") as handle:
            key = handle.read()
        client = ssl.PrivateCertificate.loadPEM(certificate + b"\n" + key)
    return ssl.optionsForClientTLS(host, trustRoot=trust, clientCertificate=client)


class _RedisFactory(Factory):
    """Builds txredisapi protocols for a ClientService (which does the reconnecting).

    *ready* is called with each protocol once Redis has answered its SELECT.
    (Not through ClientService's prepareConnection: a connection lost while
    that is pending trips ClientService's state machine.)
    """

    noisy = False
    isLazy = False

    def __init__(
        self, protocol_class: type, address: RedisAddress, reply_timeout: float,
        ready: Callable[[Any], Any], backplane: "RedisBackplane | None" = None,
    ) -> None:
        self._protocol_class = protocol_class
        self._address = address
        self._reply_timeout = reply_timeout
        self._ready = ready
        self._backplane = backplane

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._protocol_class(
            charset=None, replyTimeout=self._reply_timeout, password=self._address.password,
            dbid=self._address.database, convertNumbers=False, username=self._address.username,
        )
        protocol.factory = self
        protocol.backplane = self._backplane
        protocol.whenConnected().addCallback(self._ready)
        return protocol

    # txredisapi calls these when AUTH or SELECT fails.
    def stopTrying(self) -> None:
        pass

    def connectionError(self, why: str) -> None:
        detail = why.removeprefix("Redis error: ")
        # Only an error reply (WRONGPASS, NOAUTH, ERR ...) is a refusal; a
        # lost connection or a reply that never came is an outage.
        if self._backplane is not None and _ERROR_REPLY.match(detail.partition(": ")[2]):
            self._backplane.refused(detail)


def _tls_refusal(reason: Any) -> str | None:
    """Why the TLS handshake failed, if it did (else None: an ordinary loss)."""
    if reason.check(VerificationError):
        return f"TLS: the certificate does not name this host ({reason.getErrorMessage()})"
    if reason.check(SSL.Error):
        return f"TLS: {reason.getErrorMessage()}"
    return None


class _TellsRefusals:
    """Tells the backplane when the TLS handshake failed (a refusal, not an outage)."""

    backplane: "RedisBackplane | None" = None

    def connectionLost(self, why: Any) -> None:
        refusal = _tls_refusal(why)
        if refusal is not None and self.backplane is not None:
            self.backplane.refused(refusal)
        super().connectionLost(why)  # type: ignore[misc]


class _Commands(_TellsRefusals, txredisapi.RedisProtocol):
    pass


# With hiredis installed (a dependency), txredisapi's protocols parse with it:
# every reply of one read is handed on in that turn. Its pure-Python parser
# handed each bulk string after the first on in a reactor turn of its own, so
# messages forwarded together were fanned out one per turn and their frames
# to each connection were written one by one (docs/performance.md).
class _Subscriber(_TellsRefusals, txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        if self.backplane is not None:
            self.backplane.received(channel, message)


@dataclass
class _Fence:
    waiting_for: set[str]
    replies: dict[str, int]
    done: Deferred[dict[str, int]]


class RedisBackplane(Service):
    """This node's link to the others, through one Redis server."""

    log = Logger()

    def __init__(self, reactor: Any, registry: "Registry", metrics: "Metrics", node: str,
                 redis_url: str, presence_ttl: float, fence_timeout: float,
                 ca_file: str = "", cert_file: str = "", key_file: str = "",
                 max_payload: int = 4 * 65536) -> None:
        self.reactor = reactor
        self.registry = registry
        self.metrics = metrics
        self.listener: ClusterListener | None = None
        self.node: str | None = node
        self.address = RedisAddress.parse(redis_url)
        tls_options = None
        if self.address.tls:
            tls_options = client_tls(self.address.host, ca_file, cert_file, key_file)
        # The largest forwarded message taken from another node.
        self.max_payload = max_payload
        self.presence_ttl = presence_ttl
        self.fence_timeout = fence_timeout
        self._events = events_channel(self.address.database)
        self._channel = node_channel(self.address.database, node)
        self._commands: Any = None
        self._subscriber: Any = None
        self._subscribed = False
        self._fences: dict[str, _Fence] = {}
        # Other nodes seen alive in the last snapshot.
        self.live_nodes: set[str] = set()
        # (user, node) -> when an event last changed it (snapshots older lose).
        self._touched: dict[tuple[str, str], float] = {}
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._refresh_sha: str | None = None
        self._beating = False
        self._was_connected = False
        self._joined_at = 0.0
        # Refusals (authentication, TLS) since the node was last in touch,
        # and the last one logged: a refusal is logged once, not per retry.
        self._refusals = 0
        self._refusal_logged: str | None = None
        self._first_contact: Deferred[None] = Deferred()
        reply_timeout = max(1.0, presence_ttl / 3)
        backoff = backoffPolicy(initialDelay=0.2, maxDelay=2.0)

        def policy(attempt: int) -> float:
            # A refused connection is "made" each time: back off all the same.
            return backoff(attempt + self._refusals)

        self._command_service = ClientService(
            self.address.endpoint(reactor, tls_options),
            _RedisFactory(_Commands, self.address, reply_timeout,
                          ready=self._command_ready, backplane=self),
            retryPolicy=policy, clock=reactor,
        )
        self._subscriber_service = ClientService(
            self.address.endpoint(reactor, tls_options),
            _RedisFactory(_Subscriber, self.address, reply_timeout,
                          ready=self._subscriber_ready, backplane=self),
            retryPolicy=policy, clock=reactor,
        )

    def attach(self, listener: ClusterListener) -> None:
        """Name the one object that hears what other nodes say (before the service starts)."""
        self.listener = listener

    @property
    def _listener(self) -> ClusterListener:
        assert self.listener is not None, "attach a ClusterListener before starting"
        return self.listener

    # -- connection state ---------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether both links to Redis are up (and this node has announced itself)."""
        return (
            self._commands is not None and self._commands.connected == 1
            and self._subscriber is not None and self._subscriber.connected == 1
            and self._subscribed
        )

    def startService(self) -> None:
        super().startService()
        self._command_service.startService()
        self._subscriber_service.startService()
        self._heartbeat.start(self.presence_ttl / 3, now=False)
        self._command_service.whenConnected(failAfterFailures=1).addErrback(self._unreachable)
        # Start-up waits at most presence_ttl for Redis's first answer.
        call = self.reactor.callLater(self.presence_ttl, self._first_contact_timed_out)
        self._first_contact.addBoth(lambda result: (call.active() and call.cancel(), result)[1])

    def first_contact(self) -> Deferred[None]:
        """Fires once the first try to reach Redis is over; fails with ClusterRefused if refused.

        Joined, or unreachable (the node then serves its own users and keeps
        trying, as when Redis goes down later), it fires with None. A wrong
        password, user or database, or a certificate that does not verify,
        is a configuration error: it fails, and start-up stops.
        """
        return self._first_contact

    def _settle_first_contact(self, failure: Any = None) -> None:
        if not self._first_contact.called:
            if failure is None:
                self._first_contact.callback(None)
            else:
                self._first_contact.errback(failure)

    def _first_contact_timed_out(self) -> None:
        if not self._first_contact.called:
            self.log.warn(
                "no answer from Redis at {url} within {timeout} s; serving this node's users "
                "only and trying again", url=self.address.display, timeout=self.presence_ttl,
            )
            self._settle_first_contact()

    def _unreachable(self, failure: Any) -> None:
        if not self._first_contact.called:
            self.log.warn(
                "Redis at {url} is out of reach ({error}); serving this node's users only "
                "and trying again", url=self.address.display,
                error=self.address.redact(failure.getErrorMessage()),
            )
            self._settle_first_contact()

    def refused(self, why: str) -> None:
        """Redis (or its TLS certificate) refused this node; logged once, without secrets."""
        why = self.address.redact(why)
        self._refusals += 1
        self.metrics.cluster_refusals.inc()
        if not self._first_contact.called:
            self._refusal_logged = why  # start-up says it, once
            self._settle_first_contact(ClusterRefused(
                f"Redis at {self.address.display} refused this node: {why}; "
                "check [cluster] redis_url and the redis_*_file keys"
            ))
            return
        if why != self._refusal_logged:
            self._refusal_logged = why
            self.log.error(
                "Redis at {url} refused this node: {why}; trying again", url=self.address.display,
                why=why,
            )

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        return ensureDeferred(self._stop())

    async def _stop(self) -> None:
        commands = self._commands
        if commands is not None and commands.connected:
            try:
                # Leave at once rather than after the TTL.
                await commands.execute_command("DEL", alive_key(self.node), users_key(self.node))
                await commands.execute_command("SREM", NODES, self.node)
                await self._publish({"t": "reset", "node": self.node})
            except Exception:
                self.log.info("could not say goodbye to Redis")
        await self._command_service.stopService()
        await self._subscriber_service.stopService()

    def _command_ready(self, protocol: Any) -> None:
        if not self.running:
            protocol.transport.loseConnection()
            return
        self._commands = protocol
        protocol.whenDisconnected().addCallback(lambda _: self._lost(protocol))
        self._maybe_joined()

    def _subscriber_ready(self, protocol: Any) -> Any:
        if not self.running:
            protocol.transport.loseConnection()
            return None
        protocol.whenDisconnected().addCallback(lambda _: self._lost(protocol))

        def subscribed(_: Any) -> None:
            if protocol.connected:
                self._subscriber = protocol
                self._subscribed = True
                self._maybe_joined()

        return protocol.subscribe([self._events, self._channel]).addCallbacks(
            subscribed, lambda failure: self.log.warn(
                "subscribing failed: {error}", error=failure.getErrorMessage())
        )

    def _lost(self, protocol: Any) -> None:
        if protocol is self._subscriber:
            self._subscribed = False
            self._subscriber = None
        elif protocol is self._commands:
            self._commands = None
        else:
            return  # a connection that never became current
        if self._was_connected:
            self._was_connected = False
            self.log.warn(
                "lost the cluster link (Redis {host}:{port}); serving this node's users only",
                host=self.address.host, port=self.address.port,
            )
            self.metrics.cluster_connected.set(0)
            self._listener.link_lost()
        for fence in list(self._fences.values()):
            if not fence.done.called:
                fence.done.callback(dict(fence.replies))
        self._fences.clear()

    def _maybe_joined(self) -> None:
        if not (self._commands is not None and self._subscribed) or self._was_connected:
            return
        self._was_connected = True
        self._refusals = 0
        self._refusal_logged = None
        self._settle_first_contact()
        self.metrics.cluster_connected.set(1)
        self.log.info(
            "joined the cluster as {node} (Redis {url})", node=self.node, url=self.address.display,
        )
        ensureDeferred(self._joined()).addErrback(
            lambda failure: self.log.failure("rejoining the cluster failed", failure)
        )

    async def _joined(self) -> None:
        """Announce this node and what it has; learn what the others have.

        The hello carries a fence: the nodes already in touch answer it, and
        those that come back later answer their own hello's counterpart (see
        :meth:`_event`), so either way this node's users get what was kept
        for them meanwhile.
        """
        self._joined_at = self.reactor.seconds()
        fences: dict[str, int] = {}
        try:
            await self._refresh()
            hello = {"t": "hello", "users": self.registry.local_users()}
            answers = self._new_fence(hello)
            self.publish(hello)
            await self._snapshot()
            fences = await answers
        finally:
            # Whatever happened, stop holding messages for users here.
            await self._listener.rejoined(fences)

    # -- publishing ---------------------------------------------------------

    async def _publish(self, event: dict[str, Any], channel: str | None = None) -> None:
        commands = self._commands
        if commands is None:
            return
        await commands.execute_command(
            "PUBLISH", channel or self._events, json.dumps(event, separators=(",", ":"))
        )

    def publish(self, event: dict[str, Any]) -> None:
        """Tell every other node of a change (fire and forget; lost while Redis is down)."""
        if self.connected:
            event["node"] = self.node
            ensureDeferred(self._publish(event)).addErrback(self._publish_failed)

    def _publish_failed(self, failure: Any) -> None:
        self.log.warn("a cluster event was not published: {error}", error=failure.getErrorMessage())

    def forward(
        self, node: str, usernames: list[str], payload: bytes, message_id: int | None,
        sender: str | None = None,
    ) -> None:
        """Send an encoded message to *usernames* on *node*, in the order sent.

        The header names its *sender*, if any, so that node can pass over
        its users who block them.
        """
        commands = self._commands
        if commands is None or not self.connected:
            self.log.warn(
                "message for {count} user(s) on {other} not forwarded: no cluster link",
                count=len(usernames), other=node,
            )
            return
        route: dict[str, Any] = {"o": self.node, "u": usernames, "i": message_id}
        if sender is not None:
            route["s"] = sender
        header = json.dumps(route, separators=(",", ":"))
        commands.execute_command(
            "PUBLISH", node_channel(self.address.database, node), b"M" + header.encode() + b"\n" + payload
        ).addErrback(self._publish_failed)

    # -- presence -----------------------------------------------------------

    def user_joined(self, username: str) -> Deferred[dict[str, int]]:
        """Announce a user's first connection here.

        Fires with each other node's fence: the newest id it had routed
        before it learnt of the user (nodes that do not answer within
        ``fence_timeout`` are left out).
        """
        event: dict[str, Any] = {"t": "join", "user": username}
        if not self.connected:
            return succeed({})
        commands = self._commands
        commands.execute_command("SADD", users_key(self.node), username).addErrback(self._publish_failed)
        done = self._new_fence(event)
        self.publish(event)
        return done

    def _new_fence(
        self, event: dict[str, Any], only: set[str] | None = None
    ) -> Deferred[dict[str, int]]:
        token = secrets.token_hex(8)
        event["fence"] = token
        if only is None:
            waiting = (self.live_nodes | self.registry.remote_nodes()) - {self.node}
        else:
            waiting = set(only)
        done: Deferred[dict[str, int]] = Deferred()
        if not waiting:
            done.callback({})
            return done
        fence = _Fence(set(waiting), {}, done)
        self._fences[token] = fence

        def timed_out() -> None:
            if self._fences.pop(token, None) is not None and not done.called:
                self.log.warn(
                    "no fence from {nodes} within {timeout} s", nodes=sorted(fence.waiting_for),
                    timeout=self.fence_timeout,
                )
                done.callback(dict(fence.replies))

        call = self.reactor.callLater(self.fence_timeout, timed_out)
        done.addBoth(lambda result: (call.active() and call.cancel(), result)[1])
        return done

    def fence_from(self, node: str) -> Deferred[dict[str, int]]:
        """Ask *node* (just back in touch) for its fence for all this node's users."""
        if not self.connected:
            return succeed({})
        event: dict[str, Any] = {"t": "refence"}
        done = self._new_fence(event, only={node})
        self.publish(event)
        return done

    def user_left(self, username: str) -> None:
        if not self.connected:
            return
        self._commands.execute_command("SREM", users_key(self.node), username).addErrback(
            self._publish_failed
        )
        self.publish({"t": "leave", "user": username})

    # -- receiving ----------------------------------------------------------

    def received(self, channel: bytes, message: bytes) -> None:
        """One message from Redis: checked, then handled; dropped (logged, counted) if bad."""
        try:
            if message[:1] == b"M":
                forward = parse_forward(message[1:], self.max_payload)
            else:
                event = parse_event(message)
        except BadClusterMessage as bad:
            self.rejected(bad, channel, len(message))
            return
        try:
            if message[:1] == b"M":
                self._listener.forwarded(
                    forward.origin, forward.usernames, forward.payload, forward.message_id,
                    forward.sender,
                )
            elif event["node"] != self.node:
                self._event(event)
        except Exception:
            self.log.failure(
                "a cluster message could not be handled: {size} bytes", size=len(message)
            )

    def rejected(self, bad: BadClusterMessage, channel: bytes, size: int) -> None:
        """Log and count a message from Redis that does not fit (never its content)."""
        self.metrics.cluster_events_rejected.labels(bad.reason).inc()
        self.log.warn(
            "dropped a malformed cluster message on {channel}: {reason}, {detail} "
            "(kind {kind}, field {field}, {size} bytes)",
            channel=channel.decode("utf-8", "replace")[:80], reason=bad.reason,
            detail=bad.detail, kind=bad.kind, field=bad.field, size=size,
        )

    def _event(self, event: dict[str, Any]) -> None:
        kind = event["t"]
        node = event["node"]
        if kind == "reset":
            self.live_nodes.discard(node)  # it stopped: no fence will come from it
        else:
            self.live_nodes.add(node)
        if kind == "fence":
            fence = self._fences.get(event["token"])
            if fence is not None:
                fence.replies[node] = int(event["last"])
                fence.waiting_for.discard(node)
                if not fence.waiting_for:
                    del self._fences[event["token"]]
                    fence.done.callback(dict(fence.replies))
            return
        if kind in ("join", "leave"):
            self._touched[(event["user"], node)] = time.monotonic()
        if kind == "hello":
            for user in event["users"]:
                self._touched[(user, node)] = time.monotonic()
        self._listener.event(event)
        if kind == "hello" and self._joined_at:
            # It may have kept messages for users here while out of touch.
            ensureDeferred(self._listener.peer_returned(node, self.fence_from(node))).addErrback(
                lambda failure: self.log.failure("catching up with {node} failed", failure, node=node)
            )
        token = event.get("fence")
        if token is not None:
            # Answered in the same turn as the change was applied: everything
            # routed after this reply knows of it.
            ensureDeferred(self._publish(
                {"t": "fence", "node": self.node, "token": token, "last": self._listener.last_routed_id},
                channel=node_channel(self.address.database, node),
            )).addErrback(self._publish_failed)

    # -- heartbeat and healing ----------------------------------------------

    def _beat(self) -> Any:
        if not self.connected or self._beating:
            return None
        self._beating = True

        async def beat() -> None:
            try:
                await self._refresh()
                await self._snapshot()
            finally:
                self._beating = False

        return ensureDeferred(beat()).addErrback(
            lambda failure: self.log.warn("cluster heartbeat failed: {error}",
                                          error=failure.getErrorMessage())
        )

    async def _refresh(self) -> None:
        """Say this node is alive, with exactly the users it has."""
        commands = self._commands
        if commands is None:
            return
        ttl_ms = str(int(self.presence_ttl * 1000))
        keys = [alive_key(self.node), users_key(self.node), NODES]
        args = [str(int(time.time())), ttl_ms, self.node, *self.registry.local_users()]
        await commands.execute_command("EVAL", _REFRESH, len(keys), *keys, *args)

    async def _snapshot(self) -> None:
        """Reconcile the mirror of other nodes' users with Redis; forget dead nodes."""
        commands = self._commands
        if commands is None:
            return
        started = time.monotonic()
        nodes = self._valid(await commands.execute_command("SMEMBERS", NODES), node_name, NODES)
        nodes.discard(self.node)
        known = self.registry.remote_nodes() | self.live_nodes
        replies = {}
        for node in sorted(nodes | known):
            replies[node] = (
                commands.execute_command("EXISTS", alive_key(node)),
                commands.execute_command("SMEMBERS", users_key(node)),
            )
        live: set[str] = set()
        # Just after this node (re)joined, a node without its key may only be
        # slower to come back (after a Redis restart every key is gone).
        settling = self.reactor.seconds() - self._joined_at < self.presence_ttl
        for node, (exists, members) in replies.items():
            alive = int(await exists) == 1
            users = self._valid(await members, username, users_key(node))
            if not alive and settling:
                continue
            if not alive:
                if node in nodes:
                    await commands.execute_command("SREM", NODES, node)
                self._listener.node_gone(node)
                self._forget_touched(node)
                continue
            live.add(node)
            self._reconcile(node, users, started)
        self.live_nodes = live

    def _valid(self, members: Any, check: Any, key: str) -> set[str]:
        """The members of a Redis set that pass *check*; the others are logged and counted."""
        valid = set()
        for member in members:
            try:
                text = member.decode("utf-8")
            except (AttributeError, UnicodeDecodeError):
                text = None
            problem = "not UTF-8 text" if text is None else check(text)
            if problem is None:
                valid.add(text)
                continue
            self.rejected(BadClusterMessage("field", problem, "snapshot", "member"),
                          key.encode(), len(member) if isinstance(member, bytes) else 0)
        return valid

    def _reconcile(self, node: str, users: set[str], started: float) -> None:
        mirrored = set(self.registry.remote_users(node))
        for user in users - mirrored:
            if self._touched.get((user, node), 0.0) < started:
                self._listener.event({"t": "join", "node": node, "user": user})
        for user in mirrored - users:
            if self._touched.get((user, node), 0.0) < started:
                self._listener.event({"t": "leave", "node": node, "user": user})
        # Old change times are no use any more.
        for key in [k for k, when in self._touched.items() if k[1] == node and when < started]:
            del self._touched[key]

    def _forget_touched(self, node: str) -> None:
        for key in [k for k in self._touched if k[1] == node]:
            del self._touched[key]

    def status(self) -> dict[str, Any]:
        return {"node": self.node, "connected": self.connected, "nodes": sorted(self.live_nodes)}
