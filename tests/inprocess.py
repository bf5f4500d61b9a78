"""A whole Chateau in one test, without sockets or a running reactor.

The chat is wired as :class:`chateau.service.Chateau` wires it (the real
registry, delivery, catch-up, authenticator and a SQLite store), but its
reactor is a :class:`~twisted.internet.task.Clock` and its thread pools run
their work before returning, so a request is handled to the end by
:meth:`InProcessChat.request` and a test reads like a conversation.
Connections are :class:`FakeConnection` objects that keep what they were
sent, decoded as a client would see it.
"""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chateau import messages
from chateau.announcements import Announcer
from chateau.auth import LOCAL, Authenticator
from chateau.auth.local import Hasher, LocalChecker
from chateau.backplane import NullBackplane
from chateau.catchup import CatchUp
from chateau.cluster_sync import ClusterSync, load_shared
from chateau.config import Config, load_config
from chateau.delivery import Delivery
from chateau.errors import ChateauError
from chateau.handlers.context import Services
from chateau.handlers.dispatch import Dispatcher
from chateau.handlers import erasure
from chateau.handlers.operators import notice_appliers
from chateau.limits import SignInThrottle
from chateau.messages import Request
from chateau.metrics import Metrics
from chateau.notices import NoticeWatch
from chateau.receipts import ReadReceipts
from chateau.registry import Registry
from chateau.store import Store
from chateau.store.engine import make_engine
from chateau.typing import Typing


class SyncClock(Clock):
    """A Clock that is also enough of a reactor for ``deferToThreadPool``.

    Pool work finishes on the calling thread (or is waited for), so "from
    the thread" is already the reactor thread: call at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)

    def settle(self) -> None:
        """Run every call that is due now, including those they schedule.

        The message writer starts each batch with ``callLater(0, ...)``.
        """
        self.advance(0)


class InlinePool:
    """A ThreadPool stand-in that runs each job at once, on the calling thread.

    ``pause()`` makes it keep jobs until ``run_next()`` or ``resume()``, so a
    test can stop a request at its next database call and act meanwhile.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._waiting: list[Callable[[], None]] | None = None

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], func: Callable[..., Any],
        *args: Any, **kw: Any,
    ) -> None:
        def job() -> None:
            try:
                result = func(*args, **kw)
            except BaseException:
                on_result(False, Failure())
            else:
                on_result(True, result)

        if self._waiting is not None:
            self._waiting.append(job)
        else:
            job()

    def pause(self) -> None:
        if self._waiting is None:
            self._waiting = []

    @property
    def waiting(self) -> int:
        return len(self._waiting or ())

    def run_next(self) -> None:
        """Run the oldest kept job (it may keep more)."""
        assert self._waiting, "no job is waiting"
        self._waiting.pop(0)()

    def resume(self) -> None:
        """Run the kept jobs, and every later one at once again."""
        while self._waiting:
            self.run_next()
        self._waiting = None


