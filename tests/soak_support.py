"""The soak test's clients, its model of the chat, and the checks run at the end.

Every user is an :class:`Actor` with its own seeded random generator and one
WebSocket connection at a time (Autobahn, on the test's reactor). Actors run
closed loops: pick an action, send, wait for the reply, think, go again, so a
loaded machine slows the soak down instead of piling requests up.

Time is the order of events in this process: :meth:`Model.tick` numbers every
send, reply, push and close. A message's lifetime runs from the tick its request
was sent to the tick its acknowledgement arrived; the server handled it in
between. A user was *online throughout* it when their sign-in reply arrived
before it was sent and they did not start closing before its acknowledgement
came back; a member was a member throughout when they had not sent a leave by
then. The checks at the end only use these ticks, never wall-clock time.

Two things make the premises hold. A reconnecting actor closes cleanly and waits
for the server's side of the close (Autobahn's one-second default would abort
the TCP connection of a busy client, unread frames and all), then waits until the
server reports it offline before resuming: only a user's first connection gets
the backlog.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, endpoints, reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from tests.deferreds import sleep

CONTENT = re.compile(r"^(?P<sender>[^#]+)#(?P<seq>\d+)(?: edited)?$")


# -- the model ------------------------------------------------------------------

@dataclass
class Session:
    """One signed-in connection of a user: from its sign-in reply to its close."""

    on_at: int
    close_at: int | None = None
    replies: int = 0  # replies received after its sign-in reply

    def throughout(self, start: int, end: int) -> bool:
        return self.on_at < start and (self.close_at is None or self.close_at > end)


@dataclass
class Message:
    sender: str
    seq: int
    kind: str  # "group", "direct" or "random"
    target: str  # chatname, or the recipient of a direct message
    sent_at: int
    acked_at: int | None = None
    id: int | None = None
    deleted: bool = False  # a delete was sent for it

    @property
    def content(self) -> str:
        return f"{self.sender}#{self.seq}"


@dataclass
class Group:
    chatname: str
    creator: str
    members: frozenset[str]
    created_at: int
    leave_sent: dict[str, int] = field(default_factory=dict)
    leave_acked: dict[str, int] = field(default_factory=dict)

    def member_throughout(self, user: str, end: int) -> bool:
        sent = self.leave_sent.get(user)
        return user in self.members and (sent is None or sent > end)

    def had_left(self, user: str, start: int) -> bool:
        acked = self.leave_acked.get(user)
        return user not in self.members or (acked is not None and acked < start)


@dataclass
class Pair:
    """A random chat; ``ended_at`` is when either side started leaving or closing."""

    chatname: str
    members: frozenset[str]
    ended_at: int | None = None
    enders: dict[str, int] = field(default_factory=dict)

    def end(self, tick: int, who: str) -> None:
        self.enders.setdefault(who, tick)
        if self.ended_at is None:
            self.ended_at = tick

    def ended_by_other(self, user: str, before: int) -> bool:
        return any(who != user and tick < before for who, tick in self.enders.items())


@dataclass(slots=True)
class Receipt:
    """A message frame a user received (the fields the checks need: there are many)."""

    tick: int
    type: str
    sender: str  # from the content
    seq: int
    id: Any
    from_: Any  # the frame's sender field
    chatname: Any
    offline: bool


class Model:
    """Everything the test knows; the checks compare the receipts against it."""

    def __init__(self) -> None:
        self._clock = itertools.count(1)
        self.sessions: dict[str, list[Session]] = defaultdict(list)
        self.messages: dict[tuple[str, int], Message] = {}
        self.groups: dict[str, Group] = {}
        self.pairs: dict[str, Pair] = {}
        self.receipts: dict[str, list[Receipt]] = defaultdict(list)
        self.pushes: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
        self.pending_contacts: set[tuple[str, str]] = set()  # (asker, asked)
        self.contacts: set[frozenset[str]] = set()
        self.violations: list[str] = []
        self.counts: Counter[str] = Counter()
        self.last_frame_at = 0
        # Called with (user, chatname) when someone starts a random chat with user.
        self.on_new_pair: Callable[[str, str], None] = lambda user, chatname: None

    def tick(self) -> int:
        return next(self._clock)

    def violation(self, text: str) -> None:
        self.violations.append(text)

    def current_session(self, user: str) -> Session | None:
        sessions = self.sessions.get(user)
        if sessions and sessions[-1].close_at is None:
            return sessions[-1]
        return None

    def online_throughout(self, user: str, start: int, end: int) -> bool:
        return any(s.throughout(start, end) for s in self.sessions.get(user, ()))

    def pair(self, chatname: str, members: frozenset[str]) -> Pair:
        pair = self.pairs.get(chatname)
        if pair is None:
            pair = self.pairs[chatname] = Pair(chatname, members)
        elif pair.members != members:
            self.violation(f"random chat {chatname}: members {sorted(members)}, "
                           f"earlier {sorted(pair.members)}")
        return pair

    def closing(self, user: str) -> int:
        """*user* starts closing its connection: the session ends, and its random chats."""
        tick = self.tick()
        session = self.current_session(user)
        assert session is not None, user
        session.close_at = tick
        for pair in self.pairs.values():
            if user in pair.members:
                pair.end(tick, user)
        return tick

    def on_push(self, user: str, frame: dict[str, Any], tick: int) -> None:
        """A frame without msg_id reached *user*."""
        kind = frame.get("type")
        self.counts[f"push {kind}{' offline' if frame.get('offline') else ''}"] += 1
        if kind in ("MessageRecv", "GroupMessageRecv"):
            match = CONTENT.match(str(frame.get("content")))
            if match is None:
                self.violation(f"{user} got a message with foreign content: {frame}")
                return
            receipt = Receipt(
                tick, kind, match["sender"], int(match["seq"]), frame.get("id"),
                frame.get("sender"), frame.get("chatname"), bool(frame.get("offline")))
            self.receipts[user].append(receipt)
            if frame.get("random"):
                pair = self.pair(frame["chatname"], frozenset((user, frame["sender"])))
                session = self.current_session(user)
                if session is None:  # it came while closing: the chat is over
                    pair.end(self.sessions[user][-1].close_at or tick, user)
                else:
                    self.on_new_pair(user, pair.chatname)
        elif kind == "RandomChatEndedRecv":
            # It may come before the RandomMessageResponse that started the chat,
            # when the partner left while the first message was being stored.
            pair = self.pair(frame["chatname"], frozenset((user, frame["user"])))
            pair.end(tick, frame["user"])
            self.pushes[user].append((tick, frame))
        elif kind in ("GroupMessageInitResponse", "MessageEdited", "MessageDeleted"):
            self.pushes[user].append((tick, frame))
        elif kind in ("ContactRequestRecv", "ContactAcceptRecv", "ContactRemoveRecv",
                      "PresenceRecv", "GroupMemberLeftRecv", "GroupEventRecv"):
            pass
        else:
            self.violation(f"{user} got an unexpected frame: {frame}")


# -- connections -----------------------------------------------------------------

class _Protocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.connection._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.connection._frame(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.connection._closed(wasClean, code, reason)


@dataclass
class Reply:
    frame: dict[str, Any]
    sent_at: int
    at: int


class Connection:
    """One WebSocket connection of one user; replies matched by msg_id."""

    def __init__(self, model: Model, user: str, url: str) -> None:
        self.model = model
        self.user = user
        self.url = url
        self.protocol: _Protocol | None = None
        self.closing = False
        self.is_closed = False
        self._opened_d: Deferred[_Protocol] = Deferred()
        self._closed_d: Deferred[None] = Deferred()
        self._pending: dict[str, tuple[Deferred[Reply], int]] = {}
        self._ids = itertools.count()

    async def open(self) -> None:
        factory = WebSocketClientFactory(self.url)
        # Autobahn gives up on a closing handshake after one second and drops
        # the TCP connection, unread frames and all. This process is busy with
        # 200 clients: wait for the server's close instead, so that a clean
        # close really is one and everything sent before it is read.
        factory.setProtocolOptions(closeHandshakeTimeout=60, serverConnectionDropTimeout=60)
        factory.protocol = _Protocol
        factory.connection = self
        endpoint = endpoints.TCP4ClientEndpoint(reactor, factory.host, factory.port, timeout=30)
        await endpoint.connect(factory)
        self._opened_d.addTimeout(30, reactor)
        await self._opened_d

    def request(self, message: dict[str, Any]) -> Deferred[Reply]:
        msg_id = f"{self.user}:{next(self._ids)}"
        d: Deferred[Reply] = Deferred()
        sent_at = self.model.tick()
        self._pending[msg_id] = (d, sent_at)
        assert self.protocol is not None
        self.protocol.sendMessage(json.dumps({**message, "msg_id": msg_id}).encode())
        return d

    async def close(self) -> None:
        """Close cleanly (the caller has marked the session closed first)."""
        self.closing = True
        if not self.is_closed:
            assert self.protocol is not None
            self.protocol.sendClose()
            self._closed_d.addTimeout(30, reactor)
            await self._closed_d

    def _opened(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self._opened_d.callback(protocol)

    def _frame(self, payload: bytes, binary: bool) -> None:
        tick = self.model.tick()
        self.model.last_frame_at = tick
        if binary:
            self.model.violation(f"{self.user} got a binary frame")
            return
        frame = json.loads(payload)
        if "msg_id" not in frame:
            self.model.on_push(self.user, frame, tick)
            return
        waiting = self._pending.pop(frame["msg_id"], None)
        if waiting is None:
            self.model.violation(f"{self.user} got a reply to nothing it sent: {frame}")
            return
        d, sent_at = waiting
        session = self.model.current_session(self.user)
        if session is not None and session.on_at < sent_at:
            session.replies += 1
        d.callback(Reply(frame, sent_at, tick))

    def _closed(self, clean: bool, code: int | None, reason: str | None) -> None:
        self.is_closed = True
        if not self._opened_d.called:
            self._opened_d.errback(
                ConnectionError(f"{self.user}: handshake failed: {code} {reason}"))
        if not self.closing:
            self.model.violation(f"{self.user}: the server closed the connection ({code} {reason})")
        elif not clean and self._opened_d.called:
            self.model.violation(f"{self.user}: the closing handshake failed ({code} {reason})")
        pending, self._pending = self._pending, {}
        for d, _ in pending.values():
            d.errback(ConnectionError(f"{self.user}: closed with a request in flight"))
        if not self._closed_d.called:
            self._closed_d.callback(None)


# -- actors ----------------------------------------------------------------------

class Unexpected(Exception):
    """A reply the test did not provoke; recorded as a violation."""


class Actor:
    """One user: signs in, then picks actions at random until the deadline."""

    def __init__(self, world: World, index: int, rng: random.Random) -> None:
        self.world = world
        self.model = world.model
        self.name = f"u{index:03d}"
        self.password = f"pw-{self.name}"
        self.rng = rng
        self.conn: Connection | None = None
        self.key = ""
        self.seq = itertools.count(1)
        self.groups: list[str] = []  # groups it is in and has not left
        self.pairs: set[str] = set()  # random chats it knows of
        self.own: list[Message] = []  # its acknowledged, undeleted messages
        self.created = itertools.count(1)

    # -- plumbing --

    async def ask(self, message: dict[str, Any], expect: str | None = None,
                  allowed: Callable[[dict[str, Any]], bool] | None = None) -> Reply:
        """Send a request; a reply of type *expect* (or one *allowed*), else a violation."""
        assert self.conn is not None
        reply = await self.conn.request(message)
        frame = reply.frame
        self.model.counts[f"{message['type']} -> {frame['type']} {frame.get('status')}"] += 1
        if frame.get("type") == expect and frame.get("status") == 200:
            return reply
        if allowed is not None and allowed(frame):
            return reply
        self.model.violation(f"{self.name}: {message} -> {frame}")
        raise Unexpected(frame)

    async def sign_in(self) -> None:
        self.conn = Connection(self.model, self.name, self.world.url)
        await self.conn.open()
        reply = await self.ask({"type": "RegisterRequest", "username": self.name,
                                "password": self.password}, "RegisterResponse")
        self.key = reply.frame["session_key"]
        self.model.sessions[self.name].append(Session(reply.at))

    async def reconnect(self) -> None:
        """Close cleanly, stay away a while, come back with the session key."""
        assert self.conn is not None
        self.model.closing(self.name)
        self.pairs.clear()
        await self.conn.close()
        self.model.counts["reconnect"] += 1
        await sleep(self.rng.uniform(0.3, 2.0))
        # Only a user's first connection gets the backlog: wait until the
        # server has let the old one go before signing in again.
        await self.world.wait_offline(self.name)
        self.conn = Connection(self.model, self.name, self.world.url)
        await self.conn.open()
        reply = await self.ask({"type": "ResumeRequest", "session_key": self.key}, "ResumeResponse")
        self.model.sessions[self.name].append(Session(reply.at))

    def other_user(self) -> str:
        while True:
            other = self.rng.choice(self.world.names)
            if other != self.name:
                return other

    def live_pairs(self) -> list[str]:
        return sorted(c for c in self.pairs if self.model.pairs[c].ended_at is None)

    # -- actions --

    async def create_group(self) -> None:
        chatname = f"g{self.name[1:]}-{next(self.created)}"
        others = self.rng.sample([n for n in self.world.names if n != self.name],
                                 self.rng.randint(2, 9))
        reply = await self.ask({"type": "GroupMessageInitRequest", "recipients": others,
                                "chatname": chatname}, "GroupMessageInitResponse")
        members = frozenset([self.name, *others])
        self.model.groups[chatname] = Group(chatname, self.name, members, reply.at)
        for member in members:
            self.world.actors[member].groups.append(chatname)

    async def send_burst(self, kind: str, target: str, count: int) -> None:
        """Pipeline *count* messages to one conversation, then await every ack."""
        assert self.conn is not None
        pending = []
        for _ in range(count):
            seq = next(self.seq)
            message = Message(self.name, seq, kind, target, 0)
            request = {"type": "GroupMessageRequest", "recipient": target,
                       "content": message.content}
            message.sent_at = self.model.tick()  # no later than the real send, just below
            self.model.messages[(self.name, seq)] = message
            pending.append((message, request, self.conn.request(request)))
        for message, request, d in pending:
            reply = await d
            frame = reply.frame
            self.model.counts[f"{kind} message -> {frame['type']} {frame.get('status')}"] += 1
            if frame["type"] == "MessageSendResponse":
                message.acked_at, message.id = reply.at, frame["id"]
                self.own.append(message)
            elif (kind == "random" and frame.get("status") == 404
                  and self.model.pairs[target].ended_by_other(self.name, reply.at)):
                del self.model.messages[(self.name, message.seq)]  # refused: never sent
            else:
                self.model.violation(f"{self.name}: {request} -> {frame}")

    async def group_message(self) -> None:
        if not self.groups:
            return await self.create_group()
        await self.send_burst("group", self.rng.choice(self.groups), self.rng.randint(1, 4))

    async def direct_message(self) -> None:
        await self.send_burst("direct", self.other_user(), self.rng.randint(1, 3))

    async def random_chat(self) -> None:
        seq = next(self.seq)
        message = Message(self.name, seq, "random", "", self.model.tick())
        self.model.messages[(self.name, seq)] = message
        assert self.conn is not None
        reply = await self.conn.request(
            {"type": "RandomMessageRequest", "content": message.content})
        frame = reply.frame
        self.model.counts[f"RandomMessageRequest -> {frame['type']} {frame.get('status')}"] += 1
        if frame["type"] == "ErrorResponse" and frame.get("status") == 404:
            # Nobody to pair with: whoever is online may have left a random chat
            # with this user, or seen them leave one, and is never paired again.
            del self.model.messages[(self.name, seq)]
            return
        if frame["type"] != "RandomMessageResponse":
            self.model.violation(f"{self.name}: RandomMessageRequest -> {frame}")
            return
        message.target, message.acked_at, message.id = frame["chatname"], reply.at, frame["id"]
        self.own.append(message)
        partner = frame["client"]
        pair = self.model.pair(frame["chatname"], frozenset((self.name, partner)))
        if not self.model.online_throughout(partner, reply.sent_at, reply.at):
            # Paired with a connection that was closing, or a new one: the test
            # cannot tell which, so it leaves that chat alone.
            pair.end(reply.at, partner)
        self.pairs.add(frame["chatname"])

    async def random_reply(self) -> None:
        live = self.live_pairs()
        if not live:
            return await self.random_chat()
        await self.send_burst("random", self.rng.choice(live), self.rng.randint(1, 2))

    async def leave(self) -> None:
        live = self.live_pairs()
        if live and self.rng.random() < 0.5:
            chatname = self.rng.choice(live)
            pair = self.model.pairs[chatname]
            pair.end(self.model.tick(), self.name)
            self.pairs.discard(chatname)
            assert self.conn is not None
            reply = await self.conn.request({"type": "GroupLeaveRequest", "chatname": chatname})
            frame = reply.frame
            outcome = f"{frame['type']} {frame['status']}"
            self.model.counts[f"GroupLeaveRequest (random) -> {outcome}"] += 1
            ended = frame.get("status") == 404 and pair.ended_by_other(self.name, reply.at)
            if frame["type"] != "GroupLeaveResponse" and not ended:
                self.model.violation(f"{self.name}: leaving {chatname} -> {frame}")
            return
        if len(self.groups) < 2:
            return
        chatname = self.rng.choice(self.groups)
        self.groups.remove(chatname)
        group = self.model.groups[chatname]
        group.leave_sent[self.name] = self.model.tick()
        reply = await self.ask({"type": "GroupLeaveRequest", "chatname": chatname},
                               "GroupLeaveResponse")
        group.leave_acked[self.name] = reply.at

    async def edit_or_delete(self) -> None:
        if not self.own:
            return await self.direct_message()
        message = self.rng.choice(self.own)
        assert message.id is not None
        if self.rng.random() < 0.6:
            await self.ask({"type": "MessageEditRequest", "id": message.id,
                            "content": f"{message.content} edited"}, "MessageEditResponse")
        else:
            self.own.remove(message)
            message.deleted = True
            await self.ask({"type": "MessageDeleteRequest", "id": message.id},
                           "MessageDeleteResponse")

    async def history(self) -> None:
        if self.groups and self.rng.random() < 0.5:
            request = {"type": "HistoryRequest", "chatname": self.rng.choice(self.groups)}
        else:
            request = {"type": "HistoryRequest", "user": self.other_user()}
        reply = await self.ask({**request, "limit": self.rng.randint(1, 100)}, "HistoryResponse")
        ids = [m["id"] for m in reply.frame["messages"]]
        if ids != sorted(ids, reverse=True) or len(set(ids)) != len(ids):
            self.model.violation(f"{self.name}: history not newest first: {ids}")

    async def client_list(self) -> None:
        reply = await self.ask({"type": "ClientListRequest"}, "ClientListResponse")
        listed = set(reply.frame["clients"])
        for name in self.world.names:
            if name != self.name and self.model.online_throughout(name, reply.sent_at, reply.at):
                if name not in listed:
                    self.model.violation(
                        f"{self.name}: ClientListResponse misses {name}, online throughout")

    async def group_members(self) -> None:
        if not self.groups:
            return await self.create_group()
        chatname = self.rng.choice(self.groups)
        reply = await self.ask({"type": "GroupMembersRequest", "chatname": chatname},
                               "GroupMembersResponse")
        listed = {m["username"] for m in reply.frame["members"]}
        group = self.model.groups[chatname]
        staying = {m for m in group.members if group.member_throughout(m, reply.at)}
        if not staying <= listed <= group.members:
            self.model.violation(f"{self.name}: members of {chatname}: {sorted(listed)}")

    async def contact(self) -> None:
        incoming = sorted(a for a, b in self.model.pending_contacts if b == self.name)
        if incoming and self.rng.random() < 0.6:
            asker = self.rng.choice(incoming)
            await self.ask({"type": "ContactAccept", "username": asker}, "ContactAcceptResponse")
            self.model.pending_contacts.discard((asker, self.name))
            self.model.contacts.add(frozenset((asker, self.name)))
            return
        other = self.other_user()
        reply = await self.ask({"type": "ContactRequest", "username": other},
                               "ContactRequestResponse")
        if reply.frame["state"] == "contact":
            self.model.pending_contacts.discard((other, self.name))
            self.model.contacts.add(frozenset((other, self.name)))
        elif frozenset((other, self.name)) not in self.model.contacts:
            self.model.pending_contacts.add((self.name, other))

    async def contact_list(self) -> None:
        started = self.model.tick()
        known = {c for c in self.model.contacts if self.name in c}
        reply = await self.ask({"type": "ContactListRequest"}, "ContactListResponse")
        listed = {c["username"] for c in reply.frame["contacts"]}
        for pair in known:
            (other,) = pair - {self.name}
            if other not in listed:
                self.model.violation(
                    f"{self.name}: contact {other} (before tick {started}) not listed")

    async def heartbeat(self) -> None:
        payload = {"n": self.rng.randint(0, 10**6), "who": self.name}
        reply = await self.ask({"type": "HeartbeatRequest", "payload": payload},
                               "HeartbeatResponse")
        if reply.frame["payload"] != payload:
            self.model.violation(
                f"{self.name}: heartbeat payload {reply.frame['payload']} != {payload}")

    async def provoke(self) -> None:
        """Requests that must fail with one given status."""
        never = [g for g, group in self.model.groups.items() if self.name not in group.members]
        choices: list[tuple[dict[str, Any], int]] = [
            ({"type": "MessageRequest", "recipient": f"nobody{self.rng.randint(0, 99)}",
              "content": "lost"}, 404),
            ({"type": "HistoryRequest", "user": self.other_user(), "limit": 0}, 400),
        ]
        if never:
            choices.append(
                ({"type": "GroupMembersRequest", "chatname": self.rng.choice(never)}, 403))
        request, status = self.rng.choice(choices)
        self.model.counts["provoked"] += 1
        await self.ask(request,
                       allowed=lambda f: f["type"] == "ErrorResponse" and f["status"] == status)

    ACTIONS: list[tuple[str, int]] = [
        ("group_message", 30), ("direct_message", 14), ("create_group", 4), ("client_list", 4),
        ("history", 5), ("contact", 6), ("contact_list", 3), ("group_members", 4),
        ("heartbeat", 4), ("random_chat", 3), ("random_reply", 5), ("leave", 3),
        ("edit_or_delete", 6), ("provoke", 2), ("reconnect", 2),
    ]

    async def run(self, until: float) -> None:
        """Act until *until* (reactor seconds), then make sure to end signed in."""
        names = [name for name, _ in self.ACTIONS]
        weights = [weight for _, weight in self.ACTIONS]
        while reactor.seconds() < until:
            action = self.rng.choices(names, weights)[0]
            try:
                await getattr(self, action)()
            except Unexpected:
                pass
            except Exception as exc:  # a dropped connection: reported, and this actor stops
                self.model.violation(f"{self.name}: {action} failed: {exc!r}")
                return
            await sleep(self.rng.uniform(0.1, 0.9))


# -- the world ---------------------------------------------------------------------

class World:
    """The actors, their server, and HTTP presence checks."""

    def __init__(self, url: str, http_url: str, users: int, seed: int) -> None:
        self.url = url
        self.http_url = http_url
        self.model = Model()
        self.names = [f"u{i:03d}" for i in range(users)]
        self.actors = {
            name: Actor(self, i, random.Random(seed * 100_003 + i))
            for i, name in enumerate(self.names)
        }
        self._agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        self.model.on_new_pair = lambda user, chatname: self.actors[user].pairs.add(chatname)

    async def wait_offline(self, name: str, timeout: float = 30.0) -> None:
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            url = f"{self.http_url}api/users/{name}".encode()
            response = await self._agent.request(b"GET", url)
            body = json.loads(await readBody(response))
            if not body.get("online"):
                return
            await sleep(0.05)
        self.model.violation(f"{name} still online {timeout} s after closing")

    async def sign_in_all(self, batch: int = 20) -> None:
        """Sign everyone in, a batch at a time (sign-ins in progress are capped)."""
        actors = list(self.actors.values())
        for start in range(0, len(actors), batch):
            await gather(actor.sign_in() for actor in actors[start:start + batch])

    async def quiesce(self, quiet: float = 1.5, timeout: float = 60.0) -> None:
        """Wait until no frame has arrived for *quiet* seconds."""
        deadline = reactor.seconds() + timeout
        while reactor.seconds() < deadline:
            before = self.model.last_frame_at
            await sleep(quiet)
            if self.model.last_frame_at == before:
                return
        self.model.violation(f"frames still arriving {timeout} s after the end")

    async def close_all(self) -> None:
        for actor in self.actors.values():
            if self.model.current_session(actor.name) is not None:
                self.model.closing(actor.name)
        await gather(actor.conn.close() for actor in self.actors.values() if actor.conn)


async def gather(coroutines: Any) -> list[Any]:
    return await defer.gatherResults(
        [defer.ensureDeferred(c) for c in coroutines], consumeErrors=True)


# -- the checks ----------------------------------------------------------------------

def check_delivery(model: Model) -> list[str]:
    """Compare what everyone received with what they had to receive; the problems."""
    problems: list[str] = []
    by_id = {m.id: m for m in model.messages.values() if m.id is not None}
    received: dict[str, Counter[tuple[str, int]]] = {}
    live: dict[str, set[tuple[str, int]]] = {}

    for user, receipts in model.receipts.items():
        counts: Counter[tuple[str, int]] = Counter()
        live[user] = set()
        last_seq: dict[str, int] = {}
        for r in receipts:
            key = (r.sender, r.seq)
            counts[key] += 1
            if not r.offline:
                live[user].add(key)
            message = model.messages.get(key)
            where = f"{user} got {r.sender}#{r.seq} ({r.type}{' offline' if r.offline else ''})"
            if message is None or message.id is None:
                problems.append(f"{where}: never acknowledged")
                continue
            if r.id != message.id or r.from_ != message.sender:
                problems.append(f"{where}: frame {r} for message id {message.id}")
            if user == message.sender:
                problems.append(f"{where}: its own message")
            if not _may_receive(model, user, message, r):
                problems.append(f"{where}: not addressed to it at the time ({message})")
            if r.seq <= last_seq.get(r.sender, 0):
                problems.append(f"{where} after #{last_seq[r.sender]} from the same sender")
            last_seq[r.sender] = max(r.seq, last_seq.get(r.sender, 0))
        received[user] = counts

    for user, counts in received.items():
        for key, count in counts.items():
            if count > 1:
                problems.append(f"{user} got {key[0]}#{key[1]} {count} times")

    for message in model.messages.values():
        if message.id is None or message.acked_at is None:
            continue
        for user in _audience(model, message):
            if model.online_throughout(user, message.sent_at, message.acked_at):
                if (message.sender, message.seq) not in live.get(user, ()):
                    problems.append(f"{user}, online throughout, did not get {message} live")
            elif message.kind != "random" and not message.deleted:
                if not received.get(user, Counter())[(message.sender, message.seq)]:
                    problems.append(f"{user} never got {message}, live or offline; "
                                    + _whereabouts(model, user, message))

    for user, pushes in model.pushes.items():
        for tick, frame in pushes:
            problems.extend(_check_push(model, by_id, user, tick, frame))
    return problems


def _whereabouts(model: Model, user: str, message: Message) -> str:
    """The user's sessions and receipts around *message*, to explain a loss."""
    sessions = [(s.on_at, s.close_at, s.replies) for s in model.sessions[user]
                if (s.close_at or 10**12) > message.sent_at - 2000][:4]
    ids = [(r.tick, r.id, "offline" if r.offline else "live")
           for r in model.receipts[user]
           if abs(r.tick - message.sent_at) < 400
           or abs((r.id or 0) - (message.id or 0)) < 5]
    return f"its sessions (on, close, replies) {sessions}; receipts near it (tick, id) {ids[:20]}"


