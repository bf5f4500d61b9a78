"""A user's data: what the export reads, and what erasure removes.

The export (``GET /api/me/export``, ``chateau-admin user export``) reads the
account's small parts in one transaction (:func:`export_head_txn`) and its
messages a page at a time, in id order (:func:`export_messages_txn`), so a
long history never sits in memory; chateau.export turns them into the JSON
document.

Erasure (:func:`erase_account_txn`, AccountDeleteRequest and
``chateau-admin user erase``) is one transaction: the account's rows go
(every table with a foreign key to ``users.username``, whichever part of
the schema added it: keys, contacts, blocks, settings, cursors, bans,
memberships with the owner succession of a member leaving), the name is
held (``names.kind`` "held" until ``held_until``), and what the account
wrote is kept under :data:`chateau.names.DELETED_USER`, its words erased
or kept (``[chat] erase_messages``). Its direct conversations are re-keyed
to ``direct_chat(DELETED_USER, other)``, so whoever is given the name once
the hold ends never sees them, while the other person keeps their history.
The audit row and the notice every node acts on (kind ``account_erased``:
close the account's connections, forget it in the registry) are written in
the same transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection
from twisted.internet.defer import Deferred

from chateau.messages import event_words
from chateau.names import DELETED_USER
from chateau.store.audit import record_txn
from chateau.store.engine import Runner
from chateau.store.groups import remove_group_member_txn
from chateau.store.messages import _message_record
from chateau.store.notices import append_notice_txn
from chateau.store.records import MessageRecord, direct_chat, iso_timestamp
from chateau.store.safety import settings_txn
from chateau.store.tables import (
    blocks, contacts, direct_chats, group_bans, group_invites, group_members, groups, messages,
    metadata, names, random_avoid, read_markers, removal_notices, upsert, users,
)

# What erase_messages may say ([chat] erase_messages).
ERASE, ANONYMISE = "erase", "anonymise"


@dataclass(frozen=True)
class ExportHead:
    """Everything of an export but its messages, ready for JSON."""

    account: dict[str, Any]
    settings: dict[str, Any]
    contacts: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    groups: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ErasedAccount:
    """What an erasure did: the groups left (with the member who became
    owner, if the account was the last one), and the messages it wrote."""

    username: str
    mode: str
    groups: tuple[tuple[str, str | None], ...]
    messages: int
    held_until: int


class Erasure:
    """Export and erasure: each method returns a Deferred."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def export_head(self, username: str) -> Deferred[ExportHead | None]:
        return self._runner.run(export_head_txn, username)

    def export_messages(self, username: str, after: int, limit: int) -> Deferred[list[MessageRecord]]:
        return self._runner.run(export_messages_txn, username, after, limit)

    def erase(
        self, actor: str, username: str, mode: str, held_until: int, address: str | None = None,
    ) -> Deferred[ErasedAccount | None]:
        return self._runner.run(erase_account_txn, actor, username, mode, held_until, address)

    def erase_leftovers(self, username: str, mode: str) -> Deferred[int]:
        """Erase what an erased account wrote that was committed after its erasure."""
        return self._runner.run(erase_leftovers_txn, username, mode)


# -- export ---------------------------------------------------------------------

def export_head_txn(connection: Connection, username: str) -> ExportHead | None:
    """The account, its settings, contacts, blocks and groups; None for nobody."""
    row = connection.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        return None
    account: dict[str, Any] = {
        "username": row.username,
        "auth_method": row.auth_method,
        "display_name": row.display_name,
    }
    if "status_text" in users.c:
        account["status_text"] = row._mapping["status_text"]
    account["created"] = iso_timestamp(row.created_at)
    account["is_admin"] = bool(row.is_admin)
    found_contacts = []
    for contact in connection.execute(
        select(contacts).where((contacts.c.requester == username) | (contacts.c.addressee == username))
        .order_by(contacts.c.created_at)
    ):
        mine = contact.requester == username
        found_contacts.append({
            "username": contact.addressee if mine else contact.requester,
            "status": "accepted" if contact.accepted else ("outgoing" if mine else "incoming"),
            "since": iso_timestamp(contact.created_at),
        })
    found_blocks = [
        {"username": block.blocked, "since": iso_timestamp(block.created_at)}
        for block in connection.execute(
            select(blocks).where(blocks.c.blocker == username).order_by(blocks.c.created_at)
        )
    ]
    found_groups = [
        {"chatname": member.chatname, "role": member.role,
         "joined": iso_timestamp(member.joined_at)}
        for member in connection.execute(
            select(group_members).where(group_members.c.username == username)
            .order_by(group_members.c.chatname)
        )
    ]
    return ExportHead(
        account, settings_txn(connection, username).as_wire(), found_contacts, found_blocks,
        found_groups,
    )


def export_messages_txn(
    connection: Connection, username: str, after: int, limit: int
) -> list[MessageRecord]:
    """The next *limit* messages after id *after* that the export holds.

    Every message *username* sent (groups, random chats, direct chats) and
    every message of their direct conversations, in id order: the primary
    key is walked from *after*, so the whole export reads the table once.
    """
    theirs = select(direct_chats.c.chat).where(direct_chats.c.username == username)
    query = (
        select(messages)
        .where((messages.c.id > after)
               & ((messages.c.sender == username) | messages.c.chat.in_(theirs)))
        .order_by(messages.c.id)
        .limit(limit)
    )
    return [_message_record(row) for row in connection.execute(query)]


# -- erasure --------------------------------------------------------------------

