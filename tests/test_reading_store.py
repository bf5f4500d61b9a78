"""Unread counts straight from the store, on SQLite and PostgreSQL.

The two databases run different SQL for ``unread_total`` (a LATERAL join on
PostgreSQL) and both read unread mentions through a partial index, so the
rules and the caps are checked on each: own messages, events, deleted
messages, change rows, blocked senders and messages from before joining do
not count; a conversation counts up to 100, the total up to 1000.
"""

from __future__ import annotations

from sqlalchemy import text

from chateau.store import migrate
from chateau.store.engine import make_engine
from chateau.store.reading import (
    UNREAD_CAP,
    UNREAD_TOTAL_CAP,
    conversations_txn,
    unread_total_txn,
)
from chateau.store.tables import blocks, group_members, messages, read_markers


def row(chat: str, sender: str, **values: object) -> dict[str, object]:
    return {"chat": chat, "recipient": None, "sender": sender, "content": "x",
            "created_at": 100, "edited": False, "deleted": False, "origin": None,
            "event": None, "mentions": None, "changes": None, **values}


def test_unread_rules_and_caps_on_both_databases(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with engine.begin() as c:
            migrate.prepare(c)
            c.execute(text("INSERT INTO names (name, kind) VALUES ('ann', 'user'), "
                           "('ben', 'user'), ('cat', 'user'), ('club', 'group'), "
                           "('big', 'group')"))
            c.execute(text("INSERT INTO users (username, password_hash, auth_method, disabled, "
                           "created_at) VALUES ('ann', 'x', 'local', false, 1), "
                           "('ben', 'x', 'local', false, 1), ('cat', 'x', 'local', false, 1)"))
            c.execute(text("INSERT INTO groups (chatname, creator, created_at) VALUES "
                           "('club', 'ann', 1), ('big', 'ann', 1)"))
            c.execute(group_members.insert(), [
                {"chatname": "club", "username": "ann", "joined_at": 0},
                {"chatname": "club", "username": "cat", "joined_at": 0},
                {"chatname": "club", "username": "ben", "joined_at": 50},
            ])
            c.execute(text("INSERT INTO direct_chats (username, chat) VALUES "
                           "('ann', '@ann:ben'), ('ben', '@ann:ben')"))
            c.execute(blocks.insert(), [{"blocker": "ben", "blocked": "cat", "created_at": 1}])
            c.execute(messages.insert(), [
                row("club", "ann", created_at=10),                   # before ben joined
                row("club", "ann", mentions='["ben"]'),              # counts, mentions ben
                row("club", "ann", mentions='["@all"]'),             # counts, mentions all
                row("club", "ann", mentions='["cat"]'),              # counts, not a mention
                row("club", "ann", deleted=True, content=None),
                row("club", "ann", event='{"event": "added"}'),
                row("club", "ann", changes=2, event='{"change": "edited"}', content=None),
                row("club", "ben", mentions='["ben"]'),              # own
                row("club", "cat", mentions='["ben"]'),              # blocked
                row("@ann:ben", "ann", recipient="ben"),
                row("@ann:ben", "ann", recipient="ben"),
                row("@ann:ben", "ben", recipient="ann"),
            ])

        def counts() -> tuple[int, dict[str, tuple[int, int]]]:
            with engine.begin() as c:
                total = unread_total_txn(c, "ben")
                listed, _ = conversations_txn(c, "ben", 50, None)
            return total, {r.chat: (r.unread, r.mentions) for r in listed}

        assert counts() == (5, {"club": (3, 2), "@ann:ben": (2, 0)})
        with engine.begin() as c:
            c.execute(read_markers.insert(), [
                {"username": "ben", "chat": "@ann:ben", "last_read_id": 10**9, "updated_at": 1}])
        assert counts() == (3, {"club": (3, 2), "@ann:ben": (0, 0)})

        # The caps: a conversation counts to 100 (mentions too), the total to 1000.
        with engine.begin() as c:
            c.execute(text("INSERT INTO group_members (chatname, username, joined_at) VALUES "
                           "('big', 'ben', 0)"))
            c.execute(messages.insert(), [row("big", "ann", mentions='["ben"]')
                                          for _ in range(1200)])
        total, listed = counts()
        assert total == UNREAD_TOTAL_CAP == 1000
        assert listed["big"] == (UNREAD_CAP, UNREAD_CAP) == (100, 100)
        assert listed["club"] == (3, 2)
    finally:
        engine.dispose()