def _audience(model: Model, message: Message) -> list[str]:
    """Who had to receive *message*: every recipient who stayed one throughout."""
    assert message.acked_at is not None
    if message.kind == "direct":
        return [message.target]
    if message.kind == "group":
        group = model.groups[message.target]
        return [u for u in group.members
                if u != message.sender and group.member_throughout(u, message.acked_at)]
    pair = model.pairs[message.target]
    if pair.ended_at is not None and pair.ended_at < message.acked_at:
        return []
    return [u for u in pair.members if u != message.sender]


def _may_receive(model: Model, user: str, message: Message, receipt: Receipt) -> bool:
    if message.kind == "direct":
        return (receipt.type == "MessageRecv" and message.target == user
                and receipt.chatname == message.sender)
    if message.kind == "group":
        group = model.groups[message.target]
        return (receipt.type == "GroupMessageRecv"
                and receipt.chatname == group.chatname
                and not group.had_left(user, message.sent_at))
    pair = model.pairs.get(message.target)
    if pair is None or user not in pair.members or receipt.offline:
        return False
    return receipt.chatname == pair.chatname


def _check_push(
    model: Model, by_id: dict[int, Message], user: str, tick: int, frame: dict[str, Any]
) -> list[str]:
    kind = frame["type"]
    if kind == "GroupMessageInitResponse":
        group = model.groups.get(frame.get("chatname"))
        listed = set(frame.get("members", ()))
        if group is None or user not in group.members or frame.get("creator") != group.creator:
            return [f"{user}: group notice {frame} does not match {group}"]
        # Live notices list the members at creation; offline ones those still in.
        staying = {m for m in group.members if group.member_throughout(m, tick)}
        exact = not frame.get("offline") and listed == group.members
        if not exact and not (frame.get("offline") and staying <= listed <= group.members):
            return [f"{user}: group notice {frame} does not match {group}"]
    elif kind in ("MessageEdited", "MessageDeleted"):
        message = by_id.get(frame.get("id"))
        if message is None or frame.get("sender") != message.sender:
            return [f"{user}: {kind} for an unknown message: {frame}"]
        if kind == "MessageEdited" and frame.get("content") != f"{message.content} edited":
            return [f"{user}: {frame} does not carry the edit"]
    return []


def delivery_summary(model: Model) -> str:
    acked = [m for m in model.messages.values() if m.id is not None]
    live = sum(1 for rs in model.receipts.values() for r in rs if not r.offline)
    offline = sum(1 for rs in model.receipts.values() for r in rs if r.offline)
    kinds = Counter(m.kind for m in acked)
    return (f"{len(acked)} messages acknowledged ({dict(kinds)}), {live} received live, "
            f"{offline} offline, {model.counts['reconnect']} reconnects, "
            f"{len(model.groups)} groups, "
            f"{len(model.pairs)} random chats")

