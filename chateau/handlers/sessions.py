"""Signing in and out: RegisterRequest, ResumeRequest, LogoutRequest; and the
requests about the connection itself: HeartbeatRequest, ClientListRequest."""

from __future__ import annotations

import secrets
from typing import Any

from twisted.logger import Logger

from chateau import messages
from chateau.auth import DIRECTORY, Account
from chateau.connection import Connection
from chateau.errors import (
    ALREADY_SIGNED_IN, FORBIDDEN, NOT_AUTHENTICATED, BadRequest, ChateauError,
)
from chateau.handlers.context import Reply, Services, has_control_characters
from chateau.handlers.identity import rename_here
from chateau.handlers.reading import unread_total
from chateau.messages import (
    ClientListRequest,
    HeartbeatRequest,
    LogoutRequest,
    RegisterRequest,
    ResumeRequest,
)
from chateau.names import check_username
from chateau.store.records import hash_session_key, new_session_id

_log = Logger()

# A directory account the directory no longer lets in (chateau.deprovisioning).
DEPROVISIONED_DETAIL = (
    "authentication failed: your directory account is no longer allowed to sign in here"
)


# The longest client name a sign-in may give (RegisterRequest, ResumeRequest).
MAX_CLIENT_LENGTH = 64
# Who the audit log names for a sign-in whose name fails the name rule (what
# was typed may be a password in the wrong field: it is never recorded).
INVALID_NAME = "(invalid name)"


def client_name(raw: str | None) -> str | None:
    """The ``client`` of a sign-in, trimmed ("" is none); 400 when too long or with controls."""
    if raw is None:
        return None
    name = raw.strip()
    if len(name) > MAX_CLIENT_LENGTH:
        raise BadRequest(f"'client' must be at most {MAX_CLIENT_LENGTH} characters")
    if has_control_characters(name):
        raise BadRequest("'client' must not contain control characters")
    return name or None


