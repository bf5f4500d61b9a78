"""Signing in and out: RegisterRequest, ResumeRequest, LogoutRequest; and the
requests about the connection itself: HeartbeatRequest, ClientListRequest."""

from __future__ import annotations

import secrets

from chateau import messages
from chateau.auth import DIRECTORY, Account
from chateau.connection import Connection
from chateau.errors import ALREADY_SIGNED_IN, FORBIDDEN, NOT_AUTHENTICATED, ChateauError
from chateau.handlers.context import Reply, Services
from chateau.handlers.identity import rename_here
from chateau.messages import (
    ClientListRequest,
    HeartbeatRequest,
    LogoutRequest,
    RegisterRequest,
    ResumeRequest,
)
from chateau.store.records import hash_session_key

# A directory account the directory no longer lets in (chateau.deprovisioning).
DEPROVISIONED_DETAIL = (
    "authentication failed: your directory account is no longer allowed to sign in here"
)


async def new_session_key(ctx: Services, conn: Connection, username: str) -> str:
    """Issue a session key for *username*; only its hash is stored."""
    key = secrets.token_urlsafe(32)
    key_hash = hash_session_key(key)
    lifetime = ctx.config.chat.session_lifetime_days * 86400
    # Past [limits] max_sessions_per_user the oldest keys are revoked, and
    # their connections closed by chateau.signout (4001).
    await ctx.store.sessions.create_session(
        username, key_hash, lifetime, ctx.config.limits.max_sessions_per_user
    )
    conn.session_key_hash = key_hash
    return key


async def register(ctx: Services, conn: Connection, request: RegisterRequest) -> Reply:
    if conn.username is not None:
        raise ChateauError(
            ALREADY_SIGNED_IN, f"this connection is already signed in as {conn.username!r}"
        )
    if conn.signing_in:
        raise ChateauError(ALREADY_SIGNED_IN, "a sign-in is already in progress on this connection")
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
    key = await new_session_key(ctx, conn, account.username)
    admin = await ctx.store.accounts.is_admin(account.username)
    if not conn.live:
        return None
    reply = messages.register_response_with_key(account.username, key, account.display_name)
    if admin:
        reply["admin"] = True
    reply["msg_id"] = request.msg_id
    await ctx.catch_up.sign_on(conn, account, reply)
    await ctx.announcer.sign_on(conn)
    return None


async def resume(ctx: Services, conn: Connection, request: ResumeRequest) -> Reply:
    if conn.username is not None or conn.signing_in:
        raise ChateauError(
            ALREADY_SIGNED_IN, "this connection is already signed in or signing in"
        )
    conn.signing_in = True
    try:
        key_hash = hash_session_key(request.session_key)
        user = await ctx.store.sessions.resume_session(key_hash)
    finally:
        conn.signing_in = False
    if user is None:
        raise ChateauError(
            NOT_AUTHENTICATED, "session key is invalid, expired or revoked: sign in again"
        )
    refusal = user.ban_refusal()
    if refusal is not None:
        raise ChateauError(FORBIDDEN, refusal)
    if user.auth_method == DIRECTORY and ctx.directory_recheck is not None:
        await directory_recheck(ctx, conn, user.username)
    if not conn.live:
        return None
    conn.session_key_hash = key_hash
    account = Account(user.username, user.auth_method, user.display_name)
    reply = messages.resume_response(user.username, user.display_name)
    if user.is_admin:
        reply["admin"] = True
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
