"""Who is typing where: the TypingRecv pushes, their rate, their expiry and their end.

Typing is never stored. Each typer's state per conversation lives on the
node of the connection that said it (the expiry runs there); the pushes
reach the others on every node through :meth:`Delivery.deliver`, with the
typer as sender, so whoever blocks the typer is passed over on their own
node. The rules (docs/protocol.md, TypingRequest):

- At most one ``TypingRecv`` per typer per conversation per
  :data:`RELAY_INTERVAL` seconds (the *window* after each push). What the
  typer says inside a window is settled when it ends: others are told only
  when it differs from what they were last told, so a renewal is dropped, a
  ``false`` waits for the window's end (and is dropped if a ``true`` came
  back meanwhile). A ``true`` outside a window is pushed, a renewal too (it
  reaches members who came online since).
- :data:`EXPIRY` seconds after the last ``true`` with no renewal, the
  others are told ``false``.
- ``false`` goes to those told ``true`` (and nobody else); a ``false``
  nobody was told ``true`` for is dropped.
- The typer's last connection on this node closing ends every state of
  theirs here (:meth:`Typing.left`: ``false`` at once to those told
  ``true``); a message the typer sends in the conversation ends that one
  silently (:meth:`Typing.message_sent`: clients clear it on the message).
- Who is told: the others in the group or random chat (or the other person
  of a direct chat) who are online, minus those the typer blocks, and as
  the typer's ``presence`` setting allows ("nobody": no one; "contacts":
  accepted contacts only), the rule ``ClientListRequest`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from chateau import messages
from chateau.delivery import Delivery
from chateau.registry import Registry

# At most one push per typer per conversation in this many seconds.
RELAY_INTERVAL = 2.0
# A ``true`` not renewed within this many seconds ends (others are told ``false``).
EXPIRY = 6.0

# A conversation: ("chatname", a group's or random chat's name) or ("user",
# the other person of a direct chat, canonical).
Conversation = tuple[str, str]


@dataclass
class _State:
    """One typer in one conversation."""

    # What the typer says now, and what the others were last told.
    typing: bool = False
    told: bool = False
    # Who was told ``true`` since the last ``false``: they get the ``false``.
    audience: set[str] = field(default_factory=set)
    # The end of the window after the last push, and the expiry of a ``true``.
    window: IDelayedCall | None = None
    expiry: IDelayedCall | None = None

    def cancel(self) -> None:
        for call in (self.window, self.expiry):
            if call is not None and call.active():
                call.cancel()
        self.window = self.expiry = None


class Typing:
    """The typing states of the users online here, and their timers."""

    def __init__(self, registry: Registry, delivery: Delivery, clock: IReactorTime) -> None:
        self.registry = registry
        self.delivery = delivery
        self.clock = clock
        # typer -> conversation -> state; a typer without any state has no entry.
        self._states: dict[str, dict[Conversation, _State]] = {}

    # -- what the typer says ------------------------------------------------

    def say(self, typer: str, conversation: Conversation, typing: bool) -> None:
        """*typer* says they are typing (or stopped) in *conversation*.

        The handler has checked that they may (membership, the recipient's
        direct_messages setting); what is pushed, and when, is decided here.
        """
        states = self._states.get(typer)
        state = states.get(conversation) if states is not None else None
        if state is None:
            if not typing:
                return  # nobody was told true
            state = _State()
            self._states.setdefault(typer, {})[conversation] = state
        state.typing = typing
        if typing:
            if state.expiry is not None and state.expiry.active():
                state.expiry.reset(EXPIRY)
            else:
                state.expiry = self.clock.callLater(EXPIRY, self._expired, typer, conversation)
        elif state.expiry is not None:
            if state.expiry.active():
                state.expiry.cancel()
            state.expiry = None
        if state.window is None:
            self._settle(typer, conversation, state, renew=typing)
        # Inside a window: settled when it ends.

    def message_sent(self, typer: str, key: str, name: str) -> None:
        """*typer* sent a message in the conversation (*key*, *name*): their typing
        there ends, unsaid.

        On the send's hot path: one dict lookup unless the sender has a state.
        """
        states = self._states.get(typer)
        if states is None:
            return
        state = states.pop((key, name), None)
        if state is not None:
            state.cancel()
            if not states:
                del self._states[typer]

    def left(self, typer: str) -> None:
        """A connection of *typer* closed: if it was their last here, end their typing."""
        if typer not in self._states or self.registry.is_local(typer):
            return
        states = self._states.pop(typer)
        for conversation, state in states.items():
            state.cancel()
            if state.told:
                self._push(typer, conversation, sorted(state.audience), False)

    def stop(self) -> None:
        """Cancel every timer (the service is stopping)."""
        for states in self._states.values():
            for state in states.values():
                state.cancel()
        self._states.clear()

    # -- timers ---------------------------------------------------------------

    def _expired(self, typer: str, conversation: Conversation) -> None:
        state = self._state(typer, conversation)
        if state is None:
            return
        state.expiry = None
        state.typing = False
        if state.window is None:
            self._settle(typer, conversation, state)

    def _window_over(self, typer: str, conversation: Conversation) -> None:
        state = self._state(typer, conversation)
        if state is None:
            return
        state.window = None
        self._settle(typer, conversation, state)

    def _settle(
        self, typer: str, conversation: Conversation, state: _State, renew: bool = False
    ) -> None:
        """Outside a window: push what the typer says if the others must hear it.

        *renew*: a ``true`` the typer just said is pushed even to those told
        ``true`` already (a renewal outside any window).
        """
        if state.typing != state.told or (renew and state.typing):
            self._relay(typer, conversation, state)
        elif not state.typing:
            # Not typing, and the others know: nothing left to keep.
            self._forget(typer, conversation)

    def _relay(self, typer: str, conversation: Conversation, state: _State) -> None:
        if state.typing:
            recipients = self.audience(typer, conversation)
            state.audience.update(recipients)
        else:
            recipients = sorted(state.audience)
            state.audience = set()
        state.told = state.typing
        self._push(typer, conversation, recipients, state.typing)
        state.window = self.clock.callLater(
            RELAY_INTERVAL, self._window_over, typer, conversation
        )

    def _push(
        self, typer: str, conversation: Conversation, recipients: list[str], typing: bool
    ) -> None:
        if not recipients:
            return
        key, name = conversation
        # The other side of a direct chat knows it by the typer's name.
        push = messages.typing_recv(key, typer if key == "user" else name, typer, typing)
        # As sender: whoever blocks the typer is passed over, on their own node.
        self.delivery.deliver(recipients, push, sender=typer)

    def _state(self, typer: str, conversation: Conversation) -> _State | None:
        states = self._states.get(typer)
        return states.get(conversation) if states is not None else None

    def _forget(self, typer: str, conversation: Conversation) -> None:
        states = self._states.get(typer)
        if states is not None and states.pop(conversation, None) is not None and not states:
            del self._states[typer]

    # -- who is told ------------------------------------------------------------

    def audience(self, typer: str, conversation: Conversation) -> list[str]:
        """Who is told that *typer* types in *conversation* now (online, not blocked, allowed)."""
        registry = self.registry
        presence = registry.settings(typer).presence
        if presence == "nobody":
            return []
        key, name = conversation
        members: Any
        if key == "user":
            members = (name,)
        else:
            pair = registry.pair(name)
            group = registry.group(name) if pair is None else None
            if pair is not None:
                members = pair.members
            elif group is not None and typer in group.members:
                members = group.members
            else:
                return []  # gone, or the typer was removed meanwhile
        return sorted(
            other for other in members
            if other != typer and registry.is_online(other)
            and not registry.blocks(typer, other)
            and registry.shows_presence(typer, other)
        )