def erase_account_txn(
    connection: Connection, actor: str, username: str, mode: str, held_until: int,
    address: str | None = None,
) -> ErasedAccount | None:
    """Erase *username* (see the module's docstring); None when there is no such account."""
    if mode not in (ERASE, ANONYMISE):
        raise ValueError(f"erase_messages must be {ERASE!r} or {ANONYMISE!r}, not {mode!r}")
    found = connection.execute(
        select(users.c.username).where(users.c.username == username).with_for_update()
    ).first()
    if found is None:
        return None
    # Groups first: each keeps an owner (the member who would inherit it
    # if the account had left).
    chats = list(connection.execute(
        select(group_members.c.chatname).where(group_members.c.username == username)
        .order_by(group_members.c.chatname)
    ).scalars())
    left = tuple((chat, remove_group_member_txn(connection, chat, username)) for chat in chats)
    # Every row keyed to the account, in every table that has such a key.
    for table in reversed(metadata.sorted_tables):
        if table is users:
            continue
        for key in table.foreign_keys:
            if key.column is users.c.username:
                connection.execute(delete(table).where(key.parent == username))
    connection.execute(
        delete(random_avoid).where((random_avoid.c.a == username) | (random_avoid.c.b == username))
    )
    # Names kept in other people's rows as who did something.
    for column in (groups.c.creator, group_invites.c.created_by, group_bans.c.banned_by,
                   removal_notices.c.removed_by):
        connection.execute(
            update(column.table).where(column == username).values({column.name: DELETED_USER})
        )
    _rekey_direct_chats(connection, username)
    written = _anonymise_messages(connection, username, mode)
    _anonymise_events(connection, username)
    connection.execute(delete(users).where(users.c.username == username))
    connection.execute(
        update(names).where(names.c.name == username).values(kind="held", held_until=held_until)
    )
    record_txn(connection, actor, "erase", username, "", {
        "mode": mode, "messages": written, "groups": [chat for chat, _ in left],
        "held_until": iso_timestamp(held_until),
    }, address)
    append_notice_txn(connection, "account_erased", {
        "username": username, "groups": [[chat, heir] for chat, heir in left],
    })
    return ErasedAccount(username, mode, left, written, held_until)


def erase_leftovers_txn(connection: Connection, username: str, mode: str) -> int:
    """Messages of an erased *username* that the message writer committed after
    the erasure (sent just before it): treated as the erasure treated the rest.

    A no-op while the account exists. How many messages it changed.
    """
    if connection.execute(select(users.c.username).where(users.c.username == username)).first():
        return 0
    _rekey_direct_chats(connection, username)
    written = _anonymise_messages(connection, username, mode)
    _anonymise_events(connection, username)
    return written


def _rekey_direct_chats(connection: Connection, username: str) -> None:
    """Move each direct conversation of *username* to ``@(deleted user):other``."""
    chats = list(connection.execute(
        select(direct_chats.c.chat).where(direct_chats.c.username == username)
    ).scalars())
    for chat in chats:
        members = connection.execute(
            select(direct_chats.c.username).where(direct_chats.c.chat == chat)
        ).scalars().all()
        others = [name for name in members if name != username] or [DELETED_USER]
        other = others[0]
        new_chat = direct_chat(DELETED_USER, other)
        connection.execute(update(messages).where(messages.c.chat == chat).values(chat=new_chat))
        # The other person's read marker follows the conversation (the
        # erased account's own went with its rows), over any they had in
        # an earlier conversation with an erased account.
        holders = select(read_markers.c.username).where(read_markers.c.chat == chat)
        connection.execute(delete(read_markers).where(
            (read_markers.c.chat == new_chat) & read_markers.c.username.in_(holders)
        ))
        connection.execute(
            update(read_markers)
            .where((read_markers.c.chat == chat) & (read_markers.c.username != username))
            .values(chat=new_chat)
        )
        connection.execute(
            update(messages)
            .where((messages.c.chat == new_chat) & (messages.c.recipient == username))
            .values(recipient=DELETED_USER)
        )
        connection.execute(delete(direct_chats).where(direct_chats.c.chat == chat))
        if other != DELETED_USER:
            connection.execute(
                upsert(connection, direct_chats).on_conflict_do_nothing(),
                [{"username": other, "chat": new_chat}],
            )


def _anonymise_messages(connection: Connection, username: str, mode: str) -> int:
    """What *username* wrote now comes from DELETED_USER; in erase mode without its words."""
    written = (messages.c.sender == username) & messages.c.event.is_(None)
    values: dict[str, Any] = {"sender": DELETED_USER}
    if mode == ERASE:
        values.update(content=None, deleted=True)
    count = connection.execute(update(messages).where(written).values(**values)).rowcount
    return int(count or 0)


def _anonymise_events(connection: Connection, username: str) -> None:
    """Groups' system events naming *username* name DELETED_USER instead.

    Few rows (events are rare beside messages): each is read, its JSON
    rewritten and its words made again from it.
    """
    quoted = json.dumps(username)
    rows = connection.execute(
        select(messages.c.id, messages.c.sender, messages.c.event)
        .where(messages.c.event.is_not(None)
               & ((messages.c.sender == username) | messages.c.event.contains(quoted)))
    ).all()
    for row in rows:
        body = json.loads(row.event)
        changed = False
        for key in ("user", "by"):
            if body.get(key) == username:
                body[key] = DELETED_USER
                changed = True
        sender = DELETED_USER if row.sender == username else row.sender
        if not changed and sender == row.sender:
            continue
        detail = {k: v for k, v in body.items() if k not in ("event", "user", "by")}
        words = event_words(str(body.get("event", "")), str(body.get("user", "")),
                            str(body.get("by", "")), detail)
        connection.execute(
            update(messages).where(messages.c.id == row.id)
            .values(sender=sender, event=json.dumps(body), content=words)
        )