class WorkerPool:
    """Runs each job on one worker thread and waits for it.

    For the password hasher: its jobs lower their own thread's CPU priority
    (SCHED_IDLE, for good), which must not happen to the test process's main
    thread.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], func: Callable[..., Any],
        *args: Any, **kw: Any,
    ) -> None:
        def job() -> tuple[bool, Any]:
            try:
                return True, func(*args, **kw)
            except BaseException:
                return False, Failure()

        success, result = self._executor.submit(job).result()
        on_result(success, result)

    def stop(self) -> None:
        self._executor.shutdown(wait=True)


class FakeConnection:
    """One client connection, keeping every message it was sent.

    ``wire`` is everything in the order a client would read it, replies
    included; :meth:`take` returns what arrived unasked (pushes carry no
    ``msg_id``; every reply does).
    """

    def __init__(self, last_routed: Callable[[], int], address: str = "127.0.0.1") -> None:
        self.username: str | None = None
        self.signing_in = False
        self.live = True
        self.address = address
        self.delivered_until: int | None = None
        self.stalled = False
        self.session_key_hash: str | None = None
        self.sent_since_check = False
        self.sent_watch: set[Any] | None = None
        self.wire: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None
        self._last_routed = last_routed
        self._held: list[Any] | None = None
        self._taken = 0

    def _note_sent(self) -> None:
        if not self.sent_since_check:
            self.sent_since_check = True
            if self.sent_watch is not None:
                self.sent_watch.add(self)

    def send_frame(self, frame: Any) -> None:
        self._note_sent()
        if self._held is not None:
            self._held.append(frame)
        elif self.live:
            # The real connection writes this prepared frame's bytes.
            self.wire.append(json.loads(frame.payload))

    def send_message(self, message: dict[str, Any]) -> None:
        self._note_sent()
        if self.live:
            # Through JSON, as the client gets it (and a copy, not the handler's dict).
            self.wire.append(json.loads(messages.encode(message)))

    def hold(self) -> None:
        if self._held is None:
            self._held = []

    def release(self) -> Deferred[None]:
        held, self._held = self._held, None
        for frame in held or ():
            self.send_frame(frame)
        return succeed(None)

    def wait_writable(self) -> Deferred[None] | None:
        return None

    def close_for(self, code: int, reason: str) -> None:
        if self.live:
            self.closed_with = (code, reason)
            self.stop_sending()

    def close_overloaded(self, frames: int, size: int) -> None:
        self.close_for(1013, "too many messages waiting: try again later")

    def stop_sending(self) -> None:
        """No more frames go out: note how far this user got, as the protocol does."""
        if self.live:
            self.live = False
            self.delivered_until = self._last_routed()

    def take(self) -> list[dict[str, Any]]:
        """The pushes (messages without ``msg_id``) since the last take."""
        new = self.wire[self._taken:]
        self._taken = len(self.wire)
        return [message for message in new if "msg_id" not in message]


@dataclass
class Exchange:
    """A request handed to the dispatcher, and what became of it."""

    connection: FakeConnection
    msg_id: Any
    outcome: Deferred[dict[str, Any] | None]
    # Where the connection's wire stood when the request went in.
    start: int


def make_test_config(path: Path, **sections: dict[str, str]) -> Config:
    """SQLite in *path*, cheap bcrypt; *sections* override ``[section] key = value``."""
    overrides = {
        ("database", "url"): f"sqlite:///{path / 'chateau.sqlite3'}",
        ("auth", "bcrypt_cost"): "4",
    }
    for section, values in sections.items():
        for key, value in values.items():
            overrides[(section, key)] = value
    return load_config(None, overrides)


class InProcessChat:
    """The chat of one server, wired like chateau.service, driven by hand."""

    def __init__(self, config: Config, seed: int = 1) -> None:
        self.config = config
        self.clock = SyncClock()
        self.engine = make_engine(config.database.url)
        self.db_pool = InlinePool("chateau-db")
        self.writer_pool = InlinePool("chateau-db-writer")
        self.hash_pool = WorkerPool("chateau-bcrypt")
        self.metrics = Metrics()
        self.store = Store(
            self.clock, self.engine, self.db_pool, self.writer_pool,
            observe=self.metrics.time_db_call,
        )
        hasher = Hasher(
            self.clock, self.hash_pool, config.auth.bcrypt_cost, config.auth.signin_timeout
        )
        checkers = {
            LOCAL: LocalChecker(self.store, hasher, config.auth.registration == "open"),
        }
        throttle = SignInThrottle(
            self.clock.seconds, free=config.limits.signin_free_failures,
            cap=config.limits.signin_max_delay,
        )
        self.auth = Authenticator(checkers, config.auth.max_pending_signins, throttle=throttle)
        self.registry = Registry(random.Random(seed))
        self.backplane = NullBackplane()
        self.delivery = Delivery(self.registry, self.backplane)
        self.catch_up = CatchUp(config, self.registry, self.store, self.delivery, self.backplane)
        ClusterSync(self.registry, self.store, self.delivery, self.catch_up, self.backplane)
        self.typing = Typing(self.registry, self.delivery, self.clock)
        self.services = Services(
            config=config, registry=self.registry, store=self.store, auth=self.auth,
            delivery=self.delivery, catch_up=self.catch_up, metrics=self.metrics,
            announcer=Announcer(self.registry, self.store, self.delivery),
            typing=self.typing,
            receipts=ReadReceipts(self.delivery, self.clock),
        )
        # Changes made in the database by chateau-admin (tests call check()).
        self.notices = NoticeWatch(
            self.store, {**notice_appliers(self.services), **erasure.notice_appliers(self.services)}
        )
        self.dispatcher = Dispatcher(self.services)
        self.connections: list[FakeConnection] = []
        self.metrics.watch(
            connections=lambda: sum(c.live for c in self.connections),
            online=self.registry.online_count,
            pools=[self.db_pool, self.writer_pool, self.hash_pool],  # type: ignore[list-item]
        )

    # -- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """What the service does before it listens: schema, groups and settings, last routed id."""
        self.wait(self.store.prepare_schema())
        self.wait(load_shared(self.store, self.registry))
        self.delivery.last_routed_id = self.wait(
            self.store.messages.last_message_id(self.catch_up.own_origin)
        )
        self.wait(self.notices.start())

    def stop(self) -> None:
        self.hash_pool.stop()
        self.engine.dispose()

    def wait(self, work: Any) -> Any:
        """The result of a Deferred or coroutine, once the clock has run what is due."""
        if not isinstance(work, Deferred):
            work = Deferred.fromCoroutine(work)
        self.clock.settle()
        outcome: list[Any] = []
        work.addBoth(outcome.append)
        assert outcome, "the work did not finish: is a pool paused?"
        if isinstance(outcome[0], Failure):
            outcome[0].raiseException()
        return outcome[0]

    # -- connections ------------------------------------------------------------

    def connect(self, address: str = "127.0.0.1") -> FakeConnection:
        connection = FakeConnection(lambda: self.delivery.last_routed_id, address)
        self.connections.append(connection)
        return connection

    def disconnect(self, connection: FakeConnection) -> None:
        """The socket closed: stop sending, then sign off, as the protocol's onClose does."""
        connection.stop_sending()
        self.dispatcher.closed(connection)
        self.clock.settle()

    def sign_in(self, username: str, password: str = "secret") -> FakeConnection:
        """A new connection signed in (registering the account when it is new)."""
        connection = self.connect()
        reply = self.request(
            connection, {"type": "RegisterRequest", "username": username, "password": password}
        )
        assert reply["type"] == "RegisterResponse", reply
        return connection

    # -- requests ---------------------------------------------------------------

    def begin(self, connection: FakeConnection, wire: dict[str, Any]) -> Exchange:
        """Decode and dispatch a request, and run what is due; it may still be waiting."""
        start = len(connection.wire)
        try:
            request: Request = messages.decode_request(wire)
        except ChateauError:
            return Exchange(connection, messages.peek_msg_id(wire), fail(), start)
        outcome = self.dispatcher.dispatch(connection, request)
        self.clock.settle()
        return Exchange(connection, request.msg_id, outcome, start)

    def finish(self, exchange: Exchange) -> dict[str, Any] | None:
        """The reply, sent to the connection as the protocol would send it.

        A refusal becomes its ErrorResponse; any other failure is raised, so a
        handler's bug fails the test with its own traceback. A sign-in replies
        from inside its handler: that reply is found on the wire.
        """
        self.clock.settle()
        outcome: list[Any] = []
        exchange.outcome.addBoth(outcome.append)
        assert outcome, "the request did not finish: is a pool paused?"
        result = outcome[0]
        connection = exchange.connection
        if isinstance(result, Failure):
            if not result.check(ChateauError):
                result.raiseException()
            error: ChateauError = result.value
            reply = messages.error_response(error.status, error.detail, exchange.msg_id)
            reply.update(error.extra)
        elif result is not None:
            reply = result
            reply["msg_id"] = exchange.msg_id
        else:
            answered = [m for m in connection.wire[exchange.start:] if "msg_id" in m]
            assert len(answered) <= 1, answered
            return answered[0] if answered else None
        connection.send_message(reply)
        return connection.wire[-1] if connection.live else reply

    def request(self, connection: FakeConnection, wire: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return its reply (every request on a live connection has one)."""
        reply = self.finish(self.begin(connection, wire))
        assert reply is not None, f"no reply to {wire}"
        return reply
