"""What users manage themselves: PasswordChangeRequest, SessionListRequest,
SessionRevokeRequest, ProfileRequest.

A key that goes (one revoked, or every other one at a password change) is
deleted and the account's revocation stamped in one transaction
(store.devices), so every node closes the connections that used it within
``[chat] revocation_check_interval`` (chateau.signout, 4001); those on this
node are closed at once. Every change is recorded in the audit log with the
connection's address, never with a password or a key.
"""

from __future__ import annotations

from typing import Any

from chateau import messages
from chateau.auth import LOCAL
from chateau.connection import Connection
from chateau.errors import FORBIDDEN, NOT_AUTHENTICATED, NOT_FOUND, BadRequest, ChateauError
from chateau.handlers.context import Reply, Services, has_control_characters
from chateau.messages import (
    PasswordChangeRequest,
    ProfileRequest,
    SessionListRequest,
    SessionRevokeRequest,
)
from chateau.signout import SIGNED_OUT, SIGNED_OUT_REASON
from chateau.store.devices import UNCHANGED
from chateau.store.records import iso_timestamp

# The longest display name and status text, in characters (after trimming).
MAX_DISPLAY_NAME_LENGTH = 64
MAX_STATUS_TEXT_LENGTH = 140
# Session ids are 16 hex characters; anything much longer is no id.
MAX_SESSION_ID_LENGTH = 64


def _close_keys(ctx: Services, username: str, gone: Any, keep: Connection | None = None) -> int:
    """Close this node's connections of *username* whose key is one *gone* says; how many."""
    closed = 0
    for connection in ctx.registry.connections(username):
        if connection is keep or not connection.live or not gone(connection.session_key_hash):
            continue
        connection.close_for(SIGNED_OUT, SIGNED_OUT_REASON)
        closed += 1
    return closed


async def password_change(ctx: Services, conn: Connection, request: PasswordChangeRequest) -> Reply:
    """A local account's new password; every other key is revoked, this one kept.

    400 for a directory account (its password is the directory's) or a new
    password the rule refuses; 301 for a wrong old password, counted by the
    sign-in throttle (429 after repeats) under the same key as a sign-in.
    """
    user = conn.username
    assert user is not None
    account = await ctx.store.accounts.get_user(user)
    if account is None:
        raise ChateauError(NOT_AUTHENTICATED, "your account no longer exists")
    if account.auth_method != LOCAL:
        raise BadRequest("change your password in the campus directory")
    hashed = await ctx.auth.change_password(
        user, request.old_password, request.new_password, conn.address
    )
    keep = conn.session_key_hash
    await ctx.store.devices.change_password(user, hashed, keep, conn.address)
    _close_keys(ctx, user, lambda key: key != keep, keep=conn)
    return messages.password_change_response()


async def session_list(ctx: Services, conn: Connection, request: SessionListRequest) -> Reply:
    """The user's live keys as devices, the most recently used first."""
    user = conn.username
    assert user is not None
    devices = await ctx.store.devices.list_devices(user, conn.session_key_hash)
    return messages.session_list_response([
        {
            "id": device.id,
            "created": iso_timestamp(device.created_at),
            "last_used": None if device.last_used_at is None
            else iso_timestamp(device.last_used_at),
            "address": device.address,
            "client": device.client_name,
            "current": device.current,
        }
        for device in devices
    ])


async def session_revoke(ctx: Services, conn: Connection, request: SessionRevokeRequest) -> Reply:
    """Revoke one of the user's keys by its id; 404 for one they do not hold.

    Revoking the key of this very connection is allowed: the reply is sent,
    then the connection closed with 4001 like any other using that key.
    """
    user = conn.username
    assert user is not None
    session_id = request.id.strip()
    key_hash = None
    if 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
        key_hash = await ctx.store.devices.revoke(user, session_id, conn.address)
    if key_hash is None:
        raise ChateauError(NOT_FOUND, f"you have no session {request.id[:MAX_SESSION_ID_LENGTH]!r}")
    _close_keys(ctx, user, lambda key: key == key_hash, keep=conn)
    reply = messages.session_revoke_response(session_id)
    if conn.session_key_hash != key_hash:
        return reply
    reply["msg_id"] = request.msg_id
    conn.send_message(reply)
    conn.close_for(SIGNED_OUT, SIGNED_OUT_REASON)
    return None


def _profile_text(value: str | None, field: str, limit: int) -> Any:
    """A profile field as asked: trimmed ("" clears it), or UNCHANGED when not given."""
    if value is None:
        return UNCHANGED
    text = value.strip()
    if len(text) > limit:
        raise BadRequest(f"'{field}' must be at most {limit} characters")
    if has_control_characters(text):
        raise BadRequest(f"'{field}' must not contain control characters")
    return text


async def profile(ctx: Services, conn: Connection, request: ProfileRequest) -> Reply:
    """Read the user's profile, or change the fields given ("" clears one).

    A directory account's display name is the directory's: setting it is 403.
    """
    user = conn.username
    assert user is not None
    display_name = _profile_text(request.display_name, "display_name", MAX_DISPLAY_NAME_LENGTH)
    status_text = _profile_text(request.status_text, "status_text", MAX_STATUS_TEXT_LENGTH)
    current = await ctx.store.devices.profile(user)
    if current is None:
        raise ChateauError(NOT_AUTHENTICATED, "your account no longer exists")
    if display_name is not UNCHANGED and current.auth_method != LOCAL:
        raise ChateauError(FORBIDDEN, "your display name comes from the campus directory")
    if display_name is not UNCHANGED or status_text is not UNCHANGED:
        changed = await ctx.store.devices.set_profile(
            user, display_name, status_text, conn.address
        )
        if changed is None:
            raise ChateauError(NOT_AUTHENTICATED, "your account no longer exists")
        current = changed
    return messages.profile_response(current.username, current.display_name, current.status_text)
