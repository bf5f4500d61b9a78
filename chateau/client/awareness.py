"""Who is typing, and who has read: both directions, for the interactive client.

:class:`TypingSender` tells the server while the person types a line in the
current chat (``TypingRequest``), renewing it no more often than
:data:`RENEW` and ending it when the line is sent or erased.
:class:`Typers` keeps who is typing to this person (``TypingRecv``) until
they stop, send a message, or :data:`EXPIRY` passes. :class:`ReadMarks`
sends ``ReadRequest`` for the newest message shown in the current chat
(batched over :data:`READ_DELAY`) and says once when the other side of a
direct chat has read your latest message (``ReadRecv``).

All timers run on the reactor (a ``task.Clock`` in tests); nothing here
touches the network or the screen except through the callables given.
"""

from __future__ import annotations

from typing import Any, Callable

# The server relays at most one TypingRecv per 2 s and ends typing 6 s
# after the last `typing: true`: renewing every 3 s keeps others told
# without sending what the server would drop.
RENEW = 3.0
EXPIRY = 6.0
READ_DELAY = 1.0

# A chat as the requests name it: ("chatname", "club") or ("user", "bob").
Chat = tuple[str, str]


def is_typing(text: str) -> bool:
    """Whether a line being typed is a message (not a command, not empty)."""
    if not text.strip():
        return False
    return not text.startswith("/") or text.startswith("//")


class TypingSender:
    """``TypingRequest``s for what the person is typing, never more than needed."""

    def __init__(self, clock: Any, send: Callable[[Chat, bool], None]) -> None:
        self.clock = clock
        self.send = send
        self.chat: Chat | None = None  # where others were last told "typing"
        self._told_at = 0.0

    def edited(self, chat: Chat | None, text: str) -> None:
        """The line being typed is now *text*, for *chat* (None: no current chat)."""
        if chat != self.chat:
            self.stopped()
        if chat is None or not is_typing(text):
            self.stopped()
            return
        now = self.clock.seconds()
        if self.chat is None or now - self._told_at >= RENEW:
            self.chat, self._told_at = chat, now
            self.send(chat, True)

    def stopped(self) -> None:
        """The line was sent or erased: typing ends, if others were told it began."""
        chat, self.chat = self.chat, None
        if chat is not None:
            self.send(chat, False)

    def forget(self) -> None:
        """The connection is gone, and the server ended the typing with it."""
        self.chat = None


class Typers:
    """Who is typing to this person, by chat, until they stop or time runs out."""

    def __init__(self, clock: Any, changed: Callable[[], None]) -> None:
        self.clock = clock
        self.changed = changed
        self._timers: dict[tuple[str, str], Any] = {}  # (chat, user) -> expiry call

    def update(self, chat: str, user: str, typing: bool) -> None:
        key = (chat, user)
        timer = self._timers.pop(key, None)
        if timer is not None and timer.active():
            timer.cancel()
        if typing:
            self._timers[key] = self.clock.callLater(EXPIRY, self._expire, key)
        if typing or timer is not None:
            self.changed()

    def message_from(self, chat: str, user: str) -> None:
        """A message from *user* in *chat* ends their typing there."""
        if (chat, user) in self._timers:
            self.update(chat, user, False)

    def clear(self) -> None:
        timers, self._timers = self._timers, {}
        for timer in timers.values():
            if timer.active():
                timer.cancel()
        if timers:
            self.changed()

    def _expire(self, key: tuple[str, str]) -> None:
        if self._timers.pop(key, None) is not None:
            self.changed()

    def words(self, current: str | None, label: Callable[[str], str]) -> str:
        """``bob is typing…`` in the current chat; elsewhere says where:
        ``carol is typing in #club…``, ``dave is typing to you…`` (a direct chat)."""
        here = sorted(user for chat, user in self._timers if chat == current)
        elsewhere = sorted((chat, user) for chat, user in self._timers if chat != current)
        parts = []
        if here:
            verb = "is" if len(here) == 1 else "are"
            parts.append(f"{', '.join(here)} {verb} typing…")
        for chat, user in elsewhere:
            where = "to you" if chat == user else f"in {label(chat)}"
            parts.append(f"{user} is typing {where}…")
        return "; ".join(parts)


class ReadMarks:
    """Read markers: sending ours for what was shown, and "seen" for what we sent."""

    def __init__(self, clock: Any, send: Callable[[Chat, int], None]) -> None:
        self.clock = clock
        self.send = send
        self._marked: dict[Chat, int] = {}  # the highest id sent in a ReadRequest
        self._due: dict[Chat, int] = {}
        self._timer: Any = None
        self._sent_last: dict[str, int] = {}  # direct chat -> id of my latest message
        self._seen_told: dict[str, int] = {}

    def shown(self, chat: Chat, message_id: Any) -> None:
        """*message_id* of *chat* is on the screen of the current chat: read up to it."""
        if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
            return
        if message_id <= max(self._marked.get(chat, 0), self._due.get(chat, 0)):
            return
        self._due[chat] = message_id
        if self._timer is None or not self._timer.active():
            self._timer = self.clock.callLater(READ_DELAY, self._flush)

    def _flush(self) -> None:
        due, self._due = self._due, {}
        for chat, message_id in sorted(due.items()):
            self._marked[chat] = message_id
            self.send(chat, message_id)

    def sent(self, user: str, message_id: Any) -> None:
        """This person sent *message_id* to *user* (a direct chat)."""
        if isinstance(message_id, int) and not isinstance(message_id, bool):
            self._sent_last[user] = max(message_id, self._sent_last.get(user, 0))

    def peer_read(self, user: str, message_id: Any) -> bool:
        """*user* read up to *message_id*: True once it covers your latest message to them."""
        latest = self._sent_last.get(user)
        if latest is None or not isinstance(message_id, int) or message_id < latest:
            return False
        if self._seen_told.get(user) == latest:
            return False
        self._seen_told[user] = latest
        return True

    def forget(self) -> None:
        """The connection is gone: what was due is sent again when shown again."""
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._due.clear()
