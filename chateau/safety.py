"""A user's personal settings: their shape, defaults and allowed values.

Pure data (no I/O), shared by the store, which keeps them in
``user_settings``, the registry, which holds every user's non-default
settings on every node so that presence and pairing are decided without
the database, and the handlers, which check what a ``SettingsRequest``
asks for. docs/protocol.md (SettingsRequest) says what each one means.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Who may send the user direct messages.
DIRECT_MESSAGES = ("everyone", "contacts")
# Who sees the user online (ClientList, presence pushes, /api/users, members' "online").
PRESENCE = ("everyone", "contacts", "nobody")


@dataclass(frozen=True)
class Settings:
    direct_messages: str = "everyone"
    presence: str = "everyone"
    # Whether the user takes part in random chats (is paired, and may pair).
    random_chat: bool = True
    # Whether others are told when the user has read their messages.
    read_receipts: bool = True

    def as_wire(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def is_default(self) -> bool:
        return self == DEFAULT_SETTINGS


DEFAULT_SETTINGS = Settings()

# Each setting's allowed values (a tuple of strings) or its type (bool).
CHOICES: dict[str, tuple[str, ...] | type] = {
    "direct_messages": DIRECT_MESSAGES,
    "presence": PRESENCE,
    "random_chat": bool,
    "read_receipts": bool,
}
