"""What operators do beyond one domain: each action, its entry in the
moderation log and the notice every node acts on, in one transaction.

``chateau-admin message delete`` and ``group delete|add|remove|role`` run
these on the calling thread (chateau.admin_moderation); nodes apply the
notices (chateau.notices, chateau.handlers.operators). Group membership
changes reuse the transaction functions of GroupAddRequest and
GroupRemoveRequest (chateau.store.membership), so bans and limits hold.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from chateau.store.groups import role_of_txn
from chateau.store.membership import add_members_txn, remove_txn
from chateau.store.messages import delete_message_txn, get_message_txn
from chateau.store.audit import record_txn
from chateau.store.notices import append_notice_txn
from chateau.store.records import OWNER, ROLES, AddOutcome, MessageRecord
from chateau.store.tables import group_members, groups, metadata, users


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
    delete_message_txn(connection, message_id, actor)
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


def add_group_members_txn(
    connection: Connection, actor: str, chatname: str, usernames: list[str],
    max_members: int, max_groups: int,
) -> AddOutcome:
    """Add users to a group as an operator: the checks of GroupAddRequest
    (bans, the limits) hold; those added are told by every node (the notice),
    or at their next sign-in."""
    outcome = add_members_txn(connection, chatname, usernames, set(), max_members, max_groups)
    if outcome.refusal is not None or not outcome.added:
        return outcome
    record_txn(connection, actor, "group_add", chatname, "", {"users": list(outcome.added)})
    append_notice_txn(connection, "group_changed", {
        "chatname": chatname, "change": "added", "by": actor, "users": list(outcome.added),
        "creator": outcome.creator, "members": list(outcome.members),
    })
    return outcome


def remove_group_member_as_operator_txn(
    connection: Connection, actor: str, chatname: str, username: str, ban: bool, reason: str,
) -> tuple[str, str | None, str | None]:
    """Remove (or ban) anyone from a group: (outcome, their role, new owner),
    outcome as :func:`chateau.store.membership.remove_txn` says, or "no_user"."""
    if connection.execute(select(users.c.username).where(users.c.username == username)).first() is None:
        return "no_user", None, None
    members = sorted(connection.execute(
        select(group_members.c.username).where(group_members.c.chatname == chatname)
    ).scalars())
    outcome, role, heir = remove_txn(
        connection, chatname, actor, username, ban, reason, frozenset(ROLES)
    )
    if outcome in ("removed", "banned"):
        append_notice_txn(connection, "group_changed", {
            "chatname": chatname, "change": "removed", "by": actor, "user": username,
            "was_member": role is not None, "banned": ban, "reason": reason, "heir": heir,
            "members": [m for m in members if m != username],
        })
    return outcome, role, heir


def set_group_role_as_operator_txn(
    connection: Connection, actor: str, chatname: str, username: str, role: str,
) -> str:
    """Give a member a role as an operator: "set", "same", "no_group",
    "not_member" or "last_owner" (a group always keeps an owner)."""
    in_group = group_members.c.chatname == chatname
    if connection.execute(select(groups.c.chatname).where(groups.c.chatname == chatname)).first() is None:
        return "no_group"
    owners = connection.execute(
        select(group_members.c.username)
        .where(in_group & (group_members.c.role == OWNER))
        .with_for_update()
    ).scalars().all()
    current = role_of_txn(connection, chatname, username)
    if current is None:
        return "not_member"
    if current == role:
        return "same"
    if current == OWNER and list(owners) == [username]:
        return "last_owner"
    connection.execute(
        update(group_members).where(in_group & (group_members.c.username == username))
        .values(role=role)
    )
    members = sorted(connection.execute(select(group_members.c.username).where(in_group)).scalars())
    record_txn(connection, actor, "group_role", chatname, "", {"user": username, "role": role})
    append_notice_txn(connection, "group_changed", {
        "chatname": chatname, "change": "role", "by": actor, "user": username, "role": role,
        "members": members,
    })
    return "set"
