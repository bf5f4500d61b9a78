"""Read receipts to others, paced: one ReadRecv per reader per conversation per window.

A client marks a conversation read as its user scrolls, so readers may send
many ReadRequests a second. Their own other devices hear of each at once
(the handler delivers those); the other people of the conversation hear at
most one ``ReadRecv`` per reader and conversation per :data:`WINDOW`
seconds: the first at once, and the newest of those that came meanwhile
when the window ends (which opens the next window). Timers run on the
reactor's clock passed in (a ``task.Clock`` in tests). A window is kept
only while it is open, so memory holds only recent readers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chateau.delivery import Delivery

# Seconds between two ReadRecv of one reader in one conversation, to others.
WINDOW = 2.0


@dataclass
class _Window:
    call: Any  # the IDelayedCall ending it
    # What to send when it ends: (recipients, push), the newest wins.
    pending: tuple[list[str], dict[str, Any]] | None = None


class ReadReceipts:
    """Paces the ReadRecv pushes a reader's ReadRequests send to others."""

    def __init__(self, delivery: Delivery, clock: Any, window: float = WINDOW) -> None:
        self._delivery = delivery
        self._clock = clock
        self._window = window
        self._windows: dict[tuple[str, str], _Window] = {}

    def send(self, reader: str, chat: str, recipients: list[str], push: dict[str, Any]) -> None:
        """Tell *recipients* that *reader* read *chat* (now, or when the window ends)."""
        key = (reader, chat)
        window = self._windows.get(key)
        if window is not None:
            window.pending = (recipients, push)
            return
        self._deliver(reader, recipients, push)
        self._open(key)

    def _open(self, key: tuple[str, str]) -> None:
        self._windows[key] = _Window(self._clock.callLater(self._window, self._end, key))

    def _end(self, key: tuple[str, str]) -> None:
        window = self._windows.pop(key)
        if window.pending is not None:
            recipients, push = window.pending
            self._deliver(key[0], recipients, push)
            self._open(key)

    def _deliver(self, reader: str, recipients: list[str], push: dict[str, Any]) -> None:
        # Named as the sender: whoever blocks the reader is passed over, on every node.
        self._delivery.deliver(recipients, push, sender=reader)

    def stop(self) -> None:
        """Drop what is pending (the server is stopping)."""
        windows, self._windows = self._windows, {}
        for window in windows.values():
            if window.call.active():
                window.call.cancel()
