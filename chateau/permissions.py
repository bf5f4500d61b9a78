"""Who may do what in a group: the one rule every group handler asks.

Pure and small on purpose: ``docs/protocol.md`` prints this table and
``tests/test_permissions.py`` proves it cell by cell, in-process and over
the wire. A server admin acts as an owner in every group, member or not
(:func:`effective_role`).
"""

from __future__ import annotations

from chateau.store.records import ADMIN, MEMBER, OWNER

# Actions on the group as a whole.
SEND = "send"        # GroupMessageRequest (a muted member never sends)
ADD = "add"          # GroupAddRequest
INVITE = "invite"    # GroupInviteRequest (an invite code adds whoever uses it)
UPDATE = "update"    # GroupUpdateRequest: topic, name, join, visibility, who_can_*
UNBAN = "unban"      # GroupUnbanRequest
ROLE = "role"        # GroupRoleRequest
MENTION_ALL = "mention_all"  # @all in a group message or its edit (chateau.mentions)
# Actions on one member (the target): allowed only on a lower role.
REMOVE = "remove"    # GroupRemoveRequest, with or without ban
MUTE = "mute"        # GroupMuteRequest

ON_MEMBER = frozenset({REMOVE, MUTE})
ACTIONS = (SEND, ADD, INVITE, UPDATE, UNBAN, ROLE, MENTION_ALL, REMOVE, MUTE)

_RANK = {MEMBER: 0, ADMIN: 1, OWNER: 2}


def effective_role(role: str | None, server_admin: bool) -> str | None:
    """The role someone acts with: a server admin is an owner everywhere."""
    return OWNER if server_admin else role


def may(
    action: str, role: str | None, *, target: str | None = None,
    who_can_add: str = "admins", who_can_send: str = "everyone",
) -> bool:
    """Whether someone of *role* (None: not a member) may do *action*.

    *target* is the role of the member acted on, for :data:`ON_MEMBER`
    actions: owners act on admins and members, admins on members, nobody
    on an equal or higher role. *who_can_add* (``admins``/``members``) and
    *who_can_send* (``everyone``/``admins``) are the group's settings.
    """
    if role not in _RANK:
        return False
    rank = _RANK[role]
    if action == SEND:
        return who_can_send == "everyone" or rank >= _RANK[ADMIN]
    if action in (ADD, INVITE):
        return who_can_add == "members" or rank >= _RANK[ADMIN]
    if action in (UPDATE, UNBAN, MENTION_ALL):
        return rank >= _RANK[ADMIN]
    if action == ROLE:
        return role == OWNER
    if action in ON_MEMBER:
        if target not in _RANK:
            return False
        return rank >= _RANK[ADMIN] and _RANK[target] < rank
    raise ValueError(f"unknown action {action!r}")
