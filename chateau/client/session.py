"""The interactive chat session: typed lines in, readable lines out.

:class:`ChatSession` owns everything between the terminal and the wire: it
turns commands into requests, matches replies to them by ``msg_id``, words
every frame for a person, and keeps the session alive across dropped
connections (resuming with the session key, or signing in again with the
remembered password when the server issued no key). It talks to the screen
only through the two methods of :class:`UI`, so tests can drive it without a
terminal.

One concern, the person's side of the conversation, hence its length.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, Awaitable, Callable, Coroutine, Protocol

from twisted.internet import task
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure

from chateau.client import awareness, commands, daily, events
from chateau.client.text import (
    clean,
    format_time,
    message_line,
    render,
    split_name,
    split_words,
    strong,
)
from chateau.client.wire import ClientConnection, ConnectionFailed
from chateau.names import canonical

# What the server's session list calls this client (SessionListResponse).
CLIENT_NAME = "chateau-client"
EXIT_OK = 0
EXIT_CONNECTION = 1
EXIT_USAGE = 2
EXIT_SIGN_IN = 3
EXIT_SERVER_ERROR = 4
# The close codes of a connection whose session key was revoked, and of one
# whose user was banned from the server (docs/protocol.md).
SIGNED_OUT = 4001
BANNED = 4003
ACCOUNT_DELETED = 4005
# Replies to table commands after which the next of their requests is tried.
TRY_NEXT = (400, 404)

HISTORY_PAGE = 20
# /contacts ACTION NAME -> request type, and how a failure is introduced.
CONTACT_ACTIONS = {
    "add": ("ContactRequest", "contact request not sent"),
    "accept": ("ContactAccept", "could not accept"),
    "deny": ("ContactDeny", "could not deny"),
    "remove": ("ContactRemove", "could not remove the contact"),
}
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
QUIT_GRACE = 5.0

HELP_CHAT = """\
commands:
  /who                      who is online
  /to NAME                  talk in NAME from now on: a user, a group, or ~partner
  /msg NAME text            send one message to NAME, staying where you are
  /group NAME user1 user2   start the group NAME with those users and talk there
  /random text              say text to someone picked at random, and talk there
  /leave [NAME]             leave a group or end a random chat
  /history [NAME]           earlier messages of NAME or of the current chat (repeat for older)
  /sync                     everything new since you last synced, in every chat
  /contacts                 your contacts and contact requests
  /contacts add|accept|deny|remove NAME
                            ask NAME to be a contact, answer NAME's request, or drop NAME
  /ids [on|off]             show message IDs (for /report message ID), or stop
  /quit                     sign out and exit (also Ctrl-D on an empty line)
  text                      goes to the current chat; start it with // to send a leading /"""
HELP = "\n".join([
    HELP_CHAT, commands.help_text(), 'names with spaces go in quotes: /to "book club"',
])


class UI(Protocol):
    """Where the session's lines go."""

    def show(self, text: str) -> None:
        """Print *text* (one or more lines) without disturbing the line being typed."""

    def set_prompt(self, prompt: str) -> None:
        """The prompt changes with the current chat and the connection state."""


class ConnectionLost(Exception):
    """The connection closed before the reply to a request arrived."""


class SignInRefused(Exception):
    """The server refused the credentials; the text is the server's ``detail``."""


Connector = Callable[["ChatSession"], Awaitable[ClientConnection]]


# -- the session --------------------------------------------------------------