async def new_session_key(
    ctx: Services, conn: Connection, username: str, client: str | None = None,
    audit: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Issue a session key for *username*: the key and its public id.

    Only the key's hash is stored. With *audit* (the detail), the sign-in is
    recorded in the audit log in the same transaction.
    """
    key = secrets.token_urlsafe(32)
    key_hash = hash_session_key(key)
    session_id = new_session_id()
    lifetime = ctx.config.chat.session_lifetime_days * 86400
    # Past [limits] max_sessions_per_user the oldest keys are revoked, and
    # their connections closed by chateau.signout (4001).
    await ctx.store.sessions.create_session(
        username, key_hash, lifetime, ctx.config.limits.max_sessions_per_user,
        session_id=session_id, address=conn.address, client_name=client, audit=audit,
    )
    conn.session_key_hash = key_hash
    return key, session_id


async def audit_failed_sign_in(
    ctx: Services, conn: Connection, name: str, reason: str, method: str | None, via: str
) -> None:
    """Record a refused sign-in; a failure to record it is logged, never the caller's."""
    try:
        await ctx.store.audit.record(
            name, "sign_in_failed", name, reason, conn.address, method=method, via=via
        )
    except Exception:
        _log.failure("could not record a refused sign-in in the audit log")


async def register(ctx: Services, conn: Connection, request: RegisterRequest) -> Reply:
    if conn.username is not None:
        raise ChateauError(
            ALREADY_SIGNED_IN, f"this connection is already signed in as {conn.username!r}"
        )
    if conn.signing_in:
        raise ChateauError(ALREADY_SIGNED_IN, "a sign-in is already in progress on this connection")
    client = client_name(request.client)
    conn.signing_in = True
    method = "ldap" if request.auth else "local"
    try:
        account = await ctx.auth.sign_in(
            request.username, request.password, request.auth, conn.address,
            invite=request.invite,
        )
    except ChateauError as refusal:
        result = {429: "throttled", 503: "busy"}.get(refusal.status, "refused")
        ctx.metrics.signins.labels(method, result).inc()
        tried = check_username(request.username) or INVALID_NAME
        await audit_failed_sign_in(ctx, conn, tried, refusal.detail, method, "register")
        raise
    finally:
        conn.signing_in = False
    ctx.metrics.signins.labels(method, "ok").inc()
    for old, new, rename_id in account.renames:
        # This sign-in renamed an account (its own, or the one whose uid it
        # was given): act on it here now (other nodes do when they read its
        # notice), so the user signs on with what is theirs, and only that.
        await rename_here(ctx, old, new, rename_id)
    if not conn.live:
        return None
    key, session_id = await new_session_key(
        ctx, conn, account.username, client, {"method": account.method, "via": "register"}
    )
    admin = await ctx.store.accounts.is_admin(account.username)
    unread = await unread_total(ctx, account.username)
    if not conn.live:
        return None
    reply = messages.register_response_with_key(
        account.username, key, account.display_name, session_id
    )
    if admin:
        reply["admin"] = True
    if unread is not None:
        reply["unread_total"] = unread
    reply["msg_id"] = request.msg_id
    await ctx.catch_up.sign_on(conn, account, reply)
    await ctx.announcer.sign_on(conn)
    return None


async def resume(ctx: Services, conn: Connection, request: ResumeRequest) -> Reply:
    if conn.username is not None or conn.signing_in:
        raise ChateauError(
            ALREADY_SIGNED_IN, "this connection is already signed in or signing in"
        )
    client = client_name(request.client)
    conn.signing_in = True
    try:
        key_hash = hash_session_key(request.session_key)
        # Marks the key used now from this address, and records the sign-in
        # (or its failure) in the audit log, in one transaction.
        use = await ctx.store.devices.resume(key_hash, conn.address, client)
    finally:
        conn.signing_in = False
    user = use.user
    if user is None:
        raise ChateauError(
            NOT_AUTHENTICATED, "session key is invalid, expired or revoked: sign in again"
        )
    refusal = user.ban_refusal()
    if refusal is not None:
        raise ChateauError(FORBIDDEN, refusal)
    if user.auth_method == DIRECTORY and ctx.directory_recheck is not None:
        await directory_recheck(ctx, conn, user.username)
    unread = await unread_total(ctx, user.username)
    if not conn.live:
        return None
    conn.session_key_hash = key_hash
    account = Account(user.username, user.auth_method, user.display_name)
    reply = messages.resume_response(user.username, user.display_name, use.session_id)
    if user.is_admin:
        reply["admin"] = True
    if unread is not None:
        reply["unread_total"] = unread
    reply["msg_id"] = request.msg_id
    await ctx.catch_up.sign_on(conn, account, reply)
    await ctx.announcer.sign_on(conn)
    return None


async def directory_recheck(ctx: Services, conn: Connection, username: str) -> None:
    """Deprovisioning: a key outlives the directory's "no" only until its next use.

    A directory account last checked more than ``[ldap] recheck_interval``
    ago is looked up first; refused, it is deprovisioned (keys revoked) and
    the resume fails. When the directory cannot answer, the resume goes on.
    """
    assert ctx.directory_recheck is not None
    conn.signing_in = True
    try:
        allowed = await ctx.directory_recheck(username)
    finally:
        conn.signing_in = False
    if not allowed:
        raise ChateauError(NOT_AUTHENTICATED, DEPROVISIONED_DETAIL)


async def logout(ctx: Services, conn: Connection, request: LogoutRequest) -> Reply:
    key_hash = conn.session_key_hash
    ctx.catch_up.sign_off(conn)
    if key_hash is not None:
        await ctx.store.sessions.revoke_session(key_hash)
    return messages.logout_response()


async def heartbeat(ctx: Services, conn: Connection, request: HeartbeatRequest) -> Reply:
    return messages.heartbeat_response(request.payload)


async def client_list(ctx: Services, conn: Connection, request: ClientListRequest) -> Reply:
    assert conn.username is not None
    # Users whose presence setting hides them from this user are left out.
    return messages.client_list_response(ctx.registry.visible_online_users(conn.username))
