"""What operators do beyond one domain: each action, its entry in the
moderation log and the notice every node acts on, in one transaction.

``chateau-admin message delete`` and ``group delete`` run these on the
calling thread (chateau.admin_moderation); nodes apply the notices
(chateau.notices, chateau.handlers.operators).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.engine import Connection

from chateau.store.messages import delete_message_txn, get_message_txn
from chateau.store.moderation import record_txn
from chateau.store.notices import append_notice_txn
from chateau.store.records import MessageRecord
from chateau.store.tables import group_members, groups, metadata


@dataclass(frozen=True)
class DeletedGroup:
    chatname: str
    members: list[str]


def delete_message_as_operator_txn(
    connection: Connection, actor: str, message_id: int, reason: str = ""
) -> MessageRecord | str:
    """Delete any message; the record, or why not ("missing", "event")."""
    record = get_message_txn(connection, message_id)
    if record is None or record.deleted:
        return "missing"
    if record.event is not None:
        return "event"
    delete_message_txn(connection, message_id)
    record_txn(connection, actor, "message_delete", record.chat, reason,
               {"message_id": message_id, "sender": record.sender})
    append_notice_txn(connection, "message_deleted", {
        "id": record.id, "chat": record.chat, "recipient": record.recipient,
        "sender": record.sender, "by": actor,
    })
    return record


def delete_group_txn(
    connection: Connection, actor: str, chatname: str, reason: str = ""
) -> DeletedGroup | None:
    """Delete a group: its members, bans and every other row that belongs to
    it go; its name stays taken (names row kept, so nobody can register it
    to pass for it) and its messages stay (for reports), read by no one."""
    if connection.execute(select(groups.c.chatname).where(groups.c.chatname == chatname)).first() is None:
        return None
    members = sorted(connection.execute(
        select(group_members.c.username).where(group_members.c.chatname == chatname)
    ).scalars())
    # Every table that belongs to a group (a foreign key to groups.chatname),
    # whichever part of the schema added it.
    for table in reversed(metadata.sorted_tables):
        for key in table.foreign_keys:
            if key.column is groups.c.chatname:
                connection.execute(delete(table).where(key.parent == chatname))
    connection.execute(delete(groups).where(groups.c.chatname == chatname))
    record_txn(connection, actor, "group_delete", chatname, reason, {"members": members})
    append_notice_txn(connection, "group_changed", {
        "chatname": chatname, "change": "deleted", "by": actor, "reason": reason,
        "members": members,
    })
    return DeletedGroup(chatname, members)
