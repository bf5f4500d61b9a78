"""The schema: every table of the database, in one MetaData.

The Alembic migrations in ``chateau/migrations/`` build exactly these tables
(tests/test_schema.py compares them); change both together. The comments
say why each table and index is shaped the way it is, since the queries of
the domain modules depend on it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
    true,
)
from sqlalchemy.engine import Connection

metadata = MetaData()

# Room for the skeleton of the longest name: a character's prototype is at
# most 7 characters (tests/test_names.py checks it against the data).
SKELETON_LENGTH = 512

# Users and groups share one namespace; the primary key here is what keeps a
# group from ever taking a user's name (and the other way round), even when
# two requests race on different threads.
#
# skeleton is the name's UTS #39 skeleton (chateau.names.skeleton): names
# that look alike have equal skeletons. Its unique index is what refuses a
# new name confusable with an existing one, race-safe like the primary key.
# It is NULL only for names that were already confusable with an older name
# when skeletons were introduced: those keep working and are listed in
# name_collisions for the operator, while the older name holds the skeleton.
names = Table(
    "names",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(8), nullable=False),  # "user", "group" or "held"
    Column("skeleton", String(SKELETON_LENGTH), nullable=True),
    # kind "held": a name nobody may take until held_until (ms): the old name
    # of a renamed directory user ([ldap] rename_hold_days), or an erased
    # account's. NULL for names in use.
    Column("held_until", BigInteger, nullable=True),
    # The directory id of the account whose old name is held: it alone may
    # take the name back before held_until (a rename undone). NULL otherwise.
    Column("held_for", String(255), nullable=True),
    Index("ux_names_skeleton", "skeleton", unique=True),
)

# Existing names found confusable with an older name (confusable_with, which
# holds the skeleton) by migration 0005 or `chateau-admin names rescan`.
# Nobody is renamed; `chateau-admin names collisions` lists them and the
# server warns of them at start-up.
name_collisions = Table(
    "name_collisions",
    metadata,
    Column("name", String(64), ForeignKey("names.name"), primary_key=True),
    Column("confusable_with", String(64), ForeignKey("names.name"), nullable=False),
    Column("skeleton", String(SKELETON_LENGTH), nullable=False),
    Column("flagged_at", BigInteger, nullable=False),
)

users = Table(
    "users",
    metadata,
    Column("username", String(64), ForeignKey("names.name"), primary_key=True),
    Column("password_hash", String(128), nullable=True),
    Column("auth_method", String(16), nullable=False),
    Column("display_name", String(256), nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    # Every message up to this id was delivered to the user (live or when
    # they signed in); offline delivery starts after it.
    Column("delivered_until", BigInteger, nullable=False, server_default="0"),
    # When the account's session keys were last revoked (password reset,
    # disabled, or its oldest key pushed out by a new one), in ms; 0 never.
    # Every node polls it each second (indexed) and closes the connections
    # whose key is gone, so chateau-admin needs no way into the server.
    Column("revoked_at", BigInteger, nullable=False, server_default="0"),
    # A server admin (chateau-admin user admin NAME): deletes any message,
    # acts as an owner in every group, announces, reads reports, bans.
    Column("is_admin", Boolean, nullable=False, server_default=false()),
    # A server-wide ban (UserBanRequest, chateau-admin user ban): sign-ins are
    # refused while banned_until (ms) is in the future; NULL when not banned,
    # and BAN_FOREVER (the largest 64-bit integer) for "until unbanned".
    Column("banned_until", BigInteger, nullable=True),
    Column("ban_reason", Text, nullable=True),
    # The newest announcement the user has been given (live or at sign-in).
    # Announcements made before the account was created are never given.
    Column("announced_until", BigInteger, nullable=False, server_default="0"),
    # A directory account's [ldap] id_attribute (entryUUID, objectGUID), bound
    # at its first sign-in (or the first after migration 0013): who it is for
    # good. A renamed uid keeps its account; a recycled uid gets a new one.
    Column("directory_id", String(255), nullable=True),
    # Deprovisioning (chateau.deprovisioning): the last successful check of a
    # directory account against the directory, or its last directory sign-in
    # (ms); nodes claim due accounts by moving it forward. An account the
    # directory no longer lets in is marked deprovisioned (when, and why:
    # missing, disabled or not_in_group) until it signs in again.
    Column("directory_checked_at", BigInteger, nullable=True),
    Column("deprovisioned_at", BigInteger, nullable=True),
    Column("deprovision_reason", String(16), nullable=True),
    # What the user shows next to their name (ProfileRequest); NULL: nothing.
    Column("status_text", String(140), nullable=True),
    Index("ix_users_revoked_at", "revoked_at"),
    Index("ux_users_directory_id", "directory_id", unique=True),
)

groups = Table(
    "groups",
    metadata,
    Column("chatname", String(64), ForeignKey("names.name"), primary_key=True),
    Column("creator", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # What members see of the group, and its rules (docs/protocol.md, GroupInfoRequest).
    Column("topic", Text, nullable=False, server_default=""),
    Column("join_rule", String(8), nullable=False, server_default="invite"),
    Column("visibility", String(8), nullable=False, server_default="private"),
    Column("who_can_add", String(8), nullable=False, server_default="admins"),
    Column("who_can_send", String(8), nullable=False, server_default="everyone"),
    # The DN of the directory group this group follows ([ldap] sync_base);
    # NULL for a group people made. Its membership is the directory's.
    Column("directory_dn", Text, nullable=True),
    # Days its messages are kept (0: forever); NULL: the server's [chat]
    # retention_days (chateau.retention purges them daily).
    Column("retention_days", Integer, nullable=True),
    # Groups are never deleted, so the groups a user created in the last
    # hour are counted here ([limits] groups_created_per_hour).
    Index("ix_groups_creator_created_at", "creator", "created_at"),
    # The public directory (GroupDirectoryRequest) reads only public groups.
    Index("ix_groups_visibility", "visibility"),
    # A directory group is one chat group at most; the sync finds it by DN.
    Index("ux_groups_directory_dn", "directory_dn", unique=True),
)

group_members = Table(
    "group_members",
    metadata,
    Column("chatname", String(64), ForeignKey("groups.chatname"), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    # False until the member has been told of the group (they were offline
    # when it was made): they are told when they next sign in.
    Column("notified", Boolean, nullable=False, server_default=true()),
    # owner, admin or member; a group always keeps an owner.
    Column("role", String(8), nullable=False, server_default="member"),
    Column("joined_at", BigInteger, nullable=False, server_default="0"),
    # Until when (ms) the member may read but not send; NULL when not muted.
    Column("muted_until", BigInteger, nullable=True),
    Index("ix_group_members_username", "username"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    # A group's chatname, "@a:b" for the direct chat of a and b (sorted), or
    # a random pair's generated name.
    Column("chat", String(160), nullable=False),
    # The addressee of a direct message; NULL in groups and random chats.
    Column("recipient", String(64), nullable=True),
    Column("sender", String(64), nullable=False),
    # NULL once deleted: a deleted message keeps its place, not its words.
    Column("content", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("edited", Boolean, nullable=False),
    Column("deleted", Boolean, nullable=False),
    # The cluster node that committed it (and routed it live); NULL on a
    # server running alone. Offline delivery keeps one cursor per origin.
    Column("origin", String(64), nullable=True),
    # A group's system event ("bob added carol") as JSON {"event", "user",
    # "by", ...}; NULL for what people wrote. Its content is the event in
    # words, for clients that know nothing of events.
    Column("event", Text, nullable=True),
    # Who a group message mentions (chateau.mentions): a JSON list of
    # canonical usernames, with "@all" for everyone; NULL for none. Unread
    # mentions are counted from it (ConversationsRequest), never by parsing.
    Column("mentions", Text, nullable=True),
    # A change row: the id of the message this row records an edit or a
    # deletion of (event {"change": "edited"|"deleted"}, content NULL); NULL
    # for every message and group event. Edits and deletions thus take an id
    # in the same order as messages, so SyncRequest returns them after a
    # position, gap-free; history, catch-up, search and counts leave them out.
    Column("changes", BigInteger, nullable=True),
    # History and offline delivery both read a chat's messages in id order.
    # There is deliberately no index on recipient: every message would then
    # rewrite a second index page at each commit (see direct_chats).
    Index("ix_messages_chat_id", "chat", "id"),
    # Only the messages that mention someone: unread mentions are counted
    # through it, reading those few rows instead of every unread message.
    Index("ix_messages_mentioned", "chat", "id",
          sqlite_where=text("mentions IS NOT NULL"),
          postgresql_where=text("mentions IS NOT NULL")),
)

# The direct chats each user takes part in, one row per user and chat,
# written with a chat's first message. Offline delivery finds a user's
# direct messages through these and ix_messages_chat_id, as it finds their
# group messages through group_members.
direct_chats = Table(
    "direct_chats",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("chat", String(160), primary_key=True),
)

# How far each user has read each conversation (ReadRequest): chat is a
# group's chatname or a direct chat's "@a:b". The marker only moves up.
# Unread counts are the chat's messages after it (ix_messages_chat_id), not
# kept per message, so sending costs nothing here.
read_markers = Table(
    "read_markers",
    metadata,
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("chat", String(160), primary_key=True),
    Column("last_read_id", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

# Session keys are stored only as their SHA-256: a stolen table resumes nobody.
sessions = Table(
    "sessions",
    metadata,
    Column("key_hash", String(64), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    # The key's public name (16 random hex characters, never derived from the
    # key): SessionListRequest shows it, SessionRevokeRequest takes it.
    Column("id", String(16), nullable=False),
    # When the key was last used (ms): set at sign-in and resume, refreshed
    # while a connection uses it at most every few minutes (chateau.session_use).
    Column("last_used_at", BigInteger, nullable=True),
    # Where it was last used from, and what the client called itself.
    Column("address", String(64), nullable=True),
    Column("client_name", String(64), nullable=True),
    # This key's sync position (SyncRequest without since): the id up to
    # which the device was given everything. A new key starts at the newest
    # message id when it is made.
    Column("sync_position", BigInteger, nullable=False, server_default="0"),
    Index("ix_sessions_username", "username"),
    Index("ux_sessions_id", "id", unique=True),
)

# Cluster mode: how far each user has had the messages of each origin node
# (users.delivered_until is the cursor for messages without an origin, and
# the starting point for an origin without a row).
delivery_cursors = Table(
    "delivery_cursors",
    metadata,
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("origin", String(64), primary_key=True),
    Column("delivered_until", BigInteger, nullable=False),
)

# Every node that has joined the cluster: the origins offline delivery asks about.
cluster_nodes = Table(
    "cluster_nodes",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("first_seen", BigInteger, nullable=False),
)

# Periodic jobs only one node of a cluster runs at a time (the daily
# retention purge): a node runs one after claiming its row, when the last
# run started long enough ago (chateau.store.retention.claim_run_txn).
scheduled_runs = Table(
    "scheduled_runs",
    metadata,
    Column("job", String(32), primary_key=True),
    Column("started_at", BigInteger, nullable=False),
    Column("node", String(64), nullable=True),
)

# One row per pair of users: pending until the addressee accepts.
contacts = Table(
    "contacts",
    metadata,
    Column("requester", String(64), ForeignKey("users.username"), primary_key=True),
    Column("addressee", String(64), ForeignKey("users.username"), primary_key=True),
    Column("accepted", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_contacts_addressee", "addressee"),
)


# Members removed (or banned) from a group while offline everywhere: told
# with GroupRemovedRecv at their next sign-in, then the row goes. chatname is
# the name the group had then (no foreign key: the group may be renamed).
removal_notices = Table(
    "removal_notices",
    metadata,
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("chatname", String(64), primary_key=True),
    Column("removed_by", String(64), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("banned", Boolean, nullable=False, server_default=false()),
    Column("removed_at", BigInteger, nullable=False),
)

# Who may not come back to a group, by any path (an add, an invite code, a
# public join), until an admin unbans them.
group_bans = Table(
    "group_bans",
    metadata,
    Column("chatname", String(64), ForeignKey("groups.chatname"), primary_key=True),
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("banned_by", String(64), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("banned_at", BigInteger, nullable=False),
)

# What users report. snapshot (JSON) keeps what was reported as it was then
# (the message, or a random chat's last messages), so a deletion afterwards
# hides nothing from moderators. status is "open" until resolved.
reports = Table(
    "reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reporter", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("username", String(64), nullable=True),
    Column("chatname", String(160), nullable=True),
    Column("message_id", BigInteger, nullable=True),
    Column("snapshot", Text, nullable=False, server_default="{}"),
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(8), nullable=False, server_default="open"),
    Column("resolved_by", String(64), nullable=True),
    Column("resolved_at", BigInteger, nullable=True),
    Column("action", String(32), nullable=True),
    Column("note", Text, nullable=True),
    # Moderators page through open reports; random pairing asks whether
    # one user reported another.
    Index("ix_reports_status_id", "status", "id"),
    Index("ix_reports_reporter_username", "reporter", "username"),
)

# The audit log (chateau.store.audit): sign-ins, password changes, session
# revocations, deprovisioning, exports, erasures and every administrative
# and moderation action: who (actor), what (action), on whom (target), when
# (at, ms), from where (address, when a client made it) and why (reason).
# detail is JSON with what else the action needs to be understood later;
# never a password or a key. chateau-admin audit --user reads by actor or
# target, --since by time.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(160), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("detail", Text, nullable=False, server_default="{}"),
    Column("address", String(64), nullable=True),
    Index("ix_audit_log_at", "at"),
    Index("ix_audit_log_actor", "actor"),
    Index("ix_audit_log_target", "target"),
)


# Who blocks whom: the blocker receives nothing from the blocked person any
# more. History and catch-up filter on (blocker, blocked); sign-on also
# reads who blocks the user (ix_blocks_blocked), whom random chat avoids.
blocks = Table(
    "blocks",
    metadata,
    Column("blocker", String(64), ForeignKey("users.username"), primary_key=True),
    Column("blocked", String(64), ForeignKey("users.username"), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_blocks_blocked", "blocked"),
)

# A row only for users who changed a setting (chateau.safety): every node
# loads them all at start-up, so the table stays as small as it can.
user_settings = Table(
    "user_settings",
    metadata,
    Column("username", String(64), ForeignKey("users.username"), primary_key=True),
    Column("direct_messages", String(8), nullable=False, server_default="everyone"),
    Column("presence", String(8), nullable=False, server_default="everyone"),
    Column("random_chat", Boolean, nullable=False, server_default=true()),
    Column("read_receipts", Boolean, nullable=False, server_default=true()),
)

# Pairs random chat never makes again (a left the random chat with b, or
# blocked b), read in both directions at sign-on (ix_random_avoid_b).
random_avoid = Table(
    "random_avoid",
    metadata,
    Column("a", String(64), primary_key=True),
    Column("b", String(64), primary_key=True),
    Column("created_at", BigInteger, nullable=False),
    Index("ix_random_avoid_b", "b"),
)

# What server admins announce to everyone (AnnounceRequest, chateau-admin
# announce): each user gets each one once, live or at their next sign-in
# (users.announced_until), if their account is older than it.
announcements = Table(
    "announcements",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("by", String(64), nullable=False),
    Column("content", Text, nullable=False),
)

# Changes that every node must act on, made by any process that reaches the
# database (chateau-admin, or a node): kind names the applier
# (chateau.notices), body is its JSON. Every node polls for ids above the
# newest it has seen every [chat] revocation_check_interval; rows older
# than a day are deleted by whoever appends one.
admin_notices = Table(
    "admin_notices",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_admin_notices_at", "at"),
)

# One row (id 1): when a node last started a directory group sync, so that
# one node at a time runs it (chateau.store.group_sync.claim_run_txn).
group_sync_runs = Table(
    "group_sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("started_at", BigInteger, nullable=False),
    Column("node", String(64), nullable=False, server_default=""),
)


# Invite codes for [auth] registration = invite, made by chateau-admin. Only
# the code's SHA-256 is stored; "uses" counts down to 0 as accounts are made.
invites = Table(
    "invites",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("uses", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
)


# Invite codes of groups (GroupInviteRequest): only the code's SHA-256 is
# stored. "uses" counts up as people join with it; max_uses NULL is
# unlimited. A ban still keeps a banned user out, code or not.
group_invites = Table(
    "group_invites",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("chatname", String(64), ForeignKey("groups.chatname"), nullable=False),
    Column("created_by", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("max_uses", Integer, nullable=True),
    Column("uses", Integer, nullable=False, server_default="0"),
    Index("ix_group_invites_chatname", "chatname"),
)


def upsert(connection: Connection, table: Table) -> Any:
    """An INSERT on *table* with the connection's ``ON CONFLICT`` clauses (PostgreSQL, SQLite)."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert(table)