class ChatSession:
    """One person's chat over one connection at a time."""

    def __init__(
        self,
        reactor: Any,
        connector: Connector,
        ui: UI,
        username: str,
        password: str,
        directory: bool = False,
        server_name: str = "the server",
    ) -> None:
        self.reactor = reactor
        self.connector = connector
        self.ui = ui
        self.username = canonical(username)
        self.password = password
        self.directory = directory
        self.server_name = server_name

        self.connection: ClientConnection | None = None
        self.signed_in = False
        self.session_key: str | None = None
        self.current: str | None = None
        self.groups: set[str] = set()
        self.users: set[str] = set()
        self.randoms: dict[str, str] = {}  # random chatname -> partner
        self.admin = False  # a server admin, as the sign-in's reply says
        self.show_ids = False  # /ids on: message lines carry their IDs

        self.finished: Deferred[int] = Deferred()
        self._quitting = False
        self._next_id = 1
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self._sign_in_waiters: list[Deferred[None]] = []
        self._idle_waiters: list[Deferred[None]] = []
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()
        self._history_cursor: tuple[str, int] | None = None
        self._told_queued = False
        self._ever_signed_in = False
        # (chatname, user) of a departure shown once, from GroupMemberLeftRecv
        # or the "left" GroupEventRecv, whichever came first.
        self._departures: set[tuple[str, str]] = set()
        self._announcements: set[Any] = set()
        self._sign_in_reply: dict[str, Any] = {}
        # Typing and read markers, both ways; sent only on an interactive terminal.
        self.typing_out = awareness.TypingSender(reactor, self._send_typing)
        self.typers = awareness.Typers(reactor, self._update_prompt)
        self.reads = awareness.ReadMarks(reactor, self._send_read)

    @property
    def interactive(self) -> bool:
        """A person at a terminal (not piped input): typing and reading are told."""
        return getattr(self.ui, "interactive", False) is True

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> int | None:
        """Connect and sign in; None when ready, else the exit status."""
        try:
            await self._open()
        except ConnectionFailed as exc:
            self.ui.show(f"! cannot connect to {self.server_name}: {exc}")
            return EXIT_CONNECTION
        try:
            await self._authenticate()
        except SignInRefused as exc:
            self.ui.show(f"! sign-in failed: {exc}")
            await self._close_connection()
            return EXIT_SIGN_IN
        except ConnectionLost:
            self.ui.show("! the connection closed during sign-in")
            return EXIT_CONNECTION
        admin = " (a server admin)" if self.admin else ""
        self.ui.show(
            f"* signed in as {self.username}{admin} on {self.server_name};"
            " /help lists the commands"
        )
        self._show_unread_total()
        self._update_prompt()
        return None

    def _show_unread_total(self) -> None:
        line = daily.unread_total_line(self._sign_in_reply)
        if line is not None:
            self.ui.show(line)

    async def quit(self) -> None:
        """Wait briefly for replies still due, revoke the session key, close, finish."""
        if self._quitting:
            return
        self._quitting = True
        connection = self.connection
        if connection is not None and self.signed_in:
            await self._wait_idle(QUIT_GRACE)
            if self.session_key is not None:
                try:
                    await self._call({"type": "LogoutRequest"}, timeout=QUIT_GRACE)
                except Exception:
                    pass  # signing out is a courtesy; exiting must not hang on it
        await self._close_connection()
        self._finish(EXIT_OK)

    def abort(self) -> None:
        """Exit now, without waiting for replies or a clean close."""
        self._quitting = True
        if self.connection is not None:
            self.connection.drop()
        self._finish(EXIT_OK)

    def _finish(self, code: int) -> None:
        if not self.finished.called:
            self.finished.callback(code)

    async def _close_connection(self) -> None:
        connection = self.connection
        if connection is not None:
            await connection.close()
        self.connection = None

    async def _open(self) -> ClientConnection:
        connection = await self.connector(self)
        self.connection = connection
        return connection

    async def _authenticate(self) -> str:
        """Resume with the session key, else sign in; says which it was."""
        how = "signed in again" if self._ever_signed_in else "signed in"
        if self.session_key is not None:
            reply = await self._call(
                {"type": "ResumeRequest", "session_key": self.session_key,
                 "client": CLIENT_NAME}, signing_in=True
            )
            if reply.get("type") == "ResumeResponse":
                self._sign_in_reply = reply
                self.username = reply.get("username") or self.username
                self.admin = reply.get("admin") is True
                self._signed_in()
                return "session resumed"
            # Expired, revoked, or a server without sessions: sign in afresh.
            self.session_key = None
        reply = await self._call(
            {"type": "RegisterRequest", "username": self.username, "password": self.password,
             "auth": self.directory, "client": CLIENT_NAME},
            signing_in=True,
        )
        if reply.get("type") != "RegisterResponse":
            raise SignInRefused(clean(str(reply.get("detail") or "the server refused the sign-in")))
        self._sign_in_reply = reply
        self.username = reply.get("username") or self.username
        self.admin = reply.get("admin") is True
        key = reply.get("session_key")
        self.session_key = key if isinstance(key, str) and key else None
        self._signed_in()
        return how

    def _signed_in(self) -> None:
        self.signed_in = True
        self._ever_signed_in = True
        self._told_queued = False
        waiters, self._sign_in_waiters = self._sign_in_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def _reconnect(self) -> None:
        delay = RETRY_FIRST
        while not self._quitting:
            try:
                await self._open()
                how = await self._authenticate()
            except ConnectionFailed as exc:
                self.ui.show(f"* still offline ({exc}); trying again in {delay:g}s")
            except ConnectionLost:
                self.ui.show(f"* the connection closed again; trying again in {delay:g}s")
            except SignInRefused as exc:
                self.ui.show(f"! could not sign in again: {exc}")
                await self._close_connection()
                self._finish(EXIT_SIGN_IN)
                return
            else:
                self.ui.show(f"* reconnected: {how}")
                self._show_unread_total()
                self._update_prompt()
                return
            await task.deferLater(self.reactor, delay)
            delay = min(delay * 2, RETRY_MAX)

    # -- listener: called by the connection ---------------------------------

    def frame_received(self, connection: ClientConnection, frame: Any, raw: bytes) -> None:
        if connection is not self.connection:
            return
        if not isinstance(frame, dict):
            text = clean(raw[:200].decode("utf-8", "replace"))
            self.ui.show(f"! unreadable frame from the server: {text}")
            return
        msg_id = frame.get("msg_id")
        if isinstance(msg_id, int) and msg_id in self._pending:
            waiter = self._pending.pop(msg_id)
            waiter.callback(frame)
            self._check_idle()
            return
        self._push(frame)

    def connection_closed(self, connection: ClientConnection, code: int | None,
                          reason: str | None) -> None:
        if connection is not self.connection:
            return
        self.connection = None
        was_signed_in, self.signed_in = self.signed_in, False
        self.typing_out.forget()
        self.reads.forget()
        self.typers.clear()
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            waiter.errback(ConnectionLost())
        self._check_idle()
        if self._quitting:
            self._finish(EXIT_OK)
            return
        if not was_signed_in:
            return  # start() or the reconnect loop sees the failure itself
        for chatname, partner in sorted(self.randoms.items()):
            self.ui.show(f"* the random chat with {clean(partner)} ended with the connection")
            if self.current == chatname:
                self.current = None
        self.randoms.clear()
        if code == SIGNED_OUT:
            # The key was revoked (password changed, account disabled, or too
            # many sessions): reconnecting would only sign in again with what
            # may be an old password. The user runs the client again.
            self.session_key = None
            self.ui.show(
                "! the server signed you out"
                + (f" ({clean(reason)})" if reason else "")
                + ": your password was changed, your account disabled, or you signed in "
                "elsewhere too often; start the client again to sign in"
            )
            self._finish(EXIT_SIGN_IN)
            return
        if code == ACCOUNT_DELETED:
            # The account was erased: there is nothing to sign in to any more.
            self.session_key = None
            self.ui.show("! the server closed the connection: your account was deleted")
            self._finish(EXIT_SIGN_IN)
            return
        if code == BANNED:
            # Banned from the server: signing in again would be refused.
            self.session_key = None
            self.ui.show(
                "! the server closed the connection: you are banned from it"
                + (f" ({clean(reason)})" if reason else "")
                + "; signing in again says until when and why"
            )
            self._finish(EXIT_SIGN_IN)
            return
        why = ""
        if code not in (None, 1000):
            why = f" ({code} {clean(reason)})" if reason else f" ({code})"
        self.ui.show(f"* connection lost{why}; reconnecting")
        self._update_prompt()
        self._spawn(self._reconnect())

    # -- requests -----------------------------------------------------------

    async def _call(
        self, message: dict[str, Any], signing_in: bool = False, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send *message* and wait for the reply carrying its ``msg_id``.

        Ordinary requests made while offline wait for the next sign-in, so
        what is typed during a reconnect is sent, in order, once it is back.
        """
        if not signing_in and not self.signed_in:
            if self._quitting:
                raise ConnectionLost()
            if not self._told_queued:
                self._told_queued = True
                self.ui.show("* offline: what you send now goes out once reconnected")
            waiter: Deferred[None] = Deferred()
            self._sign_in_waiters.append(waiter)
            await waiter
        connection = self.connection
        if connection is None:
            raise ConnectionLost()
        msg_id = self._next_id
        self._next_id += 1
        reply: Deferred[dict[str, Any]] = Deferred()
        self._pending[msg_id] = reply
        if timeout is not None:
            reply.addTimeout(timeout, self.reactor)
        connection.send_json({**message, "msg_id": msg_id})
        try:
            return await reply
        finally:
            self._pending.pop(msg_id, None)

    async def _wait_idle(self, timeout: float) -> None:
        if not self._pending:
            return
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        waiter.addTimeout(timeout, self.reactor)
        try:
            await waiter
        except Exception:
            pass

    def _check_idle(self) -> None:
        if not self._pending:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.called:
                    waiter.callback(None)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a command in the background; an unexpected error is shown, not lost."""

        def report(failure: Failure) -> None:
            if failure.check(ConnectionLost, CancelledError):
                return
            self.ui.show(f"! internal error: {failure.getErrorMessage()}")

        ensureDeferred(work).addErrback(report)

    # -- typed lines --------------------------------------------------------

    def handle_line(self, line: str) -> None:
        """One line the person typed: a command, or text for the current chat."""
        text = line.rstrip("\r\n")
        self.typing_out.stopped()
        if not text.strip():
            return
        if text.startswith("//"):
            self._say(text[1:])
            return
        if not text.startswith("/"):
            self._say(text)
            return
        command, _, rest = text[1:].partition(" ")
        handler = self._commands().get(command.lower())
        if handler is None:
            self.ui.show(f"! unknown command /{clean(command)}; /help lists the commands")
            return
        handler(rest.strip())

    def _commands(self) -> dict[str, Callable[[str], None]]:
        table: dict[str, Callable[[str], None]] = {
            command.name: (lambda rest, command=command: self._table_command(command, rest))
            for command in commands.COMMANDS
        }
        return {
            **table,
            "help": lambda rest: self.ui.show(HELP),
            "who": lambda rest: self._spawn(self._who()),
            "to": self._cmd_to,
            "msg": self._cmd_msg,
            "group": self._cmd_group,
            "random": self._cmd_random,
            "leave": lambda rest: self._spawn(self._leave(split_name(rest)[0] or self.current)),
            "history": lambda rest: self._spawn(self._history(split_name(rest)[0] or None)),
            "sync": self._cmd_sync,
            "contacts": self._cmd_contacts,
            "ids": self._cmd_ids,
            "quit": lambda rest: self._spawn(self.quit()),
            "exit": lambda rest: self._spawn(self.quit()),
        }

    def _table_command(self, command: commands.Command, rest: str) -> None:
        """A command of the table (commands.py): checked here, sent in the background."""
        try:
            requests = command.build(rest)
        except commands.Usage as problem:
            if problem.args:
                self.ui.show(f"! /{command.name}: {problem.args[0]} (usage: {command.usage})")
            else:
                self.ui.show(f"! usage: {command.usage}")
            return
        self._spawn(self._table_request(command, requests))

    async def _table_request(self, command: commands.Command,
                             requests: list[dict[str, Any]]) -> None:
        """Try *requests* in order until one is answered, or refused for good."""
        failed = command.failed(requests[0])
        refusals = []
        for number, request in enumerate(requests, 1):
            try:
                reply = await self._call(request)
            except ConnectionLost:
                self.ui.show(f"! {failed}: the connection was lost before the server answered")
                return
            if reply.get("type") != "ErrorResponse":
                if command.next_page is not None:
                    reply = await self._more_pages(command, request, reply)
                    if reply is None:
                        return
                self._learn(request, reply)
                self._show_marked("\n".join(command.show(request, reply, self.label)))
                return
            refusals.append(self._detail(reply))
            if reply.get("status") not in TRY_NEXT:
                break
        self.ui.show(f"! {failed}: {'; '.join(refusals)}")

    async def _more_pages(self, command: commands.Command, request: dict[str, Any],
                          reply: dict[str, Any]) -> dict[str, Any] | None:
        """The pages after *reply* while it says ``more``, their lists added up."""
        assert command.next_page is not None
        items = list(reply.get(command.collect) or [])
        page = command.next_page(request, reply)
        while page is not None:
            try:
                reply = await self._call(page)
            except ConnectionLost:
                self.ui.show(f"! {command.failed(request)}: the connection was lost"
                             " before the server answered")
                return None
            if reply.get("type") == "ErrorResponse":
                self.ui.show(f"! {command.failed(request)}: {self._detail(reply)}")
                return None
            items += list(reply.get(command.collect) or [])
            page = command.next_page(page, reply)
        return {**reply, command.collect: items}

    def _show_marked(self, text: str) -> None:
        """Show *text*, its marks (text.py) in bold on a terminal, plain otherwise."""
        self.ui.show(render(text, getattr(self.ui, "interactive", False)))

    def _learn(self, request: dict[str, Any], reply: dict[str, Any]) -> None:
        """What a reply tells about the groups this person is in, and their password."""
        if reply.get("type") == "PasswordChangeResponse":
            # Signing in again after a lost key uses the new password.
            self.password = str(request["new_password"])
            return
        for field in ("conversations", "results", "messages"):
            for entry in reply.get(field) or []:
                if isinstance(entry, dict):
                    self._learn_entry(entry)
        chatname = reply.get("chatname")
        if not isinstance(chatname, str):
            return
        kind = reply.get("type")
        if kind in ("GroupInfoResponse", "GroupJoinResponse"):
            self.groups.add(chatname)
        elif kind == "GroupUpdateResponse" and "name" in request:
            self._renamed(canonical(str(request["chatname"])), chatname)

    def _learn_entry(self, entry: dict[str, Any]) -> None:
        """An entry naming its conversation: a group's (chatname) or a direct chat's (user)."""
        if isinstance(entry.get("chatname"), str):
            self._learn_chat(entry["chatname"])
        elif isinstance(entry.get("user"), str):
            self.users.add(entry["user"])

    def _renamed(self, old: str, new: str) -> None:
        if old == new:
            return
        self.groups.discard(old)
        self.groups.add(new)
        if self.current == old:
            self.current = new
            self._update_prompt()

    def _say(self, content: str) -> None:
        if self.current is None:
            self.ui.show("! no current chat: pick one with /to NAME, or use /msg NAME text")
            return
        self._spawn(self._send(self.current, content))

    def _cmd_to(self, rest: str) -> None:
        name, _ = split_name(rest)
        if not name:
            self.ui.show("! usage: /to NAME")
            return
        self.current = self.resolve(name)
        self.ui.show(f"* now talking in {self.label(self.current)}")
        self._update_prompt()

    def _cmd_msg(self, rest: str) -> None:
        name, content = split_name(rest)
        if not name or not content:
            self.ui.show("! usage: /msg NAME text")
            return
        self._spawn(self._send(self.resolve(name), content))

    def _cmd_group(self, rest: str) -> None:
        words = split_words(rest)
        if len(words) < 2:
            self.ui.show("! usage: /group NAME user1 [user2 ...]")
            return
        self._spawn(self._group(words[0], words[1:]))

    def _cmd_contacts(self, rest: str) -> None:
        words = split_words(rest)
        if not words:
            self._spawn(self._contacts())
            return
        action = words[0].lower()
        if action not in CONTACT_ACTIONS or len(words) != 2:
            self.ui.show("! usage: /contacts, or /contacts add|accept|deny|remove NAME")
            return
        self._spawn(self._contact_change(action, canonical(words[1])))

    def _cmd_ids(self, rest: str) -> None:
        words = split_words(rest.lower())
        if words not in ([], ["on"], ["off"]):
            self.ui.show("! usage: /ids [on|off]")
            return
        self.show_ids = (not self.show_ids) if not words else words[0] == "on"
        self.ui.show("* message IDs are " + (
            "shown, e.g. for /report message ID" if self.show_ids else "not shown"
        ))

    def _id_note(self, message_id: Any, note: str = "") -> str:
        """A message line's note, with the message's ID after /ids on."""
        if not self.show_ids or not isinstance(message_id, int):
            return note
        return f"id {message_id}, {note}" if note else f"id {message_id}"

    def _cmd_random(self, rest: str) -> None:
        if not rest:
            self.ui.show("! usage: /random text (the first message to a random person)")
            return
        self._spawn(self._random(rest))

    # -- commands that talk to the server -----------------------------------

    async def _send(self, target: str, content: str) -> None:
        reply = await self._request_or_report(
            {"type": "GroupMessageRequest", "recipient": target, "content": content},
            f"message to {self.label(target)} not sent",
        )
        if reply is None:
            return
        self._remember(reply.get("id"))
        if not self._is_chat(target):
            self.reads.sent(target, reply.get("id"))
        self.ui.show(message_line(
            format_time(reply.get("timestamp")), self.label(target), self.username, content,
            self._id_note(reply.get("id")),
        ))

    async def _who(self) -> None:
        reply = await self._request_or_report({"type": "ClientListRequest"}, "/who failed")
        if reply is None:
            return
        clients = [c for c in reply.get("clients", []) if isinstance(c, str)]
        self.users.update(clients)
        if clients:
            self.ui.show("* online: " + ", ".join(clean(c) for c in sorted(clients)))
        else:
            self.ui.show("* nobody else is online")

    async def _group(self, name: str, members: list[str]) -> None:
        reply = await self._request_or_report(
            {"type": "GroupMessageInitRequest", "recipients": members, "chatname": name},
            f"group {clean(name)} not created",
        )
        if reply is None:
            return
        chatname = reply.get("chatname") or canonical(name)
        self.groups.add(chatname)
        self.current = chatname
        self.ui.show(
            f"* created {self.label(chatname)} with {', '.join(clean(m) for m in members)};"
            " now talking there"
        )
        self._update_prompt()

    async def _random(self, content: str) -> None:
        reply = await self._request_or_report(
            {"type": "RandomMessageRequest", "content": content}, "random chat not started"
        )
        if reply is None:
            return
        chatname, partner = reply.get("chatname"), reply.get("client")
        if not isinstance(chatname, str) or not isinstance(partner, str):
            self.ui.show("! the server's reply to /random was incomplete")
            return
        self.randoms[chatname] = partner
        self.current = chatname
        self._remember(reply.get("id"))
        label = self.label(chatname)
        self.ui.show(
            f"* random chat with {clean(partner)} ({label}): now talking there (/leave ends it)"
        )
        when = format_time(reply.get("timestamp"))
        self.ui.show(
            message_line(when, label, self.username, content, self._id_note(reply.get("id")))
        )
        self._update_prompt()

    async def _leave(self, name: str | None) -> None:
        if not name:
            self.ui.show("! usage: /leave NAME")
            return
        target = self.resolve(name)
        reply = await self._request_or_report(
            {"type": "GroupLeaveRequest", "chatname": target}, f"could not leave {clean(name)}"
        )
        if reply is None:
            return
        label = self.label(target)
        self.groups.discard(target)
        self.randoms.pop(target, None)
        if self.current == target:
            self.current = None
            self._update_prompt()
        self.ui.show(f"* you left {label}")

    async def _history(self, name: str | None) -> None:
        target = self.resolve(name) if name else self.current
        if target is None:
            self.ui.show("! usage: /history NAME (or /to NAME first)")
            return
        cursor = self._history_cursor
        before = cursor[1] if cursor is not None and cursor[0] == target else None
        kinds = ["chatname", "user"] if self._is_chat(target) else ["user", "chatname"]
        reply: dict[str, Any] | None = None
        for kind in kinds:
            request: dict[str, Any] = {
                "type": "HistoryRequest", kind: target, "limit": HISTORY_PAGE,
            }
            if before is not None:
                request["before"] = before
            try:
                reply = await self._call(request)
            except ConnectionLost:
                self.ui.show("! /history: the connection was lost before the server answered")
                return
            # An unknown name of one kind may be the other kind: try once more.
            if not (reply.get("type") == "ErrorResponse" and reply.get("status") == 404):
                break
        assert reply is not None
        if reply.get("type") != "HistoryResponse":
            self.ui.show(f"! no history for {self.label(target)}: {self._detail(reply)}")
            return
        if "chatname" in reply:
            self._learn_chat(target)
        elif "user" in reply:
            self.users.add(target)
        messages = [m for m in reply.get("messages", []) if isinstance(m, dict)]
        label = self.label(target)
        if not messages:
            self._history_cursor = None
            self.ui.show(f"* no {'earlier ' if before else ''}messages in {label}")
            return
        plural = "s" if len(messages) != 1 else ""
        count = f"{len(messages)} {'earlier ' if before else ''}message{plural}"
        lines = [f"--- {label}: {count} ---"]
        for item in reversed(messages):  # the server sends newest first
            when = format_time(item.get("timestamp"))
            if item.get("hidden"):
                lines.append(events.hidden_line(when, label))
                continue
            if isinstance(item.get("event"), dict):
                words = events.event_words(item["event"], self.username, item.get("content"))
                lines.append(events.event_line(when, label, words))
                continue
            note = "deleted" if item.get("deleted") else "edited" if item.get("edited") else ""
            content = "" if item.get("deleted") else str(item.get("content", ""))
            sender = str(item.get("sender", "?"))
            note = self._id_note(item.get("id"), note)
            lines.append(message_line(when, label, sender, content, note))
        ids = [m["id"] for m in messages if isinstance(m.get("id"), int)]
        if reply.get("more") and ids:
            self._history_cursor = (target, min(ids))
            lines.append(f"--- /history {self._quoted(target)} again for older messages ---")
        else:
            self._history_cursor = None
            lines.append("--- start of the conversation ---")
        self.ui.show("\n".join(lines))
        if before is None and target == self.current and ids:
            self._read_up_to(target, max(ids))

    def _cmd_sync(self, rest: str) -> None:
        if rest.strip():
            self.ui.show("! usage: /sync")
            return
        self._spawn(self._sync())

    async def _sync(self) -> None:
        """SyncRequest from this session's position, page after page, shown as live pushes."""
        request: dict[str, Any] = {"type": "SyncRequest", "limit": daily.SYNC_PAGE}
        shown = already = 0
        while True:
            reply = await self._request_or_report(request, "not synced")
            if reply is None:
                return
            lines = []
            for entry in reply.get("messages") or []:
                if not isinstance(entry, dict):
                    continue
                self._learn_entry(entry)
                message_id = entry.get("id")
                if "change" not in entry:
                    if isinstance(message_id, int) and message_id in self._seen:
                        already += 1
                        continue
                    self._remember(message_id)
                    chat = entry.get("chatname") or entry.get("user")
                    if chat == self.current and entry.get("sender") != self.username:
                        self._read_up_to(str(chat), message_id)
                note = "" if "change" in entry else self._id_note(message_id)
                lines.append(daily.sync_line(entry, self.username, note))
                shown += 1
            if lines:
                self._show_marked("\n".join(lines))
            until, since = reply.get("until"), request.get("since", -1)
            if not reply.get("more") or not isinstance(until, int) or until <= since:
                break
            request = {**request, "since": until}
        groups = reply.get("groups")
        if isinstance(groups, list):
            # The last page names every group you are in now: forget the others.
            self.groups = {g for g in groups if isinstance(g, str)}
            self._update_prompt()
        self.ui.show(daily.sync_summary(shown, already))

    async def _contacts(self) -> None:
        reply = await self._request_or_report({"type": "ContactListRequest"}, "no contact list")
        if reply is None:
            return
        contacts = [c for c in reply.get("contacts", []) if isinstance(c, dict)]
        pending = [p for p in reply.get("pending", []) if isinstance(p, dict)]
        lines = []
        if contacts:
            shown = [
                f"{clean(str(c.get('username')))} ({'online' if c.get('online') else 'offline'})"
                for c in contacts
            ]
            lines.append("* contacts: " + ", ".join(shown))
        else:
            lines.append("* contacts: none yet")
        for item in pending:
            who = clean(str(item.get("username")))
            if item.get("direction") == "incoming":
                lines.append(f"* contact request from {who}")
            else:
                lines.append(f"* contact request to {who}, not answered yet")
        self.ui.show("\n".join(lines))

    async def _contact_change(self, action: str, name: str) -> None:
        kind, failed = CONTACT_ACTIONS[action]
        reply = await self._request_or_report({"type": kind, "username": name}, failed)
        if reply is None:
            return
        who = clean(str(reply.get("username") or name))
        if action == "add":
            done = (f"{who} is now a contact" if reply.get("state") == "contact"
                    else f"asked {who} to be a contact")
        else:
            done = {"accept": f"{who} is now a contact",
                    "deny": f"turned down {who}'s contact request",
                    "remove": f"{who} is no longer a contact"}[action]
        self.ui.show(f"* {done}")

    async def _request_or_report(
        self, message: dict[str, Any], failed: str
    ) -> dict[str, Any] | None:
        """The reply, or None after telling the person why it failed."""
        try:
            reply = await self._call(message)
        except ConnectionLost:
            self.ui.show(f"! {failed}: the connection was lost before the server answered")
            return None
        if reply.get("type") == "ErrorResponse":
            self.ui.show(f"! {failed}: {self._detail(reply)}")
            return None
        return reply

    @staticmethod
    def _detail(reply: dict[str, Any]) -> str:
        detail = clean(str(reply.get("detail") or "no reason given"))
        status = reply.get("status")
        return f"{detail} ({status})" if status else detail

    # -- frames nobody asked for --------------------------------------------

    def _push(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        handler = {
            "MessageRecv": self._on_message,
            "GroupMessageRecv": self._on_message,
            "GroupMessageInitResponse": self._on_group_init,
            "GroupMemberLeftRecv": self._on_member_left,
            "GroupEventRecv": self._on_group_event,
            "GroupRemovedRecv": self._on_removed,
            "AnnouncementRecv": self._on_announcement,
            "RandomChatEndedRecv": self._on_random_ended,
            "PresenceRecv": self._on_presence,
            "MessageEdited": self._on_edited,
            "MessageDeleted": self._on_deleted,
            "HeartbeatRequest": self._on_heartbeat,
            "TypingRecv": self._on_typing,
            "ReadRecv": self._on_read,
            "ContactRequestRecv": lambda f: self.ui.show(
                f"* {clean(str(f.get('from')))} asks to be your contact:"
                f" /contacts accept {clean(str(f.get('from')))} (or deny)"
            ),
            "ContactAcceptRecv": lambda f: self.ui.show(
                f"* {clean(str(f.get('username')))} is now a contact"
                f" ({'online' if f.get('online') else 'offline'})"
            ),
            "ContactRemoveRecv": lambda f: self.ui.show(
                f"* {clean(str(f.get('username')))} removed you from their contacts"
            ),
            "ErrorResponse": lambda f: self.ui.show(f"! server: {self._detail(f)}"),
        }.get(kind if isinstance(kind, str) else "")
        if handler is None:
            self.ui.show("* " + clean(json.dumps(frame, ensure_ascii=False)))
            return
        handler(frame)

    def _on_message(self, frame: dict[str, Any]) -> None:
        message_id = frame.get("id")
        if isinstance(message_id, int):
            if message_id in self._seen:
                return  # already shown, e.g. sent again after a resume
            self._remember(message_id)
        sender = str(frame.get("sender", "?"))
        chatname = str(frame.get("chatname") or sender)
        if frame.get("type") == "MessageRecv" and not frame.get("random"):
            chat = canonical(sender)
            self.users.add(chat)
        else:
            chat = chatname
            if frame.get("random") or chat.startswith("~"):
                if chat not in self.randoms:
                    self.randoms[chat] = sender
                    self.ui.show(
                        f"* {clean(sender)} started a random chat with you:"
                        f" /to {self.label(chat)} to answer"
                    )
            else:
                self.groups.add(chat)
        note = self._id_note(
            message_id, "while you were offline" if frame.get("offline") else ""
        )
        mentioned = (frame.get("type") == "GroupMessageRecv"
                     and daily.mentions_me(frame, self.username))
        if mentioned:
            note = f"{daily.MENTION_NOTE}, {note}" if note else daily.MENTION_NOTE
        line = message_line(
            format_time(frame.get("timestamp")), self.label(chat), sender,
            str(frame.get("content", "")), note,
        )
        self._show_marked(strong(line) if mentioned else line)
        self.typers.message_from(chat, canonical(sender))
        if self.current is None:
            self.current = chat
            self._update_prompt()
        if chat == self.current and canonical(sender) != self.username:
            self._read_up_to(chat, message_id)

    def _on_group_init(self, frame: dict[str, Any]) -> None:
        # Sent at a group's creation, and when someone adds you to a group
        # or you join it elsewhere: who made the group is not who added you.
        chatname = str(frame.get("chatname"))
        self.groups.add(chatname)
        members = [clean(str(m)) for m in frame.get("members", [])]
        self.ui.show(
            f"* you are in {self.label(chatname)}, started by"
            f" {clean(str(frame.get('creator', 'someone')))} (members: {', '.join(members)});"
            f" /to {self._quoted(chatname)} to talk there"
        )
        if self.current is None:
            self.current = chatname
            self._update_prompt()

    def _on_member_left(self, frame: dict[str, Any]) -> None:
        chatname, user = str(frame.get("chatname")), str(frame.get("user"))
        if self._first_news_of_departure(chatname, user):
            self.ui.show(f"* {clean(user)} left {self.label(chatname)}")

    def _first_news_of_departure(self, chatname: str, user: str) -> bool:
        """A departure comes twice (GroupMemberLeftRecv for old clients, and the
        "left" event): True for the first of the pair, False for the second."""
        key = (chatname, user)
        if key in self._departures:
            self._departures.discard(key)
            return False
        self._departures.add(key)
        return True

    def _on_group_event(self, frame: dict[str, Any]) -> None:
        message_id = frame.get("id")
        if isinstance(message_id, int):
            if message_id in self._seen:
                return  # already shown, e.g. sent again after a resume
            self._remember(message_id)
        chatname = str(frame.get("chatname"))
        kind = frame.get("event")
        if kind == "renamed":
            self._renamed(str(frame.get("old_name")), chatname)
        else:
            self.groups.add(chatname)
        if (kind == "left" and not frame.get("offline")
                and not self._first_news_of_departure(chatname, str(frame.get("user")))):
            return
        self.ui.show(events.group_event_line(frame, self.username, self.label))

    def _on_removed(self, frame: dict[str, Any]) -> None:
        chatname = str(frame.get("chatname"))
        line = events.removed_line(frame, self.label)
        self.groups.discard(chatname)
        if self.current == chatname:
            self.current = None
            self._update_prompt()
        self.ui.show(line)

    def _on_announcement(self, frame: dict[str, Any]) -> None:
        key = frame.get("id")
        if key is not None:
            if key in self._announcements:
                return  # already shown, e.g. sent again after a resume
            self._announcements.add(key)
        self.ui.show(events.announcement_line(frame))

    def _on_random_ended(self, frame: dict[str, Any]) -> None:
        chatname = str(frame.get("chatname"))
        partner = clean(str(frame.get("user")))
        label = self.label(chatname)
        self.randoms.pop(chatname, None)
        reason = frame.get("reason")
        if reason == "blocked":  # this person blocked the partner, on another connection
            self.ui.show(f"* the random chat {label} ended: you blocked {partner}")
        else:
            how = "disconnected from" if reason == "disconnected" else "left"
            self.ui.show(f"* {partner} {how} the random chat {label}")
        if self.current == chatname:
            self.current = None
            self._update_prompt()

    def _on_presence(self, frame: dict[str, Any]) -> None:
        user = str(frame.get("username"))
        self.users.add(user)
        self.ui.show(f"* {clean(user)} is {'online' if frame.get('online') else 'offline'}")

    def _on_edited(self, frame: dict[str, Any]) -> None:
        self.ui.show(
            f"* {clean(str(frame.get('sender')))} edited a message in"
            f" {self.label(str(frame.get('chatname')))}: {clean(str(frame.get('content', '')))}"
        )

    def _on_deleted(self, frame: dict[str, Any]) -> None:
        self.ui.show(f"* a message in {self.label(str(frame.get('chatname')))} was deleted")

    def _on_typing(self, frame: dict[str, Any]) -> None:
        user = frame.get("username")
        chat = frame.get("chatname") if "chatname" in frame else frame.get("user")
        if isinstance(user, str) and isinstance(chat, str) and canonical(user) != self.username:
            self.typers.update(chat, canonical(user), frame.get("typing") is True)

    def _on_read(self, frame: dict[str, Any]) -> None:
        """The other side of a direct chat read your message: said once. Nothing else shows."""
        user, reader = frame.get("user"), frame.get("username")
        if not isinstance(user, str) or not isinstance(reader, str):
            return
        if canonical(reader) == canonical(user) and self.reads.peer_read(user, frame.get("id")):
            self.ui.show(f"* {clean(reader)} has seen your message")

    def _on_heartbeat(self, frame: dict[str, Any]) -> None:
        if self.connection is not None:
            self.connection.send_json(
                {"type": "HeartbeatResponse", "payload": frame.get("payload")}
            )

    # -- names --------------------------------------------------------------

    def label(self, chat: str) -> str:
        """How a chat is shown: ``#group``, ``@user``, ``~partner`` for a random chat."""
        if chat.startswith("~"):
            partner = self.randoms.get(chat)
            return "~" + clean(partner) if partner else clean(chat)
        if chat in self.groups:
            return "#" + clean(chat)
        if chat in self.users:
            return "@" + clean(chat)
        return clean(chat)

    def resolve(self, name: str) -> str:
        """The chat a typed name means; ``~bob`` is the random chat with bob."""
        target = canonical(name)
        if target.startswith("~") and target not in self.randoms:
            for chatname, partner in self.randoms.items():
                if partner == target[1:]:
                    return chatname
        return target

    def _is_chat(self, name: str) -> bool:
        return name.startswith("~") or name in self.groups

    def _learn_chat(self, name: str) -> None:
        if not name.startswith("~"):
            self.groups.add(name)

    @staticmethod
    def _quoted(name: str) -> str:
        return f'"{clean(name)}"' if " " in name else clean(name)

    def _remember(self, message_id: Any) -> None:
        if not isinstance(message_id, int):
            return
        self._seen.add(message_id)
        self._seen_order.append(message_id)
        if len(self._seen_order) > 5000:
            self._seen.discard(self._seen_order.popleft())

    def prompt(self) -> str:
        where = self.label(self.current) if self.current is not None else ""
        offline = "" if self.signed_in else "(offline) "
        typing = self.typers.words(self.current, self.label)
        return f"{offline}{f'({typing}) ' if typing else ''}{where}> "

    # -- typing and read markers ------------------------------------------

    def line_edited(self, text: str) -> None:
        """The line being typed changed (interactive terminal only): tell who may see it."""
        if self.interactive:
            chat = self.current
            self.typing_out.edited(None if chat is None else self._chat_key(chat), text)

    def _chat_key(self, chat: str) -> awareness.Chat:
        return ("chatname", chat) if self._is_chat(chat) else ("user", chat)

    def _read_up_to(self, chat: str, message_id: Any) -> None:
        """Shown in the current chat on a terminal: mark it read (random chats have no marker)."""
        if self.interactive and not chat.startswith("~"):
            self.reads.shown(self._chat_key(chat), message_id)

    def _send_typing(self, chat: awareness.Chat, typing: bool) -> None:
        self._fire({"type": "TypingRequest", chat[0]: chat[1], "typing": typing})

    def _send_read(self, chat: awareness.Chat, message_id: int) -> None:
        self._fire({"type": "ReadRequest", chat[0]: chat[1], "id": message_id})

    def _fire(self, request: dict[str, Any]) -> None:
        """A request whose answer does not matter; while offline it is not sent at all."""
        if not self.signed_in or self.connection is None:
            return

        async def call() -> None:
            try:
                await self._call(request)
            except Exception:
                pass  # typing and read markers are hints: a refusal changes nothing

        self._spawn(call())

    def _update_prompt(self) -> None:
        self.ui.set_prompt(self.prompt())
